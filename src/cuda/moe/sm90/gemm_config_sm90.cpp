// The tile choice of the Hopper MoE path (ranges and reasons: gemm_config_sm90.h).
#include "cuda/moe/sm90/gemm_config_sm90.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "cuda/moe/print_config.h"

namespace fusekit::cuda_moe::sm90 {
namespace {

constexpr GemmTile kPingpong64x128 = GemmTile::kPingpong64x128;
constexpr GemmTile kCooperative128x128 = GemmTile::kCooperative128x128;
constexpr GemmTile kCooperative128x256 = GemmTile::kCooperative128x256;
constexpr GemmTile kPingpong64x256 = GemmTile::kPingpong64x256;
constexpr GemmTile kPingpong64x128k128 = GemmTile::kPingpong64x128k128;
constexpr GemmTile kStreamSwapAb = GemmTile::kStreamSwapAb;

const TunedEntry kTuned[] = {
#include "cuda/moe/sm90/tuned_configs_sm90_h100.inc"
#include "cuda/moe/sm90/tuned_configs_sm90_h200.inc"
    {"", 0, 0, 0, 0, 0, 0, 0, kPingpong64x128, kPingpong64x128},  // sentinel (never matches: E = 0)
};

GemmTile heuristic_tile(double rows_per_expert, MoeWeightLayout layout) {
  if (rows_per_expert <= kStreamSwapAbMaxRowsPerExpert && gemm_tile_supports(kStreamSwapAb, layout)) {
    return kStreamSwapAb;
  }
  if (rows_per_expert <= 48) return kPingpong64x128k128;
  if (rows_per_expert <= 384) return kPingpong64x256;
  return kCooperative128x256;
}

}  // namespace

Sm90MoeConfig heuristic_sm90_config(const MoeProblem& p) {
  const double m = p.experts > 0 ? double(p.tokens) * double(p.top_k) / double(p.experts) : 0.0;
  Sm90MoeConfig c;
  c.gemm1 = heuristic_tile(m, p.layout);
  c.gemm2 = heuristic_tile(m, p.layout);
  c.from_table = false;
  return c;
}

namespace {

Sm90MoeConfig choose_tiles(const MoeProblem& p) {
  if (p.device_name == nullptr) return heuristic_sm90_config(p);
  for (const TunedEntry& e : kTuned) {
    if (std::strcmp(e.device_name, p.device_name) == 0 && e.sm_count == p.sm_count && e.experts == p.experts &&
        e.top_k == p.top_k && e.hidden == p.hidden && e.intermediate == p.intermediate && p.tokens >= e.tokens_lo &&
        p.tokens <= e.tokens_hi) {
      // A tile the table names that cannot take p.layout (the table is tuned on NK) gives way to
      // the heuristic's, which never names one.
      Sm90MoeConfig c = heuristic_sm90_config(p);
      if (gemm_tile_supports(e.gemm1, p.layout)) c.gemm1 = e.gemm1;
      if (gemm_tile_supports(e.gemm2, p.layout)) c.gemm2 = e.gemm2;
      c.from_table = true;
      return c;
    }
  }
  return heuristic_sm90_config(p);
}

bool slices_fit(std::int64_t k, int splits) {
  return splits <= kMaxGemm2KSplits && k % (8 * splits) == 0 && k / splits >= kSplitKMinSliceK;
}

}  // namespace

Sm90MoeConfig choose_sm90_config(const MoeProblem& p) {
  Sm90MoeConfig c = choose_tiles(p);
  c.gemm2_k_splits = gemm2_k_splits(p, c.gemm2);
  return c;
}

int gemm2_max_k_splits(std::int64_t intermediate) { return slices_fit(intermediate, 2) ? 2 : 1; }

int gemm2_k_splits(const MoeProblem& p, GemmTile gemm2) {
  if (gemm2 == kStreamSwapAb) return 1;
  if (const char* env = std::getenv("FUSEKIT_MOE_GEMM2_K_SPLITS")) {
    const int pinned = std::atoi(env);
    return pinned == 2 && slices_fit(p.intermediate, 2) ? 2 : 1;
  }
  if (!slices_fit(p.intermediate, 2) || p.experts <= 0 || p.sm_count <= 0 || p.tokens <= 0) return 1;
  const double pairs = double(p.tokens) * double(p.top_k);
  const double rows_per_expert = pairs / double(p.experts);
  const int block_m = gemm_tile_block_m(gemm2);
  if (rows_per_expert < block_m) return 1;
  const double tiles = std::min(double(p.experts), pairs) * std::ceil(rows_per_expert / block_m) *
                       std::ceil(double(p.hidden) / gemm_tile_block_n(gemm2));
  const bool pingpong = gemm2 != kCooperative128x128 && gemm2 != kCooperative128x256;
  const double tiles_in_flight = double(p.sm_count) * (pingpong ? 2 : 1);
  return tiles < kSplitKMaxRounds * tiles_in_flight ? 2 : 1;
}

std::vector<TilePair> tuner_candidate_pairs(const GemmTile* tiles, const double* us1, const double* us2, int count,
                                            TilePair heuristic) {
  auto fastest = [&](const double* us) {
    std::vector<int> order(static_cast<std::size_t>(count));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return us[a] < us[b]; });
    if (order.size() > static_cast<std::size_t>(kTunerPairCandidates)) order.resize(kTunerPairCandidates);
    order.erase(std::remove_if(order.begin(), order.end(), [&](int t) { return !std::isfinite(us[t]); }), order.end());
    return order;
  };
  std::vector<TilePair> pairs = {heuristic};
  for (const int a : fastest(us1)) {
    for (const int b : fastest(us2)) {
      const TilePair pair{tiles[a], tiles[b]};
      if (pair.gemm2 == kStreamSwapAb && pair.gemm1 != kStreamSwapAb) continue;
      if (pair == heuristic) continue;
      pairs.push_back(pair);
    }
  }
  return pairs;
}

std::size_t tuner_pick_pair(const std::vector<double>& pair_us) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < pair_us.size(); ++i) {
    if (pair_us[i] < pair_us[best]) best = i;
  }
  return best > 0 && pair_us[best] <= (1.0 - kTunerMargin) * pair_us[0] ? best : 0;
}

std::string describe(const MoeProblem& p, const Sm90MoeConfig& c) {
  char buf[400];
  char splits[48] = "";
  if (c.gemm2_k_splits > 1) std::snprintf(splits, sizeof(splits), " split in %d along K", c.gemm2_k_splits);
  std::snprintf(buf, sizeof(buf), "moe sm90: E=%lld k=%lld H=%lld I=%lld T=%lld on %s (%d SMs) -> gemm1 %s, gemm2 %s%s (%s)",
                static_cast<long long>(p.experts), static_cast<long long>(p.top_k), static_cast<long long>(p.hidden),
                static_cast<long long>(p.intermediate), static_cast<long long>(p.tokens),
                p.device_name != nullptr ? p.device_name : "an unnamed device", p.sm_count,
                gemm_tile_name(c.gemm1), gemm_tile_name(c.gemm2), splits, c.from_table ? "tuned table" : "heuristic");
  return buf;
}

void maybe_print_config(const MoeProblem& p, const Sm90MoeConfig& c) {
  if (print_config_enabled()) print_config_once(describe(p, c));
}

}  // namespace fusekit::cuda_moe::sm90
