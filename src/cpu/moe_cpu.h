// The `cpu` MoE backend: the oracle (moe_ref.h) behind the same view-based shape as the CUDA
// contract (src/cuda/moe/moe_cuda.h). Arguments arrive validated by src/api/moe.cpp; host
// memory only; the forward uses the caller's workspace and allocates nothing.
#pragma once

#include <cstddef>

#include "fusekit/moe.h"

namespace fusekit::cpu {

std::size_t moe_workspace_size_cpu(const MoeConfig& config);

Status moe_route_cpu(const MoeConfig& config, const MoeRouterInput& router, const MoeRouted& routed);
Status moe_align_cpu(const MoeConfig& config, const TensorView& topk_ids, const MoeAlignment& alignment);
Status moe_gemm1_swiglu_cpu(const MoeLayer& layer, const TensorView& x, const MoeAlignment& alignment,
                            const TensorView& act);
Status moe_gemm2_cpu(const MoeLayer& layer, const TensorView& act, const MoeAlignment& alignment,
                     const TensorView& topk_weights, const TensorView& y);
Status moe_finalize_cpu(const MoeConfig& config, const TensorView& y, const TensorView& out);
// `router` is used when `routed` is null.
Status moe_forward_cpu(const MoeLayer& layer, const TensorView& x, const MoeRouterInput* router,
                       const MoeRouted* routed, const TensorView& out, const MoeWorkspace& workspace);

}  // namespace fusekit::cpu
