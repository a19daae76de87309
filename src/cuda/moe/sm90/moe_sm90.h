// The Hopper path of the `cuda` MoE backend: everything after route.
//
//   count     counts[e] = #{p : ids[p] = e};  rank[p] = place of pair p among its expert's pairs
//   scan      offsets[e] = sum_{e' < e} counts[e'],  offsets[E] = rows = pairs with a valid id
//   permute   slot(p) = offsets[ids[p]] + rank[p];  xs[slot(p)] = x[p / k];  inv[p] = slot(p)
//   gemm1     h[r] = xs[r] . W1[e]^T              grouped GEMM, sm_90a wgmma + TMA   [rows, 2I]
//             (with the swap-AB gemm1 and few pairs, count + scan writes inv and each slot's
//             token, and gemm1 reads x[token(r)] itself: no permute, no xs)
//   swiglu    act[r, c] = silu(h[r, c]) * h[r, I + c]                                [rows, I]
//   gemm2     y[r] = act[r] . W2[e]^T             grouped GEMM                       [rows, H]
//             (split in K where the tiles would not fill the card: S partials y_s, each bf16,
//             y = sum_s y_s; Sm90MoeConfig::gemm2_k_splits)
//   finalize  out[t] = sum_{j=0..k-1} w[t*k+j] * y[inv[t*k+j]], j in that order, fp32
//
// Expert runs are packed (no padding: the TMA GEMMs clip each group at its rows), so no row
// is ever computed twice or for nothing. The order of pairs inside a run comes from atomics
// and may change run to run; every output row depends only on its own input row, and the
// finalize sums in j order, so the layer's output is bit-identical run to run anyway.
// Nothing is allocated and nothing is read back to the host: capturable in a CUDA graph.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/moe/sm90/gemm_config_sm90.h"
#include "fusekit/moe.h"
#include "fusekit/status.h"
#include "fusekit/tensor.h"

