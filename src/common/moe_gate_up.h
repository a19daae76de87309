// Where W1's gate and up rows sit (MoeGateUpOrder, fusekit/moe.h): the one index function every
// reader of W1 uses, on the host and in kernels.
#pragma once

#include <cstdint>

#include "fusekit/moe.h"

#if defined(__CUDACC__)
#define FUSEKIT_HOST_DEVICE __host__ __device__
#else
#define FUSEKIT_HOST_DEVICE
#endif

namespace fusekit {

// The W1 row (kNK) of gate column c (up = false) or up column c, c in [0, I). Rows of 8
// consecutive columns are consecutive in both orders (I % 8 == 0).
FUSEKIT_HOST_DEVICE inline std::int64_t w1_row(MoeGateUpOrder order, std::int64_t intermediate, std::int64_t c,
                                               bool up) {
  if (order == MoeGateUpOrder::kInterleaved8) return (c / 8) * 16 + (up ? 8 : 0) + c % 8;
  return (up ? intermediate : 0) + c;
}

// Where row r of a kHalves W1 (r in [0, 2I)) lands in `order`: the row map of moe_prepare_weights.
FUSEKIT_HOST_DEVICE inline std::int64_t w1_row_from_halves(MoeGateUpOrder order, std::int64_t intermediate,
                                                           std::int64_t r) {
  if (order == MoeGateUpOrder::kHalves) return r;
  return w1_row(order, intermediate, r % intermediate, r >= intermediate);
}

}  // namespace fusekit
