// Decode path, weights in KN layout ([E, K, N_w], N contiguous): one GEMV per (token, slot)
// pair, no alignment, weights read once per pair with 16-byte loads.
//   kSwiGLU:       out[p, c] = silu(a[t] . W1[e][:, c]) * (a[t] . W1[e][:, n + c]),  t = p / top_k
//   kRouterWeight: out[p, c] = topk_weights[p] * (a[p] . W2[e][:, c])
//   e = topk_ids[p]; an id outside [0, E) gives a zero row.
// Shapes: a [rows, K] (row stride given), out [pairs, n] (row stride given).
// Threads: 256 per CTA covering 64 output columns. Gated: 16 column groups of 8 (8 gate, 8 up)
// x 16 K slices; else 8 groups x 32 slices. Each thread walks its K slice with 16-byte loads
// of 8 consecutive weight columns; slices are summed in shared memory in slice order
// (deterministic). Grid: ceil(n / 64) x pairs.
// Limits: n % 8 == 0; pairs <= 65535.
#include "common/cuda_check.h"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/kernels.h"

namespace fusekit::cuda_moe {
namespace {

constexpr int kThreads = 256;
constexpr int kCols = 64;

template <DecodeEpilogue EPI>
__global__ void __launch_bounds__(kThreads) decode_gemv_kn_bf16_kernel(DecodeParams p) {
  constexpr bool kGated = EPI == DecodeEpilogue::kSwiGLU;
  constexpr int kGroups = (kGated ? 2 : 1) * kCols / 8;
  constexpr int kSlices = kThreads / kGroups;
  __shared__ float partial[kSlices][kGroups * 8];
  const std::int64_t pair = blockIdx.y;
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.x) * kCols;
  const int group = threadIdx.x % kGroups;
  const int slice = threadIdx.x / kGroups;
  const int expert = p.topk_ids[pair];
  __nv_bfloat16* out_row = p.out + pair * p.out_row_stride;
  if (expert < 0 || expert >= p.num_experts) {
    if (threadIdx.x < kCols && c0 + threadIdx.x < p.n) out_row[c0 + threadIdx.x] = __float2bfloat16(0.f);
    return;
  }
  const std::int64_t a_row = kGated ? pair / p.top_k : pair;
  const __nv_bfloat16* a = p.a + a_row * p.a_row_stride;
  const std::int64_t n_w = kGated ? 2 * p.n : p.n;
  const int local = (group % (kCols / 8)) * 8;
  const bool valid = c0 + local < p.n;
  const std::int64_t wcol = (kGated && group >= kCols / 8 ? p.n : 0) + c0 + local;
  const __nv_bfloat16* w = p.w + static_cast<std::int64_t>(expert) * p.k * n_w + wcol;
  float acc[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = 0.f;
  if (valid) {
    for (std::int64_t k = slice; k < p.k; k += kSlices) {
      const float av = __bfloat162float(a[k]);
      float f[8];
      dev::unpack8(__ldcs(reinterpret_cast<const uint4*>(w + k * n_w)), f);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = fmaf(av, f[i], acc[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) partial[slice][group * 8 + i] = acc[i];
  __syncthreads();
  if (threadIdx.x < kCols && c0 + threadIdx.x < p.n) {
    const int c = threadIdx.x;
    float s = 0.f;
    for (int sl = 0; sl < kSlices; ++sl) s += partial[sl][c];
    float v;
    if (kGated) {
      float u = 0.f;
      for (int sl = 0; sl < kSlices; ++sl) u += partial[sl][kCols + c];
      v = dev::silu(s) * u;
    } else {
      v = p.topk_weights[pair] * s;
    }
    out_row[c0 + c] = __float2bfloat16(v);
  }
}

}  // namespace

Status launch_decode_gemv_kn_bf16(const DecodeParams& p, cudaStream_t stream) {
  if (p.pairs == 0 || p.n == 0) return Status::Ok();
  if (p.pairs > 65535) return invalid_argument("decode: at most 65535 pairs, got " + std::to_string(p.pairs));
  const dim3 grid(static_cast<unsigned>((p.n + kCols - 1) / kCols), static_cast<unsigned>(p.pairs));
  switch (p.epilogue) {
    case DecodeEpilogue::kSwiGLU:
      decode_gemv_kn_bf16_kernel<DecodeEpilogue::kSwiGLU><<<grid, kThreads, 0, stream>>>(p);
      break;
    case DecodeEpilogue::kRouterWeight:
      decode_gemv_kn_bf16_kernel<DecodeEpilogue::kRouterWeight><<<grid, kThreads, 0, stream>>>(p);
      break;
    default:
      return invalid_argument("decode: unknown epilogue");
  }
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("decode_gemv_kn_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
