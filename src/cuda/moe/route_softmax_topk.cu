// route (softmax top-k): for each token t, route_softmax_token (route_topk_common.cuh)
// Shapes: logits [T, E] fp32|bf16 (row stride given), ids/weights [T, k] packed. E <= 512.
// Threads: one warp per token, 4 tokens per CTA; expert e in lane e % 32, slot e / 32 (the
// slot count is a template parameter: 1, 4, 8 or 16 for E <= 32, 128, 256, 512).
// Launch: first kernel of the decode chain, itself a programmatic dependent of the kernel before
// it (it waits before any load or store); it lets the next kernel launch right after that wait
// (dependent_launch.cuh), which then waits for this one's ids and weights, except decode gemm1
// at one token, which picks its experts from the same logits itself (softmax_topk_pick).
// Deterministic: fixed shuffle trees, k picks in order.

#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/route_topk_common.cuh"

namespace fusekit::cuda_moe {
namespace {

using namespace route_detail;

template <int kSlotsT>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) route_softmax_topk_kernel(RouteParams p) {
  dev::wait_for_prior_grid();  // before any load or store (a no-op unless launched as a dependent)
  // After the wait: decode gemm1 at one token reads the logits (and x) without waiting for this
  // grid, so it may launch only once they are complete.
  dev::allow_dependent_grid();
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (t >= p.tokens) return;
  route_softmax_token<kSlotsT>(p, t, p.topk_ids + t * p.top_k, p.topk_weights + t * p.top_k);
}

}  // namespace

Status launch_route_softmax_topk(const RouteParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return Status::Ok();
  if (p.num_experts < 1 || p.num_experts > kMaxExperts) {
    return invalid_argument("route: num_experts must be in [1, 512], got " + std::to_string(p.num_experts));
  }
  const std::int64_t blocks = (p.tokens + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const dim3 grid(static_cast<unsigned>(blocks)), block(kWarpsPerBlock * 32);
  // A programmatic dependent of whatever precedes it (in a model, the router GEMM): its launch
  // and prologue overlap that kernel's tail. Measured neutral in the layer bench, where nothing
  // precedes it (H100, Qwen3-30B-A3B T = 1: 38.67 us plain, 38.49 us dependent).
  auto launch = [&](void (*kernel)(RouteParams)) { return launch_dependent(kernel, grid, block, 0, stream, p); };
  cudaError_t err;
  switch (softmax_route_slots(p.num_experts)) {
    case 1: err = launch(route_softmax_topk_kernel<1>); break;
    case 4: err = launch(route_softmax_topk_kernel<4>); break;
    case 8: err = launch(route_softmax_topk_kernel<8>); break;
    default: err = launch(route_softmax_topk_kernel<16>); break;
  }
  FUSEKIT_CUDA_RETURN_IF_ERROR(err);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("route_softmax_topk_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
