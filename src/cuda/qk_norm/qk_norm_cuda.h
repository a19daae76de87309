// The CUDA backend of qk_rmsnorm, as seen from src/api (no CUDA headers here). The API has
// validated everything; this layer only maps sizes to a kernel and launches it.
#pragma once

#include <cstdint>

#include "fusekit/qk_norm.h"

namespace fusekit::cuda {

struct QkNormProblem {
  const void* qkv = nullptr;
  void* out = nullptr;             // == qkv for in place
  std::int64_t qkv_row_stride = 0;  // elements
  std::int64_t out_row_stride = 0;  // elements
  std::int64_t tokens = 0;
  int num_q_heads = 0, num_kv_heads = 0, head_dim = 0, v_head_dim = 0;
  DType dtype = DType::kBF16;
  const void* q_weight = nullptr;
  const void* k_weight = nullptr;
  DType weight_dtype = DType::kBF16;  // == dtype or fp32
  float eps = 1e-6f;
  RotaryStyle rotary_style = RotaryStyle::kNone;
  int rotary_dim = 0;
  const void* positions = nullptr;
  DType position_dtype = DType::kI64;
  const float* cos_sin = nullptr;
  std::int64_t max_position = 0;
};

// Enqueues the kernel (and, out of place, a 2D device copy of V) on `stream`. No host
// synchronisation, no allocation: safe inside CUDA-graph capture.
Status qk_rmsnorm_cuda(const QkNormProblem& problem, void* stream);

}  // namespace fusekit::cuda
