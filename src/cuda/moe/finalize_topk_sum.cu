// finalize: out[t, h] = bf16( sum_{j = 0..k-1} float(y[t*k + j, h]) ), j in that fixed order
// (fp32 sum; deterministic). A slot whose expert id is outside [0, E) is skipped when ids are
// given (forward passes them; its y row was never written).
// Shapes: y [T*k, H] packed bf16, out [T, H] bf16 (row stride given). H % 8 == 0.
// Threads: one thread per 8 consecutive outputs (16-byte loads/stores), grid-stride over
// T * H / 8 with a grid fixed by the host-known T.
#include "common/cuda_check.h"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/kernels.h"

namespace fusekit::cuda_moe {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) finalize_topk_sum_kernel(FinalizeParams p) {
  const std::int64_t chunks_per_row = p.hidden / 8;
  const std::int64_t total = p.tokens * chunks_per_row;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    const std::int64_t t = i / chunks_per_row;
    const std::int64_t h = (i % chunks_per_row) * 8;
    float sum[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) sum[u] = 0.f;
    for (int j = 0; j < p.top_k; ++j) {
      const std::int64_t pair = t * p.top_k + j;
      if (p.topk_ids != nullptr) {
        const int e = p.topk_ids[pair];
        if (e < 0 || e >= p.num_experts) continue;
      }
      float f[8];
      dev::unpack8(*reinterpret_cast<const uint4*>(p.y + pair * p.hidden + h), f);
#pragma unroll
      for (int u = 0; u < 8; ++u) sum[u] += f[u];
    }
    *reinterpret_cast<uint4*>(p.out + t * p.out_row_stride + h) = dev::pack8(sum);
  }
}

}  // namespace

Status launch_finalize_topk_sum(const FinalizeParams& p, cudaStream_t stream) {
  const std::int64_t total = p.tokens * (p.hidden / 8);
  if (total == 0) return Status::Ok();
  std::int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > 65536) blocks = 65536;
  finalize_topk_sum_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("finalize_topk_sum_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
