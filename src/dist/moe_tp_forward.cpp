// Tensor-parallel MoE forward: the single-GPU forward on this rank's slice of the
// intermediate dimension (routing replicated), then a bf16 ncclAllReduce (sum) of out in
// place. No host synchronisation: capturable in a CUDA graph. Why bf16 on the wire and why it
// is deterministic: see fusekit/moe_parallel.h.
#include "dist/moe_parallel_impl.h"

namespace fusekit::dist {

Status tp_forward(const ForwardCall& call, const Prechecked& pre) {
  const MoeParallelLayer& layer = *call.layer;
  const ncclComm_t comm = pre.comm.comm;
  record_mark(call, kMarkStart);
  ParallelPlan plan;
  // Argument errors return here, before any collective: TP exchanges nothing per call
  // (moe_parallel_check compares the ranks' configs once).
  FUSEKIT_RETURN_IF_ERROR(validate_forward(call, pre.comm, &plan));
  TpLayout lay;
  FUSEKIT_RETURN_IF_ERROR(tp_layout(plan, &lay));
  for (PhaseMark m : {kMarkPrepared, kMarkCounted, kMarkDispatched}) record_mark(call, m);

  const std::int64_t T = call.x.shape[0];
  if (T > 0) {
    const MoeLayer local{plan.local, layer.weights};
    const MoeWorkspace ws{pre.workspace + lay.local_workspace, lay.local_workspace_bytes};
    FUSEKIT_RETURN_IF_ERROR(call.routed != nullptr
                                ? moe_forward_routed(local, call.x, *call.routed, call.out, ws, call.stream)
                                : moe_forward(local, call.x, *call.router, call.out, ws, call.stream));
  }
  record_mark(call, kMarkComputed);
  if (T > 0) {
    const auto count = static_cast<std::size_t>(T * layer.config.layer.hidden);
    FUSEKIT_NCCL_RETURN_IF_ERROR(
        ncclAllReduce(call.out.data, call.out.data, count, ncclBfloat16, ncclSum, comm, call.stream), comm);
  }
  record_mark(call, kMarkReturned);
  record_mark(call, kMarkEnd);
  return Status::Ok();
}

}  // namespace fusekit::dist
