// A C-ABI shim over the `cuda` MoE backend so that bench/moe_peers.py can call fusekit in the
// same process as its peers (ctypes), on torch's current stream, inside torch's CUDA-graph
// capture. Bench-only: built on the GPU machine against build-device's static library by
// bench/moe_device_run.sh (g++ -shared ... build-device/src/libfusekit.a -lcudart -lcublas).
// Used only when `import fusekit` (the Python package) is not available. Routing: softmax
// top-k, renormalised (Qwen3-MoE, Mixtral); weights kNK.
#include <cstdint>
#include <cstring>
#include <string>

#include "cuda/moe/moe_cuda.h"

namespace {

fusekit::MoeConfig config_of(std::int64_t E, std::int64_t k, std::int64_t H, std::int64_t I, std::int64_t max_tokens) {
  fusekit::MoeConfig c;
  c.num_experts = E;
  c.top_k = k;
  c.hidden = H;
  c.intermediate = I;
  c.max_tokens = max_tokens;
  c.layout = fusekit::MoeWeightLayout::kNK;
  c.routing.mode = fusekit::MoeRoutingMode::kSoftmaxTopK;
  c.routing.norm = fusekit::MoeTopkNorm::kRenormalize;
  c.backend = fusekit::MoeBackend::kCuda;
  return c;
}

fusekit::TensorView dev(void* p, fusekit::DType t, std::initializer_list<std::int64_t> shape) {
  return fusekit::TensorView::contiguous(p, t, shape, fusekit::DeviceType::kCUDA, 0);
}

}  // namespace

extern "C" {

std::size_t fk_moe_workspace_size(std::int64_t E, std::int64_t k, std::int64_t H, std::int64_t I,
                                  std::int64_t max_tokens) {
  return fusekit::cuda_moe::workspace_size(config_of(E, k, H, I, max_tokens));
}

// Returns 0 on success; otherwise writes the error into err (errlen bytes).
int fk_moe_forward(void* x, void* logits_f32, void* w1, void* w2, void* out, void* workspace, std::size_t ws_bytes,
                   std::int64_t T, std::int64_t E, std::int64_t k, std::int64_t H, std::int64_t I,
                   std::int64_t max_tokens, void* stream, char* err, int errlen) {
  fusekit::MoeLayer layer;
  layer.config = config_of(E, k, H, I, max_tokens);
  layer.weights.w1 = dev(w1, fusekit::DType::kBF16, {E, 2 * I, H});
  layer.weights.w2 = dev(w2, fusekit::DType::kBF16, {E, H, I});
  fusekit::MoeRouterInput router;
  router.logits = dev(logits_f32, fusekit::DType::kF32, {T, E});
  const fusekit::Status s = fusekit::cuda_moe::forward(
      layer, dev(x, fusekit::DType::kBF16, {T, H}), &router, nullptr, dev(out, fusekit::DType::kBF16, {T, H}),
      fusekit::MoeWorkspace{workspace, ws_bytes}, static_cast<cudaStream_t>(stream));
  if (!s.ok()) {
    std::strncpy(err, s.to_string().c_str(), static_cast<std::size_t>(errlen) - 1);
    err[errlen - 1] = '\0';
    return 1;
  }
  return 0;
}

}  // extern "C"
