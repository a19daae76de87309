#include "api/validate.h"
#include "support/test_support.h"

namespace fusekit {
namespace {

TEST(TensorView, ContiguousViewHasPackedStridesAndDescribesItself) {
  TensorView t = TensorView::contiguous(nullptr, DType::kBF16, {4, 6});
  EXPECT_EQ(t.strides[0], 6);
  EXPECT_EQ(t.strides[1], 1);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.describe(), "bf16[4, 6] on cpu");
}

TEST(TensorView, PaddedRowsAreContiguousRowsButNotContiguous) {
  TensorView t = TensorView::contiguous(nullptr, DType::kF32, {4, 6});
  t.strides[0] = 8;
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_TRUE(t.has_contiguous_rows());
  EXPECT_EQ(t.describe(), "fp32[4, 6] (strides [8, 1]) on cpu");
  t.strides[0] = 5;  // rows overlap
  EXPECT_FALSE(t.has_contiguous_rows());
}

TEST(Validate, DtypeErrorNamesArgumentAndShape) {
  float x[4];
  TensorView t = TensorView::contiguous(x, DType::kF32, {2, 2});
  Status s = expect_dtype(t, "qkv", {DType::kBF16, DType::kF16});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "qkv: expected dtype bf16 or fp16, got fp32[2, 2] on cpu");
}

TEST(Validate, ShapeErrorSpellsTheExpectation) {
  float x[6];
  TensorView t = TensorView::contiguous(x, DType::kF32, {2, 3});
  Status s = expect_shape(t, "q_weight", {128}, "[head_dim] = [128]");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "q_weight: expected shape [head_dim] = [128], got fp32[2, 3] on cpu");
  EXPECT_TRUE(expect_shape(t, "x", {kAnyDim, 3}, "[T, 3]").ok());
}

TEST(Validate, OverlapDetection) {
  float x[16];
  TensorView a = TensorView::contiguous(x, DType::kF32, {8});
  TensorView b = TensorView::contiguous(x + 4, DType::kF32, {8});
  TensorView c = TensorView::contiguous(x + 8, DType::kF32, {8});
  EXPECT_TRUE(ranges_overlap(byte_range(a), byte_range(b)));
  EXPECT_FALSE(ranges_overlap(byte_range(a), byte_range(c)));
}

TEST(Validate, HostPointerLabelledCudaIsRejected) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  float x[4];
  TensorView t = TensorView::contiguous(x, DType::kF32, {4}, DeviceType::kCUDA, 0);
  Status s = expect_device(t, "qkv", DeviceType::kCUDA, 0);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("qkv: tensor says fp32[4] on cuda:0 but its pointer is host memory"),
            std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace fusekit
