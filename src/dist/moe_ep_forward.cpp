// Expert-parallel MoE forward: route -> plan -> pack -> header exchange (one host read) ->
// dispatch (grouped ncclSend/ncclRecv) -> expand -> local moe_forward_routed (top_k 1, E/R
// experts) -> row reduce -> return (grouped ncclSend/ncclRecv) -> combine. See
// fusekit/moe_parallel.h for the contract and src/dist/ep_*.cu for each kernel's formula.
#include <numeric>
#include <string>
#include <vector>

#include "common/cuda_check.h"
#include "dist/ep_kernels.h"
#include "dist/moe_parallel_impl.h"

namespace fusekit::dist {
namespace {

template <typename T>
T* at(char* base, std::size_t offset) {
  return reinterpret_cast<T*>(base + offset);
}

// Sends block d of `send` to rank d and receives block s of `recv` from rank s, for every rank;
// zero-sized blocks are skipped on both sides (both sides know the size from the headers).
struct Exchange {
  const char* send;
  const std::vector<std::int64_t>* send_rows;  // per peer
  char* recv;
  const std::vector<std::int64_t>* recv_rows;
  std::size_t row_bytes;
  ncclDataType_t type;
  std::size_t row_elems;
};

Status post_exchange(const Exchange& e, ncclComm_t comm, cudaStream_t stream) {
  const auto R = static_cast<int>(e.send_rows->size());
  std::size_t send_at = 0, recv_at = 0;
  for (int peer = 0; peer < R; ++peer) {
    const auto n_send = static_cast<std::size_t>((*e.send_rows)[static_cast<std::size_t>(peer)]);
    const auto n_recv = static_cast<std::size_t>((*e.recv_rows)[static_cast<std::size_t>(peer)]);
    if (n_send > 0) {
      FUSEKIT_NCCL_RETURN_IF_ERROR(
          ncclSend(e.send + send_at * e.row_bytes, n_send * e.row_elems, e.type, peer, comm, stream), comm);
    }
    if (n_recv > 0) {
      FUSEKIT_NCCL_RETURN_IF_ERROR(
          ncclRecv(e.recv + recv_at * e.row_bytes, n_recv * e.row_elems, e.type, peer, comm, stream), comm);
    }
    send_at += n_send;
    recv_at += n_recv;
  }
  return Status::Ok();
}

// Runs ncclGroupStart, the posts, and always ncclGroupEnd (an unbalanced group would break the
// caller's next NCCL call).
template <typename Posts>
Status grouped(ncclComm_t comm, Posts&& posts) {
  FUSEKIT_NCCL_RETURN_IF_ERROR(ncclGroupStart(), comm);
  Status posted = posts();
  Status ended = nccl_status(ncclGroupEnd(), "ncclGroupEnd", comm);
  return posted.ok() ? ended : posted;
}

// This rank's part before the exchange: routing (unless given), plan, offsets, pack.
Status prepare(const ForwardCall& call, const EpLayout& lay, char* ws, const EpDims& dims) {
  const MoeParallelLayer& layer = *call.layer;
  const std::int64_t T = dims.tokens;
  const std::int64_t k = dims.top_k;
  const int device = call.x.device_id;
  const std::int32_t* topk_ids = nullptr;
  const float* topk_weights = nullptr;
  if (call.routed != nullptr) {
    topk_ids = static_cast<const std::int32_t*>(call.routed->topk_ids.data);
    topk_weights = static_cast<const float*>(call.routed->topk_weights.data);
  } else {
    MoeRouted own;
    own.topk_ids = TensorView::contiguous(at<void>(ws, lay.topk_ids), DType::kI32, {T, k}, DeviceType::kCUDA, device);
    own.topk_weights =
        TensorView::contiguous(at<void>(ws, lay.topk_weights), DType::kF32, {T, k}, DeviceType::kCUDA, device);
    if (T > 0) {
      MoeConfig whole = layer.config.layer;
      whole.expert_parallel_size = 1;
      FUSEKIT_RETURN_IF_ERROR(moe_route(whole, *call.router, own, call.stream));
    }
    topk_ids = static_cast<const std::int32_t*>(own.topk_ids.data);
    topk_weights = static_cast<const float*>(own.topk_weights.data);
  }

  auto* send_headers = at<WireHeader>(ws, lay.header.send);
  auto* recv_headers = at<WireHeader>(ws, lay.header.recv);
  auto* offsets = at<std::int32_t>(ws, lay.header.offsets);
  auto* dest_plan = at<std::int32_t>(ws, lay.dest_plan);
  EpPlanArgs pa{dims, topk_ids, dest_plan, make_header(layer.config, T, true), send_headers};
  FUSEKIT_RETURN_IF_ERROR(launch_ep_plan_rows(pa, call.stream));
  FUSEKIT_RETURN_IF_ERROR(launch_ep_offsets(send_headers, recv_headers, dims.ranks, offsets, call.stream));
  EpPackArgs pk{dims,      call.x.data, call.x.strides[0], topk_ids, topk_weights, dest_plan, offsets,
                at<void>(ws, lay.send_x), at<std::int32_t>(ws, lay.send_meta)};
  return launch_ep_pack_rows(pk, call.stream);
}

}  // namespace

Status ep_forward(const ForwardCall& call, const Prechecked& pre) {
  const MoeParallelLayer& layer = *call.layer;
  const cudaStream_t stream = call.stream;
  const ncclComm_t comm = pre.comm.comm;
  const int R = pre.comm.ranks;
  char* ws = pre.workspace;
  auto* send_headers = at<WireHeader>(ws, pre.header.send);
  auto* recv_headers = at<WireHeader>(ws, pre.header.recv);
  auto* offsets = at<std::int32_t>(ws, pre.header.offsets);
  record_mark(call, kMarkStart);

  // 1. Local phase. A failure here is still announced to every rank through the headers.
  ParallelPlan plan;
  EpLayout lay;
  EpDims dims;
  Status local = validate_forward(call, pre.comm, &plan);
  if (local.ok()) local = ep_layout(plan, &lay);
  if (local.ok()) {
    dims.tokens = call.x.shape[0];
    dims.top_k = static_cast<std::int32_t>(plan.top_k);
    dims.num_experts = static_cast<std::int32_t>(layer.config.layer.num_experts);
    dims.experts_per_rank = static_cast<std::int32_t>(plan.experts_per_rank);
    dims.ranks = R;
    dims.hidden = layer.config.layer.hidden;
    dims.meta_width = static_cast<std::int32_t>(plan.meta_width);
    local = prepare(call, lay, ws, dims);
  }
  if (!local.ok()) {
    const std::int64_t T = call.x.rank == 2 ? call.x.shape[0] : 0;
    FUSEKIT_RETURN_IF_ERROR(launch_ep_write_headers(make_header(layer.config, T, false), R, send_headers, stream));
  }
  record_mark(call, kMarkPrepared);

  // 2. Headers: every rank sends every rank its counts and config, then reads them back.
  FUSEKIT_RETURN_IF_ERROR(grouped(comm, [&]() -> Status {
    for (int peer = 0; peer < R; ++peer) {
      FUSEKIT_NCCL_RETURN_IF_ERROR(ncclSend(send_headers + peer, kHeaderInts, ncclInt32, peer, comm, stream), comm);
      FUSEKIT_NCCL_RETURN_IF_ERROR(ncclRecv(recv_headers + peer, kHeaderInts, ncclInt32, peer, comm, stream), comm);
    }
    return Status::Ok();
  }));
  std::vector<WireHeader> sent(static_cast<std::size_t>(R)), received(static_cast<std::size_t>(R));
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(sent.data(), send_headers, R * sizeof(WireHeader),
                                               cudaMemcpyDeviceToHost, stream));
  FUSEKIT_RETURN_IF_ERROR(read_headers(recv_headers, R, received.data(), stream));
  record_mark(call, kMarkCounted);
  if (!local.ok()) return local;
  FUSEKIT_RETURN_IF_ERROR(compare_headers(received.data(), R, "moe_parallel_forward"));

