// The CPU backend of qk_rmsnorm against the fp64 oracle.
#include <gtest/gtest.h>

#include "cpu/qk_norm_testing.h"

namespace fusekit::testing {
namespace {

enum class Mode { kInPlace, kOutOfPlace };

struct CpuRun {
  std::vector<std::uint8_t> out;
  std::vector<std::uint8_t> input_after;  // qkv after the call
};

CpuRun run_cpu(const QkData& data, Mode mode) {
  const QkCase& c = data.c;
  CpuRun run;
  std::vector<std::uint8_t> qkv = data.qkv;
  std::vector<std::uint8_t> out(qkv.size(), 0xFF);
  std::vector<std::uint8_t> qw = data.q_weight, kw = data.k_weight, pos = data.positions_bytes;
  std::vector<float> cs = data.cos_sin;
  const TensorView qkv_view = strided_view(qkv.data(), c.dtype, c.tokens, c.width(), c.stride());
  const TensorView out_view =
      mode == Mode::kInPlace ? qkv_view : strided_view(out.data(), c.dtype, c.tokens, c.width(), c.stride());
  const TensorView positions = TensorView::contiguous(pos.data(), c.position_dtype, {c.tokens});
  const TensorView cos_sin = TensorView::contiguous(cs.data(), DType::kF32, {c.max_position, c.rotary_dim});
  const Status st = qk_rmsnorm(qkv_view, TensorView::contiguous(qw.data(), c.weight_dtype, {c.d}),
                               TensorView::contiguous(kw.data(), c.weight_dtype, {c.d}), out_view,
                               make_params(c, positions, cos_sin));
  EXPECT_TRUE(st.ok()) << st.to_string();
  run.out = mode == Mode::kInPlace ? qkv : out;
  run.input_after = qkv;
  return run;
}

QkCase base_case(DType dtype) {
  QkCase c;
  c.dtype = dtype;
  c.weight_dtype = dtype;
  return c;
}

TEST(QkNormCpu, MatchesOracleOnGrid) {
  auto rng = make_rng();
  int n = 0;
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (const QkShape& s : qk_grid_shapes()) {
      for (std::int64_t tokens : {1, 3, 17}) {
        QkCase c = base_case(dtype);
        c.tokens = tokens;
        c.hq = s.hq;
        c.hkv = s.hkv;
        c.d = s.d;
        c.weight_dtype = (n % 2) ? DType::kF32 : dtype;
        if (tokens > 1) {
          c.style = (n % 2) ? RotaryStyle::kNeox : RotaryStyle::kGptj;
          c.rotary_dim = (n % 3 == 0) ? s.d / 2 : s.d;
          c.position_dtype = (n % 4 < 2) ? DType::kI32 : DType::kI64;
        }
        ++n;
        const QkData data = make_qk_data(c, rng);
        EXPECT_TRUE(check_qk_output(data, run_cpu(data, Mode::kOutOfPlace).out, PadExpect::kPoisoned)) << c.name();
      }
    }
  }
}

TEST(QkNormCpu, RotaryStylesDifferAndMatchOracle) {
  auto rng = make_rng();
  for (RotaryStyle style : {RotaryStyle::kNeox, RotaryStyle::kGptj}) {
    for (std::int64_t rd : {std::int64_t{128}, std::int64_t{64}, std::int64_t{10}}) {
      QkCase c = base_case(DType::kF32);
      c.tokens = 9;
      c.style = style;
      c.rotary_dim = rd;
      const QkData data = make_qk_data(c, rng);
      EXPECT_TRUE(check_qk_output(data, run_cpu(data, Mode::kInPlace).out, PadExpect::kUnchanged)) << c.name();
    }
  }
  // The two styles really rotate different lanes.
  QkCase c = base_case(DType::kF32);
  c.tokens = 4;
  c.style = RotaryStyle::kNeox;
  c.rotary_dim = 128;
  const QkData neox = make_qk_data(c, rng);
  QkData gptj = neox;
  gptj.c.style = RotaryStyle::kGptj;
  EXPECT_NE(run_cpu(neox, Mode::kInPlace).out, run_cpu(gptj, Mode::kInPlace).out);
}

TEST(QkNormCpu, OutOfRangePositionsLeaveHeadsUnrotated) {
  auto rng = make_rng();
  QkCase c = base_case(DType::kF32);
  c.tokens = 12;
  c.style = RotaryStyle::kNeox;
  c.rotary_dim = 128;
  c.max_position = 64;
  c.out_of_range_every = 3;
  c.position_dtype = DType::kI32;
  const QkData data = make_qk_data(c, rng);
  const CpuRun rotated = run_cpu(data, Mode::kInPlace);
  EXPECT_TRUE(check_qk_output(data, rotated.out, PadExpect::kUnchanged));
  QkData plain_data = data;
  plain_data.c.style = RotaryStyle::kNone;
  const CpuRun plain = run_cpu(plain_data, Mode::kInPlace);
  const std::size_t row = static_cast<std::size_t>(c.stride()) * 4;
  for (std::int64_t t = 0; t < c.tokens; ++t) {
    const bool same = std::memcmp(rotated.out.data() + t * row, plain.out.data() + t * row, row) == 0;
    if (t % 3 == 0) {
      EXPECT_TRUE(same) << "out-of-range token " << t << " position " << data.positions[t];
    } else if (data.positions[t] != 0) {  // position 0 rotates by angle 0
      EXPECT_FALSE(same) << "token " << t << " position " << data.positions[t];
    }
  }
}

TEST(QkNormCpu, PaddedStrideInPlaceAndOutOfPlace) {
  auto rng = make_rng();
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    QkCase c = base_case(dtype);
    c.tokens = 7;
    c.hq = 16;
    c.hkv = 8;
    c.d = 64;
    c.row_pad = 24;
    c.style = RotaryStyle::kGptj;
    c.rotary_dim = 32;
    const QkData data = make_qk_data(c, rng);
    EXPECT_TRUE(check_qk_output(data, run_cpu(data, Mode::kInPlace).out, PadExpect::kUnchanged)) << c.name();
    EXPECT_TRUE(check_qk_output(data, run_cpu(data, Mode::kOutOfPlace).out, PadExpect::kPoisoned)) << c.name();
  }
}

