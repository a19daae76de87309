// The Hopper MoE path (src/cuda/moe/sm90/moe_sm90.h: count -> scan -> permute -> grouped gemm1
// -> swiglu -> grouped gemm2 -> weighted finalize) on given top-k ids, against an fp64
// reference of the layer written here. Odd shapes, both layouts, every tile, an empty
// expert, all pairs on one expert, slots with invalid ids (contribute nothing), output
// poisoned with NaN, padded output rows; a CUDA-graph replay is bit-identical to eager and
// two eager runs are bit-identical (deterministic). Skips without an sm_90 GPU or CUTLASS.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "support/test_support.h"

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>

#include "support/sm90_tile_params.h"

#include "cuda/moe/sm90/moe_sm90.h"

namespace fusekit::testing {
namespace {

using cuda_moe::sm90::GemmTile;

#define SKIP_WITHOUT_SM90()                                                                          \
  do {                                                                                               \
    FUSEKIT_SKIP_WITHOUT_GPU();                                                                      \
    if (!cuda_moe::sm90::sm90_grouped_gemm_available(0)) GTEST_SKIP() << "no sm_90 GPU or no CUTLASS"; \
  } while (0)

enum class Routing { kRandom, kOneExpertEmpty, kAllOnOneExpert, kSomeInvalid };

struct Problem {
  std::int64_t E, k, H, I, T;
  MoeWeightLayout layout;
  Routing routing;
  GemmTile tile;
  std::int64_t x_pad = 0;  // x rows H + x_pad elements apart; the pad is NaN
};

float weight_at(const std::vector<float>& w, MoeWeightLayout layout, std::int64_t e, std::int64_t n, std::int64_t kk,
                std::int64_t N, std::int64_t K) {
  return layout == MoeWeightLayout::kNK ? w[(e * N + n) * K + kk] : w[(e * K + kk) * N + n];
}

struct LayerRun {
  std::vector<float> out;
  std::vector<std::uint16_t> out_bits;
};

class Sm90Experts {
 public:
  explicit Sm90Experts(const Problem& p) : p_(p) {
    auto rng = make_rng();
    const std::int64_t E = p.E, k = p.k, H = p.H, I = p.I, T = p.T;
    x_ = quantize(random_floats(rng, T * H), DType::kBF16);
    w1_ = quantize(random_floats(rng, E * 2 * I * H, -1.f / std::sqrt(float(H)), 1.f / std::sqrt(float(H))),
                   DType::kBF16);
    w2_ = quantize(random_floats(rng, E * H * I, -1.f / std::sqrt(float(I)), 1.f / std::sqrt(float(I))), DType::kBF16);
    std::vector<std::int32_t> perm(E);
    for (std::int64_t t = 0; t < T; ++t) {
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      for (std::int64_t j = 0; j < k; ++j) {
        std::int32_t e = perm[j];
        if (p.routing == Routing::kOneExpertEmpty && E > k && e == 1) e = perm[k];  // expert 1 never chosen
        if (p.routing == Routing::kAllOnOneExpert) e = static_cast<std::int32_t>(E / 2);
        if (p.routing == Routing::kSomeInvalid && (t * k + j) % 5 == 2) e = (t % 2) ? -1 : static_cast<std::int32_t>(E);
        ids_.push_back(e);
      }
    }
    weights_ = random_floats(rng, T * k, 0.05f, 1.f);
  }

  std::vector<double> reference() const {
    const std::int64_t k = p_.k, H = p_.H, I = p_.I, T = p_.T;
    std::vector<double> out(T * H, 0.0);
    std::vector<float> act(I);
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int64_t e = ids_[t * k + j];
        if (e < 0 || e >= p_.E) continue;
        for (std::int64_t i = 0; i < I; ++i) {
          double g = 0, u = 0;
          for (std::int64_t h = 0; h < H; ++h) {
            g += double(x_[t * H + h]) * weight_at(w1_, p_.layout, e, i, h, 2 * I, H);
            u += double(x_[t * H + h]) * weight_at(w1_, p_.layout, e, I + i, h, 2 * I, H);
          }
          act[i] = quantize({static_cast<float>(g / (1.0 + std::exp(-g)) * u)}, DType::kBF16)[0];
        }
        for (std::int64_t h = 0; h < H; ++h) {
          double y = 0;
          for (std::int64_t i = 0; i < I; ++i) y += double(act[i]) * weight_at(w2_, p_.layout, e, h, i, H, I);
          out[t * H + h] += double(weights_[t * k + j]) * y;
        }
      }
    }
    return out;
  }

