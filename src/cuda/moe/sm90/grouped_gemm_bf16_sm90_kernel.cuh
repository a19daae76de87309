// The Hopper BF16 grouped GEMM, assembled from named CUTLASS 3.x parts (see CUTLASS example 57):
//
//   mainloop   CollectiveBuilder<Sm90, TensorOp, bf16 A row-major, bf16 B (K- or N-major), fp32 acc,
//              TileShape, ClusterShape, stages = as many as fit beside the epilogue, KernelSchedule>
//              -> TMA loads of A and B into 128B-swizzled shared memory, wgmma (SS) on it; the
//              TMA descriptors are rewritten per group on the device (ptr-array).
//   epilogue   GemmEpilogue::kStore: CollectiveBuilder<..., C = none, D bf16 row-major,
//              LinearCombination (alpha 1)> -> fp32 accumulators rounded to bf16 and stored by
//              TMA, clipped at each group's rows. GemmEpilogue::kSwiglu: our SwigluEpilogueArray
//              (swiglu_epilogue_sm90.cuh) -> act = silu(gate) * up of 8-row-interleaved W1, half
//              as wide, stored from registers.
//   kernel     GemmUniversal<GroupProblemShape<(M, N, K)>, ...>: one persistent CTA (cluster) per SM,
//              a producer warp(group) issuing TMA and consumer warpgroups issuing wgmma; the group
//              tile scheduler walks (group, m-tile, n-tile) reading the per-group sizes from device
//              memory, so no size ever comes back to the host.
//
// One instantiation per (tile, layout) lives in its own .cu file (compile time on CI). The
// template is compiled for every -gencode; its kernel body only exists in the sm_90a image
// (CUTLASS guards it with __CUDA_ARCH_FEAT_SM90_ALL), so the sm_80 pass emits an empty stub.
#pragma once

#if FUSEKIT_WITH_CUTLASS

#include <cuda_runtime.h>

#include <atomic>
#include <string>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "common/cuda_check.h"
#include "cuda/moe/sm90/grouped_gemm_bf16_sm90.h"
#include "cuda/moe/sm90/grouped_gemm_bf16_sm90_setup.cuh"
#include "cuda/moe/sm90/swiglu_epilogue_sm90.cuh"

namespace fusekit::cuda_moe::sm90::detail {

constexpr int kMaxDevicesSeen = 64;

// The compile-time description of one tile configuration.
template <class TileShape_, class ClusterShape_, class KernelSchedule_, class EpilogueSchedule_>
struct TileConfig {
  using TileShape = TileShape_;
  using ClusterShape = ClusterShape_;
  using KernelSchedule = KernelSchedule_;
  using EpilogueSchedule = EpilogueSchedule_;
};
// Pingpong: two consumer warpgroups on alternate M x N x K tiles, cluster 1x1.
template <int M, int N, int K>
using PingpongTile = TileConfig<cute::Shape<cute::Int<M>, cute::Int<N>, cute::Int<K>>,
                                cute::Shape<cute::_1, cute::_1, cute::_1>,
                                cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpong,
                                cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong>;
// Cooperative: two consumer warpgroups split each tile's M; a ClusterM x 1 cluster multicasts B.
template <int M, int N, int K, int ClusterM>
using CooperativeTile = TileConfig<cute::Shape<cute::Int<M>, cute::Int<N>, cute::Int<K>>,
                                   cute::Shape<cute::Int<ClusterM>, cute::_1, cute::_1>,
                                   cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative,
                                   cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative>;

using Pingpong64x128 = PingpongTile<64, 128, 64>;
using Pingpong64x256 = PingpongTile<64, 256, 64>;
// K = 128 per load step: each weight row is read 256 contiguous bytes at a time (two 128B-swizzled
// TMA boxes back to back) instead of 128, which DRAM serves measurably faster when the GEMM is
// weight-bound (bench/grouped_gemm_probe.cu: ~7% on a plain read with the tile's walk).
using Pingpong64x128K128 = PingpongTile<64, 128, 128>;
using Pingpong128x128 = PingpongTile<128, 128, 64>;
using Cooperative128x128 = CooperativeTile<128, 128, 64, 1>;
using Cooperative128x256 = CooperativeTile<128, 256, 64, 2>;

template <class Config, MoeWeightLayout kLayout, GemmEpilogue kEpilogue = GemmEpilogue::kStore>
struct Bf16GroupedGemm {
  using ProblemShape = cutlass::gemm::GroupProblemShape<cute::Shape<int, int, int>>;
  using Element = cutlass::bfloat16_t;
  using LayoutA = cutlass::layout::RowMajor;
  using LayoutB = LayoutBFor<kLayout>;
  using LayoutD = cutlass::layout::RowMajor;
  static constexpr int kAlignment = 8;  // 16 bytes of bf16: TMA's minimum

