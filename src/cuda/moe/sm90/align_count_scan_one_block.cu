// count + scan in one CTA (Hopper MoE path, align steps 1 and 2 for small batches), and the
// launcher that picks between it and the multi-CTA pair (align_count_pairs.cu, then
// align_scan_offsets.cu):
//   counts[e] = #{p : ids[p] = e};  rank[p] = place of pair p among its expert's pairs (-1 for
//   an id outside [0, E));  offsets[e] = sum_{e' < e} counts[e'], offsets[E] = the total.
// Why: up to kOneBlockMaxPairs pairs the counting is a microsecond of work, and the
// multi-CTA version pays for it in launches: a memset of the counts, a plain (not programmatic)
// count launch after it, then the scan. One CTA counts in shared memory (nothing to zero in
// global memory), scans, and writes counts, ranks and offsets: one programmatic launch. Asked
// to, it also places the pairs (inv and each slot's token), so a gathering gemm1 needs no permute.
// Asked to (CountPairsParams::gemm_arrays), it also writes the per-group arrays of the GEMMs that
// run on these offsets, so neither launches a setup kernel.
// Threads: 1024; warps stride over 32 consecutive pairs, __match_any_sync groups a warp's pairs
// by expert so each group's leader issues one shared atomicAdd. Ranks inside an expert follow
// the order the atomics land in, as in align_count_pairs.cu (see moe_sm90.h).
#include <cub/block/block_scan.cuh>

#include <cstdlib>

#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/sm90/moe_sm90.h"
#if FUSEKIT_WITH_CUTLASS
#include "cuda/moe/sm90/grouped_gemm_bf16_sm90_setup.cuh"
#endif

namespace fusekit::cuda_moe::sm90 {
namespace {

constexpr int kThreads = 1024;
constexpr int kMaxExperts = 512;
static_assert(kMaxExperts <= kThreads, "one expert per thread in the scan");

__global__ void __launch_bounds__(kThreads)
    align_count_scan_one_block_kernel(const __grid_constant__ CountPairsParams p, std::int32_t* offsets) {
  dev::wait_for_prior_grid();  // programmatic dependent launch: see dependent_launch.cuh
  dev::allow_dependent_grid();
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ int counts[kMaxExperts];
  __shared__ typename Scan::TempStorage tmp;
  const int E = p.num_experts;
  for (int e = threadIdx.x; e < E; e += kThreads) counts[e] = 0;
  __syncthreads();

  const int lane = threadIdx.x % 32;
  const unsigned lanes_below = (1u << lane) - 1u;
  for (std::int64_t base = std::int64_t(threadIdx.x / 32) * 32; base < p.pairs; base += kThreads) {
    const std::int64_t i = base + lane;
    int e = i < p.pairs ? p.topk_ids[i] : -1;
    if (e < 0 || e >= E) e = -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int leader = __ffs(peers) - 1;
    int start = 0;
    if (e >= 0 && lane == leader) start = atomicAdd(counts + e, __popc(peers));
    start = __shfl_sync(0xffffffffu, start, leader);
    if (i < p.pairs) p.rank[i] = e >= 0 ? start + __popc(peers & lanes_below) : -1;
  }
  __syncthreads();

  const int e = threadIdx.x;
  const int c = e < E ? counts[e] : 0;
  int excl = 0, total = 0;
  Scan(tmp).ExclusiveSum(c, excl, total);
  if (e < E) {
    p.counts[e] = c;
    offsets[e] = excl;
  }
  if (e == 0) offsets[E] = total;
  if (p.gemm_arrays.count == 0 && p.inv == nullptr) return;
  __shared__ std::int32_t offs[kMaxExperts + 1];
  if (e < E) offs[e] = excl;
  if (e == 0) offs[E] = total;
  __syncthreads();
#if FUSEKIT_WITH_CUTLASS
  write_group_arrays(p.gemm_arrays, offs, counts, threadIdx.x, kThreads);
#endif
  if (p.inv == nullptr) return;

  // Placement: the same threads visit the same pairs as above, so each reads back its own ranks.
  for (std::int64_t i = std::int64_t(threadIdx.x / 32) * 32 + lane; i < p.pairs; i += kThreads) {
    const int id = p.topk_ids[i];
    if (id < 0 || id >= E) continue;
    const int slot = offs[id] + p.rank[i];
    p.inv[i] = slot;
    p.sorted_tokens[slot] = static_cast<std::int32_t>(i / p.top_k);
  }
}

// FUSEKIT_MOE_ALIGN_ONE_BLOCK_MAX_PAIRS=n moves the switch to n pairs (0: always the multi-CTA
// side), for measuring the two sides against each other; read once.
std::int64_t one_block_max_pairs() {
  static const std::int64_t v = [] {
    const char* env = std::getenv("FUSEKIT_MOE_ALIGN_ONE_BLOCK_MAX_PAIRS");
    return env != nullptr ? std::atoll(env) : kOneBlockMaxPairs;
  }();
  return v;
}

}  // namespace

bool align_count_scan_in_one_block(std::int64_t pairs) { return pairs <= one_block_max_pairs(); }

Status launch_align_count_scan(const CountPairsParams& p, std::int32_t* offsets, cudaStream_t stream) {
  if (p.num_experts < 1 || p.num_experts > kMaxExperts) {
    return invalid_argument("align count+scan: num_experts must be in [1, 512], got " +
                            std::to_string(p.num_experts));
  }
  const bool place = p.inv != nullptr;
  if (place && (p.sorted_tokens == nullptr || p.top_k < 1)) {
    return invalid_argument("align count+scan: placing pairs needs sorted_tokens and top_k >= 1");
  }
  if (p.pairs <= one_block_max_pairs()) {
    FUSEKIT_CUDA_RETURN_IF_ERROR(launch_dependent(align_count_scan_one_block_kernel, dim3(1), dim3(kThreads), 0,
                                                  stream, p, offsets));
    FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("align_count_scan_one_block_kernel");
    return Status::Ok();
  }
  if (place) {
    return invalid_argument("align count+scan: pairs are placed in one CTA only (at most " +
                            std::to_string(one_block_max_pairs()) + " pairs), got " + std::to_string(p.pairs));
  }
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p.counts, 0, sizeof(std::int32_t) * p.num_experts, stream));
  FUSEKIT_RETURN_IF_ERROR(launch_align_count_pairs(p, stream));
  return launch_align_scan_offsets(p.counts, p.num_experts, offsets, p.gemm_arrays, stream);
}

}  // namespace fusekit::cuda_moe::sm90
