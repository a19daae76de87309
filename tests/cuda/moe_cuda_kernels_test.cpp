// The `cuda` MoE backend's internal contract (src/cuda/moe/moe_cuda.h) against a small fp64
// reference written here, independent of the CPU backend: routing ids/weights, the fused
// forward on given ids (decode and grouped paths, both layouts), and cuda-ref against the
// fused path. moe_cuda_test.cpp checks the same through the public API and the CPU oracle.
// Tests named *Sanitizer* are small enough for compute-sanitizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <vector>

#include "support/test_support.h"

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>

#include "cuda/moe/gemm_config.h"
#include "cuda/moe/kernels.h"
#include "cuda/moe/moe_cuda.h"

namespace fusekit::testing {
namespace {

struct Problem {
  std::int64_t E, k, H, I, T;
  MoeWeightLayout layout;
};

struct Data {
  MoeConfig config;
  std::vector<float> x, w1, w2;  // bf16-exact values; w1/w2 in config.layout
  std::vector<std::int32_t> ids;
  std::vector<float> weights;
  DeviceBuffer dx, dw1, dw2, dids, dweights;
};

// Uniform in (lo, hi), bf16-exact, from a counter-based hash: mt19937 is too slow for the
// gigabytes of weights of the big shapes.
std::vector<float> fast_bf16_uniform(std::mt19937_64& rng, std::int64_t n, float lo, float hi) {
  const std::uint64_t seed = rng();
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint64_t z = seed + static_cast<std::uint64_t>(i) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = static_cast<float>((z >> 40) | 1u) / 16777216.0f;  // (0, 1), never 0
    v[i] = bf16_bits_to_float(float_to_bf16_bits(lo + (hi - lo) * u));
  }
  return v;
}

Data make_data(const Problem& p, std::mt19937_64& rng) {
  Data d;
  d.config.num_experts = p.E;
  d.config.top_k = p.k;
  d.config.hidden = p.H;
  d.config.intermediate = p.I;
  d.config.max_tokens = p.T;
  d.config.layout = p.layout;
  d.x = quantize(random_floats(rng, p.T * p.H), DType::kBF16);
  d.w1 = fast_bf16_uniform(rng, p.E * 2 * p.I * p.H, -1.f / std::sqrt(float(p.H)), 1.f / std::sqrt(float(p.H)));
  d.w2 = fast_bf16_uniform(rng, p.E * p.H * p.I, -1.f / std::sqrt(float(p.I)), 1.f / std::sqrt(float(p.I)));
  // k distinct experts per token, random weights.
  std::vector<std::int32_t> perm(p.E);
  for (std::int64_t t = 0; t < p.T; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (std::int64_t j = 0; j < p.k; ++j) d.ids.push_back(perm[j]);
  }
  d.weights = random_floats(rng, p.T * p.k, 0.05f, 1.f);
  d.dx = DeviceBuffer::from(to_bits(d.x, DType::kBF16));
  d.dw1 = DeviceBuffer::from(to_bits(d.w1, DType::kBF16));
  d.dw2 = DeviceBuffer::from(to_bits(d.w2, DType::kBF16));
  d.dids = DeviceBuffer::from(d.ids);
  d.dweights = DeviceBuffer::from(d.weights);
  return d;
}

// W[e] element (n, kk) of an [E, N, K] (NK) or [E, K, N] (KN) tensor.
float weight_at(const std::vector<float>& w, MoeWeightLayout layout, std::int64_t e, std::int64_t n, std::int64_t kk,
                std::int64_t N, std::int64_t K) {
  return layout == MoeWeightLayout::kNK ? w[(e * N + n) * K + kk] : w[(e * K + kk) * N + n];
}

// fp64 reference of the layer on given ids/weights; act rounded to bf16 as the kernels store it.
std::vector<double> reference(const Data& d) {
  const auto& c = d.config;
  const std::int64_t T = c.max_tokens, k = c.top_k, H = c.hidden, I = c.intermediate;
  std::vector<double> out(T * H, 0.0);
  std::vector<float> act(I);
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t e = d.ids[t * k + j];
      if (e < 0 || e >= c.num_experts) continue;  // a dead slot contributes nothing
      for (std::int64_t i = 0; i < I; ++i) {
        double g = 0, u = 0;
        for (std::int64_t h = 0; h < H; ++h) {
          g += double(d.x[t * H + h]) * weight_at(d.w1, c.layout, e, i, h, 2 * I, H);
          u += double(d.x[t * H + h]) * weight_at(d.w1, c.layout, e, I + i, h, 2 * I, H);
        }
        act[i] = quantize({static_cast<float>(g / (1.0 + std::exp(-g)) * u)}, DType::kBF16)[0];
      }
      for (std::int64_t h = 0; h < H; ++h) {
        double y = 0;
        for (std::int64_t i = 0; i < I; ++i) y += double(act[i]) * weight_at(d.w2, c.layout, e, h, i, H, I);
        out[t * H + h] += d.weights[t * k + j] * y;
      }
    }
  }
  return out;
}

