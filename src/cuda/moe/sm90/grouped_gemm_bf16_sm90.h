// Hopper (sm_90a) BF16 grouped GEMM: wgmma + TMA, warp-specialised, persistent, built from
// CUTLASS 3.x/CuTe collectives (the nvidia-cutlass wheel; see src/CMakeLists.txt).
//
//   for each group g in [0, groups):
//     D[r0_g + i, :] = A[r0_g + i, :] . B_g          i in [0, rows_g)
//   A  [rows, k] bf16 row-major, the rows of all groups one after another (expert-contiguous)
//   B_g  layout kNK: [n, k] (K contiguous, nn.Linear order);  kKN: [k, n] (N contiguous)
//   D  [rows, n] bf16 row-major; only the rows_g rows of each group are written
//   r0_g = group_offsets[g];  rows_g = group_rows ? group_rows[g] : group_offsets[g+1] - r0_g
//
// Everything per group (rows, pointers, strides) is written on the device by a small setup
// kernel from group_offsets/group_rows, so a call never reads sizes back to the host and can
// be captured in a CUDA graph. fp32 accumulation; bf16 out (round to nearest).
//
// Split-K (k_splits = S > 1, CUTLASS tiles, plain store): each group's K is cut into S equal
// slices, each run as a group of its own (S * groups in all), and slice s writes its partial
// product, rounded to bf16, to D_s = d + s * d_split_stride; the caller sums the S partials (the
// MoE finalize does). For a long K with few output tiles: S times the tiles fill the last wave.
//
// Limits: n, k multiples of 8 (16-byte TMA strides); a, b, d 16-byte aligned; groups <= 1024;
// sizes within int32 per group (rows_g, n, k < 2^31). Groups of zero rows are skipped.
// Built only with FUSEKIT_WITH_CUTLASS=1; the kernels exist only in the sm_90a image.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>

#include "fusekit/moe.h"
#include "fusekit/status.h"

