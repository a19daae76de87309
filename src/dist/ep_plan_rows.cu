// EP plan: where each (token, owner rank) row goes in the send buffer.
//
//   n(t, d)       = #{ j < k : owner(topk_ids[t, j]) == d }           owner(e) = e / (E/R)
//   row(t, d)     = #{ t' < t : n(t', d) > 0 }            (or -1 when n(t, d) = 0)
//   pair(t, d)    = sum_{t' < t} n(t', d)                  (or -1)
//   rows[d]       = #{ t : n(t, d) > 0 },  pairs[d] = sum_t n(t, d)   -> send_headers[d]
//
// Shapes: topk_ids [T, k] int32, dest_plan [T, R, 2] int32, send_headers [R] (64 bytes each).
// Thread mapping: one block per owner rank d; each of the 512 threads takes a contiguous chunk
// of ceil(T/512) tokens, counts it, and one block-wide exclusive scan (rows and pairs packed
// in one 64-bit value: pairs < 2^31) gives each chunk its start; the chunk is then walked again
// to write positions. Ascending token order within a block makes the plan deterministic.
// Limits: T * k < 2^31 (checked by resolve_plan); any R; ids outside [0, E) have no owner.
#include <cub/block/block_scan.cuh>

#include "common/cuda_check.h"
#include "dist/ep_kernels.h"

namespace fusekit::dist {
namespace {

constexpr int kPlanThreads = 512;

__device__ __forceinline__ int pairs_on(const std::int32_t* ids, int k, int d, const EpDims& dims) {
  int n = 0;
  for (int j = 0; j < k; ++j) n += expert_owner(ids[j], dims.num_experts, dims.experts_per_rank) == d ? 1 : 0;
  return n;
}

__global__ void __launch_bounds__(kPlanThreads) ep_plan_rows_kernel(EpPlanArgs a) {
  using Scan = cub::BlockScan<long long, kPlanThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  const int d = static_cast<int>(blockIdx.x);
  const EpDims& dims = a.dims;
  const int k = dims.top_k;
  const int R = dims.ranks;
  const std::int64_t T = dims.tokens;
  const std::int64_t chunk = (T + kPlanThreads - 1) / kPlanThreads;
  const std::int64_t t0 = min(T, static_cast<std::int64_t>(threadIdx.x) * chunk);
  const std::int64_t t1 = min(T, t0 + chunk);

  long long mine = 0;  // rows << 32 | pairs
  for (std::int64_t t = t0; t < t1; ++t) {
    const int n = pairs_on(a.topk_ids + t * k, k, d, dims);
    if (n > 0) mine += (1ll << 32) + n;
  }
  long long before = 0, total = 0;
  Scan(scan_storage).ExclusiveSum(mine, before, total);

  std::int32_t row = static_cast<std::int32_t>(before >> 32);
  std::int32_t pair = static_cast<std::int32_t>(before & 0xffffffffll);
  for (std::int64_t t = t0; t < t1; ++t) {
    const int n = pairs_on(a.topk_ids + t * k, k, d, dims);
    std::int32_t* slot = a.dest_plan + (t * R + d) * 2;
    slot[0] = n > 0 ? row : -1;
    slot[1] = n > 0 ? pair : -1;
    if (n > 0) {
      ++row;
      pair += n;
    }
  }
  if (threadIdx.x == 0) {
    WireHeader h = a.header;
    h.rows = static_cast<std::int32_t>(total >> 32);
    h.pairs = static_cast<std::int32_t>(total & 0xffffffffll);
    a.send_headers[d] = h;
  }
}

}  // namespace

Status launch_ep_plan_rows(const EpPlanArgs& args, cudaStream_t stream) {
  ep_plan_rows_kernel<<<args.dims.ranks, kPlanThreads, 0, stream>>>(args);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("ep_plan_rows_kernel");
  return Status::Ok();
}

}  // namespace fusekit::dist
