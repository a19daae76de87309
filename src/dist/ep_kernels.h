// Launchers of the expert-parallel kernels (one kernel per file, src/dist/ep_*.cu). They take
// raw device pointers and return an error; arguments arrive validated by moe_ep_forward.cpp.
//
// Buffers (see EpLayout in moe_parallel_plan.h):
//   dest_plan  [T, R, 2] int32   row position / first pair in owner d's send block, or -1
//   offsets    [3, R+1]  int32   exclusive prefix sums: send rows per owner, received rows per
//                                source, received pairs per source
//   meta row   [2 + 2k]  int32   pair offset in the block, pair count c, c local expert ids,
//                                (k - c) x -1, c fp32 weights (bits), (k - c) x 0
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dist/moe_parallel_plan.h"
#include "fusekit/status.h"

namespace fusekit::dist {

struct EpDims {
  std::int64_t tokens = 0;  // T on this rank
  std::int32_t top_k = 0;
  std::int32_t num_experts = 0;
  std::int32_t experts_per_rank = 0;
  std::int32_t ranks = 0;
  std::int64_t hidden = 0;  // H, multiple of 8
  std::int32_t meta_width = 0;
};

// offsets[] sections.
FUSEKIT_DIST_HD std::int64_t send_rows_offsets(std::int64_t) { return 0; }
FUSEKIT_DIST_HD std::int64_t recv_rows_offsets(std::int64_t ranks) { return ranks + 1; }
FUSEKIT_DIST_HD std::int64_t recv_pairs_offsets(std::int64_t ranks) { return 2 * (ranks + 1); }

struct EpPlanArgs {
  EpDims dims;
  const std::int32_t* topk_ids;  // [T, k]
  std::int32_t* dest_plan;       // [T, R, 2]
  WireHeader header;             // template: config fields; rows/pairs filled per owner
  WireHeader* send_headers;      // [R]
};
Status launch_ep_plan_rows(const EpPlanArgs& args, cudaStream_t stream);

// headers[0..ranks) = header (invalid calls; moe_parallel_check).
Status launch_ep_write_headers(const WireHeader& header, std::int32_t ranks, WireHeader* headers,
                               cudaStream_t stream);

// offsets from the rows/pairs of the send headers and the received headers.
Status launch_ep_offsets(const WireHeader* send_headers, const WireHeader* recv_headers, std::int32_t ranks,
                         std::int32_t* offsets, cudaStream_t stream);

struct EpPackArgs {
  EpDims dims;
  const void* x;  // [T, H] bf16, row stride x_stride elements
  std::int64_t x_stride;
  const std::int32_t* topk_ids;     // [T, k]
  const float* topk_weights;        // [T, k]
  const std::int32_t* dest_plan;    // [T, R, 2]
  const std::int32_t* offsets;      // [3, R+1]
  void* send_x;                     // [rows, H] bf16
  std::int32_t* send_meta;          // [rows, meta_width]
};
Status launch_ep_pack_rows(const EpPackArgs& args, cudaStream_t stream);

struct EpExpandArgs {
  EpDims dims;
  std::int64_t recv_rows;  // rows received from all sources
  const void* recv_x;      // [recv_rows, H] bf16
  const std::int32_t* recv_meta;
  const std::int32_t* offsets;
  void* pair_x;            // [pairs, H] bf16
  std::int32_t* pair_ids;  // [pairs] local expert ids
  float* pair_weights;     // [pairs]
};
Status launch_ep_expand_pairs(const EpExpandArgs& args, cudaStream_t stream);

struct EpReduceArgs {
  EpDims dims;
  std::int64_t recv_rows;
  const std::int32_t* recv_meta;
  const std::int32_t* offsets;
  const void* pair_y;  // [pairs, H] bf16: router weight x expert output, per pair
  void* rows_out;      // [recv_rows, H] bf16: per received row, its pairs summed in slot order
};
Status launch_ep_reduce_rows(const EpReduceArgs& args, cudaStream_t stream);

struct EpCombineArgs {
  EpDims dims;
  const std::int32_t* dest_plan;  // [T, R, 2]
  const std::int32_t* offsets;
  const void* returned;  // [send rows, H] bf16: each row's partial sum, back from its owner
  void* out;             // [T, H] bf16, row stride out_stride elements
  std::int64_t out_stride;
};
Status launch_ep_combine_rows(const EpCombineArgs& args, cudaStream_t stream);

}  // namespace fusekit::dist