  using StoreEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, typename Config::TileShape, typename Config::ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,  //
      void, LayoutD*, kAlignment,                                     // no C operand
      Element, LayoutD*, kAlignment,                                  // D
      typename Config::EpilogueSchedule,
      cutlass::epilogue::fusion::LinearCombination<Element, float, void, float>>::CollectiveOp;
  using CollectiveEpilogue =
      std::conditional_t<kEpilogue == GemmEpilogue::kStore, StoreEpilogue,
                         SwigluEpilogue<cutlass::detail::TagToStrideC_t<LayoutD*>>>;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,  //
      Element, LayoutA*, kAlignment,                        //
      Element, LayoutB*, kAlignment,                        //
      float, typename Config::TileShape, typename Config::ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      typename Config::KernelSchedule>::CollectiveOp;

  using GemmKernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;

  using ProblemShapeMNK = typename ProblemShape::UnderlyingProblemShape;
  using StrideA = typename GemmKernel::InternalStrideA;
  using StrideB = typename GemmKernel::InternalStrideB;
  using StrideC = typename GemmKernel::InternalStrideC;
  using StrideD = typename GemmKernel::InternalStrideD;
  static_assert(sizeof(ProblemShapeMNK) <= kSlotBytes && sizeof(StrideA) <= kSlotBytes &&
                    sizeof(StrideB) <= kSlotBytes && sizeof(StrideD) <= kSlotBytes,
                "per-group array slots too small");
  // The arrays are written by layout, not by tile (grouped_gemm_bf16_sm90_setup.cuh).
  using Written = GroupArrayTypes<kLayout>;
  static_assert(std::is_same_v<ProblemShapeMNK, typename Written::ProblemShapeMNK> &&
                    std::is_same_v<StrideA, typename Written::StrideA> &&
                    std::is_same_v<StrideB, typename Written::StrideB> &&
                    std::is_same_v<StrideD, typename Written::StrideD> && std::is_same_v<Element, cutlass::bfloat16_t> &&
                    sizeof(Element) == sizeof(__nv_bfloat16),
                "the per-group arrays' types differ from the ones their writers use");
};

template <class Config, MoeWeightLayout kLayout, GemmEpilogue kEpilogue = GemmEpilogue::kStore>
Status run_grouped_gemm(const GroupedGemmLaunch& launch, cudaStream_t stream, const char* name) {
  using G = Bf16GroupedGemm<Config, kLayout, kEpilogue>;
  using Gemm = typename G::Gemm;
  const GroupedGemmArgs& a = launch.args;
  const GroupedGemmDeviceArrays& arr = launch.arrays;

  if (a.group_arrays == GroupArrays::kSetupKernel) FUSEKIT_RETURN_IF_ERROR(launch_grouped_gemm_setup(launch, stream));

  cutlass::KernelHardwareInfo hw;
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaGetDevice(&hw.device_id));
  hw.sm_count = launch.sm_count;

