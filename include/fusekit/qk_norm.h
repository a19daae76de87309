// fusekit/qk_norm.h — fused per-head RMSNorm of the Q and K heads of a packed QKV
// activation, with optional fused rotary embedding. One entry point for every token count
// (decode and prefill); no allocation, no host synchronisation (CUDA-graph safe).
//
//   qkv  [T, Hq*D + Hkv*D + Hkv*Dv]  row stride >= packed width, rows contiguous
//   out  same shape as qkv; either qkv itself (same pointer and strides: in place) or a
//        tensor disjoint from qkv (then V is copied through). Any other overlap is an error.
//   q_weight, k_weight  [D], dtype of qkv or fp32
//   each Q/K head h of token t:  y = x * rsqrt(mean(x^2) + eps) * w   (fp32 math)
//   then, with rotary, on the first rotary_dim lanes of y, with c = cos_sin_cache[p][0, rd/2),
//   s = cos_sin_cache[p][rd/2, rd), p = positions[t]:
//     neox (rotate halves): y[i], y[i + rd/2] for i < rd/2
//         -> y[i]*c[i] - y[i+rd/2]*s[i],  y[i+rd/2]*c[i] + y[i]*s[i]
//     gptj (rotate pairs):  y[2i], y[2i+1] for i < rd/2
//         -> y[2i]*c[i] - y[2i+1]*s[i],   y[2i+1]*c[i] + y[2i]*s[i]
//   A position outside [0, max_position) is never used to index the cache: that token's
//   heads are normalised but not rotated (the cache is not read for it).
//
// Requirements (each violation is an invalid-argument Status naming the argument; nothing
// is launched or written):
//   dtypes bf16 / fp16 / fp32; head_dim D and v_head_dim Dv multiples of 8 in [8, 512];
//   Hq >= 1, Hkv >= 1; eps > 0; every pointer and every row stride 16-byte aligned (the CUDA
//   kernel uses 16-byte vector accesses; the CPU backend keeps the same contract);
//   all tensors on the same device. T = 0 is a no-op.
#pragma once

#include <cstdint>

#include "fusekit/status.h"
#include "fusekit/tensor.h"

namespace fusekit {

enum class RotaryStyle { kNone, kNeox, kGptj };

// Optional rotary embedding fused after the norm. A default-constructed value means none.
struct QkRotary {
  RotaryStyle style = RotaryStyle::kNone;
  std::int64_t rotary_dim = 0;  // even, in [2, head_dim]; the first rotary_dim lanes rotate
  TensorView positions;         // [T] int32 or int64
  TensorView cos_sin_cache;     // [max_position, rotary_dim] fp32: cos halves then sin halves
};

struct QkNormParams {
  std::int64_t num_q_heads = 0;   // Hq >= 1
  std::int64_t num_kv_heads = 0;  // Hkv >= 1
  std::int64_t head_dim = 0;      // D: multiple of 8 in [8, 512]; fast paths 64, 128, 256
  std::int64_t v_head_dim = 0;    // Dv; 0 means D
  float eps = 1e-6f;              // > 0
  QkRotary rotary;                // style kNone: no rotary
};

// `stream` is a cudaStream_t for CUDA tensors (nullptr = legacy default stream) and ignored
// for CPU tensors. The backend follows the tensors' device.
Status qk_rmsnorm(const TensorView& qkv, const TensorView& q_weight, const TensorView& k_weight,
                  const TensorView& out, const QkNormParams& params, void* stream = nullptr);

}  // namespace fusekit
