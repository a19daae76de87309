// The Hopper prefill path of the `cuda` MoE backend: everything after route + align.
//
//   permute   xs[r] = x[sorted_token_ids[r] / k] for the real rows r of the aligned order;
//             inv[p] = r (the row of pair p); rows[e] = real rows of expert e
//   gemm1     h[r] = xs[r] . W1[e]^T              grouped GEMM, sm_90a wgmma + TMA   [rows, 2I]
//   swiglu    act[r, c] = silu(h[r, c]) * h[r, I + c]                                [rows, I]
//   gemm2     y[r] = act[r] . W2[e]^T             grouped GEMM                       [rows, H]
//   finalize  out[t] = sum_{j=0..k-1} w[t*k+j] * y[inv[t*k+j]], j in that order, fp32 (deterministic)
//
// The aligned order is align's (expert runs padded to block_m, padding at each run's tail); the
// GEMMs run each expert on its real rows only, so the padding costs memory, never FLOPs.
// Nothing is allocated and nothing is read back to the host: capturable in a CUDA graph.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/moe/sm90/gemm_config_sm90.h"
#include "fusekit/moe.h"
#include "fusekit/status.h"
#include "fusekit/tensor.h"

namespace fusekit::cuda_moe::sm90 {

struct ExpertsArgs {
  const __nv_bfloat16* x = nullptr;  // [T, H], rows x_row_stride apart
  std::int64_t x_row_stride = 0;
  const __nv_bfloat16* w1 = nullptr;  // kNK [E, 2I, H] | kKN [E, H, 2I]
  const __nv_bfloat16* w2 = nullptr;  // kNK [E, H, I]  | kKN [E, I, H]
  MoeWeightLayout layout = MoeWeightLayout::kNK;
  const std::int32_t* topk_ids = nullptr;      // [T*k]; ids outside [0, E) contribute nothing
  const float* topk_weights = nullptr;         // [T*k]
  const std::int32_t* sorted_token_ids = nullptr;        // align's [capacity]
  const std::int32_t* expert_offsets = nullptr;          // align's [E + 1]
  const std::int32_t* num_tokens_post_padded = nullptr;  // align's [1]
  std::int64_t capacity = 0;                             // rows of sorted_token_ids for this T
  __nv_bfloat16* out = nullptr;  // [T, H], rows out_row_stride apart
  std::int64_t out_row_stride = 0;
  std::int64_t tokens = 0;
  int top_k = 0;
  int num_experts = 0;
  std::int64_t hidden = 0;
  std::int64_t intermediate = 0;
  Sm90MoeConfig config;
  void* workspace = nullptr;  // experts_workspace_size(...) bytes, 256-byte aligned
  std::size_t workspace_bytes = 0;
};

// ---- The `cuda` backend's entry (forward.cpp calls these; stages.cpp sizes the workspace) ----
// True when the Hopper path serves prefill on `device`: a CUTLASS build, an sm_90 GPU, and
// FUSEKIT_MOE_SM90 not set to 0 (which forces the portable sm_80 kernels, for comparison).
bool prefill_enabled(int device);
// Workspace of the whole `cuda` forward when prefill may take this path: the backend's route +
// align regions (workspace_layout.h) followed by this path's buffers. 0 without CUTLASS.
std::size_t forward_workspace_size(const MoeConfig& config);
// Runs this path after forward's align; `workspace` is the caller's whole workspace (its route +
// align regions are in use and kept). Chooses the tiles (gemm_config_sm90.h).
struct AlignOutput {
  const std::int32_t* sorted_token_ids = nullptr;
  const std::int32_t* expert_offsets = nullptr;
  const std::int32_t* num_tokens_post_padded = nullptr;
  std::int64_t capacity = 0;
};
Status prefill_forward(const MoeLayer& layer, const TensorView& x, const std::int32_t* topk_ids,
                       const float* topk_weights, const AlignOutput& aligned, const TensorView& out,
                       const MoeWorkspace& workspace, cudaStream_t stream);

// Bytes this path needs beyond route + align, for up to `capacity` aligned rows and `pairs`
// pairs. Pure function of its arguments.
std::size_t experts_workspace_size(std::int64_t capacity, std::int64_t pairs, const MoeConfig& config);

Status experts_forward(const ExpertsArgs& args, cudaStream_t stream);

// The stage kernels (one per file: permute_rows_bf16.cu, swiglu_rows_bf16.cu,
// finalize_sorted_bf16.cu).
struct PermuteParams {
  const __nv_bfloat16* x = nullptr;
  std::int64_t x_row_stride = 0;
  const std::int32_t* sorted_token_ids = nullptr;
  const std::int32_t* expert_offsets = nullptr;
  const std::int32_t* num_tokens_post_padded = nullptr;
  std::int64_t capacity = 0;
  std::int64_t pairs = 0;
  int top_k = 0;
  int num_experts = 0;
  std::int64_t hidden = 0;
  __nv_bfloat16* xs = nullptr;      // [capacity, H]
  std::int32_t* inv = nullptr;      // [pairs]
  std::int32_t* group_rows = nullptr;  // [E]
};
Status launch_permute_rows_bf16(const PermuteParams& p, cudaStream_t stream);

struct SwigluParams {
  const __nv_bfloat16* h = nullptr;  // [capacity, 2I]
  __nv_bfloat16* act = nullptr;      // [capacity, I]
  const std::int32_t* sorted_token_ids = nullptr;
  const std::int32_t* num_tokens_post_padded = nullptr;
  std::int64_t capacity = 0;
  std::int64_t pairs = 0;
  std::int64_t intermediate = 0;
};
Status launch_swiglu_rows_bf16(const SwigluParams& p, cudaStream_t stream);

struct FinalizeSortedParams {
  const __nv_bfloat16* y = nullptr;  // [capacity, H], aligned order
  const std::int32_t* inv = nullptr;
  const std::int32_t* topk_ids = nullptr;
  const float* topk_weights = nullptr;
  __nv_bfloat16* out = nullptr;
  std::int64_t out_row_stride = 0;
  std::int64_t tokens = 0;
  int top_k = 0;
  int num_experts = 0;
  std::int64_t hidden = 0;
};
Status launch_finalize_sorted_bf16(const FinalizeSortedParams& p, cudaStream_t stream);

}  // namespace fusekit::cuda_moe::sm90
