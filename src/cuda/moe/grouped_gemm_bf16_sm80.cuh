// The sm_80 grouped-GEMM CTA mainloop shared by gemm1 (+SwiGLU) and gemm2 (x router weight).
//
// One CTA = one align block (BM rows of the sorted order, all of one expert) x BN_OUT output
// columns. C[BM, BN_OUT] = A[BM, K] . W[e]^T[K, BN_OUT], bf16 in, fp32 accumulate, on
// mma.sync.m16n8k16 fed by ldmatrix from padded shared tiles (row pitch +8 bf16: conflict-free
// ldmatrix without a swizzle), STAGES-deep cp.async pipeline.
//   A rows: gemm1 gathers x[sorted_token_ids[row] / top_k]; gemm2 reads act[row] directly;
//           padding rows (pair >= pairs) load zeros.
//   B: layout NK (W[e] is [N_w, K], K contiguous) -> smem [BN][BK], ldmatrix;
//      layout KN (W[e] is [K, N_w], N contiguous) -> smem [BK][BN], ldmatrix.trans.
//   Gated (gemm1): the BN smem columns are BN/2 gate columns then the matching BN/2 up
//           columns (weight rows/cols c and n + c), so each thread holds gate and up of the
//           same output element for the SwiGLU epilogue.
// Masks: K in 16-byte chunks (K % 8 == 0), N per 8 columns (n % 8 == 0); no other tile
// assumption. All row/element offsets are 64-bit.
// Warps: WARPS_M x WARPS_N, warp tile (BM / WARPS_M) x (BN_OUT / WARPS_N).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "common/moe_gate_up.h"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/kernels.h"

namespace fusekit::cuda_moe::sm80 {

template <int BM_, int BN_OUT_, int BK_, int WARPS_M_, int WARPS_N_, int STAGES_, bool GATED_>
struct TileConfig {
  static constexpr int BM = BM_;
  static constexpr int BN_OUT = BN_OUT_;  // output columns per CTA
  static constexpr bool GATED = GATED_;
  static constexpr int BN = GATED ? 2 * BN_OUT : BN_OUT;  // weight columns per CTA
  static constexpr int BK = BK_;
  static constexpr int WARPS_M = WARPS_M_;
  static constexpr int WARPS_N = WARPS_N_;
  static constexpr int STAGES = STAGES_;
  static constexpr int THREADS = WARPS_M * WARPS_N * 32;
  static constexpr int WM = BM / WARPS_M;
  static constexpr int WN_OUT = BN_OUT / WARPS_N;
  static constexpr int MI = WM / 16;
  static constexpr int NI_OUT = WN_OUT / 8;
  static constexpr int NJ = GATED ? 2 * NI_OUT : NI_OUT;  // n8 fragments held per warp
  static constexpr int A_PITCH = BK + 8;
  static constexpr int BNK_PITCH = BK + 8;  // NK: smem [BN][BK + 8]
  static constexpr int BKN_PITCH = BN + 8;  // KN: smem [BK][BN + 8]
  static constexpr int A_STAGE = BM * A_PITCH;
  static constexpr int B_STAGE = BN * BNK_PITCH > BK * BKN_PITCH ? BN * BNK_PITCH : BK * BKN_PITCH;
  static constexpr int A_CHUNKS = BM * BK / 8 / THREADS;
  static constexpr int B_CHUNKS = BN * BK / 8 / THREADS;
  static_assert(BM % (16 * WARPS_M) == 0 && BN_OUT % (8 * WARPS_N) == 0, "warp tiling");
  static_assert(NI_OUT % 2 == 0, "B fragments are loaded in pairs");
  static_assert(BK % 16 == 0 && (BM * BK / 8) % THREADS == 0 && (BN * BK / 8) % THREADS == 0, "load split");
  static_assert((A_STAGE + B_STAGE) * STAGES * 2 <= 48 * 1024, "static shared memory");

