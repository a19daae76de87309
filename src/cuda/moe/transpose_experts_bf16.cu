// prepare_weights between layouts: dst[e, row(c), r] = src[e, r, c] for every expert, where
// row(c) places W1's gate/up rows in the prepared order (common/moe_gate_up.h; identity for kHalves).
// Shapes: src [E, R, C], dst [E, C, R], packed bf16. 32 x 32 shared tiles (+1 pad against
// bank conflicts), 32 x 8 threads; grid ceil(C / 32) x ceil(R / 32) x E. 64-bit offsets.
#include "common/cuda_check.h"
#include "common/moe_gate_up.h"
#include "cuda/moe/kernels.h"

namespace fusekit::cuda_moe {
namespace {

constexpr int kTile = 32;

__global__ void __launch_bounds__(kTile * 8) transpose_experts_bf16_kernel(const __nv_bfloat16* src,
                                                                          __nv_bfloat16* dst, std::int64_t rows,
                                                                          std::int64_t cols, MoeGateUpOrder dst_order) {
  __shared__ __nv_bfloat16 tile[kTile][kTile + 1];
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.z) * rows * cols;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * kTile;
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.x) * kTile;
  for (int i = threadIdx.y; i < kTile; i += 8) {
    const std::int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = src[base + r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTile; i += 8) {
    const std::int64_t c = c0 + i, r = r0 + threadIdx.x;
    const std::int64_t row = w1_row_from_halves(dst_order, cols / 2, c);
    if (r < rows && c < cols) dst[base + row * rows + r] = tile[threadIdx.x][i];
  }
}

}  // namespace

Status launch_transpose_experts_bf16(const __nv_bfloat16* src, __nv_bfloat16* dst, std::int64_t experts,
                                     std::int64_t rows, std::int64_t cols, MoeGateUpOrder dst_order,
                                     cudaStream_t stream) {
  if (experts == 0 || rows == 0 || cols == 0) return Status::Ok();
  if (dst_order != MoeGateUpOrder::kHalves && cols % 16 != 0) {
    return invalid_argument("transpose_experts_bf16: a gate/up reorder needs cols = 2I with I % 8 == 0, got cols=" +
                            std::to_string(cols));
  }
  const dim3 grid(static_cast<unsigned>((cols + kTile - 1) / kTile), static_cast<unsigned>((rows + kTile - 1) / kTile),
                  static_cast<unsigned>(experts));
  transpose_experts_bf16_kernel<<<grid, dim3(kTile, 8), 0, stream>>>(src, dst, rows, cols, dst_order);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("transpose_experts_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
