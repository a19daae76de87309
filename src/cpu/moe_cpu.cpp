// The `cpu` MoE backend: maps validated views onto the oracle's raw pointers and strides.
#include "cpu/moe_cpu.h"

#include "cpu/moe_ref.h"

namespace fusekit::cpu {

namespace {

LogitsRef logits_of(const TensorView& t) {
  LogitsRef l;
  l.data = t.data;
  l.dtype = t.dtype;
  l.row_stride = t.strides[0];
  return l;
}

const float* bias_of(const MoeRouterInput& router) {
  return router.correction_bias.empty_view() ? nullptr : static_cast<const float*>(router.correction_bias.data);
}

AlignView align_view(const MoeAlignment& a) {
  AlignView v;
  v.block_m = a.block_m;
  v.capacity = a.sorted_token_ids.shape[0];
  v.sorted_token_ids = static_cast<const std::int32_t*>(a.sorted_token_ids.data);
  v.expert_ids = static_cast<const std::int32_t*>(a.expert_ids.data);
  v.total = static_cast<const std::int32_t*>(a.num_tokens_post_padded.data)[0];
  return v;
}

const bf16_t* bf16_in(const TensorView& t) { return static_cast<const bf16_t*>(t.data); }
bf16_t* bf16_out(const TensorView& t) { return static_cast<bf16_t*>(t.data); }

}  // namespace

std::size_t moe_workspace_size_cpu(const MoeConfig& config) {
  return forward_ref_workspace_bytes(dims_of(config), config.max_tokens);
}

Status moe_route_cpu(const MoeConfig& config, const MoeRouterInput& router, const MoeRouted& routed) {
  route_ref(config.routing, router.logits.shape[0], config.num_experts, config.top_k, logits_of(router.logits),
            bias_of(router), static_cast<std::int32_t*>(routed.topk_ids.data),
            static_cast<float*>(routed.topk_weights.data));
  return Status::Ok();
}

Status moe_align_cpu(const MoeConfig& config, const TensorView& topk_ids, const MoeAlignment& alignment) {
  AlignRef a;
  a.block_m = alignment.block_m;
  a.capacity = alignment.sorted_token_ids.shape[0];
  a.sorted_token_ids = static_cast<std::int32_t*>(alignment.sorted_token_ids.data);
  a.expert_ids = static_cast<std::int32_t*>(alignment.expert_ids.data);
  a.expert_offsets = static_cast<std::int32_t*>(alignment.expert_offsets.data);
  a.num_tokens_post_padded = static_cast<std::int32_t*>(alignment.num_tokens_post_padded.data);
  align_ref(config.num_experts, static_cast<const std::int32_t*>(topk_ids.data), topk_ids.numel(), a);
  return Status::Ok();
}

Status moe_gemm1_swiglu_cpu(const MoeLayer& layer, const TensorView& x, const MoeAlignment& alignment,
                            const TensorView& act) {
  gemm1_swiglu_ref(dims_of(layer.config), x.shape[0], bf16_in(x), x.strides[0], bf16_in(layer.weights.w1),
                   align_view(alignment), bf16_out(act), act.strides[0]);
  return Status::Ok();
}

Status moe_gemm2_cpu(const MoeLayer& layer, const TensorView& act, const MoeAlignment& alignment,
                     const TensorView& topk_weights, const TensorView& y) {
  gemm2_ref(dims_of(layer.config), topk_weights.shape[0], bf16_in(act), act.strides[0], bf16_in(layer.weights.w2),
            align_view(alignment), static_cast<const float*>(topk_weights.data), bf16_out(y), y.strides[0]);
  return Status::Ok();
}

Status moe_finalize_cpu(const MoeConfig& config, const TensorView& y, const TensorView& out) {
  finalize_ref(dims_of(config), out.shape[0], bf16_in(y), y.strides[0], bf16_out(out), out.strides[0]);
  return Status::Ok();
}

Status moe_forward_cpu(const MoeLayer& layer, const TensorView& x, const MoeRouterInput* router,
                       const MoeRouted* routed, const TensorView& out, const MoeWorkspace& workspace) {
  ForwardRefArgs a;
  a.dims = dims_of(layer.config);
  a.routing = layer.config.routing;
  a.T = x.shape[0];
  a.max_tokens = layer.config.max_tokens;
  a.x = bf16_in(x);
  a.x_stride = x.strides[0];
  LogitsRef logits;
  if (routed != nullptr) {
    a.ids = static_cast<const std::int32_t*>(routed->topk_ids.data);
    a.weights = static_cast<const float*>(routed->topk_weights.data);
  } else {
    logits = logits_of(router->logits);
    a.logits = &logits;
    a.bias = bias_of(*router);
  }
  a.w1 = bf16_in(layer.weights.w1);
  a.w2 = bf16_in(layer.weights.w2);
  a.out = bf16_out(out);
  a.out_stride = out.strides[0];
  a.workspace = workspace.data;
  forward_ref(a);
  return Status::Ok();
}

}  // namespace fusekit::cpu