  // From here every rank has agreed: sizes are bounded by the shared config (each sender
  // checked T <= max_tokens), so nothing below can fail for argument reasons.
  std::vector<std::int64_t> send_rows(static_cast<std::size_t>(R)), recv_rows(static_cast<std::size_t>(R));
  std::int64_t total_recv_rows = 0, total_pairs = 0;
  for (int r = 0; r < R; ++r) {
    send_rows[static_cast<std::size_t>(r)] = sent[static_cast<std::size_t>(r)].rows;
    recv_rows[static_cast<std::size_t>(r)] = received[static_cast<std::size_t>(r)].rows;
    total_recv_rows += received[static_cast<std::size_t>(r)].rows;
    total_pairs += received[static_cast<std::size_t>(r)].pairs;
  }
  FUSEKIT_RETURN_IF_ERROR(launch_ep_offsets(send_headers, recv_headers, R, offsets, stream));

  // 3. Dispatch token rows and their metadata.
  const std::size_t H = static_cast<std::size_t>(dims.hidden);
  const std::size_t W = static_cast<std::size_t>(dims.meta_width);
  char* send_x = at<char>(ws, lay.send_x);
  char* recv_x = at<char>(ws, lay.recv_x);
  FUSEKIT_RETURN_IF_ERROR(grouped(comm, [&]() -> Status {
    FUSEKIT_RETURN_IF_ERROR(post_exchange(Exchange{send_x, &send_rows, recv_x, &recv_rows, H * 2, ncclBfloat16, H},
                                          comm, stream));
    return post_exchange(Exchange{at<char>(ws, lay.send_meta), &send_rows, at<char>(ws, lay.recv_meta), &recv_rows,
                                  W * 4, ncclInt32, W},
                         comm, stream);
  }));
  record_mark(call, kMarkDispatched);

