// Launchers of the `cuda` MoE kernels: raw pointers, sizes, strides and a stream in, a Status
// out. Each is defined next to its kernel (one kernel per .cu file); stages.cpp maps the
// public TensorViews onto these parameter structs, forward.cpp chains them.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/moe/gemm_config.h"
#include "fusekit/moe.h"
#include "fusekit/status.h"

namespace fusekit::cuda_moe {

enum class LogitsType { kF32, kBF16 };

struct RouteParams {
  const void* logits = nullptr;  // [T, E], rows logits_row_stride elements apart
  LogitsType logits_type = LogitsType::kF32;
  std::int64_t logits_row_stride = 0;
  const float* correction_bias = nullptr;  // [E] or null (sigmoid mode)
  std::int32_t* topk_ids = nullptr;        // [T, k] packed
  float* topk_weights = nullptr;           // [T, k] packed
  std::int64_t tokens = 0;
  int num_experts = 0;
  int top_k = 0;
  MoeRouting routing;
};
// Everything but the outputs (topk_ids, topk_weights), from the public router input (stages.cpp).
RouteParams route_params(const MoeConfig& config, const MoeRouterInput& router);
Status launch_route_softmax_topk(const RouteParams& p, cudaStream_t stream);
Status launch_route_sigmoid_grouped_topk(const RouteParams& p, cudaStream_t stream);

struct AlignParams {
  const std::int32_t* topk_ids = nullptr;  // [pairs]
  std::int64_t pairs = 0;                  // T*k
  int num_experts = 0;
  int block_m = 0;
  std::int64_t capacity = 0;  // rows of sorted_token_ids (multiple of block_m)
  std::int32_t* sorted_token_ids = nullptr;
  std::int32_t* expert_ids = nullptr;  // [capacity / block_m]
  std::int32_t* expert_offsets = nullptr;  // [E + 1]
  std::int32_t* num_tokens_post_padded = nullptr;  // [1]
};
Status launch_align_block_m(const AlignParams& p, cudaStream_t stream);

// Grouped GEMM over align blocks: rows of the sorted order, weights of each block's expert.
//   gemm1: a = x [T, K=H] gathered by pair / top_k; out = act [capacity, n=I];
//          weights hold 2n rows/columns (gate then up).
//   gemm2: a = act [capacity, K=I] in sorted order; out = y [pairs, n=H] at row pair,
//          scaled by topk_weights[pair].
struct GroupedGemmParams {
  const __nv_bfloat16* a = nullptr;
  std::int64_t a_row_stride = 0;
  const __nv_bfloat16* w = nullptr;
  MoeWeightLayout layout = MoeWeightLayout::kNK;
  MoeGateUpOrder gate_up_order = MoeGateUpOrder::kHalves;  // gemm1 only (common/moe_gate_up.h)
  __nv_bfloat16* out = nullptr;
  std::int64_t out_row_stride = 0;
  const std::int32_t* sorted_token_ids = nullptr;
  const std::int32_t* expert_ids = nullptr;
  const std::int32_t* num_tokens_post_padded = nullptr;
  const float* topk_weights = nullptr;  // gemm2 only
  std::int64_t capacity = 0;
  std::int64_t pairs = 0;
  int top_k = 0;
  int num_experts = 0;
  int block_m = 0;
  std::int64_t n = 0;  // output columns
  std::int64_t k = 0;  // reduction length
  // gemm1 only: blocks at or past num_tokens_post_padded write zero rows instead of exiting
  // (the public gemm1_swiglu stage writes every row of act; forward skips that traffic).
  bool zero_rows_past_total = false;
};
Status launch_grouped_gemm1_swiglu_bf16_sm80(const GroupedGemmParams& p, cudaStream_t stream);
Status launch_grouped_gemm2_bf16_sm80(const GroupedGemmParams& p, cudaStream_t stream);

// Decode path, KN weights: one GEMV per (token, slot) pair, no alignment (then finalize).
enum class DecodeEpilogue {
  kSwiGLU,        // gemm1: out[p, c] = silu(a.W[e, gate c]) * (a.W[e, up c]); a row = token p / top_k
  kRouterWeight,  // gemm2: out[p, c] = topk_weights[p] * (a.W[e, c]);          a row = p
};
struct DecodeParams {
  const __nv_bfloat16* a = nullptr;
  std::int64_t a_row_stride = 0;
  const __nv_bfloat16* w = nullptr;
  __nv_bfloat16* out = nullptr;  // [pairs, n]
  std::int64_t out_row_stride = 0;
  const std::int32_t* topk_ids = nullptr;   // [pairs]
  const float* topk_weights = nullptr;      // [pairs], kRouterWeight only
  std::int64_t pairs = 0;
  int top_k = 0;
  int num_experts = 0;
  std::int64_t n = 0;
  std::int64_t k = 0;
  DecodeEpilogue epilogue = DecodeEpilogue::kSwiGLU;
};
Status launch_decode_gemv_kn_bf16(const DecodeParams& p, cudaStream_t stream);

// Decode path, NK weights (decode_gemm1_swiglu_nk_bf16.cu, decode_gemm2_finalize_nk_bf16.cu):
// gemm1 reads each expert the batch hits once (not once per pair) and writes act; gemm2 reads
// act, applies the router weights and sums over top-k itself, writing out (no y, no finalize).
// Both kernels are launched as programmatic dependents (dependent_launch.cuh).
enum class DecodeRouting { kIds, kGemm1PicksFromLogits };

// The softmax top-k routing kernels are instantiated for 1, 4, 8 or 16 experts per lane.
inline int softmax_route_slots(int num_experts) {
  return num_experts <= 32 ? 1 : num_experts <= 128 ? 4 : num_experts <= 256 ? 8 : 16;
}

struct DecodeLayerParams {
  const __nv_bfloat16* x = nullptr;  // [tokens, hidden], rows x_row_stride apart
  std::int64_t x_row_stride = 0;
  const __nv_bfloat16* w1 = nullptr;  // [E, 2 * intermediate, hidden], gate/up rows in gate_up_order
  MoeGateUpOrder gate_up_order = MoeGateUpOrder::kHalves;
  const __nv_bfloat16* w2 = nullptr;  // [E, hidden, intermediate]
  // Where gemm1 finds its experts. kIds: topk_ids (the route kernel's or the caller's).
  // kGemm1PicksFromLogits (one token, softmax top-k, k <= 32, E <= 256): each gemm1 warp picks
  // its pair's expert from route.logits itself (softmax_topk_pick) while the route kernel, which
  // let it launch at once, writes the ids and weights gemm2 reads. gemm2 always reads topk_ids.
  DecodeRouting routing = DecodeRouting::kIds;
  RouteParams route;  // kGemm1PicksFromLogits: logits, type, stride, E, k, routing
  const std::int32_t* topk_ids = nullptr;  // [tokens * top_k]
  const float* topk_weights = nullptr;     // [tokens * top_k]
  __nv_bfloat16* act = nullptr;            // [tokens * top_k, intermediate] packed (workspace)
  __nv_bfloat16* out = nullptr;            // [tokens, hidden], rows out_row_stride apart
  std::int64_t out_row_stride = 0;
  std::int64_t tokens = 0;
  int top_k = 0;
  int num_experts = 0;
  std::int64_t hidden = 0;
  std::int64_t intermediate = 0;
};
// DecodeRouting::kGemm1PicksFromLogits' preconditions (decode gemm1's launcher checks them).
inline Status check_decode_routing(const DecodeLayerParams& p, const char* kernel) {
  if (p.routing == DecodeRouting::kIds) return Status::Ok();
  const RouteParams& r = p.route;
  if (p.tokens != 1 || p.top_k < 1 || p.top_k > kDecodePicksMaxTopK || p.num_experts < p.top_k ||
      p.num_experts > kDecodePicksMaxExperts ||
      r.logits == nullptr || r.num_experts != p.num_experts || r.top_k != p.top_k ||
      r.routing.mode != MoeRoutingMode::kSoftmaxTopK) {
    return invalid_argument(std::string(kernel) +
                            ": picking experts from the logits needs one token, softmax top-k, 1 <= k <= " +
                            std::to_string(kDecodePicksMaxTopK) + ", k <= E <= " +
                            std::to_string(kDecodePicksMaxExperts) + " and the logits; got tokens=" +
                            std::to_string(p.tokens) +
                            " k=" + std::to_string(p.top_k) + " E=" + std::to_string(p.num_experts) +
                            (r.logits == nullptr ? " and no logits" : ""));
  }
  return Status::Ok();
}
Status launch_decode_gemm1_swiglu_nk_bf16(const DecodeLayerParams& p, cudaStream_t stream);
Status launch_decode_gemm2_finalize_nk_bf16(const DecodeLayerParams& p, cudaStream_t stream);

struct FinalizeParams {
  const __nv_bfloat16* y = nullptr;  // [tokens * top_k, hidden] packed
  __nv_bfloat16* out = nullptr;      // [tokens, hidden], rows out_row_stride apart
  std::int64_t out_row_stride = 0;
  std::int64_t tokens = 0;
  int top_k = 0;
  std::int64_t hidden = 0;
  // Optional: slots whose expert id is outside [0, E) contribute nothing (their y rows were
  // never written).
  const std::int32_t* topk_ids = nullptr;
  int num_experts = 0;
};
Status launch_finalize_topk_sum(const FinalizeParams& p, cudaStream_t stream);

// Per-expert transpose [E, R, C] -> [E, C', R] (prepare_weights between layouts): source column
// c lands in row c' = w1_row_from_halves(dst_order, C / 2, c), which is c itself for kHalves
// (W2, and W1 kept in halves order).
Status launch_transpose_experts_bf16(const __nv_bfloat16* src, __nv_bfloat16* dst, std::int64_t experts,
                                     std::int64_t rows, std::int64_t cols, MoeGateUpOrder dst_order,
                                     cudaStream_t stream);

}  // namespace fusekit::cuda_moe
