// fusekit/moe_parallel.h — the BF16 MoE layer spread over R GPUs through NCCL: expert
// parallelism (EP) and tensor parallelism (TP). One process (or one thread) per GPU; every
// rank calls the same entry point with the same MoeParallelConfig.
//
// Expert parallelism (config.layer.expert_parallel_size = R): rank r owns experts
// [r*E/R, (r+1)*E/R). Each rank routes its own T_r tokens (T may differ between ranks, 0 too),
//   1 plan      per (token, owner rank): one row to send (a token goes once to each rank that
//               owns at least one of its top-k experts), with that rank's local expert ids and
//               router weights; per-rank row and pair counts — on the device.
//   2 counts    every rank sends every rank a 64-byte header (counts + configuration); the
//               headers are read back on the host: ONE device-to-host read and stream
//               synchronisation per call. NCCL point-to-point sizes are host values, so exact
//               sizes need this read; the alternative, fixed worst-case transfers, would also
//               make every rank run its local experts on the worst-case number of rows (the
//               single-GPU forward takes its token count from the host). Consequence: the EP
//               forward cannot be captured in a CUDA graph (capturing it is an early error).
//   3 dispatch  token rows (bf16) and their metadata, grouped ncclSend/ncclRecv.
//   4 local     each received row is expanded to one row per (token, local expert) pair and the
//               single-GPU moe_forward_routed runs with top_k = 1 on E/R experts; the pairs of a
//               row are summed (fp32, slot order) back into one bf16 row.
//   5 combine   rows return to their sender (grouped ncclSend/ncclRecv, bf16) and
//               out[t] = bf16(sum over owner ranks in ascending order of the returned rows),
//               accumulated in fp32. Fixed orders everywhere: the output is
//               bit-identical run to run. Against the single-GPU forward it differs by one extra
//               bf16 rounding of each rank's partial sum (relative L2 ~ 1e-3).
//   Wire traffic per rank and call: at most T*min(R, k) rows of H bf16 each way.
//
// Tensor parallelism (tensor_parallel_size = R): rank r holds columns [r*I/R, (r+1)*I/R) of
// the intermediate dimension — W1's gate rows and up rows of that range and W2's columns
// (moe_parallel_slice_weights cuts them). Each rank runs the single-GPU forward on all tokens
// with I/R (routing is replicated and identical), then out is summed with ncclAllReduce IN
// BF16, in place. With R = 2 that is exactly fp32 accumulation then one rounding (bf16 + bf16
// is rounded once); with R > 2 each ring step rounds to bf16 (error grows ~sqrt(R-1) * 2^-9).
// NCCL reduces in a fixed order for a given size, rank count and topology, so the result is
// deterministic run to run and identical on every rank. The TP forward never synchronises
// with the host and can be captured in a CUDA graph; it does not exchange configurations per
// call: call moe_parallel_check once when the layer is set up.
//
// Errors: an argument error is returned before anything is launched or sent. A rank whose
// call is invalid still takes part in the EP header exchange (and in moe_parallel_check)
// flagged as invalid, so every rank returns an error and none hangs: mismatched configurations
// (compared field by field and by a 64-bit fingerprint), E not divisible by R, a communicator
// whose size is not R, T above max_tokens. Only errors found before the exchange can happen —
// a null or foreign communicator, a workspace too small to hold the headers, the wrong current
// device, stream capture — return at once on the rank that makes them (like any collective
// called by only some ranks, its peers then wait).
//
// NVLink multicast (NVLS) is never needed here; set NCCL_NVLS_ENABLE=0 on shared machines.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fusekit/moe.h"
#include "fusekit/status.h"
#include "fusekit/tensor.h"

