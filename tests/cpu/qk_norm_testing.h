// Test cases for qk_rmsnorm shared by the CPU and CUDA tests: random inputs in their storage
// dtype, the oracle's view of them, and one check of an output against the oracle
// (Q/K within the dtype's bounds, V bit-identical, row padding untouched, nothing non-finite).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/qk_norm_ref.h"
#include "fusekit/qk_norm.h"
#include "support/test_support.h"

namespace fusekit::testing {

struct QkCase {
  std::int64_t tokens = 1;
  std::int64_t hq = 32, hkv = 4, d = 128, dv = 0;  // dv 0 = d
  DType dtype = DType::kBF16;
  DType weight_dtype = DType::kBF16;
  RotaryStyle style = RotaryStyle::kNone;
  std::int64_t rotary_dim = 0;
  DType position_dtype = DType::kI64;
  std::int64_t row_pad = 0;          // extra elements per row (multiple of 8)
  std::int64_t max_position = 4096;
  int out_of_range_every = 0;        // every n-th token gets a position outside the cache
  std::int64_t tile_rows = 0;        // > 0: random rows repeat with this period (huge T)

  std::int64_t v_dim() const { return dv ? dv : d; }
  std::int64_t width() const { return (hq + hkv) * d + hkv * v_dim(); }
  std::int64_t stride() const { return width() + row_pad; }
  std::string name() const {
    static const char* styles[] = {"plain", "neox", "gptj"};
    std::string s = std::string(dtype_name(dtype)) + "_w" + dtype_name(weight_dtype) + "_T" + std::to_string(tokens) +
                    "_" + std::to_string(hq) + "x" + std::to_string(hkv) + "x" + std::to_string(d);
    if (dv) s += "_dv" + std::to_string(dv);
    s += std::string("_") + styles[static_cast<int>(style)];
    if (style != RotaryStyle::kNone) s += std::to_string(rotary_dim) + "_" + dtype_name(position_dtype);
    if (row_pad) s += "_pad" + std::to_string(row_pad);
    return s;
  }
};

inline std::vector<std::uint8_t> encode(const std::vector<float>& v, DType dtype) {
  std::vector<std::uint8_t> bytes(v.size() * dtype_size(dtype));
  if (dtype == DType::kF32) {
    std::memcpy(bytes.data(), v.data(), bytes.size());
  } else {
    const std::vector<std::uint16_t> bits = to_bits(v, dtype);
    std::memcpy(bytes.data(), bits.data(), bytes.size());
  }
  return bytes;
}

inline float decode_one(const std::uint8_t* bytes, DType dtype, std::int64_t i) {
  if (dtype == DType::kF32) {
    float f;
    std::memcpy(&f, bytes + 4 * i, 4);
    return f;
  }
  std::uint16_t b;
  std::memcpy(&b, bytes + 2 * i, 2);
  return dtype == DType::kBF16 ? bf16_bits_to_float(b) : fp16_bits_to_float(b);
}

struct QkData {
  QkCase c;
  std::vector<std::uint8_t> qkv;       // [T, stride] in c.dtype, padding random too
  std::vector<float> tile;             // dequantised rows [rows_generated, stride]
  std::int64_t rows_generated = 0;
  std::vector<std::uint8_t> q_weight, k_weight;  // [D] in c.weight_dtype
  std::vector<float> q_weight_f, k_weight_f;
  std::vector<std::int64_t> positions;           // [T]
  std::vector<std::uint8_t> positions_bytes;     // [T] in c.position_dtype
  std::vector<float> cos_sin;                    // [max_position, rotary_dim]

  const float* row_f(std::int64_t t) const { return tile.data() + (t % rows_generated) * c.stride(); }

