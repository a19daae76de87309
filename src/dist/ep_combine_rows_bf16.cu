// EP combine, bf16: each token's output is the sum of the partial rows its owner ranks sent
// back.
//
//   out[t, :] = bf16( sum_{d = 0..R-1, row(t, d) >= 0} fp32(returned[offsets.send[d] + row(t, d), :]) )
//
// d ascending: a fixed order, so the output is bit-identical run to run. A token none of
// whose ids has an owner (all outside [0, E)) gets zeros.
// Shapes: dest_plan [T, R, 2], returned [send rows, H] bf16, out [T, H] bf16 (row stride
// out_stride). Thread mapping: one block of 128 threads per token, 16-byte vectors, fp32
// accumulation. Limits: H % 8 == 0, 16-byte aligned rows.
#include "common/cuda_check.h"
#include "dist/ep_device.cuh"
#include "dist/ep_kernels.h"

namespace fusekit::dist {
namespace {

constexpr int kCombineThreads = 128;

__global__ void __launch_bounds__(kCombineThreads) ep_combine_rows_bf16_kernel(EpCombineArgs a) {
  const EpDims& dims = a.dims;
  const std::int64_t t = blockIdx.x;
  const int R = dims.ranks;
  const std::int64_t vecs = dims.hidden / kVecElems;
  const std::int32_t* plan = a.dest_plan + t * R * 2;
  auto* dst = reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(a.out) + t * a.out_stride);
  for (std::int64_t v = threadIdx.x; v < vecs; v += kCombineThreads) {
    float acc[kVecElems] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int d = 0; d < R; ++d) {
      const std::int32_t pos = plan[2 * d];
      if (pos < 0) continue;
      const std::int64_t row = static_cast<std::int64_t>(a.offsets[d]) + pos;
      add_vec(reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(a.returned) + row * dims.hidden)[v],
              acc);
    }
    dst[v] = to_vec(acc);
  }
}

}  // namespace

Status launch_ep_combine_rows(const EpCombineArgs& args, cudaStream_t stream) {
  if (args.dims.tokens == 0) return Status::Ok();
  ep_combine_rows_bf16_kernel<<<static_cast<unsigned>(args.dims.tokens), kCombineThreads, 0, stream>>>(args);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("ep_combine_rows_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::dist
