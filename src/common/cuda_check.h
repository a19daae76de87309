// CUDA error handling that returns a Status instead of exiting: library code never aborts.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "fusekit/status.h"

namespace fusekit {

inline Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  return Status(StatusCode::kCudaError, std::string(what) + ": " + cudaGetErrorString(err));
}

}  // namespace fusekit

// Evaluates a cudaError_t expression and returns a kCudaError Status if it failed.
#define FUSEKIT_CUDA_RETURN_IF_ERROR(expr) \
  FUSEKIT_RETURN_IF_ERROR(::fusekit::cuda_status((expr), #expr))

// After a kernel launch: report launch-configuration errors without synchronising.
#define FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED(kernel_name) \
  FUSEKIT_RETURN_IF_ERROR(::fusekit::cuda_status(cudaGetLastError(), "launch " kernel_name))
