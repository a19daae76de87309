// Host-side plan of the parallel MoE layer, shared by the NCCL paths, their kernels and the
// CPU-only tests: which mode and rank count a config asks for, expert ownership, the
// configuration fingerprint and the 64-byte header every rank exchanges, the workspace carve,
// and a host reference of the EP dispatch plan the plan kernel computes.
//
// Built in every configuration (src/dist/host/ is part of the CPU sources), so nothing here
// needs NCCL or CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fusekit/moe.h"
#include "fusekit/moe_parallel.h"
#include "fusekit/status.h"

#if defined(__CUDACC__)
#define FUSEKIT_DIST_HD __host__ __device__ __forceinline__
#else
#define FUSEKIT_DIST_HD inline
#endif

namespace fusekit::dist {

enum class ParallelKind : std::int32_t { kExpert = 1, kTensor = 2 };

// Expert e lives on rank e / (E/R) as local expert e % (E/R). Ids outside [0, E) have no owner
// (-1) and are dropped by the EP path.
FUSEKIT_DIST_HD std::int32_t expert_owner(std::int32_t expert, std::int32_t num_experts, std::int32_t experts_per_rank) {
  return (expert >= 0 && expert < num_experts) ? expert / experts_per_rank : -1;
}
FUSEKIT_DIST_HD std::int32_t local_expert(std::int32_t expert, std::int32_t experts_per_rank) {
  return expert % experts_per_rank;
}

// A config resolved into what the parallel paths need.
struct ParallelPlan {
  ParallelKind kind = ParallelKind::kTensor;
  std::int64_t ranks = 1;             // R
  std::int64_t experts_per_rank = 0;  // EP: E/R; TP: E
  std::int64_t max_tokens = 0;        // M, per rank and call
  std::int64_t top_k = 0;             // k of the layer
  std::int64_t max_send_rows = 0;     // EP: M * min(R, k)
  std::int64_t max_recv_rows = 0;     // EP: R * M
  std::int64_t max_pairs = 0;         // EP: R * M * min(k, E/R) — the local forward's max_tokens
  std::int64_t meta_width = 0;        // EP: int32 per row of metadata = 2 + 2k
  MoeConfig local;                    // the single-GPU config a rank runs
};
// Validates the parallel parts of `config` (and, through moe_workspace_size, the layer) and
// resolves it. Errors name the field.
Status resolve_plan(const MoeParallelConfig& config, ParallelPlan* plan);

// 64-bit FNV-1a over every field that must agree across ranks (not the backend, which each
// rank may choose).
std::uint64_t config_fingerprint(const MoeParallelConfig& config);

// What every rank sends every rank before any data (EP), or all-gathers (check). 16 int32.
struct WireHeader {
  std::int32_t magic;
  std::int32_t valid;  // 1: the sender's call passed its local checks
  std::uint32_t fingerprint_lo;
  std::uint32_t fingerprint_hi;
  std::int32_t rows;    // EP: token rows the sender sends the receiver
  std::int32_t pairs;   // EP: (token, expert) pairs in those rows
  std::int32_t tokens;  // T on the sender
  std::int32_t kind;
  std::int32_t ranks;
  std::int32_t num_experts;
  std::int32_t top_k;
  std::int32_t hidden;
  std::int32_t intermediate;
  std::int32_t max_tokens;  // clamped to int32 (the fingerprint holds the exact value)
  std::int32_t layout;
  std::int32_t routing_mode;
};
static_assert(sizeof(WireHeader) == 64, "the header is 16 int32 on the wire");
constexpr std::int32_t kHeaderMagic = 0x46'4b'4d'50;  // "FKMP"
constexpr int kHeaderInts = 16;

// The header this rank sends: config fields + fingerprint; rows/pairs left 0 (the plan kernel
// fills them). For an invalid config the fields are filled as far as they are known.
WireHeader make_header(const MoeParallelConfig& config, std::int64_t tokens, bool valid);

// Compares the R headers every rank received (identical config fields on every rank) and
// returns the verdict every valid rank reaches alike, in this order: a missing header, the
// first field (then the fingerprint) that differs from rank 0's, the first rank whose own
// checks failed, or OK. (A rank whose own checks failed returns its own error instead.)
// `what` names the entry point for the message.
Status compare_headers(const WireHeader* headers, std::int64_t ranks, const char* what);

constexpr std::size_t kWorkspaceAlign = 256;
constexpr std::size_t align_up(std::size_t v) { return (v + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }

// The header region at the start of every parallel workspace: send headers [R], receive
// headers [R], offsets (send rows, received rows, received pairs) [3, R+1] int32.
struct HeaderRegion {
  std::size_t send = 0, recv = 0, offsets = 0, bytes = 0;
};
HeaderRegion header_region(std::int64_t ranks);

// Byte offsets of the EP workspace carve (after the header region), 256-aligned.
struct EpLayout {
  HeaderRegion header;
  std::size_t topk_ids = 0;      // [M, k] int32 (own routing)
  std::size_t topk_weights = 0;  // [M, k] fp32
  std::size_t dest_plan = 0;     // [M, R, 2] int32: row position and first pair in each owner's block
  std::size_t send_x = 0;        // [max_send_rows, H] bf16; later the returned rows
  std::size_t send_meta = 0;     // [max_send_rows, meta_width] int32
  std::size_t recv_x = 0;        // [max_recv_rows, H] bf16; later the reduced rows sent back
  std::size_t recv_meta = 0;     // [max_recv_rows, meta_width] int32
  std::size_t pair_x = 0;        // [max_pairs, H] bf16
  std::size_t pair_ids = 0;      // [max_pairs] int32 (local expert ids)
  std::size_t pair_weights = 0;  // [max_pairs] fp32
  std::size_t pair_y = 0;        // [max_pairs, H] bf16
  std::size_t local_workspace = 0;
  std::size_t local_workspace_bytes = 0;
  std::size_t total = 0;
};
Status ep_layout(const ParallelPlan& plan, EpLayout* layout);

struct TpLayout {
  HeaderRegion header;
  std::size_t local_workspace = 0;
  std::size_t local_workspace_bytes = 0;
  std::size_t total = 0;
};
Status tp_layout(const ParallelPlan& plan, TpLayout* layout);

// Host reference of the EP plan kernel. For token t and owner rank d (ascending t within d):
// dest_plan[(t*R + d)*2 + 0] = row position in d's block or -1, [.. + 1] = first pair
// position in d's block (pairs counted in slot order) or -1. rows[d], pairs[d]: block sizes.
struct EpPlanReference {
  std::vector<std::int32_t> dest_plan;
  std::vector<std::int32_t> rows;
  std::vector<std::int32_t> pairs;
};
EpPlanReference ep_plan_reference(const std::int32_t* topk_ids, std::int64_t tokens, std::int64_t top_k,
                                  std::int64_t num_experts, std::int64_t ranks);

// The owner ranks of a token's slots, each once, in the order the slots first name them: the
// order in which pack writes rows and combine sums them.
int token_owners(const std::int32_t* ids, std::int64_t top_k, std::int32_t num_experts, std::int32_t experts_per_rank,
                 std::int32_t* owners);

}  // namespace fusekit::dist