  cpu::QkRefProblem ref_problem() const {
    cpu::QkRefProblem p;
    p.tokens = c.tokens;
    p.row_stride = c.stride();
    p.hq = c.hq;
    p.hkv = c.hkv;
    p.d = c.d;
    p.dv = c.v_dim();
    p.eps = 1e-6;
    p.style = c.style;
    p.rotary_dim = c.rotary_dim;
    p.positions = positions.data();
    p.cos_sin = cos_sin.data();
    p.max_position = c.max_position;
    return p;
  }
};

inline QkData make_qk_data(const QkCase& c, std::mt19937_64& rng) {
  QkData data;
  data.c = c;
  const std::int64_t stride = c.stride();
  data.rows_generated = (c.tile_rows > 0 && c.tokens > c.tile_rows) ? c.tile_rows : std::max<std::int64_t>(c.tokens, 1);
  // Values in [-2, 2] with a per-row scale, so rows have different RMS.
  std::vector<float> tile = random_floats(rng, static_cast<std::size_t>(data.rows_generated * stride), -2.f, 2.f);
  std::uniform_real_distribution<float> scale(0.1f, 4.f);
  for (std::int64_t r = 0; r < data.rows_generated; ++r) {
    const float s = scale(rng);
    for (std::int64_t i = 0; i < stride; ++i) tile[r * stride + i] *= s;
  }
  data.tile = quantize(tile, c.dtype);
  const std::vector<std::uint8_t> tile_bytes = encode(data.tile, c.dtype);
  const std::size_t row_bytes = static_cast<std::size_t>(stride) * dtype_size(c.dtype);
  data.qkv.resize(static_cast<std::size_t>(c.tokens) * row_bytes);
  for (std::int64_t t = 0; t < c.tokens; t += data.rows_generated) {
    const std::int64_t n = std::min(data.rows_generated, c.tokens - t);
    std::memcpy(data.qkv.data() + t * row_bytes, tile_bytes.data(), n * row_bytes);
  }
  data.q_weight_f = quantize(random_floats(rng, c.d, 0.25f, 1.75f), c.weight_dtype);
  data.k_weight_f = quantize(random_floats(rng, c.d, 0.25f, 1.75f), c.weight_dtype);
  data.q_weight = encode(data.q_weight_f, c.weight_dtype);
  data.k_weight = encode(data.k_weight_f, c.weight_dtype);

  data.positions.resize(static_cast<std::size_t>(c.tokens));
  std::uniform_int_distribution<std::int64_t> pos(0, c.max_position - 1);
  for (std::int64_t t = 0; t < c.tokens; ++t) {
    data.positions[t] = pos(rng);
    if (c.out_of_range_every > 0 && t % c.out_of_range_every == 0) {
      data.positions[t] = (t / c.out_of_range_every) % 2 ? -1 - t : c.max_position + t;
    }
  }
  if (c.position_dtype == DType::kI32) {
    std::vector<std::int32_t> p32(data.positions.begin(), data.positions.end());
    data.positions_bytes.resize(p32.size() * 4);
    std::memcpy(data.positions_bytes.data(), p32.data(), data.positions_bytes.size());
  } else {
    data.positions_bytes.resize(data.positions.size() * 8);
    std::memcpy(data.positions_bytes.data(), data.positions.data(), data.positions_bytes.size());
  }
  if (c.style != RotaryStyle::kNone) {
    const std::int64_t rd = c.rotary_dim, half = rd / 2;
    data.cos_sin.resize(static_cast<std::size_t>(c.max_position * rd));
    for (std::int64_t p = 0; p < c.max_position; ++p) {
      for (std::int64_t i = 0; i < half; ++i) {
        const double inv_freq = std::pow(10000.0, -2.0 * static_cast<double>(i) / static_cast<double>(rd));
        data.cos_sin[p * rd + i] = static_cast<float>(std::cos(p * inv_freq));
        data.cos_sin[p * rd + half + i] = static_cast<float>(std::sin(p * inv_freq));
      }
    }
  }
  return data;
}

inline QkNormParams make_params(const QkCase& c, const TensorView& positions, const TensorView& cos_sin) {
  QkNormParams p;
  p.num_q_heads = c.hq;
  p.num_kv_heads = c.hkv;
  p.head_dim = c.d;
  p.v_head_dim = c.dv;
  p.eps = 1e-6f;
  p.rotary.style = c.style;
  p.rotary.rotary_dim = c.rotary_dim;
  if (c.style != RotaryStyle::kNone) {
    p.rotary.positions = positions;
    p.rotary.cos_sin_cache = cos_sin;
  }
  return p;
}

// A [rows, width] view with a padded row stride.
inline TensorView strided_view(void* ptr, DType dtype, std::int64_t rows, std::int64_t width, std::int64_t stride,
                               DeviceType device = DeviceType::kCPU, int device_id = 0) {
  TensorView t = TensorView::contiguous(ptr, dtype, {rows, width}, device, device_id);
  t.strides[0] = stride;
  return t;
}

enum class PadExpect { kUnchanged, kPoisoned };

// Checks `out` ([T, stride] bytes, as written by the op). Q/K against the oracle on every
// `sample_step`-th row (and the last one); all rows are scanned for non-finite values, V is
// compared bit for bit with the input and the row padding with `pad`.
inline ::testing::AssertionResult check_qk_output(const QkData& data, const std::vector<std::uint8_t>& out,
                                                  PadExpect pad, std::int64_t sample_step = 1) {
  const QkCase& c = data.c;
  const std::int64_t stride = c.stride(), width = c.width();
  const std::int64_t qk = (c.hq + c.hkv) * c.d;
  const std::size_t es = dtype_size(c.dtype);
  if (out.size() != data.qkv.size()) return ::testing::AssertionFailure() << "output size mismatch";
  const cpu::QkRefProblem problem = data.ref_problem();
  double diff2 = 0, ref2 = 0, max_abs = 0, ref_max = 0;
  std::int64_t compared = 0;
  std::vector<double> row(static_cast<std::size_t>(width));
  for (std::int64_t t = 0; t < c.tokens; ++t) {
    const std::uint8_t* o = out.data() + t * stride * es;
    const std::uint8_t* in = data.qkv.data() + t * stride * es;
    for (std::int64_t i = 0; i < qk; ++i) {
      if (!std::isfinite(decode_one(o, c.dtype, i))) {
        return ::testing::AssertionFailure() << "non-finite output at token " << t << " element " << i;
      }
    }
    if (std::memcmp(o + qk * es, in + qk * es, static_cast<std::size_t>(width - qk) * es) != 0) {
      return ::testing::AssertionFailure() << "V differs from the input at token " << t;
    }
    if (c.row_pad > 0) {
      const std::uint8_t* po = o + width * es;
      bool ok = true;
      if (pad == PadExpect::kUnchanged) {
        ok = std::memcmp(po, in + width * es, static_cast<std::size_t>(c.row_pad) * es) == 0;
      } else {
        for (std::int64_t i = 0; i < c.row_pad * static_cast<std::int64_t>(es); ++i) ok = ok && po[i] == 0xFF;
      }
      if (!ok) return ::testing::AssertionFailure() << "row padding was written at token " << t;
    }
    if (t % sample_step != 0 && t != c.tokens - 1) continue;
    cpu::qk_rmsnorm_ref_row(problem, t, data.row_f(t), data.q_weight_f.data(), data.k_weight_f.data(), row.data());
    for (std::int64_t i = 0; i < qk; ++i) {
      const double diff = static_cast<double>(decode_one(o, c.dtype, i)) - row[i];
      diff2 += diff * diff;
      ref2 += row[i] * row[i];
      max_abs = std::max(max_abs, std::fabs(diff));
      ref_max = std::max(ref_max, std::fabs(row[i]));
    }
    compared += qk;
  }
  if (compared == 0) return ::testing::AssertionSuccess() << "nothing to compare (T = 0)";
  ErrorStats stats;
  stats.count = compared;
  stats.rel_l2 = std::sqrt(diff2 / ref2);
  stats.max_abs = max_abs;
  return within(stats, rel_l2_bound_for(c.dtype), max_abs_bound_for(c.dtype, ref_max));
}

// The (Hq, Hkv, D) grid of issue 2.
struct QkShape {
  std::int64_t hq, hkv, d;
};
inline const std::vector<QkShape>& qk_grid_shapes() {
  static const std::vector<QkShape> shapes = {{32, 4, 128}, {64, 4, 128}, {32, 8, 128}, {16, 8, 64},
                                              {8, 1, 256},  {40, 8, 128}, {4, 2, 96}};
  return shapes;
}

}  // namespace fusekit::testing
