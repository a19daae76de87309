// Decode gemm1 + SwiGLU, weights NK ([E, 2I, H], H contiguous):
//   act[q, c] = silu(x[t] . W1[e][c]) * (x[t] . W1[e][I + c])   for every pair q = t*k + j, e = ids[q]
// Each expert the batch hits is read once: the CTAs of pair p work only if p is the first pair
// routed to its expert, and then serve every token routed to that expert, sweeping K once per
// window of kTokensPerPass consecutive tokens that holds any (a later sweep re-reads the
// expert's rows, from L2 in practice).
// At T = 8, k = 8, E = 128 that is ~52 experts read instead of 64. Pairs whose id is outside
// [0, E) get no act row (gemm2 skips them); a token whose (caller-given) ids repeat an expert
// gets the same act row in each of those slots.
// Shapes: x [T, H] (row stride given), act [T*k, I] packed. I, H multiples of 8.
// Threads: 256 per CTA = 8 warps; a warp owns 4 columns (8 weight rows: 4 gate, 4 up), its
// lanes stride over K 8 elements (16 bytes) at a time, two strides per step so 16 loads are in
// flight per lane; fp32 partials, fixed xor-tree reduction (deterministic).
// Grid: ceil(I / 32) x pairs. Each CTA scans ids[0, p) to find out whether it is first, and the
// ids of the later tokens to find its pairs: O(pairs) per CTA, fine at the decode sizes.
// Launch: programmatic dependent of the route kernel; waits for it before reading ids.
#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/kernels.h"

namespace fusekit::cuda_moe {
namespace {

constexpr int kWarps = 8;
constexpr int kColsPerWarp = 4;
constexpr int kRows = 2 * kColsPerWarp;
constexpr int kTokensPerPass = 4;
constexpr int kColsPerCta = kWarps * kColsPerWarp;

__global__ void __launch_bounds__(kWarps * 32, 2) decode_gemm1_swiglu_nk_bf16_kernel(DecodeLayerParams p) {
  __shared__ int pass_pair[kTokensPerPass];  // pair row of each token of this pass, -1 if it skips e
  dev::wait_for_prior_grid();
  const std::int64_t pair = blockIdx.y;
  const int expert = p.topk_ids[pair];
  if (expert < 0 || expert >= p.num_experts) return;
  int seen = 0;
  for (std::int64_t q = threadIdx.x; q < pair; q += blockDim.x) seen |= p.topk_ids[q] == expert;
  if (__syncthreads_or(seen)) return;

  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const std::int64_t n = p.intermediate;
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.x) * kColsPerCta + warp * kColsPerWarp;
  const std::int64_t chunks = p.hidden / 8;
  // Row r < 4 is gate column c0 + r, row r >= 4 is up column c0 + r - 4; rows past I read row c0.
  const uint4* gate = reinterpret_cast<const uint4*>(p.w1 + (static_cast<std::int64_t>(expert) * 2 * n + c0) * p.hidden);
  const uint4* up = gate + n * chunks;
  const int cols = static_cast<int>(n - c0 < kColsPerWarp ? n - c0 : kColsPerWarp);
  auto row = [&](int r) { return (r < kColsPerWarp ? gate : up) + (r % kColsPerWarp < cols ? r % kColsPerWarp : 0) * chunks; };

  // Tokens before the first pair's token do not route to this expert.
  for (std::int64_t t0 = pair / p.top_k; t0 < p.tokens; t0 += kTokensPerPass) {
    __syncthreads();  // the previous pass is done with pass_pair
    if (threadIdx.x < kTokensPerPass) {
      const std::int64_t t = t0 + threadIdx.x;
      int found = -1;
      for (int j = 0; t < p.tokens && j < p.top_k; ++j) {
        if (p.topk_ids[t * p.top_k + j] == expert) {
          found = static_cast<int>(t * p.top_k + j);
          break;
        }
      }
      pass_pair[threadIdx.x] = found;
    }
    __syncthreads();
    unsigned mask = 0;
#pragma unroll
    for (int i = 0; i < kTokensPerPass; ++i) mask |= (pass_pair[i] >= 0 ? 1u : 0u) << i;
    if (mask == 0 || c0 >= n) continue;

    const uint4* xrow[kTokensPerPass];
#pragma unroll
    for (int i = 0; i < kTokensPerPass; ++i) {
      xrow[i] = reinterpret_cast<const uint4*>(p.x + (mask >> i & 1u ? t0 + i : 0) * p.x_row_stride);
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
    // Every weight byte this CTA needs is loaded: let gemm2's CTAs take the free slots.
    dev::allow_dependent_grid();
#pragma unroll
    for (int i = 0; i < kTokensPerPass; ++i) {
      if (!(mask >> i & 1u)) continue;
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) acc[r][i] += __shfl_xor_sync(0xffffffffu, acc[r][i], off);
      if (lane < kColsPerWarp && c0 + lane < n) {
        float g = acc[0][i], u = acc[kColsPerWarp][i];
#pragma unroll
        for (int r = 1; r < kColsPerWarp; ++r) {
          if (lane == r) {
            g = acc[r][i];
            u = acc[r + kColsPerWarp][i];
          }
        }
        const __nv_bfloat16 v = __float2bfloat16(dev::silu(g) * u);
        // pass_pair holds the token's first slot routed here; ids given by the caller may
        // repeat the expert in a later slot of the same token, whose act row is the same.
        const std::int64_t first = pass_pair[i];
        const std::int64_t token_end = (first / p.top_k + 1) * p.top_k;
        for (std::int64_t q = first; q < token_end; ++q) {
          if (q == first || p.topk_ids[q] == expert) p.act[q * n + c0 + lane] = v;
        }
      }
    }
  }
}

}  // namespace

Status launch_decode_gemm1_swiglu_nk_bf16(const DecodeLayerParams& p, cudaStream_t stream) {
  const std::int64_t pairs = p.tokens * p.top_k;
  if (pairs == 0 || p.intermediate == 0) return Status::Ok();
  if (pairs > 65535) return invalid_argument("decode gemm1: at most 65535 pairs, got " + std::to_string(pairs));
  const dim3 grid(static_cast<unsigned>((p.intermediate + kColsPerCta - 1) / kColsPerCta),
                  static_cast<unsigned>(pairs));
  FUSEKIT_CUDA_RETURN_IF_ERROR(launch_dependent(decode_gemm1_swiglu_nk_bf16_kernel, grid, dim3(kWarps * 32), 0, stream, p));
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("decode_gemm1_swiglu_nk_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
