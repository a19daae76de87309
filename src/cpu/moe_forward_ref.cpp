// forward oracle (= the `cpu` backend's forward): route -> align -> gemm1_swiglu -> gemm2 ->
// finalize, the same stages the `cuda` grouped path runs, on the caller's workspace:
//   ids [M*k] int32 | weights [M*k] fp32 | sorted [cap] int32 | expert_ids [cap/bm] int32 |
//   expert_offsets [E+1] int32 | ntpp [1] int32 | act [cap, I] bf16 | y [M*k, H] bf16
// with M = max_tokens, bm = kCpuBlockM, cap = moe_align_capacity(M, k, E, bm); each region
// 256-byte aligned. A routed call (ids/weights given) reads them instead of the first two.
#include "cpu/moe_ref.h"

namespace fusekit::cpu {

namespace {

struct Layout {
  std::size_t ids = 0, weights = 0, sorted = 0, expert_ids = 0, offsets = 0, ntpp = 0, act = 0, y = 0, total = 0;
};

Layout layout_for(const MoeDims& d, std::int64_t max_tokens) {
  Layout l;
  const auto pairs = static_cast<std::size_t>(max_tokens * d.k);
  const auto cap = static_cast<std::size_t>(moe_align_capacity(max_tokens, d.k, d.E, kCpuBlockM));
  std::size_t at = 0;
  auto take = [&at](std::size_t bytes) {
    const std::size_t here = at;
    at += (bytes + 255) / 256 * 256;
    return here;
  };
  l.ids = take(4 * pairs);
  l.weights = take(4 * pairs);
  l.sorted = take(4 * cap);
  l.expert_ids = take(4 * (cap / kCpuBlockM));
  l.offsets = take(4 * static_cast<std::size_t>(d.E + 1));
  l.ntpp = take(4);
  l.act = take(2 * cap * static_cast<std::size_t>(d.I));
  l.y = take(2 * pairs * static_cast<std::size_t>(d.H));
  l.total = at;
  return l;
}

}  // namespace

std::size_t forward_ref_workspace_bytes(const MoeDims& d, std::int64_t max_tokens) {
  return layout_for(d, max_tokens).total;
}

void forward_ref(const ForwardRefArgs& a) {
  const MoeDims& d = a.dims;
  const std::int64_t T = a.T, pairs = T * d.k;
  if (T == 0) return;
  const Layout l = layout_for(d, a.max_tokens);
  char* ws = static_cast<char*>(a.workspace);
  auto* ids_ws = reinterpret_cast<std::int32_t*>(ws + l.ids);
  auto* weights_ws = reinterpret_cast<float*>(ws + l.weights);

  const std::int32_t* ids = a.ids;
  const float* weights = a.weights;
  if (ids == nullptr) {
    route_ref(a.routing, T, d.E, d.k, *a.logits, a.bias, ids_ws, weights_ws);
    ids = ids_ws;
    weights = weights_ws;
  }

  AlignRef al;
  al.block_m = kCpuBlockM;
  al.capacity = moe_align_capacity(T, d.k, d.E, kCpuBlockM);
  al.sorted_token_ids = reinterpret_cast<std::int32_t*>(ws + l.sorted);
  al.expert_ids = reinterpret_cast<std::int32_t*>(ws + l.expert_ids);
  al.expert_offsets = reinterpret_cast<std::int32_t*>(ws + l.offsets);
  al.num_tokens_post_padded = reinterpret_cast<std::int32_t*>(ws + l.ntpp);
  align_ref(d.E, ids, pairs, al);

  AlignView view;
  view.block_m = al.block_m;
  view.capacity = al.capacity;
  view.sorted_token_ids = al.sorted_token_ids;
  view.expert_ids = al.expert_ids;
  view.total = al.num_tokens_post_padded[0];
  auto* act = reinterpret_cast<bf16_t*>(ws + l.act);
  auto* y = reinterpret_cast<bf16_t*>(ws + l.y);
  gemm1_swiglu_ref(d, T, a.x, a.x_stride, a.w1, view, act, d.I);
  gemm2_ref(d, T, act, d.I, a.w2, view, weights, y, d.H);
  finalize_ref(d, T, y, d.H, a.out, a.out_stride);
}

}  // namespace fusekit::cpu
