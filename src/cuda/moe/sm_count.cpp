#include "cuda/moe/sm_count.h"

#include <atomic>

#include "common/cuda_check.h"

namespace fusekit::cuda_moe {
namespace {

constexpr int kMaxDevices = 64;  // a device id past it is read on every call
std::atomic<int> g_sm_count[kMaxDevices];

}  // namespace

Status sm_count_of(int device, int* sm_count) {
  if (device >= 0 && device < kMaxDevices) {
    const int cached = g_sm_count[device].load(std::memory_order_relaxed);
    if (cached > 0) {
      *sm_count = cached;
      return Status::Ok();
    }
  }
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(sm_count, cudaDevAttrMultiProcessorCount, device));
  if (device >= 0 && device < kMaxDevices) g_sm_count[device].store(*sm_count, std::memory_order_relaxed);
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
