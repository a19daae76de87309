// Shared pieces of the MoE CPU tests: aligned host buffers, random layers, and NAIVE reference
// computations written independently of the oracle in src/cpu (sorting instead of repeated
// arg-max, per-pair loops instead of the aligned row order, long double sums), so that each
// stage of the oracle is checked against something that does not share its code.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "fusekit/moe.h"
#include "support/test_support.h"

namespace fusekit::testing::moe {

using bf16 = std::uint16_t;

// Host memory with 64-byte aligned data, filled with `fill`.
template <typename T>
class Buf {
 public:
  Buf() = default;
  Buf(std::size_t n, T fill) : raw_(n * sizeof(T) + 64), n_(n) {
    for (std::size_t i = 0; i < n; ++i) data()[i] = fill;
  }
  explicit Buf(const std::vector<T>& v) : Buf(v.size(), T{}) {
    if (!v.empty()) std::memcpy(data(), v.data(), v.size() * sizeof(T));
  }
  // Copies go element by element: the aligned offset differs between allocations.
  Buf(const Buf& o) : Buf(o.vec()) {}
  Buf& operator=(const Buf& o) {
    if (this != &o) *this = Buf(o.vec());
    return *this;
  }
  Buf(Buf&&) noexcept = default;
  Buf& operator=(Buf&&) noexcept = default;
  T* data() {
    auto p = reinterpret_cast<std::uintptr_t>(raw_.data());
    return reinterpret_cast<T*>(raw_.data() + (64 - p % 64) % 64);
  }
  const T* data() const { return const_cast<Buf*>(this)->data(); }
  std::size_t size() const { return n_; }
  T& operator[](std::size_t i) { return data()[i]; }
  const T& operator[](std::size_t i) const { return data()[i]; }
  std::vector<T> vec() const { return std::vector<T>(data(), data() + n_); }
  std::vector<unsigned char> bytes() const {
    const auto* b = reinterpret_cast<const unsigned char*>(data());
    return std::vector<unsigned char>(b, b + n_ * sizeof(T));
  }

 private:
  std::vector<unsigned char> raw_;
  std::size_t n_ = 0;
};

inline float f(bf16 b) { return bf16_bits_to_float(b); }
inline bf16 b16(double v) { return float_to_bf16_bits(static_cast<float>(v)); }
inline constexpr bf16 kBf16NaN = 0xFFFF;

inline std::vector<bf16> random_bf16(std::mt19937_64& rng, std::size_t n, float scale) {
  return to_bits(random_floats(rng, n, -scale, scale), DType::kBF16);
}

struct Shape {
  std::int64_t E, k, H, I;
};
inline std::string name_of(const Shape& s) {
  return "E" + std::to_string(s.E) + " k" + std::to_string(s.k) + " H" + std::to_string(s.H) + " I" +
         std::to_string(s.I);
}

inline MoeConfig config_for(const Shape& s, std::int64_t max_tokens, MoeWeightLayout layout) {
  MoeConfig c;
  c.num_experts = s.E;
  c.top_k = s.k;
  c.hidden = s.H;
  c.intermediate = s.I;
  c.max_tokens = max_tokens;
  c.layout = layout;
  c.backend = MoeBackend::kCpu;
  return c;
}

// DeepSeek-like grouping for a shape: up to 8 groups, enough chosen groups to hold k experts.
inline MoeRouting sigmoid_routing(const Shape& s, MoeTopkNorm norm, float scale) {
  MoeRouting r;
  r.mode = MoeRoutingMode::kSigmoidGroupedTopK;
  r.norm = norm;
  r.num_groups = 1;
  for (std::int64_t g : {8, 4, 2}) {
    if (s.E % g == 0 && s.E >= g) {
      r.num_groups = g;
      break;
    }
  }
  const std::int64_t per = s.E / r.num_groups;
  r.topk_groups = std::max<std::int64_t>((s.k + per - 1) / per, r.num_groups / 2);
  r.routed_scaling_factor = scale;
  return r;
}

// Weights stored as NK ([E, N, K]) for the naive code; `as_layout` gives the tensor a test
// passes for layout kKN ([E, K, N], the transpose of each expert).
inline std::vector<bf16> as_layout(const std::vector<bf16>& nk, std::int64_t E, std::int64_t N, std::int64_t K,
                                   MoeWeightLayout layout) {
  if (layout == MoeWeightLayout::kNK) return nk;
  std::vector<bf16> kn(nk.size());
  for (std::int64_t e = 0; e < E; ++e) {
    for (std::int64_t n = 0; n < N; ++n) {
      for (std::int64_t c = 0; c < K; ++c) kn[(e * K + c) * N + n] = nk[(e * N + n) * K + c];
    }
  }
  return kn;
}

// ---- naive routing -----------------------------------------------------------------------

struct NaiveRoute {
  std::vector<std::int32_t> ids;
  std::vector<double> weights;
};

// Sorts indices by (value desc, index asc): the tie rule, stated once, by a different algorithm.
inline std::vector<std::int64_t> order_desc(const std::vector<long double>& v) {
  std::vector<std::int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](std::int64_t a, std::int64_t b) {
    if (v[a] != v[b]) return v[a] > v[b];
    return a < b;
  });
  return idx;
}

