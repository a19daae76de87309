// NCCL plumbing for src/dist: result -> Status, and the communicator facts every entry needs.
#pragma once

#include <nccl.h>

#include <string>

#include "fusekit/moe_parallel.h"
#include "fusekit/status.h"

namespace fusekit::dist {

inline Status nccl_status(ncclResult_t result, const char* what, ncclComm_t comm) {
  if (result == ncclSuccess) return Status::Ok();
  std::string message = std::string(what) + ": " + ncclGetErrorString(result);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && last[0] != '\0') message += " (" + std::string(last) + ")";
  return Status(StatusCode::kNcclError, message);
}

struct CommInfo {
  ncclComm_t comm = nullptr;
  int ranks = 0;
  int rank = 0;
  int device = 0;
};
// Reads size, rank and device of `comm`; errors name `name`.
Status query_comm(const MoeComm& comm, const char* name, CommInfo* info);

}  // namespace fusekit::dist

#define FUSEKIT_NCCL_RETURN_IF_ERROR(expr, comm) \
  FUSEKIT_RETURN_IF_ERROR(::fusekit::dist::nccl_status((expr), #expr, (comm)))