std::vector<float> run(const Data& d, bool ref, DeviceBuffer& out) {
  const auto& c = d.config;
  const std::int64_t T = c.max_tokens;
  const std::size_t bytes = ref ? cuda_moe::ref_workspace_size(c) : cuda_moe::workspace_size(c);
  DeviceBuffer ws(std::max<std::size_t>(bytes, 256));
  ws.poison();
  out.poison();
  MoeLayer layer;
  layer.config = c;
  const bool nk = c.layout == MoeWeightLayout::kNK;
  layer.weights.w1 = TensorView::contiguous(d.dw1.data(), DType::kBF16,
                                            {c.num_experts, nk ? 2 * c.intermediate : c.hidden, nk ? c.hidden : 2 * c.intermediate},
                                            DeviceType::kCUDA, 0);
  layer.weights.w2 = TensorView::contiguous(d.dw2.data(), DType::kBF16,
                                            {c.num_experts, nk ? c.hidden : c.intermediate, nk ? c.intermediate : c.hidden},
                                            DeviceType::kCUDA, 0);
  const TensorView x = TensorView::contiguous(d.dx.data(), DType::kBF16, {T, c.hidden}, DeviceType::kCUDA, 0);
  const TensorView o = TensorView::contiguous(out.data(), DType::kBF16, {T, c.hidden}, DeviceType::kCUDA, 0);
  MoeRouted routed{TensorView::contiguous(d.dids.data(), DType::kI32, {T, c.top_k}, DeviceType::kCUDA, 0),
                   TensorView::contiguous(d.dweights.data(), DType::kF32, {T, c.top_k}, DeviceType::kCUDA, 0)};
  const MoeWorkspace w{ws.data(), ws.bytes()};
  const Status s = ref ? cuda_moe::ref_forward(layer, x, nullptr, &routed, o, w, nullptr)
                       : cuda_moe::forward(layer, x, nullptr, &routed, o, w, nullptr);
  EXPECT_TRUE(s.ok()) << s.to_string();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return from_bits(out.to_host<std::uint16_t>(T * c.hidden), DType::kBF16);
}

// edit_ids (optional) rewrites the routing before the upload.
void check(const Problem& p, bool with_ref = true, void (*edit_ids)(std::vector<std::int32_t>&, std::int64_t E) = nullptr) {
  SCOPED_TRACE("E=" + std::to_string(p.E) + " k=" + std::to_string(p.k) + " H=" + std::to_string(p.H) +
               " I=" + std::to_string(p.I) + " T=" + std::to_string(p.T) + (p.layout == MoeWeightLayout::kNK ? " NK" : " KN"));
  auto rng = make_rng();
  Data d = make_data(p, rng);
  if (edit_ids) {
    edit_ids(d.ids, p.E);
    d.dids = DeviceBuffer::from(d.ids);
  }
  const std::vector<double> want = reference(d);
  DeviceBuffer out(2 * p.T * p.H);
  const std::vector<float> got = run(d, false, out);
  EXPECT_TRUE(within(compare(got, want), 1e-2, 0.05)) << "cuda vs fp64 reference";
  const std::vector<float> again = run(d, false, out);
  EXPECT_EQ(0, std::memcmp(got.data(), again.data(), got.size() * sizeof(float))) << "not deterministic";
  if (with_ref) {
    const std::vector<float> ref = run(d, true, out);
    EXPECT_TRUE(within(compare(ref, want), 1e-2, 0.05)) << "cuda-ref vs fp64 reference";
  }
}

