// Grouped GEMM for few rows per group, NK weights, operands swapped: the weight rows are the
// M of mma.sync.m16n8k16 and the group's rows (tokens) its N. Same contract as the CUTLASS
// tiles (grouped_gemm_bf16_sm90.h): D[r0_g + i, :] = A[r0_g + i, :] . B_g^T, B_g [n, k].
//
// Why: with a few rows per expert (decode to mid T) a grouped GEMM only streams weights, and
// the wgmma/TMA tiles stream them 8-18% slower than a plain read of the same bytes
// (docs/PERF_NOTES.md, "MoE on Hopper v4"), while the decode kernels, which load weights into
// registers with many 16-byte loads in flight, reach the read rate. This kernel loads weights
// the decode kernels' way and multiplies them on tensor cores, so up to 32 tokens per pass cost
// no more than one.
//
// Fragments straight from global memory: the dot product over k does not care in which order
// k is visited, as long as A and B visit it alike. Lane (q = lane / 4, c = lane % 4) loads 16
// bytes (8 k values) of weight rows q and q + 8 and of token q; within each 32-wide k step,
// lane c's 8 values are mma k slots {2c, 2c+1, 2c+8, 2c+9} of two consecutive k16 mmas. So no
// shared memory, no barrier, and 4 lanes read 64 contiguous bytes of each row per load.
//
// CTA: 8 warps x 32 weight rows (two m16 tiles) of one group; grid (ceil(n / 256), groups).
// Each warp holds a ring of 4 k steps (16 loads of 16 bytes per lane, 8 KB): a step's slot is
// reloaded with the step 4 further on as soon as its mmas are issued, so 3 stay in flight
// while one is multiplied (H200, CLI layer: -3.0 / -3.3 / -1.5% at Qwen3-30B-A3B T = 16 / 32 /
// 64 and -3.0% at Qwen3-235B-A22B T = 16 against loading 4 steps, then multiplying 4). A group with more
// than 32 rows takes several passes, each reading the weights again, and every pass loads one
// 16-byte token chunk per 8 tokens per k step (L1/L2 traffic that grows with m): it serves a
// few rows per expert only (gemm_config_sm90.h). Weight rows past n are not loaded, tokens past
// the group are clamped for the loads; neither is stored. A's rows may be gathered (GroupedGemmArgs::a_rows):
// one index load per 8 tokens per pass, so the MoE path needs no permuted copy of x. Epilogue kSwiglu: 16-row tiles are W1's interleaved
// gate/up blocks (n % 16 == 0), so a lane holds gate and up of the same output and applies
// SwiGLU in registers, rounding as the CUTLASS epilogue does (dev::swiglu_of_bf16_rounded).
//
// Measured on H100 (`fusekit tune moe`, per GEMM, against the best CUTLASS tile): Qwen3-30B-A3B
// T = 16 / 64 gemm1 183 / 275 vs 195 / 287 us, gemm2 100 / 144 vs 107 / 155 us; Qwen3-235B-A22B
// even at T = 16, 3% slower on gemm1 at T = 64; slower everywhere from T = 256 (m ~ 16). Tried
// and dropped: no L2 prefetch hint (+10%), one m16 tile per warp with 4 or 8 steps in flight,
// and a per-warp cp.async shared-memory ring (4-6 stages, 64 or 32 rows per warp): all slower.
#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/sm90/grouped_gemm_bf16_sm90.h"

