// Decode gemm1 + SwiGLU, weights NK ([E, 2I, H], H contiguous):
//   act[q, c] = silu(x[t] . W1[e][c]) * (x[t] . W1[e][I + c])   for every pair q = t*k + j, e = ids[q]
// Each expert the batch hits is read once: the CTAs of pair p work only if p is the first pair
// routed to its expert, and then serve every token routed to that expert, kTokensPerPass
// tokens per sweep over K (2, or 4 where experts repeat: decode_gemm1_tokens_per_pass). A later
// sweep, for an expert with more tokens than that, re-reads the expert's rows: from L2 where
// they fit, from DRAM for Mixtral's 235 MB experts.
// At T = 1 from the router every pair is first (a top-k never repeats an expert); at T = 8,
// k = 8, E = 128 ~52 experts are read instead of 64. Pairs whose id is outside [0, E) get no
// act row (gemm2 skips them).
// Shapes: x [T, H] (row stride given), act [T*k, I] packed. I, H multiples of 8.
// Threads: 256 per CTA = 8 warps; a warp owns C = 4 columns (8 weight rows: 4 gate, 4 up), or
// 3 where that fills the SMs' waves better (decode_gemm1_cols_per_warp, gemm_config.h); its
// lanes stride over K 8 elements (16 bytes) at a time, two strides per step so 2 x 2C loads are
// in flight per lane; fp32 partials, fixed xor-tree reduction (deterministic).
// Grid: ceil(I / 8C) x pairs. Every warp works out its expert and that expert's pairs from the
// ids by itself (32 per coalesced load and ballot; O(pairs) per warp, fine at decode sizes),
// so the first weight load waits for one ids load, not for barriers and a chain of scans.
// Launch: programmatic dependent of the route kernel; waits for it before reading ids. At one
// token with softmax routing (DecodeRouting::kGemm1PicksFromLogits) each warp picks its pair's
// expert from the logits itself instead, while the route kernel runs.
#include "common/cuda_check.h"
#include "common/moe_gate_up.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/gemm_config.h"
#include "cuda/moe/kernels.h"
#include "cuda/moe/sm_count.h"
#include "cuda/moe/route_topk_common.cuh"

namespace fusekit::cuda_moe {
namespace {

constexpr int kWarps = 8;
constexpr int kCtasPerSm = 2;  // decode_gemm1_cols_per_warp assumes it

// kRouteSlots = 0: the experts come from p.topk_ids, after the wait for the route kernel. Else
// (DecodeRouting::kGemm1PicksFromLogits: one token, k <= 32) the warp does not wait for the
// route: pair j is the token's j-th pick (j + 1 picks, no exp; a top-k never repeats an
// expert, so every pair is first and alone), made from the logits, which like x were complete
// before the route passed its own wait and let this grid launch. It waits for the route before
// it lets gemm2 launch (gemm2 reads the route's ids) and before it writes anything. gemm2's
// early read of the ids relies on at least one warp waiting before any trigger: keep warp 0 of
// every CTA working (a CTA with no work at all would exit without the wait).
template <int kRouteSlots, int kColsPerWarp, int kTokensPerPass>
__global__ void __launch_bounds__(kWarps * 32, kCtasPerSm) decode_gemm1_swiglu_nk_bf16_kernel(DecodeLayerParams p) {
  constexpr int kRows = 2 * kColsPerWarp;
  constexpr int kColsPerCta = kWarps * kColsPerWarp;
  if constexpr (kRouteSlots == 0) dev::wait_for_prior_grid();
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const std::int64_t n = p.intermediate;
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.x) * kColsPerCta + warp * kColsPerWarp;
  if (c0 >= n) return;
  const std::int64_t pairs = p.tokens * p.top_k;
  const std::int64_t pair = blockIdx.y;

