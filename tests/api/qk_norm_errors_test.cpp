// qk_rmsnorm argument checks: every bad input returns invalid_argument with the exact text
// below, and neither qkv nor out is written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <vector>

#include "fusekit/qk_norm.h"
#include "support/test_support.h"

namespace fusekit::testing {
namespace {

// 16-byte aligned bytes filled with a pattern.
class Bytes {
 public:
  explicit Bytes(std::size_t n, std::uint8_t fill) : storage_(n + 16, fill), size_(n) {}
  std::uint8_t* data() {
    auto p = reinterpret_cast<std::uintptr_t>(storage_.data());
    return storage_.data() + ((16 - p % 16) % 16);
  }
  std::vector<std::uint8_t> snapshot() { return std::vector<std::uint8_t>(data(), data() + size_); }

 private:
  std::vector<std::uint8_t> storage_;
  std::size_t size_;
};

// A valid call: T = 4, Hq = 2, Hkv = 1, D = 64 (width 256), bf16, neox rotary over 64 lanes.
struct Call {
  static constexpr std::int64_t kT = 4, kD = 64, kWidth = 256, kRows = 6;
  Bytes qkv_buf{kRows * kWidth * 2, 0x3c};
  Bytes out_buf{kRows * kWidth * 2, 0x5a};
  Bytes qw_buf{kD * 4, 0x3f}, kw_buf{kD * 4, 0x3f};
  Bytes pos_buf{kT * 8, 0x00};
  Bytes cs_buf{16 * kD * 4, 0x00};
  TensorView qkv, out, q_weight, k_weight;
  QkNormParams params;

  Call() {
    qkv = TensorView::contiguous(qkv_buf.data(), DType::kBF16, {kT, kWidth});
    out = TensorView::contiguous(out_buf.data(), DType::kBF16, {kT, kWidth});
    q_weight = TensorView::contiguous(qw_buf.data(), DType::kBF16, {kD});
    k_weight = TensorView::contiguous(kw_buf.data(), DType::kBF16, {kD});
    params.num_q_heads = 2;
    params.num_kv_heads = 1;
    params.head_dim = kD;
    params.eps = 1e-6f;
    params.rotary.style = RotaryStyle::kNeox;
    params.rotary.rotary_dim = kD;
    params.rotary.positions = TensorView::contiguous(pos_buf.data(), DType::kI64, {kT});
    params.rotary.cos_sin_cache = TensorView::contiguous(cs_buf.data(), DType::kF32, {16, kD});
  }

