// forward (`cuda` backend): the whole layer on one stream, no allocation, no host sync.
//   decode (use_decode_path: few pairs), NK weights: route -> decode gemm1+SwiGLU (each hit
//                                    expert read once) -> decode gemm2 x weight + top-k sum,
//                                    chained by programmatic dependent launch on Hopper
//   decode, KN weights:              route -> GEMV gemm1+SwiGLU per pair -> GEMV gemm2 per
//                                    pair -> finalize
//   otherwise:                       route -> align -> grouped gemm1+SwiGLU -> grouped gemm2
//                                    -> finalize
// Every grid depends only on host-known sizes (T from x, capacity from the config), so the
// call can be captured in a CUDA graph and replayed.
#include <cuda_bf16.h>

#include "common/cuda_check.h"
#include "cuda/moe/gemm_config.h"
#include "cuda/moe/kernels.h"
#include "cuda/moe/moe_cuda.h"
#include "cuda/moe/print_config.h"
#include "cuda/moe/sm90/moe_sm90.h"
#include "cuda/moe/workspace_layout.h"

namespace fusekit::cuda_moe {

Status forward(const MoeLayer& layer, const TensorView& x, const MoeRouterInput* router, const MoeRouted* routed,
               const TensorView& out, const MoeWorkspace& workspace, cudaStream_t stream) {
  const MoeConfig& c = layer.config;
  const std::int64_t T = x.shape[0];
  if (T == 0) return Status::Ok();
  const WorkspaceLayout wl = workspace_layout(c);
  if (workspace.bytes < wl.total) {
    return invalid_argument("workspace: expected at least " + std::to_string(wl.total) + " bytes, got " +
                            std::to_string(workspace.bytes));
  }
  char* ws = static_cast<char*>(workspace.data);
  const std::int64_t k = c.top_k;
  const std::int64_t pairs = T * k;

  const ForwardPath path =
      forward_path(T, k, c.num_experts, c.layout,
                   sm90::prefill_enabled(x.device_id) ? GroupedKernels::kSm90 : GroupedKernels::kSm80);
  const bool gemm1_picks =
      router != nullptr && decode_gemm1_picks_from_logits(path, T, k, c.num_experts, c.routing.mode);
  if (print_config_enabled()) {
    const bool swiglu_in_gemm1 =
        path == ForwardPath::kHopperGrouped && c.gate_up_order == MoeGateUpOrder::kInterleaved8;
    print_config_once(describe_forward_path(T, k, c.num_experts, c.hidden, c.intermediate, path) +
                      (gemm1_picks ? " (one token: gemm1 picks its experts from the logits)" : "") +
                      (swiglu_in_gemm1 ? " (W1 interleaved: SwiGLU in gemm1's epilogue, no swiglu pass)" : ""));
  }

  const std::int32_t* ids;
  const float* weights;
  if (routed != nullptr) {
    ids = static_cast<const std::int32_t*>(routed->topk_ids.data);
    weights = static_cast<const float*>(routed->topk_weights.data);
  } else {
    auto* ids_ws = reinterpret_cast<std::int32_t*>(ws + wl.topk_ids);
    auto* w_ws = reinterpret_cast<float*>(ws + wl.topk_weights);
    MoeRouted mine;
    mine.topk_ids = TensorView::contiguous(ids_ws, DType::kI32, {T, k}, DeviceType::kCUDA, x.device_id);
    mine.topk_weights = TensorView::contiguous(w_ws, DType::kF32, {T, k}, DeviceType::kCUDA, x.device_id);
    FUSEKIT_RETURN_IF_ERROR(route(c, *router, mine, stream));
    ids = ids_ws;
    weights = w_ws;
  }

  auto* act = reinterpret_cast<__nv_bfloat16*>(ws + wl.act);
  auto* y = reinterpret_cast<__nv_bfloat16*>(ws + wl.y);
  const auto* w1 = static_cast<const __nv_bfloat16*>(layer.weights.w1.data);
  const auto* w2 = static_cast<const __nv_bfloat16*>(layer.weights.w2.data);

  if (path == ForwardPath::kHopperGrouped) {  // TMA + wgmma grouped GEMMs (src/cuda/moe/sm90/)
    return sm90::prefill_forward(layer, x, ids, weights, out, workspace, stream);
  }
  if (path == ForwardPath::kDecodeNK) {
    DecodeLayerParams d;
    d.x = static_cast<const __nv_bfloat16*>(x.data);
    d.x_row_stride = x.strides[0];
    d.w1 = w1;
    d.gate_up_order = c.gate_up_order;
    d.w2 = w2;
    d.topk_ids = ids;
    d.topk_weights = weights;
    if (gemm1_picks) {
      d.routing = DecodeRouting::kGemm1PicksFromLogits;
      d.route = route_params(c, *router);
    }
    d.act = act;
    d.out = static_cast<__nv_bfloat16*>(out.data);
    d.out_row_stride = out.strides[0];
    d.tokens = T;
    d.top_k = static_cast<int>(k);
    d.num_experts = static_cast<int>(c.num_experts);
    d.hidden = c.hidden;
    d.intermediate = c.intermediate;
    FUSEKIT_RETURN_IF_ERROR(launch_decode_gemm1_swiglu_nk_bf16(d, stream));
    return launch_decode_gemm2_finalize_nk_bf16(d, stream);
  }
  if (path == ForwardPath::kDecodeKN) {
    DecodeParams d1;
    d1.a = static_cast<const __nv_bfloat16*>(x.data);
    d1.a_row_stride = x.strides[0];
    d1.w = w1;
    d1.out = act;
    d1.out_row_stride = c.intermediate;
    d1.topk_ids = ids;
    d1.pairs = pairs;
    d1.top_k = static_cast<int>(k);
    d1.num_experts = static_cast<int>(c.num_experts);
    d1.n = c.intermediate;
    d1.k = c.hidden;
    d1.epilogue = DecodeEpilogue::kSwiGLU;
    DecodeParams d2 = d1;
    d2.a = act;
    d2.a_row_stride = c.intermediate;
    d2.w = w2;
    d2.out = y;
    d2.out_row_stride = c.hidden;
    d2.topk_weights = weights;
    d2.n = c.hidden;
    d2.k = c.intermediate;
    d2.epilogue = DecodeEpilogue::kRouterWeight;
    FUSEKIT_RETURN_IF_ERROR(launch_decode_gemv_kn_bf16(d1, stream));
    FUSEKIT_RETURN_IF_ERROR(launch_decode_gemv_kn_bf16(d2, stream));
  } else {
    const std::int64_t capacity = align_capacity_rows(T, k, c.num_experts, wl.block_m);
    AlignParams a;
    a.topk_ids = ids;
    a.pairs = pairs;
    a.num_experts = static_cast<int>(c.num_experts);
    a.block_m = static_cast<int>(wl.block_m);
    a.capacity = capacity;
    a.sorted_token_ids = reinterpret_cast<std::int32_t*>(ws + wl.sorted_token_ids);
    a.expert_ids = reinterpret_cast<std::int32_t*>(ws + wl.expert_ids);
    a.expert_offsets = reinterpret_cast<std::int32_t*>(ws + wl.expert_offsets);
    a.num_tokens_post_padded = reinterpret_cast<std::int32_t*>(ws + wl.num_tokens_post_padded);
    FUSEKIT_RETURN_IF_ERROR(launch_align_block_m(a, stream));

    GroupedGemmParams g1;
    g1.a = static_cast<const __nv_bfloat16*>(x.data);
    g1.a_row_stride = x.strides[0];
    g1.w = w1;
    g1.layout = c.layout;
    g1.gate_up_order = c.gate_up_order;
    g1.out = act;
    g1.out_row_stride = c.intermediate;
    g1.sorted_token_ids = a.sorted_token_ids;
    g1.expert_ids = a.expert_ids;
    g1.num_tokens_post_padded = a.num_tokens_post_padded;
    g1.capacity = capacity;
    g1.pairs = pairs;
    g1.top_k = static_cast<int>(k);
    g1.num_experts = static_cast<int>(c.num_experts);
    g1.block_m = static_cast<int>(wl.block_m);
    g1.n = c.intermediate;
    g1.k = c.hidden;
    FUSEKIT_RETURN_IF_ERROR(launch_grouped_gemm1_swiglu_bf16_sm80(g1, stream));
    GroupedGemmParams g2 = g1;
    g2.a = act;
    g2.a_row_stride = c.intermediate;
    g2.w = w2;
    g2.out = y;
    g2.out_row_stride = c.hidden;
    g2.topk_weights = weights;
    g2.n = c.hidden;
    g2.k = c.intermediate;
    FUSEKIT_RETURN_IF_ERROR(launch_grouped_gemm2_bf16_sm80(g2, stream));
  }

  FinalizeParams f;
  f.y = y;
  f.out = static_cast<__nv_bfloat16*>(out.data);
  f.out_row_stride = out.strides[0];
  f.tokens = T;
  f.top_k = static_cast<int>(k);
  f.hidden = c.hidden;
  f.topk_ids = ids;
  f.num_experts = static_cast<int>(c.num_experts);
  return launch_finalize_topk_sum(f, stream);
}

}  // namespace fusekit::cuda_moe
