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

// The picks of a top-k, one per call of next(), over the eligible entries of this lane's slots
// (value desc, index asc). Each pick is two warp reductions (redux.sync: max key, then min
// index among the lanes holding it) and, on the winning lane only, zeroing that key and a max
// over its own keys: the serial chain of a pick is ~20 instructions. Every slot index is a
// compile-time constant, so the per-slot arrays stay in registers (a runtime index puts them
// in local memory: an older version cost ~1 us per extra round, 10 us at E = 128, k = 8).
template <int kSlotsT>
struct TopkPicker {
  static constexpr int kNone = 0x7fffffff;
  std::uint32_t key[kSlotsT];  // 0 = taken or not eligible
  std::uint32_t best_key = 0;
  int best_slot = 0;

  __device__ __forceinline__ TopkPicker(const float (&value)[kSlotsT], std::uint32_t eligible) {
#pragma unroll
    for (int s = 0; s < kSlotsT; ++s) key[s] = (eligible >> s & 1u) ? order_key(value[s]) : 0u;
    lane_best();
  }
  __device__ __forceinline__ void lane_best() {
    best_key = 0;
    best_slot = 0;
#pragma unroll
    for (int s = 0; s < kSlotsT; ++s) {
      // Strict '>' keeps the lower slot, i.e. the lower expert index, on ties.
      if (key[s] > best_key) {
        best_key = key[s];
        best_slot = s;
      }
    }
  }
  // The next pick's expert index, the same in every lane; kNone once nothing is left.
  __device__ __forceinline__ int next() {
    const int lane = threadIdx.x % 32;
    const std::uint32_t top = __reduce_max_sync(0xffffffffu, best_key);
    const int mine = (best_key != 0 && best_key == top) ? lane + 32 * best_slot : kNone;
    const int found = __reduce_min_sync(0xffffffffu, mine);
    if (found != kNone && found % 32 == lane) {
#pragma unroll
      for (int s = 0; s < kSlotsT; ++s) {
        if (s == best_slot) key[s] = 0;
      }
      lane_best();
    }
    return found;
  }
};

// Picks k entries among the eligible ones of this lane's slots (TopkPicker's order), writes
// ids and weights (weight_of(slot)) for slots j = 0..k-1, rescaled: renormalised by their sum
// (taken in j order) if asked, times the routed scaling factor. ids and weights may be global
// or shared memory. Everything but the picks is off their chain: weights of every slot up
// front, then lane j gathers pick j's weight by one shuffle per slot and the sum runs over
// those once. Cutting the pick from ~100 instructions to ~20 did not change the route's time
// (5.86 vs 5.98 us under ncu at E = 128, k = 8): that time is spent elsewhere
// (docs/PERF_NOTES.md, "MoE decode path v2"). The pick loops stay rolled (k is a runtime
// value): the E = 128 kernel's SASS is 14 KB instead of 26 KB, at the same measured time.
template <int kSlotsT, typename WeightOf>
__device__ __forceinline__ void select_topk(const float (&value)[kSlotsT], std::uint32_t eligible, int top_k,
                                            bool renormalize, float scaling, std::int32_t* ids, float* weights,
                                            WeightOf weight_of) {
  const int lane = threadIdx.x % 32;
  float w[kSlotsT];
#pragma unroll
  for (int s = 0; s < kSlotsT; ++s) w[s] = (eligible >> s & 1u) ? weight_of(s) : 0.f;
  TopkPicker<kSlotsT> picker(value, eligible);
  constexpr int kNone = TopkPicker<kSlotsT>::kNone;
  float sum = 0.f;
  float first_w = 0.f;  // this lane's pick of the first 32 (k <= 32: its only one)
#pragma unroll 1
  for (int j0 = 0; j0 < top_k; j0 += 32) {
    const int n = top_k - j0 < 32 ? top_k - j0 : 32;
    int my_id = 0;  // pick j0 + lane
    bool my_valid = false;
#pragma unroll 1
    for (int j = 0; j < n; ++j) {
      const int found = picker.next();
      // found == kNone only if fewer than k experts are eligible, which the API rules out.
      if (lane == j) {
        my_id = found == kNone ? 0 : found;
        my_valid = found != kNone;
      }
    }
    float wj = 0.f;
#pragma unroll
    for (int s = 0; s < kSlotsT; ++s) {
      const float v = __shfl_sync(0xffffffffu, w[s], my_id % 32);
      if (my_valid && my_id / 32 == s) wj = v;
    }
#pragma unroll 1
    for (int j = 0; j < n; ++j) sum += __shfl_sync(0xffffffffu, wj, j);
    if (lane < n) {
      ids[j0 + lane] = my_id;
      if (top_k > 32) weights[j0 + lane] = wj;
    }
    if (j0 == 0) first_w = wj;
  }
  // Division first, then scaling: the order the CPU oracle uses.
  if (top_k <= 32) {
    if (lane < top_k) weights[lane] = (renormalize && sum > 0.f ? first_w / sum : first_w) * scaling;
    return;
  }
  __syncwarp();
  for (int j = lane; j < top_k; j += 32) {
    const float v = weights[j];
    weights[j] = (renormalize && sum > 0.f ? v / sum : v) * scaling;
  }
}