  Status run() { return qk_rmsnorm(qkv, q_weight, k_weight, out, params); }
};

void expect_error(Call& call, const std::string& expected) {
  const std::vector<std::uint8_t> qkv_before = call.qkv_buf.snapshot();
  const std::vector<std::uint8_t> out_before = call.out_buf.snapshot();
  const Status st = call.run();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_EQ(st.message(), expected);
  EXPECT_TRUE(call.qkv_buf.snapshot() == qkv_before) << "qkv was written";
  EXPECT_TRUE(call.out_buf.snapshot() == out_before) << "out was written";
}

std::string pointer_text(const void* p) {
  std::ostringstream os;
  os << p;
  return os.str();
}

TEST(QkNormErrors, ValidCallSucceedsAndWrites) {
  Call call;
  const std::vector<std::uint8_t> out_before = call.out_buf.snapshot();
  const Status st = call.run();
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_FALSE(call.out_buf.snapshot() == out_before);
}

TEST(QkNormErrors, WrongDtypes) {
  {
    Call c;
    c.qkv.dtype = DType::kI32;
    expect_error(c, "qkv: expected dtype bf16, fp16 or fp32, got int32[4, 256] on cpu");
  }
  {
    Call c;
    c.out.dtype = DType::kF16;
    expect_error(c, "out: expected dtype bf16 (the dtype of qkv), got fp16[4, 256] on cpu");
  }
  {
    Call c;
    c.q_weight.dtype = DType::kF16;
    expect_error(c, "q_weight: expected dtype bf16 or fp32, got fp16[64] on cpu");
  }
  {
    Call c;
    c.k_weight.dtype = DType::kF32;
    expect_error(c, "k_weight: expected the dtype of q_weight (bf16), got fp32[64] on cpu");
  }
  {
    Call c;
    c.params.rotary.positions.dtype = DType::kF32;
    expect_error(c, "params.rotary.positions: expected dtype int32 or int64, got fp32[4] on cpu");
  }
  {
    Call c;
    c.params.rotary.cos_sin_cache.dtype = DType::kBF16;
    expect_error(c, "params.rotary.cos_sin_cache: expected dtype fp32, got bf16[16, 64] on cpu");
  }
}

TEST(QkNormErrors, WrongRankAndShape) {
  {
    Call c;
    c.qkv = TensorView::contiguous(c.qkv_buf.data(), DType::kBF16, {4, 1, 256});
    expect_error(c, "qkv: expected rank 2, got bf16[4, 1, 256] on cpu");
  }
  {
    Call c;
    c.qkv = TensorView::contiguous(c.qkv_buf.data(), DType::kBF16, {4, 248});
    expect_error(c, "qkv: expected shape [T, (Hq + Hkv)*D + Hkv*Dv] = [T, 256], got bf16[4, 248] on cpu");
  }
  {
    Call c;
    c.out = TensorView::contiguous(c.out_buf.data(), DType::kBF16, {3, 256});
    expect_error(c, "out: expected shape [4, 256] (the shape of qkv), got bf16[3, 256] on cpu");
  }
  {
    Call c;
    c.qkv.strides[1] = 2;
    expect_error(c, "qkv: expected contiguous rows (last stride 1), got bf16[4, 256] (strides [256, 2]) on cpu");
  }
  {
    Call c;
    c.params.rotary.positions = TensorView::contiguous(c.pos_buf.data(), DType::kI64, {3});
    expect_error(c, "params.rotary.positions: expected shape [T] = [4], got int64[3] on cpu");
  }
  {
    Call c;
    c.params.rotary.cos_sin_cache = TensorView::contiguous(c.cs_buf.data(), DType::kF32, {16, 32});
    expect_error(c,
                 "params.rotary.cos_sin_cache: expected shape [max_position, rotary_dim] = [max_position, 64], got "
                 "fp32[16, 32] on cpu");
  }
  {
    Call c;  // V head dim 32 makes the packed width 224
    c.params.v_head_dim = 32;
    expect_error(c, "qkv: expected shape [T, (Hq + Hkv)*D + Hkv*Dv] = [T, 224], got bf16[4, 256] on cpu");
  }
}

TEST(QkNormErrors, MismatchedWeightLength) {
  {
    Call c;
    c.q_weight = TensorView::contiguous(c.qw_buf.data(), DType::kBF16, {32});
    expect_error(c, "q_weight: expected shape [head_dim] = [64], got bf16[32] on cpu");
  }
  {
    Call c;
    c.k_weight = TensorView::contiguous(c.kw_buf.data(), DType::kBF16, {64, 1});
    expect_error(c, "k_weight: expected shape [head_dim] = [64], got bf16[64, 1] on cpu");
  }
}

TEST(QkNormErrors, UnsupportedSizes) {
  for (std::int64_t d : {0, 100, 4, 520}) {
    Call c;
    c.params.head_dim = d;
    expect_error(c, "params.head_dim: expected a multiple of 8 in [8, 512] (fast paths 64, 128, 256), got " +
                        std::to_string(d));
  }
  {
    Call c;
    c.params.v_head_dim = 12;
    expect_error(c, "params.v_head_dim: expected 0 (= head_dim) or a multiple of 8 in [8, 512], got 12");
  }
  {
    Call c;
    c.params.num_q_heads = 0;
    expect_error(c, "params.num_q_heads: expected >= 1, got 0");
  }
  {
    Call c;
    c.params.num_kv_heads = -1;
    expect_error(c, "params.num_kv_heads: expected >= 1, got -1");
  }
  {
    Call c;
    c.params.num_q_heads = 70000;
    expect_error(c, "params.num_q_heads + params.num_kv_heads: expected <= 65536, got 70001");
  }
  for (std::int64_t rd : {7, 0, 72}) {
    Call c;
    c.params.rotary.rotary_dim = rd;
    expect_error(c, "params.rotary.rotary_dim: expected an even number in [2, head_dim = 64], got " + std::to_string(rd));
  }
}

TEST(QkNormErrors, EpsMustBePositive) {
  {
    Call c;
    c.params.eps = 0.f;
    expect_error(c, "params.eps: expected > 0, got 0");
  }
  {
    Call c;
    c.params.eps = -1e-6f;
    expect_error(c, "params.eps: expected > 0, got -1e-06");
  }
  {
    Call c;
    c.params.eps = std::numeric_limits<float>::quiet_NaN();
    expect_error(c, "params.eps: expected > 0, got nan");
  }
}

TEST(QkNormErrors, MisalignedPointersAndStrides) {
  {
    Call c;
    c.qkv.data = c.qkv_buf.data() + 2;
    expect_error(c, "qkv: data pointer " + pointer_text(c.qkv.data) + " is not 16-byte aligned (bf16[4, 256] on cpu)");
  }
  {
    Call c;
    c.out.data = c.out_buf.data() + 8;
    expect_error(c, "out: data pointer " + pointer_text(c.out.data) + " is not 16-byte aligned (bf16[4, 256] on cpu)");
  }
  {
    Call c;
    c.k_weight.data = c.kw_buf.data() + 2;
    expect_error(c, "k_weight: data pointer " + pointer_text(c.k_weight.data) + " is not 16-byte aligned (bf16[64] on cpu)");
  }
  {
    Call c;
    c.qkv.strides[0] = 260;
    expect_error(c,
                 "qkv: row stride 260 elements (520 bytes) is not a multiple of 16 bytes (bf16[4, 256] (strides [260, "
                 "1]) on cpu)");
  }
}

TEST(QkNormErrors, OutOverlappingQkvPartially) {
  const std::string tail = " (out bf16[4, 256] on cpu, qkv bf16[4, 256] on cpu)";
  {
    Call c;  // one row further into the same buffer
    c.out = TensorView::contiguous(c.qkv_buf.data() + 256 * 2, DType::kBF16, {4, 256});
    expect_error(c, "out: partially overlaps qkv; pass qkv itself (same pointer and strides) for in place, or a "
                    "disjoint tensor" + tail);
  }
  {
    Call c;  // same pointer, different row stride
    c.qkv.strides[0] = 264;
    c.qkv.shape[0] = 4;
    c.out.data = c.qkv.data;
    expect_error(c, "out: partially overlaps qkv; pass qkv itself (same pointer and strides) for in place, or a "
                    "disjoint tensor (out bf16[4, 256] on cpu, qkv bf16[4, 256] (strides [264, 1]) on cpu)");
  }
  {
    Call c;  // the weights live inside out
    c.q_weight.data = c.out_buf.data() + 1024;
    expect_error(c, "out: overlaps q_weight (out bf16[4, 256] on cpu, q_weight bf16[64] on cpu)");
  }
}

TEST(QkNormErrors, MixedDevices) {
  Call c;
  c.q_weight.device = DeviceType::kCUDA;
  expect_error(c, "q_weight: expected a tensor on cpu, got bf16[64] on cuda:0");
}

TEST(QkNormErrors, CpuPointerGivenToCudaPath) {
  Call c;
  for (TensorView* t : {&c.qkv, &c.out, &c.q_weight, &c.k_weight, &c.params.rotary.positions,
                        &c.params.rotary.cos_sin_cache}) {
    t->device = DeviceType::kCUDA;
  }
  const std::vector<std::uint8_t> qkv_before = c.qkv_buf.snapshot();
  const std::vector<std::uint8_t> out_before = c.out_buf.snapshot();
  const Status st = c.run();
#if FUSEKIT_WITH_CUDA
  if (!gpu_available()) {
    // No device to ask about the pointer: still an error, with the runtime's reason.
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(st.message().rfind("qkv: pointer is not CUDA memory (bf16[4, 256] on cuda:0): ", 0), 0u) << st.message();
  } else {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(st.message(), "qkv: tensor says bf16[4, 256] on cuda:0 but its pointer is host memory; pass device memory");
  }
#else
  EXPECT_EQ(st.code(), StatusCode::kUnsupported);
  EXPECT_EQ(st.message(), "qkv: bf16[4, 256] on cuda:0 is on a CUDA device but this build of fusekit has no CUDA backend");
#endif
  EXPECT_TRUE(c.qkv_buf.snapshot() == qkv_before);
  EXPECT_TRUE(c.out_buf.snapshot() == out_before);
}

}  // namespace
}  // namespace fusekit::testing