// Pins a forward path for the scope (the rule in gemm_config.h picks by size otherwise).
struct PinPath : ScopedEnv {
  explicit PinPath(const char* max_pairs) : ScopedEnv("FUSEKIT_MOE_DECODE_MAX_PAIRS", max_pairs) {}
};

TEST(MoeCudaKernels, DecodePath) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  PinPath decode("65535");
  for (auto layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
    check({128, 8, 2048, 768, 1, layout});
    check({8, 2, 1024, 1432, 7, layout});
    check({7, 3, 200, 96, 2, layout});
  }
}

// Decode gemm1 (NK) at 3 columns per warp, which its rule picks only where 4 leave a wave mostly
// empty (e.g. Qwen3-30B-A3B T <= 2): I = 200, 1432 and 40 leave the last warp 2 or 1 columns.
TEST(MoeCudaKernels, DecodePathThreeColumnsPerGemm1Warp) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  PinPath decode("65535");
  ScopedEnv three("FUSEKIT_MOE_DECODE_GEMM1_COLS", "3");
  check({128, 8, 2048, 768, 1, MoeWeightLayout::kNK});
  check({8, 2, 1024, 1432, 7, MoeWeightLayout::kNK});
  check({7, 3, 200, 96, 2, MoeWeightLayout::kNK});
  check({4, 2, 264, 200, 13, MoeWeightLayout::kNK});
  check({2, 1, 128, 40, 70, MoeWeightLayout::kNK}, false);
  check({4, 2, 8, 8, 5, MoeWeightLayout::kNK});
}

// The NK decode kernels serve each hit expert once for all its tokens (2 per pass, found 32
// pairs per ballot): experts shared by many tokens, more than 32 tokens, dead slots.
TEST(MoeCudaKernels, DecodePathSharedExpertsAndDeadSlots) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  PinPath decode("65535");
  for (auto layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
    check({4, 2, 264, 200, 13, layout});  // ~6 tokens per expert: several passes
    check({2, 1, 128, 40, 70, layout}, false);  // > 32 tokens per expert: several ballots
    check({1, 1, 64, 24, 9, layout}, false);   // every token to one expert
    // Slots with ids outside [0, E): the KN path gives them a zero row, the NK path skips them.
    check({6, 3, 136, 48, 11, layout}, false, [](std::vector<std::int32_t>& ids, std::int64_t E) {
      for (std::size_t q = 0; q < ids.size(); q += 4) ids[q] = q % 8 == 0 ? -1 : static_cast<std::int32_t>(E);
    });
  }
}

// Caller-given ids may repeat an expert within a token; wide top-k and the smallest sizes.
TEST(MoeCudaKernels, DecodePathRepeatedExpertWideTopKTinySizes) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  PinPath decode("65535");
  for (auto layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
    check({16, 4, 136, 48, 5, layout}, false, [](std::vector<std::int32_t>& ids, std::int64_t) {
      for (std::size_t q = 0; q + 1 < ids.size(); q += 4) ids[q + 1] = ids[q];  // slots 0 and 1 agree
    });
    check({128, 64, 256, 64, 1, layout}, false);  // k > 32
    check({96, 40, 64, 24, 2, layout}, false);    // k not a multiple of 8
    check({128, 96, 64, 16, 2, layout}, false);   // k > 64: a token spans two 64-pair windows
    check({512, 512, 64, 16, 1, layout}, false);  // k = E = 512: eight windows for one token
    check({8, 4, 64, 16, 12, layout}, false);     // 48-pair window: experts repeat across halves
    check({4, 2, 8, 8, 5, layout});               // H = I = 8
  }
}

TEST(MoeCudaKernels, GroupedPath) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  PinPath grouped("0");
  for (auto layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
    check({128, 8, 512, 768, 70, layout});
    check({7, 3, 200, 96, 257, layout});
    check({1, 1, 64, 32, 300, layout});
    check({64, 6, 264, 1408, 130, layout});
  }
}

