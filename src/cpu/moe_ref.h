// The MoE oracle, stage by stage, on raw host pointers: fp32 inputs of each formula, fp64
// accumulation, and bf16 rounding exactly where the `cuda` backend stores bf16 (act, y, out), so
// the backends are compared on equal terms. It is also the `cpu` backend (src/cpu/moe_cpu.h
// maps validated TensorViews onto it). Nothing here allocates: scratch is fixed-size stack
// arrays (E <= 512) or the caller's workspace.
//
//   route_ref         logits [T, E] fp32|bf16 (row stride), bias [E] fp32 or null
//                     -> ids [T, k] int32, weights [T, k] fp32
//     softmax:  selection by logit (= by probability), p = exp(l - max) / sum exp(l - max)
//     sigmoid:  s = sigmoid(l), b = s + bias (fp32 add); group score = sum of the 2 largest b of
//               the group (its only b when a group has one expert); the topk_groups best groups,
//               then the k best b among their experts; weight = s (unbiased)
//     both:     ties go to the lower index (expert and group); weights divided by their sum if
//               renormalised (sum > 0), then times routed_scaling_factor; fp32 results.
//     NaN logit: -inf for selection, so ids stay in [0, E); softmax: probability 0 (a row of
//               only NaN/-inf picks experts 0..k-1 with weight 0); sigmoid: score 0, biased
//               score = bias. A NaN biased score (NaN bias) is -inf for selection.
//   align_ref         ids [T*k] -> MoeAlignment (see moe.h): runs stable in the pair index,
//                     each padded to block_m with `pairs`; rows past the total hold `pairs` and
//                     blocks past it expert -1. Ids outside [0, E) belong to no expert.
//   gemm1_swiglu_ref  act[r] = bf16(silu(g) * u), g = x[t] . W1[e] gate rows, u = . up rows,
//                     t = sorted[r] / k, e = expert of r's block. Rows that hold no pair (padding,
//                     rows past the total, an out-of-range pair or expert id) are zeros.
//   gemm2_ref         y[p] = bf16(w[p] * (act[r] . W2[e])) for the row r holding pair p; pairs no
//                     row holds (an id outside [0, E)) get a zero row.
//   finalize_ref      out[t] = bf16(sum_{j < k} y[t*k + j]), fp64 sum in j order.
//   forward_ref       the five above on the caller's workspace (forward_ref_workspace_bytes).
#pragma once

#include <cstddef>
#include <cstdint>

#include "fusekit/moe.h"

namespace fusekit::cpu {

constexpr std::int64_t kMaxExperts = 512;
// block_m of the cpu backend's own forward: any value >= 1 works; a small one keeps padding
// (and so its handling) present without inflating act much.
constexpr std::int64_t kCpuBlockM = 16;

// A shape of the layer: the sizes every stage needs.
struct MoeDims {
  std::int64_t E = 0, k = 0, H = 0, I = 0;
  MoeWeightLayout layout = MoeWeightLayout::kNK;
  MoeGateUpOrder gate_up_order = MoeGateUpOrder::kHalves;
};
MoeDims dims_of(const MoeConfig& config);

// Logits of T tokens, fp32 or bf16, rows `row_stride` elements apart.
struct LogitsRef {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  std::int64_t row_stride = 0;
};

// One token: `logits` are E fp32 values (NaN allowed), `bias` E values or null.
void route_ref_token(const MoeRouting& routing, std::int64_t E, std::int64_t k, const float* logits,
                     const float* bias, std::int32_t* ids, float* weights);
void route_ref(const MoeRouting& routing, std::int64_t T, std::int64_t E, std::int64_t k, const LogitsRef& logits,
               const float* bias, std::int32_t* ids, float* weights);

// capacity rows of sorted_token_ids, capacity / block_m entries of expert_ids.
struct AlignRef {
  std::int64_t block_m = 0;
  std::int64_t capacity = 0;
  std::int32_t* sorted_token_ids = nullptr;
  std::int32_t* expert_ids = nullptr;
  std::int32_t* expert_offsets = nullptr;  // E + 1
  std::int32_t* num_tokens_post_padded = nullptr;
};
// Needs capacity >= moe_align_capacity(pairs / k, k, E, block_m); ids has `pairs` entries.
void align_ref(std::int64_t E, const std::int32_t* ids, std::int64_t pairs, const AlignRef& out);

// bf16 matrices as raw bits.
using bf16_t = std::uint16_t;

// The alignment as the GEMMs read it (the values may come from any backend: they are checked).
struct AlignView {
  std::int64_t block_m = 0;
  std::int64_t capacity = 0;
  const std::int32_t* sorted_token_ids = nullptr;
  const std::int32_t* expert_ids = nullptr;
  std::int64_t total = 0;  // num_tokens_post_padded (clamped to [0, capacity] by the reader)
};

// x [T, H] (row stride), w1 per dims.layout, act [capacity, I] (row stride).
void gemm1_swiglu_ref(const MoeDims& d, std::int64_t T, const bf16_t* x, std::int64_t x_stride, const bf16_t* w1,
                      const AlignView& a, bf16_t* act, std::int64_t act_stride);
// act [capacity, I] (row stride), weights [T*k] fp32, y [T*k, H] (row stride).
void gemm2_ref(const MoeDims& d, std::int64_t T, const bf16_t* act, std::int64_t act_stride, const bf16_t* w2,
               const AlignView& a, const float* weights, bf16_t* y, std::int64_t y_stride);
// y [T*k, H] (row stride), out [T, H] (row stride).
void finalize_ref(const MoeDims& d, std::int64_t T, const bf16_t* y, std::int64_t y_stride, bf16_t* out,
                  std::int64_t out_stride);

// Workspace of forward_ref for any T <= max_tokens (256-byte aligned regions).
std::size_t forward_ref_workspace_bytes(const MoeDims& d, std::int64_t max_tokens);

struct ForwardRefArgs {
  MoeDims dims;
  MoeRouting routing;
  std::int64_t T = 0;
  std::int64_t max_tokens = 0;  // the workspace's size; T <= max_tokens
  const bf16_t* x = nullptr;
  std::int64_t x_stride = 0;
  // Either logits (+ optional bias) or precomputed ids/weights ([T*k] packed).
  const LogitsRef* logits = nullptr;
  const float* bias = nullptr;
  const std::int32_t* ids = nullptr;
  const float* weights = nullptr;
  const bf16_t* w1 = nullptr;
  const bf16_t* w2 = nullptr;
  bf16_t* out = nullptr;
  std::int64_t out_stride = 0;
  void* workspace = nullptr;  // forward_ref_workspace_bytes(dims, max_tokens), 256-byte aligned
};
void forward_ref(const ForwardRefArgs& args);

}  // namespace fusekit::cpu
