// Public entry points of fusekit/moe_parallel.h (NCCL builds): the checks every rank can make
// alone, then the expert- or tensor-parallel body, and the collective configuration check.
#include <string>
#include <vector>

#include "api/validate.h"
#include "common/cuda_check.h"
#include "dist/ep_kernels.h"
#include "dist/moe_parallel_impl.h"

namespace fusekit::dist {
namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

std::string ranks_field(const ParallelPlan& plan) {
  return plan.kind == ParallelKind::kExpert ? "layer.expert_parallel_size" : "tensor_parallel_size";
}

// Checks that need no configuration: the communicator, the current device, stream capture
// and a workspace large enough for the headers. Failing here returns before any exchange.
Status precheck(const MoeParallelLayer& layer, const MoeWorkspace& workspace, cudaStream_t stream,
                bool synchronises, const char* what, Prechecked* out) {
  Prechecked p;
  FUSEKIT_RETURN_IF_ERROR(query_comm(layer.comm, "layer.comm", &p.comm));
  int device = -1;
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  if (device != p.comm.device) {
    return invalid_argument(std::string(what) + ": the current CUDA device is cuda:" + str(device) +
                            " but layer.comm belongs to cuda:" + str(p.comm.device) +
                            "; make the communicator's device current (cudaSetDevice) before the call");
  }
  if (synchronises) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    FUSEKIT_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
    if (capture != cudaStreamCaptureStatusNone) {
      return invalid_argument(std::string(what) +
                              ": stream is being captured, but this call reads exchanged counts on the host and "
                              "cannot be captured in a CUDA graph (the tensor-parallel forward can)");
    }
  }
  p.header = header_region(p.comm.ranks);
  if (workspace.data == nullptr) {
    return invalid_argument("workspace: null data pointer; allocate moe_parallel_workspace_size(config) bytes");
  }
  if (workspace.bytes < p.header.bytes) {
    return invalid_argument("workspace: " + str(static_cast<std::int64_t>(workspace.bytes)) +
                            " bytes cannot even hold the rank headers (" +
                            str(static_cast<std::int64_t>(p.header.bytes)) +
                            " bytes); size it with moe_parallel_workspace_size(config)");
  }
  const TensorView ws = TensorView::contiguous(workspace.data, DType::kI32,
                                               {static_cast<std::int64_t>(workspace.bytes / 4)}, DeviceType::kCUDA,
                                               p.comm.device);
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(ws, "workspace.data", kWorkspaceAlign));
  FUSEKIT_RETURN_IF_ERROR(expect_device(ws, "workspace.data", DeviceType::kCUDA, p.comm.device));
  p.workspace = static_cast<char*>(workspace.data);
  *out = p;
  return Status::Ok();
}

std::string shape_text(const char* symbolic, std::int64_t a, std::int64_t b, std::int64_t c) {
  return std::string(symbolic) + " = [" + str(a) + ", " + str(b) + ", " + str(c) + "]";
}

Status expect_weights(const MoeParallelLayer& layer, const ParallelPlan& plan, int device) {
  const MoeConfig& l = layer.config.layer;
  const std::int64_t E = plan.local.num_experts, H = l.hidden, I = plan.local.intermediate;
  const bool ep = plan.kind == ParallelKind::kExpert;
  const bool nk = l.layout == MoeWeightLayout::kNK;
  const char* w1_sym = ep ? (nk ? "[E/R, 2I, H]" : "[E/R, H, 2I]") : (nk ? "[E, 2I/R, H]" : "[E, H, 2I/R]");
  const char* w2_sym = ep ? (nk ? "[E/R, H, I]" : "[E/R, I, H]") : (nk ? "[E, H, I/R]" : "[E, I/R, H]");
  const std::int64_t w1[3] = {E, nk ? 2 * I : H, nk ? H : 2 * I};
  const std::int64_t w2[3] = {E, nk ? H : I, nk ? I : H};
  const struct {
    const TensorView* t;
    const char* name;
    const std::int64_t* shape;
    const char* sym;
  } items[] = {{&layer.weights.w1, "layer.weights.w1", w1, w1_sym}, {&layer.weights.w2, "layer.weights.w2", w2, w2_sym}};
  for (const auto& it : items) {
    FUSEKIT_RETURN_IF_ERROR(expect_present(*it.t, it.name));
    FUSEKIT_RETURN_IF_ERROR(expect_dtype(*it.t, it.name, {DType::kBF16}));
    FUSEKIT_RETURN_IF_ERROR(expect_shape(*it.t, it.name, {it.shape[0], it.shape[1], it.shape[2]},
                                         shape_text(it.sym, it.shape[0], it.shape[1], it.shape[2]) +
                                             " (this rank's share)"));
    FUSEKIT_RETURN_IF_ERROR(expect_contiguous(*it.t, it.name));
    FUSEKIT_RETURN_IF_ERROR(expect_device(*it.t, it.name, DeviceType::kCUDA, device));
  }
  return Status::Ok();
}

