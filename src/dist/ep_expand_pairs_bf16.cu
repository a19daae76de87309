// EP expand, bf16: turns each received token row into one row per (token, local expert) pair,
// the input of the local single-GPU forward with top_k = 1.
//
//   row i from source s (offsets.recv_rows[s] <= i < offsets.recv_rows[s+1]), meta = recv_meta[i]:
//   base = offsets.recv_pairs[s] + meta[0], c = meta[1]
//   for q < c:  pair_x[base + q, :] = recv_x[i, :],  pair_ids[base + q] = meta[2 + q],
//               pair_weights[base + q] = meta[2 + k + q] (fp32 bits)
//
// Pairs of a row are contiguous and in slot order, sources in rank order: the layout is a
// pure function of what was sent, so the local forward sees the same rows every run.
// Thread mapping: one block of 128 threads per received row; 16-byte vectors.
// Limits: H % 8 == 0; rows and pairs < 2^31 (resolve_plan).
#include "common/cuda_check.h"
#include "dist/ep_device.cuh"
#include "dist/ep_kernels.h"

namespace fusekit::dist {
namespace {

constexpr int kExpandThreads = 128;

__global__ void __launch_bounds__(kExpandThreads) ep_expand_pairs_bf16_kernel(EpExpandArgs a) {
  const EpDims& dims = a.dims;
  const std::int64_t i = blockIdx.x;
  const int R = dims.ranks;
  const std::int32_t* row_prefix = a.offsets + recv_rows_offsets(R);
  const std::int32_t* pair_prefix = a.offsets + recv_pairs_offsets(R);
  const int s = source_of_row(row_prefix, R, i);
  const std::int32_t* meta = a.recv_meta + i * dims.meta_width;
  const std::int64_t base = static_cast<std::int64_t>(pair_prefix[s]) + meta[0];
  const int c = meta[1];
  const std::int64_t vecs = dims.hidden / kVecElems;
  const auto* src = reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(a.recv_x) + i * dims.hidden);
  for (std::int64_t v = threadIdx.x; v < vecs; v += kExpandThreads) {
    const uint4 val = src[v];
    for (int q = 0; q < c; ++q) {
      reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(a.pair_x) + (base + q) * dims.hidden)[v] = val;
    }
  }
  for (int q = static_cast<int>(threadIdx.x); q < c; q += kExpandThreads) {
    a.pair_ids[base + q] = meta[2 + q];
    a.pair_weights[base + q] = __int_as_float(meta[2 + dims.top_k + q]);
  }
}

}  // namespace

Status launch_ep_expand_pairs(const EpExpandArgs& args, cudaStream_t stream) {
  if (args.recv_rows == 0) return Status::Ok();
  ep_expand_pairs_bf16_kernel<<<static_cast<unsigned>(args.recv_rows), kExpandThreads, 0, stream>>>(args);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("ep_expand_pairs_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::dist