  std::int64_t chunk = pair & ~std::int64_t{31};
  int expert;
  unsigned hits;
  if constexpr (kRouteSlots > 0) {
    expert = route_detail::softmax_topk_pick<kRouteSlots>(p.route, 0, static_cast<int>(pair));
    hits = 1u << pair;
  } else {
    // Each warp reads the ids 32 at a time (one coalesced load per 32 pairs, no shared memory,
    // no barrier): the chunk holding its pair gives the expert and the expert's later pairs;
    // the chunks before it, loaded independently, say whether an earlier pair owns the expert.
    const int id = chunk + lane < pairs ? p.topk_ids[chunk + lane] : -1;
    expert = __shfl_sync(0xffffffffu, id, static_cast<int>(pair & 31));
    if (expert < 0 || expert >= p.num_experts) return;
    const unsigned same = __ballot_sync(0xffffffffu, id == expert);
    if (same & ((1u << (pair & 31)) - 1u)) return;  // an earlier pair of this chunk serves the expert
    for (std::int64_t c = 0; c < chunk; c += 32) {
      if (__any_sync(0xffffffffu, p.topk_ids[c + lane] == expert)) return;  // ... or of an earlier chunk
    }
    hits = same & (0xffffffffu << (pair & 31));
  }

  const std::int64_t chunks = p.hidden / 8;
  // Row r < C is gate column c0 + r, row r >= C is up column c0 + r - C. With C = 4 (I % 8 ==
  // 0) a warp with c0 < I has all four columns, and their rows are consecutive in either order;
  // with C = 3 the last warp may have fewer (its missing rows re-read row 0, and are not
  // written) and an 8-column group of the interleaved order may split a warp's columns, so
  // each row is found by itself.
  const int cols_here = n - c0 < kColsPerWarp ? static_cast<int>(n - c0) : kColsPerWarp;
  const __nv_bfloat16* w1e = p.w1 + static_cast<std::int64_t>(expert) * 2 * n * p.hidden;
  const uint4* gate = reinterpret_cast<const uint4*>(w1e + w1_row(p.gate_up_order, n, c0, false) * p.hidden);
  const uint4* up = reinterpret_cast<const uint4*>(w1e + w1_row(p.gate_up_order, n, c0, true) * p.hidden);
  auto row = [&](int r) {
    if constexpr (kColsPerWarp == 4) {
      return (r < kColsPerWarp ? gate : up) + (r % kColsPerWarp) * chunks;
    } else {
      const int c = r % kColsPerWarp < cols_here ? r % kColsPerWarp : 0;
      return reinterpret_cast<const uint4*>(w1e + w1_row(p.gate_up_order, n, c0 + c, r >= kColsPerWarp) * p.hidden);
    }
  };

  // Passes over the expert's pairs in order, kTokensPerPass at a time. Each pair is its own
  // entry (caller-given ids may repeat an expert within a token; the rows then agree).
  while (true) {
    int pass_pair[kTokensPerPass];
#pragma unroll
    for (int i = 0; i < kTokensPerPass; ++i) {
      while (hits == 0 && chunk + 32 < pairs) {  // kRouteSlots > 0: pairs <= 32, never taken
        chunk += 32;
        const int id = chunk + lane < pairs ? p.topk_ids[chunk + lane] : -1;
        hits = __ballot_sync(0xffffffffu, id == expert);
      }
      pass_pair[i] = -1;
      if (hits != 0) {
        pass_pair[i] = static_cast<int>(chunk) + __ffs(hits) - 1;
        hits &= hits - 1;
      }
    }
    unsigned mask = 0;
#pragma unroll
    for (int i = 0; i < kTokensPerPass; ++i) mask |= (pass_pair[i] >= 0 ? 1u : 0u) << i;
    if (mask == 0) break;

    const uint4* xrow[kTokensPerPass];
#pragma unroll
    for (int i = 0; i < kTokensPerPass; ++i) {
      const std::int64_t t = mask >> i & 1u ? pass_pair[i] / p.top_k : 0;  // pair row -> token
      xrow[i] = reinterpret_cast<const uint4*>(p.x + t * p.x_row_stride);
    }
    float acc[kRows][kTokensPerPass];
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int i = 0; i < kTokensPerPass; ++i) acc[r][i] = 0.f;

