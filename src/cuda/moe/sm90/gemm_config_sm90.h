// Tile choice of the Hopper MoE path: one pure function of the problem (E, top_k, H, I, T,
// device). A tuned table (tuned_configs_sm90_<card>.inc, one per card, written by `fusekit tune
// moe`) wins where it has an entry for the exact card (device name and SM count: the H100 SXM
// and the H200 both have 132 SMs, but the H200's 1.4x memory bandwidth moves the tile bounds),
// the exact (E, k, H, I) and a T range holding T; otherwise the
// heuristic below, whose ranges are stated in rows per expert m = T*k/E (the M of each
// expert's GEMM when routing is balanced):
//
//   m <= 4, NK     stream swap-AB           weight-read bound at a few rows per expert: weights
//                  (not CUTLASS)            loaded straight into mma.sync fragments, many 16-byte
//                                           loads in flight, L2 fetching 256 B per miss; 4-8%
//                                           faster than 64x128x128 per GEMM on Qwen3-30B-A3B at
//                                           m = 1 and 4, even on Qwen3-235B-A22B, slower from
//                                           m ~ 16 (each lane's token loads grow with m); the
//                                           tuner pairs it: gemm2 takes it only after gemm1 does
//   m <= 48        pingpong 64x128x128      weight-read bound: the smallest M tile wastes the
//                                           fewest tensor-core cycles; 2 consumer warpgroups on
//                                           alternate tiles hide the epilogue; K = 128 per step
//                                           reads 256 contiguous bytes of each weight row (DRAM
//                                           serves that ~7% faster than 128: grouped_gemm_probe)
//   48 < m <= 384  pingpong 64x256x64       mid: 64-row M tiles waste little of m = 64..384 rows
//                                           (a 128-row tile wastes ~20% of 256 +- 16), 256-wide
//                                           N tiles halve the B re-reads of 64x128, and the
//                                           pingpong epilogue overlaps the next tile's mainloop
//   m > 384        cooperative 128x256x64   compute bound: the largest tile, B multicast over a
//                  (cluster 2x1)            2x1 cluster halves weight traffic into L2/SMEM
// (Bounds from `fusekit tune moe` on H100, bench/results/moe_tune_h100.json: 64x128x128 wins
// up to m = 64 on the Qwen shapes (0.4-5% over 64x128x64 per GEMM, 28% on Qwen3-235B-A22B's
// GEMM1 at m = 64, where 64x128x64 falls off) and up to m = 32 on Mixtral; 64x256
// wins from m = 64 (Mixtral) or 128 (Qwen shapes) to 256-512; 128x256 wins from m = 1024.
// 64x128x64 and cooperative 128x128 no longer win a row; they stay tuner candidates.)
//
// Both GEMMs of the layer get their own choice (gemm1: N = 2I, K = H; gemm2: N = H, K = I).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/moe/sm90/grouped_gemm_bf16_sm90.h"

