// gemm2 x router weight, grouped over align blocks, sm_80 mma.sync (also the sm_90a fallback):
//   y[pair, c] = topk_weights[pair] * (act[row] . W2[e][c])   (fp32 accumulate and scale, bf16 out)
//   pair = sorted_token_ids[row], e = expert_ids[row / BM]; written at the pair's own row, so
//   finalize can sum a token's k slots in a fixed order. Padding rows write nothing.
// Shapes: act [capacity, I] (row stride given), W2 NK [E, H, I] | KN [E, I, H], y [T*k, H].
// Blocks at or past num_tokens_post_padded exit at once; grid capacity / BM x ceil(H / 128).
// Tile 64 x 128 x 32, 4 warps (2 x 2, warp 32 x 64), 3 stages.
// Limits: H % 8 == 0, I % 8 == 0, E <= 512; block_m must equal the tile's 64 rows.
#include "common/cuda_check.h"
#include "cuda/moe/grouped_gemm_bf16_sm80.cuh"

namespace fusekit::cuda_moe {
namespace {

using Gemm2Tile = sm80::TileConfig</*BM=*/64, /*BN_OUT=*/128, /*BK=*/32, 2, 2, /*STAGES=*/3, /*GATED=*/false>;

template <MoeWeightLayout L>
__global__ void __launch_bounds__(Gemm2Tile::THREADS) grouped_gemm2_bf16_sm80_kernel(GroupedGemmParams p) {
  using Cfg = Gemm2Tile;
  __shared__ alignas(128) __nv_bfloat16 smem_a[Cfg::STAGES * Cfg::A_STAGE];
  __shared__ alignas(128) __nv_bfloat16 smem_b[Cfg::STAGES * Cfg::B_STAGE];
  const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.x) * Cfg::BM;
  if (m0 >= *p.num_tokens_post_padded) return;
  const int expert = p.expert_ids[blockIdx.x];
  if (expert < 0 || expert >= p.num_experts) return;
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.y) * Cfg::BN_OUT;
  const int tid = threadIdx.x;

  const __nv_bfloat16* row_src[Cfg::A_CHUNKS];
#pragma unroll
  for (int i = 0; i < Cfg::A_CHUNKS; ++i) {
    const std::int64_t row = m0 + (tid + i * Cfg::THREADS) / (Cfg::BK / 8);
    row_src[i] = p.sorted_token_ids[row] < p.pairs ? p.a + row * p.a_row_stride : nullptr;
  }
  const std::int64_t w_ld = L == MoeWeightLayout::kNK ? p.k : p.n;
  const __nv_bfloat16* w_expert = p.w + static_cast<std::int64_t>(expert) * p.n * p.k;
  float acc[Cfg::MI][Cfg::NJ][4];
  sm80::mainloop<Cfg, L>(row_src, w_expert, w_ld, p.n, n0, p.k, MoeGateUpOrder::kHalves, smem_a, smem_b, acc);

  const int lane = tid % 32;
  const int warp = tid / 32;
  const int warp_m = warp / Cfg::WARPS_N;
  const int warp_n = warp % Cfg::WARPS_N;
#pragma unroll
  for (int i = 0; i < Cfg::MI; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const std::int64_t row = m0 + warp_m * Cfg::WM + i * 16 + lane / 4 + h * 8;
      const std::int64_t pair = p.sorted_token_ids[row];
      if (pair >= p.pairs) continue;
      const float scale = p.topk_weights[pair];
      __nv_bfloat16* out_row = p.out + pair * p.out_row_stride;
#pragma unroll
      for (int j = 0; j < Cfg::NJ; ++j) {
        const std::int64_t col = n0 + warp_n * Cfg::WN_OUT + j * 8 + (lane % 4) * 2;
        if (col >= p.n) continue;
        *reinterpret_cast<__nv_bfloat162*>(out_row + col) =
            __floats2bfloat162_rn(scale * acc[i][j][2 * h], scale * acc[i][j][2 * h + 1]);
      }
    }
  }
}

}  // namespace

Status launch_grouped_gemm2_bf16_sm80(const GroupedGemmParams& p, cudaStream_t stream) {
  if (p.block_m != Gemm2Tile::BM) {
    return invalid_argument("gemm2: alignment block_m must be " + std::to_string(Gemm2Tile::BM) +
                            " for the sm_80 grouped GEMM, got " + std::to_string(p.block_m));
  }
  const std::int64_t m_blocks = p.capacity / Gemm2Tile::BM;
  const std::int64_t n_blocks = (p.n + Gemm2Tile::BN_OUT - 1) / Gemm2Tile::BN_OUT;
  if (m_blocks == 0 || n_blocks == 0) return Status::Ok();
  const dim3 grid(static_cast<unsigned>(m_blocks), static_cast<unsigned>(n_blocks));
  switch (p.layout) {
    case MoeWeightLayout::kNK:
      grouped_gemm2_bf16_sm80_kernel<MoeWeightLayout::kNK><<<grid, Gemm2Tile::THREADS, 0, stream>>>(p);
      break;
    case MoeWeightLayout::kKN:
      grouped_gemm2_bf16_sm80_kernel<MoeWeightLayout::kKN><<<grid, Gemm2Tile::THREADS, 0, stream>>>(p);
      break;
    default:
      return invalid_argument("gemm2: weight layout must be NK or KN");
  }
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("grouped_gemm2_bf16_sm80_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
