// experts_forward: the Hopper path after route (stages and formulas: moe_sm90.h). Carves the
// caller's workspace, then launches count -> scan -> permute -> gemm1 -> swiglu -> gemm2 ->
// finalize on one stream. Two buffers serve the four activations in turn:
//   buf0: xs [rows, H]  -> act [rows, I]     (xs is dead once gemm1 has run)
//   buf1: h [rows, 2I]  -> y [rows, H]       (h is dead once swiglu has run)
// With W1 in kInterleaved8 order GEMM1 writes act itself (SwiGLU in its epilogue), so
//   buf0: xs -> y,  buf1: act              (xs is dead once gemm1 has run)
// A swap-AB gemm1 at few pairs gathers x's rows itself (gemm1_gathers_x): no xs, no permute.
// The count + scan also writes both GEMMs' per-group arrays: no GEMM setup kernel runs.
// GEMM2 split in K writes its slices' partials one after another into y's buffer, pairs * H
// elements apart; the finalize sums them.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "common/cuda_check.h"
#include "cuda/moe/sm90/moe_sm90.h"

namespace fusekit::cuda_moe::sm90 {
namespace {

std::size_t round256(std::size_t b) { return (b + 255) / 256 * 256; }

// The swap-AB gemm1 reads each token row by index, so where the count + scan can also place
// the pairs (one CTA), it reads x itself: no permute launch, no xs written and read back.
// FUSEKIT_MOE_GATHER_X=0 keeps the permute (for measuring the two against each other; read
// per call).
bool gemm1_gathers_x(const ExpertsArgs& a, std::int64_t pairs) {
  if (const char* env = std::getenv("FUSEKIT_MOE_GATHER_X"); env != nullptr && env[0] == '0') return false;
  return a.config.gemm1 == GemmTile::kStreamSwapAb && a.layout == MoeWeightLayout::kNK &&
         a.x_row_stride % 8 == 0 && align_count_scan_in_one_block(pairs);
}

// The count + scan writes both GEMMs' per-group arrays (GroupArrays::kPrewritten), so neither
// launches a setup kernel. FUSEKIT_MOE_GEMM_ARRAYS_IN_ALIGN=0 keeps the setup kernels (for
// measuring the two against each other; read per call).
bool gemm_arrays_in_align() {
  const char* env = std::getenv("FUSEKIT_MOE_GEMM_ARRAYS_IN_ALIGN");
  return env == nullptr || env[0] != '0';
}

struct ExpertsLayout {
  std::size_t counts, rank, offsets, inv, sorted_tokens, gemm1_ws, gemm2_ws, buf0, buf1, total;
};

// y takes gemm2_max_k_splits(I) slices of [pairs, H] (GEMM2 split in K), whichever buffer holds it.
ExpertsLayout experts_layout(std::int64_t pairs, std::int64_t E, std::int64_t H, std::int64_t I) {
  ExpertsLayout l{};
  std::size_t at = 0;
  auto take = [&at](std::size_t bytes) {
    const std::size_t here = at;
    at += round256(bytes);
    return here;
  };
  const std::size_t rows = static_cast<std::size_t>(pairs);
  const std::size_t gemm1_ws = grouped_gemm_bf16_sm90_workspace_size(static_cast<int>(E));
  const std::int64_t slices = gemm2_max_k_splits(I);
  const std::size_t gemm2_ws = grouped_gemm_bf16_sm90_workspace_size(static_cast<int>(E * slices));
  l.counts = take(sizeof(std::int32_t) * static_cast<std::size_t>(E));
  l.rank = take(sizeof(std::int32_t) * rows);
  l.offsets = take(sizeof(std::int32_t) * static_cast<std::size_t>(E + 1));
  l.inv = take(sizeof(std::int32_t) * rows);
  l.sorted_tokens = take(sizeof(std::int32_t) * rows);
  l.gemm1_ws = take(gemm1_ws);
  l.gemm2_ws = take(gemm2_ws);
  l.buf0 = take(2 * rows * static_cast<std::size_t>(std::max(H * slices, I)));
  l.buf1 = take(2 * rows * static_cast<std::size_t>(std::max(2 * I, H * slices)));
  l.total = at;
  return l;
}

}  // namespace

std::size_t experts_workspace_size(std::int64_t pairs, const MoeConfig& c) {
  return experts_layout(pairs, c.num_experts, c.hidden, c.intermediate).total;
}

Status experts_forward(const ExpertsArgs& a, cudaStream_t stream) {
  if (a.tokens == 0) return Status::Ok();
  const std::int64_t pairs = a.tokens * a.top_k;
  const ExpertsLayout l = experts_layout(pairs, a.num_experts, a.hidden, a.intermediate);
  if (a.workspace == nullptr || a.workspace_bytes < l.total ||
      (reinterpret_cast<std::uintptr_t>(a.workspace) & 255u) != 0) {
    return invalid_argument("moe sm90: workspace must be 256-byte aligned and hold " + std::to_string(l.total) +
                            " bytes, got " + std::to_string(a.workspace_bytes));
  }
  char* ws = static_cast<char*>(a.workspace);
  auto* counts = reinterpret_cast<std::int32_t*>(ws + l.counts);
  auto* rank = reinterpret_cast<std::int32_t*>(ws + l.rank);
  auto* offsets = reinterpret_cast<std::int32_t*>(ws + l.offsets);
  auto* inv = reinterpret_cast<std::int32_t*>(ws + l.inv);
  auto* sorted_tokens = reinterpret_cast<std::int32_t*>(ws + l.sorted_tokens);
  auto* buf0 = reinterpret_cast<__nv_bfloat16*>(ws + l.buf0);
  auto* buf1 = reinterpret_cast<__nv_bfloat16*>(ws + l.buf1);
  const int slices = a.config.gemm2_k_splits;
  if (slices < 1 || slices > gemm2_max_k_splits(a.intermediate)) {
    return invalid_argument("moe sm90: gemm2_k_splits must be in [1, " +
                            std::to_string(gemm2_max_k_splits(a.intermediate)) + "] for I=" +
                            std::to_string(a.intermediate) + ", got " + std::to_string(slices));
  }

  const bool gather = gemm1_gathers_x(a, pairs);
  const bool fused = a.gate_up_order == MoeGateUpOrder::kInterleaved8;
  __nv_bfloat16* act = fused ? buf1 : buf0;
  __nv_bfloat16* y = fused ? buf0 : buf1;

  GroupedGemmArgs g1;
  g1.a = buf0;
  if (gather) {
    g1.a = a.x;
    g1.a_rows = sorted_tokens;
    g1.a_row_stride = a.x_row_stride;
  }
  g1.b = a.w1;
  g1.d = buf1;
  g1.group_offsets = offsets;
  g1.group_rows = counts;
  g1.groups = a.num_experts;
  g1.n = 2 * a.intermediate;
  g1.k = a.hidden;
  g1.layout = a.layout;
  g1.tile = a.config.gemm1;
  g1.workspace = ws + l.gemm1_ws;
  g1.workspace_bytes = l.gemm2_ws - l.gemm1_ws;
  g1.epilogue = fused ? GemmEpilogue::kSwiglu : GemmEpilogue::kStore;

  GroupedGemmArgs g2 = g1;
  g2.a_rows = nullptr;
  g2.a_row_stride = 0;
  g2.epilogue = GemmEpilogue::kStore;
  g2.a = act;
  g2.b = a.w2;
  g2.d = y;
  g2.n = a.hidden;
  g2.k = a.intermediate;
  g2.tile = a.config.gemm2;
  g2.k_splits = slices;
  g2.d_split_stride = pairs * a.hidden;
  g2.workspace = ws + l.gemm2_ws;
  g2.workspace_bytes = l.buf0 - l.gemm2_ws;

  CountPairsParams cp;
  cp.topk_ids = a.topk_ids;
  cp.pairs = pairs;
  cp.num_experts = a.num_experts;
  cp.counts = counts;
  cp.rank = rank;
  if (gather) {
    cp.inv = inv;
    cp.sorted_tokens = sorted_tokens;
    cp.top_k = a.top_k;
  }
  if (gemm_arrays_in_align()) {
    FUSEKIT_RETURN_IF_ERROR(prepare_group_arrays(g1, &cp.gemm_arrays));
    FUSEKIT_RETURN_IF_ERROR(prepare_group_arrays(g2, &cp.gemm_arrays));
    g1.group_arrays = GroupArrays::kPrewritten;
    g2.group_arrays = GroupArrays::kPrewritten;
  }
  FUSEKIT_RETURN_IF_ERROR(launch_align_count_scan(cp, offsets, stream));

  PermuteParams pp;
  pp.x = a.x;
  pp.x_row_stride = a.x_row_stride;
  pp.topk_ids = a.topk_ids;
  pp.rank = rank;
  pp.offsets = offsets;
  pp.pairs = pairs;
  pp.top_k = a.top_k;
  pp.num_experts = a.num_experts;
  pp.hidden = a.hidden;
  pp.xs = buf0;
  pp.inv = inv;
  if (!gather) FUSEKIT_RETURN_IF_ERROR(launch_permute_rows_bf16(pp, stream));

  FUSEKIT_RETURN_IF_ERROR(grouped_gemm_bf16_sm90(g1, stream));

  if (!fused) {
    SwigluParams sp;
    sp.h = buf1;
    sp.act = act;
    sp.rows = offsets + a.num_experts;
    sp.max_rows = pairs;
    sp.intermediate = a.intermediate;
    FUSEKIT_RETURN_IF_ERROR(launch_swiglu_rows_bf16(sp, stream));
  }

  FUSEKIT_RETURN_IF_ERROR(grouped_gemm_bf16_sm90(g2, stream));

  FinalizeSortedParams fp;
  fp.y = y;
  fp.y_splits = slices;
  fp.y_split_stride = pairs * a.hidden;
  fp.inv = inv;
  fp.topk_ids = a.topk_ids;
  fp.topk_weights = a.topk_weights;
  fp.out = a.out;
  fp.out_row_stride = a.out_row_stride;
  fp.tokens = a.tokens;
  fp.top_k = a.top_k;
  fp.num_experts = a.num_experts;
  fp.hidden = a.hidden;
  return launch_finalize_sorted_bf16(fp, stream);
}

}  // namespace fusekit::cuda_moe::sm90
