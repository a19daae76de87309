// Decode gemm2 x router weight + sum over top-k, weights NK ([E, H, I], I contiguous):
//   out[t, h] = bf16( sum_j w[t, j] * (act[t*k + j] . W2[ids[t, j]][h]) )   fp32 throughout
// Slots whose id is outside [0, E) contribute nothing. No y buffer and no finalize launch: a
// CTA owns kColsPerCta output columns for every token and adds the k pairs itself.
// Each expert is read once per window of up to 64 pairs (64 / k whole tokens when k <= 64,
// else 64-pair pieces of one token), not once per pair: at T = 8, k = 8, E = 128 that is ~52
// expert reads instead of 64.
// Shapes: act [T*k, I] packed, out [T, H] (row stride given). I multiple of 8.
// Threads: 256 per CTA = 8 warps. Per window warp 0 lists the distinct experts (match_any and
// ballots over the window's ids) with the set of pairs of each; the work is then D x S units
// (distinct expert d, K slice s), S = ceil(8 / D) below 8 experts, else 1; warp w takes units
// w, w + 8, ... A unit sweeps kColsPerCta weight rows over its slice of I for the expert's
// pairs, 2 at a time (1 when alone): each lane issues the loads of 2 chunks (16 bytes) of every
// row and act row before using any. Per (pair, slice) the warp reduces its dots (fixed xor
// tree) into shared memory; then one thread per (token, column) adds
//   out = sum_j w[t, j] * sum_s dot[j, s]   in (j, s) order
// (for k > 64, one thread per column carries the sum across the token's windows).
// Deterministic run to run; the slicing depends on the window's distinct experts, so a token's
// last bits may differ with the other tokens batched beside it, as with any split-K.
// 8 columns per CTA, 128 registers (8 B spilled, as at 4 columns), 2 CTAs per SM: at H = 2048
// the grid is one wave of 256 CTAs on 132 SMs. 4 columns at 3 CTAs per SM (512 CTAs, 1.3 waves)
// took 3.9 us more at the layer's T = 1 on Qwen3-30B-A3B (H200, docs/PERF_NOTES.md "MoE decode
// path v6").
// Grid: ceil(H / kColsPerCta) CTAs; windows in sequence inside each CTA.
// Launch: programmatic dependent of gemm1; lists the first window's experts (ids and weights,
// complete before gemm1 let it launch) while gemm1 runs, and waits for it before reading act
// (H100, layer T = 1: Qwen3-30B-A3B 38.6 -> 37.3 us, Qwen3-235B-A22B 113.4 -> 109.8 us).
#include <cstdint>

#include "common/cuda_check.h"
#include "cuda/moe/dependent_launch.cuh"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/kernels.h"

