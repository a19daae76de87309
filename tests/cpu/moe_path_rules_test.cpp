// The `cuda` backend's path choice (src/cuda/moe/gemm_config.h) is a pure host function whose
// bounds come from H100 measurements (docs/PERF_NOTES.md); these tests pin the documented
// bounds so that a change to them is deliberate. Host-only: no GPU needed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "cuda/moe/gemm_config.h"

namespace fusekit::testing {
namespace {

using cuda_moe::use_decode_path;

struct ClearDecodeOverride {
  ClearDecodeOverride() { unsetenv("FUSEKIT_MOE_DECODE_MAX_PAIRS"); }
  ~ClearDecodeOverride() { unsetenv("FUSEKIT_MOE_DECODE_MAX_PAIRS"); }
};

TEST(MoePathRules, DecodeServesUpTo64PairsWhenExpertsRarelyRepeatInEitherLayout) {
  ClearDecodeOverride clear;
  // Qwen3-30B-A3B / Qwen3-235B-A22B: E 128, k 8.
  for (MoeWeightLayout layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
    EXPECT_TRUE(use_decode_path(1, 8, 128, layout));
    EXPECT_TRUE(use_decode_path(4, 8, 128, layout));
    EXPECT_TRUE(use_decode_path(8, 8, 128, layout));    // measured: decode 193.3 vs grouped 210.2 us
    EXPECT_FALSE(use_decode_path(9, 8, 128, layout));   // 72 pairs
    EXPECT_FALSE(use_decode_path(16, 8, 128, layout));  // measured: decode 326.4 vs grouped 292.7 us
    // Mixtral: E 8, k 2.
    EXPECT_TRUE(use_decode_path(1, 2, 8, layout));
    EXPECT_TRUE(use_decode_path(2, 2, 8, layout));
    EXPECT_FALSE(use_decode_path(5, 2, 8, layout));
    // A single token always decodes, even when k > E / 2.
    EXPECT_TRUE(use_decode_path(1, 6, 8, layout));
  }
  // Mixtral T = 3 and 4: NK decodes while pairs <= E (H200: T=3 decode 349 vs grouped 398 us,
  // T=4 458 vs 478); KN's GEMV reads an expert once per pair and keeps pairs <= E / 2.
  EXPECT_TRUE(use_decode_path(3, 2, 8, MoeWeightLayout::kNK));
  EXPECT_TRUE(use_decode_path(4, 2, 8, MoeWeightLayout::kNK));
  EXPECT_FALSE(use_decode_path(3, 2, 8, MoeWeightLayout::kKN));
  // E = 64, k = 6: the 64-pair bound (gemm2's window) decides for NK, E / 2 for KN.
  EXPECT_TRUE(use_decode_path(10, 6, 64, MoeWeightLayout::kNK));
  EXPECT_FALSE(use_decode_path(11, 6, 64, MoeWeightLayout::kNK));
  EXPECT_TRUE(use_decode_path(5, 6, 64, MoeWeightLayout::kKN));
  EXPECT_FALSE(use_decode_path(6, 6, 64, MoeWeightLayout::kKN));
}

// The tuner times a T wherever either layout reads its table row (the tables have no layout
// column): Mixtral T = 3..4 decode in NK but not in KN, so their row is tuned.
TEST(MoePathRules, TunedRowsAreNeededWhereEitherLayoutRunsGrouped) {
  ClearDecodeOverride clear;
  using cuda_moe::grouped_path_serves;
  EXPECT_FALSE(grouped_path_serves(1, 2, 8));
  EXPECT_FALSE(grouped_path_serves(2, 2, 8));  // 4 pairs: both decode
  EXPECT_TRUE(grouped_path_serves(3, 2, 8));   // NK decodes, KN runs grouped
  EXPECT_TRUE(use_decode_path(4, 2, 8, MoeWeightLayout::kNK));
  EXPECT_TRUE(grouped_path_serves(4, 2, 8));
  EXPECT_TRUE(grouped_path_serves(5, 2, 8));   // grouped in both
  EXPECT_FALSE(grouped_path_serves(8, 8, 128));  // Qwen shapes: 64 pairs decode in both
  EXPECT_TRUE(grouped_path_serves(9, 8, 128));
  EXPECT_TRUE(grouped_path_serves(10, 6, 64));   // NK decodes (60 pairs <= 64 experts), KN does not
  EXPECT_FALSE(grouped_path_serves(5, 6, 64));   // 30 pairs: both decode
}

// The tuned rows serve runs without the measuring pin, so a pin left set while tuning changes
// nothing the tuner times.
TEST(MoePathRules, TunedRowsFollowTheRuleNotTheDecodePin) {
  ClearDecodeOverride clear;
  using cuda_moe::grouped_path_serves;
  setenv("FUSEKIT_MOE_DECODE_MAX_PAIRS", "65535", 1);
  EXPECT_TRUE(use_decode_path(4, 2, 8, MoeWeightLayout::kKN));  // the pin decodes there, the rule does not
  EXPECT_TRUE(grouped_path_serves(4, 2, 8));
  EXPECT_TRUE(grouped_path_serves(16, 8, 128));
  setenv("FUSEKIT_MOE_DECODE_MAX_PAIRS", "0", 1);
  EXPECT_FALSE(grouped_path_serves(2, 2, 8));
  EXPECT_FALSE(grouped_path_serves(1, 8, 128));
}

TEST(MoePathRules, EnvironmentOverridePinsAPathButNotPastTheGridLimit) {
  ClearDecodeOverride clear;
  setenv("FUSEKIT_MOE_DECODE_MAX_PAIRS", "0", 1);
  EXPECT_FALSE(use_decode_path(1, 8, 128, MoeWeightLayout::kNK));
  setenv("FUSEKIT_MOE_DECODE_MAX_PAIRS", "1000000", 1);
  EXPECT_TRUE(use_decode_path(1000, 8, 128, MoeWeightLayout::kNK));
  EXPECT_FALSE(use_decode_path(65536, 1, 128, MoeWeightLayout::kKN));  // pairs live in gridDim.y (<= 65535)
}

// Decode gemm1 sweeps 4 tokens of an expert at a time only where tokens repeat experts.
TEST(MoePathRules, DecodeGemm1SweepsFourTokensOnlyWhereTokensRepeatExperts) {
  using cuda_moe::decode_gemm1_tokens_per_pass;
  unsetenv("FUSEKIT_MOE_DECODE_GEMM1_TOKENS");
  EXPECT_EQ(decode_gemm1_tokens_per_pass(1, 8, 128), 2);
  EXPECT_EQ(decode_gemm1_tokens_per_pass(8, 8, 128), 2);  // 64 pairs on 128 experts
  EXPECT_EQ(decode_gemm1_tokens_per_pass(1, 2, 8), 2);    // one token: every expert once
  EXPECT_EQ(decode_gemm1_tokens_per_pass(1, 6, 8), 2);
  EXPECT_EQ(decode_gemm1_tokens_per_pass(2, 2, 8), 2);    // 4 pairs on 8 experts
  EXPECT_EQ(decode_gemm1_tokens_per_pass(3, 2, 8), 2);    // Mixtral T = 3: 354 vs 349 us with 4
  EXPECT_EQ(decode_gemm1_tokens_per_pass(4, 2, 8), 4);    // Mixtral T = 4: 458 vs 480 us
  setenv("FUSEKIT_MOE_DECODE_GEMM1_TOKENS", "2", 1);
  EXPECT_EQ(decode_gemm1_tokens_per_pass(4, 2, 8), 2);
  setenv("FUSEKIT_MOE_DECODE_GEMM1_TOKENS", "4", 1);
  EXPECT_EQ(decode_gemm1_tokens_per_pass(1, 8, 128), 4);
  unsetenv("FUSEKIT_MOE_DECODE_GEMM1_TOKENS");
}

// Decode gemm1 takes 3 columns per warp only where 4 leave the last wave of working CTAs
// mostly empty (2 CTAs per SM): the H200 A/B's winners and losers (docs/PERF_NOTES.md v6).
TEST(MoePathRules, DecodeGemm1TakesThreeColumnsOnlyWhereFourLeaveAWaveMostlyEmpty) {
  using cuda_moe::decode_gemm1_cols_per_warp;
  unsetenv("FUSEKIT_MOE_DECODE_GEMM1_COLS");
  // Qwen3-30B-A3B (E 128, I 768) on 132 SMs: T=1 192 CTAs of 264 slots vs 256; T=2 384 vs 512.
  EXPECT_EQ(3, decode_gemm1_cols_per_warp(8, 128, 768, 132));
  EXPECT_EQ(3, decode_gemm1_cols_per_warp(16, 128, 768, 132));
  EXPECT_EQ(4, decode_gemm1_cols_per_warp(32, 128, 768, 132));  // 768 CTAs: 97% of 3 waves
  EXPECT_EQ(4, decode_gemm1_cols_per_warp(64, 128, 768, 132));
  // Qwen3-235B-A22B (I 1536): T=1 384 CTAs (1.45 waves) vs 512 (1.94); T=2 768 (2.9 waves).
  EXPECT_EQ(3, decode_gemm1_cols_per_warp(8, 128, 1536, 132));
  EXPECT_EQ(4, decode_gemm1_cols_per_warp(16, 128, 1536, 132));
  // Mixtral (E 8, k 2, I 14336): 896 CTAs (85% of 4 waves) vs 1196 (91% of 5): too close.
  EXPECT_EQ(4, decode_gemm1_cols_per_warp(2, 8, 14336, 132));
  EXPECT_EQ(4, decode_gemm1_cols_per_warp(4, 8, 14336, 132));
  // Unknown SM count, or nothing to do: the default.
  EXPECT_EQ(4, decode_gemm1_cols_per_warp(8, 128, 768, 0));
  EXPECT_EQ(4, decode_gemm1_cols_per_warp(0, 128, 768, 132));
  setenv("FUSEKIT_MOE_DECODE_GEMM1_COLS", "4", 1);
  EXPECT_EQ(4, decode_gemm1_cols_per_warp(8, 128, 768, 132));
  setenv("FUSEKIT_MOE_DECODE_GEMM1_COLS", "3", 1);
  EXPECT_EQ(3, decode_gemm1_cols_per_warp(64, 128, 768, 132));
  setenv("FUSEKIT_MOE_DECODE_GEMM1_COLS", "5", 1);  // not a supported value: the rule
  EXPECT_EQ(4, decode_gemm1_cols_per_warp(64, 128, 768, 132));
  unsetenv("FUSEKIT_MOE_DECODE_GEMM1_COLS");
}

TEST(MoePathRules, ForwardPathFollowsTheDecodeRuleThenTheDevicesGroupedKernels) {
  ClearDecodeOverride clear;
  using cuda_moe::ForwardPath;
  using cuda_moe::forward_path;
  using cuda_moe::GroupedKernels;
  const auto nk = MoeWeightLayout::kNK, kn = MoeWeightLayout::kKN;
  EXPECT_EQ(forward_path(1, 8, 128, nk, GroupedKernels::kSm90), ForwardPath::kDecodeNK);
  EXPECT_EQ(forward_path(1, 8, 128, kn, GroupedKernels::kSm90), ForwardPath::kDecodeKN);
  EXPECT_EQ(forward_path(16, 8, 128, nk, GroupedKernels::kSm90), ForwardPath::kHopperGrouped);
  EXPECT_EQ(forward_path(16, 8, 128, nk, GroupedKernels::kSm80), ForwardPath::kPortableGrouped);
  EXPECT_EQ(forward_path(5, 2, 8, nk, GroupedKernels::kSm80), ForwardPath::kPortableGrouped);
  EXPECT_EQ(forward_path(3, 2, 8, nk, GroupedKernels::kSm90), ForwardPath::kDecodeNK);
  EXPECT_EQ(forward_path(3, 2, 8, kn, GroupedKernels::kSm90), ForwardPath::kHopperGrouped);
  EXPECT_EQ(forward_path(5, 2, 8, nk, GroupedKernels::kSm90), ForwardPath::kHopperGrouped);
}

TEST(MoePathRules, PrintedConfigLineNamesTheProblemAndEveryStageOfThePath) {
  using cuda_moe::ForwardPath;
  const std::string line = cuda_moe::describe_forward_path(1, 8, 128, 2048, 768, ForwardPath::kDecodeNK);
  EXPECT_EQ(line.rfind("moe forward: E=128 k=8 H=2048 I=768 T=1 pairs=8 -> decode nk: route -> decode gemm1", 0), 0u)
      << line;
  EXPECT_NE(line.find("top-k sum"), std::string::npos) << line;
  for (ForwardPath p : {ForwardPath::kDecodeNK, ForwardPath::kDecodeKN, ForwardPath::kHopperGrouped,
                        ForwardPath::kPortableGrouped}) {
    const std::string name = cuda_moe::forward_path_name(p);
    EXPECT_NE(name.find("route"), std::string::npos) << name;
    EXPECT_NE(name.find("gemm2"), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace fusekit::testing
