// route oracle: softmax top-k, or sigmoid + correction bias + grouped top-k (DeepSeek-V3).
// Formulas and the NaN rule are in moe_ref.h. Selection compares fp32 values exactly as the
// `cuda` kernels hold them (logits; fp32 biased scores and fp32 group sums), so ids agree bit
// for bit; the weights are formed in fp64 and rounded once to fp32.
#include <cmath>
#include <cstring>
#include <limits>

#include "common/float_bits.h"
#include "cpu/moe_ref.h"

namespace fusekit::cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The best not-yet-taken eligible index: larger value, then lower index. -1 if none.
std::int64_t pick_best(const float* value, const bool* eligible, std::int64_t n) {
  std::int64_t best = -1;
  for (std::int64_t i = 0; i < n; ++i) {
    if (!eligible[i]) continue;
    if (best < 0 || value[i] > value[best]) best = i;  // strict: equal values keep the lower index
  }
  return best;
}

// Selects k of E by `select` among `eligible`, writes ids and the weights raw[id], rescaled.
void select_and_weigh(const MoeRouting& routing, std::int64_t E, std::int64_t k, const float* select, bool* eligible,
                      const double* raw, std::int32_t* ids, float* weights) {
  double chosen[kMaxExperts];
  double sum = 0;
  for (std::int64_t j = 0; j < k; ++j) {
    std::int64_t e = pick_best(select, eligible, E);
    // Fewer than k eligible experts cannot happen for a validated config; stay in range anyway.
    if (e < 0) e = 0;
    eligible[e] = false;
    ids[j] = static_cast<std::int32_t>(e);
    chosen[j] = raw[e];
    sum += raw[e];
  }
  const bool renormalize = routing.norm == MoeTopkNorm::kRenormalize && sum > 0;
  for (std::int64_t j = 0; j < k; ++j) {
    const double w = renormalize ? chosen[j] / sum : chosen[j];
    weights[j] = static_cast<float>(w * static_cast<double>(routing.routed_scaling_factor));
  }
}

void route_softmax(const MoeRouting& routing, std::int64_t E, std::int64_t k, const float* logits,
                   std::int32_t* ids, float* weights) {
  float select[kMaxExperts];
  bool eligible[kMaxExperts];
  double prob[kMaxExperts];
  float mx = kNegInf;
  for (std::int64_t e = 0; e < E; ++e) {
    select[e] = std::isnan(logits[e]) ? kNegInf : logits[e];
    eligible[e] = true;
    if (select[e] > mx) mx = select[e];
  }
  double sum = 0;
  for (std::int64_t e = 0; e < E; ++e) {
    prob[e] = mx == kNegInf ? 0.0 : std::exp(static_cast<double>(select[e]) - static_cast<double>(mx));
    sum += prob[e];
  }
  for (std::int64_t e = 0; e < E; ++e) prob[e] = sum > 0 ? prob[e] / sum : 0.0;
  select_and_weigh(routing, E, k, select, eligible, prob, ids, weights);
}

void route_sigmoid_grouped(const MoeRouting& routing, std::int64_t E, std::int64_t k, const float* logits,
                           const float* bias, std::int32_t* ids, float* weights) {
  float biased[kMaxExperts];
  bool eligible[kMaxExperts];
  double score[kMaxExperts];
  for (std::int64_t e = 0; e < E; ++e) {
    const double l = std::isnan(logits[e]) ? -std::numeric_limits<double>::infinity() : logits[e];
    const float s = static_cast<float>(1.0 / (1.0 + std::exp(-l)));
    score[e] = s;
    const float b = s + (bias != nullptr ? bias[e] : 0.f);  // fp32 add, as the kernel does
    biased[e] = std::isnan(b) ? kNegInf : b;
    eligible[e] = true;
  }
  const std::int64_t G = routing.num_groups;
  if (G > 1 && routing.topk_groups < G) {
    const std::int64_t size = E / G;
    float group_score[kMaxExperts];
    bool group_left[kMaxExperts];
    for (std::int64_t g = 0; g < G; ++g) {
      float top1 = kNegInf, top2 = kNegInf;
      for (std::int64_t i = 0; i < size; ++i) {
        const float v = biased[g * size + i];
        if (v > top1) {
          top2 = top1;
          top1 = v;
        } else if (v > top2) {
          top2 = v;
        }
      }
      const float gs = size == 1 ? top1 : top1 + top2;
      group_score[g] = std::isnan(gs) ? kNegInf : gs;
      group_left[g] = true;
    }
    bool group_chosen[kMaxExperts];
    for (std::int64_t g = 0; g < G; ++g) group_chosen[g] = false;
    for (std::int64_t j = 0; j < routing.topk_groups; ++j) {
      const std::int64_t g = pick_best(group_score, group_left, G);
      if (g < 0) break;
      group_left[g] = false;
      group_chosen[g] = true;
    }
    for (std::int64_t e = 0; e < E; ++e) eligible[e] = group_chosen[e / size];
  }
  select_and_weigh(routing, E, k, biased, eligible, score, ids, weights);
}

}  // namespace

MoeDims dims_of(const MoeConfig& c) {
  MoeDims d;
  d.E = c.num_experts;
  d.k = c.top_k;
  d.H = c.hidden;
  d.I = c.intermediate;
  d.layout = c.layout;
  d.gate_up_order = c.gate_up_order;
  return d;
}

void route_ref_token(const MoeRouting& routing, std::int64_t E, std::int64_t k, const float* logits,
                     const float* bias, std::int32_t* ids, float* weights) {
  if (routing.mode == MoeRoutingMode::kSigmoidGroupedTopK) {
    route_sigmoid_grouped(routing, E, k, logits, bias, ids, weights);
  } else {
    route_softmax(routing, E, k, logits, ids, weights);
  }
}

void route_ref(const MoeRouting& routing, std::int64_t T, std::int64_t E, std::int64_t k, const LogitsRef& logits,
               const float* bias, std::int32_t* ids, float* weights) {
  float row[kMaxExperts];
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t base = t * logits.row_stride;
    if (logits.dtype == DType::kBF16) {
      const auto* src = static_cast<const std::uint16_t*>(logits.data) + base;
      for (std::int64_t e = 0; e < E; ++e) row[e] = bf16_bits_to_float(src[e]);
    } else {
      std::memcpy(row, static_cast<const float*>(logits.data) + base, sizeof(float) * E);
    }
    route_ref_token(routing, E, k, row, bias, ids + t * k, weights + t * k);
  }
}

}  // namespace fusekit::cpu