  // 4. Local experts on the received (token, expert) pairs; the pairs of a row summed back.
  Status computed = Status::Ok();
  if (total_recv_rows > 0) {
    const auto* recv_meta = at<std::int32_t>(ws, lay.recv_meta);
    EpExpandArgs ex{dims,     total_recv_rows, recv_x, recv_meta, offsets, at<void>(ws, lay.pair_x),
                    at<std::int32_t>(ws, lay.pair_ids), at<float>(ws, lay.pair_weights)};
    computed = launch_ep_expand_pairs(ex, stream);
    if (computed.ok()) {
      const int device = pre.comm.device;
      const MoeLayer local_layer{plan.local, layer.weights};
      const TensorView pair_x =
          TensorView::contiguous(at<void>(ws, lay.pair_x), DType::kBF16, {total_pairs, dims.hidden}, DeviceType::kCUDA, device);
      const TensorView pair_y =
          TensorView::contiguous(at<void>(ws, lay.pair_y), DType::kBF16, {total_pairs, dims.hidden}, DeviceType::kCUDA, device);
      MoeRouted pairs;
      pairs.topk_ids = TensorView::contiguous(at<void>(ws, lay.pair_ids), DType::kI32, {total_pairs, 1},
                                              DeviceType::kCUDA, device);
      pairs.topk_weights = TensorView::contiguous(at<void>(ws, lay.pair_weights), DType::kF32, {total_pairs, 1},
                                                  DeviceType::kCUDA, device);
      const MoeWorkspace local_ws{at<void>(ws, lay.local_workspace), lay.local_workspace_bytes};
      computed = moe_forward_routed(local_layer, pair_x, pairs, pair_y, local_ws, stream);
    }
    if (computed.ok()) {
      // The reduced rows overwrite recv_x: expand has consumed it (stream order).
      EpReduceArgs rd{dims, total_recv_rows, recv_meta, offsets, at<void>(ws, lay.pair_y), recv_x};
      computed = launch_ep_reduce_rows(rd, stream);
    }
  }
  record_mark(call, kMarkComputed);

  // 5. Partial rows go back to their senders (into send_x, whose dispatch has completed) —
  // even if the local part failed, so that no peer waits forever; then out is combined.
  FUSEKIT_RETURN_IF_ERROR(grouped(comm, [&]() -> Status {
    return post_exchange(Exchange{recv_x, &recv_rows, send_x, &send_rows, H * 2, ncclBfloat16, H}, comm, stream);
  }));
  record_mark(call, kMarkReturned);
  if (!computed.ok()) return computed;
  EpCombineArgs cb{dims, at<std::int32_t>(ws, lay.dest_plan), offsets, send_x, call.out.data, call.out.strides[0]};
  FUSEKIT_RETURN_IF_ERROR(launch_ep_combine_rows(cb, stream));
  record_mark(call, kMarkEnd);
  return Status::Ok();
}

}  // namespace fusekit::dist
