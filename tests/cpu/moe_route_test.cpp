// route on the cpu backend (the oracle) against a naive sort-based routing: softmax top-k
// with and without renormalisation, sigmoid + bias + grouped top-k, fp32 and bf16 logits,
// ties, NaN logits, E up to 512, determinism. Outputs are poisoned before every call.
#include <cmath>
#include <cstring>

#include "cpu/moe_ref.h"
#include "cpu/moe_testing.h"

namespace fusekit::testing::moe {
namespace {

struct RouteRun {
  std::vector<std::int32_t> ids;
  std::vector<float> weights;
};

RouteRun run_route(const MoeConfig& c, std::int64_t T, const std::vector<float>& logits, bool bf16_logits,
                   const std::vector<float>* bias) {
  const std::int64_t E = c.num_experts, k = c.top_k;
  Buf<float> lf(logits);
  Buf<bf16> lb(to_bits(logits, DType::kBF16));
  Buf<float> b(bias ? *bias : std::vector<float>{});
  Buf<std::int32_t> ids(T * k, -7);
  Buf<float> w(T * k, std::nanf(""));
  MoeRouterInput r;
  r.logits = bf16_logits ? TensorView::contiguous(lb.data(), DType::kBF16, {T, E})
                         : TensorView::contiguous(lf.data(), DType::kF32, {T, E});
  if (bias) r.correction_bias = TensorView::contiguous(b.data(), DType::kF32, {E});
  const MoeRouted out{TensorView::contiguous(ids.data(), DType::kI32, {T, k}),
                      TensorView::contiguous(w.data(), DType::kF32, {T, k})};
  const Status s = moe_route(c, r, out, nullptr);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return RouteRun{ids.vec(), w.vec()};
}

// Every id in range and distinct per token, every weight finite, and the naive routing agrees.
void check_route(const MoeConfig& c, std::int64_t T, const std::vector<float>& logits, bool bf16_logits,
                 const std::vector<float>* bias) {
  const std::int64_t E = c.num_experts, k = c.top_k;
  SCOPED_TRACE("E=" + std::to_string(E) + " k=" + std::to_string(k) + " T=" + std::to_string(T) +
               (bf16_logits ? " bf16" : " fp32") +
               (c.routing.mode == MoeRoutingMode::kSoftmaxTopK ? " softmax" : " sigmoid") +
               (c.routing.norm == MoeTopkNorm::kRenormalize ? " renorm" : "") + (bias ? " bias" : ""));
  const RouteRun got = run_route(c, T, logits, bf16_logits, bias);
  const std::vector<float> seen = bf16_logits ? quantize(logits, DType::kBF16) : logits;
  for (std::int64_t t = 0; t < T; ++t) {
    const NaiveRoute want = naive_route(c.routing, E, k, seen.data() + t * E, bias ? bias->data() : nullptr);
    std::vector<bool> used(E, false);
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int32_t id = got.ids[t * k + j];
      ASSERT_TRUE(id >= 0 && id < E) << "t=" << t << " j=" << j << " id=" << id;
      ASSERT_FALSE(used[id]) << "t=" << t << " expert " << id << " chosen twice";
      used[id] = true;
      ASSERT_EQ(id, want.ids[j]) << "t=" << t << " j=" << j;
      const float w = got.weights[t * k + j];
      ASSERT_TRUE(std::isfinite(w)) << "t=" << t << " j=" << j;
      ASSERT_NEAR(w, want.weights[j], 1e-6 * std::fabs(want.weights[j]) + 1e-12) << "t=" << t << " j=" << j;
    }
  }
}

const Shape kShapes[] = {{1, 1, 8, 8}, {7, 3, 8, 8}, {8, 2, 8, 8}, {64, 6, 8, 8}, {128, 8, 8, 8}, {512, 10, 8, 8}};

TEST(MoeRoute, SoftmaxMatchesNaive) {
  auto rng = make_rng();
  for (const Shape& s : kShapes) {
    for (MoeTopkNorm norm : {MoeTopkNorm::kRenormalize, MoeTopkNorm::kNone}) {
      for (bool bf16_logits : {false, true}) {
        MoeConfig c = config_for(s, 64, MoeWeightLayout::kNK);
        c.routing.norm = norm;
        c.routing.routed_scaling_factor = norm == MoeTopkNorm::kNone ? 1.0f : 1.5f;
        for (std::int64_t T : {1, 7, 33}) {
          check_route(c, T, random_floats(rng, T * s.E, -4.f, 4.f), bf16_logits, nullptr);
        }
      }
    }
  }
}

TEST(MoeRoute, SigmoidGroupedMatchesNaive) {
  auto rng = make_rng();
  const Shape shapes[] = {{8, 2, 8, 8}, {16, 4, 8, 8}, {64, 6, 8, 8}, {256, 8, 8, 8}, {512, 10, 8, 8}, {7, 3, 8, 8}};
  for (const Shape& s : shapes) {
    for (MoeTopkNorm norm : {MoeTopkNorm::kRenormalize, MoeTopkNorm::kNone}) {
      for (bool with_bias : {true, false}) {
        MoeConfig c = config_for(s, 64, MoeWeightLayout::kNK);
        c.routing = sigmoid_routing(s, norm, 2.5f);
        const std::vector<float> bias = random_floats(rng, s.E, -0.3f, 0.3f);
        for (std::int64_t T : {1, 9, 40}) {
          check_route(c, T, random_floats(rng, T * s.E, -4.f, 4.f), T == 9, with_bias ? &bias : nullptr);
        }
      }
    }
  }
}

// Group corner cases: one expert per group, every group chosen, a single group.
TEST(MoeRoute, SigmoidGroupShapes) {
  auto rng = make_rng();
  struct G {
    Shape s;
    std::int64_t groups, topk_groups;
  };
  for (const G& g : {G{{8, 3, 8, 8}, 8, 4}, G{{32, 4, 8, 8}, 4, 4}, G{{32, 5, 8, 8}, 1, 1}, G{{256, 8, 8, 8}, 8, 1},
                     G{{60, 7, 8, 8}, 6, 2}}) {
    MoeConfig c = config_for(g.s, 16, MoeWeightLayout::kNK);
    c.routing.mode = MoeRoutingMode::kSigmoidGroupedTopK;
    c.routing.num_groups = g.groups;
    c.routing.topk_groups = g.topk_groups;
    c.routing.routed_scaling_factor = 1.0f;
    const std::vector<float> bias = random_floats(rng, g.s.E, -0.5f, 0.5f);
    check_route(c, 16, random_floats(rng, 16 * g.s.E, -3.f, 3.f), false, &bias);
  }
}

// Equal values everywhere they can be: selection must take the lower index.
TEST(MoeRoute, TiesGoToTheLowerIndex) {
  auto rng = make_rng();
  const std::int64_t E = 64, k = 6, T = 50;
  MoeConfig c = config_for({E, k, 8, 8}, T, MoeWeightLayout::kNK);
  // Three levels only: many exact ties inside and across the top k.
  std::uniform_int_distribution<int> level(0, 2);
  std::vector<float> logits(T * E);
  for (auto& l : logits) l = static_cast<float>(level(rng)) * 0.75f - 0.5f;
  check_route(c, T, logits, false, nullptr);
  c.routing = sigmoid_routing({E, k, 8, 8}, MoeTopkNorm::kRenormalize, 1.0f);
  check_route(c, T, logits, false, nullptr);  // equal group scores too

  // All equal: ids 0..k-1, weights 1/E (softmax) or renormalised 1/k.
  MoeConfig flat = config_for({E, k, 8, 8}, 4, MoeWeightLayout::kNK);
  for (MoeTopkNorm norm : {MoeTopkNorm::kNone, MoeTopkNorm::kRenormalize}) {
    flat.routing.norm = norm;
    const RouteRun r = run_route(flat, 4, std::vector<float>(4 * E, 0.25f), false, nullptr);
    for (std::int64_t t = 0; t < 4; ++t) {
      for (std::int64_t j = 0; j < k; ++j) {
        EXPECT_EQ(r.ids[t * k + j], j);
        EXPECT_FLOAT_EQ(r.weights[t * k + j], norm == MoeTopkNorm::kNone ? 1.0f / E : 1.0f / k);
      }
    }
  }
}

// NaN logits: -inf for selection; ids stay in [0, E) and distinct; weights finite.
TEST(MoeRoute, NanLogits) {
  auto rng = make_rng();
  for (const Shape& s : {Shape{32, 4, 8, 8}, Shape{512, 10, 8, 8}, Shape{8, 8, 8, 8}}) {
    const std::int64_t T = 30;
    std::vector<float> logits = random_floats(rng, T * s.E, -4.f, 4.f);
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t e = 0; e < s.E; ++e) {
        // Row 0: all NaN; row 1: all but one NaN; others: every third.
        if (t == 0 || (t == 1 && e != s.E / 2) || (t > 1 && (t + e) % 3 == 0)) logits[t * s.E + e] = std::nanf("");
      }
    }
    const std::vector<float> bias = random_floats(rng, s.E, -0.2f, 0.2f);
    for (bool sigmoid : {false, true}) {
      MoeConfig c = config_for(s, T, MoeWeightLayout::kNK);
      if (sigmoid) c.routing = sigmoid_routing(s, MoeTopkNorm::kRenormalize, 2.0f);
      check_route(c, T, logits, false, sigmoid ? &bias : nullptr);
      check_route(c, T, logits, true, sigmoid ? &bias : nullptr);
      if (!sigmoid) {
        // All-NaN row: experts 0..k-1, weight 0. One finite logit: it comes first with weight 1.
        const RouteRun r = run_route(c, T, logits, false, nullptr);
        for (std::int64_t j = 0; j < s.k; ++j) {
          EXPECT_EQ(r.ids[j], j);
          EXPECT_EQ(r.weights[j], 0.f);
        }
        EXPECT_EQ(r.ids[s.k], s.E / 2);
        EXPECT_FLOAT_EQ(r.weights[s.k], 1.0f);
      }
    }
  }
}

