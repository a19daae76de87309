// How the `cuda` backend carves the caller's workspace: one layout for every T <= max_tokens,
// each region 256-byte aligned. A pure function of the config (workspace_size and forward
// both call it), so a captured forward replays for any T up to the maximum.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/moe/gemm_config.h"
#include "fusekit/moe.h"

namespace fusekit::cuda_moe {

struct WorkspaceLayout {
  std::size_t topk_ids = 0;        // int32 [max_T * k]
  std::size_t topk_weights = 0;    // fp32  [max_T * k]
  std::size_t sorted_token_ids = 0;  // int32 [capacity(max_T)]
  std::size_t expert_ids = 0;      // int32 [capacity / block_m]
  std::size_t expert_offsets = 0;  // int32 [E + 1]
  std::size_t num_tokens_post_padded = 0;  // int32 [1]
  std::size_t act = 0;             // bf16  [capacity, I] (decode path: [T*k, I])
  std::size_t y = 0;               // bf16  [max_T * k, H]
  std::size_t total = 0;
  std::int64_t block_m = 0;
  std::int64_t capacity = 0;
};

inline WorkspaceLayout workspace_layout(const MoeConfig& c) {
  WorkspaceLayout l;
  l.block_m = block_m_for(c);
  const std::int64_t pairs = c.max_tokens * c.top_k;
  l.capacity = align_capacity_rows(c.max_tokens, c.top_k, c.num_experts, l.block_m);
  std::size_t at = 0;
  auto take = [&at](std::size_t bytes) {
    const std::size_t here = at;
    at += (bytes + 255) / 256 * 256;
    return here;
  };
  l.topk_ids = take(sizeof(std::int32_t) * pairs);
  l.topk_weights = take(sizeof(float) * pairs);
  l.sorted_token_ids = take(sizeof(std::int32_t) * l.capacity);
  l.expert_ids = take(sizeof(std::int32_t) * (l.capacity / l.block_m));
  l.expert_offsets = take(sizeof(std::int32_t) * (c.num_experts + 1));
  l.num_tokens_post_padded = take(sizeof(std::int32_t));
  l.act = take(2 * static_cast<std::size_t>(l.capacity) * c.intermediate);
  l.y = take(2 * static_cast<std::size_t>(pairs) * c.hidden);
  l.total = at;
  return l;
}

}  // namespace fusekit::cuda_moe
