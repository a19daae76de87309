// Internal entry of the parallel MoE forward, for fusekit's own benchmark: the public
// moe_parallel_forward[_routed] plus optional CUDA events recorded at the phase boundaries,
// so `fusekit bench moe-ep` can split a layer's time into communication and compute.
#pragma once

#include <cuda_runtime.h>

#include "fusekit/moe_parallel.h"

namespace fusekit::dist {

// EP: prepared = routed + planned + packed; counted = headers exchanged and read on the host;
// dispatched = token rows exchanged; computed = expand + local forward + row reduce;
// returned = partial rows exchanged back; end = combined into out.
// TP: start..computed is the local forward, computed..returned the all-reduce; the other
// marks coincide. Communication = (prepared..dispatched) + (computed..returned).
enum PhaseMark : int {
  kMarkStart = 0,
  kMarkPrepared,
  kMarkCounted,
  kMarkDispatched,
  kMarkComputed,
  kMarkReturned,
  kMarkEnd,
  kNumMarks
};

// Events created by the caller (with timing); null entries are skipped.
struct PhaseMarks {
  cudaEvent_t events[kNumMarks] = {};
};

struct ForwardCall {
  const MoeParallelLayer* layer = nullptr;
  TensorView x;
  const MoeRouterInput* router = nullptr;  // exactly one of router / routed
  const MoeRouted* routed = nullptr;
  TensorView out;
  MoeWorkspace workspace;
  cudaStream_t stream = nullptr;
  PhaseMarks* marks = nullptr;
};

Status parallel_forward(const ForwardCall& call);

}  // namespace fusekit::dist
