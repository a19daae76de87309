// swiglu (Hopper MoE path): act[r, c] = silu(h[r, c]) * h[r, I + c], fp32 math, bf16 out, for
// the rows r < *rows (the packed expert runs; *rows is read on the device).
// Shapes: h [max_rows, 2I] packed (gate columns first, then up), act [max_rows, I] packed.
// I % 8 == 0. Threads: one per 8 outputs (16-byte loads of gate and up, 16-byte store),
// grid-stride over rows * I / 8 with a grid fixed by the host-known max_rows.
#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/sm90/moe_sm90.h"

namespace fusekit::cuda_moe::sm90 {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) swiglu_rows_bf16_kernel(SwigluParams p) {
  dev::wait_for_prior_grid();  // programmatic dependent launch: see dependent_launch.cuh
  dev::allow_dependent_grid();
  const std::int64_t chunks = p.intermediate / 8;
  const std::int64_t rows = min(p.max_rows, static_cast<std::int64_t>(*p.rows));
  const std::int64_t total = rows * chunks;
  for (std::int64_t i = std::int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * kThreads) {
    const std::int64_t r = i / chunks;
    const std::int64_t c = (i - r * chunks) * 8;
    const __nv_bfloat16* row = p.h + r * 2 * p.intermediate;
    float g[8], u[8];
    dev::unpack8(__ldg(reinterpret_cast<const uint4*>(row + c)), g);
    dev::unpack8(__ldg(reinterpret_cast<const uint4*>(row + p.intermediate + c)), u);
#pragma unroll
    for (int e = 0; e < 8; ++e) g[e] = dev::silu(g[e]) * u[e];
    *reinterpret_cast<uint4*>(p.act + r * p.intermediate + c) = dev::pack8(g);
  }
}

}  // namespace

Status launch_swiglu_rows_bf16(const SwigluParams& p, cudaStream_t stream) {
  if (p.intermediate % 8 != 0) return invalid_argument("swiglu: intermediate must be a multiple of 8");
  const std::int64_t total = p.max_rows * (p.intermediate / 8);
  if (total == 0) return Status::Ok();
  std::int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > 132 * 16) blocks = 132 * 16;  // grid-stride: enough CTAs to fill an H100 16x over
  FUSEKIT_CUDA_RETURN_IF_ERROR(
      launch_dependent(swiglu_rows_bf16_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, p));
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("swiglu_rows_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe::sm90