TEST(MoeRoute, BitIdenticalRunToRun) {
  auto rng = make_rng();
  const Shape s{256, 8, 8, 8};
  MoeConfig c = config_for(s, 100, MoeWeightLayout::kNK);
  c.routing = sigmoid_routing(s, MoeTopkNorm::kRenormalize, 2.5f);
  const std::vector<float> logits = random_floats(rng, 100 * s.E, -4.f, 4.f);
  const std::vector<float> bias = random_floats(rng, s.E, -0.2f, 0.2f);
  const RouteRun a = run_route(c, 100, logits, false, &bias);
  const RouteRun b = run_route(c, 100, logits, false, &bias);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(0, std::memcmp(a.weights.data(), b.weights.data(), a.weights.size() * sizeof(float)));
}

// Padded logits rows (row stride > E) read only the first E values of each row.
TEST(MoeRoute, PaddedLogitRows) {
  auto rng = make_rng();
  const std::int64_t E = 20, k = 3, T = 11, stride = 24;
  MoeConfig c = config_for({E, k, 8, 8}, T, MoeWeightLayout::kNK);
  std::vector<float> packed = random_floats(rng, T * E, -3.f, 3.f);
  Buf<float> padded(T * stride, std::nanf(""));  // the padding is NaN: must never be read
  for (std::int64_t t = 0; t < T; ++t) std::memcpy(&padded[t * stride], &packed[t * E], E * sizeof(float));
  Buf<std::int32_t> ids(T * k, -7);
  Buf<float> w(T * k, std::nanf(""));
  MoeRouterInput r;
  r.logits = TensorView::contiguous(padded.data(), DType::kF32, {T, E});
  r.logits.strides[0] = stride;
  ASSERT_TRUE(moe_route(c, r,
                        MoeRouted{TensorView::contiguous(ids.data(), DType::kI32, {T, k}),
                                  TensorView::contiguous(w.data(), DType::kF32, {T, k})},
                        nullptr)
                  .ok());
  const RouteRun want = run_route(c, T, packed, false, nullptr);
  EXPECT_EQ(ids.vec(), want.ids);
  EXPECT_EQ(w.vec(), want.weights);
}

// The per-token oracle entry agrees with the batched one (the CLI and tests use both).
TEST(MoeRoute, TokenEntryMatchesBatch) {
  auto rng = make_rng();
  const Shape s{64, 6, 8, 8};
  MoeRouting routing = sigmoid_routing(s, MoeTopkNorm::kNone, 1.25f);
  const std::vector<float> logits = random_floats(rng, 5 * s.E, -2.f, 2.f);
  std::vector<std::int32_t> ids(5 * s.k, -7), ids1(s.k, -7);
  std::vector<float> w(5 * s.k, NAN), w1(s.k, NAN);
  cpu::LogitsRef l{logits.data(), DType::kF32, s.E};
  cpu::route_ref(routing, 5, s.E, s.k, l, nullptr, ids.data(), w.data());
  for (std::int64_t t = 0; t < 5; ++t) {
    cpu::route_ref_token(routing, s.E, s.k, logits.data() + t * s.E, nullptr, ids1.data(), w1.data());
    EXPECT_TRUE(std::equal(ids1.begin(), ids1.end(), ids.begin() + t * s.k));
    EXPECT_TRUE(std::equal(w1.begin(), w1.end(), w.begin() + t * s.k));
  }
}

}  // namespace
}  // namespace fusekit::testing::moe
