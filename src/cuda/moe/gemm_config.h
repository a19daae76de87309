// Tile and path choices of the `cuda` MoE backend: pure functions of the problem, in one place.
//
// block_m       rows of one align block = rows of one grouped-GEMM CTA tile. One value today
//               (64): the sm_80 mma.sync kernels are instantiated for it only (CI compiles every
//               instantiation for two architectures). A Hopper path may add its own.
// decode        T*top_k <= kDecodeMaxPairs runs the no-sort GEMV path (one CTA row per (token,
//               slot) pair), which reads each hit expert's weights once per pair at full width.
// capacity      rows of sorted_token_ids for T tokens: every non-empty expert's run is padded
//               to block_m, and at most min(T*k, E) experts are non-empty.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "fusekit/moe.h"

namespace fusekit::cuda_moe {

constexpr std::int64_t kBlockM = 64;
// Chosen on H100 (Qwen3-30B-A3B, Mixtral shapes): the GEMV path wins while every pair reads
// its own expert's weights anyway; above this the grouped GEMM shares weight tiles across pairs.
constexpr std::int64_t kDecodeMaxPairs = 64;

inline std::int64_t block_m_for(const MoeConfig& /*config*/) { return kBlockM; }
inline bool block_m_supported(std::int64_t block_m) { return block_m == kBlockM; }

inline std::int64_t align_capacity_rows(std::int64_t tokens, std::int64_t top_k, std::int64_t num_experts,
                                        std::int64_t block_m) {
  const std::int64_t pairs = tokens * top_k;
  const std::int64_t rows = pairs + std::min(pairs, num_experts) * (block_m - 1);
  return (rows + block_m - 1) / block_m * block_m;
}

// FUSEKIT_MOE_DECODE_MAX_PAIRS overrides the threshold (for measuring it; read per call).
inline bool use_decode_path(std::int64_t tokens, std::int64_t top_k) {
  std::int64_t limit = kDecodeMaxPairs;
  if (const char* env = std::getenv("FUSEKIT_MOE_DECODE_MAX_PAIRS")) limit = std::atoll(env);
  return tokens * top_k <= limit && tokens * top_k <= 65535;
}

}  // namespace fusekit::cuda_moe