  // Runs experts_forward on `stream`; with `graph`, captures it once and replays it twice.
  LayerRun run(bool graph) {
    const std::int64_t E = p_.E, k = p_.k, H = p_.H, I = p_.I, T = p_.T;
    const std::int64_t pairs = T * k;
    const std::int64_t out_stride = H + 8;  // padded output rows: only the first H are written
    const std::int64_t x_stride = H + p_.x_pad;
    const std::vector<std::uint16_t> x_bits = to_bits(x_, DType::kBF16);
    std::vector<std::uint16_t> x_padded(static_cast<std::size_t>(T * x_stride), 0xFFFF);
    for (std::int64_t t = 0; t < T; ++t) std::copy_n(x_bits.begin() + t * H, H, x_padded.begin() + t * x_stride);
    DeviceBuffer dx = DeviceBuffer::from(x_padded);
    DeviceBuffer dw1 = DeviceBuffer::from(to_bits(w1_, DType::kBF16));
    DeviceBuffer dw2 = DeviceBuffer::from(to_bits(w2_, DType::kBF16));
    DeviceBuffer dids = DeviceBuffer::from(ids_);
    DeviceBuffer dweights = DeviceBuffer::from(weights_);
    DeviceBuffer out(T * out_stride * 2);
    out.poison();
    MoeConfig cfg;
    cfg.num_experts = E;
    cfg.top_k = k;
    cfg.hidden = H;
    cfg.intermediate = I;
    cfg.max_tokens = T;
    DeviceBuffer ws(cuda_moe::sm90::experts_workspace_size(pairs, cfg));
    ws.poison();

    cuda_moe::sm90::ExpertsArgs a;
    a.x = static_cast<const __nv_bfloat16*>(dx.data());
    a.x_row_stride = x_stride;
    a.w1 = static_cast<const __nv_bfloat16*>(dw1.data());
    a.w2 = static_cast<const __nv_bfloat16*>(dw2.data());
    a.layout = p_.layout;
    a.topk_ids = static_cast<const std::int32_t*>(dids.data());
    a.topk_weights = static_cast<const float*>(dweights.data());
    a.out = static_cast<__nv_bfloat16*>(out.data());
    a.out_row_stride = out_stride;
    a.tokens = T;
    a.top_k = static_cast<int>(k);
    a.num_experts = static_cast<int>(E);
    a.hidden = H;
    a.intermediate = I;
    a.config.gemm1 = p_.tile;
    a.config.gemm2 = p_.tile;
    a.workspace = ws.data();
    a.workspace_bytes = ws.bytes();

    cudaStream_t stream;
    EXPECT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    auto launch = [&]() { return cuda_moe::sm90::experts_forward(a, stream); };
    if (graph) {
      const CapturedGraph g(stream, launch);
      EXPECT_TRUE(g.error().empty()) << g.error();
      for (int rep = 0; rep < 2; ++rep) EXPECT_TRUE(g.replay()) << "replay " << rep;
    } else {
      const Status s = launch();
      EXPECT_TRUE(s.ok()) << s.to_string();
      EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    }
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    cudaStreamDestroy(stream);

    const std::vector<std::uint16_t> bits = out.to_host<std::uint16_t>(T * out_stride);
    LayerRun r;
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t h = 0; h < out_stride; ++h) {
        const std::uint16_t b = bits[t * out_stride + h];
        if (h < H) {
          r.out_bits.push_back(b);
        } else {
          EXPECT_EQ(b, 0xFFFF) << "padding column " << h << " of row " << t << " was written";
        }
      }
    }
    r.out = from_bits(r.out_bits, DType::kBF16);
    return r;
  }

 private:
  Problem p_;
  std::vector<float> x_, w1_, w2_, weights_;
  std::vector<std::int32_t> ids_;
};

