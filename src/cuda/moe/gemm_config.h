// Tile and path choices of the `cuda` MoE backend: pure functions of the problem, in one place.
//
// block_m       rows of one align block = rows of one grouped-GEMM CTA tile. One value today
//               (64): the sm_80 mma.sync kernels are instantiated for it only (CI compiles every
//               instantiation for two architectures). A Hopper path may add its own.
// decode        few pairs (use_decode_path) run the no-sort GEMV path (one CTA row per (token,
//               slot) pair), which reads each pair's expert weights once per pair at full width.
// capacity      rows of sorted_token_ids for T tokens: every non-empty expert's run is padded
//               to block_m, and at most min(T*k, E) experts are non-empty.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "fusekit/moe.h"

namespace fusekit::cuda_moe {

constexpr std::int64_t kBlockM = 64;
// The GEMV path reads its expert once per pair; the grouped GEMM reads each hit expert once.
// So it pays while pairs rarely share an expert: pairs <= 64 and pairs <= E / 2 (always for a
// single token). Measured on H100 (docs/PERF_NOTES.md), eager, fused forward on given ids:
//   Qwen3-30B-A3B (E 128, k 8): GEMV faster through T = 8 (64 pairs: 201 vs 261 us sm_80
//     grouped, 207 vs 220 us sm_90 grouped); slower from T = 32.
//   Mixtral (E 8, k 2): GEMV faster at T = 1 (269 vs 312 us sm_90 grouped); at T = 2 it is
//     7% slower than sm_90 grouped but 30% faster than the sm_80 one; from T = 4 it loses.
constexpr std::int64_t kDecodeMaxPairs = 64;
inline std::int64_t block_m_for(const MoeConfig& /*config*/) { return kBlockM; }
inline bool block_m_supported(std::int64_t block_m) { return block_m == kBlockM; }

inline std::int64_t align_capacity_rows(std::int64_t tokens, std::int64_t top_k, std::int64_t num_experts,
                                        std::int64_t block_m) {
  const std::int64_t pairs = tokens * top_k;
  const std::int64_t rows = pairs + std::min(pairs, num_experts) * (block_m - 1);
  return (rows + block_m - 1) / block_m * block_m;
}

// FUSEKIT_MOE_DECODE_MAX_PAIRS=n replaces the rule by pairs <= n (for measuring it and for
// tests that pin a path; read per call). num_experts unknown (default) -> pairs <= 64 only.
inline bool use_decode_path(std::int64_t tokens, std::int64_t top_k, std::int64_t num_experts = 512) {
  const std::int64_t pairs = tokens * top_k;
  if (pairs > 65535) return false;  // the GEMV grids put pairs in gridDim.y
  if (const char* env = std::getenv("FUSEKIT_MOE_DECODE_MAX_PAIRS")) return pairs <= std::atoll(env);
  return pairs <= kDecodeMaxPairs && (pairs <= top_k || 2 * pairs <= num_experts);
}

}  // namespace fusekit::cuda_moe
