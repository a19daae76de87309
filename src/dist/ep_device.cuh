// Device helpers shared by the EP kernels: 16-byte bf16 vectors and the offsets lookup.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace fusekit::dist {

// 8 bf16 in one 16-byte load/store; H is a multiple of 8 and rows are 16-byte aligned.
constexpr int kVecElems = 8;

__device__ __forceinline__ void add_vec(const uint4& v, float (&acc)[kVecElems]) {
  const auto* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < kVecElems / 2; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    acc[2 * i] += f.x;
    acc[2 * i + 1] += f.y;
  }
}

__device__ __forceinline__ uint4 to_vec(const float (&acc)[kVecElems]) {
  uint4 v;
  auto* h = reinterpret_cast<__nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < kVecElems / 2; ++i) h[i] = __floats2bfloat162_rn(acc[2 * i], acc[2 * i + 1]);
  return v;
}

// The source rank s of received row `row`: the last s with prefix[s] <= row (prefix has
// ranks + 1 entries, prefix[ranks] = total rows).
__device__ __forceinline__ int source_of_row(const std::int32_t* prefix, int ranks, std::int64_t row) {
  int lo = 0, hi = ranks - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (prefix[mid] <= row) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

}  // namespace fusekit::dist