void check(const Problem& p, bool also_graph) {
  Sm90Experts layer(p);
  const std::vector<double> ref = layer.reference();
  const LayerRun eager = layer.run(false);
  double ref_max = 0;
  for (double v : ref) ref_max = std::max(ref_max, std::fabs(v));
  EXPECT_TRUE(within(compare(eager.out, ref), 1e-2, ref_max / 32 + 1e-3));
  const LayerRun again = layer.run(false);
  EXPECT_EQ(again.out_bits, eager.out_bits) << "two eager runs differ (not deterministic)";
  if (also_graph) {
    const LayerRun replay = layer.run(true);
    EXPECT_EQ(replay.out_bits, eager.out_bits) << "graph replay differs from eager";
  }
}

class Sm90ExpertsTest : public ::testing::TestWithParam<std::tuple<GemmTile, MoeWeightLayout>> {};

TEST_P(Sm90ExpertsTest, OddShapeRandomRouting) {
  SKIP_WITHOUT_SM90();
  const auto [tile, layout] = GetParam();
  check({7, 3, 200, 96, 257, layout, Routing::kRandom, tile},
        tile == GemmTile::kPingpong64x128 || tile == GemmTile::kStreamSwapAb);
}

TEST_P(Sm90ExpertsTest, EmptyExpertAndInvalidIds) {
  SKIP_WITHOUT_SM90();
  const auto [tile, layout] = GetParam();
  check({16, 4, 136, 40, 70, layout, Routing::kOneExpertEmpty, tile}, false);
  check({16, 4, 136, 40, 70, layout, Routing::kSomeInvalid, tile}, false);
}

TEST_P(Sm90ExpertsTest, AllPairsOnOneExpert) {
  SKIP_WITHOUT_SM90();
  const auto [tile, layout] = GetParam();
  check({8, 2, 64, 32, 300, layout, Routing::kAllOnOneExpert, tile}, false);
}

INSTANTIATE_TEST_SUITE_P(Tiles, Sm90ExpertsTest, ::testing::ValuesIn(supported_tile_layouts()), tile_layout_name);

TEST_P(Sm90ExpertsTest, FewTokens) {
  SKIP_WITHOUT_SM90();
  const auto [tile, layout] = GetParam();
  check({8, 2, 128, 64, 3, layout, Routing::kRandom, tile}, false);
  check({5, 5, 64, 40, 1, layout, Routing::kRandom, tile}, false);
}

// A model shape (Qwen3-30B-A3B experts) at a prefill size just above the decode threshold.
TEST(Sm90Experts, Qwen3MoeShape) {
  SKIP_WITHOUT_SM90();
  check({128, 8, 2048, 768, 24, MoeWeightLayout::kNK, Routing::kRandom, GemmTile::kPingpong64x128}, true);
  check({128, 8, 2048, 768, 24, MoeWeightLayout::kNK, Routing::kRandom, GemmTile::kStreamSwapAb}, true);
}

// Host only: every tile has its own name, and the M x N the name states is the block the
// dispatcher and the split-K rule compute with (kStreamSwapAb: 32 rows of a group per pass,
// 256 weight rows). A tile added to the enum (and so to kGemmTiles, which the header checks)
// without its name or block shape fails here.
TEST(Sm90Config, EveryTileNamesItsBlockShape) {
  std::vector<std::string> names;
  for (GemmTile t : cuda_moe::sm90::kGemmTiles) {
    const std::string name = cuda_moe::sm90::gemm_tile_name(t);
    EXPECT_EQ(std::count(names.begin(), names.end(), name), 0) << name << " twice";
    names.push_back(name);
    if (t == GemmTile::kStreamSwapAb) {
      EXPECT_EQ(cuda_moe::sm90::gemm_tile_block_m(t), 32);
      EXPECT_EQ(cuda_moe::sm90::gemm_tile_block_n(t), 256);
      continue;
    }
    // "<schedule>_<M>x<N>x<K>_c<cluster>"
    const std::size_t at = name.find('_') + 1, x = name.find('x', at);
    ASSERT_NE(x, std::string::npos) << name;
    const int m = std::atoi(name.c_str() + at), n = std::atoi(name.c_str() + x + 1);
    EXPECT_EQ(cuda_moe::sm90::gemm_tile_block_m(t), m) << name;
    EXPECT_EQ(cuda_moe::sm90::gemm_tile_block_n(t), n) << name;
    EXPECT_TRUE(cuda_moe::sm90::gemm_tile_supports(t, MoeWeightLayout::kNK)) << name;
    EXPECT_TRUE(cuda_moe::sm90::gemm_tile_supports(t, MoeWeightLayout::kKN)) << name << ": every CUTLASS tile takes KN";
  }
}