namespace fusekit::cuda_moe::sm90 {

// The compiled tile configurations. Which one serves which problem: gemm_config_sm90.h.
enum class GemmTile {
  kPingpong64x128,      // 64x128x64 tile, 2 consumer warpgroups on alternate tiles, cluster 1x1
  kCooperative128x128,  // 128x128x64 tile, 2 consumer warpgroups split M, cluster 1x1
  kCooperative128x256,  // 128x256x64 tile, 2 consumer warpgroups split M, cluster 2x1 (B multicast)
  kPingpong64x256,      // 64x256x64 tile, as kPingpong64x128 with half as many tiles per group
  kPingpong64x128k128,  // 64x128x128 tile: 256 contiguous bytes of each weight row per load step
  kPingpong128x128,     // 128x128x64 tile, 2 consumer warpgroups on alternate tiles (each a whole
                        // 128x128 tile), cluster 1x1: for compute-bound GEMMs with a short K
                        // (grouped_gemm_probe `large`, dense: 79-100% of cuBLAS 8192^3 on the
                        // GEMM2 shapes, 93-95% on Qwen3-30B-A3B's GEMM1)
  kStreamSwapAb,        // not CUTLASS: mma.sync with the weight rows as M, weights loaded straight
                        // into registers, 32 rows of a group per pass (grouped_gemm_bf16_swapab_nk.cu);
                        // kNK only, for a few rows per group
};
// (The same pingpong 128x128x64 with a 2x1 cluster was tried and never won on H100 for the issue's
// shapes: bench/results/moe_tune_h100.json at c244231, records "pingpong_128x128x64_c2x1"; it was
// dropped. The 1x1 kPingpong128x128 came back on the H200 probe's dense numbers: PERF_NOTES v14.)
// What each tile is, in enum order (the one place a tile's name and block shape are written):
// the tuner times every entry and writes `enum_name` into the table it generates; the tests
// instantiate every (tile, layout) the entries support.
struct GemmTileInfo {
  GemmTile tile;
  const char* name;       // "<schedule>_<M>x<N>x<K>_c<cluster>", as the tuner's records and the bench name it
  const char* enum_name;  // its C++ spelling, for the generated table
  int block_m;            // rows of a group per tile (kStreamSwapAb: per pass)
  int block_n;            // columns of D per tile (kStreamSwapAb: weight rows per pass)
  bool kn_weights;        // also compiled for weights in the KN layout (every CUTLASS tile)
};
constexpr GemmTileInfo kGemmTileInfo[] = {
    {GemmTile::kPingpong64x128, "pingpong_64x128x64_c1x1", "kPingpong64x128", 64, 128, true},
    {GemmTile::kCooperative128x128, "cooperative_128x128x64_c1x1", "kCooperative128x128", 128, 128, true},
    {GemmTile::kCooperative128x256, "cooperative_128x256x64_c2x1", "kCooperative128x256", 128, 256, true},
    {GemmTile::kPingpong64x256, "pingpong_64x256x64_c1x1", "kPingpong64x256", 64, 256, true},
    {GemmTile::kPingpong64x128k128, "pingpong_64x128x128_c1x1", "kPingpong64x128k128", 64, 128, true},
    {GemmTile::kPingpong128x128, "pingpong_128x128x64_c1x1", "kPingpong128x128", 128, 128, true},
    {GemmTile::kStreamSwapAb, "stream_swapab_256x32", "kStreamSwapAb", 32, 256, false},
};
constexpr int kNumGemmTiles = sizeof(kGemmTileInfo) / sizeof(kGemmTileInfo[0]);
constexpr bool gemm_tile_info_in_enum_order() {
  for (int i = 0; i < kNumGemmTiles; ++i)
    if (static_cast<int>(kGemmTileInfo[i].tile) != i) return false;
  return static_cast<int>(GemmTile::kStreamSwapAb) + 1 == kNumGemmTiles;
}
static_assert(gemm_tile_info_in_enum_order(), "kGemmTileInfo must list every GemmTile once, in enum order");
// Every tile, in enum order: what the tuner times and the host tests walk.
constexpr std::array<GemmTile, kNumGemmTiles> all_gemm_tiles() {
  std::array<GemmTile, kNumGemmTiles> tiles{};
  for (int i = 0; i < kNumGemmTiles; ++i) tiles[i] = kGemmTileInfo[i].tile;
  return tiles;
}
inline constexpr std::array<GemmTile, kNumGemmTiles> kGemmTiles = all_gemm_tiles();
constexpr const GemmTileInfo& gemm_tile_info(GemmTile tile) { return kGemmTileInfo[static_cast<int>(tile)]; }
constexpr const char* gemm_tile_name(GemmTile tile) { return gemm_tile_info(tile).name; }
constexpr int gemm_tile_block_m(GemmTile tile) { return gemm_tile_info(tile).block_m; }
constexpr int gemm_tile_block_n(GemmTile tile) { return gemm_tile_info(tile).block_n; }
// Whether `tile` is compiled for weights in `layout`.
constexpr bool gemm_tile_supports(GemmTile tile, MoeWeightLayout layout) {
  return layout == MoeWeightLayout::kNK || gemm_tile_info(tile).kn_weights;
}

// What the epilogue writes. kSwiglu (GEMM1 of the MoE): b's n = 2I rows per group are W1's
// gate and up rows interleaved in blocks of 8 (gate 8q..8q+7, then up 8q..8q+7, for q in
// [0, I/8)), and d is act [rows, n/2] = bf16(silu(bf16(gate)) * bf16(up)). kNK only, n % 16 == 0.
// (Bit-equal to GEMM + swiglu_rows_bf16 on every tile: moe_sm90_grouped_gemm_test.)
enum class GemmEpilogue { kStore, kSwiglu };

// Who writes a call's per-group arrays (each group's sizes, operand pointers and strides, kept in
// the call's workspace; CUTLASS tiles only, kStreamSwapAb needs none):
//   kSetupKernel  the call launches a small kernel that writes them from group_offsets and
//                 group_rows, then the GEMM;
//   kPrewritten   a kernel the caller ran earlier on the stream wrote them for these exact args
//                 (prepare_group_arrays, then write_group_arrays in grouped_gemm_bf16_sm90_setup.cuh),
//                 so the call launches the GEMM alone. The MoE's count + scan does this for both
//                 GEMMs of the layer, once it knows the offsets: two launches fewer per layer.
enum class GroupArrays { kSetupKernel, kPrewritten };

struct GroupedGemmArgs {
  const __nv_bfloat16* a = nullptr;
  // Rows of A gathered (kStreamSwapAb only): GEMM row r reads A row a_rows[r], rows
  // a_row_stride elements apart (a multiple of 8, at least k). The MoE path passes x and each
  // sorted pair's token, so no permuted copy of x is made. Null: A is packed, row r is row r.
  const std::int32_t* a_rows = nullptr;
  std::int64_t a_row_stride = 0;
  const __nv_bfloat16* b = nullptr;  // [groups, n, k] (kNK) or [groups, k, n] (kKN)
  __nv_bfloat16* d = nullptr;                   // [rows, n]; kSwiglu: [rows, n / 2]
  const std::int32_t* group_offsets = nullptr;  // [groups + 1], device
  const std::int32_t* group_rows = nullptr;     // [groups], device; null: offsets' differences
  int groups = 0;
  std::int64_t n = 0;
  std::int64_t k = 0;
  MoeWeightLayout layout = MoeWeightLayout::kNK;
  GemmTile tile = GemmTile::kPingpong64x128;
  GemmEpilogue epilogue = GemmEpilogue::kStore;
  // Split-K (above): 1..kMaxKSplits, k % (8 * k_splits) == 0, groups * k_splits <= 1024; with
  // k_splits > 1 only the CUTLASS tiles, GemmEpilogue::kStore and packed A. d_split_stride: the
  // elements between two slices' outputs (a multiple of 8, at least the rows of all groups times n).
  int k_splits = 1;
  std::int64_t d_split_stride = 0;
  void* workspace = nullptr;  // grouped_gemm_bf16_sm90_workspace_size(groups * k_splits) bytes, 256-aligned
  std::size_t workspace_bytes = 0;
  GroupArrays group_arrays = GroupArrays::kSetupKernel;
};

constexpr int kMaxKSplits = 8;

// True when this build has the Hopper kernels and `device` is an sm_90 GPU.
bool sm90_grouped_gemm_available(int device);
// Bytes of device workspace for one call with up to `groups` groups (per-group arrays plus the
// TMA descriptors the persistent kernel rewrites per SM). Pure function of `groups`.
std::size_t grouped_gemm_bf16_sm90_workspace_size(int groups);
Status grouped_gemm_bf16_sm90(const GroupedGemmArgs& args, cudaStream_t stream);

// ---- internal: between the dispatcher and the per-tile instantiation files ----
namespace detail {
// Device arrays the setup kernel fills; shapes/strides are CUTLASS types, kept opaque here.
// Carved from the caller's workspace by the dispatcher; each array holds kMaxGroups slots of
// kSlotBytes (enough for any CUTLASS problem shape, pointer or stride type).
constexpr int kMaxGroups = 1024;
constexpr std::size_t kSlotBytes = 16;
constexpr std::size_t kMaxCutlassWorkspaceBytes = std::size_t(256) * 4 * 128;  // 256 SMs x 4 TMA descriptors
struct GroupedGemmDeviceArrays {
  void* problem_shapes = nullptr;  // [groups] (M, N, K)
  void* ptr_a = nullptr;           // [groups] const element*
  void* ptr_b = nullptr;
  void* ptr_d = nullptr;
  void* stride_a = nullptr;  // [groups] CUTLASS InternalStride of each operand
  void* stride_b = nullptr;
  void* stride_d = nullptr;
  void* cutlass_workspace = nullptr;
  std::size_t cutlass_workspace_bytes = 0;
};
struct GroupedGemmLaunch {
  GroupedGemmArgs args;
  GroupedGemmDeviceArrays arrays;
  int sm_count = 0;
};
// One per (tile, layout); defined in grouped_gemm_bf16_sm90_<tile>_<layout>.cu.
// Each fills the per-group arrays on the device, then launches the persistent kernel.
#define FUSEKIT_SM90_GEMM_DECL(name) Status name(const GroupedGemmLaunch& launch, cudaStream_t stream);
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_pingpong64x128_nk)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_pingpong64x128_kn)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_coop128x128_nk)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_coop128x128_kn)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_coop128x256_nk)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_coop128x256_kn)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_pingpong64x256_nk)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_pingpong64x256_kn)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_pingpong64x128k128_nk)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_pingpong64x128k128_kn)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_pingpong128x128_nk)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_pingpong128x128_kn)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_pingpong64x128_nk_swiglu)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_coop128x128_nk_swiglu)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_coop128x256_nk_swiglu)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_pingpong64x256_nk_swiglu)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_pingpong64x128k128_nk_swiglu)
FUSEKIT_SM90_GEMM_DECL(gemm_sm90_pingpong128x128_nk_swiglu)
#undef FUSEKIT_SM90_GEMM_DECL
// kStreamSwapAb (grouped_gemm_bf16_swapab_nk.cu): needs none of the per-group arrays.
Status gemm_swapab_nk(const GroupedGemmArgs& args, cudaStream_t stream);
// The setup kernel of GroupArrays::kSetupKernel (grouped_gemm_bf16_sm90_setup.cu): a programmatic
// dependent of the kernel that wrote the offsets.
Status launch_grouped_gemm_setup(const GroupedGemmLaunch& launch, cudaStream_t stream);
}  // namespace detail

// The per-group arrays of up to kMaxPrewrittenGemms calls, for a kernel of the caller to write
// (GroupArrays::kPrewritten); passed to that kernel by value.
constexpr int kMaxPrewrittenGemms = 2;
struct GroupArraysToWrite {
  detail::GroupedGemmLaunch calls[kMaxPrewrittenGemms];
  int count = 0;
};
// Checks `args` as grouped_gemm_bf16_sm90 would (the same errors) and, for a CUTLASS tile, adds
// its arrays to `to_write` (a kStreamSwapAb call has none: nothing is added). Run it before any
// launch, so that bad arguments launch nothing; then launch the GEMM with args.group_arrays =
// kPrewritten after the kernel that writes them.
Status prepare_group_arrays(const GroupedGemmArgs& args, GroupArraysToWrite* to_write);

}  // namespace fusekit::cuda_moe::sm90