// One token. NaN logits are -inf (the documented rule).
inline NaiveRoute naive_route(const MoeRouting& r, std::int64_t E, std::int64_t k, const float* logits,
                              const float* bias) {
  const long double ninf = -std::numeric_limits<long double>::infinity();
  NaiveRoute out;
  std::vector<long double> raw(E), select(E);
  if (r.mode == MoeRoutingMode::kSoftmaxTopK) {
    long double mx = ninf;
    for (std::int64_t e = 0; e < E; ++e) {
      select[e] = std::isnan(logits[e]) ? ninf : logits[e];
      mx = std::max(mx, select[e]);
    }
    long double sum = 0;
    for (std::int64_t e = 0; e < E; ++e) {
      raw[e] = mx == ninf ? 0.0L : std::exp(select[e] - mx);
      sum += raw[e];
    }
    for (auto& p : raw) p = sum > 0 ? p / sum : 0;
  } else {
    for (std::int64_t e = 0; e < E; ++e) {
      const double l = std::isnan(logits[e]) ? -std::numeric_limits<double>::infinity() : logits[e];
      // Selection is defined on the fp32 score and the fp32 biased score (sigmoid rounded to
      // fp32, then an fp32 add): form exactly those values.
      const float s = static_cast<float>(1.0 / (1.0 + std::exp(-l)));
      raw[e] = s;
      const float b = s + (bias ? bias[e] : 0.f);
      select[e] = std::isnan(b) ? ninf : b;
    }
    const std::int64_t G = r.num_groups, size = E / G;
    if (G > 1 && r.topk_groups < G) {
      std::vector<long double> gscore(G);
      for (std::int64_t g = 0; g < G; ++g) {
        std::vector<float> members;
        for (std::int64_t i = 0; i < size; ++i) members.push_back(static_cast<float>(select[g * size + i]));
        std::sort(members.begin(), members.end(), std::greater<float>());
        gscore[g] = size == 1 ? members[0] : static_cast<float>(members[0] + members[1]);
      }
      const std::vector<std::int64_t> gorder = order_desc(gscore);
      std::vector<bool> keep(G, false);
      for (std::int64_t j = 0; j < r.topk_groups; ++j) keep[gorder[j]] = true;
      // Excluded experts must rank after every eligible one, -inf included: sort eligibility first.
      std::vector<std::int64_t> idx(E);
      std::iota(idx.begin(), idx.end(), 0);
      std::sort(idx.begin(), idx.end(), [&](std::int64_t a, std::int64_t b) {
        const bool ka = keep[a / size], kb = keep[b / size];
        if (ka != kb) return ka;
        if (select[a] != select[b]) return select[a] > select[b];
        return a < b;
      });
      for (std::int64_t j = 0; j < k; ++j) out.ids.push_back(static_cast<std::int32_t>(idx[j]));
    }
  }
  if (out.ids.empty()) {
    const std::vector<std::int64_t> idx = order_desc(select);
    for (std::int64_t j = 0; j < k; ++j) out.ids.push_back(static_cast<std::int32_t>(idx[j]));
  }
  long double sum = 0;
  for (std::int32_t id : out.ids) sum += raw[id];
  for (std::int32_t id : out.ids) {
    long double w = raw[id];
    if (r.norm == MoeTopkNorm::kRenormalize && sum > 0) w /= sum;
    out.weights.push_back(static_cast<double>(w * r.routed_scaling_factor));
  }
  return out;
}

// ---- naive expert math -------------------------------------------------------------------

// act of one (token, expert): silu(x . gate rows) * (x . up rows), W1 as NK [E, 2I, H].
inline std::vector<double> naive_act(const Shape& s, const bf16* x_row, const std::vector<bf16>& w1_nk,
                                     std::int64_t e) {
  std::vector<double> a(s.I);
  for (std::int64_t n = 0; n < s.I; ++n) {
    long double g = 0, u = 0;
    for (std::int64_t h = 0; h < s.H; ++h) {
      g += static_cast<long double>(f(x_row[h])) * f(w1_nk[(e * 2 * s.I + n) * s.H + h]);
      u += static_cast<long double>(f(x_row[h])) * f(w1_nk[(e * 2 * s.I + s.I + n) * s.H + h]);
    }
    a[n] = static_cast<double>(g / (1 + std::exp(-g)) * u);
  }
  return a;
}

// y of one pair before the router weight: act . W2[e] rows, W2 as NK [E, H, I].
inline std::vector<double> naive_down(const Shape& s, const bf16* act_row, const std::vector<bf16>& w2_nk,
                                      std::int64_t e) {
  std::vector<double> y(s.H);
  for (std::int64_t h = 0; h < s.H; ++h) {
    long double acc = 0;
    for (std::int64_t i = 0; i < s.I; ++i) acc += static_cast<long double>(f(act_row[i])) * f(w2_nk[(e * s.H + h) * s.I + i]);
    y[h] = static_cast<double>(acc);
  }
  return y;
}

inline std::vector<float> floats_of(const bf16* p, std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = f(p[i]);
  return v;
}

// Bounds for a bf16-stored result against a reference that rounds the same way: the only
// differences are reference-vs-oracle sum order flipping a rounding (one bf16 ulp, rare).
inline ::testing::AssertionResult bf16_close(const std::vector<float>& got, const std::vector<double>& ref,
                                             double rel = 2e-3) {
  double ref_max = 0;
  for (double r : ref) ref_max = std::max(ref_max, std::fabs(r));
  return within(compare(got, ref), rel, std::max(ref_max * (1.0 / 128), 1e-6));
}

}  // namespace fusekit::testing::moe
