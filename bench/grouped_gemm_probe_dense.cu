// Diagnostic companion of grouped_gemm_probe.cu (`large` mode): one CUTLASS 3.x sm90 GEMM that is
// NOT ptr-array (one TMA descriptor per operand for the whole call, CUTLASS's persistent tile
// scheduler), on a dense D[M, N] = A[M, K] . B[N, K]^T, compiled once per -D set:
//   -DPROBE_FN=name -DPROBE_TILE_M=128 -DPROBE_TILE_N=256 -DPROBE_CLUSTER_M=2 -DPROBE_CLUSTER_N=1
//   -DPROBE_PINGPONG=0|1
// It asks whether the library's ptr-array kernels lose their distance to cuBLAS in the
// ptr-array machinery or in the CUTLASS kernel itself, at the same tile.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

namespace {
using Element = cutlass::bfloat16_t;
using TileShape = cute::Shape<cute::Int<PROBE_TILE_M>, cute::Int<PROBE_TILE_N>, cute::_64>;
using ClusterShape = cute::Shape<cute::Int<PROBE_CLUSTER_M>, cute::Int<PROBE_CLUSTER_N>, cute::_1>;
using KernelSchedule = std::conditional_t<PROBE_PINGPONG, cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                                          cutlass::gemm::KernelTmaWarpSpecializedCooperative>;
using EpilogueSchedule = std::conditional_t<PROBE_PINGPONG, cutlass::epilogue::TmaWarpSpecialized,
                                            cutlass::epilogue::TmaWarpSpecializedCooperative>;
using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::RowMajor, 8, Element,
    cutlass::layout::RowMajor, 8, EpilogueSchedule>::CollectiveOp;
using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, cutlass::layout::RowMajor, 8, Element,
    cutlass::layout::ColumnMajor, 8, float, TileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
    KernelSchedule>::CollectiveOp;
using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

// A packed row-major [rows, ld] operand: (ld, 1, rows * ld); K-major A and B, N-major D.
template <class Stride>
Stride packed(std::int64_t rows, std::int64_t ld) {
  Stride s{};
  cute::get<0>(s) = ld;
  cute::get<2>(s) = rows * ld;
  return s;
}
}  // namespace

// 0 on success; the workspace is what Gemm::get_workspace_size asks (the persistent scheduler's
// needs nothing for a plain data-parallel walk).
int PROBE_FN(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* d, int m, int n, int k, int sm_count,
             void* workspace, cudaStream_t stream) {
  static Gemm gemm;
  typename Gemm::Arguments args;
  args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
  args.problem_shape = {m, n, k, 1};
  args.mainloop.ptr_A = reinterpret_cast<const Element*>(a);
  args.mainloop.dA = packed<typename Kernel::StrideA>(m, k);
  args.mainloop.ptr_B = reinterpret_cast<const Element*>(b);
  args.mainloop.dB = packed<typename Kernel::StrideB>(n, k);
  args.epilogue.thread.alpha = 1.f;
  args.epilogue.thread.beta = 0.f;
  args.epilogue.ptr_C = nullptr;
  args.epilogue.ptr_D = reinterpret_cast<Element*>(d);
  args.epilogue.dD = packed<typename Kernel::StrideD>(m, n);
  cudaGetDevice(&args.hw_info.device_id);
  args.hw_info.sm_count = sm_count;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) return 1;
  if (Gemm::get_workspace_size(args) > (1u << 20)) return 2;
  if (gemm.initialize(args, workspace, stream) != cutlass::Status::kSuccess) return 3;
  return gemm.run(stream) == cutlass::Status::kSuccess ? 0 : 4;
}