    for (std::int64_t kc = lane; kc < chunks; kc += 64) {
      const bool second = kc + 32 < chunks;
      uint4 wv[2][kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        wv[0][r] = __ldcs(row(r) + kc);
        wv[1][r] = second ? __ldcs(row(r) + kc + 32) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int i = 0; i < kTokensPerPass; ++i) {
        if (!(mask >> i & 1u)) continue;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if (h == 1 && !second) break;
          float a[8];
          dev::unpack8(__ldg(xrow[i] + kc + 32 * h), a);
#pragma unroll
          for (int r = 0; r < kRows; ++r) acc[r][i] += dev::dot8(wv[h][r], a);
        }
      }
    }
    // This pass has issued its weight loads: gemm2 may start taking free slots (once the route
    // that gemm2 reads is complete).
    if constexpr (kRouteSlots > 0) dev::wait_for_prior_grid();
    dev::allow_dependent_grid();
#pragma unroll
    for (int i = 0; i < kTokensPerPass; ++i) {
      if (!(mask >> i & 1u)) continue;
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) acc[r][i] += __shfl_xor_sync(0xffffffffu, acc[r][i], off);
      if (lane < cols_here) {
        float g = acc[0][i], u = acc[kColsPerWarp][i];
#pragma unroll
        for (int r = 1; r < kColsPerWarp; ++r) {
          if (lane == r) {
            g = acc[r][i];
            u = acc[r + kColsPerWarp][i];
          }
        }
        p.act[static_cast<std::int64_t>(pass_pair[i]) * n + c0 + lane] = __float2bfloat16(dev::silu(g) * u);
      }
    }
  }
}

template <int kColsPerWarp>
cudaError_t launch_for_routing(const DecodeLayerParams& p, dim3 grid, cudaStream_t stream) {
  auto launch = [&](void (*kernel)(DecodeLayerParams)) {
    return launch_dependent(kernel, grid, dim3(kWarps * 32), 0, stream, p);
  };
  if (p.routing == DecodeRouting::kIds) return launch(decode_gemm1_swiglu_nk_bf16_kernel<0, kColsPerWarp, 2>);
  switch (softmax_route_slots(p.num_experts)) {
    case 1: return launch(decode_gemm1_swiglu_nk_bf16_kernel<1, kColsPerWarp, 2>);
    case 4: return launch(decode_gemm1_swiglu_nk_bf16_kernel<4, kColsPerWarp, 2>);
    default: return launch(decode_gemm1_swiglu_nk_bf16_kernel<8, kColsPerWarp, 2>);  // E <= 256 (check_decode_routing)
  }
}

}  // namespace

Status launch_decode_gemm1_swiglu_nk_bf16(const DecodeLayerParams& p, cudaStream_t stream) {
  const std::int64_t pairs = p.tokens * p.top_k;
  if (pairs == 0 || p.intermediate == 0) return Status::Ok();
  if (pairs > 65535) return invalid_argument("decode gemm1: at most 65535 pairs, got " + std::to_string(pairs));
  FUSEKIT_RETURN_IF_ERROR(check_decode_routing(p, "decode gemm1"));
  int device = 0, sm_count = 0;
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  FUSEKIT_RETURN_IF_ERROR(sm_count_of(device, &sm_count));
  // Four tokens per pass only with the route's ids (at one token every expert has one pair) and
  // four columns: the one more instantiation that repeated experts need.
  const bool four_per_pass =
      p.routing == DecodeRouting::kIds && decode_gemm1_tokens_per_pass(p.tokens, p.top_k, p.num_experts) == 4;
  const int cols = four_per_pass ? 4 : decode_gemm1_cols_per_warp(pairs, p.num_experts, p.intermediate, sm_count);
  const std::int64_t cols_per_cta = kWarps * cols;
  const dim3 grid(static_cast<unsigned>((p.intermediate + cols_per_cta - 1) / cols_per_cta),
                  static_cast<unsigned>(pairs));
  if (four_per_pass) {
    FUSEKIT_CUDA_RETURN_IF_ERROR(launch_dependent(decode_gemm1_swiglu_nk_bf16_kernel<0, 4, 4>, grid, dim3(kWarps * 32), 0,
                                                  stream, p));
  } else {
    FUSEKIT_CUDA_RETURN_IF_ERROR(cols == 3 ? launch_for_routing<3>(p, grid, stream) : launch_for_routing<4>(p, grid, stream));
  }
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("decode_gemm1_swiglu_nk_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