// The tile choice (host only): the swapped-operand tile takes NK weights only, so a layer with
// KN weights never gets it, from the tuned table (tuned on NK) or the heuristic; NK layers get it
// from the heuristic at a few rows per expert.
TEST(Sm90Config, KnWeightsNeverGetTheNkOnlyTile) {
  using cuda_moe::sm90::MoeProblem;
  const std::int64_t shapes[][4] = {{128, 8, 2048, 768}, {128, 8, 4096, 1536}, {8, 2, 4096, 14336}, {64, 4, 1024, 512}};
  for (const auto& s : shapes) {
    for (std::int64_t T : {1, 16, 32, 64, 256, 1024, 16384}) {
      for (int sms : {132, 114}) {
        const MoeProblem kn{s[0], s[1], s[2], s[3], T, sms, MoeWeightLayout::kKN, "NVIDIA H100 80GB HBM3"};
        const cuda_moe::sm90::Sm90MoeConfig c = cuda_moe::sm90::choose_sm90_config(kn);
        EXPECT_TRUE(cuda_moe::sm90::gemm_tile_supports(c.gemm1, MoeWeightLayout::kKN)) << s[0] << " T=" << T;
        EXPECT_TRUE(cuda_moe::sm90::gemm_tile_supports(c.gemm2, MoeWeightLayout::kKN)) << s[0] << " T=" << T;
      }
    }
  }
  const MoeProblem few{64, 4, 1024, 512, 32, 100, MoeWeightLayout::kNK};  // 2 rows per expert, no table entry
  EXPECT_EQ(cuda_moe::sm90::heuristic_sm90_config(few).gemm1, GemmTile::kStreamSwapAb);
  MoeProblem few_kn = few;
  few_kn.layout = MoeWeightLayout::kKN;
  EXPECT_EQ(cuda_moe::sm90::heuristic_sm90_config(few_kn).gemm1, GemmTile::kPingpong64x128k128);
}

// The tuner's rule (fusekit tune moe): which tile pairs it times in layer order, and which it
// keeps. Host only.
TEST(Sm90Config, TunerTimesTheFastestPairsAndKeepsTheHeuristicsWithinItsMargin) {
  using cuda_moe::sm90::TilePair;
  const GemmTile tiles[] = {GemmTile::kPingpong64x128, GemmTile::kCooperative128x128, GemmTile::kCooperative128x256,
                            GemmTile::kPingpong64x256, GemmTile::kPingpong64x128k128, GemmTile::kStreamSwapAb};
  const double inf = std::numeric_limits<double>::infinity();
  // gemm1: swap-AB fastest, then 64x256, then 64x128x128; gemm2: swap-AB, 128x128, 64x256.
  const double us1[] = {120, 130, 140, 101, 102, 100};
  const double us2[] = {60, 52, 70, 53, 61, 50};
  const TilePair heuristic{GemmTile::kPingpong64x128, GemmTile::kPingpong64x128};
  const std::vector<TilePair> pairs = cuda_moe::sm90::tuner_candidate_pairs(tiles, us1, us2, 6, heuristic);
  ASSERT_FALSE(pairs.empty());
  EXPECT_EQ(pairs.front(), heuristic);
  // 3 x 3 fastest, minus the two CUTLASS gemm1 + swap-AB gemm2 pairs: 7, plus the heuristic's.
  EXPECT_EQ(pairs.size(), 8u);
  for (std::size_t i = 1; i < pairs.size(); ++i) {
    EXPECT_FALSE(pairs[i] == heuristic) << "the heuristic's pair twice";
    EXPECT_FALSE(pairs[i].gemm2 == GemmTile::kStreamSwapAb && pairs[i].gemm1 != GemmTile::kStreamSwapAb)
        << "a swap-AB gemm2 after a CUTLASS gemm1";
    EXPECT_NE(pairs[i].gemm1, GemmTile::kCooperative128x256) << "not among gemm1's 3 fastest";
  }
  // Tiles not timed (infinite) are never candidates, even when fewer than 3 remain.
  const double only_two[] = {inf, inf, inf, 101, 102, inf};
  const std::vector<TilePair> few = cuda_moe::sm90::tuner_candidate_pairs(tiles, only_two, only_two, 6, heuristic);
  EXPECT_EQ(few.size(), 5u);  // the heuristic's + 2 x 2
  for (const TilePair& p : few) EXPECT_NE(p.gemm1, GemmTile::kStreamSwapAb);

  // The fastest pair replaces the heuristic's only when faster by more than kTunerMargin.
  const std::vector<TilePair> three = {heuristic,
                                       {GemmTile::kPingpong64x256, GemmTile::kPingpong64x256},
                                       {GemmTile::kPingpong64x128k128, GemmTile::kPingpong64x128k128}};
  EXPECT_EQ(three[cuda_moe::sm90::tuner_pick_pair({100.0, 98.0, 99.0})], heuristic);
  EXPECT_EQ(three[cuda_moe::sm90::tuner_pick_pair({100.0, 99.0, 96.0})], three[2]);
  EXPECT_EQ(three[cuda_moe::sm90::tuner_pick_pair({100.0, 90.0, 96.0})], three[1]);
}

