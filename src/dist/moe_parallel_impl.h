// Shared by the parallel MoE entry points (moe_parallel_api.cpp) and the EP / TP bodies.
#pragma once

#include <cuda_runtime.h>

#include "dist/moe_parallel_internal.h"
#include "dist/moe_parallel_plan.h"
#include "dist/nccl_util.h"

namespace fusekit::dist {

// What every entry checks before it may communicate; its errors are local to the rank.
struct Prechecked {
  CommInfo comm;
  HeaderRegion header;
  char* workspace = nullptr;
};

// Everything about a forward call that one rank can check alone: the config, the
// communicator's size, this rank's weights, x / out / routed, the workspace size. Fills the
// plan. Routing logits are checked by moe_route / moe_forward themselves.
Status validate_forward(const ForwardCall& call, const CommInfo& comm, ParallelPlan* plan);

void record_mark(const ForwardCall& call, PhaseMark mark);

// Reads `count` headers back to the host (after the NCCL exchange on the same stream) and
// waits for them: the one host synchronisation of an EP call.
Status read_headers(const WireHeader* device_headers, std::int64_t count, WireHeader* host, cudaStream_t stream);

Status ep_forward(const ForwardCall& call, const Prechecked& pre);
Status tp_forward(const ForwardCall& call, const Prechecked& pre);

}  // namespace fusekit::dist
