// Warp-level pieces shared by the two routing kernels: one warp owns one token; expert e sits
// in lane e % 32, slot e / 32 (E <= 512 -> 16 slots per lane).
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda/moe/kernels.h"

namespace fusekit::cuda_moe::route_detail {

constexpr int kMaxExperts = 512;
constexpr int kSlots = kMaxExperts / 32;
constexpr int kWarpsPerBlock = 4;

// NaN is treated as -inf for selection so that ids stay in [0, E) whatever the logits hold.
__device__ __forceinline__ float load_logit(const void* logits, LogitsType type, std::int64_t offset) {
  float v = type == LogitsType::kF32 ? static_cast<const float*>(logits)[offset]
                                     : __bfloat162float(static_cast<const __nv_bfloat16*>(logits)[offset]);
  return isnan(v) ? -INFINITY : v;
}

// (value, index) with "better" = larger value, then lower index; -1 index = nothing left.
struct Candidate {
  float value;
  int index;
};
__device__ __forceinline__ bool better(const Candidate& a, const Candidate& b) {
  if (b.index < 0) return a.index >= 0;
  if (a.index < 0) return false;
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}
__device__ __forceinline__ Candidate warp_best(Candidate c) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    Candidate o;
    o.value = __shfl_xor_sync(0xffffffffu, c.value, off);
    o.index = __shfl_xor_sync(0xffffffffu, c.index, off);
    if (better(o, c)) c = o;
  }
  return c;
}

// Picks k entries among the eligible ones of this lane's slots (value desc, index asc),
// writes ids and raw weights (weight_of(slot)) for slots j = 0..k-1, then rescales them:
// renormalised by their sum (taken in j order) if asked, times the routed scaling factor.
template <typename WeightOf>
__device__ __forceinline__ void select_topk(const float (&value)[kSlots], std::uint32_t eligible, int num_experts,
                                            int top_k, bool renormalize, float scaling, std::int32_t* ids,
                                            float* weights, WeightOf weight_of) {
  const int lane = threadIdx.x % 32;
  float sum = 0.f;
  for (int j = 0; j < top_k; ++j) {
    Candidate mine{-INFINITY, -1};
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int e = lane + 32 * s;
      if (e < num_experts && (eligible >> s & 1u)) {
        Candidate c{value[s], e};
        if (better(c, mine)) mine = c;
      }
    }
    const Candidate best = warp_best(mine);
    // best.index < 0 only if fewer than k experts are eligible, which the API rules out.
    const int chosen = best.index < 0 ? 0 : best.index;
    float w = 0.f;
    if (chosen % 32 == lane) {
      const int s = chosen / 32;
      eligible &= ~(1u << s);
      w = weight_of(s);
      ids[j] = chosen;
      weights[j] = w;
    }
    sum += __shfl_sync(0xffffffffu, w, chosen % 32);
  }
  __syncwarp();
  for (int j = lane; j < top_k; j += 32) {
    // Division first, then scaling: the order the CPU oracle uses.
    const float w = renormalize && sum > 0.f ? weights[j] / sum : weights[j];
    weights[j] = w * scaling;
  }
}

}  // namespace fusekit::cuda_moe::route_detail