// The tuned tables are per card: the H100 SXM and the H200 have the same 132 SMs but not the
// same picks (the H200 tuner moved Qwen3-235B-A22B T=64 from 64x128x128 to 64x256), so a row
// holds only for the device name it was tuned on; another name, or none, gets the heuristic.
TEST(Sm90Config, TunedRowsHoldForTheirCardOnly) {
  using cuda_moe::sm90::MoeProblem;
  using cuda_moe::sm90::choose_sm90_config;
  MoeProblem p{128, 8, 4096, 1536, 64, 132, MoeWeightLayout::kNK, "NVIDIA H100 80GB HBM3"};
  const cuda_moe::sm90::Sm90MoeConfig h100 = choose_sm90_config(p);
  EXPECT_TRUE(h100.from_table);
  EXPECT_EQ(h100.gemm1, GemmTile::kPingpong64x128k128);
  p.device_name = "NVIDIA H200";
  const cuda_moe::sm90::Sm90MoeConfig h200 = choose_sm90_config(p);
  EXPECT_TRUE(h200.from_table);
  EXPECT_EQ(h200.gemm1, GemmTile::kPingpong64x256);
  for (const char* other : {"NVIDIA H20", "NVIDIA H200 NVL", "", static_cast<const char*>(nullptr)}) {
    p.device_name = other;
    const cuda_moe::sm90::Sm90MoeConfig c = choose_sm90_config(p);
    EXPECT_FALSE(c.from_table) << (other != nullptr ? other : "nullptr");
    EXPECT_EQ(c.gemm1, cuda_moe::sm90::heuristic_sm90_config(p).gemm1);
  }
  // Same name, another SM count (a partitioned or cut-down part): the heuristic.
  p.device_name = "NVIDIA H200";
  p.sm_count = 114;
  EXPECT_FALSE(choose_sm90_config(p).from_table);
  // The description names the card the choice was made for.
  EXPECT_NE(cuda_moe::sm90::describe(p, choose_sm90_config(p)).find("NVIDIA H200 (114 SMs)"), std::string::npos);
}