  // Smem column of this warp's n8 fragment j (gate fragments first, then up, when gated).
  __device__ static __forceinline__ int frag_col(int warp_n, int j) {
    if (GATED) return (j < NI_OUT ? 0 : BN_OUT) + warp_n * WN_OUT + (j % NI_OUT) * 8;
    return warp_n * WN_OUT + j * 8;
  }
};

// Runs the mainloop; acc[mi][j][4] gets this warp's fragments (mma C layout).
// row_src[i] = first element of the A row of this thread's i-th A chunk (null = zero row).
// Gated (gemm1): the tile's first BN_OUT weight rows are gate columns n0.., the next BN_OUT the
// up columns, found in W1 by gate_up_order (common/moe_gate_up.h).
template <typename Cfg, MoeWeightLayout L>
__device__ __forceinline__ void mainloop(const __nv_bfloat16* const (&row_src)[Cfg::A_CHUNKS],
                                         const __nv_bfloat16* w_expert, std::int64_t w_ld, std::int64_t n_out,
                                         std::int64_t n0, std::int64_t K, MoeGateUpOrder gate_up_order,
                                         __nv_bfloat16* smem_a, __nv_bfloat16* smem_b,
                                         float (&acc)[Cfg::MI][Cfg::NJ][4]) {
  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int warp_m = warp / Cfg::WARPS_N;
  const int warp_n = warp % Cfg::WARPS_N;

#pragma unroll
  for (int i = 0; i < Cfg::MI; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::NJ; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

  // This thread's B chunks: weight row (NK) / column (KN) pointers and validity, fixed over k.
  const __nv_bfloat16* b_src[Cfg::B_CHUNKS];
  bool b_valid[Cfg::B_CHUNKS];
  int b_smem[Cfg::B_CHUNKS];
  int b_k[Cfg::B_CHUNKS];
#pragma unroll
  for (int i = 0; i < Cfg::B_CHUNKS; ++i) {
    const int c = tid + i * Cfg::THREADS;
    int col, kk;
    if (L == MoeWeightLayout::kNK) {
      col = c / (Cfg::BK / 8);
      kk = (c % (Cfg::BK / 8)) * 8;
      b_smem[i] = col * Cfg::BNK_PITCH + kk;
    } else {
      kk = c / (Cfg::BN / 8);
      col = (c % (Cfg::BN / 8)) * 8;
      b_smem[i] = kk * Cfg::BKN_PITCH + col;
    }
    const int local = Cfg::GATED ? col % Cfg::BN_OUT : col;
    const std::int64_t wcol =
        Cfg::GATED ? w1_row(gate_up_order, n_out, n0 + local, col >= Cfg::BN_OUT) : n0 + local;
    b_valid[i] = n0 + local < n_out;
    b_k[i] = kk;
    b_src[i] = L == MoeWeightLayout::kNK ? w_expert + wcol * w_ld + kk : w_expert + static_cast<std::int64_t>(kk) * w_ld + wcol;
  }
  int a_smem[Cfg::A_CHUNKS];
  int a_k[Cfg::A_CHUNKS];
#pragma unroll
  for (int i = 0; i < Cfg::A_CHUNKS; ++i) {
    const int c = tid + i * Cfg::THREADS;
    a_k[i] = (c % (Cfg::BK / 8)) * 8;
    a_smem[i] = (c / (Cfg::BK / 8)) * Cfg::A_PITCH + a_k[i];
  }

  const std::int64_t k_tiles = (K + Cfg::BK - 1) / Cfg::BK;
  auto load_tile = [&](std::int64_t kt, int stage) {
    const std::int64_t k0 = kt * Cfg::BK;
    __nv_bfloat16* sa = smem_a + stage * Cfg::A_STAGE;
    __nv_bfloat16* sb = smem_b + stage * Cfg::B_STAGE;
#pragma unroll
    for (int i = 0; i < Cfg::A_CHUNKS; ++i) {
      const bool ok = row_src[i] != nullptr && k0 + a_k[i] < K;
      dev::cp_async_16(sa + a_smem[i], ok ? row_src[i] + k0 + a_k[i] : w_expert, ok);
    }
#pragma unroll
    for (int i = 0; i < Cfg::B_CHUNKS; ++i) {
      const bool ok = b_valid[i] && k0 + b_k[i] < K;
      const __nv_bfloat16* src = L == MoeWeightLayout::kNK ? b_src[i] + k0 : b_src[i] + k0 * w_ld;
      dev::cp_async_16(sb + b_smem[i], ok ? src : w_expert, ok);
    }
  };

#pragma unroll
  for (int s = 0; s < Cfg::STAGES - 1; ++s) {
    if (s < k_tiles) load_tile(s, s);
    dev::cp_async_commit();
  }
  for (std::int64_t kt = 0; kt < k_tiles; ++kt) {
    dev::cp_async_wait<Cfg::STAGES - 2>();
    __syncthreads();
    const std::int64_t next = kt + Cfg::STAGES - 1;
    if (next < k_tiles) load_tile(next, static_cast<int>(next % Cfg::STAGES));
    dev::cp_async_commit();

    const int stage = static_cast<int>(kt % Cfg::STAGES);
    const __nv_bfloat16* sa = smem_a + stage * Cfg::A_STAGE;
    const __nv_bfloat16* sb = smem_b + stage * Cfg::B_STAGE;
#pragma unroll
    for (int kk = 0; kk < Cfg::BK; kk += 16) {
      std::uint32_t a[Cfg::MI][4];
#pragma unroll
      for (int i = 0; i < Cfg::MI; ++i) {
        const int row = warp_m * Cfg::WM + i * 16 + (lane % 16);
        dev::ldmatrix_x4(a[i], sa + row * Cfg::A_PITCH + kk + (lane / 16) * 8);
      }
      std::uint32_t b[Cfg::NJ][2];
#pragma unroll
      for (int j = 0; j < Cfg::NJ; j += 2) {
        const int col = Cfg::frag_col(warp_n, j);
        std::uint32_t r[4];
        if (L == MoeWeightLayout::kNK) {
          dev::ldmatrix_x4(r, sb + (col + (lane / 16) * 8 + (lane % 8)) * Cfg::BNK_PITCH + kk + ((lane / 8) % 2) * 8);
        } else {
          dev::ldmatrix_x4_trans(r, sb + (kk + (lane % 8) + ((lane / 8) % 2) * 8) * Cfg::BKN_PITCH + col + (lane / 16) * 8);
        }
        b[j][0] = r[0];
        b[j][1] = r[1];
        b[j + 1][0] = r[2];
        b[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < Cfg::MI; ++i)
#pragma unroll
        for (int j = 0; j < Cfg::NJ; ++j) dev::mma_bf16_16816(acc[i][j], a[i], b[j]);
    }
  }
  dev::cp_async_wait<0>();
}

}  // namespace fusekit::cuda_moe::sm80