  typename Gemm::Arguments args;
  args.mode = cutlass::gemm::GemmUniversalMode::kGrouped;
  args.problem_shape = {a.groups * a.k_splits, static_cast<typename G::ProblemShapeMNK*>(arr.problem_shapes), nullptr};
  args.mainloop.ptr_A = static_cast<const typename G::Element**>(arr.ptr_a);
  args.mainloop.dA = static_cast<typename G::StrideA*>(arr.stride_a);
  args.mainloop.ptr_B = static_cast<const typename G::Element**>(arr.ptr_b);
  args.mainloop.dB = static_cast<typename G::StrideB*>(arr.stride_b);
  if constexpr (kEpilogue == GemmEpilogue::kStore) {
    args.epilogue.thread.alpha = 1.0f;
    args.epilogue.thread.beta = 0.0f;
    args.epilogue.ptr_C = nullptr;
    args.epilogue.dC = nullptr;
  }
  args.epilogue.ptr_D = static_cast<typename G::Element**>(arr.ptr_d);
  args.epilogue.dD = static_cast<typename G::StrideD*>(arr.stride_d);
  args.hw_info = hw;

  if (Gemm::get_workspace_size(args) > arr.cutlass_workspace_bytes) {
    return Status(StatusCode::kInternal, std::string(name) + ": CUTLASS workspace larger than reserved (" +
                                             std::to_string(Gemm::get_workspace_size(args)) + " bytes)");
  }
  // The shared-memory opt-in is a per-device function attribute: set it once per device, outside
  // any capture (the adapter's initialize() would call it on every launch).
  using GemmKernel = typename G::GemmKernel;
  static std::atomic<bool> smem_attribute_set[kMaxDevicesSeen];
  if (hw.device_id < 0 || hw.device_id >= kMaxDevicesSeen) {
    return invalid_argument(std::string(name) + ": device ordinal out of range");
  }
  if (!smem_attribute_set[hw.device_id].load(std::memory_order_acquire)) {
    FUSEKIT_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(cutlass::device_kernel<GemmKernel>,
                                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                      int(GemmKernel::SharedStorageSize)));
    smem_attribute_set[hw.device_id].store(true, std::memory_order_release);
  }
  cutlass::Status st = Gemm::can_implement(args);
  if (st == cutlass::Status::kSuccess) st = GemmKernel::initialize_workspace(args, arr.cutlass_workspace, stream);
  typename GemmKernel::Params params;
  if (st == cutlass::Status::kSuccess) {
    params = GemmKernel::to_underlying_arguments(args, arr.cutlass_workspace);
    st = Gemm::run(params, stream);
  }
  if (st != cutlass::Status::kSuccess) {
    return Status(StatusCode::kCudaError,
                  std::string(name) + ": CUTLASS grouped GEMM failed: " + cutlassGetStatusString(st));
  }
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("grouped GEMM (CUTLASS sm90)");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe::sm90::detail

// One instantiation per file: FUSEKIT_SM90_GEMM_INSTANCE(gemm_sm90_pingpong64x128_nk, Pingpong64x128, kNK)
#define FUSEKIT_SM90_GEMM_INSTANCE(name, config, layout)                                              \
  namespace fusekit::cuda_moe::sm90::detail {                                                         \
  Status name(const GroupedGemmLaunch& launch, cudaStream_t stream) {                                 \
    return run_grouped_gemm<config, MoeWeightLayout::layout>(launch, stream, #name);                  \
  }                                                                                                   \
  }
// The same with SwiGLU in the epilogue (D = act, half as wide; W1 interleaved in 8-row blocks).
#define FUSEKIT_SM90_GEMM_SWIGLU_INSTANCE(name, config, layout)                                         \
  namespace fusekit::cuda_moe::sm90::detail {                                                         \
  Status name(const GroupedGemmLaunch& launch, cudaStream_t stream) {                                 \
    return run_grouped_gemm<config, MoeWeightLayout::layout, GemmEpilogue::kSwiglu>(launch, stream, #name); \
  }                                                                                                   \
  }

#endif  // FUSEKIT_WITH_CUTLASS
