// Header broadcast for calls that carry no counts (a rank whose call is invalid, and
// moe_parallel_check): headers[d] = header for d < R. One thread per header.
#include "common/cuda_check.h"
#include "dist/ep_kernels.h"

namespace fusekit::dist {
namespace {

__global__ void ep_write_headers_kernel(WireHeader header, std::int32_t ranks, WireHeader* headers) {
  const std::int32_t d = static_cast<std::int32_t>(blockIdx.x * blockDim.x + threadIdx.x);
  if (d < ranks) headers[d] = header;
}

}  // namespace

Status launch_ep_write_headers(const WireHeader& header, std::int32_t ranks, WireHeader* headers,
                               cudaStream_t stream) {
  constexpr int kThreads = 128;
  ep_write_headers_kernel<<<(ranks + kThreads - 1) / kThreads, kThreads, 0, stream>>>(header, ranks, headers);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("ep_write_headers_kernel");
  return Status::Ok();
}

}  // namespace fusekit::dist