// Softmax top-k, the logits of token t: this lane's slots (expert lane + 32 s; NaN -> -inf)
// and which slots hold an expert.
template <int kSlotsT>
__device__ __forceinline__ std::uint32_t load_token_logits(const RouteParams& p, std::int64_t t,
                                                           float (&logit)[kSlotsT]) {
  const int lane = threadIdx.x % 32;
  std::uint32_t eligible = 0;
#pragma unroll
  for (int s = 0; s < kSlotsT; ++s) {
    const int e = lane + 32 * s;
    logit[s] = -INFINITY;
    if (e < p.num_experts) {
      logit[s] = load_logit(p.logits, p.logits_type, t * p.logits_row_stride + e);
      eligible |= 1u << s;
    }
  }
  return eligible;
}

// Softmax top-k of token t by one warp (the route kernel's body, also run inside the T = 1
// decode kernels):
//   p[e] = exp(l[e] - max l) / sum_e' exp(l[e'] - max l)          (fp32; NaN logit -> -inf -> p = 0)
//   ids[0..k) = the k experts of largest logit, ties to the lower index
//   w[j] = p[ids[j]] (/ sum_j p[ids[j]] if renormalised) * routed_scaling_factor
// All logits NaN/-inf -> ids 0..k-1 (lowest indices win the ties), weights 0.
template <int kSlotsT>
__device__ __forceinline__ void route_softmax_token(const RouteParams& p, std::int64_t t, std::int32_t* ids,
                                                    float* weights) {
  float logit[kSlotsT];
  const std::uint32_t eligible = load_token_logits(p, t, logit);
  float mx = -INFINITY;
#pragma unroll
  for (int s = 0; s < kSlotsT; ++s) mx = fmaxf(mx, logit[s]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  float sum = 0.f;
  if (mx != -INFINITY) {
#pragma unroll
    for (int s = 0; s < kSlotsT; ++s) {
      if (eligible >> s & 1u) sum += expf(logit[s] - mx);
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float inv_sum = sum > 0.f ? 1.0f / sum : 0.f;
  auto weight_of = [&](int s) { return mx == -INFINITY ? 0.f : expf(logit[s] - mx) * inv_sum; };
  select_topk(logit, eligible, p.top_k, p.routing.norm == MoeTopkNorm::kRenormalize, p.routing.routed_scaling_factor,
              ids, weights, weight_of);
}

// Softmax top-k of token t, pick n only (the expert of the (n+1)-th largest logit, ties to the
// lower index: the id route_softmax_token writes at j = n), in n + 1 picks and no exp.
// The same in every lane.
template <int kSlotsT>
__device__ __forceinline__ int softmax_topk_pick(const RouteParams& p, std::int64_t t, int n) {
  float logit[kSlotsT];
  const std::uint32_t eligible = load_token_logits(p, t, logit);
  TopkPicker<kSlotsT> picker(logit, eligible);
  int found = 0;
#pragma unroll 1
  for (int j = 0; j <= n; ++j) found = picker.next();
  return found == TopkPicker<kSlotsT>::kNone ? 0 : found;
}

}  // namespace fusekit::cuda_moe::route_detail
