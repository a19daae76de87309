// The QK RMSNorm oracle: fp64 accumulation and fp64 math, on values already dequantised to
// float, so tests compare the kernels' output with exactly what they were given.
//   qkv row t: [Q: Hq*D | K: Hkv*D | V: Hkv*Dv] at qkv + t*row_stride
//   Q/K heads: y = x / sqrt(mean(x^2) + eps) * w, then the optional rotary (see qk_norm.h);
//   V is passed through unchanged. Out-of-range positions leave the head unrotated.
#pragma once

#include <cstdint>
#include <vector>

#include "fusekit/qk_norm.h"

namespace fusekit::cpu {

struct QkRefProblem {
  std::int64_t tokens = 0;
  std::int64_t row_stride = 0;  // elements between rows of the input
  std::int64_t hq = 0, hkv = 0, d = 0, dv = 0;
  double eps = 1e-6;
  RotaryStyle style = RotaryStyle::kNone;
  std::int64_t rotary_dim = 0;
  const std::int64_t* positions = nullptr;  // [tokens]
  const float* cos_sin = nullptr;           // [max_position, rotary_dim]
  std::int64_t max_position = 0;

  std::int64_t width() const { return (hq + hkv) * d + hkv * dv; }
};

// One token: row_in = the token's input row, row_out = width() doubles.
void qk_rmsnorm_ref_row(const QkRefProblem& p, std::int64_t t, const float* row_in, const float* q_weight,
                        const float* k_weight, double* row_out);

// All tokens: [tokens, width()] packed.
std::vector<double> qk_rmsnorm_ref(const QkRefProblem& p, const float* qkv, const float* q_weight,
                                   const float* k_weight);

}  // namespace fusekit::cpu
