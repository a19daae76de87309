// Decode gemm2 x router weight + sum over top-k, weights NK ([E, H, I], I contiguous):
//   out[t, h] = bf16( sum_j w[t, j] * (act[t*k + j] . W2[ids[t, j]][h]) )   fp32 throughout
// Slots whose id is outside [0, E) contribute nothing. No y buffer and no finalize launch: a
// CTA owns kColsPerCta output columns for every token and adds the k pairs itself.
// Shapes: act [T*k, I] packed, out [T, H] (row stride given). I multiple of 8.
// Threads: 256 per CTA = 8 warps. Per token the work is k x S units (pair j, K slice s), with
// S = 8 / gcd(k, 8) slices (slices_for) so that the units split evenly over the warps; warp w
// takes units w, w + 8, ... A unit is kColsPerCta weight rows times its slice of I: each lane issues all
// the loads of 3 chunks (16 bytes each) of every row before using any, so at decode sizes a
// warp waits for memory about once per unit (a decode CTA is latency-bound, not byte-bound).
// Per unit the warp reduces its dot products (fixed xor tree) into shared memory, next to the
// slot's weight (0 for a dead slot); then
//   out = sum_j w[t, j] * sum_s dot[j, s]   in (j, s) order, from shared memory: deterministic.
// Grid: ceil(H / kColsPerCta) CTAs; tokens in sequence inside each CTA.
// Launch: programmatic dependent of gemm1; waits for it before touching memory.
#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/kernels.h"

namespace fusekit::cuda_moe {
namespace {

constexpr int kWarps = 8;
constexpr int kColsPerCta = 4;
constexpr int kChunksInFlight = 3;
constexpr int kMaxUnits = 512;  // k <= E <= 512, and S > 1 only when k < 8

// K slices per pair: units = k * slices = lcm(k, 8) keeps all 8 warps busy (k = 3 -> 8 slices,
// k = 6 -> 4, k = 10 -> 4), unless that exceeds the shared-memory table (then 1 slice).
__host__ __device__ constexpr int slices_for(int k) {
  int a = k, b = kWarps;
  while (b != 0) {
    const int r = a % b;
    a = b;
    b = r;
  }
  const int slices = kWarps / a;  // a = gcd(k, 8)
  return k * slices <= kMaxUnits ? slices : 1;
}

__device__ __forceinline__ float dot8(const uint4& w, const float (&a)[8]) {
  float f[8];
  dev::unpack8(w, f);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) s = fmaf(a[i], f[i], s);
  return s;
}

__global__ void __launch_bounds__(kWarps * 32) decode_gemm2_finalize_nk_bf16_kernel(DecodeLayerParams p) {
  __shared__ float unit_dot[kMaxUnits][kColsPerCta];
  __shared__ float slot_weight[kMaxUnits];  // w[t, j], 0 for a dead slot
  dev::wait_for_prior_grid();
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const std::int64_t h0 = static_cast<std::int64_t>(blockIdx.x) * kColsPerCta;
  const int cols = static_cast<int>(p.hidden - h0 < kColsPerCta ? p.hidden - h0 : kColsPerCta);
  const std::int64_t chunks = p.intermediate / 8;
  const int k = p.top_k;
  const int slices = slices_for(k);
  const int units = k * slices;
  const std::int64_t slice_chunks = (chunks + slices - 1) / slices;

  for (std::int64_t t = 0; t < p.tokens; ++t) {
    for (int u = warp; u < units; u += kWarps) {
      const int j = u / slices;
      const std::int64_t q = t * k + j;
      const int e = p.topk_ids[q];
      const bool live = e >= 0 && e < p.num_experts;
      if (lane == 0 && u % slices == 0) slot_weight[j] = live ? p.topk_weights[q] : 0.f;
      float dot[kColsPerCta] = {};
      if (live) {
        const uint4* w = reinterpret_cast<const uint4*>(p.w2 + (static_cast<std::int64_t>(e) * p.hidden + h0) *
                                                                   p.intermediate);
        const uint4* a = reinterpret_cast<const uint4*>(p.act + q * p.intermediate);
        const std::int64_t begin = (u % slices) * slice_chunks;
        const std::int64_t end = begin + slice_chunks < chunks ? begin + slice_chunks : chunks;
        for (std::int64_t kc = begin + lane; kc < end; kc += 32 * kChunksInFlight) {
          uint4 wv[kChunksInFlight][kColsPerCta];
          uint4 av[kChunksInFlight];
#pragma unroll
          for (int i = 0; i < kChunksInFlight; ++i) {
            const std::int64_t c = kc + 32 * i;
            const bool in = c < end;
            av[i] = in ? __ldg(a + c) : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int r = 0; r < kColsPerCta; ++r) {
              wv[i][r] = in ? __ldcs(w + (r < cols ? r : 0) * chunks + c) : make_uint4(0, 0, 0, 0);
            }
          }
#pragma unroll
          for (int i = 0; i < kChunksInFlight; ++i) {
            float af[8];
            dev::unpack8(av[i], af);
#pragma unroll
            for (int r = 0; r < kColsPerCta; ++r) dot[r] += dot8(wv[i][r], af);
          }
        }
      }
#pragma unroll
      for (int r = 0; r < kColsPerCta; ++r) {
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) dot[r] += __shfl_xor_sync(0xffffffffu, dot[r], off);
      }
      if (lane == 0) {
#pragma unroll
        for (int r = 0; r < kColsPerCta; ++r) unit_dot[u][r] = dot[r];
      }
    }
    __syncthreads();
    if (threadIdx.x < cols) {
      float sum = 0.f;
      for (int j = 0; j < k; ++j) {
        float d = 0.f;
        for (int s = 0; s < slices; ++s) d += unit_dot[j * slices + s][threadIdx.x];
        sum = fmaf(slot_weight[j], d, sum);  // a dead slot: 0 * 0
      }
      p.out[t * p.out_row_stride + h0 + threadIdx.x] = __float2bfloat16(sum);
    }
    __syncthreads();  // unit_dot is reused by the next token
  }
}

}  // namespace

Status launch_decode_gemm2_finalize_nk_bf16(const DecodeLayerParams& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.hidden == 0) return Status::Ok();
  if (p.top_k < 1 || p.top_k > kMaxUnits) {
    return invalid_argument("decode gemm2: top_k must be in [1, 512], got " + std::to_string(p.top_k));
  }
  const dim3 grid(static_cast<unsigned>((p.hidden + kColsPerCta - 1) / kColsPerCta));
  FUSEKIT_CUDA_RETURN_IF_ERROR(
      launch_dependent(decode_gemm2_finalize_nk_bf16_kernel, grid, dim3(kWarps * 32), 0, stream, p));
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("decode_gemm2_finalize_nk_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
