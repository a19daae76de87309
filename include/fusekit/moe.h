// fusekit/moe.h — BF16 fused Mixture-of-Experts FFN forward, and each of its stages.
//
//   x [T, H] bf16, router_logits [T, E] fp32|bf16
//   1 route     fp32 softmax | sigmoid + correction bias + grouped top-k  -> topk_ids [T, k] int32,
//               topk_weights [T, k] fp32 (optionally renormalised, times routed_scaling_factor)
//   2 align     pairs p = t*k + j grouped by expert, each expert's run padded to block_m
//               -> sorted_token_ids, expert_ids per block, expert_offsets, num_tokens_post_padded
//   3 gemm1     act[row] = silu(x[t] . W1[e] gate rows) * (x[t] . W1[e] up rows)   [rows, I] bf16
//   4 gemm2     y[p] = topk_weight[p] * (act[row] . W2[e])                         [T*k, H] bf16
//   5 finalize  out[t] = sum_{j=0..k-1} y[t*k + j], in that fixed order (deterministic)
//
// Weights: layout kNK is torch/HF nn.Linear order (W1 [E, 2I, H], W2 [E, H, I]); kKN is
// [E, K, N] (W1 [E, H, 2I], W2 [E, I, H]). Inside 2I the gate rows come first, then up.
//
// moe_forward never allocates and never synchronises with the host on the `cuda` backend:
// it can be captured in a CUDA graph and replayed for any T <= config.max_tokens. The
// workspace is sized once by moe_workspace_size(config) and owned by the caller.
//
// Defined behaviour on awkward inputs (all backends):
//   - NaN router logits are -inf for selection, so ids always stay in [0, E). Softmax: a NaN
//     expert gets probability 0 and the others are normalised among themselves; a row of only
//     NaN/-inf picks experts 0..k-1 with weight 0. Sigmoid: a NaN expert scores 0 (its biased
//     score is its bias). Ties go to the lower expert (and group) index. Logits of +inf are
//     not supported (weights become NaN; ids stay in range).
//   - Precomputed topk_ids outside [0, E) (moe_forward_routed, moe_align) belong to no expert:
//     their slot contributes nothing to out.
//   - T = 0 is valid: nothing is launched or written.
// Errors: every entry point validates all of its arguments first and returns a Status naming
// the argument, the expectation and what was given; nothing is launched or written then.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fusekit/status.h"
#include "fusekit/tensor.h"

