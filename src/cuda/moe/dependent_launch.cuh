// Programmatic dependent launch (Hopper): the decode chain route -> gemm1 -> gemm2 launches each
// kernel while the one before it is still running, so its CTAs are resident and waiting when
// the data lands instead of paying a launch gap per stage (a few µs out of a ~30 µs decode).
//
// The contract, for every kernel launched with launch_dependent():
//   - it calls wait_for_prior_grid() before it reads or writes anything an earlier kernel of
//     the stream touches (griddepcontrol.wait returns once the prior grid has completed and
//     its memory is visible). One exception, taken on purpose: data written by kernels that
//     the prior grid itself waited for, in every CTA, before it allowed this launch (decode
//     gemm2 reads the route's ids and weights while gemm1 runs; decode gemm1 at one token reads
//     the logits and x, complete before the route's own wait, while the route runs);
//   - it may call allow_dependent_grid() once its own remaining work no longer needs the SMs to
//     itself; a kernel that never calls it releases its dependent when it exits.
// Below sm_90 both device calls compile to nothing and launch_dependent() launches normally,
// so the chain is ordinary stream order there (and in builds that embed pre-sm_90 PTX, below).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

namespace fusekit::cuda_moe::dev {

__device__ __forceinline__ void wait_for_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependent_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

}  // namespace fusekit::cuda_moe::dev

namespace fusekit::cuda_moe {

// FUSEKIT_DEPENDENT_LAUNCH (src/CMakeLists.txt) is 0 when the build embeds PTX for a virtual
// architecture below compute_90: a Hopper-or-later GPU would JIT that PTX into kernels whose
// wait compiled to nothing, and a programmatic launch would let them read their inputs early.
// Otherwise every kernel image such a GPU can run is sm_90+ code with the real wait.
#ifndef FUSEKIT_DEPENDENT_LAUNCH
#define FUSEKIT_DEPENDENT_LAUNCH 1
#endif

// Launches kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent of the
// previous work on the stream when the build and the device (compute capability >= 9.0)
// support it; otherwise as a normal launch.
template <typename... KernelArgs, typename... Args>
cudaError_t launch_dependent(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, std::size_t smem,
                             cudaStream_t stream, Args&&... args) {
  int device = 0, major = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err != cudaSuccess) return err;
  const bool programmatic = FUSEKIT_DEPENDENT_LAUNCH && major >= 9;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = programmatic ? &attr : nullptr;
  config.numAttrs = programmatic ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace fusekit::cuda_moe
