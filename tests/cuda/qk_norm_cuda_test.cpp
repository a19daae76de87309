// The CUDA backend of qk_rmsnorm against the fp64 oracle (label gpu).
//
// Reduced set for compute-sanitizer (memcheck / racecheck; both lane-group widths, every
// dtype, rotary and not), as bench/qk_norm_device_run.sh runs it:
//   --gtest_filter='Grid/QkNormCudaGrid.MatchesOracle/*T17_*:Grid/QkNormCudaGrid.MatchesOracle/bf16_T4097_*:
//                   QkNormCuda.Padded*:QkNormCuda.Graph*:QkNormCuda.Cpu*:QkNormCuda.VBit*'
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <tuple>

#include "cpu/qk_norm_testing.h"

namespace fusekit::testing {
namespace {

enum class Mode { kInPlace, kOutOfPlace };

struct DeviceCase {
  DeviceBuffer qkv, out, q_weight, k_weight, positions, cos_sin;
  TensorView qkv_view, out_view, q_weight_view, k_weight_view;
  QkNormParams params;
};

template <typename T>
DeviceBuffer to_device(const std::vector<T>& host) {
  DeviceBuffer b(host.size() * sizeof(T));
  if (!host.empty()) b.upload(host.data(), host.size() * sizeof(T));
  return b;
}

// Uploads the case; out of place, `out` is poisoned with NaN so anything unwritten shows.
DeviceCase upload(const QkData& data, Mode mode) {
  const QkCase& c = data.c;
  int dev = 0;
  cudaGetDevice(&dev);
  DeviceCase d;
  d.qkv = to_device(data.qkv);
  d.q_weight = to_device(data.q_weight);
  d.k_weight = to_device(data.k_weight);
  d.positions = to_device(data.positions_bytes);
  d.cos_sin = to_device(data.cos_sin);
  d.qkv_view = strided_view(d.qkv.data(), c.dtype, c.tokens, c.width(), c.stride(), DeviceType::kCUDA, dev);
  if (mode == Mode::kOutOfPlace) {
    d.out = DeviceBuffer(data.qkv.size());
    if (!data.qkv.empty()) d.out.poison();
    d.out_view = strided_view(d.out.data(), c.dtype, c.tokens, c.width(), c.stride(), DeviceType::kCUDA, dev);
  } else {
    d.out_view = d.qkv_view;
  }
  d.q_weight_view = TensorView::contiguous(d.q_weight.data(), c.weight_dtype, {c.d}, DeviceType::kCUDA, dev);
  d.k_weight_view = TensorView::contiguous(d.k_weight.data(), c.weight_dtype, {c.d}, DeviceType::kCUDA, dev);
  d.params = make_params(c,
                         TensorView::contiguous(d.positions.data(), c.position_dtype, {c.tokens}, DeviceType::kCUDA, dev),
                         TensorView::contiguous(d.cos_sin.data(), DType::kF32, {c.max_position, c.rotary_dim},
                                                DeviceType::kCUDA, dev));
  return d;
}

Status launch(DeviceCase& d, cudaStream_t stream = nullptr) {
  return qk_rmsnorm(d.qkv_view, d.q_weight_view, d.k_weight_view, d.out_view, d.params, stream);
}

std::vector<std::uint8_t> result(const DeviceCase& d, const QkData& data) {
  const DeviceBuffer& b = d.out_view.data == d.qkv_view.data ? d.qkv : d.out;
  return b.to_host<std::uint8_t>(data.qkv.size());
}

struct GpuRun {
  std::vector<std::uint8_t> out;
  std::vector<std::uint8_t> input_after;
};

GpuRun run_gpu(const QkData& data, Mode mode) {
  GpuRun run;
  DeviceCase d = upload(data, mode);
  const Status st = launch(d);
  EXPECT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  run.out = result(d, data);
  run.input_after = d.qkv.to_host<std::uint8_t>(data.qkv.size());
  return run;
}

// ---- the grid: T x (Hq, Hkv, D) x dtype, with and without rotary ----------------

using GridParam = std::tuple<std::int64_t, int, DType, bool>;

QkCase grid_case(const GridParam& p) {
  const auto [tokens, shape_index, dtype, rope] = p;
  const QkShape& s = qk_grid_shapes()[shape_index];
  QkCase c;
  c.tokens = tokens;
  c.hq = s.hq;
  c.hkv = s.hkv;
  c.d = s.d;
  c.dtype = dtype;
  // Vary the secondary options across the grid so each is covered with every dtype.
  const int k = shape_index + static_cast<int>(dtype);
  c.weight_dtype = (k % 2 == 1) ? DType::kF32 : dtype;
  if (rope) {
    c.style = (shape_index % 2 == 0) ? RotaryStyle::kNeox : RotaryStyle::kGptj;
    c.rotary_dim = (k % 3 == 2) ? s.d / 2 : s.d;  // partial rotary on a third of the cases
    c.position_dtype = (tokens % 2 == 1) ? DType::kI32 : DType::kI64;
    c.out_of_range_every = 5;
  }
  return c;
}

class QkNormCudaGrid : public ::testing::TestWithParam<GridParam> {};

TEST_P(QkNormCudaGrid, MatchesOracle) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  const QkCase c = grid_case(GetParam());
  auto rng = make_rng();
  const QkData data = make_qk_data(c, rng);
  const GpuRun out_of_place = run_gpu(data, Mode::kOutOfPlace);
  EXPECT_TRUE(check_qk_output(data, out_of_place.out, PadExpect::kPoisoned)) << c.name();
  EXPECT_TRUE(out_of_place.input_after == data.qkv) << "out of place modified qkv";
  const GpuRun in_place = run_gpu(data, Mode::kInPlace);
  EXPECT_TRUE(in_place.out == out_of_place.out) << "in place differs from out of place: " << c.name();
}

std::string grid_name(const ::testing::TestParamInfo<GridParam>& info) {
  const auto [tokens, shape_index, dtype, rope] = info.param;
  const QkShape& s = qk_grid_shapes()[shape_index];
  return std::string(dtype_name(dtype)) + "_T" + std::to_string(tokens) + "_" + std::to_string(s.hq) + "x" +
         std::to_string(s.hkv) + "x" + std::to_string(s.d) + (rope ? "_rope" : "_norope");
}

INSTANTIATE_TEST_SUITE_P(Grid, QkNormCudaGrid,
                         ::testing::Combine(::testing::Values<std::int64_t>(0, 1, 3, 17, 128, 4097),
                                            ::testing::Range(0, 7),
                                            ::testing::Values(DType::kBF16, DType::kF16, DType::kF32),
                                            ::testing::Bool()),
                         grid_name);

// T = 65536 on every shape in bf16 (alternating rotary), plus fp16 and fp32 on one shape.
// Rows repeat with a period of 2048 (positions do not), the oracle checks every 61st row,
// every row is checked for NaN and for V.
using BigParam = std::tuple<int, DType>;
class QkNormCudaBig : public ::testing::TestWithParam<BigParam> {};

TEST_P(QkNormCudaBig, T65536MatchesOracle) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  const auto [shape_index, dtype] = GetParam();
  QkCase c = grid_case({65536, shape_index, dtype, shape_index % 2 == 1});
  c.out_of_range_every = 0;
  c.tile_rows = 2048;
  auto rng = make_rng();
  const QkData data = make_qk_data(c, rng);
  EXPECT_TRUE(check_qk_output(data, run_gpu(data, Mode::kOutOfPlace).out, PadExpect::kPoisoned, 61)) << c.name();
}