Status expect_rows(const TensorView& t, const char* name, std::int64_t hidden, std::int64_t max_tokens, int device,
                   bool packed) {
  FUSEKIT_RETURN_IF_ERROR(expect_present(t, name));
  FUSEKIT_RETURN_IF_ERROR(expect_dtype(t, name, {DType::kBF16}));
  FUSEKIT_RETURN_IF_ERROR(expect_shape(t, name, {kAnyDim, hidden}, "[T, H] = [T, " + str(hidden) + "]"));
  if (t.shape[0] > max_tokens) {
    return invalid_argument(std::string(name) + ": T = " + str(t.shape[0]) + " tokens exceeds config.layer.max_tokens (" +
                            str(max_tokens) + "), which sized the workspace: " + t.describe());
  }
  FUSEKIT_RETURN_IF_ERROR(packed ? expect_contiguous(t, name) : expect_contiguous_rows(t, name));
  if (t.shape[0] > 1 && t.strides[0] % 8 != 0) {
    return invalid_argument(std::string(name) + ": the row stride must be a multiple of 8 elements (16 bytes), got " +
                            t.describe());
  }
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(t, name, 16));
  FUSEKIT_RETURN_IF_ERROR(expect_device(t, name, DeviceType::kCUDA, device));
  return Status::Ok();
}

Status expect_routed(const MoeRouted& routed, std::int64_t tokens, std::int64_t top_k, int device) {
  const std::string want = "[T, k] = [" + str(tokens) + ", " + str(top_k) + "]";
  const struct {
    const TensorView* t;
    const char* name;
    DType dtype;
  } items[] = {{&routed.topk_ids, "routed.topk_ids", DType::kI32},
               {&routed.topk_weights, "routed.topk_weights", DType::kF32}};
  for (const auto& it : items) {
    FUSEKIT_RETURN_IF_ERROR(expect_present(*it.t, it.name));
    FUSEKIT_RETURN_IF_ERROR(expect_dtype(*it.t, it.name, {it.dtype}));
    FUSEKIT_RETURN_IF_ERROR(expect_shape(*it.t, it.name, {tokens, top_k}, want));
    FUSEKIT_RETURN_IF_ERROR(expect_contiguous(*it.t, it.name));
    FUSEKIT_RETURN_IF_ERROR(expect_device(*it.t, it.name, DeviceType::kCUDA, device));
  }
  return Status::Ok();
}

Status expect_config(const MoeParallelLayer& layer, const CommInfo& comm, ParallelPlan* plan,
                     std::size_t* workspace_bytes) {
  FUSEKIT_RETURN_IF_ERROR(resolve_plan(layer.config, plan));
  if (plan->ranks != comm.ranks) {
    return invalid_argument("layer.comm: the communicator has " + str(comm.ranks) + " ranks but the config asks for " +
                            ranks_field(*plan) + " = " + str(plan->ranks));
  }
  FUSEKIT_RETURN_IF_ERROR(expect_weights(layer, *plan, comm.device));
  return moe_parallel_workspace_size(layer.config, workspace_bytes);
}

}  // namespace

Status validate_forward(const ForwardCall& call, const CommInfo& comm, ParallelPlan* plan) {
  const MoeParallelLayer& layer = *call.layer;
  std::size_t need = 0;
  FUSEKIT_RETURN_IF_ERROR(expect_config(layer, comm, plan, &need));
  if (call.workspace.bytes < need) {
    return invalid_argument("workspace: " + str(static_cast<std::int64_t>(call.workspace.bytes)) +
                            " bytes, this config needs " + str(static_cast<std::int64_t>(need)) +
                            " (moe_parallel_workspace_size)");
  }
  const bool tp = plan->kind == ParallelKind::kTensor;
  const std::int64_t H = layer.config.layer.hidden;
  // TP all-reduces out as one buffer, so it must be packed.
  FUSEKIT_RETURN_IF_ERROR(expect_rows(call.x, "x", H, plan->max_tokens, comm.device, false));
  FUSEKIT_RETURN_IF_ERROR(expect_rows(call.out, "out", H, plan->max_tokens, comm.device, tp));
  if (call.out.shape[0] != call.x.shape[0]) {
    return invalid_argument("out: expected shape [T, H] = " + shape_string(call.x) + " like x, got " +
                            call.out.describe());
  }
  if (call.routed != nullptr) {
    FUSEKIT_RETURN_IF_ERROR(expect_routed(*call.routed, call.x.shape[0], layer.config.layer.top_k, comm.device));
  }
  const ByteRange ws{reinterpret_cast<std::uintptr_t>(call.workspace.data),
                     reinterpret_cast<std::uintptr_t>(call.workspace.data) + call.workspace.bytes};
  if (ranges_overlap(byte_range(call.out), ws)) {
    return invalid_argument("out: overlaps the workspace: " + call.out.describe());
  }
  return Status::Ok();
}

