// Dispatcher of the Hopper BF16 grouped GEMM: checks, carves the workspace, maps the run-time
// (tile, layout) onto the compiled instantiations (grouped_gemm_bf16_sm90_<tile>_<layout>.cu).
#include "cuda/moe/sm90/grouped_gemm_bf16_sm90.h"

#include <string>

#include "common/cuda_check.h"
#include "cuda/moe/sm_count.h"

namespace fusekit::cuda_moe::sm90 {
namespace {

std::size_t round256(std::size_t b) { return (b + 255) / 256 * 256; }
constexpr int kArrays = 7;  // problem shapes, ptr a/b/d, stride a/b/d

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

}  // namespace

bool sm90_grouped_gemm_available(int device) {
#if FUSEKIT_WITH_CUTLASS
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major == 9;
#else
  (void)device;
  return false;
#endif
}

std::size_t grouped_gemm_bf16_sm90_workspace_size(int groups) {
  return kArrays * round256(static_cast<std::size_t>(groups) * detail::kSlotBytes) +
         detail::kMaxCutlassWorkspaceBytes;
}

#if FUSEKIT_WITH_CUTLASS
namespace {

Status validate(const GroupedGemmArgs& args) {
  if (args.groups < 1 || args.groups > detail::kMaxGroups) {
    return invalid_argument("grouped_gemm_bf16_sm90: groups must be in [1, 1024], got " +
                            std::to_string(args.groups));
  }
  if (args.n < 8 || args.k < 8 || args.n % 8 != 0 || args.k % 8 != 0 || args.n >= (std::int64_t(1) << 31) ||
      args.k >= (std::int64_t(1) << 31)) {
    return invalid_argument("grouped_gemm_bf16_sm90: n and k must be positive multiples of 8 below 2^31, got n=" +
                            std::to_string(args.n) + " k=" + std::to_string(args.k));
  }
  if (!aligned16(args.a) || !aligned16(args.b) || !aligned16(args.d)) {
    return invalid_argument("grouped_gemm_bf16_sm90: a, b and d must be 16-byte aligned");
  }
  if (args.group_offsets == nullptr) {
    return invalid_argument("grouped_gemm_bf16_sm90: group_offsets must not be null");
  }
  if (args.k_splits < 1 || args.k_splits > kMaxKSplits || args.groups * args.k_splits > detail::kMaxGroups ||
      args.k % (8 * args.k_splits) != 0) {
    return invalid_argument("grouped_gemm_bf16_sm90: k_splits must be in [1, " + std::to_string(kMaxKSplits) +
                            "] with k a multiple of 8 * k_splits and groups * k_splits <= 1024, got k_splits=" +
                            std::to_string(args.k_splits) + " k=" + std::to_string(args.k) +
                            " groups=" + std::to_string(args.groups));
  }
  if (args.k_splits > 1 && (args.tile == GemmTile::kStreamSwapAb || args.epilogue != GemmEpilogue::kStore ||
                            args.a_rows != nullptr || args.d_split_stride < args.n || args.d_split_stride % 8 != 0)) {
    return invalid_argument(
        std::string("grouped_gemm_bf16_sm90: k_splits > 1 needs a CUTLASS tile, the plain store epilogue, packed A "
                    "and a d_split_stride that is a multiple of 8 and at least n, got tile ") +
        gemm_tile_name(args.tile) + (args.epilogue == GemmEpilogue::kStore ? "" : ", the SwiGLU epilogue") +
        (args.a_rows != nullptr ? ", gathered A" : "") + ", d_split_stride=" + std::to_string(args.d_split_stride));
  }
  const int entries = args.groups * args.k_splits;
  const std::size_t need = grouped_gemm_bf16_sm90_workspace_size(entries);
  if (args.workspace == nullptr || args.workspace_bytes < need ||
      (reinterpret_cast<std::uintptr_t>(args.workspace) & 255u) != 0) {
    return invalid_argument("grouped_gemm_bf16_sm90: workspace must be 256-byte aligned and hold " +
                            std::to_string(need) + " bytes, got " + std::to_string(args.workspace_bytes));
  }
  if (args.epilogue == GemmEpilogue::kSwiglu && (args.layout != MoeWeightLayout::kNK || args.n % 16 != 0)) {
    return invalid_argument("grouped_gemm_bf16_sm90: the SwiGLU epilogue needs NK weights and n % 16 == 0, got " +
                            std::string(args.layout == MoeWeightLayout::kNK ? "NK" : "KN") + " n=" + std::to_string(args.n));
  }
  if (!gemm_tile_supports(args.tile, args.layout)) {
    return invalid_argument(std::string("grouped_gemm_bf16_sm90: tile ") + gemm_tile_name(args.tile) +
                            " needs NK weights, got KN");
  }
  if (args.a_rows != nullptr &&
      (args.tile != GemmTile::kStreamSwapAb || args.a_row_stride < args.k || args.a_row_stride % 8 != 0)) {
    return invalid_argument(std::string("grouped_gemm_bf16_sm90: gathered A rows need the ") +
                            gemm_tile_name(GemmTile::kStreamSwapAb) + " tile and a row stride that is a multiple of 8 and at least k=" +
                            std::to_string(args.k) + ", got tile " + gemm_tile_name(args.tile) + " and stride " +
                            std::to_string(args.a_row_stride));
  }
  return Status::Ok();
}

// The per-group arrays, carved from the workspace (the same places for every writer).
detail::GroupedGemmDeviceArrays carve_arrays(const GroupedGemmArgs& args) {
  detail::GroupedGemmDeviceArrays arrays;
  char* ws = static_cast<char*>(args.workspace);
  const std::size_t slot = round256(static_cast<std::size_t>(args.groups * args.k_splits) * detail::kSlotBytes);
  void* regions[kArrays];
  for (int i = 0; i < kArrays; ++i) regions[i] = ws + i * slot;
  arrays.problem_shapes = regions[0];
  arrays.ptr_a = regions[1];
  arrays.ptr_b = regions[2];
  arrays.ptr_d = regions[3];
  arrays.stride_a = regions[4];
  arrays.stride_b = regions[5];
  arrays.stride_d = regions[6];
  arrays.cutlass_workspace = ws + kArrays * slot;
  arrays.cutlass_workspace_bytes = detail::kMaxCutlassWorkspaceBytes;
  return arrays;
}

}  // namespace
#endif

Status prepare_group_arrays(const GroupedGemmArgs& args, GroupArraysToWrite* to_write) {
#if !FUSEKIT_WITH_CUTLASS
  (void)args;
  (void)to_write;
  return unsupported("prepare_group_arrays: this build has no CUTLASS (install nvidia-cutlass and reconfigure)");
#else
  FUSEKIT_RETURN_IF_ERROR(validate(args));
  if (args.tile == GemmTile::kStreamSwapAb) return Status::Ok();
  if (to_write == nullptr || to_write->count < 0 || to_write->count >= kMaxPrewrittenGemms) {
    return invalid_argument("prepare_group_arrays: to_write must hold fewer than " +
                            std::to_string(kMaxPrewrittenGemms) + " calls");
  }
  detail::GroupedGemmLaunch& call = to_write->calls[to_write->count++];
  call.args = args;
  call.arrays = carve_arrays(args);
  return Status::Ok();
#endif
}

Status grouped_gemm_bf16_sm90(const GroupedGemmArgs& args, cudaStream_t stream) {
#if !FUSEKIT_WITH_CUTLASS
  (void)args;
  (void)stream;
  return unsupported("grouped_gemm_bf16_sm90: this build has no CUTLASS (install nvidia-cutlass and reconfigure)");
#else
  FUSEKIT_RETURN_IF_ERROR(validate(args));
  if (args.tile == GemmTile::kStreamSwapAb) return detail::gemm_swapab_nk(args, stream);
  const bool nk = args.layout == MoeWeightLayout::kNK;
  int device = 0;
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  detail::GroupedGemmLaunch launch;
  launch.args = args;
  FUSEKIT_RETURN_IF_ERROR(sm_count_of(device, &launch.sm_count));  // sizes the persistent grid
  launch.arrays = carve_arrays(args);

  if (args.epilogue == GemmEpilogue::kSwiglu) {
    switch (args.tile) {
      case GemmTile::kPingpong64x128: return detail::gemm_sm90_pingpong64x128_nk_swiglu(launch, stream);
      case GemmTile::kCooperative128x128: return detail::gemm_sm90_coop128x128_nk_swiglu(launch, stream);
      case GemmTile::kCooperative128x256: return detail::gemm_sm90_coop128x256_nk_swiglu(launch, stream);
      case GemmTile::kPingpong64x256: return detail::gemm_sm90_pingpong64x256_nk_swiglu(launch, stream);
      case GemmTile::kPingpong64x128k128: return detail::gemm_sm90_pingpong64x128k128_nk_swiglu(launch, stream);
      case GemmTile::kPingpong128x128: return detail::gemm_sm90_pingpong128x128_nk_swiglu(launch, stream);
      case GemmTile::kStreamSwapAb: break;  // dispatched above
    }
  }
  switch (args.tile) {
    case GemmTile::kPingpong64x128:
      return nk ? detail::gemm_sm90_pingpong64x128_nk(launch, stream) : detail::gemm_sm90_pingpong64x128_kn(launch, stream);
    case GemmTile::kCooperative128x128:
      return nk ? detail::gemm_sm90_coop128x128_nk(launch, stream) : detail::gemm_sm90_coop128x128_kn(launch, stream);
    case GemmTile::kCooperative128x256:
      return nk ? detail::gemm_sm90_coop128x256_nk(launch, stream) : detail::gemm_sm90_coop128x256_kn(launch, stream);
    case GemmTile::kPingpong64x256:
      return nk ? detail::gemm_sm90_pingpong64x256_nk(launch, stream) : detail::gemm_sm90_pingpong64x256_kn(launch, stream);
    case GemmTile::kPingpong64x128k128:
      return nk ? detail::gemm_sm90_pingpong64x128k128_nk(launch, stream)
                : detail::gemm_sm90_pingpong64x128k128_kn(launch, stream);
    case GemmTile::kPingpong128x128:
      return nk ? detail::gemm_sm90_pingpong128x128_nk(launch, stream) : detail::gemm_sm90_pingpong128x128_kn(launch, stream);
    case GemmTile::kStreamSwapAb: break;  // dispatched above
  }
  return invalid_argument(
      "grouped_gemm_bf16_sm90: tile must be one of pingpong_64x128x64_c1x1, cooperative_128x128x64_c1x1, "
      "cooperative_128x256x64_c2x1, pingpong_64x256x64_c1x1, pingpong_64x128x128_c1x1, pingpong_128x128x64_c1x1, "
      "stream_swapab_256x32");
#endif
}

}  // namespace fusekit::cuda_moe::sm90
