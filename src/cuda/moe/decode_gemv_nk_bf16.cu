// Decode path, weights in NK layout ([E, N_w, K], K contiguous): one GEMV per (token, slot)
// pair, no alignment, weights read once per pair with 16-byte loads.
//   kSwiGLU:       out[p, c] = silu(a[t] . W1[e][c]) * (a[t] . W1[e][n + c]),  t = p / top_k
//   kRouterWeight: out[p, c] = topk_weights[p] * (a[p] . W2[e][c])
//   e = topk_ids[p]; an id outside [0, E) gives a zero row.
// Shapes: a [rows, K] (row stride given), out [pairs, n] (row stride given).
// Threads: 256 per CTA = 8 warps; each warp owns 4 output columns (8 weight rows when gated):
// its lanes stride over K 8 elements at a time, keep one fp32 partial per weight row, and
// reduce with a fixed xor tree (deterministic). Grid: ceil(n / 32) x pairs.
// Limits: K % 8 == 0, n % 8 == 0 (16-byte rows); pairs <= 65535.
#include "common/cuda_check.h"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/kernels.h"

namespace fusekit::cuda_moe {
namespace {

constexpr int kWarps = 8;
constexpr int kColsPerWarp = 4;

template <DecodeEpilogue EPI>
__global__ void __launch_bounds__(kWarps * 32) decode_gemv_nk_bf16_kernel(DecodeParams p) {
  constexpr int kRows = EPI == DecodeEpilogue::kSwiGLU ? 2 * kColsPerWarp : kColsPerWarp;
  const std::int64_t pair = blockIdx.y;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const std::int64_t c0 = (static_cast<std::int64_t>(blockIdx.x) * kWarps + warp) * kColsPerWarp;
  if (c0 >= p.n) return;
  const int expert = p.topk_ids[pair];
  __nv_bfloat16* out_row = p.out + pair * p.out_row_stride;
  if (expert < 0 || expert >= p.num_experts) {
    if (lane < kColsPerWarp && c0 + lane < p.n) out_row[c0 + lane] = __float2bfloat16(0.f);
    return;
  }
  const std::int64_t a_row = EPI == DecodeEpilogue::kSwiGLU ? pair / p.top_k : pair;
  const uint4* a = reinterpret_cast<const uint4*>(p.a + a_row * p.a_row_stride);
  const std::int64_t n_w = EPI == DecodeEpilogue::kSwiGLU ? 2 * p.n : p.n;
  const __nv_bfloat16* w = p.w + static_cast<std::int64_t>(expert) * n_w * p.k;
  const uint4* wrow[kRows];
  bool valid[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const std::int64_t c = c0 + r % kColsPerWarp;
    valid[r] = c < p.n;
    const std::int64_t wr = (r >= kColsPerWarp ? p.n : 0) + (valid[r] ? c : 0);
    wrow[r] = reinterpret_cast<const uint4*>(w + wr * p.k);
  }
  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.f;
  const std::int64_t chunks = p.k / 8;
  for (std::int64_t kc = lane; kc < chunks; kc += 32) {
    float av[8];
    dev::unpack8(__ldg(a + kc), av);
    uint4 wv[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) wv[r] = valid[r] ? __ldcs(wrow[r] + kc) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float f[8];
      dev::unpack8(wv[r], f);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[r] = fmaf(av[i], f[i], acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
  if (lane == 0) {
    const float scale = EPI == DecodeEpilogue::kSwiGLU ? 1.f : p.topk_weights[pair];
#pragma unroll
    for (int r = 0; r < kColsPerWarp; ++r) {
      if (c0 + r >= p.n) break;
      const float v = EPI == DecodeEpilogue::kSwiGLU ? dev::silu(acc[r]) * acc[r + (kRows - kColsPerWarp)] : scale * acc[r];
      out_row[c0 + r] = __float2bfloat16(v);
    }
  }
}

}  // namespace

Status launch_decode_gemv_nk_bf16(const DecodeParams& p, cudaStream_t stream) {
  if (p.pairs == 0 || p.n == 0) return Status::Ok();
  if (p.pairs > 65535) return invalid_argument("decode: at most 65535 pairs, got " + std::to_string(p.pairs));
  const dim3 grid(static_cast<unsigned>((p.n + kWarps * kColsPerWarp - 1) / (kWarps * kColsPerWarp)),
                  static_cast<unsigned>(p.pairs));
  switch (p.epilogue) {
    case DecodeEpilogue::kSwiGLU:
      decode_gemv_nk_bf16_kernel<DecodeEpilogue::kSwiGLU><<<grid, kWarps * 32, 0, stream>>>(p);
      break;
    case DecodeEpilogue::kRouterWeight:
      decode_gemv_nk_bf16_kernel<DecodeEpilogue::kRouterWeight><<<grid, kWarps * 32, 0, stream>>>(p);
      break;
    default:
      return invalid_argument("decode: unknown epilogue");
  }
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("decode_gemv_nk_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
