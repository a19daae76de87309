// The `cuda` backend's stage entry points: map the (already validated) public views onto the
// launchers' raw parameters. The one dispatch place for routing mode and weight layout.
#include <cuda_bf16.h>

#include <algorithm>

#include "common/cuda_check.h"
#include "common/moe_gate_up.h"
#include "cuda/moe/gemm_config.h"
#include "cuda/moe/kernels.h"
#include "cuda/moe/moe_cuda.h"
#include "cuda/moe/sm90/moe_sm90.h"
#include "cuda/moe/workspace_layout.h"

namespace fusekit::cuda_moe {

std::size_t workspace_size(const MoeConfig& config) {
  return std::max(workspace_layout(config).total, sm90::forward_workspace_size(config));  // Hopper path: sm90/
}

MoeConfig prepared_config(const MoeConfig& config) {
  MoeConfig to = config;
  // NK: torch's order (no repack), the decode kernels that read each hit expert once and fuse
  // the top-k sum exist for NK only, and the grouped GEMMs read both layouts alike.
  to.layout = MoeWeightLayout::kNK;
  // On Hopper the grouped GEMM1 applies SwiGLU in its epilogue when W1 is interleaved (no h
  // buffer, no SwiGLU pass, same bits) where that pays (sm90::swiglu_in_gemm1_pays, measured).
  // Every other reader takes either order. Expert/tensor parallelism slices W1 in halves order only.
  const bool single_device = config.expert_parallel_size == 1;
  const bool cuda = config.backend == MoeBackend::kCuda || config.backend == MoeBackend::kAuto;
  if (!single_device || !cuda) return to;
  int device = 0;
  cudaDeviceProp prop;
  if (cudaGetDevice(&device) != cudaSuccess || cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();  // no device (a CUDA build on a machine without a GPU): keep the order
    return to;           // and clear only the error this call raised, not one the caller has pending
  }
  if (sm90::sm90_grouped_gemm_available(device) && sm90::swiglu_in_gemm1_pays(config.intermediate, prop.name)) {
    to.gate_up_order = MoeGateUpOrder::kInterleaved8;
  }
  return to;
}

std::int64_t align_block_m(const MoeConfig& config) { return block_m_for(config); }

RouteParams route_params(const MoeConfig& config, const MoeRouterInput& router) {
  RouteParams p;
  p.logits = router.logits.data;
  p.logits_type = router.logits.dtype == DType::kBF16 ? LogitsType::kBF16 : LogitsType::kF32;
  p.logits_row_stride = router.logits.strides[0];
  p.correction_bias = router.correction_bias.empty_view() ? nullptr : static_cast<const float*>(router.correction_bias.data);
  p.tokens = router.logits.shape[0];
  p.num_experts = static_cast<int>(config.num_experts);
  p.top_k = static_cast<int>(config.top_k);
  p.routing = config.routing;
  return p;
}

Status route(const MoeConfig& config, const MoeRouterInput& router, const MoeRouted& routed, cudaStream_t stream) {
  RouteParams p = route_params(config, router);
  p.topk_ids = static_cast<std::int32_t*>(routed.topk_ids.data);
  p.topk_weights = static_cast<float*>(routed.topk_weights.data);
  switch (config.routing.mode) {
    case MoeRoutingMode::kSoftmaxTopK:
      return launch_route_softmax_topk(p, stream);
    case MoeRoutingMode::kSigmoidGroupedTopK:
      return launch_route_sigmoid_grouped_topk(p, stream);
  }
  return invalid_argument("route: routing mode must be softmax top-k or sigmoid grouped top-k");
}

Status align(const MoeConfig& config, const TensorView& topk_ids, const MoeAlignment& alignment, cudaStream_t stream) {
  AlignParams p;
  p.topk_ids = static_cast<const std::int32_t*>(topk_ids.data);
  p.pairs = topk_ids.numel();
  p.num_experts = static_cast<int>(config.num_experts);
  p.block_m = static_cast<int>(alignment.block_m);
  p.capacity = alignment.sorted_token_ids.shape[0];
  p.sorted_token_ids = static_cast<std::int32_t*>(alignment.sorted_token_ids.data);
  p.expert_ids = static_cast<std::int32_t*>(alignment.expert_ids.data);
  p.expert_offsets = static_cast<std::int32_t*>(alignment.expert_offsets.data);
  p.num_tokens_post_padded = static_cast<std::int32_t*>(alignment.num_tokens_post_padded.data);
  return launch_align_block_m(p, stream);
}

namespace {
GroupedGemmParams gemm_params(const MoeLayer& layer, const MoeAlignment& alignment, std::int64_t pairs) {
  GroupedGemmParams p;
  p.layout = layer.config.layout;
  p.gate_up_order = layer.config.gate_up_order;
  p.sorted_token_ids = static_cast<const std::int32_t*>(alignment.sorted_token_ids.data);
  p.expert_ids = static_cast<const std::int32_t*>(alignment.expert_ids.data);
  p.num_tokens_post_padded = static_cast<const std::int32_t*>(alignment.num_tokens_post_padded.data);
  p.capacity = alignment.sorted_token_ids.shape[0];
  p.pairs = pairs;
  p.top_k = static_cast<int>(layer.config.top_k);
  p.num_experts = static_cast<int>(layer.config.num_experts);
  p.block_m = static_cast<int>(alignment.block_m);
  return p;
}
}  // namespace

Status gemm1_swiglu(const MoeLayer& layer, const TensorView& x, const MoeAlignment& alignment, const TensorView& act,
                    cudaStream_t stream) {
  GroupedGemmParams p = gemm_params(layer, alignment, x.shape[0] * layer.config.top_k);
  p.a = static_cast<const __nv_bfloat16*>(x.data);
  p.a_row_stride = x.strides[0];
  p.w = static_cast<const __nv_bfloat16*>(layer.weights.w1.data);
  p.out = static_cast<__nv_bfloat16*>(act.data);
  p.out_row_stride = act.strides[0];
  p.n = layer.config.intermediate;
  p.k = layer.config.hidden;
  p.zero_rows_past_total = true;
  return launch_grouped_gemm1_swiglu_bf16_sm80(p, stream);
}

Status gemm2(const MoeLayer& layer, const TensorView& act, const MoeAlignment& alignment,
             const TensorView& topk_weights, const TensorView& y, cudaStream_t stream) {
  GroupedGemmParams p = gemm_params(layer, alignment, y.shape[0]);
  p.a = static_cast<const __nv_bfloat16*>(act.data);
  p.a_row_stride = act.strides[0];
  p.w = static_cast<const __nv_bfloat16*>(layer.weights.w2.data);
  p.out = static_cast<__nv_bfloat16*>(y.data);
  p.out_row_stride = y.strides[0];
  p.topk_weights = static_cast<const float*>(topk_weights.data);
  p.n = layer.config.hidden;
  p.k = layer.config.intermediate;
  return launch_grouped_gemm2_bf16_sm80(p, stream);
}

Status finalize(const MoeConfig& config, const TensorView& y, const TensorView& out, cudaStream_t stream) {
  FinalizeParams p;
  p.y = static_cast<const __nv_bfloat16*>(y.data);
  p.out = static_cast<__nv_bfloat16*>(out.data);
  p.out_row_stride = out.strides[0];
  p.tokens = out.shape[0];
  p.top_k = static_cast<int>(config.top_k);
  p.hidden = config.hidden;
  return launch_finalize_topk_sum(p, stream);
}

Status prepare_weights(const MoeConfig& config, const MoeConfig& to, const MoeWeights& src, const MoeWeights& dst,
                       cudaStream_t stream) {
  const bool reorder = config.gate_up_order != to.gate_up_order;  // kHalves -> kInterleaved8 (validated)
  // W2 never reorders; W1 takes to's order (the transpose places the rows itself).
  const TensorView* pairs[2][2] = {{&src.w1, &dst.w1}, {&src.w2, &dst.w2}};
  for (int w = 0; w < 2; ++w) {
    const TensorView& s = *pairs[w][0];
    const TensorView& d = *pairs[w][1];
    const MoeGateUpOrder order = w == 0 ? to.gate_up_order : MoeGateUpOrder::kHalves;
    if (config.layout != to.layout) {
      FUSEKIT_RETURN_IF_ERROR(launch_transpose_experts_bf16(static_cast<const __nv_bfloat16*>(s.data),
                                                            static_cast<__nv_bfloat16*>(d.data), s.shape[0],
                                                            s.shape[1], s.shape[2], order, stream));
    } else if (w == 0 && reorder) {
      // NK halves -> NK in to's order: per expert and half (gate, up), the I/8 runs of 8
      // consecutive rows (both orders keep 8 columns' rows together) move as one strided 2-D
      // copy, its offsets and pitch read off the index function.
      const std::size_t row = static_cast<std::size_t>(s.shape[2]) * sizeof(__nv_bfloat16);
      const std::int64_t I = s.shape[1] / 2;
      const std::size_t dst_pitch = static_cast<std::size_t>(w1_row(order, I, 8, false) - w1_row(order, I, 0, false));
      for (std::int64_t e = 0; e < s.shape[0]; ++e) {
        const char* se = static_cast<const char*>(s.data) + e * 2 * I * row;
        char* de = static_cast<char*>(d.data) + e * 2 * I * row;
        for (bool up : {false, true}) {
          const char* from = se + w1_row(MoeGateUpOrder::kHalves, I, 0, up) * row;
          char* into = de + w1_row(order, I, 0, up) * row;
          FUSEKIT_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(into, dst_pitch * row, from, 8 * row, 8 * row,
                                                         static_cast<std::size_t>(I / 8), cudaMemcpyDeviceToDevice,
                                                         stream));
        }
      }
    } else {
      FUSEKIT_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(d.data, s.data, s.numel() * sizeof(__nv_bfloat16), cudaMemcpyDeviceToDevice, stream));
    }
  }
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