// Softmax and sigmoid-grouped routing against an fp64 reference of the same rule.
// logits: T*E values, or empty for random ones. NaN logits count as -inf (moe.h).
void check_route(std::int64_t E, std::int64_t k, std::int64_t T, MoeRoutingMode mode, std::int64_t G, std::int64_t TG,
                 bool renorm, std::vector<float> logits = {}) {
  SCOPED_TRACE("route E=" + std::to_string(E) + " k=" + std::to_string(k));
  auto rng = make_rng();
  if (logits.empty()) logits = random_floats(rng, T * E, -4.f, 4.f);
  std::vector<float> bias = random_floats(rng, E, -0.3f, 0.3f);
  MoeConfig c;
  c.num_experts = E;
  c.top_k = k;
  c.max_tokens = T;
  c.routing.mode = mode;
  c.routing.num_groups = G;
  c.routing.topk_groups = TG;
  c.routing.norm = renorm ? MoeTopkNorm::kRenormalize : MoeTopkNorm::kNone;
  c.routing.routed_scaling_factor = 1.75f;
  DeviceBuffer dl = DeviceBuffer::from(logits), db = DeviceBuffer::from(bias), di(4 * T * k), dw(4 * T * k);
  di.poison();
  dw.poison();
  MoeRouterInput in;
  in.logits = TensorView::contiguous(dl.data(), DType::kF32, {T, E}, DeviceType::kCUDA, 0);
  if (mode == MoeRoutingMode::kSigmoidGroupedTopK) in.correction_bias = TensorView::contiguous(db.data(), DType::kF32, {E}, DeviceType::kCUDA, 0);
  MoeRouted out{TensorView::contiguous(di.data(), DType::kI32, {T, k}, DeviceType::kCUDA, 0),
                TensorView::contiguous(dw.data(), DType::kF32, {T, k}, DeviceType::kCUDA, 0)};
  ASSERT_TRUE(cuda_moe::route(c, in, out, nullptr).ok());
  const auto ids = di.to_host<std::int32_t>(T * k);
  const auto w = dw.to_host<float>(T * k);
  for (std::int64_t t = 0; t < T; ++t) {
    std::vector<float> row(logits.begin() + t * E, logits.begin() + (t + 1) * E);
    for (float& v : row) v = std::isnan(v) ? -INFINITY : v;
    const float* l = row.data();
    std::vector<double> score(E), sel(E);
    std::vector<bool> eligible(E, true);
    if (mode == MoeRoutingMode::kSoftmaxTopK) {
      const double mx = *std::max_element(l, l + E);
      double sum = 0;
      for (std::int64_t e = 0; e < E; ++e) sum += mx == -INFINITY ? 0.0 : std::exp(l[e] - mx);
      for (std::int64_t e = 0; e < E; ++e) score[e] = sum > 0 ? std::exp(l[e] - mx) / sum : 0.0, sel[e] = l[e];
    } else {
      for (std::int64_t e = 0; e < E; ++e) score[e] = 1.0 / (1.0 + std::exp(-double(l[e]))), sel[e] = score[e] + bias[e];
      const std::int64_t gs = E / G;
      std::vector<std::pair<double, std::int64_t>> gscore;
      for (std::int64_t g = 0; g < G; ++g) {
        std::vector<double> v(sel.begin() + g * gs, sel.begin() + (g + 1) * gs);
        std::sort(v.rbegin(), v.rend());
        gscore.push_back({gs == 1 ? v[0] : v[0] + v[1], g});
      }
      std::stable_sort(gscore.begin(), gscore.end(), [](auto a, auto b) { return a.first > b.first; });
      std::fill(eligible.begin(), eligible.end(), false);
      for (std::int64_t i = 0; i < TG; ++i)
        for (std::int64_t e = 0; e < gs; ++e) eligible[gscore[i].second * gs + e] = true;
    }
    std::vector<std::int64_t> order;
    for (std::int64_t e = 0; e < E; ++e)
      if (eligible[e]) order.push_back(e);
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return sel[a] > sel[b]; });
    double sum = 0;
    for (std::int64_t j = 0; j < k; ++j) sum += score[order[j]];
    for (std::int64_t j = 0; j < k; ++j) {
      ASSERT_EQ(ids[t * k + j], order[j]) << "t=" << t << " j=" << j;
      const double want = (renorm && sum > 0 ? score[order[j]] / sum : score[order[j]]) * 1.75;
      ASSERT_NEAR(w[t * k + j], want, 1e-5 * std::max(1.0, std::fabs(want))) << "t=" << t << " j=" << j;
    }
  }
}

