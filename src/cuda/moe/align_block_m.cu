// align: groups the pairs p = t*k + j by expert, each expert's run padded to block_m.
//   count[e]            = #{p : ids[p] = e}
//   expert_offsets[e]   = sum_{e' < e} ceil(count[e'] / block_m) * block_m,  [E] = padded total
//   sorted_token_ids    = within each run the pairs in increasing p (stable), then padding
//                         rows holding `pairs` (= T*k); rows past the total hold `pairs` too
//   expert_ids[b]       = expert of rows [b*block_m, (b+1)*block_m), -1 past the total
//   num_tokens_post_padded[0] = padded total
// Ids outside [0, E) belong to no expert (the fused path then gives their slot zero weight).
// One CTA of 512 threads (16 warps), no host sync, any pairs (int32 range), E <= 512:
//   1 each warp counts its contiguous chunk of pairs per expert (shared, 16 x 512 ints)
//   2 per expert: exclusive scan over the 16 warps -> each warp's base inside the run
//   3 warp 0: padded prefix sum over experts
//   4 per block of rows: its expert id and padding rows
//   5 each warp walks its chunk in order; __match_any_sync ranks equal experts within 32 pairs
// Stable and deterministic. One CTA keeps it one launch; at T*k = 163840 it reads the ids
// twice (~1.3 MB) from L2 — small next to the GEMMs it feeds.
#include "common/cuda_check.h"
#include "cuda/moe/kernels.h"

namespace fusekit::cuda_moe {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxExperts = 512;

__global__ void __launch_bounds__(kThreads) align_block_m_kernel(AlignParams p) {
  __shared__ int warp_base[kWarps][kMaxExperts];
  __shared__ int counts[kMaxExperts];
  __shared__ int offsets[kMaxExperts + 1];
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int E = p.num_experts;
  const int bm = p.block_m;

  for (int i = tid; i < kWarps * kMaxExperts; i += kThreads) (&warp_base[0][0])[i] = 0;
  __syncthreads();

  const std::int64_t chunk = (p.pairs + kWarps - 1) / kWarps;
  const std::int64_t begin = warp * chunk;
  const std::int64_t end = begin + chunk < p.pairs ? begin + chunk : p.pairs;
  // 1. counts; four loads in flight per lane.
  for (std::int64_t i = begin + lane; i < end; i += 4 * 32) {
    int e[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) e[u] = i + u * 32 < end ? p.topk_ids[i + u * 32] : -1;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      if (e[u] >= 0 && e[u] < E) atomicAdd(&warp_base[warp][e[u]], 1);
    }
  }
  __syncthreads();
  // 2. per expert, scan over warps.
  for (int e = tid; e < E; e += kThreads) {
    int running = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const int c = warp_base[w][e];
      warp_base[w][e] = running;
      running += c;
    }
    counts[e] = running;
  }
  __syncthreads();
  // 3. padded prefix sum (warp 0, 32 experts at a time).
  if (warp == 0) {
    int carry = 0;
    for (int e0 = 0; e0 < E; e0 += 32) {
      const int e = e0 + lane;
      const int padded = e < E ? (counts[e] + bm - 1) / bm * bm : 0;
      int incl = padded;
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= off) incl += v;
      }
      if (e < E) offsets[e] = carry + incl - padded;
      carry += __shfl_sync(0xffffffffu, incl, 31);
    }
    if (lane == 0) offsets[E] = carry;
  }
  __syncthreads();
  const int total = offsets[E];
  for (int e = tid; e <= E; e += kThreads) p.expert_offsets[e] = offsets[e];
  if (tid == 0) *p.num_tokens_post_padded = total;
  const int pad_id = static_cast<int>(p.pairs);
  // 4. expert of each block, padding rows.
  const std::int64_t blocks = p.capacity / bm;
  for (std::int64_t b = warp; b < blocks; b += kWarps) {
    const std::int64_t row0 = b * bm;
    int e = -1;
    if (row0 < total) {
      int lo = 0, hi = E;  // last e with offsets[e] <= row0: that expert's run holds row0
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= row0) lo = mid; else hi = mid - 1;
      }
      e = lo;
    }
    if (lane == 0) p.expert_ids[b] = e;
    for (int r = lane; r < bm; r += 32) {
      const std::int64_t row = row0 + r;
      if (e < 0 || row - offsets[e] >= counts[e]) p.sorted_token_ids[row] = pad_id;
    }
  }
  // 5. stable scatter of the real pairs.
  const unsigned lane_lt = (1u << lane) - 1u;
  for (std::int64_t base = begin; base < end; base += 32) {
    const std::int64_t i = base + lane;
    int e = i < end ? p.topk_ids[i] : -1;
    if (e >= E) e = -1;
    if (e < -1) e = -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    int slot = 0;
    if (e >= 0) slot = offsets[e] + warp_base[warp][e] + __popc(peers & lane_lt);
    __syncwarp();
    if (e >= 0) {
      if (slot < p.capacity) p.sorted_token_ids[slot] = static_cast<int>(i);
      if ((peers & lane_lt) == 0) warp_base[warp][e] += __popc(peers);
    }
    __syncwarp();
  }
}

}  // namespace

Status launch_align_block_m(const AlignParams& p, cudaStream_t stream) {
  if (p.num_experts < 1 || p.num_experts > kMaxExperts) {
    return invalid_argument("align: num_experts must be in [1, 512], got " + std::to_string(p.num_experts));
  }
  if (p.block_m < 1 || p.capacity % p.block_m != 0) {
    return invalid_argument("align: capacity " + std::to_string(p.capacity) + " must be a multiple of block_m " +
                            std::to_string(p.block_m));
  }
  align_block_m_kernel<<<1, kThreads, 0, stream>>>(p);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("align_block_m_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