TEST(QkNormCpu, InPlaceEqualsOutOfPlaceAndVUntouched) {
  auto rng = make_rng();
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    QkCase c = base_case(dtype);
    c.tokens = 5;
    c.hq = 4;
    c.hkv = 2;
    c.d = 96;
    c.dv = 32;  // V's head dim differs from D
    c.style = RotaryStyle::kNeox;
    c.rotary_dim = 96;
    const QkData data = make_qk_data(c, rng);
    const CpuRun in_place = run_cpu(data, Mode::kInPlace);
    const CpuRun out_of_place = run_cpu(data, Mode::kOutOfPlace);
    EXPECT_EQ(in_place.out, out_of_place.out) << c.name();
    EXPECT_EQ(out_of_place.input_after, data.qkv) << "out of place must not modify qkv";
    EXPECT_TRUE(check_qk_output(data, in_place.out, PadExpect::kUnchanged)) << c.name();  // V bitwise inside
  }
}

TEST(QkNormCpu, ZeroTokensIsANoOp) {
  QkCase c = base_case(DType::kBF16);
  c.tokens = 0;
  std::vector<std::uint8_t> w(c.d * 2, 0x3f);
  // Null data is fine for an empty tensor.
  const TensorView qkv = TensorView::contiguous(nullptr, c.dtype, {0, c.width()});
  const Status st = qk_rmsnorm(qkv, TensorView::contiguous(w.data(), c.dtype, {c.d}),
                               TensorView::contiguous(w.data(), c.dtype, {c.d}), qkv, make_params(c, {}, {}));
  EXPECT_TRUE(st.ok()) << st.to_string();
  // A non-null empty output is not touched.
  alignas(16) std::uint8_t sentinel[64];
  std::memset(sentinel, 0x5a, sizeof sentinel);
  const TensorView out = TensorView::contiguous(sentinel, c.dtype, {0, c.width()});
  EXPECT_TRUE(qk_rmsnorm(qkv, TensorView::contiguous(w.data(), c.dtype, {c.d}),
                         TensorView::contiguous(w.data(), c.dtype, {c.d}), out, make_params(c, {}, {}))
                  .ok());
  for (std::uint8_t b : sentinel) EXPECT_EQ(b, 0x5a);
}

}  // namespace
}  // namespace fusekit::testing
