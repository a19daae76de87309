// NCCL communicator helpers behind the opaque MoeComm of fusekit/moe_parallel.h.
#include <cuda_runtime.h>

#include <cstring>
#include <vector>

#include "common/cuda_check.h"
#include "dist/nccl_util.h"

namespace fusekit {

static_assert(sizeof(MoeCommId::bytes) == sizeof(ncclUniqueId), "MoeCommId holds an ncclUniqueId");

namespace dist {

Status query_comm(const MoeComm& comm, const char* name, CommInfo* info) {
  if (comm.nccl_comm == nullptr) {
    return invalid_argument(std::string(name) + ": null NCCL communicator (create one with moe_comm_init_rank, "
                            "moe_comm_init_all or ncclCommInitRank)");
  }
  CommInfo c;
  c.comm = static_cast<ncclComm_t>(comm.nccl_comm);
  FUSEKIT_NCCL_RETURN_IF_ERROR(ncclCommCount(c.comm, &c.ranks), c.comm);
  FUSEKIT_NCCL_RETURN_IF_ERROR(ncclCommUserRank(c.comm, &c.rank), c.comm);
  FUSEKIT_NCCL_RETURN_IF_ERROR(ncclCommCuDevice(c.comm, &c.device), c.comm);
  *info = c;
  return Status::Ok();
}

}  // namespace dist

Status moe_comm_unique_id(MoeCommId* id) {
  if (id == nullptr) return invalid_argument("id: null pointer");
  ncclUniqueId u;
  FUSEKIT_NCCL_RETURN_IF_ERROR(ncclGetUniqueId(&u), nullptr);
  std::memcpy(id->bytes, u.internal, sizeof(u.internal));
  return Status::Ok();
}

Status moe_comm_init_rank(const MoeCommId& id, int ranks, int rank, MoeComm* comm) {
  if (comm == nullptr) return invalid_argument("comm: null pointer");
  if (ranks < 1 || rank < 0 || rank >= ranks) {
    return invalid_argument("rank: expected 0 <= rank < ranks, got rank " + std::to_string(rank) + " of " +
                            std::to_string(ranks));
  }
  ncclUniqueId u;
  std::memcpy(u.internal, id.bytes, sizeof(u.internal));
  ncclComm_t c = nullptr;
  FUSEKIT_NCCL_RETURN_IF_ERROR(ncclCommInitRank(&c, ranks, u, rank), nullptr);
  comm->nccl_comm = c;
  return Status::Ok();
}

Status moe_comm_init_all(int ranks, const int* devices, MoeComm* comms) {
  if (ranks < 1) return invalid_argument("ranks: expected >= 1, got " + std::to_string(ranks));
  if (devices == nullptr || comms == nullptr) return invalid_argument("devices, comms: null pointer");
  int count = 0;
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  for (int i = 0; i < ranks; ++i) {
    if (devices[i] < 0 || devices[i] >= count) {
      return invalid_argument("devices[" + std::to_string(i) + "]: expected a CUDA device in [0, " +
                              std::to_string(count) + "), got " + std::to_string(devices[i]));
    }
  }
  std::vector<ncclComm_t> c(static_cast<std::size_t>(ranks), nullptr);
  FUSEKIT_NCCL_RETURN_IF_ERROR(ncclCommInitAll(c.data(), ranks, devices), nullptr);
  for (int i = 0; i < ranks; ++i) comms[i].nccl_comm = c[static_cast<std::size_t>(i)];
  return Status::Ok();
}

Status moe_comm_destroy(MoeComm* comm) {
  if (comm == nullptr || comm->nccl_comm == nullptr) return Status::Ok();
  auto c = static_cast<ncclComm_t>(comm->nccl_comm);
  comm->nccl_comm = nullptr;
  FUSEKIT_NCCL_RETURN_IF_ERROR(ncclCommDestroy(c), nullptr);
  return Status::Ok();
}

Status moe_comm_query(const MoeComm& comm, int* ranks, int* rank, int* device) {
  dist::CommInfo info;
  FUSEKIT_RETURN_IF_ERROR(dist::query_comm(comm, "comm", &info));
  if (ranks != nullptr) *ranks = info.ranks;
  if (rank != nullptr) *rank = info.rank;
  if (device != nullptr) *device = info.device;
  return Status::Ok();
}

}  // namespace fusekit
