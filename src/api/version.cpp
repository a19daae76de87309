#include "fusekit/fusekit.h"

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace fusekit {

const char* version() { return "0.1.0"; }

bool cuda_available() {
#if FUSEKIT_WITH_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
#else
  return false;
#endif
}

}  // namespace fusekit
