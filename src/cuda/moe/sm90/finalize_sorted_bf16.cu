// finalize (Hopper MoE path): out[t, :] = bf16( sum_{j=0..k-1} w[t*k+j] * y[inv[t*k+j], :] ),
// j in that fixed order, fp32 (deterministic run to run). With GEMM2 split in K, y's S
// partials are summed slice by slice: out = bf16( sum_s sum_j w_j * y_s[inv_j] ). A slot whose expert id lies outside
// [0, E) contributes nothing (its pair is in no expert's run, so inv and y were never written).
// Shapes: y [rows, H] packed, expert order (GEMM2's output); inv/topk_ids/topk_weights
// [T*k]; out [T, H] (row stride out_row_stride). H % 8 == 0.
// Threads: one per 8 consecutive outputs of a token (16-byte loads/stores), grid-stride over
// T * H / 8 with a grid fixed by the host-known T. Each thread reads the ids, rows and weights
// of 8 slots before issuing their 8 y loads together (the gathered y rows come from DRAM; one
// slot at a time left one 16-byte load in flight per thread behind a chain of index loads).
#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/sm90/moe_sm90.h"

namespace fusekit::cuda_moe::sm90 {
namespace {

constexpr int kThreads = 256;
constexpr int kSlotsInFlight = 8;  // y loads in flight per thread (k = 8: all of a token's)

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
    // kSlotsInFlight slots at a time: their ids, rows and weights first, then all their y loads,
    // then the sums in j order (the same order, so the same bits, as one slot at a time).
    for (int j0 = 0; j0 < p.top_k; j0 += kSlotsInFlight) {
      std::int64_t row[kSlotsInFlight];
      float w[kSlotsInFlight];
#pragma unroll
      for (int u = 0; u < kSlotsInFlight; ++u) {
        row[u] = -1;
        w[u] = 0.f;
        if (j0 + u < p.top_k) {
          const std::int64_t pair = t * p.top_k + j0 + u;
          const int e = p.topk_ids[pair];
          if (e >= 0 && e < p.num_experts) {
            row[u] = p.inv[pair];
            w[u] = p.topk_weights[pair];
          }
        }
      }
      for (int s = 0; s < p.y_splits; ++s) {
        const __nv_bfloat16* y = p.y + s * p.y_split_stride;
        uint4 v[kSlotsInFlight];
#pragma unroll
        for (int u = 0; u < kSlotsInFlight; ++u) {
          v[u] = row[u] >= 0 ? __ldg(reinterpret_cast<const uint4*>(y + row[u] * p.hidden + h)) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < kSlotsInFlight; ++u) {
          if (row[u] < 0) continue;
          float f[8];
          dev::unpack8(v[u], f);
#pragma unroll
          for (int c = 0; c < 8; ++c) sum[c] = fmaf(w[u], f[c], sum[c]);
        }
      }
    }
    *reinterpret_cast<uint4*>(p.out + t * p.out_row_stride + h) = dev::pack8(sum);
  }
}

}  // namespace

Status launch_finalize_sorted_bf16(const FinalizeSortedParams& p, cudaStream_t stream) {
  if (p.hidden % 8 != 0) return invalid_argument("finalize: hidden must be a multiple of 8");
  if (p.y_splits < 1 || (p.y_splits > 1 && (p.y_split_stride < p.hidden || p.y_split_stride % 8 != 0))) {
    return invalid_argument("finalize: y_splits must be at least 1 and, above 1, y_split_stride a multiple of 8 and at least hidden");
  }
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
