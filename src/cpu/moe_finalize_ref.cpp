// finalize oracle: out[t] = bf16(sum_{j < k} y[t*k + j]), the k bf16 values widened to fp64 and
// summed in j order, rounded once (the `cuda` kernel sums in fp32 in the same order).
#include "common/float_bits.h"
#include "cpu/moe_ref.h"

namespace fusekit::cpu {

void finalize_ref(const MoeDims& d, std::int64_t T, const bf16_t* y, std::int64_t y_stride, bf16_t* out,
                  std::int64_t out_stride) {
  for (std::int64_t t = 0; t < T; ++t) {
    bf16_t* o = out + t * out_stride;
    for (std::int64_t h = 0; h < d.H; ++h) {
      double s = 0;
      for (std::int64_t j = 0; j < d.k; ++j) s += static_cast<double>(bf16_bits_to_float(y[(t * d.k + j) * y_stride + h]));
      o[h] = float_to_bf16_bits(static_cast<float>(s));
    }
  }
}

}  // namespace fusekit::cpu
