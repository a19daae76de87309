// EP row reduce, bf16: sums the local forward's pair outputs of each received row, so one row
// per (token, owner) goes back instead of one per pair.
//
//   rows_out[i, :] = bf16( sum_{q < c} fp32(pair_y[base + q, :]) )   q ascending (slot order)
//   with base, c as in ep_expand_pairs_bf16.cu. pair_y already carries the router weight.
//
// Thread mapping: one block of 128 threads per received row; each thread owns 8 columns at a
// time (16-byte vectors) and accumulates in fp32 in a fixed order: deterministic.
// Limits: H % 8 == 0.
#include "common/cuda_check.h"
#include "dist/ep_device.cuh"
#include "dist/ep_kernels.h"

namespace fusekit::dist {
namespace {

constexpr int kReduceThreads = 128;

__global__ void __launch_bounds__(kReduceThreads) ep_reduce_rows_bf16_kernel(EpReduceArgs a) {
  const EpDims& dims = a.dims;
  const std::int64_t i = blockIdx.x;
  const int R = dims.ranks;
  const int s = source_of_row(a.offsets + recv_rows_offsets(R), R, i);
  const std::int32_t* meta = a.recv_meta + i * dims.meta_width;
  const std::int64_t base = static_cast<std::int64_t>(a.offsets[recv_pairs_offsets(R) + s]) + meta[0];
  const int c = meta[1];
  const std::int64_t vecs = dims.hidden / kVecElems;
  auto* dst = reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(a.rows_out) + i * dims.hidden);
  for (std::int64_t v = threadIdx.x; v < vecs; v += kReduceThreads) {
    float acc[kVecElems] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int q = 0; q < c; ++q) {
      add_vec(reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(a.pair_y) + (base + q) * dims.hidden)[v],
              acc);
    }
    dst[v] = to_vec(acc);
  }
}

}  // namespace

Status launch_ep_reduce_rows(const EpReduceArgs& args, cudaStream_t stream) {
  if (args.recv_rows == 0) return Status::Ok();
  ep_reduce_rows_bf16_kernel<<<static_cast<unsigned>(args.recv_rows), kReduceThreads, 0, stream>>>(args);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("ep_reduce_rows_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::dist
