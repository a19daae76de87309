// Decode gemm2 x router weight + sum over top-k, weights NK ([E, H, I], I contiguous):
//   out[t, h] = bf16( sum_{j} w[t, j] * (act[t*k + j] . W2[ids[t, j]][h]) )   fp32 throughout
// Slots whose id is outside [0, E) contribute nothing. No y buffer and no finalize launch: a
// CTA owns a block of output columns for every token and adds the k pairs itself.
// Shapes: act [T*k, I] packed, out [T, H] (row stride given). I multiple of 8.
// Threads: 128 per CTA = 4 warps; a warp owns 2 output columns (2 weight rows of each pair's
// expert); its lanes stride over I 8 elements (16 bytes) at a time. The loop over a token's k
// pairs is unrolled by 4 so 12 loads are in flight per lane. Each lane keeps
//   acc += w[t, j] * (its partial dot for pair j)
// in a fixed (chunk, j) order, then one xor-tree reduction per column: deterministic.
// Grid: ceil(H / 8) CTAs; tokens in sequence inside each CTA.
// Launch: programmatic dependent of gemm1; waits for it before touching memory.
#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/kernels.h"

namespace fusekit::cuda_moe {
namespace {

constexpr int kWarps = 4;
constexpr int kColsPerWarp = 2;
constexpr int kColsPerCta = kWarps * kColsPerWarp;
constexpr int kPairsInFlight = 4;

__global__ void __launch_bounds__(kWarps * 32) decode_gemm2_finalize_nk_bf16_kernel(DecodeLayerParams p) {
  dev::wait_for_prior_grid();
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const std::int64_t h0 = static_cast<std::int64_t>(blockIdx.x) * kColsPerCta + warp * kColsPerWarp;
  if (h0 >= p.hidden) return;
  const int cols = static_cast<int>(p.hidden - h0 < kColsPerWarp ? p.hidden - h0 : kColsPerWarp);
  const std::int64_t chunks = p.intermediate / 8;
  const int k = p.top_k;
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    float acc[kColsPerWarp] = {};
    for (int j0 = 0; j0 < k; j0 += kPairsInFlight) {
      const uint4* w[kPairsInFlight];
      const uint4* a[kPairsInFlight];
      float weight[kPairsInFlight];
      unsigned live_mask = 0;  // slots past k or with an id outside [0, E) load nothing
#pragma unroll
      for (int u = 0; u < kPairsInFlight; ++u) {
        const std::int64_t q = t * k + j0 + u;
        const int e = j0 + u < k ? p.topk_ids[q] : -1;
        const bool live = e >= 0 && e < p.num_experts;
        weight[u] = live ? p.topk_weights[q] : 0.f;
        live_mask |= (live ? 1u : 0u) << u;
        w[u] = reinterpret_cast<const uint4*>(p.w2 + ((live ? static_cast<std::int64_t>(e) * p.hidden : 0) + h0) *
                                                           p.intermediate);
        a[u] = reinterpret_cast<const uint4*>(p.act + (live ? q : t * k) * p.intermediate);
      }
      for (std::int64_t kc = lane; kc < chunks; kc += 32) {
        uint4 wv[kPairsInFlight][kColsPerWarp];
        uint4 av[kPairsInFlight];
#pragma unroll
        for (int u = 0; u < kPairsInFlight; ++u) {
          const bool live = live_mask >> u & 1u;
          av[u] = live ? __ldg(a[u] + kc) : make_uint4(0, 0, 0, 0);
#pragma unroll
          for (int c = 0; c < kColsPerWarp; ++c) {
            wv[u][c] = live ? __ldcs(w[u] + (c < cols ? c : 0) * chunks + kc) : make_uint4(0, 0, 0, 0);
          }
        }
#pragma unroll
        for (int u = 0; u < kPairsInFlight; ++u) {
          float af[8];
          dev::unpack8(av[u], af);
#pragma unroll
          for (int c = 0; c < kColsPerWarp; ++c) acc[c] = fmaf(weight[u], dev::dot8(wv[u][c], af), acc[c]);
        }
      }
    }
#pragma unroll
    for (int c = 0; c < kColsPerWarp; ++c)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) acc[c] += __shfl_xor_sync(0xffffffffu, acc[c], off);
    if (lane < cols) {
      float v = acc[0];
#pragma unroll
      for (int c = 1; c < kColsPerWarp; ++c) v = lane == c ? acc[c] : v;
      p.out[t * p.out_row_stride + h0 + lane] = __float2bfloat16(v);
    }
  }
}

}  // namespace

Status launch_decode_gemm2_finalize_nk_bf16(const DecodeLayerParams& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.hidden == 0) return Status::Ok();
  const dim3 grid(static_cast<unsigned>((p.hidden + kColsPerCta - 1) / kColsPerCta));
  FUSEKIT_CUDA_RETURN_IF_ERROR(
      launch_dependent(decode_gemm2_finalize_nk_bf16_kernel, grid, dim3(kWarps * 32), 0, stream, p));
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("decode_gemm2_finalize_nk_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