TEST(MoeCudaKernels, Route) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  check_route(128, 8, 300, MoeRoutingMode::kSoftmaxTopK, 1, 1, true);
  check_route(512, 10, 100, MoeRoutingMode::kSoftmaxTopK, 1, 1, false);
  check_route(7, 3, 50, MoeRoutingMode::kSoftmaxTopK, 1, 1, true);
  check_route(256, 8, 300, MoeRoutingMode::kSigmoidGroupedTopK, 8, 4, true);
  check_route(64, 6, 100, MoeRoutingMode::kSigmoidGroupedTopK, 8, 3, false);
  check_route(16, 4, 100, MoeRoutingMode::kSigmoidGroupedTopK, 16, 4, true);
}

// Ties go to the lower expert, -0 ties with +0, NaN counts as -inf, a row of only -inf/NaN
// picks experts 0..k-1 with weight 0, and k > 32 wraps the warp's rescale loop.
TEST(MoeCudaKernels, RouteTiesSignedZeroNanAndWideTopK) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  const std::int64_t E = 64, T = 6;
  std::vector<float> l(T * E);
  for (std::int64_t e = 0; e < E; ++e) {
    l[0 * E + e] = static_cast<float>(e % 4);                          // 16-way ties at each value
    l[1 * E + e] = e % 2 ? -0.0f : 0.0f;                               // all zero, mixed signs
    l[2 * E + e] = -INFINITY;                                          // nothing finite
    l[3 * E + e] = std::nanf("");                                      // nothing but NaN
    l[4 * E + e] = e % 3 == 0 ? std::nanf("") : static_cast<float>(e % 5) - 2.f;  // NaN among ties
    l[5 * E + e] = static_cast<float>((e * 37) % 64) / 8.f;            // distinct values
  }
  for (std::int64_t k : {1, 8, 40, 64}) {
    check_route(E, k, T, MoeRoutingMode::kSoftmaxTopK, 1, 1, true, l);
    check_route(E, k, T, MoeRoutingMode::kSoftmaxTopK, 1, 1, false, l);
  }
}

