// SwiGLU as the epilogue of the Hopper grouped GEMM1 (our own collective, CUTLASS 4.2 parts):
//
//   act[r, 8q + c] = bf16( silu(bf16(h[r, 16q + c])) * bf16(h[r, 16q + 8 + c]) )    c in [0, 8)
//
// where h = A . B_g is the GEMM's fp32 accumulator tile and B_g's n = 2I rows are W1's gate and
// up rows interleaved in blocks of 8 (rows 16q..16q+7 = gate rows 8q..8q+7, rows 16q+8..16q+15
// = up rows 8q..8q+7). A wgmma accumulator thread holds columns 8j + 2t + {0, 1} of every
// 8-column group j, so gate group 2q and up group 2q + 1 are in the same thread and the fold
// needs no data exchange. D is act [rows, I] (half the GEMM's n), written straight from
// registers, two bf16 (4 bytes) per thread and column pair.
//
// Numerics: gate and up are rounded to bf16 before silu·mul, as the unfused path does (GEMM1
// stores h in bf16, swiglu_rows_bf16 reads it), so the two paths give the same bits.
//
// Plugged in as CUTLASS's own no-shared-memory array epilogue is: an operator-style collective
// with DefaultEpilogueArray's interface, wrapped in detail::Sm90TmaWarpSpecializedAdapter, which
// the ptr-array TMA warp-specialised kernels accept (epilogue schedule PtrArrayNoSmemWarpSpecialized).
// (Run on the H100: bit-equal to GEMM + swiglu_rows_bf16 on all four tiles, moe_sm90_grouped_gemm_test.)
#pragma once

#if FUSEKIT_WITH_CUTLASS

#include <cuda_bf16.h>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/detail.hpp"
#include "cutlass/epilogue/dispatch_policy.hpp"
#include "cuda/moe/device_utils.cuh"

namespace fusekit::cuda_moe::sm90::detail {

// StrideD: the CUTLASS stride type of D (act) per group, [M, N/2, L] with the row stride dynamic.
template <class StrideD_>
class SwigluEpilogueArray {
 public:
  using EpilogueSchedule = cutlass::epilogue::PtrArrayNoSmemWarpSpecialized;
  using DispatchPolicy = EpilogueSchedule;
  using ElementAccumulator = float;
  using ElementCompute = float;
  using ElementC = void;
  using ElementD = cutlass::bfloat16_t;
  using ElementOutput = ElementD;
  using StrideC = StrideD_;
  using StrideD = StrideD_;
  using InternalStrideC = cute::remove_pointer_t<StrideC>;
  using InternalStrideD = cute::remove_pointer_t<StrideD>;
  using GmemTiledCopyC = void;
  using GmemTiledCopyD = void;
  using ThreadEpilogueOp = void;  // GemmUniversalAdapter names it; nothing here is per-element linear
  static_assert(cute::rank(InternalStrideD{}) == 3, "StrideD must be rank 3: [M, N, L]");

  struct SharedStorage {};
  using TensorMapStorage = SharedStorage;

  struct Arguments {
    ElementD** ptr_D = nullptr;  // [groups] act rows of each group
    StrideD dD{};                // [groups] their strides (row stride = I)
  };
  using Params = Arguments;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& args, void*) {
    return args;
  }
  template <class ProblemShape>
  static size_t get_workspace_size(ProblemShape const&, Arguments const&, int) {
    return 0;
  }
  template <class ProblemShape>
  static cutlass::Status initialize_workspace(ProblemShape const&, Arguments const&, void*, cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }
  // N (the GEMM's, 2I) a multiple of 16 is checked by our dispatcher, which knows it.
  template <class ProblemShape>
  static bool can_implement(ProblemShape const&, Arguments const& args) {
    return args.ptr_D != nullptr;
  }

  CUTLASS_HOST_DEVICE explicit SwigluEpilogueArray(Params const& params) : params_(params) {}

  CUTLASS_DEVICE bool is_source_needed() { return false; }

