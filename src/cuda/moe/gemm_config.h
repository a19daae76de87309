// Tile and path choices of the `cuda` MoE backend: pure functions of the problem, in one place.
//
// block_m       rows of one align block = rows of one grouped-GEMM CTA tile. One value today
//               (64): the sm_80 mma.sync kernels are instantiated for it only (CI compiles every
//               instantiation for two architectures). A Hopper path may add its own.
// decode        few pairs (use_decode_path) run the no-sort decode kernels (no alignment); each
//               layout has its own decode kernels and its own measured bound.
// capacity      rows of sorted_token_ids for T tokens: every non-empty expert's run is padded
//               to block_m, and at most min(T*k, E) experts are non-empty.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fusekit/moe.h"

namespace fusekit::cuda_moe {

constexpr std::int64_t kBlockM = 64;
// Decode path, NK weights (decode_gemm{1_swiglu,2_finalize}_nk_bf16.cu): each hit expert is
// read once by gemm1 and once per 64-pair window by gemm2. Measured on H100 (docs/PERF_NOTES.md,
// "MoE decode path v2"), eager fused forward on given ids, decode vs sm_90 grouped:
//   Qwen3-30B-A3B (E 128, k 8): T=1 34.1 vs 59.8 us, T=2 64.3 vs 89.4, T=4 109.3 vs 131.3,
//     T=8 193.3 vs 210.2, T=16 326.4 vs 292.7 (decode loses past 64 pairs).
//   Mixtral (E 8, k 2): T=1 240.9 vs 288.2, T=2 467.2 vs 517.0, T=4 694.4 vs 521.6 (decode
//     loses once the experts repeat: more tokens than E / 2 pairs).
// Decode path, KN weights (decode_gemv_kn_bf16.cu): one GEMV per pair, expert read once per
// pair. Measured with the NK twin of that kernel (since replaced): Qwen3-30B-A3B faster than
// the grouped GEMMs through T = 8 (201 vs 261 us sm_80 grouped, 207 vs 220 us sm_90 grouped);
// Mixtral at T = 1 only (269 vs 312 us), at T = 2 7% slower than sm_90 grouped.
// So: pairs <= 64 and (one token, or pairs <= E / 2). NK since then (H200, layer bench with
// graph replay, docs/PERF_NOTES.md "MoE decode path v7"), Mixtral: T=3 (6 pairs on 8 experts)
// decode 349 vs grouped 398 us (re-tuned table); T=4 decode 458 (4 tokens per gemm1 sweep,
// decode_gemm1_tokens_per_pass) vs grouped 478; T=6 611 vs 602; T=8 777 vs 621. So NK decodes
// while pairs <= E; KN (a GEMV per pair, an expert read once per pair) keeps E / 2. The 64-pair
// bound is gemm2's (it reads W2 once per 64-pair window); at E >= 64 it decides for both.
constexpr std::int64_t kDecodeMaxPairs = 64;
inline std::int64_t block_m_for(const MoeConfig& /*config*/) { return kBlockM; }
inline bool block_m_supported(std::int64_t block_m) { return block_m == kBlockM; }

inline std::int64_t align_capacity_rows(std::int64_t tokens, std::int64_t top_k, std::int64_t num_experts,
                                        std::int64_t block_m) {
  const std::int64_t pairs = tokens * top_k;
  const std::int64_t rows = pairs + std::min(pairs, num_experts) * (block_m - 1);
  return (rows + block_m - 1) / block_m * block_m;
}

// The measured rule above: the path of every run without the FUSEKIT_MOE_DECODE_MAX_PAIRS pin.
inline bool decode_path_rule(std::int64_t tokens, std::int64_t top_k, std::int64_t num_experts,
                             MoeWeightLayout layout) {
  const std::int64_t pairs = tokens * top_k;
  const bool experts_rarely_repeat =
      layout == MoeWeightLayout::kNK ? pairs <= num_experts : 2 * pairs <= num_experts;
  return pairs <= kDecodeMaxPairs && (pairs <= top_k || experts_rarely_repeat);
}

// FUSEKIT_MOE_DECODE_MAX_PAIRS=n replaces the rule by pairs <= n (for measuring it and for
// tests that pin a path; read per call).
inline bool use_decode_path(std::int64_t tokens, std::int64_t top_k, std::int64_t num_experts,
                            MoeWeightLayout layout) {
  const std::int64_t pairs = tokens * top_k;
  if (pairs > 65535) return false;  // the decode grids put pairs in gridDim.y
  if (const char* env = std::getenv("FUSEKIT_MOE_DECODE_MAX_PAIRS")) return pairs <= std::atoll(env);
  return decode_path_rule(tokens, top_k, num_experts, layout);
}

// Whether some layout runs the grouped GEMMs at T, so that a row of the tuned Hopper tables
// (sm90/tuned_configs_sm90_*.inc) is read there and `fusekit tune moe` must time it; the tuner
// skips only a T that every layout decodes. The tables have no layout column, and the layouts
// leave the decode path at different T (NK past E pairs, KN past E / 2): at Mixtral T = 4 NK
// decodes and KN does not, and that row serves NK T = 5 and KN T = 3..5. By the rule, not
// FUSEKIT_MOE_DECODE_MAX_PAIRS: a committed table serves runs without the pin, so a pin left
// set while tuning must not drop rows.
inline bool grouped_path_serves(std::int64_t tokens, std::int64_t top_k, std::int64_t num_experts) {
  return !decode_path_rule(tokens, top_k, num_experts, MoeWeightLayout::kNK) ||
         !decode_path_rule(tokens, top_k, num_experts, MoeWeightLayout::kKN);
}

// The value of a measuring knob that pins one of two choices (read per call): a or b when the
// variable says so, else 0 (unset or another value: the rule decides).
inline int env_pin(const char* name, int a, int b) {
  const char* env = std::getenv(name);
  if (env == nullptr) return 0;
  const int v = std::atoi(env);
  return v == a || v == b ? v : 0;
}

// Columns per warp of decode gemm1 (NK): 4, or 3 where 4 leave the last wave of working CTAs
// mostly empty. Its CTAs are 8 warps, 2 per SM; the ones that work are one per (distinct
// expert, block of 8 x cols columns), the distinct experts estimated as min(pairs, E). Where 3
// columns fill the waves at least 0.15 better, the third more (smaller) CTAs pay; where both
// fill alike, 3 lose ~1% (fewer loads in flight per warp). H200 (docs/PERF_NOTES.md "MoE decode
// path v6"): Qwen3-30B-A3B T=1 (192 of 264 slots vs 256) -1.4%, T=2 -2.3%, T=4..8 +1.0%;
// Qwen3-235B-A22B T=1 -0.4%, T=2..8 +0.5%; Mixtral T=1..2 +-0.2%.
// FUSEKIT_MOE_DECODE_GEMM1_COLS=3 or 4 pins it (for measuring it and for tests; read per call),
// except where the launcher runs 4 tokens per pass (decode_gemm1_tokens_per_pass below): those
// always take 4 columns, the one instantiation of 4 tokens, so the pin is overridden there.
inline int decode_gemm1_cols_per_warp(std::int64_t pairs, std::int64_t num_experts, std::int64_t intermediate,
                                      int sm_count) {
  if (const int pinned = env_pin("FUSEKIT_MOE_DECODE_GEMM1_COLS", 3, 4)) return pinned;
  if (sm_count <= 0 || pairs <= 0 || intermediate <= 0) return 4;
  const std::int64_t experts = std::min(pairs, num_experts);
  const std::int64_t slots = 2 * static_cast<std::int64_t>(sm_count);
  auto fill = [&](std::int64_t cols) {
    const std::int64_t ctas = experts * ((intermediate + 8 * cols - 1) / (8 * cols));
    const std::int64_t waves = (ctas + slots - 1) / slots;
    return static_cast<double>(ctas) / static_cast<double>(waves * slots);
  };
  return fill(3) >= fill(4) + 0.15 ? 3 : 4;
}

// Tokens per sweep of decode gemm1 over an expert's rows: 2, or 4 where the batch's tokens
// repeat experts (at least E pairs, more than one token): an expert with more tokens than one
// sweep takes is read again (Mixtral's, 235 MB each, from DRAM). H200, Mixtral (decode path
// pinned): T=4 458 vs 480 us, T=6 611 vs 647, but T=3 (6 pairs) 354 vs 349: four hold 32 fp32
// partials per lane beside the 16 loads in flight (128 registers, 28 B spill).
// FUSEKIT_MOE_DECODE_GEMM1_TOKENS=2 or 4 pins it (for measuring it and for tests; read per call).
// The launcher (decode_gemm1_swiglu_nk_bf16.cu) takes 4 only with the route's ids: at T = 1 where
// gemm1 picks its experts from the logits (decode_gemm1_picks_from_logits) a pinned 4 is ignored
// and 2 run. Where 4 run, it takes 4 columns, over FUSEKIT_MOE_DECODE_GEMM1_COLS.
inline int decode_gemm1_tokens_per_pass(std::int64_t tokens, std::int64_t top_k, std::int64_t num_experts) {
  if (const int pinned = env_pin("FUSEKIT_MOE_DECODE_GEMM1_TOKENS", 2, 4)) return pinned;
  return tokens > 1 && tokens * top_k >= num_experts ? 4 : 2;
}

// The forward paths of the `cuda` backend (forward.cpp). The grouped kernels a device runs
// (sm90::prefill_enabled) decide between the last two.
enum class ForwardPath {
  kDecodeNK,         // route -> decode gemm1 + SwiGLU -> decode gemm2 x weight + top-k sum
  kDecodeKN,         // route -> per-pair GEMV gemm1 + SwiGLU -> per-pair GEMV gemm2 -> finalize
  kHopperGrouped,    // route -> count, scan, permute -> CUTLASS grouped GEMMs (sm90/) -> finalize
  kPortableGrouped,  // route -> align -> mma.sync grouped GEMMs (sm_80 kernels) -> finalize
};
enum class GroupedKernels { kSm80, kSm90 };

inline ForwardPath forward_path(std::int64_t tokens, std::int64_t top_k, std::int64_t num_experts,
                                MoeWeightLayout layout, GroupedKernels grouped) {
  if (use_decode_path(tokens, top_k, num_experts, layout)) {
    return layout == MoeWeightLayout::kNK ? ForwardPath::kDecodeNK : ForwardPath::kDecodeKN;
  }
  return grouped == GroupedKernels::kSm90 ? ForwardPath::kHopperGrouped : ForwardPath::kPortableGrouped;
}

// At one token, decode gemm1's warps pick their experts from the logits themselves instead of
// waiting for the route kernel's ids (which gemm2 still reads): when the logits are given (not
// precomputed ids) and routing is softmax top-k with k <= kDecodePicksMaxTopK (one warp's lanes)
// and E <= kDecodePicksMaxExperts (8 experts per lane; more spill). The launcher checks the same
// bounds (kernels.h check_decode_routing).
constexpr std::int64_t kDecodePicksMaxTopK = 32;
constexpr std::int64_t kDecodePicksMaxExperts = 256;
// FUSEKIT_MOE_DECODE_ROUTE=kernel makes gemm1 wait for the route's ids (for A/B timing).
inline bool decode_gemm1_picks_from_logits(ForwardPath path, std::int64_t tokens, std::int64_t top_k,
                                           std::int64_t num_experts, MoeRoutingMode mode) {
  if (path != ForwardPath::kDecodeNK || tokens != 1 || top_k > kDecodePicksMaxTopK ||
      num_experts > kDecodePicksMaxExperts) {
    return false;
  }
  if (mode != MoeRoutingMode::kSoftmaxTopK) return false;
  const char* env = std::getenv("FUSEKIT_MOE_DECODE_ROUTE");
  return env == nullptr || std::string(env) != "kernel";
}

inline const char* forward_path_name(ForwardPath path) {
  switch (path) {
    case ForwardPath::kDecodeNK:
      return "decode nk: route -> decode gemm1+swiglu (each hit expert read once) -> decode gemm2 x weight + top-k sum";
    case ForwardPath::kDecodeKN:
      return "decode kn: route -> gemv gemm1+swiglu per pair -> gemv gemm2 per pair -> finalize";
    case ForwardPath::kHopperGrouped:
      return "sm90 grouped: route -> count, scan, permute -> cutlass grouped gemm1 -> swiglu -> grouped gemm2 -> "
             "finalize";
    case ForwardPath::kPortableGrouped:
      return "sm80 grouped: route -> align -> grouped gemm1+swiglu -> grouped gemm2 -> finalize";
  }
  return "unknown";
}

// The FUSEKIT_PRINT_CONFIG line of a forward: the problem, then the path.
inline std::string describe_forward_path(std::int64_t tokens, std::int64_t top_k, std::int64_t num_experts,
                                         std::int64_t hidden, std::int64_t intermediate, ForwardPath path) {
  char buf[320];
  std::snprintf(buf, sizeof(buf), "moe forward: E=%lld k=%lld H=%lld I=%lld T=%lld pairs=%lld -> %s",
                static_cast<long long>(num_experts), static_cast<long long>(top_k), static_cast<long long>(hidden),
                static_cast<long long>(intermediate), static_cast<long long>(tokens),
                static_cast<long long>(tokens * top_k), forward_path_name(path));
  return buf;
}

}  // namespace fusekit::cuda_moe