// At one token decode gemm1 picks its experts from the logits (not the route kernel's ids).
// Its act rows, launched alone with poisoned ids, must be the bits of gemm1 on the route
// kernel's ids; and the layer from the logits the bits of the layer from those ids and weights
// and within the fp64 reference; on every logits pattern the route tests use (ties, -0/+0,
// NaN, nothing finite), every slot count (E <= 32, 128, 256), fp32 and bf16 logits, k 1..32.
TEST(MoeCudaKernels, DecodeGemm1PicksFromLogitsAtOneTokenSameBitsAsRouteIds) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  // The layer comparison below tests the picks only if forward takes them (no A/B knob set).
  unsetenv("FUSEKIT_MOE_DECODE_ROUTE");
  unsetenv("FUSEKIT_MOE_DECODE_MAX_PAIRS");
  auto rng = make_rng();
  struct Case { std::int64_t E, k, H, I; };
  int pattern = 0;
  for (const Case cs : {Case{128, 8, 256, 96}, Case{8, 2, 136, 48}, Case{7, 3, 64, 24}, Case{256, 32, 128, 64},
                        Case{32, 32, 64, 16}, Case{200, 1, 72, 40}, Case{128, 8, 2048, 768}}) {
    for (DType logits_type : {DType::kF32, DType::kBF16}) {
      for (bool renorm : {true, false}) {
        const std::int64_t E = cs.E, k = cs.k;
        ++pattern;
        SCOPED_TRACE("E=" + std::to_string(E) + " k=" + std::to_string(k) + " H=" + std::to_string(cs.H) +
                     " I=" + std::to_string(cs.I) + " pattern " + std::to_string(pattern % 6) +
                     (logits_type == DType::kBF16 ? " bf16 logits" : " fp32 logits"));
        Data d = make_data({E, k, cs.H, cs.I, 1, MoeWeightLayout::kNK}, rng);
        ASSERT_TRUE(cuda_moe::decode_gemm1_picks_from_logits(
            cuda_moe::forward_path(1, k, E, MoeWeightLayout::kNK, cuda_moe::GroupedKernels::kSm90), 1, k, E,
            MoeRoutingMode::kSoftmaxTopK));
        d.config.routing.norm = renorm ? MoeTopkNorm::kRenormalize : MoeTopkNorm::kNone;
        d.config.routing.routed_scaling_factor = 1.75f;
        std::vector<float> l = random_floats(rng, E, -4.f, 4.f);
        for (std::int64_t e = 0; e < E; ++e) {
          switch (pattern % 6) {
            case 1: l[e] = static_cast<float>(e % 4); break;         // ties
            case 2: l[e] = e % 2 ? -0.0f : 0.0f; break;             // all zero, mixed signs
            case 3: l[e] = e % 3 == 0 ? std::nanf("") : l[e]; break;  // NaN among values
            case 4: l[e] = -INFINITY; break;                        // nothing finite
            default: break;
          }
        }
        l = quantize(l, logits_type);
        DeviceBuffer dl = logits_type == DType::kF32 ? DeviceBuffer::from(l) : DeviceBuffer::from(to_bits(l, logits_type));
        MoeRouterInput router;
        router.logits = TensorView::contiguous(dl.data(), logits_type, {1, E}, DeviceType::kCUDA, 0);

        MoeLayer layer;
        layer.config = d.config;
        layer.weights.w1 = TensorView::contiguous(d.dw1.data(), DType::kBF16, {E, 2 * cs.I, cs.H}, DeviceType::kCUDA, 0);
        layer.weights.w2 = TensorView::contiguous(d.dw2.data(), DType::kBF16, {E, cs.H, cs.I}, DeviceType::kCUDA, 0);
        const TensorView x = TensorView::contiguous(d.dx.data(), DType::kBF16, {1, cs.H}, DeviceType::kCUDA, 0);
        DeviceBuffer ws(cuda_moe::workspace_size(d.config)), out_in(2 * cs.H), out_ids(2 * cs.H);
        ws.poison();
        out_in.poison();
        out_ids.poison();
        const MoeWorkspace w{ws.data(), ws.bytes()};
        ASSERT_TRUE(cuda_moe::forward(layer, x, &router, nullptr,
                                      TensorView::contiguous(out_in.data(), DType::kBF16, {1, cs.H}, DeviceType::kCUDA, 0),
                                      w, nullptr).ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

        DeviceBuffer di(4 * k), dw(4 * k);
        MoeRouted routed{TensorView::contiguous(di.data(), DType::kI32, {1, k}, DeviceType::kCUDA, 0),
                         TensorView::contiguous(dw.data(), DType::kF32, {1, k}, DeviceType::kCUDA, 0)};
        ASSERT_TRUE(cuda_moe::route(d.config, router, routed, nullptr).ok());

        // gemm1 alone, both ways.
        cuda_moe::DecodeLayerParams p;
        p.x = static_cast<const __nv_bfloat16*>(d.dx.data());
        p.x_row_stride = cs.H;
        p.w1 = static_cast<const __nv_bfloat16*>(d.dw1.data());
        p.w2 = static_cast<const __nv_bfloat16*>(d.dw2.data());
        p.tokens = 1;
        p.top_k = static_cast<int>(k);
        p.num_experts = static_cast<int>(E);
        p.hidden = cs.H;
        p.intermediate = cs.I;
        DeviceBuffer act_ids(2 * k * cs.I), act_picked(2 * k * cs.I), poisoned_ids(4 * k);
        act_ids.poison();
        act_picked.poison();
        poisoned_ids.poison();
        p.topk_ids = static_cast<const std::int32_t*>(di.data());
        p.act = static_cast<__nv_bfloat16*>(act_ids.data());
        ASSERT_TRUE(cuda_moe::launch_decode_gemm1_swiglu_nk_bf16(p, nullptr).ok());
        p.routing = cuda_moe::DecodeRouting::kGemm1PicksFromLogits;
        p.route = cuda_moe::route_params(d.config, router);
        p.topk_ids = static_cast<const std::int32_t*>(poisoned_ids.data());
        p.act = static_cast<__nv_bfloat16*>(act_picked.data());
        ASSERT_TRUE(cuda_moe::launch_decode_gemm1_swiglu_nk_bf16(p, nullptr).ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_EQ(act_ids.to_host<std::uint16_t>(k * cs.I), act_picked.to_host<std::uint16_t>(k * cs.I))
            << "gemm1's picks from the logits differ from the route kernel's ids";
        ASSERT_TRUE(cuda_moe::forward(layer, x, nullptr, &routed,
                                      TensorView::contiguous(out_ids.data(), DType::kBF16, {1, cs.H}, DeviceType::kCUDA, 0),
                                      w, nullptr).ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        const auto a = out_in.to_host<std::uint16_t>(cs.H), b = out_ids.to_host<std::uint16_t>(cs.H);
        EXPECT_EQ(a, b) << "the layer from the logits differs from the layer on the route kernel's ids and weights";

        d.ids = di.to_host<std::int32_t>(k);
        d.weights = dw.to_host<float>(k);
        const std::vector<float> got = from_bits(a, DType::kBF16);
        const std::vector<double> want = reference(d);
        if (pattern % 6 == 4) {
          // Nothing finite: every weight is 0, so the output is exactly 0.
          for (float v : got) ASSERT_EQ(v, 0.f);
        } else {
          EXPECT_TRUE(within(compare(got, want), 1e-2, 0.05)) << "layer from the logits vs fp64 reference";
        }
      }
    }
  }
}

// Picking from the logits outside its limits is an error before anything launches (no GPU needed).
TEST(MoeCudaKernels, DecodeGemm1PicksOutsideItsLimitsAreErrors) {
  float logits[4] = {};
  cuda_moe::DecodeLayerParams p;
  p.routing = cuda_moe::DecodeRouting::kGemm1PicksFromLogits;
  p.route.logits = logits;
  p.route.routing.mode = MoeRoutingMode::kSoftmaxTopK;
  p.hidden = 64;
  p.intermediate = 64;
  struct Bad { std::int64_t tokens; int k, E; bool logits; };
  for (const Bad b : {Bad{2, 2, 8, true}, Bad{1, 33, 64, true}, Bad{1, 8, 512, true}, Bad{1, 2, 8, false}}) {
    p.tokens = b.tokens;
    p.top_k = p.route.top_k = b.k;
    p.num_experts = p.route.num_experts = b.E;
    p.route.logits = b.logits ? logits : nullptr;
    const Status s = cuda_moe::launch_decode_gemm1_swiglu_nk_bf16(p, nullptr);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.to_string().find("picking experts from the logits needs one token"), std::string::npos) << s.to_string();
    EXPECT_NE(s.to_string().find("k=" + std::to_string(b.k)), std::string::npos) << s.to_string();
  }
  p.route.routing.mode = MoeRoutingMode::kSigmoidGroupedTopK;
  p.tokens = 1;
  p.top_k = p.route.top_k = 2;
  p.num_experts = p.route.num_experts = 8;
  p.route.logits = logits;
  EXPECT_FALSE(cuda_moe::launch_decode_gemm1_swiglu_nk_bf16(p, nullptr).ok());
}

TEST(MoeCudaKernelsSanitizer, Small) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  for (auto layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
    {
      PinPath decode("65535");
      check({7, 3, 200, 96, 2, layout}, false);
    }
    PinPath grouped("0");
    check({16, 4, 136, 48, 80, layout}, false);
  }
  check_route(64, 6, 20, MoeRoutingMode::kSigmoidGroupedTopK, 8, 3, true);
  check_route(7, 3, 20, MoeRoutingMode::kSoftmaxTopK, 1, 1, true);
}


