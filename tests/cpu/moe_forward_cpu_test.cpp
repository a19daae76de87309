// The whole layer on the cpu backend (moe_forward / moe_forward_routed) against a naive
// per-token computation: naive routing, per (token, slot) act and down projection with the
// same bf16 roundings (act, y, out), summed over slots in order. Both layouts, both routing
// modes, odd sizes, E up to 512, T = 1 .. 257, one expert taking every token, NaN logits,
// out-of-range precomputed ids, T = 0, determinism, host prepare_weights.
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "cpu/moe_ref.h"
#include "cpu/moe_testing.h"

namespace fusekit::testing::moe {
namespace {

struct Layer {
  Shape s;
  MoeConfig config;
  std::vector<bf16> x, w1_nk, w2_nk;
  std::vector<float> logits, bias;
  Buf<bf16> w1, w2;

  Layer(const Shape& shape, std::int64_t max_tokens, MoeWeightLayout layout, MoeRoutingMode mode,
        std::mt19937_64& rng)
      : s(shape) {
    config = config_for(s, max_tokens, layout);
    if (mode == MoeRoutingMode::kSigmoidGroupedTopK) {
      config.routing = sigmoid_routing(s, MoeTopkNorm::kRenormalize, 2.5f);
      bias = random_floats(rng, s.E, -0.2f, 0.2f);
    }
    x = random_bf16(rng, max_tokens * s.H, 1.0f);
    w1_nk = random_bf16(rng, s.E * 2 * s.I * s.H, 1.0f / std::sqrt(static_cast<float>(s.H)));
    w2_nk = random_bf16(rng, s.E * s.H * s.I, 1.0f / std::sqrt(static_cast<float>(s.I)));
    logits = random_floats(rng, max_tokens * s.E, -4.f, 4.f);
    w1 = Buf<bf16>(as_layout(w1_nk, s.E, 2 * s.I, s.H, layout));
    w2 = Buf<bf16>(as_layout(w2_nk, s.E, s.H, s.I, layout));
  }
  MoeLayer layer() const {
    MoeLayer l;
    l.config = config;
    const bool nk = config.layout == MoeWeightLayout::kNK;
    auto* p1 = const_cast<bf16*>(w1.data());
    auto* p2 = const_cast<bf16*>(w2.data());
    l.weights.w1 = nk ? TensorView::contiguous(p1, DType::kBF16, {s.E, 2 * s.I, s.H})
                      : TensorView::contiguous(p1, DType::kBF16, {s.E, s.H, 2 * s.I});
    l.weights.w2 = nk ? TensorView::contiguous(p2, DType::kBF16, {s.E, s.H, s.I})
                      : TensorView::contiguous(p2, DType::kBF16, {s.E, s.I, s.H});
    return l;
  }
  std::string trace(std::int64_t T) const {
    return name_of(s) + " T=" + std::to_string(T) + (config.layout == MoeWeightLayout::kNK ? " NK" : " KN") +
           (config.routing.mode == MoeRoutingMode::kSoftmaxTopK ? " softmax" : " sigmoid-grouped");
  }
};

struct Workspace {
  Buf<unsigned char> buf;
  explicit Workspace(const MoeConfig& c) {
    std::size_t bytes = 0;
    const Status s = moe_workspace_size(c, &bytes);
    EXPECT_TRUE(s.ok()) << s.to_string();
    buf = Buf<unsigned char>(bytes, 0xA5);  // exactly the size asked for: ASan sees any overrun
  }
  MoeWorkspace view() { return MoeWorkspace{buf.data(), buf.size()}; }
};

// Naive layer on tokens [0, T) given the routing of each token.
std::vector<double> naive_layer(const Layer& L, std::int64_t T, const std::vector<std::int32_t>& ids,
                                const std::vector<double>& weights) {
  const Shape& s = L.s;
  std::vector<double> out(T * s.H);
  std::vector<bf16> act(s.I);
  for (std::int64_t t = 0; t < T; ++t) {
    std::vector<long double> sum(s.H, 0);
    for (std::int64_t j = 0; j < s.k; ++j) {
      const std::int32_t e = ids[t * s.k + j];
      if (e < 0 || e >= s.E) continue;  // no expert: the slot contributes nothing
      const std::vector<double> a = naive_act(s, L.x.data() + t * s.H, L.w1_nk, e);
      for (std::int64_t i = 0; i < s.I; ++i) act[i] = b16(a[i]);  // act is stored bf16
      const std::vector<double> d = naive_down(s, act.data(), L.w2_nk, e);
      const double w = static_cast<float>(weights[t * s.k + j]);  // weights are fp32
      for (std::int64_t h = 0; h < s.H; ++h) sum[h] += f(b16(w * d[h]));  // y is stored bf16
    }
    for (std::int64_t h = 0; h < s.H; ++h) out[t * s.H + h] = f(b16(static_cast<double>(sum[h])));
  }
  return out;
}

std::vector<double> naive_forward(const Layer& L, std::int64_t T, std::vector<std::int32_t>* ids_out = nullptr) {
  std::vector<std::int32_t> ids;
  std::vector<double> weights;
  for (std::int64_t t = 0; t < T; ++t) {
    const NaiveRoute r = naive_route(L.config.routing, L.s.E, L.s.k, L.logits.data() + t * L.s.E,
                                     L.bias.empty() ? nullptr : L.bias.data());
    ids.insert(ids.end(), r.ids.begin(), r.ids.end());
    weights.insert(weights.end(), r.weights.begin(), r.weights.end());
  }
  if (ids_out) *ids_out = ids;
  return naive_layer(L, T, ids, weights);
}

Buf<bf16> run_forward(Layer& L, std::int64_t T, Workspace& ws) {
  Buf<bf16> x(L.x), out(T * L.s.H, kBf16NaN);
  Buf<float> logits(L.logits), bias(L.bias);
  MoeRouterInput r;
  r.logits = TensorView::contiguous(logits.data(), DType::kF32, {T, L.s.E});
  if (!L.bias.empty()) r.correction_bias = TensorView::contiguous(bias.data(), DType::kF32, {L.s.E});
  const Status s = moe_forward(L.layer(), TensorView::contiguous(x.data(), DType::kBF16, {T, L.s.H}), r,
                               TensorView::contiguous(out.data(), DType::kBF16, {T, L.s.H}), ws.view(), nullptr);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return out;
}

void check_layer(Layer& L, std::int64_t T, Workspace& ws) {
  SCOPED_TRACE(L.trace(T));
  const Buf<bf16> out = run_forward(L, T, ws);
  EXPECT_TRUE(bf16_close(floats_of(out.data(), T * L.s.H), naive_forward(L, T)));
}

TEST(MoeForwardCpu, MatchesNaive) {
  auto rng = make_rng();
  const Shape shapes[] = {{1, 1, 64, 32}, {7, 3, 200, 96}, {8, 2, 64, 112}, {16, 4, 136, 48}, {64, 6, 32, 24}};
  for (const Shape& s : shapes) {
    for (int variant = 0; variant < 4; ++variant) {
      const MoeWeightLayout layout = variant % 2 ? MoeWeightLayout::kKN : MoeWeightLayout::kNK;
      const MoeRoutingMode mode = variant / 2 ? MoeRoutingMode::kSigmoidGroupedTopK : MoeRoutingMode::kSoftmaxTopK;
      Layer L(s, 64, layout, mode, rng);
      Workspace ws(L.config);
      for (std::int64_t T : {1, 2, 7, 37}) check_layer(L, T, ws);
      if (HasFailure()) return;
    }
  }
}

TEST(MoeForwardCpu, ManyTokensAndManyExperts) {
  auto rng = make_rng();
  {
    Layer L({7, 3, 40, 24}, 257, MoeWeightLayout::kKN, MoeRoutingMode::kSoftmaxTopK, rng);
    Workspace ws(L.config);
    check_layer(L, 257, ws);
  }
  {
    Layer L({512, 10, 16, 16}, 20, MoeWeightLayout::kNK, MoeRoutingMode::kSigmoidGroupedTopK, rng);
    Workspace ws(L.config);
    check_layer(L, 20, ws);
  }
}

TEST(MoeForwardCpu, SoftmaxWithoutRenormalizationAndBf16Logits) {
  auto rng = make_rng();
  Layer L({16, 4, 64, 40}, 9, MoeWeightLayout::kNK, MoeRoutingMode::kSoftmaxTopK, rng);
  L.config.routing.norm = MoeTopkNorm::kNone;
  L.config.routing.routed_scaling_factor = 1.5f;
  L.logits = quantize(L.logits, DType::kBF16);  // the naive side sees the bf16 values
  Workspace ws(L.config);
  Buf<bf16> x(L.x), out(9 * 64, kBf16NaN);
  Buf<bf16> logits(to_bits(L.logits, DType::kBF16));
  MoeRouterInput r;
  r.logits = TensorView::contiguous(logits.data(), DType::kBF16, {9, 16});
  ASSERT_TRUE(moe_forward(L.layer(), TensorView::contiguous(x.data(), DType::kBF16, {9, 64}), r,
                          TensorView::contiguous(out.data(), DType::kBF16, {9, 64}), ws.view(), nullptr)
                  .ok());
  EXPECT_TRUE(bf16_close(floats_of(out.data(), 9 * 64), naive_forward(L, 9)));
}

// k = 1 with one dominant logit: every expert empty but one. k = 4: every token visits the
// same expert first.
TEST(MoeForwardCpu, OneExpertTakesEveryToken) {
  auto rng = make_rng();
  for (std::int64_t k : {1, 4}) {
    for (MoeWeightLayout layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
      Layer L({16, k, 64, 40}, 50, layout, MoeRoutingMode::kSoftmaxTopK, rng);
      for (std::int64_t t = 0; t < 50; ++t) L.logits[t * 16 + 11] = 30.f;
      Workspace ws(L.config);
      check_layer(L, 50, ws);
      std::vector<std::int32_t> ids;
      naive_forward(L, 50, &ids);
      for (std::int64_t t = 0; t < 50; ++t) EXPECT_EQ(ids[t * k], 11);
    }
  }
}

TEST(MoeForwardCpu, NanLogits) {
  auto rng = make_rng();
  for (MoeRoutingMode mode : {MoeRoutingMode::kSoftmaxTopK, MoeRoutingMode::kSigmoidGroupedTopK}) {
    Layer L({32, 4, 64, 32}, 30, MoeWeightLayout::kNK, mode, rng);
    for (std::int64_t t = 0; t < 30; ++t) {
      for (std::int64_t e = 0; e < 32; ++e) {
        if (t == 0 || (t + e) % 3 == 0) L.logits[t * 32 + e] = std::nanf("");
      }
    }
    Workspace ws(L.config);
    check_layer(L, 30, ws);
  }
}

// Routed entry: equals moe_forward given the same routing; ids outside [0, E) contribute nothing.
TEST(MoeForwardCpu, RoutedEntry) {
  auto rng = make_rng();
  Layer L({16, 4, 64, 40}, 12, MoeWeightLayout::kKN, MoeRoutingMode::kSoftmaxTopK, rng);
  Workspace ws(L.config);
  const std::int64_t T = 12, k = 4;
  Buf<std::int32_t> ids(T * k, -7);
  Buf<float> w(T * k, std::nanf(""));
  Buf<float> logits(L.logits);
  MoeRouterInput r;
  r.logits = TensorView::contiguous(logits.data(), DType::kF32, {T, 16});
  const MoeRouted routed{TensorView::contiguous(ids.data(), DType::kI32, {T, k}),
                         TensorView::contiguous(w.data(), DType::kF32, {T, k})};
  ASSERT_TRUE(moe_route(L.config, r, routed, nullptr).ok());
  Buf<bf16> x(L.x), out(T * 64, kBf16NaN);
  const TensorView xv = TensorView::contiguous(x.data(), DType::kBF16, {T, 64});
  const TensorView ov = TensorView::contiguous(out.data(), DType::kBF16, {T, 64});
  ASSERT_TRUE(moe_forward_routed(L.layer(), xv, routed, ov, ws.view(), nullptr).ok());
  const Buf<bf16> fused = run_forward(L, T, ws);
  EXPECT_EQ(out.bytes(), fused.bytes()) << "routed forward differs from forward with the same routing";

  ids[1] = -1;
  ids[6] = 16;
  ids[7] = 1000;
  out = Buf<bf16>(T * 64, kBf16NaN);
  const TensorView ov2 = TensorView::contiguous(out.data(), DType::kBF16, {T, 64});
  ASSERT_TRUE(moe_forward_routed(L.layer(), xv, routed, ov2, ws.view(), nullptr).ok());
  std::vector<double> wd(w.data(), w.data() + T * k);
  EXPECT_TRUE(bf16_close(floats_of(out.data(), T * 64), naive_layer(L, T, ids.vec(), wd)));
}

TEST(MoeForwardCpu, NoTokensWritesNothing) {
  auto rng = make_rng();
  Layer L({8, 2, 64, 32}, 4, MoeWeightLayout::kNK, MoeRoutingMode::kSoftmaxTopK, rng);
  Workspace ws(L.config);
  Buf<bf16> x(L.x), out(64, 0x1234);
  Buf<float> logits(L.logits);
  MoeRouterInput r;
  r.logits = TensorView::contiguous(logits.data(), DType::kF32, {0, 8});
  ASSERT_TRUE(moe_forward(L.layer(), TensorView::contiguous(x.data(), DType::kBF16, {0, 64}), r,
                          TensorView::contiguous(out.data(), DType::kBF16, {0, 64}), ws.view(), nullptr)
                  .ok());
  for (std::size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], 0x1234);
}

TEST(MoeForwardCpu, BitIdenticalRunToRun) {
  auto rng = make_rng();
  Layer L({64, 6, 128, 256}, 40, MoeWeightLayout::kNK, MoeRoutingMode::kSigmoidGroupedTopK, rng);
  Workspace ws(L.config);
  const Buf<bf16> a = run_forward(L, 40, ws);  // large enough for the threaded rows
  const Buf<bf16> b = run_forward(L, 40, ws);
  EXPECT_EQ(a.bytes(), b.bytes());
  for (std::size_t i = 0; i < a.size(); ++i) ASSERT_FALSE(std::isnan(f(a[i]))) << i;
}

// The backend comes from FUSEKIT_MOE_BACKEND when the config says auto.
TEST(MoeForwardCpu, AutoAndEnvironmentPickCpu) {
  auto rng = make_rng();
  Layer L({8, 2, 64, 32}, 5, MoeWeightLayout::kNK, MoeRoutingMode::kSoftmaxTopK, rng);
  Workspace ws(L.config);
  const Buf<bf16> want = run_forward(L, 5, ws);
  L.config.backend = MoeBackend::kAuto;
  for (const char* env : {"", "cpu", "auto"}) {
    ASSERT_EQ(0, setenv("FUSEKIT_MOE_BACKEND", env, 1));
    EXPECT_EQ(run_forward(L, 5, ws).bytes(), want.bytes()) << "FUSEKIT_MOE_BACKEND=" << env;
  }
  unsetenv("FUSEKIT_MOE_BACKEND");
  EXPECT_EQ(run_forward(L, 5, ws).bytes(), want.bytes());
}

// W1 [E, 2I, H] (kNK, gate rows then up rows) in MoeGateUpOrder::kInterleaved8 order.
std::vector<bf16> interleave_gate_up(const std::vector<bf16>& w1, std::int64_t E, std::int64_t I, std::int64_t H) {
  std::vector<bf16> out(w1.size());
  for (std::int64_t e = 0; e < E; ++e) {
    for (std::int64_t c = 0; c < I; ++c) {
      for (int up = 0; up < 2; ++up) {
        const bf16* from = &w1[(e * 2 * I + up * I + c) * H];
        std::copy(from, from + H, &out[(e * 2 * I + (c / 8) * 16 + up * 8 + c % 8) * H]);
      }
    }
  }
  return out;
}

// Host prepare_weights: repacks into any target format (layout, gate/up order) from either
// layout; the weights land where the target's index functions read them and the layer gives the
// same bits. The recommended format is NK (on this machine: no Hopper GPU, halves order).
TEST(MoeForwardCpu, PrepareWeightsOnHost) {
  auto rng = make_rng();
  struct Target {
    MoeWeightLayout layout;
    MoeGateUpOrder order;
  };
  const Target targets[] = {{MoeWeightLayout::kNK, MoeGateUpOrder::kHalves},
                            {MoeWeightLayout::kNK, MoeGateUpOrder::kInterleaved8},
                            {MoeWeightLayout::kKN, MoeGateUpOrder::kHalves}};
  for (MoeWeightLayout from : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
    Layer L({8, 2, 64, 40}, 6, from, MoeRoutingMode::kSoftmaxTopK, rng);
    Workspace ws(L.config);
    const Buf<bf16> before = run_forward(L, 6, ws);
    EXPECT_EQ(moe_prepared_config(L.config).layout, MoeWeightLayout::kNK);
    for (const Target& t : targets) {
      Layer P = L;  // copies the weights; rewritten below
      P.config.layout = t.layout;
      P.config.gate_up_order = t.order;
      P.w1 = Buf<bf16>(L.w1.size(), kBf16NaN);
      P.w2 = Buf<bf16>(L.w2.size(), kBf16NaN);
      const MoeLayer src = L.layer(), dst = P.layer();
      const Status s = moe_prepare_weights(L.config, P.config, src.weights, dst.weights, nullptr);
      ASSERT_TRUE(s.ok()) << s.to_string();
      const std::vector<bf16> w1_nk =
          t.order == MoeGateUpOrder::kInterleaved8 ? interleave_gate_up(L.w1_nk, 8, 40, 64) : L.w1_nk;
      EXPECT_EQ(P.w1.vec(), as_layout(w1_nk, 8, 80, 64, t.layout));
      EXPECT_EQ(P.w2.vec(), as_layout(L.w2_nk, 8, 64, 40, t.layout));
      EXPECT_EQ(run_forward(P, 6, ws).bytes(), before.bytes());
    }
  }
}

// The same layer with W1 in interleaved gate/up order gives the same bits, on both routing
// modes and an I that is no multiple of the oracle's 64-column chunk.
TEST(MoeForwardCpu, InterleavedGateUpOrderGivesTheSameBits) {
  auto rng = make_rng();
  for (MoeRoutingMode mode : {MoeRoutingMode::kSoftmaxTopK, MoeRoutingMode::kSigmoidGroupedTopK}) {
    Layer L({16, 4, 136, 88}, 37, MoeWeightLayout::kNK, mode, rng);
    Workspace ws(L.config);
    Layer P = L;
    P.config.gate_up_order = MoeGateUpOrder::kInterleaved8;
    P.w1 = Buf<bf16>(interleave_gate_up(L.w1_nk, 16, 88, 136));
    for (std::int64_t T : {1, 9, 37}) {
      const Buf<bf16> want = run_forward(L, T, ws);
      EXPECT_EQ(run_forward(P, T, ws).bytes(), want.bytes()) << "T=" << T;
    }
  }
}

// The oracle entry used by the CLI: forward_ref on a workspace of forward_ref_workspace_bytes.
TEST(MoeForwardCpu, ForwardRefEntry) {
  auto rng = make_rng();
  Layer L({7, 3, 200, 96}, 9, MoeWeightLayout::kKN, MoeRoutingMode::kSigmoidGroupedTopK, rng);
  const cpu::MoeDims d = cpu::dims_of(L.config);
  Buf<unsigned char> ws(cpu::forward_ref_workspace_bytes(d, 9), 0);
  Buf<bf16> out(9 * 200, kBf16NaN);
  cpu::LogitsRef logits{L.logits.data(), DType::kF32, 7};
  cpu::ForwardRefArgs a;
  a.dims = d;
  a.routing = L.config.routing;
  a.T = 9;
  a.max_tokens = 9;
  a.x = L.x.data();
  a.x_stride = 200;
  a.logits = &logits;
  a.bias = L.bias.data();
  a.w1 = L.w1.data();
  a.w2 = L.w2.data();
  a.out = out.data();
  a.out_stride = 200;
  a.workspace = ws.data();
  cpu::forward_ref(a);
  EXPECT_TRUE(bf16_close(floats_of(out.data(), 9 * 200), naive_forward(L, 9)));
}

}  // namespace
}  // namespace fusekit::testing::moe
