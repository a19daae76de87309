// EP offsets: exclusive prefix sums over ranks, from the exchanged headers.
//
//   offsets[0     + d] = sum_{d' < d} send_headers[d'].rows     (d = 0..R; send block starts)
//   offsets[R+1   + s] = sum_{s' < s} recv_headers[s'].rows     (received row block starts)
//   offsets[2R+2  + s] = sum_{s' < s} recv_headers[s'].pairs    (received pair block starts)
//
// One thread per section walks the R headers (R is small and this runs once per call). The
// receive sections are garbage until the headers have been exchanged; the launch after the
// exchange rewrites all three.
#include "common/cuda_check.h"
#include "dist/ep_kernels.h"

namespace fusekit::dist {
namespace {

__global__ void ep_offsets_kernel(const WireHeader* send_headers, const WireHeader* recv_headers, std::int32_t ranks,
                                  std::int32_t* offsets) {
  const int section = static_cast<int>(threadIdx.x);
  if (section > 2) return;
  std::int32_t* out = offsets + section * (ranks + 1);
  std::int32_t sum = 0;
  for (std::int32_t r = 0; r < ranks; ++r) {
    out[r] = sum;
    sum += section == 0 ? send_headers[r].rows : section == 1 ? recv_headers[r].rows : recv_headers[r].pairs;
  }
  out[ranks] = sum;
}

}  // namespace

Status launch_ep_offsets(const WireHeader* send_headers, const WireHeader* recv_headers, std::int32_t ranks,
                         std::int32_t* offsets, cudaStream_t stream) {
  ep_offsets_kernel<<<1, 32, 0, stream>>>(send_headers, recv_headers, ranks, offsets);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("ep_offsets_kernel");
  return Status::Ok();
}

}  // namespace fusekit::dist
