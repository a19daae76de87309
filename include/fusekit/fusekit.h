// fusekit — fused kernels for LLM inference. One include for the whole public API.
#pragma once

#include "fusekit/status.h"
#include "fusekit/tensor.h"

namespace fusekit {
const char* version();
// True when this build has the CUDA backend and a CUDA device is visible.
bool cuda_available();
}  // namespace fusekit