namespace fusekit::cuda_moe::sm90 {
namespace {

constexpr int kWarps = 8;
constexpr int kTilesM = 2;  // m16 tiles of weight rows per warp
constexpr int kRowsPerCta = kWarps * 16 * kTilesM;
constexpr int kTokensPerPass = 32;
constexpr int kTilesN = kTokensPerPass / 8;
constexpr int kStepsInFlight = 4;  // 32-wide k steps loaded before the first is used

__device__ __forceinline__ std::int64_t imin(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
// Weights are read once: evict-first (.cs). L2::256B asks L2 to fetch the 256-byte block
// around each miss, so DRAM serves each row in 256-byte pieces, not the 64 bytes one load of
// the warp asks per row: measured on H100 (Qwen3-30B-A3B, T = 16), gemm1 201 -> 183 us.
__device__ __forceinline__ uint4 load_weights(const uint4* p, bool ok) {
  if (!ok) return make_uint4(0, 0, 0, 0);
  uint4 v;
  asm volatile("ld.global.cs.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// kGathered: A's rows by index (GroupedGemmArgs::a_rows), a_row_stride apart; else packed.
template <GemmEpilogue kEpilogue, bool kGathered>
__global__ void __launch_bounds__(kWarps * 32, 2) grouped_gemm_bf16_swapab_nk_kernel(GroupedGemmArgs p) {
  dev::wait_for_prior_grid();  // programmatic dependent launch: see dependent_launch.cuh
  const int g = blockIdx.y;
  const std::int64_t r0 = p.group_offsets[g];
  const std::int64_t rows = p.group_rows != nullptr ? p.group_rows[g] : p.group_offsets[g + 1] - r0;
  if (rows <= 0) return;
  const int lane = threadIdx.x % 32;
  const int q = lane / 4;
  const int c = lane % 4;
  const std::int64_t n = p.n;
  const std::int64_t n0 = (std::int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * 16 * kTilesM;
  if (n0 >= n) return;
  const std::int64_t chunks = p.k / 8;  // 16-byte chunks per row

  // One 64-bit base per lane (weight row n0 + q) and 32-bit offsets to its other three rows
  // (8, 16 and 24 rows on; rows8 16-byte chunks per 8 rows): 64-bit pointers per row would
  // spill at 128 registers. Rows past n are not loaded (zeros, never stored).
  const uint4* wbase = reinterpret_cast<const uint4*>(p.b + (std::int64_t(g) * n + n0 + q) * p.k);
  const int rows8 = static_cast<int>(8 * chunks);
  const int rows_left = static_cast<int>(imin(n - n0 - q, 16 * kTilesM));  // >= 1: n % 8 == 0, n0 < n, q < 8
  auto wptr = [&](int t, int h, std::int64_t kc) { return wbase + (2 * t + h) * rows8 + kc; };
  auto wok = [&](int t, int h, std::int64_t kc) { return kc < chunks && 8 * (2 * t + h) < rows_left; };

  // A ring of kStepsInFlight k steps: slot s holds step kc0 / 4 + s and is refilled with the
  // step kStepsInFlight further on as soon as its mmas are issued, so kStepsInFlight - 1 steps
  // stay in flight while one is multiplied (loading all of them, then multiplying all of them,
  // left the warp with nothing in flight for a whole round of x loads and mmas).
  for (std::int64_t t0 = 0; t0 < rows; t0 += kTokensPerPass) {
    const int active = static_cast<int>(imin(kTilesN, (rows - t0 + 7) / 8));  // warp-uniform
    int xrow[kTilesN];
#pragma unroll
    for (int j = 0; j < kTilesN; ++j) {
      const int r = static_cast<int>(r0 + imin(t0 + 8 * j + q, rows - 1));
      xrow[j] = kGathered ? p.a_rows[r] : r;
    }
    float acc[kTilesM][kTilesN][4];
#pragma unroll
    for (int t = 0; t < kTilesM; ++t)
#pragma unroll
      for (int j = 0; j < kTilesN; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[t][j][e] = 0.f;

    uint4 w[kStepsInFlight][kTilesM][2];
#pragma unroll
    for (int s = 0; s < kStepsInFlight; ++s) {
      const std::int64_t kc = 4 * s + c;
#pragma unroll
      for (int t = 0; t < kTilesM; ++t)
#pragma unroll
        for (int h = 0; h < 2; ++h) w[s][t][h] = load_weights(wptr(t, h, kc), wok(t, h, kc));
    }
    for (std::int64_t kc0 = 0; kc0 < chunks; kc0 += 4 * kStepsInFlight) {
#pragma unroll
      for (int s = 0; s < kStepsInFlight; ++s) {
        const std::int64_t kc = kc0 + 4 * s + c;
#pragma unroll
        for (int j = 0; j < kTilesN; ++j) {
          if (j >= active) break;
          const uint4 x =
              kc < chunks ? __ldg(reinterpret_cast<const uint4*>(p.a + std::int64_t(xrow[j]) * (kGathered ? p.a_row_stride : p.k)) + kc) : make_uint4(0, 0, 0, 0);
          const std::uint32_t b_lo[2] = {x.x, x.y};
          const std::uint32_t b_hi[2] = {x.z, x.w};
#pragma unroll
          for (int t = 0; t < kTilesM; ++t) {
            const std::uint32_t a_lo[4] = {w[s][t][0].x, w[s][t][1].x, w[s][t][0].y, w[s][t][1].y};
            const std::uint32_t a_hi[4] = {w[s][t][0].z, w[s][t][1].z, w[s][t][0].w, w[s][t][1].w};
            dev::mma_bf16_16816(acc[t][j], a_lo, b_lo);
            dev::mma_bf16_16816(acc[t][j], a_hi, b_hi);
          }
        }
        const std::int64_t next = kc + 4 * kStepsInFlight;
#pragma unroll
        for (int t = 0; t < kTilesM; ++t)
#pragma unroll
          for (int h = 0; h < 2; ++h) w[s][t][h] = load_weights(wptr(t, h, next), wok(t, h, next));
      }
    }

    // acc[t][j]: {0, 1} = weight row n0 + 16t + q, tokens t0 + 8j + 2c + {0, 1}; {2, 3} = row + 8.
#pragma unroll
    for (int t = 0; t < kTilesM; ++t) {
      const std::int64_t row = n0 + 16 * t + q;
      if (row >= n) continue;
#pragma unroll
      for (int j = 0; j < kTilesN; ++j) {
        if (j >= active) break;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const std::int64_t tok = t0 + 8 * j + 2 * c + e;
          if (tok >= rows) continue;
          if constexpr (kEpilogue == GemmEpilogue::kSwiglu) {
            p.d[(r0 + tok) * (n / 2) + (n0 + 16 * t) / 2 + q] =
                __float2bfloat16_rn(dev::swiglu_of_bf16_rounded(acc[t][j][e], acc[t][j][2 + e]));
          } else {
            __nv_bfloat16* out = p.d + (r0 + tok) * n + row;
            out[0] = __float2bfloat16_rn(acc[t][j][e]);
            if (row + 8 < n) out[8] = __float2bfloat16_rn(acc[t][j][2 + e]);
          }
        }
      }
    }
  }
}

}  // namespace

namespace detail {

Status gemm_swapab_nk(const GroupedGemmArgs& args, cudaStream_t stream) {
  const std::int64_t blocks = (args.n + kRowsPerCta - 1) / kRowsPerCta;
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(args.groups));
  // Gathering is its own instantiation: read per load, the stride choice cost the packed kernel
  // registers (it sits at 128 with 16 weight loads in flight) and spills.
  using Kernel = void (*)(GroupedGemmArgs);
  const bool swiglu = args.epilogue == GemmEpilogue::kSwiglu;
  const Kernel kernel =
      args.a_rows != nullptr
          ? (swiglu ? grouped_gemm_bf16_swapab_nk_kernel<GemmEpilogue::kSwiglu, true>
                    : grouped_gemm_bf16_swapab_nk_kernel<GemmEpilogue::kStore, true>)
          : (swiglu ? grouped_gemm_bf16_swapab_nk_kernel<GemmEpilogue::kSwiglu, false>
                    : grouped_gemm_bf16_swapab_nk_kernel<GemmEpilogue::kStore, false>);
  FUSEKIT_CUDA_RETURN_IF_ERROR(launch_dependent(kernel, grid, dim3(kWarps * 32), 0, stream, args));
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("grouped_gemm_bf16_swapab_nk_kernel");
  return Status::Ok();
}

}  // namespace detail
}  // namespace fusekit::cuda_moe::sm90
