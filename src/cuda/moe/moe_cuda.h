// Internal contract between the API layer (src/api/moe.cpp: validates, picks the backend)
// and the CUDA MoE backends. Arguments arrive validated: shapes, dtypes, devices,
// alignment, T <= max_tokens. These functions only carve the workspace and launch; they
// never allocate and (for the `cuda` backend) never synchronise with the host.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "fusekit/moe.h"

namespace fusekit::cuda_moe {

// Workspace bytes the `cuda` backend needs for any T <= config.max_tokens.
std::size_t workspace_size(const MoeConfig& config);
// Workspace bytes the `cuda-ref` backend needs.
std::size_t ref_workspace_size(const MoeConfig& config);

// Stages (cuda backend).
Status route(const MoeConfig& config, const MoeRouterInput& router, const MoeRouted& routed, cudaStream_t stream);
Status align(const MoeConfig& config, const TensorView& topk_ids, const MoeAlignment& alignment, cudaStream_t stream);
Status gemm1_swiglu(const MoeLayer& layer, const TensorView& x, const MoeAlignment& alignment, const TensorView& act,
                    cudaStream_t stream);
Status gemm2(const MoeLayer& layer, const TensorView& act, const MoeAlignment& alignment,
             const TensorView& topk_weights, const TensorView& y, cudaStream_t stream);
Status finalize(const MoeConfig& config, const TensorView& y, const TensorView& out, cudaStream_t stream);

// Whole layer, `cuda` backend. `router` is used when `routed` is null; otherwise routing is
// skipped and *routed is read.
Status forward(const MoeLayer& layer, const TensorView& x, const MoeRouterInput* router, const MoeRouted* routed,
               const TensorView& out, const MoeWorkspace& workspace, cudaStream_t stream);
// Whole layer, `cuda-ref` backend: same contract, independent implementation (permute +
// per-expert cuBLAS GEMMs); may synchronise with the host.
Status ref_forward(const MoeLayer& layer, const TensorView& x, const MoeRouterInput* router, const MoeRouted* routed,
                   const TensorView& out, const MoeWorkspace& workspace, cudaStream_t stream);

// The weight format the `cuda` kernels of the current device read best (moe_prepared_config).
MoeConfig prepared_config(const MoeConfig& config);
// block_m the `cuda` grouped GEMMs are built for; gemm1_swiglu/gemm2 return an
// invalid-argument error naming block_m for any other alignment.block_m.
std::int64_t align_block_m(const MoeConfig& config);

// Repacks weights from config's format into `to`'s (validated by moe_prepare_weights), on the
// stream: a transpose between layouts, W1's rows moved into to.gate_up_order, or a device copy.
Status prepare_weights(const MoeConfig& config, const MoeConfig& to, const MoeWeights& src, const MoeWeights& dst,
                       cudaStream_t stream);

}  // namespace fusekit::cuda_moe
