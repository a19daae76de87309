// align oracle: counting sort of the pairs by expert (stable in the pair index), each expert's
// run padded to block_m. Output format in fusekit/moe.h (MoeAlignment) and moe_ref.h.
#include <algorithm>

#include "cpu/moe_ref.h"

namespace fusekit::cpu {

void align_ref(std::int64_t E, const std::int32_t* ids, std::int64_t pairs, const AlignRef& out) {
  std::int64_t count[kMaxExperts] = {};
  for (std::int64_t p = 0; p < pairs; ++p) {
    const std::int32_t e = ids[p];
    if (e >= 0 && e < E) ++count[e];
  }
  const std::int64_t bm = out.block_m;
  std::int64_t cursor[kMaxExperts];
  std::int64_t at = 0;
  for (std::int64_t e = 0; e < E; ++e) {
    out.expert_offsets[e] = static_cast<std::int32_t>(at);
    cursor[e] = at;
    at += (count[e] + bm - 1) / bm * bm;
  }
  const std::int64_t total = at;
  out.expert_offsets[E] = static_cast<std::int32_t>(total);
  out.num_tokens_post_padded[0] = static_cast<std::int32_t>(total);

  const auto pad = static_cast<std::int32_t>(pairs);
  std::fill(out.sorted_token_ids, out.sorted_token_ids + out.capacity, pad);
  for (std::int64_t p = 0; p < pairs; ++p) {
    const std::int32_t e = ids[p];
    if (e >= 0 && e < E) out.sorted_token_ids[cursor[e]++] = static_cast<std::int32_t>(p);
  }
  const std::int64_t blocks = out.capacity / bm;
  std::fill(out.expert_ids, out.expert_ids + blocks, -1);
  for (std::int64_t e = 0; e < E; ++e) {
    for (std::int64_t b = out.expert_offsets[e] / bm; b < out.expert_offsets[e + 1] / bm; ++b) {
      out.expert_ids[b] = static_cast<std::int32_t>(e);
    }
  }
}

}  // namespace fusekit::cpu
