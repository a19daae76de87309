// count (Hopper MoE path, align step 1): counts[e] += #{p : ids[p] = e}; rank[p] = the place of
// pair p among the pairs of its expert (0-based; -1 for an id outside [0, E)).
// Shapes: topk_ids [pairs] int32, counts [E] int32 (zero on entry), rank [pairs] int32.
// Threads: grid-stride over warps of 32 consecutive pairs; __match_any_sync groups a warp's
// pairs by expert so each group issues one atomicAdd (its leader) and ranks itself by popc.
// Ranks inside an expert follow the order the atomics land in (not deterministic); nothing
// downstream depends on that order (see moe_sm90.h).
#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/sm90/moe_sm90.h"

namespace fusekit::cuda_moe::sm90 {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) align_count_pairs_kernel(CountPairsParams p) {
  dev::wait_for_prior_grid();  // programmatic dependent launch: see dependent_launch.cuh
  dev::allow_dependent_grid();
  const int lane = threadIdx.x % 32;
  const std::int64_t warp = (std::int64_t(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const std::int64_t warps = std::int64_t(gridDim.x) * kThreads / 32;
  const unsigned lanes_below = (1u << lane) - 1u;
  for (std::int64_t base = warp * 32; base < p.pairs; base += warps * 32) {
    const std::int64_t i = base + lane;
    int e = i < p.pairs ? p.topk_ids[i] : -1;
    if (e < 0 || e >= p.num_experts) e = -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int leader = __ffs(peers) - 1;
    int start = 0;
    if (e >= 0 && lane == leader) start = atomicAdd(p.counts + e, __popc(peers));
    start = __shfl_sync(0xffffffffu, start, leader);
    if (i < p.pairs) p.rank[i] = e >= 0 ? start + __popc(peers & lanes_below) : -1;
  }
}

}  // namespace

Status launch_align_count_pairs(const CountPairsParams& p, cudaStream_t stream) {
  if (p.pairs <= 0) return Status::Ok();
  std::int64_t blocks = (p.pairs + kThreads - 1) / kThreads;
  if (blocks > 132 * 8) blocks = 132 * 8;
  // A plain launch: it follows the counts' memset, which a programmatic launch cannot overlap.
  align_count_pairs_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("align_count_pairs_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe::sm90
