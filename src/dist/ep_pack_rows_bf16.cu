// EP dispatch pack, bf16 rows: copies each token once into the send block of every rank that
// owns one of its experts, with the metadata the owner needs.
//
//   for each owner d with row(t, d) >= 0, r = offsets.send[d] + row(t, d):
//     send_x[r, :]   = x[t, :]
//     send_meta[r]   = [pair(t, d), c, local ids of t's slots owned by d (slot order), -1 ...,
//                       their router weights (fp32 bits), 0 ...]            (width 2 + 2k)
//
// Shapes: x [T, H] bf16 (row stride x_stride), topk_ids / topk_weights [T, k], dest_plan
// [T, R, 2], send_x [rows, H] bf16, send_meta [rows, 2 + 2k] int32.
// Thread mapping: one block of 128 threads per token; the block walks the R owners in
// ascending order and copies the row in 16-byte vectors; thread 0 writes the metadata (k is
// small and this keeps slot order without a scan).
// Limits: H % 8 == 0, 16-byte aligned rows; 64-bit row offsets.
#include "common/cuda_check.h"
#include "dist/ep_device.cuh"
#include "dist/ep_kernels.h"

namespace fusekit::dist {
namespace {

constexpr int kPackThreads = 128;

__global__ void __launch_bounds__(kPackThreads) ep_pack_rows_bf16_kernel(EpPackArgs a) {
  const EpDims& dims = a.dims;
  const std::int64_t t = blockIdx.x;
  const int k = dims.top_k;
  const int R = dims.ranks;
  const std::int64_t vecs = dims.hidden / kVecElems;
  const auto* src = reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(a.x) + t * a.x_stride);
  const std::int32_t* ids = a.topk_ids + t * k;
  const float* weights = a.topk_weights + t * k;
  for (int d = 0; d < R; ++d) {
    const std::int32_t* plan = a.dest_plan + (t * R + d) * 2;
    const std::int32_t pos = plan[0];
    if (pos < 0) continue;
    const std::int64_t row = static_cast<std::int64_t>(a.offsets[d]) + pos;
    auto* dst = reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(a.send_x) + row * dims.hidden);
    for (std::int64_t v = threadIdx.x; v < vecs; v += kPackThreads) dst[v] = src[v];
    if (threadIdx.x == 0) {
      std::int32_t* meta = a.send_meta + row * dims.meta_width;
      std::int32_t* meta_ids = meta + 2;
      std::int32_t* meta_weights = meta + 2 + k;
      int c = 0;
      for (int j = 0; j < k; ++j) {
        if (expert_owner(ids[j], dims.num_experts, dims.experts_per_rank) != d) continue;
        meta_ids[c] = local_expert(ids[j], dims.experts_per_rank);
        meta_weights[c] = __float_as_int(weights[j]);
        ++c;
      }
      meta[0] = plan[1];
      meta[1] = c;
      for (int j = c; j < k; ++j) {
        meta_ids[j] = -1;
        meta_weights[j] = 0;
      }
    }
  }
}

}  // namespace

Status launch_ep_pack_rows(const EpPackArgs& args, cudaStream_t stream) {
  if (args.dims.tokens == 0) return Status::Ok();
  ep_pack_rows_bf16_kernel<<<static_cast<unsigned>(args.dims.tokens), kPackThreads, 0, stream>>>(args);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("ep_pack_rows_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::dist