// GEMM2's split in K (gemm2_k_splits): 2 slices or none, each slice kSplitKMinSliceK deep or
// more, never for the swap-AB tile or below a tile of rows per expert; 2 only where the tiles
// make fewer than kSplitKMaxRounds rounds of the tiles in flight. The measured Mixtral rows
// (H200, gemm_config_sm90.h) on the tiles the table names there. The pin gives way where its
// slices do not fit. Host only.
TEST(Sm90Config, Gemm2SplitsInKOnlyWhereTheSlicesFitAndTheTilesAreFew) {
  using cuda_moe::sm90::gemm2_k_splits;
  using cuda_moe::sm90::gemm2_max_k_splits;
  using cuda_moe::sm90::MoeProblem;
  unsetenv("FUSEKIT_MOE_GEMM2_K_SPLITS");
  EXPECT_EQ(gemm2_max_k_splits(768), 1);     // Qwen3-30B-A3B
  EXPECT_EQ(gemm2_max_k_splits(1536), 1);    // Qwen3-235B-A22B
  EXPECT_EQ(gemm2_max_k_splits(4096), 2);    // two slices of 2048
  EXPECT_EQ(gemm2_max_k_splits(4088), 1);    // too thin
  EXPECT_EQ(gemm2_max_k_splits(8200), 1);    // 8200 % 16 != 0
  EXPECT_EQ(gemm2_max_k_splits(14336), 2);   // Mixtral
  auto mixtral_at = [](std::int64_t T) { return MoeProblem{8, 2, 4096, 14336, T, 132, MoeWeightLayout::kNK, nullptr}; };
  EXPECT_EQ(gemm2_k_splits(mixtral_at(16), GemmTile::kPingpong64x256), 1);       // 4 rows per expert
  EXPECT_EQ(gemm2_k_splits(mixtral_at(64), GemmTile::kPingpong64x128k128), 1);   // 16
  EXPECT_EQ(gemm2_k_splits(mixtral_at(256), GemmTile::kPingpong64x256), 2);      // 128 tiles
  EXPECT_EQ(gemm2_k_splits(mixtral_at(512), GemmTile::kPingpong64x256), 2);      // 256
  EXPECT_EQ(gemm2_k_splits(mixtral_at(1024), GemmTile::kPingpong64x256), 2);     // 512 < 2 x 264
  EXPECT_EQ(gemm2_k_splits(mixtral_at(2048), GemmTile::kCooperative128x256), 1); // 512 >= 2 x 132
  EXPECT_EQ(gemm2_k_splits(mixtral_at(2048), GemmTile::kPingpong64x256), 1);     // 1024
  EXPECT_EQ(gemm2_k_splits(mixtral_at(4096), GemmTile::kPingpong64x256), 1);
  EXPECT_EQ(gemm2_k_splits(mixtral_at(1024), GemmTile::kStreamSwapAb), 1);
  // The tuned H200 table's tiles: split at T = 256..1024 only.
  for (std::int64_t T : {1, 8, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}) {
    MoeProblem p = mixtral_at(T);
    p.device_name = "NVIDIA H200";
    EXPECT_EQ(cuda_moe::sm90::choose_sm90_config(p).gemm2_k_splits, T >= 256 && T <= 1024 ? 2 : 1) << "T=" << T;
  }
  // The Qwen shapes' K cannot be split.
  const GemmTile tiles[] = {GemmTile::kPingpong64x128, GemmTile::kCooperative128x128, GemmTile::kCooperative128x256,
                            GemmTile::kPingpong64x256, GemmTile::kPingpong64x128k128, GemmTile::kPingpong128x128};
  for (std::int64_t I : {768, 1536}) {
    for (std::int64_t T : {1, 64, 1024, 16384}) {
      for (GemmTile tile : tiles) {
        EXPECT_EQ(gemm2_k_splits(MoeProblem{128, 8, 4096, I, T, 132, MoeWeightLayout::kNK, nullptr}, tile), 1);
      }
    }
  }
  // The pin: 2 where two slices fit, on every CUTLASS tile; otherwise unsplit.
  const MoeProblem qwen{128, 8, 2048, 768, 1024, 132, MoeWeightLayout::kNK, nullptr};
  setenv("FUSEKIT_MOE_GEMM2_K_SPLITS", "2", 1);
  EXPECT_EQ(gemm2_k_splits(mixtral_at(16), GemmTile::kCooperative128x256), 2);
  EXPECT_EQ(gemm2_k_splits(qwen, GemmTile::kPingpong64x256), 1);
  EXPECT_EQ(gemm2_k_splits(mixtral_at(1024), GemmTile::kStreamSwapAb), 1);
  const cuda_moe::sm90::Sm90MoeConfig c = cuda_moe::sm90::choose_sm90_config(mixtral_at(4096));
  EXPECT_EQ(c.gemm2_k_splits, 2);
  EXPECT_NE(cuda_moe::sm90::describe(mixtral_at(4096), c).find("split in 2 along K"), std::string::npos)
      << cuda_moe::sm90::describe(mixtral_at(4096), c);
  for (const char* pin : {"1", "3", "4", "0", "-2", "x"}) {
    setenv("FUSEKIT_MOE_GEMM2_K_SPLITS", pin, 1);
    EXPECT_EQ(gemm2_k_splits(mixtral_at(1024), GemmTile::kPingpong64x256), 1) << pin;
  }
  unsetenv("FUSEKIT_MOE_GEMM2_K_SPLITS");
}