namespace fusekit {

enum class MoeRoutingMode {
  kSoftmaxTopK,         // Mixtral, Qwen-MoE
  kSigmoidGroupedTopK,  // DeepSeek-V3: sigmoid + correction bias, top groups, then top-k
};

enum class MoeTopkNorm {
  kNone,         // weights are the routing probabilities of the chosen experts
  kRenormalize,  // chosen weights divided by their sum
};

struct MoeRouting {
  MoeRoutingMode mode = MoeRoutingMode::kSoftmaxTopK;
  MoeTopkNorm norm = MoeTopkNorm::kRenormalize;
  std::int64_t num_groups = 1;         // n_group (sigmoid mode); E % num_groups == 0
  std::int64_t topk_groups = 1;        // topk_group (sigmoid mode); <= num_groups
  float routed_scaling_factor = 1.0f;  // multiplies the final weights (both modes)
};

enum class MoeWeightLayout { kNK, kKN };

// The order of W1's 2I gate/up rows (layout kNK). kHalves: gate rows 0..I-1, then up rows
// (torch/HF order). kInterleaved8: blocks of 8 rows alternate, gate 8q..8q+7 then up
// 8q..8q+7 for q in [0, I/8): the order the Hopper GEMM1 with SwiGLU in its epilogue reads.
enum class MoeGateUpOrder { kHalves, kInterleaved8 };

enum class MoeBackend {
  kAuto,     // FUSEKIT_MOE_BACKEND if set, else the best for the tensors' device
  kCpu,      // the oracle: fp32 math with fp64 accumulation; CPU tensors
  kCuda,     // the fused CUDA path: graph-safe, no host sync
  kCudaRef,  // independent cross-check: permute + per-expert cuBLAS GEMMs (syncs with the host)
};

// "cpu" | "cuda" | "cuda-ref" | "auto"; an unknown name is an error listing the valid ones.
Status parse_moe_backend(const char* name, MoeBackend* backend);
const char* moe_backend_name(MoeBackend backend);

struct MoeConfig {
  std::int64_t num_experts = 0;   // E, 1..512
  std::int64_t top_k = 0;         // 1..E
  std::int64_t hidden = 0;        // H, multiple of 8
  std::int64_t intermediate = 0;  // I, multiple of 8
  std::int64_t max_tokens = 0;    // the workspace serves any T <= max_tokens
  MoeWeightLayout layout = MoeWeightLayout::kNK;
  MoeGateUpOrder gate_up_order = MoeGateUpOrder::kHalves;  // kInterleaved8: layout kNK only
  MoeRouting routing;
  MoeBackend backend = MoeBackend::kAuto;
  // Expert parallelism runs through fusekit/moe_parallel.h; a single-device call with
  // expert_parallel_size > 1 is an early error.
  std::int64_t expert_parallel_size = 1;
};

struct MoeWeights {
  TensorView w1;  // kNK: [E, 2I, H]; kKN: [E, H, 2I]; bf16, contiguous
  TensorView w2;  // kNK: [E, H, I];  kKN: [E, I, H];  bf16, contiguous
};

// A layer: its shape and its weights, which every forward call shares.
struct MoeLayer {
  MoeConfig config;
  MoeWeights weights;
};

struct MoeWorkspace {
  // Device memory for the cuda backends (256-byte aligned), host memory for cpu (16-byte aligned).
  void* data = nullptr;
  std::size_t bytes = 0;
};

struct MoeRouterInput {
  TensorView logits;           // [T, E] fp32 or bf16
  TensorView correction_bias;  // [E] fp32; sigmoid mode only (empty view: no bias)
};

struct MoeRouted {
  TensorView topk_ids;      // [T, k] int32, each in [0, E)
  TensorView topk_weights;  // [T, k] fp32
};

// Bytes of workspace moe_forward needs for any T <= config.max_tokens, any backend. Pure
// function of the config.
Status moe_workspace_size(const MoeConfig& config, std::size_t* bytes);

// Optional, once per layer (an engine's weight loading). moe_prepared_config(config) is config
// with the weight format the fastest kernels of the current device read: layout kNK, and with
// the `cuda` backend on a Hopper GPU (single device) W1 in kInterleaved8 order where that pays
// (intermediate <= 4096, measured), so that the grouped GEMM1 applies SwiGLU in its epilogue. moe_prepare_weights writes `src` (config's
// layout and gate/up order) into `dst` (to's); `to` may differ from config in layout and
// gate_up_order only, and W1 is reordered from kHalves only. Then forward with MoeLayer{to, dst}.
// Host weights are repacked on the host before returning; device weights on `stream`.
//   MoeConfig to = moe_prepared_config(config);
//   moe_prepare_weights(config, to, src, dst, stream);   // dst: shapes of to.layout
MoeConfig moe_prepared_config(const MoeConfig& config);
Status moe_prepare_weights(const MoeConfig& config, const MoeConfig& to, const MoeWeights& src,
                           const MoeWeights& dst, void* stream);

// The whole layer from router logits: route, align, gemm1+SwiGLU, gemm2 x weight, finalize.
Status moe_forward(const MoeLayer& layer, const TensorView& x, const MoeRouterInput& router, const TensorView& out,
                   const MoeWorkspace& workspace, void* stream);
// The layer with routing done elsewhere (engines that route themselves).
Status moe_forward_routed(const MoeLayer& layer, const TensorView& x, const MoeRouted& routed,
                          const TensorView& out, const MoeWorkspace& workspace, void* stream);

// ---- Stages: each a public function with its own CPU oracle and tests. The backend follows
// the tensors' device (cpu or cuda); config.backend and config.max_tokens are not used. On cuda
// the GEMM stages run the portable grouped kernels (block_m-padded alignment) on every GPU; on
// Hopper moe_forward runs its own grouped pipeline (packed alignment, CUTLASS kernels), which
// these functions do not expose, so they are the way to study the portable path, not the
// forward's cost. ----

// The output of align. capacity: at least moe_align_capacity(T, k, E, block_m) rows and a
// multiple of block_m (a buffer sized for more tokens may be reused). Each expert's run holds
// its pairs in increasing pair index, then padding up to a multiple of block_m; rows past the
// padded total hold T*k as well. All four tensors: packed int32 on one device.
struct MoeAlignment {
  std::int64_t block_m = 0;
  TensorView sorted_token_ids;        // [capacity] int32: pair index t*k+j; padding rows hold T*k
  TensorView expert_ids;              // [capacity / block_m] int32: expert of each block; -1 past the end
  TensorView expert_offsets;          // [E + 1] int32: padded start row of each expert; [E] = total
  TensorView num_tokens_post_padded;  // [1] int32: the padded total
};
std::int64_t moe_align_capacity(std::int64_t tokens, std::int64_t top_k, std::int64_t num_experts,
                                std::int64_t block_m);
// The block_m that moe_gemm1_swiglu / moe_gemm2 accept for tensors on `device` (cuda: the one
// its grouped GEMMs are built for, 0 in a build without CUDA; cpu: any block_m >= 1 works, this
// is the cpu forward's own choice). moe_align accepts any block_m in [1, 4096].
std::int64_t moe_align_block_m(const MoeConfig& config, DeviceType device);

Status moe_route(const MoeConfig& config, const MoeRouterInput& router, const MoeRouted& routed, void* stream);
Status moe_align(const MoeConfig& config, const TensorView& topk_ids, const MoeAlignment& alignment, void* stream);
// act: [capacity, I] bf16, rows in sorted order (padding rows are written with zeros).
Status moe_gemm1_swiglu(const MoeLayer& layer, const TensorView& x, const MoeAlignment& alignment,
                        const TensorView& act, void* stream);
// y: [T*k, H] bf16, row p = topk_weights[p] * (act[row of p] . W2[e]).
Status moe_gemm2(const MoeLayer& layer, const TensorView& act, const MoeAlignment& alignment,
                 const TensorView& topk_weights, const TensorView& y, void* stream);
// out[t] = sum_j y[t*k + j] in j order; fp32 sum, bf16 out.
Status moe_finalize(const MoeConfig& config, const TensorView& y, const TensorView& out, void* stream);

}  // namespace fusekit