INSTANTIATE_TEST_SUITE_P(Big, QkNormCudaBig,
                         ::testing::Values(BigParam{0, DType::kBF16}, BigParam{1, DType::kBF16}, BigParam{2, DType::kBF16},
                                           BigParam{3, DType::kBF16}, BigParam{4, DType::kBF16}, BigParam{5, DType::kBF16},
                                           BigParam{6, DType::kBF16}, BigParam{3, DType::kF16}, BigParam{0, DType::kF32}),
                         [](const ::testing::TestParamInfo<BigParam>& info) {
                           const QkShape& s = qk_grid_shapes()[std::get<0>(info.param)];
                           return std::string(dtype_name(std::get<1>(info.param))) + "_" + std::to_string(s.hq) + "x" +
                                  std::to_string(s.hkv) + "x" + std::to_string(s.d);
                         });

// ---- layouts and modes ------------------------------------------------------------------

TEST(QkNormCuda, PaddedStride) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  auto rng = make_rng();
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    for (std::int64_t d : {std::int64_t{128}, std::int64_t{96}}) {
      QkCase c;
      c.tokens = 33;
      c.hq = 8;
      c.hkv = 2;
      c.d = d;
      c.dv = 64;
      c.dtype = dtype;
      c.weight_dtype = dtype;
      c.row_pad = 24;
      c.style = RotaryStyle::kGptj;
      c.rotary_dim = d / 2;
      const QkData data = make_qk_data(c, rng);
      const GpuRun in_place = run_gpu(data, Mode::kInPlace);
      const GpuRun out_of_place = run_gpu(data, Mode::kOutOfPlace);
      EXPECT_TRUE(check_qk_output(data, in_place.out, PadExpect::kUnchanged)) << c.name();
      EXPECT_TRUE(check_qk_output(data, out_of_place.out, PadExpect::kPoisoned)) << c.name();
      // Q/K/V identical between the modes (the padding differs by construction).
      const std::size_t es = dtype_size(dtype), row = c.stride() * es, used = c.width() * es;
      for (std::int64_t t = 0; t < c.tokens; ++t) {
        ASSERT_EQ(std::memcmp(in_place.out.data() + t * row, out_of_place.out.data() + t * row, used), 0) << t;
      }
    }
  }
}

