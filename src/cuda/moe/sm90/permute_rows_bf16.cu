// permute (Hopper MoE path): gathers x into align's expert-contiguous order for the TMA GEMMs.
//   for every aligned row r < num_tokens_post_padded with p = sorted_token_ids[r] < pairs:
//     xs[r, :] = x[p / top_k, :]          inv[p] = r
//   group_rows[e] = real rows of expert e = its padded run minus the padding at the run's tail
// Shapes: x [T, H] bf16 (row stride x_row_stride), xs [capacity, H] packed, inv [T*k],
// group_rows [E]. H % 8 == 0; 16-byte aligned rows.
// Threads: one warp per aligned row, each lane 16-byte chunks of it (H/8 chunks per row); the
// first E threads of the grid also count their expert's rows (<= block_m - 1 reads each).
// Padding rows are neither read nor written (the GEMMs never touch them).
#include "common/cuda_check.h"
#include "cuda/moe/sm90/moe_sm90.h"

namespace fusekit::cuda_moe::sm90 {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;

__global__ void __launch_bounds__(kThreads) permute_rows_bf16_kernel(PermuteParams p) {
  const std::int64_t gtid = std::int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (gtid < p.num_experts) {
    const int start = p.expert_offsets[gtid];
    int rows = p.expert_offsets[gtid + 1] - start;
    while (rows > 0 && p.sorted_token_ids[start + rows - 1] >= p.pairs) --rows;
    p.group_rows[gtid] = rows;
  }
  const std::int64_t r = std::int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= p.capacity || r >= *p.num_tokens_post_padded) return;
  const int pair = p.sorted_token_ids[r];
  if (pair < 0 || pair >= p.pairs) return;
  if (lane == 0) p.inv[pair] = static_cast<std::int32_t>(r);
  const uint4* src = reinterpret_cast<const uint4*>(p.x + (pair / p.top_k) * p.x_row_stride);
  uint4* dst = reinterpret_cast<uint4*>(p.xs + r * p.hidden);
  const int chunks = static_cast<int>(p.hidden / 8);
  // Four 16-byte loads in flight per lane before the first store.
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
  std::int64_t blocks = (p.capacity + kRowsPerBlock - 1) / kRowsPerBlock;
  const std::int64_t expert_blocks = (p.num_experts + kThreads - 1) / kThreads;
  if (blocks < expert_blocks) blocks = expert_blocks;
  if (blocks == 0) return Status::Ok();
  if (blocks > 0x7fffffff) return invalid_argument("permute: too many rows");
  permute_rows_bf16_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("permute_rows_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe::sm90