// Which layers get W1 interleaved (SwiGLU in GEMM1's epilogue) by moe_prepared_config: on the
// H200 every shape (measured there on Mixtral, I = 14336), on other cards up to I = 4096 (the
// H100's measurement). Host only.
TEST(Sm90Config, SwigluInGemm1PaysEverywhereOnTheH200AndUpToI4096Elsewhere) {
  using cuda_moe::sm90::swiglu_in_gemm1_pays;
  for (std::int64_t I : {768, 1536, 4096, 14336}) EXPECT_TRUE(swiglu_in_gemm1_pays(I, "NVIDIA H200")) << I;
  for (const char* other : {"NVIDIA H100 80GB HBM3", "NVIDIA H200 NVL", "", static_cast<const char*>(nullptr)}) {
    const std::string name = other != nullptr ? other : "nullptr";
    EXPECT_TRUE(swiglu_in_gemm1_pays(768, other)) << name;
    EXPECT_TRUE(swiglu_in_gemm1_pays(4096, other)) << name;
    EXPECT_FALSE(swiglu_in_gemm1_pays(4104, other)) << name;
    EXPECT_FALSE(swiglu_in_gemm1_pays(14336, other)) << name;
  }
}

// The swap-AB gemm1 reads x's rows itself where the count + scan places the pairs (one CTA, at
// most kOneBlockMaxPairs pairs); FUSEKIT_MOE_GATHER_X=0 keeps the permute. Both give the same
// bits (same kernels, same rows), on packed and padded x, next to the reference; above the
// one-CTA bound the permute runs either way.
TEST(Sm90Experts, Gemm1GatheringXGivesThePermutedBits) {
  SKIP_WITHOUT_SM90();
  const std::int64_t max_pairs = cuda_moe::sm90::kOneBlockMaxPairs;
  for (const Problem& p : {Problem{128, 8, 2048, 768, 16, MoeWeightLayout::kNK, Routing::kRandom, GemmTile::kStreamSwapAb, 64},
                           Problem{16, 4, 136, 40, 70, MoeWeightLayout::kNK, Routing::kSomeInvalid, GemmTile::kStreamSwapAb, 24},
                           Problem{16, 4, 64, 32, max_pairs / 4 + 3, MoeWeightLayout::kNK, Routing::kRandom,
                                   GemmTile::kStreamSwapAb, 8}}) {
    SCOPED_TRACE("E=" + std::to_string(p.E) + " T=" + std::to_string(p.T) + " x_pad=" + std::to_string(p.x_pad));
    Sm90Experts layer(p);
    const LayerRun gathered = layer.run(false);
    LayerRun permuted;
    {
      ScopedEnv permute("FUSEKIT_MOE_GATHER_X", "0");
      permuted = layer.run(false);
    }
    EXPECT_EQ(gathered.out_bits, permuted.out_bits);
    const std::vector<double> ref = layer.reference();
    double ref_max = 0;
    for (double v : ref) ref_max = std::max(ref_max, std::fabs(v));
    EXPECT_TRUE(within(compare(gathered.out, ref), 1e-2, ref_max / 32 + 1e-3));
  }
}

