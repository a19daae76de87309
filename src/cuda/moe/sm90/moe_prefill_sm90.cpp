// The Hopper path's place in the `cuda` forward: when it applies, how much workspace the
// forward then needs, and the call that maps forward's views onto experts_forward.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "cuda/moe/sm90/moe_sm90.h"
#include "cuda/moe/workspace_layout.h"

namespace fusekit::cuda_moe::sm90 {
namespace {

constexpr int kMaxDevices = 64;
// Per device: 0 unknown, 1 sm_90 (served here), 2 not.
std::atomic<int> g_device_kind[kMaxDevices];

bool env_disabled() {
  static const bool disabled = [] {
    const char* v = std::getenv("FUSEKIT_MOE_SM90");
    return v != nullptr && v[0] == '0';
  }();
  return disabled;
}

// The card the tuned tables are keyed by: SM count and cudaDeviceProp::name (the H100 SXM and
// the H200 share the count). Read once per device and cached; a failed read gives {0, nullptr}
// (no table row matches, the heuristic decides) and is tried again on the next call. A device
// id past the cache is read each call and has no name.
struct Card {
  int sm_count = 0;
  const char* name = nullptr;
};

Card card_of(int device) {
  if (device < 0 || device >= kMaxDevices) {
    Card card;
    if (cudaDeviceGetAttribute(&card.sm_count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
      cudaGetLastError();
    }
    return card;
  }
  static std::atomic<bool> ready[kMaxDevices];
  static Card cards[kMaxDevices];
  static char names[kMaxDevices][256];
  static std::mutex mutex;
  if (!ready[device].load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!ready[device].load(std::memory_order_relaxed)) {
      cudaDeviceProp prop;
      if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
        cudaGetLastError();
        return {};
      }
      std::snprintf(names[device], sizeof(names[device]), "%s", prop.name);
      cards[device] = Card{prop.multiProcessorCount, names[device]};
      ready[device].store(true, std::memory_order_release);
    }
  }
  return cards[device];
}

// The routing regions (topk_ids, topk_weights) come first; this path needs none of the
// portable path's align regions, so its buffers start where those begin.
std::size_t own_offset(const MoeConfig& c) { return workspace_layout(c).sorted_token_ids; }

}  // namespace

bool prefill_enabled(int device) {
#if FUSEKIT_WITH_CUTLASS
  if (env_disabled()) return false;
  if (device >= 0 && device < kMaxDevices) {
    const int kind = g_device_kind[device].load(std::memory_order_relaxed);
    if (kind != 0) return kind == 1;
  }
  const bool yes = sm90_grouped_gemm_available(device);
  if (device >= 0 && device < kMaxDevices) g_device_kind[device].store(yes ? 1 : 2, std::memory_order_relaxed);
  return yes;
#else
  (void)device;
  return false;
#endif
}

std::size_t forward_workspace_size(const MoeConfig& c) {
#if FUSEKIT_WITH_CUTLASS
  return own_offset(c) + experts_workspace_size(c.max_tokens * c.top_k, c);
#else
  (void)c;
  return 0;
#endif
}

Status prefill_forward(const MoeLayer& layer, const TensorView& x, const std::int32_t* topk_ids,
                       const float* topk_weights, const TensorView& out, const MoeWorkspace& workspace,
                       cudaStream_t stream) {
  const MoeConfig& c = layer.config;
  const std::size_t at = own_offset(c);
  if (workspace.bytes < forward_workspace_size(c)) {
    return invalid_argument("workspace: expected at least " + std::to_string(forward_workspace_size(c)) +
                            " bytes (moe_workspace_size), got " + std::to_string(workspace.bytes));
  }
  ExpertsArgs a;
  a.x = static_cast<const __nv_bfloat16*>(x.data);
  a.x_row_stride = x.strides[0];
  a.w1 = static_cast<const __nv_bfloat16*>(layer.weights.w1.data);
  a.w2 = static_cast<const __nv_bfloat16*>(layer.weights.w2.data);
  a.layout = c.layout;
  a.gate_up_order = c.gate_up_order;
  a.topk_ids = topk_ids;
  a.topk_weights = topk_weights;
  a.out = static_cast<__nv_bfloat16*>(out.data);
  a.out_row_stride = out.strides[0];
  a.tokens = x.shape[0];
  a.top_k = static_cast<int>(c.top_k);
  a.num_experts = static_cast<int>(c.num_experts);
  a.hidden = c.hidden;
  a.intermediate = c.intermediate;
  const Card card = card_of(x.device_id);
  MoeProblem problem{c.num_experts, c.top_k, c.hidden, c.intermediate, a.tokens, card.sm_count, c.layout, card.name};
  a.config = choose_sm90_config(problem);
  maybe_print_config(problem, a.config);
  a.workspace = static_cast<char*>(workspace.data) + at;
  a.workspace_bytes = workspace.bytes - at;
  return experts_forward(a, stream);
}

}  // namespace fusekit::cuda_moe::sm90