  template <class ProblemShapeMNKL, class BlockShapeMNK, class BlockCoordMNKL, class FrgEngine, class FrgLayout,
            class TiledMma, class ResidueMNK>
  CUTLASS_DEVICE void operator()(ProblemShapeMNKL problem_shape_mnkl, BlockShapeMNK blk_shape_MNK,
                                 BlockCoordMNKL blk_coord_mnkl, cute::Tensor<FrgEngine, FrgLayout> const& accumulators,
                                 TiledMma tiled_mma, ResidueMNK, int thread_idx, char*) {
    using namespace cute;
    static_assert(is_static<BlockShapeMNK>::value, "the tile shape must be static");
    static_assert(is_static<FrgLayout>::value, "the accumulator layout must be static");
    // The wgmma accumulator fragment: ((2 columns, 2 row halves, V 8-column groups), MMA_M, MMA_N).
    static_assert(rank(FrgLayout{}) == 3 && rank<0>(FrgLayout{}) == 3, "expected a wgmma accumulator fragment");
    static_assert(size<0, 0>(FrgLayout{}) == 2 && size<0, 1>(FrgLayout{}) == 2, "expected a wgmma accumulator");
    constexpr int kGroups = decltype(size<0, 2>(FrgLayout{}))::value;
    static_assert(kGroups % 2 == 0, "each MMA atom's N must be a multiple of 16 (gate and up 8-column groups)");
    static_assert(size<1>(BlockShapeMNK{}) % 16 == 0, "the tile's N must be a multiple of 16");

    const int M = get<0>(problem_shape_mnkl);
    const int N = get<1>(problem_shape_mnkl);  // 2I
    auto [m_coord, n_coord, k_coord, l_coord] = blk_coord_mnkl;
    const InternalStrideD stride_d = params_.dD[l_coord];
    const std::int64_t ldd = get<0>(stride_d);  // row-major act: the row stride is the M mode's
    ElementD* out = params_.ptr_D[l_coord];

    // (m, n) of every accumulator element, within the group's [M, N] problem.
    Tensor id_mn = make_identity_tensor(make_shape(M, N));
    Tensor id_tile = local_tile(id_mn, take<0, 2>(blk_shape_MNK), make_coord(m_coord, n_coord));
    Tensor coord = tiled_mma.get_thread_slice(thread_idx).partition_C(id_tile);
    CUTE_STATIC_ASSERT_V(size(coord) == size(accumulators), "coordinates and accumulators must match");

    CUTLASS_PRAGMA_UNROLL
    for (int mi = 0; mi < size<1>(accumulators); ++mi) {
      CUTLASS_PRAGMA_UNROLL
      for (int ni = 0; ni < size<2>(accumulators); ++ni) {
        CUTLASS_PRAGMA_UNROLL
        for (int q = 0; q < kGroups / 2; ++q) {
          CUTLASS_PRAGMA_UNROLL
          for (int half = 0; half < 2; ++half) {
            const auto gate_at = make_coord(make_coord(0, half, 2 * q), mi, ni);
            const int m = get<0>(coord(gate_at));
            const int n = get<1>(coord(gate_at));  // even, in a gate group (n % 16 < 8)
            if (m >= M || n >= N) continue;
            float act[2];
            CUTLASS_PRAGMA_UNROLL
            for (int v = 0; v < 2; ++v) {
              act[v] = dev::swiglu_of_bf16_rounded(accumulators(make_coord(make_coord(v, half, 2 * q), mi, ni)),
                                                   accumulators(make_coord(make_coord(v, half, 2 * q + 1), mi, ni)));
            }
            const std::int64_t col = (n / 16) * 8 + n % 8;
            *reinterpret_cast<__nv_bfloat162*>(reinterpret_cast<__nv_bfloat16*>(out) + m * ldd + col) =
                __floats2bfloat162_rn(act[0], act[1]);
          }
        }
      }
    }
  }

 private:
  Params params_;
};

template <class StrideD>
using SwigluEpilogue = cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<SwigluEpilogueArray<StrideD>>;

}  // namespace fusekit::cuda_moe::sm90::detail

#endif  // FUSEKIT_WITH_CUTLASS