// count + scan (launch_align_count_scan) on both of its sides: one CTA up to kOneBlockMaxPairs
// pairs, memset + multi-CTA count + scan above. Counts and offsets against a CPU histogram; the
// ranks of each expert a permutation of 0..count-1 (their order comes from atomics); -1 for ids
// outside [0, E). Outputs poisoned first: the one-CTA side must not need zeroed counts.
TEST(Sm90Align, CountScanGivesHistogramOffsetsAndRanks) {
  SKIP_WITHOUT_SM90();
  auto rng = make_rng();
  const std::int64_t max_pairs = cuda_moe::sm90::kOneBlockMaxPairs;
  for (int E : {8, 128, 512}) {
    for (std::int64_t pairs : std::initializer_list<std::int64_t>{1, 33, max_pairs - 1, max_pairs, max_pairs + 1, 8192, 32767, 32768, 40000, 300001}) {
      SCOPED_TRACE("E=" + std::to_string(E) + " pairs=" + std::to_string(pairs));
      // Skewed ids (a third on expert 1) plus a few outside [0, E).
      std::uniform_int_distribution<int> pick(0, E - 1), which(0, 99);
      std::vector<std::int32_t> ids(static_cast<std::size_t>(pairs));
      for (auto& id : ids) {
        const int w = which(rng);
        id = w < 3 ? (w == 0 ? -1 : E + w) : w < 36 ? std::min(1, E - 1) : pick(rng);
      }
      DeviceBuffer d_ids = DeviceBuffer::from(ids), d_counts(4 * E), d_rank(4 * pairs), d_offsets(4 * (E + 1));
      DeviceBuffer d_inv(4 * pairs), d_tokens(4 * pairs);
      d_counts.poison();
      d_rank.poison();
      d_offsets.poison();
      d_inv.poison();
      d_tokens.poison();
      cuda_moe::sm90::CountPairsParams cp;
      cp.topk_ids = static_cast<const std::int32_t*>(d_ids.data());
      cp.pairs = pairs;
      cp.num_experts = E;
      cp.counts = static_cast<std::int32_t*>(d_counts.data());
      cp.rank = static_cast<std::int32_t*>(d_rank.data());
      // Placement (inv, each slot's token) where one CTA runs; above, asking for it is an error.
      const bool one_block = pairs <= max_pairs;
      ASSERT_EQ(cuda_moe::sm90::align_count_scan_in_one_block(pairs), one_block);
      const int top_k = 3;
      cp.inv = static_cast<std::int32_t*>(d_inv.data());
      cp.sorted_tokens = static_cast<std::int32_t*>(d_tokens.data());
      cp.top_k = top_k;
      if (!one_block) {
        const Status refused =
            cuda_moe::sm90::launch_align_count_scan(cp, static_cast<std::int32_t*>(d_offsets.data()), nullptr);
        EXPECT_EQ(refused.code(), StatusCode::kInvalidArgument);
        EXPECT_NE(refused.message().find("pairs are placed in one CTA only"), std::string::npos) << refused.message();
        cp.inv = nullptr;
        cp.sorted_tokens = nullptr;
      }
      const Status s =
          cuda_moe::sm90::launch_align_count_scan(cp, static_cast<std::int32_t*>(d_offsets.data()), nullptr);
      ASSERT_TRUE(s.ok()) << s.to_string();
      FUSEKIT_ASSERT_CUDA(cudaDeviceSynchronize());
      const auto counts = d_counts.to_host<std::int32_t>(E), rank = d_rank.to_host<std::int32_t>(pairs),
                 offsets = d_offsets.to_host<std::int32_t>(E + 1);
      std::vector<std::int32_t> want(E, 0);
      for (std::int32_t id : ids) {
        if (id >= 0 && id < E) ++want[id];
      }
      ASSERT_EQ(counts, want);
      std::int32_t run = 0;
      for (int e = 0; e < E; ++e) {
        ASSERT_EQ(offsets[e], run) << "e=" << e;
        run += want[e];
      }
      ASSERT_EQ(offsets[E], run);
      std::vector<std::vector<char>> seen(E);
      for (int e = 0; e < E; ++e) seen[e].assign(static_cast<std::size_t>(want[e]), 0);
      for (std::int64_t p = 0; p < pairs; ++p) {
        const std::int32_t id = ids[p], r = rank[p];
        if (id < 0 || id >= E) {
          ASSERT_EQ(r, -1) << "p=" << p;
          continue;
        }
        ASSERT_TRUE(r >= 0 && r < want[id]) << "p=" << p << " rank " << r;
        ASSERT_FALSE(seen[id][r]) << "rank " << r << " twice in expert " << id;
        seen[id][r] = 1;
      }
      if (one_block) {
        const auto inv = d_inv.to_host<std::int32_t>(pairs), tokens = d_tokens.to_host<std::int32_t>(pairs);
        for (std::int64_t p = 0; p < pairs; ++p) {
          const std::int32_t id = ids[p];
          if (id < 0 || id >= E) continue;
          ASSERT_EQ(inv[p], offsets[id] + rank[p]) << "p=" << p;
          ASSERT_EQ(tokens[inv[p]], p / top_k) << "p=" << p;
        }
      }
    }
  }
}

}  // namespace
}  // namespace fusekit::testing
#endif  // FUSEKIT_WITH_CUDA
