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
// 64x128x64 and cooperative 128x128 no longer win a row; they stay tuner candidates. Pingpong
// 128x128x64 (kPingpong128x128) is a tuner candidate that no rule names yet: dense it ran 79-100%
// of the matmul rate on the short-K GEMM2 shapes, grouped it has not been timed; PERF_NOTES v14.)
//
// Both GEMMs of the layer get their own choice (gemm1: N = 2I, K = H; gemm2: N = H, K = I).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
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
  int gemm2_k_splits = 1;   // GEMM2 split in K (gemm2_k_splits below; the finalize sums the slices)
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
// The tiles (table, else heuristic), then gemm2_k_splits for the chosen gemm2 tile.
Sm90MoeConfig choose_sm90_config(const MoeProblem& problem);

// GEMM2 split in K (grouped_gemm_bf16_sm90.h "Split-K"). GEMM2 has N = H and K = I: on Mixtral
// (H = 4096, I = 14336, 8 experts) at 64-256 rows per expert the 64x256 tiles number 128-512
// (experts x ceil(m / 64) x 16): under two rounds for the 264 consumer warpgroups of the
// pingpong kernel (two per SM, each on a tile of its own), so many SMs run one tile at a time,
// or none in the last round. Two slices of K double the tiles, each half as deep, at the price
// of a second partial row of y per pair (written by GEMM2, read by the finalize: 2 H bytes
// each way).
// Measured on the H200, Mixtral layer, graph replay, 2 rounds (PERF_NOTES "MoE on Hopper v10",
// bench/results/moe_gemm2_split_k_ab_h200.json), 2 / 4 slices against none, on the table's
// tiles: T=16 +0.2 / +0.6%, T=64 +0.3 / +0.8%, T=256 -2.6 / -2.2%, T=512 -2.5 / -0.2%, T=1024
// -1.1 / +0.4% (64x256 pingpong), T=2048 +0.9 / +1.4% (128x256 cooperative: 512 tiles, ~4
// rounds of its 132 one-tile CTAs), T=4096 +1.5 / +4.8% (64x256, 2048 tiles). So: 2 slices
// where each expert has at least a tile of rows (below, the GEMM streams weights and the extra
// partials only cost) and the expected tiles (balanced routing: experts hit x ceil(m / block_m)
// x ceil(H / block_n)) make fewer than kSplitKMaxRounds rounds of the kernel's tiles in flight
// (2 per SM pingpong, 1 cooperative); never 4 (it won nowhere); slices at least
// kSplitKMinSliceK deep; 1 for the swap-AB tile.
// FUSEKIT_MOE_GEMM2_K_SPLITS=1 or 2 pins it (for measuring it; read per call); a pin whose
// slices do not fit the shape runs unsplit.
constexpr int kMaxGemm2KSplits = 2;
constexpr std::int64_t kSplitKMinSliceK = 2048;
constexpr double kSplitKMaxRounds = 2;
// The most slices any T may take for a layer with this intermediate size (2 when two slices
// fit, else 1): the workspace is sized by it (a pure function of the shape).
int gemm2_max_k_splits(std::int64_t intermediate);
int gemm2_k_splits(const MoeProblem& problem, GemmTile gemm2);

// Whether W1 should be prepared in kInterleaved8 order for this layer on this card
// (moe_prepared_config), so that GEMM1 applies SwiGLU in its epilogue. A property of the layer
// and the card, not of T. Measured on the H100, both orders in one process
// (bench/results/moe_tile64x256_h100.json vs moe_tile64x256_interleaved8_h100.json;
// moe_prepare_ab_h100.json at T = 1, 8): Qwen3-30B-A3B (I = 768) -0.8 / -4.5 / -3.9% at T = 1024 /
// 4096 / 16384 and -0.5 us at T = 1; Qwen3-235B-A22B (I = 1536) -1.8 / -2.9 / +0.8%;
// Mixtral-8x7B (I = 14336) -3.3 / +2.5 / +1.4%: its wide GEMM1 gave back in the fused epilogue's
// register stores what the SwiGLU pass would cost. So on the H100 only up to
// kSwigluInGemm1MaxIntermediate. On the H200 (CLI layer, graph replay, 2 rounds,
// bench/results/moe_mixtral_gate_up_order_ab_h200.json) Mixtral interleaved against halves:
// T = 1 / 4 / 64 / 256 / 1024 / 4096 / 16384 -0.4 / -0.3 / -1.1 / -1.4 / -2.1 / -0.3 / +0.7%:
// there every shape interleaves. Cards never measured keep the H100's bound.
constexpr std::int64_t kSwigluInGemm1MaxIntermediate = 4096;
inline bool swiglu_in_gemm1_pays(std::int64_t intermediate, const char* device_name) {
  if (device_name != nullptr && std::strcmp(device_name, "NVIDIA H200") == 0) return true;
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