TEST(QkNormCuda, VBitIdenticalWithOwnHeadDim) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  auto rng = make_rng();
  QkCase c;
  c.tokens = 129;
  c.hq = 16;
  c.hkv = 4;
  c.d = 128;
  c.dv = 256;  // V heads wider than Q/K heads
  c.style = RotaryStyle::kNeox;
  c.rotary_dim = 64;
  const QkData data = make_qk_data(c, rng);
  // check_qk_output compares V bit for bit with the input, in both modes.
  EXPECT_TRUE(check_qk_output(data, run_gpu(data, Mode::kInPlace).out, PadExpect::kUnchanged));
  EXPECT_TRUE(check_qk_output(data, run_gpu(data, Mode::kOutOfPlace).out, PadExpect::kPoisoned));
}

TEST(QkNormCuda, GraphCaptureReplayEqualsEager) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  auto rng = make_rng();
  for (Mode mode : {Mode::kOutOfPlace, Mode::kInPlace}) {
    QkCase c;
    c.tokens = 77;
    c.hq = 32;
    c.hkv = 8;
    c.d = 128;
    c.style = RotaryStyle::kNeox;
    c.rotary_dim = 128;
    c.row_pad = 8;
    const QkData data = make_qk_data(c, rng);
    const GpuRun eager = run_gpu(data, mode);

    DeviceCase d = upload(data, mode);
    cudaStream_t stream;
    FUSEKIT_ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    FUSEKIT_ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    const Status st = launch(d, stream);  // no sync, no allocation: legal inside capture
    FUSEKIT_ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
    ASSERT_TRUE(st.ok()) << st.to_string();
    FUSEKIT_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    // Capture ran nothing: out is still all NaN / qkv still the input.
    FUSEKIT_ASSERT_CUDA(cudaStreamSynchronize(stream));
    if (mode == Mode::kOutOfPlace) {
      EXPECT_FALSE(check_qk_output(data, result(d, data), PadExpect::kPoisoned)) << "capture must not execute";
    } else {
      EXPECT_TRUE(result(d, data) == data.qkv) << "capture must not execute";
    }
    FUSEKIT_ASSERT_CUDA(cudaGraphLaunch(exec, stream));
    FUSEKIT_ASSERT_CUDA(cudaStreamSynchronize(stream));
    EXPECT_TRUE(result(d, data) == eager.out) << "graph replay differs from eager";
    if (mode == Mode::kOutOfPlace) {  // a second replay gives the same bytes
      FUSEKIT_ASSERT_CUDA(cudaGraphLaunch(exec, stream));
      FUSEKIT_ASSERT_CUDA(cudaStreamSynchronize(stream));
      EXPECT_TRUE(result(d, data) == eager.out);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

// Past 2^31 elements: T = 1.1M tokens at D = 128, Hq = 8, Hkv = 1 with a padded row stride of
// 2048 (2.25e9 elements, 4.5 GB per buffer), out of place so NaN poison proves every Q/K
// element of every token was written. Rows repeat every 4096 tokens; positions do not.
TEST(QkNormCuda, MillionTokens64BitIndexing) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  QkCase c;
  c.tokens = 1100000;
  c.hq = 8;
  c.hkv = 1;
  c.d = 128;
  c.row_pad = 2048 - c.width();
  c.style = RotaryStyle::kNeox;
  c.rotary_dim = 128;
  c.max_position = 8192;
  c.tile_rows = 4096;
  ASSERT_GT(c.tokens * c.stride(), std::int64_t{1} << 31);
  std::size_t free_bytes = 0, total = 0;
  cudaMemGetInfo(&free_bytes, &total);
  if (free_bytes < 2 * static_cast<std::size_t>(c.tokens * c.stride() * 2) + (std::size_t{1} << 30)) {
    GTEST_SKIP() << "needs ~10 GB of free device memory";
  }
  auto rng = make_rng();
  const QkData data = make_qk_data(c, rng);
  EXPECT_TRUE(check_qk_output(data, run_gpu(data, Mode::kOutOfPlace).out, PadExpect::kPoisoned, 997));
}

TEST(QkNormCuda, CpuPointerGivenToCudaPath) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  auto rng = make_rng();
  QkCase c;
  c.tokens = 4;
  const QkData data = make_qk_data(c, rng);
  DeviceCase d = upload(data, Mode::kOutOfPlace);
  std::vector<std::uint8_t> host_out(data.qkv.size(), 0x5a);
  const std::vector<std::uint8_t> before = host_out;
  d.out_view.data = host_out.data();  // still labelled cuda
  const Status st = launch(d);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "out: tensor says bf16[4, 5120] on cuda:0 but its pointer is host memory; pass device memory");
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(host_out == before);
  EXPECT_TRUE(d.qkv.to_host<std::uint8_t>(data.qkv.size()) == data.qkv);
}

}  // namespace
}  // namespace fusekit::testing
