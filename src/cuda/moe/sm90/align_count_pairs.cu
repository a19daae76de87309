// count (Hopper MoE path, align step 1): counts[e] += #{p : ids[p] = e}; rank[p] = the place of
// pair p among the pairs of its expert (0-based; -1 for an id outside [0, E)).
// Shapes: topk_ids [pairs] int32, counts [E] int32 (zero on entry), rank [pairs] int32. E <= 512.
// Threads: each CTA counts a run of 256 * kPairsPerThread consecutive pairs into shared memory first
// (__match_any_sync groups a warp's 32 pairs by expert, so each group's leader issues one
// shared atomic and the group ranks itself by popc), then takes one range per expert it saw
// from the global counts (one global atomic per expert and CTA) and adds its start to the ranks.
// Why: one global atomic per warp and expert serialised on the E counters (H200, Qwen3-30B-A3B:
// 8.1 us at 32768 pairs, 23.8 us at 131072 pairs, ~900 atomics on each of 128 addresses). The
// layer gained 3.4-4.7 us at 32768 pairs with 2048 pairs per CTA; at 8192 pairs (4 CTAs) that
// lost 1.8-2.4 us: too few CTAs (docs/PERF_NOTES.md, MoE on Hopper v7). So below
// kManyPairsPerCtaFrom pairs each CTA takes 256 pairs (8192 pairs: 32 CTAs).
// Ranks inside an expert follow the order the atomics land in (not deterministic); nothing
// downstream depends on that order (see moe_sm90.h).
#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/sm90/moe_sm90.h"

namespace fusekit::cuda_moe::sm90 {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxExperts = 512;
constexpr std::int64_t kManyPairsPerCtaFrom = 32768;

template <int kPairsPerThread>
__global__ void __launch_bounds__(kThreads) align_count_pairs_kernel(CountPairsParams p) {
  constexpr int kPairsPerCta = kThreads * kPairsPerThread;
  __shared__ int local_count[kMaxExperts];
  for (int e = threadIdx.x; e < p.num_experts; e += kThreads) local_count[e] = 0;
  __syncthreads();
  dev::wait_for_prior_grid();  // programmatic dependent launch: see dependent_launch.cuh
  dev::allow_dependent_grid();
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const unsigned lanes_below = (1u << lane) - 1u;
  // Warp w takes the 32-pair groups w, w + 8, ... of the CTA's run; lane l pair l of each.
  const std::int64_t run0 = std::int64_t(blockIdx.x) * kPairsPerCta;
  int expert[kPairsPerThread], rank[kPairsPerThread];
#pragma unroll
  for (int s = 0; s < kPairsPerThread; ++s) {
    const std::int64_t i = run0 + (std::int64_t(s) * (kThreads / 32) + warp) * 32 + lane;
    int e = i < p.pairs ? p.topk_ids[i] : -1;
    if (e < 0 || e >= p.num_experts) e = -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int leader = __ffs(peers) - 1;
    int start = 0;
    if (e >= 0 && lane == leader) start = atomicAdd(local_count + e, __popc(peers));
    expert[s] = e;
    rank[s] = __shfl_sync(0xffffffffu, start, leader) + __popc(peers & lanes_below);
  }
  __syncthreads();
  // local_count[e] becomes this CTA's start in expert e's range.
  for (int e = threadIdx.x; e < p.num_experts; e += kThreads) {
    const int n = local_count[e];
    local_count[e] = n > 0 ? atomicAdd(p.counts + e, n) : 0;
  }
  __syncthreads();
#pragma unroll
  for (int s = 0; s < kPairsPerThread; ++s) {
    const std::int64_t i = run0 + (std::int64_t(s) * (kThreads / 32) + warp) * 32 + lane;
    if (i < p.pairs) p.rank[i] = expert[s] >= 0 ? local_count[expert[s]] + rank[s] : -1;
  }
}

}  // namespace

Status launch_align_count_pairs(const CountPairsParams& p, cudaStream_t stream) {
  if (p.pairs <= 0) return Status::Ok();
  if (p.num_experts < 1 || p.num_experts > kMaxExperts) {
    return invalid_argument("align count: num_experts must be in [1, 512], got " + std::to_string(p.num_experts));
  }
  const bool many = p.pairs >= kManyPairsPerCtaFrom;
  const std::int64_t per_cta = kThreads * (many ? 8 : 1);
  const std::int64_t blocks = (p.pairs + per_cta - 1) / per_cta;
  if (blocks > 0x7fffffff) return invalid_argument("align count: too many pairs");
  // A plain launch: it follows the counts' memset, which a programmatic launch cannot overlap.
  auto* kernel = many ? align_count_pairs_kernel<8> : align_count_pairs_kernel<1>;
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("align_count_pairs_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe::sm90
