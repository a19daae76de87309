#include "cpu/qk_norm_ref.h"

#include <cmath>

namespace fusekit::cpu {

namespace {

void rotate_head(const QkRefProblem& p, std::int64_t t, double* y) {
  if (p.style == RotaryStyle::kNone) return;
  const std::int64_t pos = p.positions[t];
  if (pos < 0 || pos >= p.max_position) return;  // documented: unrotated
  const std::int64_t half = p.rotary_dim / 2;
  const float* cs = p.cos_sin + pos * p.rotary_dim;
  for (std::int64_t i = 0; i < half; ++i) {
    const double c = cs[i], s = cs[half + i];
    const std::int64_t a = p.style == RotaryStyle::kNeox ? i : 2 * i;
    const std::int64_t b = p.style == RotaryStyle::kNeox ? i + half : 2 * i + 1;
    const double x1 = y[a], x2 = y[b];
    y[a] = x1 * c - x2 * s;
    y[b] = x2 * c + x1 * s;
  }
}

}  // namespace

void qk_rmsnorm_ref_row(const QkRefProblem& p, std::int64_t t, const float* row_in, const float* q_weight,
                        const float* k_weight, double* row_out) {
  const std::int64_t heads = p.hq + p.hkv;
  for (std::int64_t h = 0; h < heads; ++h) {
    const float* x = row_in + h * p.d;
    double* y = row_out + h * p.d;
    const float* w = h < p.hq ? q_weight : k_weight;
    double sum_sq = 0;
    for (std::int64_t i = 0; i < p.d; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
    const double inv_rms = 1.0 / std::sqrt(sum_sq / static_cast<double>(p.d) + p.eps);
    for (std::int64_t i = 0; i < p.d; ++i) y[i] = static_cast<double>(x[i]) * inv_rms * w[i];
    rotate_head(p, t, y);
  }
  for (std::int64_t i = heads * p.d; i < p.width(); ++i) row_out[i] = row_in[i];
}

std::vector<double> qk_rmsnorm_ref(const QkRefProblem& p, const float* qkv, const float* q_weight,
                                   const float* k_weight) {
  const std::int64_t width = p.width();
  std::vector<double> out(static_cast<std::size_t>(p.tokens * width));
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    qk_rmsnorm_ref_row(p, t, qkv + t * p.row_stride, q_weight, k_weight, out.data() + t * width);
  }
  return out;
}

}  // namespace fusekit::cpu
