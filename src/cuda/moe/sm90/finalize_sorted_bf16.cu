// finalize (Hopper MoE path): out[t, :] = bf16( sum_{j=0..k-1} w[t*k+j] * y[inv[t*k+j], :] ),
// j in that fixed order, fp32 (deterministic run to run). A slot whose expert id lies outside
// [0, E) contributes nothing (its pair is in no expert's run, so inv and y were never written).
// Shapes: y [rows, H] packed, expert order (GEMM2's output); inv/topk_ids/topk_weights
// [T*k]; out [T, H] (row stride out_row_stride). H % 8 == 0.
// Threads: one per 8 consecutive outputs of a token (16-byte loads/stores), grid-stride over
// T * H / 8 with a grid fixed by the host-known T.
#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/sm90/moe_sm90.h"

namespace fusekit::cuda_moe::sm90 {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) finalize_sorted_bf16_kernel(FinalizeSortedParams p) {
  dev::wait_for_prior_grid();  // programmatic dependent launch: see dependent_launch.cuh
  dev::allow_dependent_grid();
  const std::int64_t chunks = p.hidden / 8;
  const std::int64_t total = p.tokens * chunks;
  for (std::int64_t i = std::int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * kThreads) {
    const std::int64_t t = i / chunks;
    const std::int64_t h = (i - t * chunks) * 8;
    float sum[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) sum[u] = 0.f;
    for (int j = 0; j < p.top_k; ++j) {
      const std::int64_t pair = t * p.top_k + j;
      const int e = p.topk_ids[pair];
      if (e < 0 || e >= p.num_experts) continue;
      const float w = p.topk_weights[pair];
      float f[8];
      dev::unpack8(__ldg(reinterpret_cast<const uint4*>(p.y + std::int64_t(p.inv[pair]) * p.hidden + h)), f);
#pragma unroll
      for (int u = 0; u < 8; ++u) sum[u] = fmaf(w, f[u], sum[u]);
    }
    *reinterpret_cast<uint4*>(p.out + t * p.out_row_stride + h) = dev::pack8(sum);
  }
}

}  // namespace

Status launch_finalize_sorted_bf16(const FinalizeSortedParams& p, cudaStream_t stream) {
  if (p.hidden % 8 != 0) return invalid_argument("finalize: hidden must be a multiple of 8");
  const std::int64_t total = p.tokens * (p.hidden / 8);
  if (total == 0) return Status::Ok();
  std::int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > 132 * 16) blocks = 132 * 16;
  FUSEKIT_CUDA_RETURN_IF_ERROR(
      launch_dependent(finalize_sorted_bf16_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, p));
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("finalize_sorted_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe::sm90
