#include "cpu/qk_norm_cpu.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "common/float_bits.h"

namespace fusekit::cpu {

namespace {

float load(const void* base, DType dtype, std::int64_t i) {
  switch (dtype) {
    case DType::kBF16: return bf16_bits_to_float(static_cast<const std::uint16_t*>(base)[i]);
    case DType::kF16: return fp16_bits_to_float(static_cast<const std::uint16_t*>(base)[i]);
    default: return static_cast<const float*>(base)[i];
  }
}

void store(void* base, DType dtype, std::int64_t i, float v) {
  switch (dtype) {
    case DType::kBF16: static_cast<std::uint16_t*>(base)[i] = float_to_bf16_bits(v); break;
    case DType::kF16: static_cast<std::uint16_t*>(base)[i] = float_to_fp16_bits(v); break;
    default: static_cast<float*>(base)[i] = v; break;
  }
}

std::int64_t position_of(const TensorView& positions, std::int64_t t) {
  if (positions.dtype == DType::kI32) return static_cast<const std::int32_t*>(positions.data)[t];
  return static_cast<const std::int64_t*>(positions.data)[t];
}

}  // namespace

Status qk_rmsnorm_cpu(const TensorView& qkv, const TensorView& q_weight, const TensorView& k_weight,
                      const TensorView& out, const QkNormParams& params) {
  const std::int64_t tokens = qkv.shape[0];
  const std::int64_t d = params.head_dim;
  const std::int64_t dv = params.v_head_dim > 0 ? params.v_head_dim : d;
  const std::int64_t heads = params.num_q_heads + params.num_kv_heads;
  const std::int64_t v_begin = heads * d;
  const std::int64_t v_elems = params.num_kv_heads * dv;
  const std::size_t esize = dtype_size(qkv.dtype);
  const bool in_place = out.data == qkv.data;
  const QkRotary& rot = params.rotary;
  const std::int64_t half = rot.rotary_dim / 2;
  const std::int64_t max_position = rot.style == RotaryStyle::kNone ? 0 : rot.cos_sin_cache.shape[0];

  std::vector<float> qw(static_cast<std::size_t>(d)), kw(static_cast<std::size_t>(d));
  for (std::int64_t i = 0; i < d; ++i) {
    qw[i] = load(q_weight.data, q_weight.dtype, i);
    kw[i] = load(k_weight.data, k_weight.dtype, i);
  }
  std::vector<float> y(static_cast<std::size_t>(d));
  for (std::int64_t t = 0; t < tokens; ++t) {
    const char* in_row = static_cast<const char*>(qkv.data) + t * qkv.strides[0] * esize;
    char* out_row = static_cast<char*>(out.data) + t * out.strides[0] * esize;
    const float* cs = nullptr;
    if (rot.style != RotaryStyle::kNone) {
      const std::int64_t pos = position_of(rot.positions, t);
      if (pos >= 0 && pos < max_position) cs = static_cast<const float*>(rot.cos_sin_cache.data) + pos * rot.rotary_dim;
    }
    for (std::int64_t h = 0; h < heads; ++h) {
      const float* w = h < params.num_q_heads ? qw.data() : kw.data();
      float sum_sq = 0.f;
      for (std::int64_t i = 0; i < d; ++i) {
        y[i] = load(in_row, qkv.dtype, h * d + i);
        sum_sq += y[i] * y[i];
      }
      const float inv_rms = 1.f / std::sqrt(sum_sq / static_cast<float>(d) + params.eps);
      for (std::int64_t i = 0; i < d; ++i) y[i] = y[i] * inv_rms * w[i];
      if (cs != nullptr) {
        for (std::int64_t i = 0; i < half; ++i) {
          const std::int64_t a = rot.style == RotaryStyle::kNeox ? i : 2 * i;
          const std::int64_t b = rot.style == RotaryStyle::kNeox ? i + half : 2 * i + 1;
          const float x1 = y[a], x2 = y[b], c = cs[i], s = cs[half + i];
          y[a] = x1 * c - x2 * s;
          y[b] = x2 * c + x1 * s;
        }
      }
      for (std::int64_t i = 0; i < d; ++i) store(out_row, out.dtype, h * d + i, y[i]);
    }
    if (!in_place) std::memcpy(out_row + v_begin * esize, in_row + v_begin * esize, v_elems * esize);
  }
  return Status::Ok();
}

}  // namespace fusekit::cpu
