// scan (Hopper MoE path, align step 2): offsets[e] = sum_{e' < e} counts[e'], offsets[E] = the
// total, i.e. packed (unpadded) expert runs; then the per-group arrays of the GEMMs that run on
// these offsets, when asked (CountPairsParams::gemm_arrays).
// Shapes: counts [E] int32, offsets [E + 1] int32, E <= 512.
// Threads: one CTA of 512, one expert per thread, cub::BlockScan.
#include <cub/block/block_scan.cuh>

#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/sm90/moe_sm90.h"
#if FUSEKIT_WITH_CUTLASS
#include "cuda/moe/sm90/grouped_gemm_bf16_sm90_setup.cuh"
#endif

namespace fusekit::cuda_moe::sm90 {
namespace {

constexpr int kThreads = 512;

__global__ void __launch_bounds__(kThreads)
    align_scan_offsets_kernel(const std::int32_t* counts, int E, std::int32_t* offsets,
                              const __grid_constant__ GroupArraysToWrite gemm_arrays) {
  dev::wait_for_prior_grid();  // programmatic dependent launch: see dependent_launch.cuh
  dev::allow_dependent_grid();
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int e = threadIdx.x;
  const int c = e < E ? counts[e] : 0;
  int excl = 0, total = 0;
  Scan(tmp).ExclusiveSum(c, excl, total);
  if (e < E) offsets[e] = excl;
  if (e == 0) offsets[E] = total;
  if (gemm_arrays.count == 0) return;
#if FUSEKIT_WITH_CUTLASS
  __shared__ std::int32_t offs[kThreads + 1];
  __shared__ std::int32_t rows[kThreads];
  if (e < E) {
    offs[e] = excl;
    rows[e] = c;
  }
  if (e == 0) offs[E] = total;
  __syncthreads();
  write_group_arrays(gemm_arrays, offs, rows, e, kThreads);
#endif
}

}  // namespace

Status launch_align_scan_offsets(const std::int32_t* counts, int num_experts, std::int32_t* offsets,
                                 const GroupArraysToWrite& gemm_arrays, cudaStream_t stream) {
  if (num_experts < 1 || num_experts > kThreads) {
    return invalid_argument("align scan: num_experts must be in [1, 512], got " + std::to_string(num_experts));
  }
  FUSEKIT_CUDA_RETURN_IF_ERROR(
      launch_dependent(align_scan_offsets_kernel, dim3(1), dim3(kThreads), 0, stream, counts, num_experts, offsets,
                                                gemm_arrays));
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("align_scan_offsets_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe::sm90
