// gemm1 + SwiGLU, grouped over align blocks, sm_80 mma.sync (also the sm_90a fallback):
//   act[row, c] = silu(x[t] . W1[e][gate c]) * (x[t] . W1[e][up c])   (fp32 accumulate, bf16 out)
//   row in the sorted order, t = sorted_token_ids[row] / top_k, e = expert_ids[row / BM];
//   gate c = weight row/column c, up c = weight row/column I + c.
// Shapes: x [T, H] (row stride given), W1 NK [E, 2I, H] | KN [E, H, 2I], act [capacity, I].
// Padding rows (pair = T*k) get zeros; blocks at or past num_tokens_post_padded exit at once
// (or write zero rows when zero_rows_past_total, for the public stage), so the grid
// (capacity / BM x ceil(I / 64)) never depends on device-side counts (graph safe).
// Tile 64 x (64 gate + 64 up) x 32, 4 warps (2 x 2, warp 32 x 32 outputs), 3 stages.
// Limits: H % 8 == 0, I % 8 == 0, E <= 512; block_m must equal the tile's 64 rows.
#include "common/cuda_check.h"
#include "cuda/moe/grouped_gemm_bf16_sm80.cuh"

namespace fusekit::cuda_moe {
namespace {

using Gemm1Tile = sm80::TileConfig</*BM=*/64, /*BN_OUT=*/64, /*BK=*/32, 2, 2, /*STAGES=*/3, /*GATED=*/true>;

template <MoeWeightLayout L>
__global__ void __launch_bounds__(Gemm1Tile::THREADS) grouped_gemm1_swiglu_bf16_sm80_kernel(GroupedGemmParams p) {
  using Cfg = Gemm1Tile;
  __shared__ alignas(128) __nv_bfloat16 smem_a[Cfg::STAGES * Cfg::A_STAGE];
  __shared__ alignas(128) __nv_bfloat16 smem_b[Cfg::STAGES * Cfg::B_STAGE];
  const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.x) * Cfg::BM;
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.y) * Cfg::BN_OUT;
  const int tid = threadIdx.x;
  const int expert = p.expert_ids[blockIdx.x];
  if (m0 >= *p.num_tokens_post_padded || expert < 0 || expert >= p.num_experts) {
    if (p.zero_rows_past_total) {
      for (int i = tid; i < Cfg::BM * (Cfg::BN_OUT / 2); i += Cfg::THREADS) {
        const std::int64_t row = m0 + i / (Cfg::BN_OUT / 2);
        const std::int64_t col = n0 + (i % (Cfg::BN_OUT / 2)) * 2;
        if (col < p.n) *reinterpret_cast<__nv_bfloat162*>(p.out + row * p.out_row_stride + col) = __floats2bfloat162_rn(0.f, 0.f);
      }
    }
    return;
  }

  const __nv_bfloat16* row_src[Cfg::A_CHUNKS];
#pragma unroll
  for (int i = 0; i < Cfg::A_CHUNKS; ++i) {
    const int r = (tid + i * Cfg::THREADS) / (Cfg::BK / 8);
    const std::int64_t pair = p.sorted_token_ids[m0 + r];
    row_src[i] = pair < p.pairs ? p.a + (pair / p.top_k) * p.a_row_stride : nullptr;
  }
  const std::int64_t w_ld = L == MoeWeightLayout::kNK ? p.k : 2 * p.n;
  const __nv_bfloat16* w_expert = p.w + static_cast<std::int64_t>(expert) * (2 * p.n) * p.k;
  float acc[Cfg::MI][Cfg::NJ][4];
  sm80::mainloop<Cfg, L>(row_src, w_expert, w_ld, p.n, n0, p.k, p.gate_up_order, smem_a, smem_b, acc);

  const int lane = tid % 32;
  const int warp = tid / 32;
  const int warp_m = warp / Cfg::WARPS_N;
  const int warp_n = warp % Cfg::WARPS_N;
#pragma unroll
  for (int i = 0; i < Cfg::MI; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const std::int64_t row = m0 + warp_m * Cfg::WM + i * 16 + lane / 4 + h * 8;
      const bool real = p.sorted_token_ids[row] < p.pairs;
      __nv_bfloat16* out_row = p.out + row * p.out_row_stride;
#pragma unroll
      for (int j = 0; j < Cfg::NI_OUT; ++j) {
        const std::int64_t col = n0 + warp_n * Cfg::WN_OUT + j * 8 + (lane % 4) * 2;
        if (col >= p.n) continue;
        float v0 = 0.f, v1 = 0.f;
        if (real) {
          v0 = dev::silu(acc[i][j][2 * h]) * acc[i][j + Cfg::NI_OUT][2 * h];
          v1 = dev::silu(acc[i][j][2 * h + 1]) * acc[i][j + Cfg::NI_OUT][2 * h + 1];
        }
        *reinterpret_cast<__nv_bfloat162*>(out_row + col) = __floats2bfloat162_rn(v0, v1);
      }
    }
  }
}

}  // namespace

Status launch_grouped_gemm1_swiglu_bf16_sm80(const GroupedGemmParams& p, cudaStream_t stream) {
  if (p.block_m != Gemm1Tile::BM) {
    return invalid_argument("gemm1_swiglu: alignment block_m must be " + std::to_string(Gemm1Tile::BM) +
                            " for the sm_80 grouped GEMM, got " + std::to_string(p.block_m));
  }
  const std::int64_t m_blocks = p.capacity / Gemm1Tile::BM;
  const std::int64_t n_blocks = (p.n + Gemm1Tile::BN_OUT - 1) / Gemm1Tile::BN_OUT;
  if (m_blocks == 0 || n_blocks == 0) return Status::Ok();
  const dim3 grid(static_cast<unsigned>(m_blocks), static_cast<unsigned>(n_blocks));
  switch (p.layout) {
    case MoeWeightLayout::kNK:
      grouped_gemm1_swiglu_bf16_sm80_kernel<MoeWeightLayout::kNK><<<grid, Gemm1Tile::THREADS, 0, stream>>>(p);
      break;
    case MoeWeightLayout::kKN:
      grouped_gemm1_swiglu_bf16_sm80_kernel<MoeWeightLayout::kKN><<<grid, Gemm1Tile::THREADS, 0, stream>>>(p);
      break;
    default:
      return invalid_argument("gemm1_swiglu: weight layout must be NK or KN");
  }
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("grouped_gemm1_swiglu_bf16_sm80_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