// Not a correctness test: prints decode-GEMV vs grouped-GEMM times of the fused forward (on
// given ids) so the decode threshold can be chosen by measurement. Runs only when
// FUSEKIT_MOE_TIMING=1.
TEST(MoeCudaKernelsTiming, DecodeThreshold) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  if (!std::getenv("FUSEKIT_MOE_TIMING")) GTEST_SKIP() << "set FUSEKIT_MOE_TIMING=1";
  auto rng = make_rng();
  struct S { std::int64_t E, k, H, I; };
  for (const S s : {S{128, 8, 2048, 768}, S{8, 2, 4096, 14336}}) {
    const Data d = make_data({s.E, s.k, s.H, s.I, 4096, MoeWeightLayout::kNK}, rng);
    for (std::int64_t T : {1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096}) {
      const auto& c = d.config;
      DeviceBuffer ws(cuda_moe::workspace_size(c)), out(2 * T * s.H);
      MoeLayer layer;
      layer.config = c;
      layer.weights.w1 = TensorView::contiguous(d.dw1.data(), DType::kBF16, {s.E, 2 * s.I, s.H}, DeviceType::kCUDA, 0);
      layer.weights.w2 = TensorView::contiguous(d.dw2.data(), DType::kBF16, {s.E, s.H, s.I}, DeviceType::kCUDA, 0);
      const TensorView x = TensorView::contiguous(d.dx.data(), DType::kBF16, {T, s.H}, DeviceType::kCUDA, 0);
      const TensorView o = TensorView::contiguous(out.data(), DType::kBF16, {T, s.H}, DeviceType::kCUDA, 0);
      MoeRouted routed{TensorView::contiguous(d.dids.data(), DType::kI32, {T, s.k}, DeviceType::kCUDA, 0),
                       TensorView::contiguous(d.dweights.data(), DType::kF32, {T, s.k}, DeviceType::kCUDA, 0)};
      std::int64_t hit = 0;
      std::vector<bool> used(s.E, false);
      for (std::int64_t p = 0; p < T * s.k; ++p) hit += used[d.ids[p]] ? 0 : 1, used[d.ids[p]] = true;
      const double bytes = double(hit) * 3 * s.H * s.I * 2;
      const double flops = 2.0 * T * s.k * 3 * s.H * s.I;
      for (const char* limit : {"1000000", "0"}) {
        // The GEMV path reads each pair's expert once: past ~1K pairs it is hopeless, skip it.
        if (T * s.k > 1024 && limit[0] == '1') continue;
        setenv("FUSEKIT_MOE_DECODE_MAX_PAIRS", limit, 1);
        cudaEvent_t a, b;
        cudaEventCreate(&a);
        cudaEventCreate(&b);
        for (int i = 0; i < 3; ++i) (void)cuda_moe::forward(layer, x, nullptr, &routed, o, {ws.data(), ws.bytes()}, nullptr);
        const int iters = 20;
        cudaEventRecord(a);
        for (int i = 0; i < iters; ++i) (void)cuda_moe::forward(layer, x, nullptr, &routed, o, {ws.data(), ws.bytes()}, nullptr);
        cudaEventRecord(b);
        cudaEventSynchronize(b);
        float ms = 0;
        cudaEventElapsedTime(&ms, a, b);
        const double us = 1000.0 * ms / iters;
        std::printf("timing E=%ld k=%ld H=%ld I=%ld T=%5ld %-7s %9.1f us  %7.0f GB/s  %6.1f TFLOP/s\n", long(s.E), long(s.k),
                    long(s.H), long(s.I), long(T), limit[0] == '1' ? "decode" : "grouped", us, bytes / us / 1e3,
                    flops / us / 1e6);
        std::fflush(stdout);
        cudaEventDestroy(a);
        cudaEventDestroy(b);
      }
      unsetenv("FUSEKIT_MOE_DECODE_MAX_PAIRS");
    }
  }
}

}  // namespace
}  // namespace fusekit::testing

#endif  // FUSEKIT_WITH_CUDA