namespace fusekit::cuda_moe::sm90 {

// ---- The `cuda` backend's entry (forward.cpp calls these; stages.cpp sizes the workspace) ----
// forward runs this path for every T that is not decode (gemm_config.h use_decode_path).
// True when this path serves the layer on `device`: a CUTLASS build, an sm_90 GPU, and
// FUSEKIT_MOE_SM90 not set to 0 (which forces the portable sm_80 kernels, for comparison).
bool prefill_enabled(int device);
// Workspace of the whole `cuda` forward when this path may run: the backend's routing regions
// (workspace_layout.h) followed by this path's buffers. 0 without CUTLASS.
std::size_t forward_workspace_size(const MoeConfig& config);
// Runs this path after forward's route; `workspace` is the caller's whole workspace (its routing
// regions hold topk_ids/topk_weights and are kept). Chooses the tiles (gemm_config_sm90.h).
Status prefill_forward(const MoeLayer& layer, const TensorView& x, const std::int32_t* topk_ids,
                       const float* topk_weights, const TensorView& out, const MoeWorkspace& workspace,
                       cudaStream_t stream);

// ---- The path itself ----
struct ExpertsArgs {
  const __nv_bfloat16* x = nullptr;  // [T, H], rows x_row_stride apart
  std::int64_t x_row_stride = 0;
  const __nv_bfloat16* w1 = nullptr;  // kNK [E, 2I, H] | kKN [E, H, 2I]
  const __nv_bfloat16* w2 = nullptr;  // kNK [E, H, I]  | kKN [E, I, H]
  MoeWeightLayout layout = MoeWeightLayout::kNK;
  // kInterleaved8: GEMM1 applies SwiGLU in its epilogue (no h buffer, no swiglu pass).
  MoeGateUpOrder gate_up_order = MoeGateUpOrder::kHalves;
  const std::int32_t* topk_ids = nullptr;  // [T*k]; ids outside [0, E) contribute nothing
  const float* topk_weights = nullptr;     // [T*k]
  __nv_bfloat16* out = nullptr;            // [T, H], rows out_row_stride apart
  std::int64_t out_row_stride = 0;
  std::int64_t tokens = 0;
  int top_k = 0;
  int num_experts = 0;  // 1..512
  std::int64_t hidden = 0;
  std::int64_t intermediate = 0;
  Sm90MoeConfig config;
  void* workspace = nullptr;  // experts_workspace_size(...) bytes, 256-byte aligned
  std::size_t workspace_bytes = 0;
};

// Bytes of workspace for up to `pairs` (token, slot) pairs. Pure function of its arguments.
std::size_t experts_workspace_size(std::int64_t pairs, const MoeConfig& config);

Status experts_forward(const ExpertsArgs& args, cudaStream_t stream);

// ---- The stage kernels, one per file (align_count_pairs.cu, align_scan_offsets.cu,
// align_count_scan_one_block.cu, permute_rows_bf16.cu, swiglu_rows_bf16.cu,
// finalize_sorted_bf16.cu) ----
struct CountPairsParams {
  const std::int32_t* topk_ids = nullptr;  // [pairs]
  std::int64_t pairs = 0;
  int num_experts = 0;
  std::int32_t* counts = nullptr;  // [E], zero on entry
  std::int32_t* rank = nullptr;    // [pairs]; -1 for an id outside [0, E)
  // Placement, in one CTA only (align_count_scan_in_one_block): when inv is not null the count
  // + scan also writes what permute would, but the copy of x: inv[p] = offsets[ids[p]] + rank[p]
  // and sorted_tokens[inv[p]] = p / top_k (a swap-AB gemm1 then gathers x's rows itself).
  std::int32_t* inv = nullptr;            // [pairs]; untouched for an id outside [0, E)
  std::int32_t* sorted_tokens = nullptr;  // [pairs]
  int top_k = 1;
  // The per-group arrays of grouped GEMMs whose group_offsets are these offsets and group_rows
  // these counts (prepare_group_arrays; each then runs with GroupArrays::kPrewritten): the scan
  // writes them once it has the offsets, so neither GEMM launches a setup kernel.
  GroupArraysToWrite gemm_arrays;
};
Status launch_align_count_pairs(const CountPairsParams& p, cudaStream_t stream);

// offsets[e] = exclusive prefix sum of counts; offsets[E] = the total. E <= 512. Then the
// entries of gemm_arrays (count 0: none).
Status launch_align_scan_offsets(const std::int32_t* counts, int num_experts, std::int32_t* offsets,
                                 const GroupArraysToWrite& gemm_arrays, cudaStream_t stream);

// count then scan, what the forward calls (align_count_scan_one_block.cu): p.counts need not be
// zero on entry. Up to kOneBlockMaxPairs pairs one CTA does both in one programmatic launch;
// above, a memset of the counts, align_count_pairs, align_scan_offsets. E <= 512.
// A/B on H100, Qwen3-30B-A3B layer, one CTA vs the multi-CTA pair (moe_align_one_cta_ab_h100.json):
// 512 pairs -5.8 us, 2048 pairs -0.8 us, 8192 pairs +8.3 us (one SM's loop then outweighs the
// launches it saves); so the switch sits at 2048.
constexpr std::int64_t kOneBlockMaxPairs = 2048;
// Whether launch_align_count_scan runs the one CTA for `pairs` (so it can also place them).
bool align_count_scan_in_one_block(std::int64_t pairs);
Status launch_align_count_scan(const CountPairsParams& p, std::int32_t* offsets, cudaStream_t stream);

struct PermuteParams {
  const __nv_bfloat16* x = nullptr;
  std::int64_t x_row_stride = 0;
  const std::int32_t* topk_ids = nullptr;
  const std::int32_t* rank = nullptr;
  const std::int32_t* offsets = nullptr;  // [E + 1]
  std::int64_t pairs = 0;
  int top_k = 0;
  int num_experts = 0;
  std::int64_t hidden = 0;
  __nv_bfloat16* xs = nullptr;  // [pairs, H]
  std::int32_t* inv = nullptr;  // [pairs]
};
Status launch_permute_rows_bf16(const PermuteParams& p, cudaStream_t stream);

struct SwigluParams {
  const __nv_bfloat16* h = nullptr;       // [rows, 2I]
  __nv_bfloat16* act = nullptr;           // [rows, I]
  const std::int32_t* rows = nullptr;     // device: the number of rows (offsets[E])
  std::int64_t max_rows = 0;              // host bound on *rows (sizes the grid)
  std::int64_t intermediate = 0;
};
Status launch_swiglu_rows_bf16(const SwigluParams& p, cudaStream_t stream);

struct FinalizeSortedParams {
  const __nv_bfloat16* y = nullptr;  // [rows, H], expert order
  // GEMM2 split in K (Sm90MoeConfig::gemm2_k_splits): y holds y_splits partial products, the
  // s-th at y + s * y_split_stride, and each row of y is their sum.
  int y_splits = 1;
  std::int64_t y_split_stride = 0;
  const std::int32_t* inv = nullptr;
  const std::int32_t* topk_ids = nullptr;
  const float* topk_weights = nullptr;
  __nv_bfloat16* out = nullptr;
  std::int64_t out_row_stride = 0;
  std::int64_t tokens = 0;
  int top_k = 0;
  int num_experts = 0;
  std::int64_t hidden = 0;
};
Status launch_finalize_sorted_bf16(const FinalizeSortedParams& p, cudaStream_t stream);

}  // namespace fusekit::cuda_moe::sm90