namespace fusekit::cuda_moe::sm90 {

// The heuristic's bound for the swap-AB tile, in rows per expert; the tuner times that tile only
// up to it (at 8, Qwen3-30B-A3B T=128, its gemm2 timed 4% faster alone but the layer ran 18 us
// slower with it).
constexpr double kStreamSwapAbMaxRowsPerExpert = 4;

struct Sm90MoeConfig {
  GemmTile gemm1 = GemmTile::kPingpong64x128;
  GemmTile gemm2 = GemmTile::kPingpong64x128;
  bool from_table = false;  // true: a tuned_configs_sm90_<card>.inc row; false: the heuristic
};

struct MoeProblem {
  std::int64_t experts = 0;
  std::int64_t top_k = 0;
  std::int64_t hidden = 0;
  std::int64_t intermediate = 0;
  std::int64_t tokens = 0;
  int sm_count = 0;  // the device: tuned entries hold for this SM count only
  // The table is tuned on NK weights; a tile it names that cannot take `layout` gives way to
  // the heuristic's choice for this layout.
  MoeWeightLayout layout = MoeWeightLayout::kNK;
  // The device's name as CUDA reports it (cudaDeviceProp::name, e.g. "NVIDIA H200"); tuned
  // entries hold for that card only. nullptr: no table entry matches, the heuristic decides.
  const char* device_name = nullptr;
};

// One row of the tuned table.
struct TunedEntry {
  const char* device_name;
  std::int64_t experts, top_k, hidden, intermediate;
  int sm_count;
  std::int64_t tokens_lo, tokens_hi;  // inclusive range of T this entry serves
  GemmTile gemm1, gemm2;
};

Sm90MoeConfig heuristic_sm90_config(const MoeProblem& problem);
Sm90MoeConfig choose_sm90_config(const MoeProblem& problem);

// Whether W1 should be prepared in kInterleaved8 order for this layer (moe_prepared_config), so
// that GEMM1 applies SwiGLU in its epilogue. A property of the layer, not of T. Measured on the
// H100, both orders in one process (bench/results/moe_tile64x256_h100.json vs
// moe_tile64x256_interleaved8_h100.json; moe_prepare_ab_h100.json at T = 1, 8): Qwen3-30B-A3B
// (I = 768) -0.8 / -4.5 / -3.9% at T = 1024 / 4096 / 16384 and -0.5 us at T = 1; Qwen3-235B-A22B
// (I = 1536) -1.8 / -2.9 / +0.8%; Mixtral-8x7B (I = 14336) -3.3 / +2.5 / +1.4%: its wide GEMM1
// gives back in the fused epilogue's register stores what the SwiGLU pass would cost.
constexpr std::int64_t kSwigluInGemm1MaxIntermediate = 4096;
inline bool swiglu_in_gemm1_pays(std::int64_t intermediate) {
  return intermediate <= kSwigluInGemm1MaxIntermediate;
}
// The tuner's rule for one table row (`fusekit tune moe`), kept here beside the heuristic it
// falls back to. From each GEMM's times alone, the pairs worth timing in layer order: the
// heuristic's pair first, then every pair of each GEMM's kTunerPairCandidates fastest tiles
// (a swap-AB gemm2 only after a swap-AB gemm1: after a CUTLASS gemm1 it ran ~18 us slower in the
// layer than alone on two shapes, PERF_NOTES v5). Then, from those pairs' times, the row keeps
// the fastest unless the heuristic's pair is within kTunerMargin of it (the run-to-run spread of
// one tile is 1-5%). Per-GEMM times alone disagreed with the layer more than once (PERF_NOTES
// v5, v6); a window of 6% around each GEMM's fastest instead of a count missed Mixtral T=4096's
// best pair, whose gemm2 tile was 6.5% off alone (v7).
constexpr int kTunerPairCandidates = 3;
constexpr double kTunerMargin = 0.03;
struct TilePair {
  GemmTile gemm1, gemm2;
  bool operator==(const TilePair& o) const { return gemm1 == o.gemm1 && gemm2 == o.gemm2; }
};
// tiles[0..count): the timed tiles; us1/us2[i]: tile i's time alone per GEMM (infinity where it
// was not timed, e.g. a layout it cannot take).
std::vector<TilePair> tuner_candidate_pairs(const GemmTile* tiles, const double* us1, const double* us2, int count,
                                            TilePair heuristic);
// pair_us[i]: the time of candidates[i] in layer order; pair_us[0] is the heuristic's pair. Returns
// the index of the pair the row keeps.
std::size_t tuner_pick_pair(const std::vector<double>& pair_us);

std::string describe(const MoeProblem& problem, const Sm90MoeConfig& config);
// FUSEKIT_PRINT_CONFIG=1: prints each distinct (problem, choice) once to stderr.
void maybe_print_config(const MoeProblem& problem, const Sm90MoeConfig& config);

}  // namespace fusekit::cuda_moe::sm90
