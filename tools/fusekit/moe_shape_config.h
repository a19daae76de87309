// The MoeConfig of a model shape, where the MoE commands (bench moe, bench moe-ep, tune moe)
// start theirs: E experts, top-k, hidden H, intermediate I, up to max_tokens tokens; every other
// field keeps MoeConfig's default for the command to set.
#pragma once

#include <cstdint>

#include "fusekit/moe.h"

namespace fusekit::bench {

inline MoeConfig moe_config_of_shape(std::int64_t experts, std::int64_t top_k, std::int64_t hidden,
                                     std::int64_t intermediate, std::int64_t max_tokens) {
  MoeConfig config;
  config.num_experts = experts;
  config.top_k = top_k;
  config.hidden = hidden;
  config.intermediate = intermediate;
  config.max_tokens = max_tokens;
  return config;
}

}  // namespace fusekit::bench
