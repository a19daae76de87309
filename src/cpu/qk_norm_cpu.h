// The CPU backend of qk_rmsnorm: fp32 math like the CUDA kernel, one token at a time.
// Called by src/api/qk_norm.cpp after every argument has been validated.
#pragma once

#include "fusekit/qk_norm.h"

namespace fusekit::cpu {

Status qk_rmsnorm_cpu(const TensorView& qkv, const TensorView& q_weight, const TensorView& k_weight,
                      const TensorView& out, const QkNormParams& params);

}  // namespace fusekit::cpu
