// The setup kernel of the Hopper grouped GEMM (GroupArrays::kSetupKernel): one thread per (K slice,
// group) entry writes that entry's per-group arrays (grouped_gemm_bf16_sm90_setup.cuh) from
// group_offsets and group_rows, as a programmatic dependent of the kernel that wrote them.
#include "cuda/moe/sm90/grouped_gemm_bf16_sm90_setup.cuh"

#if FUSEKIT_WITH_CUTLASS

#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"

namespace fusekit::cuda_moe::sm90::detail {
namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads) grouped_gemm_setup_kernel(const __grid_constant__ GroupedGemmLaunch call) {
  dev::wait_for_prior_grid();  // a programmatic dependent of the kernel that wrote the offsets
  dev::allow_dependent_grid();
  const GroupedGemmArgs& a = call.args;
  const int entry = blockIdx.x * blockDim.x + threadIdx.x;
  if (entry >= a.groups * a.k_splits) return;
  write_group_entry_from(call, entry, a.group_offsets, a.group_rows);
}

}  // namespace

Status launch_grouped_gemm_setup(const GroupedGemmLaunch& call, cudaStream_t stream) {
  const int entries = call.args.groups * call.args.k_splits;
  FUSEKIT_CUDA_RETURN_IF_ERROR(launch_dependent(grouped_gemm_setup_kernel, dim3((entries + kThreads - 1) / kThreads),
                                                dim3(kThreads), 0, stream, call));
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("grouped_gemm_setup_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe::sm90::detail

#endif  // FUSEKIT_WITH_CUTLASS