namespace fusekit::cuda_moe {
namespace {

constexpr int kWarps = 8;
constexpr int kColsPerCta = 8;
constexpr int kCtasPerSm = 2;
constexpr int kChunksInFlight = 2;
constexpr int kWindowPairs = 64;  // two 32-id ballots

// K slices per distinct expert: with fewer than 8 experts in the window, ceil(8 / D) slices
// so that every warp has a unit; else 1 (units round-robin over the warps, at most one unit of
// imbalance, and no unit narrower than a whole expert row block).
__device__ __forceinline__ int slices_for(int distinct) {
  return distinct >= kWarps ? 1 : (kWarps + distinct - 1) / distinct;
}

struct WindowTable {
  alignas(16) float dot[kWindowPairs * kWarps][kColsPerCta];  // (q, s) -> dot over slice s
  unsigned long long pairs[kWindowPairs];  // d -> bit q set when pair q of the window routes to it
  int expert[kWindowPairs];                // d -> expert id
  float weight[kWindowPairs];              // q -> w (0 for a dead slot)
  bool live[kWindowPairs];                 // q -> id in [0, E)
  int distinct;                            // D
};

// Warp 0: the window's distinct experts, first-occurrence order, and each one's pair set.
// Every id and weight is loaded up front (one memory round trip); the cross-half comparison
// runs only when the window has more than 32 pairs.
__device__ __forceinline__ void list_window_experts(const DecodeLayerParams& p, std::int64_t base, int count,
                                                    WindowTable& tab) {
  const int lane = threadIdx.x % 32;
  const unsigned below = (1u << lane) - 1u;
  int id[2];
  float weight[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int q = 32 * h + lane;
    id[h] = q < count ? p.topk_ids[base + q] : -1;
    weight[h] = q < count ? p.topk_weights[base + q] : 0.f;
  }
  int key[2];
  bool valid[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int q = 32 * h + lane;
    valid[h] = q < count && id[h] >= 0 && id[h] < p.num_experts;
    // Dead or absent slots get keys of their own (negative, distinct per slot) so they never group.
    key[h] = valid[h] ? id[h] : -1 - q;
    if (q < count) {
      tab.live[q] = valid[h];
      tab.weight[q] = valid[h] ? weight[h] : 0.f;
    }
  }
  const unsigned peers0 = __match_any_sync(0xffffffffu, key[0]);
  bool first[2] = {valid[0] && (peers0 & below) == 0, false};
  unsigned long long mine[2] = {peers0, 0ull};  // pair sets of key[0], key[1]
  if (count > 32) {                             // warp-uniform
    const unsigned peers1 = __match_any_sync(0xffffffffu, key[1]);
    bool in_first_half = false;
    for (int i = 0; i < 32; ++i) {
      const int k0 = __shfl_sync(0xffffffffu, key[0], i);
      const int k1 = __shfl_sync(0xffffffffu, key[1], i);
      if (k1 == key[0]) mine[0] |= 1ull << (32 + i);
      if (k0 == key[1]) mine[1] |= 1ull << i;
      in_first_half |= k0 == key[1];
    }
    mine[1] |= static_cast<unsigned long long>(peers1) << 32;
    first[1] = valid[1] && (peers1 & below) == 0 && !in_first_half;
  }
  const unsigned b0 = __ballot_sync(0xffffffffu, first[0]);
  const unsigned b1 = __ballot_sync(0xffffffffu, first[1]);
  if (first[0]) {
    const int d = __popc(b0 & below);
    tab.expert[d] = key[0];
    tab.pairs[d] = mine[0];
  }
  if (first[1]) {
    const int d = __popc(b0) + __popc(b1 & below);
    tab.expert[d] = key[1];
    tab.pairs[d] = mine[1];
  }
  if (lane == 0) tab.distinct = __popc(b0) + __popc(b1);
}

// One sweep of the kColsPerCta rows of W2[expert] (w) over K slice [begin, end) for kPairs of
// the expert's pairs (window rows q[]): the loads of kChunksInFlight chunks of every row and
// act row are issued before any is used. A template on the pair count so that a lone pair (the
// rule at T = 1) neither spends registers on a second one nor serialises its loads.
template <int kPairs>
__device__ __forceinline__ void sweep(const DecodeLayerParams& p, const uint4* w, int cols, std::int64_t base,
                                      const int (&q)[kPairs], int slice, int slices, std::int64_t begin,
                                      std::int64_t end, WindowTable& tab) {
  const int lane = threadIdx.x % 32;
  const std::int64_t chunks = p.intermediate / 8;
  const uint4* a[kPairs];
#pragma unroll
  for (int i = 0; i < kPairs; ++i) a[i] = reinterpret_cast<const uint4*>(p.act + (base + q[i]) * p.intermediate);
  float dot[kPairs][kColsPerCta] = {};
  for (std::int64_t kc = begin + lane; kc < end; kc += 32 * kChunksInFlight) {
    uint4 wv[kChunksInFlight][kColsPerCta];
    uint4 av[kChunksInFlight][kPairs];
#pragma unroll
    for (int c = 0; c < kChunksInFlight; ++c) {
      const std::int64_t at = kc + 32 * c;
      const bool in = at < end;
#pragma unroll
      for (int r = 0; r < kColsPerCta; ++r) {
        wv[c][r] = in ? __ldcs(w + (r < cols ? r : 0) * chunks + at) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int i = 0; i < kPairs; ++i) av[c][i] = in ? __ldg(a[i] + at) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int c = 0; c < kChunksInFlight; ++c) {
#pragma unroll
      for (int i = 0; i < kPairs; ++i) {
        float af[8];
        dev::unpack8(av[c][i], af);
#pragma unroll
        for (int r = 0; r < kColsPerCta; ++r) dot[i][r] += dev::dot8(wv[c][r], af);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kPairs; ++i) {
#pragma unroll
    for (int r = 0; r < kColsPerCta; ++r) {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) dot[i][r] += __shfl_xor_sync(0xffffffffu, dot[i][r], off);
    }
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kColsPerCta; r += 4) {
        *reinterpret_cast<float4*>(&tab.dot[q[i] * slices + slice][r]) =
            make_float4(dot[i][r], dot[i][r + 1], dot[i][r + 2], dot[i][r + 3]);
      }
    }
  }
}

// One unit: W2[expert]'s rows over one K slice, for every pair of the expert in the window,
// two per sweep.
__device__ __forceinline__ void run_unit(const DecodeLayerParams& p, std::int64_t h0, int cols, std::int64_t base,
                                         int expert, unsigned long long pairs, int slice, int slices,
                                         std::int64_t begin, std::int64_t end, WindowTable& tab) {
  const uint4* w = reinterpret_cast<const uint4*>(p.w2 + (static_cast<std::int64_t>(expert) * p.hidden + h0) *
                                                             p.intermediate);
  while (pairs != 0) {  // warp-uniform
    const int q0 = __ffsll(static_cast<long long>(pairs)) - 1;
    pairs &= pairs - 1;
    if (pairs == 0) {
      const int q[1] = {q0};
      sweep<1>(p, w, cols, base, q, slice, slices, begin, end, tab);
    } else {
      const int q[2] = {q0, __ffsll(static_cast<long long>(pairs)) - 1};
      pairs &= pairs - 1;
      sweep<2>(p, w, cols, base, q, slice, slices, begin, end, tab);
    }
  }
}

// The first window's expert table is built before the wait for gemm1: ids and weights come from
// the route (or the caller), and gemm1 waited for that producer before it let this grid launch
// (every working gemm1 warp waits before it triggers, and this grid starts only once every
// gemm1 CTA has triggered or exited; warp 0 of every gemm1 CTA has work), so only act (gemm1's
// output) needs the wait.
__global__ void __launch_bounds__(kWarps * 32, kCtasPerSm) decode_gemm2_finalize_nk_bf16_kernel(DecodeLayerParams p) {
  static_assert(kColsPerCta % 4 == 0, "dots are stored four columns at a time");
  __shared__ WindowTable tab;
  const int warp = threadIdx.x / 32;
  const std::int64_t h0 = static_cast<std::int64_t>(blockIdx.x) * kColsPerCta;
  const int cols = static_cast<int>(p.hidden - h0 < kColsPerCta ? p.hidden - h0 : kColsPerCta);
  const std::int64_t chunks = p.intermediate / 8;
  const std::int64_t k = p.top_k;
  const std::int64_t total = p.tokens * k;
  float sum = 0.f;  // k > 64: thread c < cols carries column h0 + c of the current token
  for (std::int64_t base = 0; base < total;) {
    // Whole tokens while k <= 64, else 64-pair pieces of one token.
    const std::int64_t token_end = (base / k + 1) * k;
    const std::int64_t span = k <= kWindowPairs ? (kWindowPairs / k) * k : kWindowPairs;
    std::int64_t stop = base + span;
    if (k > kWindowPairs && stop > token_end) stop = token_end;
    if (stop > total) stop = total;
    const int count = static_cast<int>(stop - base);

    if (warp == 0) list_window_experts(p, base, count, tab);
    if (base == 0) dev::wait_for_prior_grid();
    __syncthreads();
    const int distinct = tab.distinct;
    const int slices = distinct > 0 ? slices_for(distinct) : 1;
    const std::int64_t slice_chunks = (chunks + slices - 1) / slices;
    for (int u = warp; u < distinct * slices; u += kWarps) {
      const int d = u / slices, s = u % slices;
      const std::int64_t begin = s * slice_chunks;
      const std::int64_t end = begin + slice_chunks < chunks ? begin + slice_chunks : chunks;
      run_unit(p, h0, cols, base, tab.expert[d], tab.pairs[d], s, slices, begin, end, tab);
    }
    __syncthreads();
    if (k <= kWindowPairs) {
      // Whole tokens: one (token of the window, column) at a time per thread (up to 64 x 8 of
      // them for 256 threads), its k pairs in j order.
      const int tokens_here = count / static_cast<int>(k);
      for (int idx = threadIdx.x; idx < tokens_here * kColsPerCta; idx += kWarps * 32) {
        const int t = idx / kColsPerCta, c = idx % kColsPerCta;
        if (c >= cols) continue;
        float acc = 0.f;
        for (int q = t * static_cast<int>(k); q < (t + 1) * static_cast<int>(k); ++q) {
          if (!tab.live[q]) continue;
          float d = 0.f;
          for (int s = 0; s < slices; ++s) d += tab.dot[q * slices + s][c];
          acc = fmaf(tab.weight[q], d, acc);
        }
        p.out[(base / k + t) * p.out_row_stride + h0 + c] = __float2bfloat16(acc);
      }
    } else if (threadIdx.x < cols) {
      // A token spans several windows: thread c carries its column's sum across them.
      std::int64_t j = base % k;
      for (int q = 0; q < count; ++q, ++j) {
        if (tab.live[q]) {
          float d = 0.f;
          for (int s = 0; s < slices; ++s) d += tab.dot[q * slices + s][threadIdx.x];
          sum = fmaf(tab.weight[q], d, sum);
        }
        if (j == k - 1) {
          p.out[(base / k) * p.out_row_stride + h0 + threadIdx.x] = __float2bfloat16(sum);
          sum = 0.f;
        }
      }
    }
    __syncthreads();  // the table is rebuilt for the next window
    base = stop;
  }
}

}  // namespace

Status launch_decode_gemm2_finalize_nk_bf16(const DecodeLayerParams& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.hidden == 0) return Status::Ok();
  if (p.top_k < 1) return invalid_argument("decode gemm2: top_k must be >= 1, got " + std::to_string(p.top_k));
  const dim3 grid(static_cast<unsigned>((p.hidden + kColsPerCta - 1) / kColsPerCta));
  FUSEKIT_CUDA_RETURN_IF_ERROR(
      launch_dependent(decode_gemm2_finalize_nk_bf16_kernel, grid, dim3(kWarps * 32), 0, stream, p));
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("decode_gemm2_finalize_nk_bf16_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
