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
// Used by the group selection of the sigmoid route (G <= 512 groups, a few rounds).
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

// A non-NaN float as an unsigned key with the same order (larger value -> larger key); -0 is
// folded into +0 so that they tie, as the CPU oracle's comparison has them. Every real value,
// -inf included, maps above 0, which therefore means "no candidate".
__device__ __forceinline__ std::uint32_t order_key(float v) {
  if (v == 0.f) v = 0.f;
  const std::uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Picks k entries among the eligible ones of this lane's slots (value desc, index asc),
// writes ids and raw weights (weight_of(slot)) for slots j = 0..k-1, then rescales them:
// renormalised by their sum (taken in j order) if asked, times the routed scaling factor.
// Each round is two warp reductions (redux.sync: max key, then min index among the lanes
// holding it) and a rescan of the winning lane's own slots; every slot index is a compile-time
// constant, so value[] and weight_of stay in registers (a runtime index would put them in
// local memory: the old shuffle-tree version cost ~1 us per extra round, 10 us at E = 128, k = 8).
template <int kSlotsT, typename WeightOf>
__device__ __forceinline__ void select_topk(const float (&value)[kSlotsT], std::uint32_t eligible, int top_k,
                                            bool renormalize, float scaling, std::int32_t* ids, float* weights,
                                            WeightOf weight_of) {
  const int lane = threadIdx.x % 32;
  std::uint32_t key = 0;
  int slot = -1;
  auto rescan = [&]() {
    key = 0;
    slot = -1;
#pragma unroll
    for (int s = 0; s < kSlotsT; ++s) {
      const std::uint32_t ks = order_key(value[s]);
      // Strict '>' keeps the lower slot, i.e. the lower expert index, on ties.
      if ((eligible >> s & 1u) && ks > key) {
        key = ks;
        slot = s;
      }
    }
  };
  rescan();
  constexpr int kNone = 0x7fffffff;
  float sum = 0.f;
  for (int j = 0; j < top_k; ++j) {
    const std::uint32_t best_key = __reduce_max_sync(0xffffffffu, key);
    const int mine = (slot >= 0 && key == best_key) ? lane + 32 * slot : kNone;
    const int found = __reduce_min_sync(0xffffffffu, mine);
    // found == kNone only if fewer than k experts are eligible, which the API rules out.
    const int chosen = found == kNone ? 0 : found;
    float w = 0.f;
    if (found != kNone && chosen % 32 == lane) {
#pragma unroll
      for (int s = 0; s < kSlotsT; ++s) {
        if (s == slot) w = weight_of(s);
      }
      eligible &= ~(1u << slot);
      rescan();
    }
    w = __shfl_sync(0xffffffffu, w, chosen % 32);
    if (lane == 0) {
      ids[j] = chosen;
      weights[j] = w;
    }
    sum += w;
  }
  __syncwarp();
  for (int j = lane; j < top_k; j += 32) {
    // Division first, then scaling: the order the CPU oracle uses.
    const float w = renormalize && sum > 0.f ? weights[j] / sum : weights[j];
    weights[j] = w * scaling;
  }
}

}  // namespace fusekit::cuda_moe::route_detail
