// fusekit/qk_norm.h — fused per-head RMSNorm of the Q and K heads of a packed QKV
// activation, with optional fused rotary embedding. One entry point for every token count
// (decode and prefill); no allocation, no host synchronisation (CUDA-graph safe).
//
//   qkv  [T, Hq*D + Hkv*D + Hkv*Dv]  row stride >= packed width, rows contiguous
//   out  same shape as qkv; may be qkv itself (in place) or a disjoint tensor (V copied)
//   q_weight, k_weight  [D], dtype of qkv or fp32
//   each Q/K head h of token t:  y = x * rsqrt(mean(x^2) + eps) * w   (fp32 math)
//   then, with rotary: neox (rotate halves) or gptj (rotate pairs) on the first
//   rotary_dim lanes, cos/sin from cos_sin_cache[position[t]] = [cos(rd/2) | sin(rd/2)].
#pragma once

#include <cstdint>

#include "fusekit/status.h"
#include "fusekit/tensor.h"

namespace fusekit {

enum class RotaryStyle { kNone, kNeox, kGptj };

struct QkNormParams {
  std::int64_t num_q_heads = 0;   // Hq >= 1
  std::int64_t num_kv_heads = 0;  // Hkv >= 1
  std::int64_t head_dim = 0;      // D: multiple of 8 in [8, 512]
  std::int64_t v_head_dim = 0;    // Dv; 0 means D
  float eps = 1e-6f;              // > 0
};

// Optional rotary embedding fused after the norm. A default-constructed value means none.
struct QkRotary {
  RotaryStyle style = RotaryStyle::kNone;
  std::int64_t rotary_dim = 0;  // even, <= head_dim; the first rotary_dim lanes rotate
  TensorView positions;         // [T] int32 or int64
  TensorView cos_sin_cache;     // [max_position, rotary_dim] fp32: cos halves then sin halves
};

// `stream` is a cudaStream_t for CUDA tensors (nullptr = legacy default stream) and ignored
// for CPU tensors. The backend follows the tensors' device.
Status qk_rmsnorm(const TensorView& qkv, const TensorView& q_weight, const TensorView& k_weight,
                  const TensorView& out, const QkNormParams& params, const QkRotary& rotary = QkRotary{},
                  void* stream = nullptr);

}  // namespace fusekit
