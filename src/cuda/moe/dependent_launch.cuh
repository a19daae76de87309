// Programmatic dependent launch (Hopper): the decode chain route -> gemm1 -> gemm2 launches each
// kernel while the one before it is still running, so its CTAs are resident and waiting when
// the data lands instead of paying a launch gap per stage (a few µs out of a ~30 µs decode).
//
// The contract, for every kernel launched with launch_dependent():
//   - it calls wait_for_prior_grid() before it reads or writes anything an earlier kernel of
//     the stream touches (griddepcontrol.wait returns once the prior grid has completed and
//     its memory is visible);
//   - it may call allow_dependent_grid() once its own remaining work no longer needs the SMs to
//     itself; a kernel that never calls it releases its dependent when it exits.
// Below sm_90 both device calls compile to nothing and launch_dependent() launches normally,
// so the chain is ordinary stream order there (it checks the kernel's compiled architecture,
// not just the device's).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>
#include <utility>
#include <vector>

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

// Whether `kernel`, as it will run on the current device, was compiled for sm_90 or later, i.e.
// whether its wait_for_prior_grid() is a real griddepcontrol.wait. A programmatic launch of a
// kernel whose wait compiled to nothing (say, JIT from compute_80 PTX on a Hopper GPU) would
// let it read its inputs before they are written, so such kernels launch normally. Cached per
// (kernel, device): one driver query per kernel and device.
inline bool kernel_honours_dependent_launch(const void* kernel, int device) {
  struct Entry {
    const void* kernel;
    int device;
    bool honours;
  };
  static std::mutex mutex;
  static std::vector<Entry> cache;
  std::lock_guard<std::mutex> lock(mutex);
  for (const Entry& e : cache) {
    if (e.kernel == kernel && e.device == device) return e.honours;
  }
  cudaFuncAttributes attributes{};
  bool honours = false;
  if (cudaFuncGetAttributes(&attributes, kernel) == cudaSuccess) {
    honours = attributes.ptxVersion >= 90 && attributes.binaryVersion >= 90;
  } else {
    (void)cudaGetLastError();  // the launch itself will report a bad kernel
  }
  cache.push_back({kernel, device, honours});
  return honours;
}

// Launches kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent of the
// previous work on the stream when the kernel's code for this device honours it (above);
// otherwise as a normal launch.
template <typename... KernelArgs, typename... Args>
cudaError_t launch_dependent(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, std::size_t smem,
                             cudaStream_t stream, Args&&... args) {
  int device = 0;
  const cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const bool programmatic = kernel_honours_dependent_launch(reinterpret_cast<const void*>(kernel), device);
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