void record_mark(const ForwardCall& call, PhaseMark mark) {
  if (call.marks != nullptr && call.marks->events[mark] != nullptr) cudaEventRecord(call.marks->events[mark], call.stream);
}

Status read_headers(const WireHeader* device_headers, std::int64_t count, WireHeader* host, cudaStream_t stream) {
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host, device_headers, static_cast<std::size_t>(count) * sizeof(WireHeader),
                                               cudaMemcpyDeviceToHost, stream));
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return Status::Ok();
}

Status parallel_forward(const ForwardCall& call) {
  if (call.layer == nullptr) return invalid_argument("layer: null pointer");
  if ((call.router == nullptr) == (call.routed == nullptr)) {
    return Status(StatusCode::kInternal, "parallel_forward: exactly one of router / routed must be given");
  }
  const MoeParallelLayer& layer = *call.layer;
  const bool ep = layer.config.layer.expert_parallel_size > 1;
  const char* what = call.routed != nullptr ? "moe_parallel_forward_routed" : "moe_parallel_forward";
  Prechecked pre;
  FUSEKIT_RETURN_IF_ERROR(precheck(layer, call.workspace, call.stream, ep, what, &pre));
  return ep ? ep_forward(call, pre) : tp_forward(call, pre);
}

}  // namespace fusekit::dist

namespace fusekit {

Status moe_parallel_forward(const MoeParallelLayer& layer, const TensorView& x, const MoeRouterInput& router,
                            const TensorView& out, const MoeWorkspace& workspace, void* stream) {
  dist::ForwardCall call;
  call.layer = &layer;
  call.x = x;
  call.router = &router;
  call.out = out;
  call.workspace = workspace;
  call.stream = static_cast<cudaStream_t>(stream);
  return dist::parallel_forward(call);
}

Status moe_parallel_forward_routed(const MoeParallelLayer& layer, const TensorView& x, const MoeRouted& routed,
                                   const TensorView& out, const MoeWorkspace& workspace, void* stream) {
  dist::ForwardCall call;
  call.layer = &layer;
  call.x = x;
  call.routed = &routed;
  call.out = out;
  call.workspace = workspace;
  call.stream = static_cast<cudaStream_t>(stream);
  return dist::parallel_forward(call);
}

Status moe_parallel_check(const MoeParallelLayer& layer, const MoeWorkspace& workspace, void* stream_ptr) {
  using namespace dist;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  Prechecked pre;
  FUSEKIT_RETURN_IF_ERROR(precheck(layer, workspace, stream, true, "moe_parallel_check", &pre));
  ParallelPlan plan;
  std::size_t need = 0;
  Status local = expect_config(layer, pre.comm, &plan, &need);
  if (local.ok() && workspace.bytes < need) {
    local = invalid_argument("workspace: " + std::to_string(workspace.bytes) + " bytes, this config needs " +
                             std::to_string(need) + " (moe_parallel_workspace_size)");
  }
  // Every rank takes part, valid or not, so a bad config on one rank fails all of them.
  auto* send = reinterpret_cast<WireHeader*>(pre.workspace + pre.header.send);
  auto* recv = reinterpret_cast<WireHeader*>(pre.workspace + pre.header.recv);
  FUSEKIT_RETURN_IF_ERROR(launch_ep_write_headers(make_header(layer.config, 0, local.ok()), 1, send, stream));
  FUSEKIT_NCCL_RETURN_IF_ERROR(ncclAllGather(send, recv, kHeaderInts, ncclInt32, pre.comm.comm, stream), pre.comm.comm);
  std::vector<WireHeader> headers(static_cast<std::size_t>(pre.comm.ranks));
  FUSEKIT_RETURN_IF_ERROR(read_headers(recv, pre.comm.ranks, headers.data(), stream));
  if (!local.ok()) return local;
  return compare_headers(headers.data(), pre.comm.ranks, "moe_parallel_check");
}

}  // namespace fusekit
