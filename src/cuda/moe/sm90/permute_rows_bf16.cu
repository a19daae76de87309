// permute (Hopper MoE path, align step 3): places each pair's token row in its expert's run.
//   for every pair p with e = ids[p] in [0, E):  r = offsets[e] + rank[p]
//     xs[r, :] = x[p / top_k, :]          inv[p] = r
// Shapes: x [T, H] bf16 (row stride x_row_stride), xs [pairs, H] packed, inv [pairs].
// H % 8 == 0; 16-byte aligned rows.
// Threads: one warp per pair, each lane 16-byte chunks of the row (H/8 chunks), four loads in
// flight per lane; the k pairs of a token are neighbouring warps, so x is read from L2 after
// the first. Pairs with an invalid id are skipped (no row, no inv).
#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/sm90/moe_sm90.h"

namespace fusekit::cuda_moe::sm90 {
namespace {

constexpr int kThreads = 256;
constexpr int kPairsPerBlock = kThreads / 32;

__global__ void __launch_bounds__(kThreads) permute_rows_bf16_kernel(PermuteParams p) {
  dev::wait_for_prior_grid();  // programmatic dependent launch: see dependent_launch.cuh
  dev::allow_dependent_grid();
  const std::int64_t pair = std::int64_t(blockIdx.x) * kPairsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (pair >= p.pairs) return;
  const int e = p.topk_ids[pair];
  if (e < 0 || e >= p.num_experts) return;
  const std::int64_t r = std::int64_t(p.offsets[e]) + p.rank[pair];
  if (lane == 0) p.inv[pair] = static_cast<std::int32_t>(r);
  const uint4* src = reinterpret_cast<const uint4*>(p.x + (pair / p.top_k) * p.x_row_stride);
  uint4* dst = reinterpret_cast<uint4*>(p.xs + r * p.hidden);
  const int chunks = static_cast<int>(p.hidden / 8);
  int c = lane;
  for (; c + 96 < chunks; c += 128) {
    const uint4 v0 = __ldg(src + c), v1 = __ldg(src + c + 32), v2 = __ldg(src + c + 64), v3 = __ldg(src + c + 96);
    dst[c] = v0;
    dst[c + 32] = v1;
    dst[c + 64] = v2;
    dst[c + 96] = v3;
  }
  for (; c < chunks; c += 32) dst[c] = __ldg(src + c);
}

}  // namespace

Status launch_permute_rows_bf16(const PermuteParams& p, cudaStream_t stream) {
  if (p.hidden % 8 != 0) return invalid_argument("permute: hidden must be a multiple of 8");
  if (p.pairs <= 0) return Status::Ok();
  const std::int64_t blocks = (p.pairs + kPairsPerBlock - 1) / kPairsPerBlock;
  if (blocks > 0x7fffffff) return invalid_argument("permute: too many pairs");
  FUSEKIT_CUDA_RETURN_IF_ERROR(
      launch_dependent(permute_rows_bf16_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, p));
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("permute_rows_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe::sm90