namespace fusekit {

// An NCCL communicator held opaquely so this header needs no nccl.h: `nccl_comm` is an
// ncclComm_t (cast to void*). Communicators made by the caller work as well as those made by
// the helpers below.
struct MoeComm {
  void* nccl_comm = nullptr;
};
// An ncclUniqueId, for moe_comm_init_rank.
struct MoeCommId {
  unsigned char bytes[128] = {};
};

Status moe_comm_unique_id(MoeCommId* id);
// One rank of a multi-process communicator; call with the rank's device current (cudaSetDevice).
Status moe_comm_init_rank(const MoeCommId& id, int ranks, int rank, MoeComm* comm);
// `ranks` communicators for `devices[0..ranks)` in one process (ncclCommInitAll).
Status moe_comm_init_all(int ranks, const int* devices, MoeComm* comms);
Status moe_comm_destroy(MoeComm* comm);
// The communicator's size, this process's rank in it, and its CUDA device.
Status moe_comm_query(const MoeComm& comm, int* ranks, int* rank, int* device);

struct MoeParallelConfig {
  // The whole layer as one GPU would hold it: all E experts, the full I. max_tokens is the
  // most tokens ONE rank passes in one call. expert_parallel_size = R selects expert
  // parallelism.
  MoeConfig layer;
  // R > 1 selects tensor parallelism (layer.expert_parallel_size must then be 1). With both
  // sizes 1 the layer runs on a single rank (a communicator of size 1).
  std::int64_t tensor_parallel_size = 1;
};

struct MoeParallelLayer {
  MoeParallelConfig config;
  // This rank's share (rank = the communicator's rank), bf16, contiguous, on this rank's GPU:
  //   EP: experts [r*E/R, (r+1)*E/R):  kNK W1 [E/R, 2I, H], W2 [E/R, H, I]; kKN transposed.
  //   TP: intermediate slice I/R:      kNK W1 [E, 2I/R, H], W2 [E, H, I/R]; kKN W1 [E, H, 2I/R],
  //       W2 [E, I/R, H]; inside 2I/R this rank's gate rows come first, then its up rows.
  MoeWeights weights;
  MoeComm comm;
};

// The single-GPU configuration each rank runs on its share of the weights; its weight shapes
// are those of the rank's share. EP: E/R experts, top_k 1 and max_tokens R*M*min(k, E/R)
// (each received (token, expert) pair is one row). TP: I/R, everything else as the layer.
Status moe_parallel_local_config(const MoeParallelConfig& config, MoeConfig* local);

// Bytes of device workspace one rank needs for any T <= config.layer.max_tokens. EP needs
// buffers for the worst case (every token of every rank sent here with all its experts
// local): about (R*M*min(k, E/R) * 2 + M*min(R,k) + R*M) * H * 2 bytes plus the local
// forward's workspace for R*M*min(k, E/R) pairs. TP: the local forward's workspace.
Status moe_parallel_workspace_size(const MoeParallelConfig& config, std::size_t* bytes);

// Copies rank `rank`'s share of the full weights (`full`, shapes of config.layer, host or
// device) into `dst` (the shapes above, host or device), both layouts. Device copies run on
// `stream` (cudaMemcpy2DAsync); host-to-host copies are done before returning.
Status moe_parallel_slice_weights(const MoeParallelConfig& config, std::int64_t rank, const MoeWeights& full,
                                  const MoeWeights& dst, void* stream);
// EP only: views of rank `rank`'s experts inside `full` (no copy; experts are contiguous).
Status moe_parallel_expert_views(const MoeParallelConfig& config, std::int64_t rank, const MoeWeights& full,
                                 MoeWeights* views);

// Collective: every rank compares its configuration with every other rank's (all-gather of a
// 64-byte record holding the fields and a fingerprint) and checks the communicator's size.
// Returns the same verdict on every rank. Synchronises `stream` with the host.
Status moe_parallel_check(const MoeParallelLayer& layer, const MoeWorkspace& workspace, void* stream);

// The layer: x [T, H] bf16 -> out [T, H] bf16 on this rank's GPU; router logits [T, E] for
// the FULL expert set. For EP, out may be x itself (x is read before out is written).
Status moe_parallel_forward(const MoeParallelLayer& layer, const TensorView& x, const MoeRouterInput& router,
                            const TensorView& out, const MoeWorkspace& workspace, void* stream);
// The same with routing done elsewhere: topk_ids [T, k] int32 in [0, E) (global expert ids),
// topk_weights [T, k] fp32. EP drops a pair whose id is outside [0, E); TP passes the ids to
// moe_forward_routed as they are.
Status moe_parallel_forward_routed(const MoeParallelLayer& layer, const TensorView& x, const MoeRouted& routed,
                                   const TensorView& out, const MoeWorkspace& workspace, void* stream);

}  // namespace fusekit
