// The Hopper BF16 grouped GEMM (src/cuda/moe/sm90/grouped_gemm_bf16_sm90.h) against an fp64
// reference written here: every compiled tile x both weight layouts, uneven groups (empty
// ones, single rows, sizes that are no multiple of any tile), n and k no multiple of a tile,
// D poisoned with NaN so that unwritten rows are caught and rows outside every group must stay
// untouched; a case whose A offsets pass 2^31 elements; bad arguments are errors. The SwiGLU
// epilogue (GEMM1 of the MoE, W1 interleaved in 8-row blocks): against the fp64 reference on
// every tile, and bit for bit against the unfused GEMM + swiglu_rows_bf16 on the same inputs.
// The per-group arrays written by the align scan instead of the setup kernel: the same bytes,
// and the same product. Skips without an sm_90 GPU or without CUTLASS in the build.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "support/test_support.h"

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>

#include "support/sm90_tile_params.h"

#include "cuda/moe/sm90/grouped_gemm_bf16_sm90.h"
#include "cuda/moe/sm90/moe_sm90.h"

namespace fusekit::testing {
namespace {

using cuda_moe::sm90::GemmEpilogue;
using cuda_moe::sm90::GemmTile;
using cuda_moe::sm90::GroupedGemmArgs;

#define SKIP_WITHOUT_SM90()                                                                          \
  do {                                                                                               \
    FUSEKIT_SKIP_WITHOUT_GPU();                                                                      \
    if (!cuda_moe::sm90::sm90_grouped_gemm_available(0)) GTEST_SKIP() << "no sm_90 GPU or no CUTLASS"; \
  } while (0)

struct Groups {
  std::vector<std::int32_t> offsets;  // [G + 1], padded to 64 like align's runs
  std::vector<std::int32_t> rows;     // [G]
};

Groups make_groups(const std::vector<std::int32_t>& rows) {
  Groups g;
  g.rows = rows;
  g.offsets.push_back(0);
  for (std::int32_t r : rows) g.offsets.push_back(g.offsets.back() + (r + 63) / 64 * 64);
  return g;
}

float b_at(const std::vector<float>& b, MoeWeightLayout layout, std::int64_t g, std::int64_t col, std::int64_t kk,
           std::int64_t n, std::int64_t k) {
  return layout == MoeWeightLayout::kNK ? b[(g * n + col) * k + kk] : b[(g * k + kk) * n + col];
}

// Args with the device buffers every call here passes: A, B, D, group offsets, workspace.
GroupedGemmArgs args_on(const DeviceBuffer& a, const DeviceBuffer& b, const DeviceBuffer& d,
                        const DeviceBuffer& offsets, const DeviceBuffer& workspace) {
  GroupedGemmArgs args;
  args.a = static_cast<const __nv_bfloat16*>(a.data());
  args.b = static_cast<const __nv_bfloat16*>(b.data());
  args.d = static_cast<__nv_bfloat16*>(d.data());
  args.group_offsets = static_cast<const std::int32_t*>(offsets.data());
  args.workspace = workspace.data();
  args.workspace_bytes = workspace.bytes();
  return args;
}

struct Case {
  std::vector<std::int32_t> rows;
  std::int64_t n, k;
  MoeWeightLayout layout;
  GemmTile tile;
  bool pass_rows;  // false: rows = offsets' differences
  int k_splits = 1;  // > 1: D holds that many partials, summed here
  // kPrewritten: the align scan (launch_align_scan_offsets) computes the offsets from the rows
  // and writes the per-group arrays; the GEMM launches no setup kernel. Needs pass_rows false.
  cuda_moe::sm90::GroupArrays group_arrays = cuda_moe::sm90::GroupArrays::kSetupKernel;
};

void run_case(const Case& c) {
  auto rng = make_rng();
  Groups g = c.pass_rows ? make_groups(c.rows) : Groups{};
  if (!c.pass_rows) {  // unpadded offsets: every row of each run is real
    g.rows = c.rows;
    g.offsets.push_back(0);
    for (std::int32_t r : c.rows) g.offsets.push_back(g.offsets.back() + r);
  }
  const int G = static_cast<int>(c.rows.size());
  const std::int64_t total = g.offsets.back();
  const std::int64_t total_rows = std::max<std::int64_t>(total, 1);
  const std::vector<float> a = quantize(random_floats(rng, total_rows * c.k), DType::kBF16);
  const std::vector<float> b = quantize(random_floats(rng, G * c.n * c.k), DType::kBF16);
  DeviceBuffer da = DeviceBuffer::from(to_bits(a, DType::kBF16));
  DeviceBuffer db = DeviceBuffer::from(to_bits(b, DType::kBF16));
  const std::int64_t slice_elems = total_rows * c.n;
  DeviceBuffer dd(c.k_splits * slice_elems * 2);
  dd.poison();
  DeviceBuffer doff = DeviceBuffer::from(g.offsets);
  DeviceBuffer drows = DeviceBuffer::from(g.rows);
  DeviceBuffer ws(cuda_moe::sm90::grouped_gemm_bf16_sm90_workspace_size(G * c.k_splits));

  GroupedGemmArgs args = args_on(da, db, dd, doff, ws);
  args.group_rows = c.pass_rows ? static_cast<const std::int32_t*>(drows.data()) : nullptr;
  args.groups = G;
  args.n = c.n;
  args.k = c.k;
  args.layout = c.layout;
  args.tile = c.tile;
  args.k_splits = c.k_splits;
  args.d_split_stride = c.k_splits > 1 ? slice_elems : 0;
  DeviceBuffer scanned_offsets(4 * (G + 1));
  if (c.group_arrays == cuda_moe::sm90::GroupArrays::kPrewritten) {
    ASSERT_FALSE(c.pass_rows);
    scanned_offsets.poison();
    args.group_offsets = static_cast<const std::int32_t*>(scanned_offsets.data());
    args.group_rows = static_cast<const std::int32_t*>(drows.data());
    cuda_moe::sm90::GroupArraysToWrite to_write;
    const Status prepared = cuda_moe::sm90::prepare_group_arrays(args, &to_write);
    ASSERT_TRUE(prepared.ok()) << prepared.to_string();
    EXPECT_EQ(to_write.count, c.tile == GemmTile::kStreamSwapAb ? 0 : 1);
    const Status scanned = cuda_moe::sm90::launch_align_scan_offsets(
        static_cast<const std::int32_t*>(drows.data()), G, static_cast<std::int32_t*>(scanned_offsets.data()), to_write,
        nullptr);
    ASSERT_TRUE(scanned.ok()) << scanned.to_string();
    args.group_arrays = cuda_moe::sm90::GroupArrays::kPrewritten;
  }
  const Status s = cuda_moe::sm90::grouped_gemm_bf16_sm90(args, nullptr);
  ASSERT_TRUE(s.ok()) << s.to_string();
  FUSEKIT_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> partials =
      from_bits(dd.to_host<std::uint16_t>(c.k_splits * slice_elems), DType::kBF16);
  // The product is the sum of the slices' partials (NaN stays NaN: an unwritten slice shows).
  std::vector<float> d(partials.begin(), partials.begin() + slice_elems);
  for (int sl = 1; sl < c.k_splits; ++sl) {
    for (std::int64_t i = 0; i < slice_elems; ++i) d[i] += partials[sl * slice_elems + i];
  }

  std::vector<float> got;
  std::vector<double> ref;
  std::int64_t untouched_violations = 0;
  for (int gi = 0; gi < G; ++gi) {
    const std::int64_t r0 = g.offsets[gi];
    for (std::int64_t r = r0; r < g.offsets[gi + 1]; ++r) {
      const bool real = r - r0 < g.rows[gi];
      for (std::int64_t col = 0; col < c.n; ++col) {
        const float v = d[r * c.n + col];
        if (!real) {
          if (!std::isnan(v)) ++untouched_violations;
          continue;
        }
        double acc = 0;
        for (std::int64_t kk = 0; kk < c.k; ++kk) acc += double(a[r * c.k + kk]) * b_at(b, c.layout, gi, col, kk, c.n, c.k);
        got.push_back(v);
        ref.push_back(acc);
      }
    }
  }
  EXPECT_EQ(untouched_violations, 0) << "rows outside every group were written";
  if (ref.empty()) return;
  double ref_max = 0;
  for (double v : ref) ref_max = std::max(ref_max, std::fabs(v));
  // bf16 output of an fp32 accumulation: half an ulp of the output plus fp32 summation error
  // (per partial where K is split).
  EXPECT_TRUE(within(compare(got, ref), 4e-3 * c.k_splits, c.k_splits * (ref_max / 128 + 1e-3)))
      << cuda_moe::sm90::gemm_tile_name(c.tile) << (c.layout == MoeWeightLayout::kNK ? " NK" : " KN")
      << " k_splits=" << c.k_splits;
}

class Sm90GroupedGemmTest : public ::testing::TestWithParam<std::tuple<GemmTile, MoeWeightLayout>> {};

TEST_P(Sm90GroupedGemmTest, UnevenGroupsMatchReference) {
  SKIP_WITHOUT_SM90();
  const auto [tile, layout] = GetParam();
  // Empty groups first, last and in the middle; 1 row; sizes around and past the tile edges.
  run_case({{0, 1, 37, 0, 200, 129, 64, 0, 255, 3, 0}, 264, 152, layout, tile, true});
}

TEST_P(Sm90GroupedGemmTest, OffsetsOnlyAndLongK) {
  SKIP_WITHOUT_SM90();
  const auto [tile, layout] = GetParam();
  run_case({{5, 70, 0, 133}, 136, 1032, layout, tile, false});
}

TEST_P(Sm90GroupedGemmTest, AllRowsInOneGroup) {
  SKIP_WITHOUT_SM90();
  const auto [tile, layout] = GetParam();
  run_case({{0, 0, 777, 0}, 392, 256, layout, tile, true});
}

// Split-K: each slice is a group of its own starting s * k / S into K (A's columns, B's
// columns in NK or rows in KN); the slices' partials sum to the product. Slices of 8 * 129 and
// 8 * 43 elements: no multiple of any K tile, so every slice ends in a partial K tile.
TEST_P(Sm90GroupedGemmTest, SplitKSlicesSumToTheProduct) {
  SKIP_WITHOUT_SM90();
  const auto [tile, layout] = GetParam();
  if (tile == GemmTile::kStreamSwapAb) GTEST_SKIP() << "split-K is for the CUTLASS tiles";
  run_case({{0, 1, 37, 0, 200, 129, 0, 3}, 264, 2064, layout, tile, true, 2});
  run_case({{5, 70, 0, 133}, 136, 1032, layout, tile, false, 3});
}

// The per-group arrays written by the MoE's align scan (GroupArrays::kPrewritten) instead of the
// GEMM's setup kernel: the same product, unsplit and split in K (the swap-AB tile needs none).
TEST_P(Sm90GroupedGemmTest, ArraysWrittenByTheScanServeTheGemm) {
  SKIP_WITHOUT_SM90();
  const auto [tile, layout] = GetParam();
  const auto prewritten = cuda_moe::sm90::GroupArrays::kPrewritten;
  run_case({{5, 70, 0, 133, 1, 0}, 136, 1032, layout, tile, false, 1, prewritten});
  if (tile == GemmTile::kStreamSwapAb) return;
  run_case({{0, 37, 200, 0, 129, 3}, 264, 2064, layout, tile, false, 2, prewritten});
}

// Every tile in every layout it is compiled for (the swapped-operand tile: NK only).
INSTANTIATE_TEST_SUITE_P(Tiles, Sm90GroupedGemmTest, ::testing::ValuesIn(supported_tile_layouts()), tile_layout_name);

// A group whose first row starts past 2^31 elements of A: the per-group pointers (CUTLASS
// tiles) and the row offsets (the swapped-operand tile) are 64-bit.
class Sm90GroupedGemmFarRowsTest : public ::testing::TestWithParam<GemmTile> {};

TEST_P(Sm90GroupedGemmFarRowsTest, OffsetsPast2To31Elements) {
  SKIP_WITHOUT_SM90();
  auto rng = make_rng();
  const std::int64_t k = 4096, n = 64;
  const std::int32_t far = 540000;  // 540000 * 4096 > 2^31
  const std::vector<std::int32_t> offsets = {0, 64, far, far + 64};
  const std::vector<std::int32_t> rows = {10, 0, 33};
  const std::int64_t total = offsets.back();
  DeviceBuffer da(std::size_t(total) * k * 2);
  const std::vector<float> a0 = quantize(random_floats(rng, 10 * k), DType::kBF16);
  const std::vector<float> a2 = quantize(random_floats(rng, 33 * k), DType::kBF16);
  da.upload(to_bits(a0, DType::kBF16).data(), a0.size() * 2, 0);
  da.upload(to_bits(a2, DType::kBF16).data(), a2.size() * 2, std::size_t(far) * k * 2);
  const std::vector<float> b = quantize(random_floats(rng, 3 * n * k), DType::kBF16);
  DeviceBuffer db = DeviceBuffer::from(to_bits(b, DType::kBF16));
  DeviceBuffer dd(std::size_t(total) * n * 2);
  dd.poison();
  DeviceBuffer doff = DeviceBuffer::from(offsets), drows = DeviceBuffer::from(rows);
  DeviceBuffer ws(cuda_moe::sm90::grouped_gemm_bf16_sm90_workspace_size(3));
  GroupedGemmArgs args = args_on(da, db, dd, doff, ws);
  args.group_rows = static_cast<const std::int32_t*>(drows.data());
  args.groups = 3;
  args.n = n;
  args.k = k;
  args.tile = GetParam();
  const Status s = cuda_moe::sm90::grouped_gemm_bf16_sm90(args, nullptr);
  ASSERT_TRUE(s.ok()) << s.to_string();
  FUSEKIT_ASSERT_CUDA(cudaDeviceSynchronize());
  std::vector<std::uint16_t> bits(33 * n);
  dd.download(bits.data(), bits.size() * 2, std::size_t(far) * n * 2);
  const std::vector<float> got = from_bits(bits, DType::kBF16);
  std::vector<double> ref(33 * n);
  for (int r = 0; r < 33; ++r)
    for (int col = 0; col < n; ++col) {
      double acc = 0;
      for (std::int64_t kk = 0; kk < k; ++kk) acc += double(a2[r * k + kk]) * b[(2 * n + col) * k + kk];
      ref[r * n + col] = acc;
    }
  double ref_max = 0;
  for (double v : ref) ref_max = std::max(ref_max, std::fabs(v));
  EXPECT_TRUE(within(compare(got, ref), 4e-3, ref_max / 128 + 1e-3)) << cuda_moe::sm90::gemm_tile_name(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Tiles, Sm90GroupedGemmFarRowsTest,
                         ::testing::Values(GemmTile::kPingpong64x128, GemmTile::kStreamSwapAb));

// Gathered A rows (GroupedGemmArgs::a_rows, the swapped-operand tile only): each GEMM row
// reads its own source row of a padded matrix (stride k + 8), rows repeated, out of order, and
// one source row past 2^31 elements (64-bit row offsets), against the CPU reference.
TEST(Sm90GroupedGemm, StreamSwapAbGathersARowsByIndex) {
  SKIP_WITHOUT_SM90();
  auto rng = make_rng();
  const std::int64_t k = 4096, n = 80, stride = k + 8;
  const std::int32_t far = 530000;  // 530000 * 4104 > 2^31
  const std::vector<std::int32_t> rows = {3, 0, 41};
  const std::vector<std::int32_t> offsets = {0, 3, 3, 44};
  const int G = 3;
  const std::int64_t total = offsets.back();
  std::uniform_int_distribution<int> pick(0, 49);
  std::vector<std::int32_t> src(static_cast<std::size_t>(total));
  for (auto& r : src) r = pick(rng);  // 44 rows from 50 sources: repeats
  src[1] = far;
  src[40] = src[2];
  DeviceBuffer da(std::size_t(far + 1) * stride * 2);
  da.poison();  // the 8 pad elements of every row are NaN: a stride mix-up shows
  std::vector<std::vector<float>> a_src(static_cast<std::size_t>(total));
  for (std::int64_t r = 0; r < total; ++r) {
    a_src[r] = quantize(random_floats(rng, k), DType::kBF16);
  }
  // Rows sharing a source must share its values: upload each distinct source once.
  std::vector<int> first_of(static_cast<std::size_t>(far + 1), -1);
  for (std::int64_t r = 0; r < total; ++r) {
    int& f = first_of[src[r]];
    if (f < 0) {
      f = static_cast<int>(r);
      da.upload(to_bits(a_src[r], DType::kBF16).data(), k * 2, std::size_t(src[r]) * stride * 2);
    } else {
      a_src[r] = a_src[f];
    }
  }
  const std::vector<float> b = quantize(random_floats(rng, G * n * k), DType::kBF16);
  DeviceBuffer db = DeviceBuffer::from(to_bits(b, DType::kBF16));
  DeviceBuffer dd(std::size_t(total) * n * 2);
  dd.poison();
  DeviceBuffer doff = DeviceBuffer::from(offsets), drows = DeviceBuffer::from(rows), dsrc = DeviceBuffer::from(src);
  DeviceBuffer ws(cuda_moe::sm90::grouped_gemm_bf16_sm90_workspace_size(G));
  GroupedGemmArgs args = args_on(da, db, dd, doff, ws);
  args.group_rows = static_cast<const std::int32_t*>(drows.data());
  args.a_rows = static_cast<const std::int32_t*>(dsrc.data());
  args.a_row_stride = stride;
  args.groups = G;
  args.n = n;
  args.k = k;
  args.tile = GemmTile::kStreamSwapAb;
  const Status s = cuda_moe::sm90::grouped_gemm_bf16_sm90(args, nullptr);
  ASSERT_TRUE(s.ok()) << s.to_string();
  FUSEKIT_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> got = from_bits(dd.to_host<std::uint16_t>(total * n), DType::kBF16);
  std::vector<double> ref(static_cast<std::size_t>(total * n));
  for (int gi = 0; gi < G; ++gi)
    for (std::int64_t r = offsets[gi]; r < offsets[gi + 1]; ++r)
      for (std::int64_t col = 0; col < n; ++col) {
        double acc = 0;
        for (std::int64_t kk = 0; kk < k; ++kk) acc += double(a_src[r][kk]) * b[(gi * n + col) * k + kk];
        ref[r * n + col] = acc;
      }
  double ref_max = 0;
  for (double v : ref) ref_max = std::max(ref_max, std::fabs(v));
  EXPECT_TRUE(within(compare(got, ref), 4e-3, ref_max / 128 + 1e-3));
}

TEST(Sm90GroupedGemm, GatheredRowsNeedTheSwapAbTileAndARowStride) {
  SKIP_WITHOUT_SM90();
  DeviceBuffer buf(1 << 16), ws(cuda_moe::sm90::grouped_gemm_bf16_sm90_workspace_size(4));
  DeviceBuffer doff = DeviceBuffer::from(std::vector<std::int32_t>{0, 8, 8, 8, 16});
  DeviceBuffer dsrc = DeviceBuffer::from(std::vector<std::int32_t>(16, 0));
  buf.poison();
  GroupedGemmArgs args = args_on(buf, buf, buf, doff, ws);
  args.groups = 4;
  args.n = 64;
  args.k = 64;
  args.a_rows = static_cast<const std::int32_t*>(dsrc.data());
  args.a_row_stride = 64;
  args.tile = GemmTile::kPingpong64x128;
  Status s = cuda_moe::sm90::grouped_gemm_bf16_sm90(args, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("gathered A rows need the stream_swapab_256x32 tile"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("got tile pingpong_64x128x64_c1x1"), std::string::npos) << s.message();
  args.tile = GemmTile::kStreamSwapAb;
  for (std::int64_t bad : {std::int64_t{0}, std::int64_t{56}, std::int64_t{68}}) {
    args.a_row_stride = bad;
    s = cuda_moe::sm90::grouped_gemm_bf16_sm90(args, nullptr);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << "stride " << bad;
    EXPECT_NE(s.message().find("and stride " + std::to_string(bad)), std::string::npos) << s.message();
  }
  FUSEKIT_ASSERT_CUDA(cudaDeviceSynchronize());
  const auto bits = buf.to_host<std::uint16_t>(8);
  for (std::uint16_t b : bits) EXPECT_EQ(b, 0xFFFF) << "a refused call wrote D";
}

TEST(Sm90GroupedGemm, BadArgumentsAreErrors) {
  SKIP_WITHOUT_SM90();
  GroupedGemmArgs args;
  args.groups = 0;
  Status s = cuda_moe::sm90::grouped_gemm_bf16_sm90(args, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("groups must be in [1, 1024], got 0"), std::string::npos) << s.message();
  args.groups = 4;
  args.n = 100;
  args.k = 64;
  s = cuda_moe::sm90::grouped_gemm_bf16_sm90(args, nullptr);
  EXPECT_NE(s.message().find("multiples of 8"), std::string::npos) << s.message();
  args.n = 64;
  DeviceBuffer buf(1 << 16);
  args.a = reinterpret_cast<const __nv_bfloat16*>(static_cast<char*>(buf.data()) + 2);
  args.b = args.a;
  args.d = static_cast<__nv_bfloat16*>(buf.data());
  s = cuda_moe::sm90::grouped_gemm_bf16_sm90(args, nullptr);
  EXPECT_NE(s.message().find("16-byte aligned"), std::string::npos) << s.message();
}

// Split-K's limits: each refused before anything is launched, D untouched.
TEST(Sm90GroupedGemm, SplitKBadArgumentsAreErrors) {
  SKIP_WITHOUT_SM90();
  DeviceBuffer buf(1 << 16), ws(cuda_moe::sm90::grouped_gemm_bf16_sm90_workspace_size(1024));
  DeviceBuffer doff = DeviceBuffer::from(std::vector<std::int32_t>{0, 8, 8, 8, 16});
  buf.poison();
  auto base = [&] {
    GroupedGemmArgs args = args_on(buf, buf, buf, doff, ws);
    args.groups = 4;
    args.n = 64;
    args.k = 128;
    args.tile = GemmTile::kPingpong64x128;
    args.k_splits = 2;
    args.d_split_stride = 16 * 64;
    return args;
  };
  struct Bad {
    const char* what;
    GroupedGemmArgs args;
    const char* message;
  };
  std::vector<Bad> bad;
  {
    GroupedGemmArgs a = base();
    a.k_splits = 0;
    bad.push_back({"0 slices", a, "k_splits must be in [1, 8]"});
    a.k_splits = 9;
    bad.push_back({"9 slices", a, "got k_splits=9"});
    a = base();
    a.k_splits = 3;  // 128 % 24 != 0
    bad.push_back({"k no multiple of 8 * slices", a, "k a multiple of 8 * k_splits"});
    a = base();
    a.groups = 513;
    a.k_splits = 2;
    bad.push_back({"too many entries", a, "groups * k_splits <= 1024"});
    a = base();
    a.tile = GemmTile::kStreamSwapAb;
    bad.push_back({"swap-AB tile", a, "got tile stream_swapab_256x32"});
    a = base();
    a.epilogue = GemmEpilogue::kSwiglu;
    bad.push_back({"SwiGLU epilogue", a, "the SwiGLU epilogue"});
    a = base();
    a.d_split_stride = 60;
    bad.push_back({"slice stride below n", a, "d_split_stride=60"});
    a.d_split_stride = 68;
    bad.push_back({"slice stride no multiple of 8", a, "d_split_stride=68"});
  }
  for (const Bad& b : bad) {
    const Status s = cuda_moe::sm90::grouped_gemm_bf16_sm90(b.args, nullptr);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << b.what;
    EXPECT_NE(s.message().find(b.message), std::string::npos) << b.what << ": " << s.message();
  }
  FUSEKIT_ASSERT_CUDA(cudaDeviceSynchronize());
  for (std::uint16_t v : buf.to_host<std::uint16_t>(1 << 15)) ASSERT_EQ(v, 0xFFFF) << "a refused call wrote";
}

// The scan writes, byte for byte, the arrays the GEMMs' own setup kernels would: two calls at
// once (NK with the SwiGLU epilogue; KN split in 3), 300 groups (more than the scan's threads
// per call and split entry), some empty; everything else in the workspaces stays as poisoned.
TEST(Sm90GroupedGemm, ScanWritesTheSetupKernelsArrays) {
  SKIP_WITHOUT_SM90();
  auto rng = make_rng();
  const int G = 300;
  std::vector<std::int32_t> rows(G), offsets(G + 1, 0);
  for (int g = 0; g < G; ++g) {
    rows[g] = g % 7 == 3 ? 0 : static_cast<std::int32_t>(rng() % 50);
    offsets[g + 1] = offsets[g] + rows[g];
  }
  DeviceBuffer drows = DeviceBuffer::from(rows);
  DeviceBuffer doffsets = DeviceBuffer::from(offsets);
  DeviceBuffer scanned(4 * (G + 1));
  scanned.poison();
  DeviceBuffer operand(1 << 12);
  const std::size_t ws_bytes = cuda_moe::sm90::grouped_gemm_bf16_sm90_workspace_size(3 * G);
  DeviceBuffer ws_setup[2] = {DeviceBuffer(ws_bytes), DeviceBuffer(ws_bytes)};
  DeviceBuffer ws_scan[2] = {DeviceBuffer(ws_bytes), DeviceBuffer(ws_bytes)};
  auto call_on = [&](DeviceBuffer& ws, const DeviceBuffer& offs, int which) {
    GroupedGemmArgs a = args_on(operand, operand, operand, offs, ws);
    a.group_rows = static_cast<const std::int32_t*>(drows.data());
    a.groups = G;
    a.tile = which == 0 ? GemmTile::kPingpong64x128k128 : GemmTile::kCooperative128x256;
    a.layout = which == 0 ? MoeWeightLayout::kNK : MoeWeightLayout::kKN;
    a.epilogue = which == 0 ? GemmEpilogue::kSwiglu : GemmEpilogue::kStore;
    a.n = which == 0 ? 272 : 136;
    a.k = which == 0 ? 520 : 1032;  // 1032 = 3 * 344: 3 slices
    a.k_splits = which == 0 ? 1 : 3;
    a.d_split_stride = which == 0 ? 0 : 64 * 136;
    return a;
  };
  cuda_moe::sm90::GroupArraysToWrite to_write;
  for (int which = 0; which < 2; ++which) {
    ws_setup[which].poison();
    ws_scan[which].poison();
    GroupedGemmArgs own = call_on(ws_setup[which], doffsets, which);
    cuda_moe::sm90::GroupArraysToWrite own_call;
    ASSERT_TRUE(cuda_moe::sm90::prepare_group_arrays(own, &own_call).ok());
    ASSERT_EQ(own_call.count, 1);
    ASSERT_TRUE(cuda_moe::sm90::detail::launch_grouped_gemm_setup(own_call.calls[0], nullptr).ok());
    ASSERT_TRUE(cuda_moe::sm90::prepare_group_arrays(call_on(ws_scan[which], scanned, which), &to_write).ok());
  }
  ASSERT_EQ(to_write.count, 2);
  GroupedGemmArgs third = call_on(ws_scan[0], scanned, 0);
  const Status full = cuda_moe::sm90::prepare_group_arrays(third, &to_write);
  EXPECT_EQ(full.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(full.message().find("fewer than 2 calls"), std::string::npos) << full.message();
  EXPECT_EQ(to_write.count, 2);
  ASSERT_TRUE(cuda_moe::sm90::launch_align_scan_offsets(static_cast<const std::int32_t*>(drows.data()), G,
                                                        static_cast<std::int32_t*>(scanned.data()), to_write, nullptr)
                  .ok());
  FUSEKIT_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(scanned.to_host<std::int32_t>(G + 1), offsets);
  for (int which = 0; which < 2; ++which) {
    const std::vector<std::uint8_t> by_setup = ws_setup[which].to_host<std::uint8_t>(ws_bytes);
    const std::vector<std::uint8_t> by_scan = ws_scan[which].to_host<std::uint8_t>(ws_bytes);
    std::size_t written = 0;
    for (std::uint8_t b : by_setup) written += b != 0xFF;
    EXPECT_GT(written, std::size_t(7 * G)) << "call " << which << ": the setup kernel wrote nearly nothing";
    // The group-offset pointers differ between the two (doffsets vs scanned) but are never
    // written into the arrays, so the bytes must agree everywhere.
    EXPECT_TRUE(by_setup == by_scan) << "call " << which;
  }
}

// prepare_group_arrays refuses what grouped_gemm_bf16_sm90 refuses, with the same message,
// and adds nothing.
TEST(Sm90GroupedGemm, PrepareGroupArraysRefusesBadArguments) {
  SKIP_WITHOUT_SM90();
  GroupedGemmArgs args;
  args.groups = 0;
  cuda_moe::sm90::GroupArraysToWrite to_write;
  const Status s = cuda_moe::sm90::prepare_group_arrays(args, &to_write);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("groups must be in [1, 1024], got 0"), std::string::npos) << s.message();
  EXPECT_EQ(to_write.count, 0);
}

TEST(Sm90GroupedGemm, StreamSwapAbWithKnWeightsIsAnError) {
  SKIP_WITHOUT_SM90();
  DeviceBuffer buf(1 << 16), ws(cuda_moe::sm90::grouped_gemm_bf16_sm90_workspace_size(4));
  DeviceBuffer doff = DeviceBuffer::from(std::vector<std::int32_t>{0, 8, 8, 8, 16});
  GroupedGemmArgs args = args_on(buf, buf, buf, doff, ws);
  args.groups = 4;
  args.n = 64;
  args.k = 64;
  args.layout = MoeWeightLayout::kKN;
  args.tile = GemmTile::kStreamSwapAb;
  const Status s = cuda_moe::sm90::grouped_gemm_bf16_sm90(args, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("stream_swapab_256x32 needs NK weights, got KN"), std::string::npos) << s.message();
  EXPECT_FALSE(cuda_moe::sm90::gemm_tile_supports(GemmTile::kStreamSwapAb, MoeWeightLayout::kKN));
  EXPECT_TRUE(cuda_moe::sm90::gemm_tile_supports(GemmTile::kStreamSwapAb, MoeWeightLayout::kNK));
}

// ---- SwiGLU epilogue ----

// W1 row of gate (up = false) or up column c in the 8-row-interleaved order.
std::int64_t interleaved_row(std::int64_t c, bool up) { return (c / 8) * 16 + (up ? 8 : 0) + c % 8; }

struct SwigluRun {
  std::vector<std::int32_t> offsets;  // unpadded: every row of a run is real
  std::vector<float> a, w1;           // a [rows, k]; w1 [G, 2I, k] interleaved
  std::int64_t rows = 0, inter = 0, k = 0;
};

SwigluRun make_swiglu_run(const std::vector<std::int32_t>& rows, std::int64_t inter, std::int64_t k) {
  auto rng = make_rng();
  SwigluRun r;
  r.offsets.push_back(0);
  for (std::int32_t n : rows) r.offsets.push_back(r.offsets.back() + n);
  r.rows = std::max<std::int64_t>(r.offsets.back(), 1);
  r.inter = inter;
  r.k = k;
  r.a = quantize(random_floats(rng, r.rows * k), DType::kBF16);
  r.w1 = quantize(random_floats(rng, static_cast<std::int64_t>(rows.size()) * 2 * inter * k), DType::kBF16);
  return r;
}

// One grouped GEMM call on r (d: [rows, 2I] for kStore, [rows, I] for kSwiglu, NaN-poisoned).
std::vector<std::uint16_t> run_gemm(const SwigluRun& r, GemmTile tile, GemmEpilogue epilogue, Status* status) {
  const int G = static_cast<int>(r.offsets.size()) - 1;
  const std::int64_t d_cols = epilogue == GemmEpilogue::kSwiglu ? r.inter : 2 * r.inter;
  DeviceBuffer da = DeviceBuffer::from(to_bits(r.a, DType::kBF16));
  DeviceBuffer db = DeviceBuffer::from(to_bits(r.w1, DType::kBF16));
  DeviceBuffer dd(r.rows * d_cols * 2);
  dd.poison();
  DeviceBuffer doff = DeviceBuffer::from(r.offsets);
  DeviceBuffer ws(cuda_moe::sm90::grouped_gemm_bf16_sm90_workspace_size(G));
  GroupedGemmArgs args = args_on(da, db, dd, doff, ws);
  args.groups = G;
  args.n = 2 * r.inter;
  args.k = r.k;
  args.tile = tile;
  args.epilogue = epilogue;
  *status = cuda_moe::sm90::grouped_gemm_bf16_sm90(args, nullptr);
  if (!status->ok()) return {};
  if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) {
    *status = Status(StatusCode::kCudaError, cudaGetErrorString(e));
    return {};
  }
  return dd.to_host<std::uint16_t>(r.rows * d_cols);
}

class Sm90SwigluEpilogueTest : public ::testing::TestWithParam<GemmTile> {};

TEST_P(Sm90SwigluEpilogueTest, MatchesReferenceOnUnevenGroups) {
  SKIP_WITHOUT_SM90();
  // Empty groups first, middle and last, one row, sizes past the tile edges; I = 200 is no
  // multiple of any tile's N / 2 (64 or 128), K = 152 no multiple of 64.
  const SwigluRun r = make_swiglu_run({0, 1, 37, 0, 130, 64, 0, 3, 0}, 200, 152);
  Status s;
  const std::vector<float> act = from_bits(run_gemm(r, GetParam(), GemmEpilogue::kSwiglu, &s), DType::kBF16);
  ASSERT_TRUE(s.ok()) << s.to_string();
  std::vector<float> got;
  std::vector<double> ref;
  for (std::size_t g = 0; g + 1 < r.offsets.size(); ++g) {
    for (std::int64_t row = r.offsets[g]; row < r.offsets[g + 1]; ++row) {
      for (std::int64_t c = 0; c < r.inter; ++c) {
        double gate = 0, up = 0;
        const float* wg = &r.w1[(g * 2 * r.inter + interleaved_row(c, false)) * r.k];
        const float* wu = &r.w1[(g * 2 * r.inter + interleaved_row(c, true)) * r.k];
        for (std::int64_t kk = 0; kk < r.k; ++kk) {
          gate += double(r.a[row * r.k + kk]) * wg[kk];
          up += double(r.a[row * r.k + kk]) * wu[kk];
        }
        ref.push_back(gate / (1.0 + std::exp(-gate)) * up);
        got.push_back(act[row * r.inter + c]);
      }
    }
  }
  ASSERT_FALSE(ref.empty());
  double ref_max = 0;
  for (double v : ref) ref_max = std::max(ref_max, std::fabs(v));
  // Gate and up are rounded to bf16 before silu * up, then the product: about three half-ulps.
  EXPECT_TRUE(within(compare(got, ref), 8e-3, ref_max / 64 + 1e-3)) << cuda_moe::sm90::gemm_tile_name(GetParam());
}

TEST_P(Sm90SwigluEpilogueTest, SameBitsAsUnfusedGemmThenSwiglu) {
  SKIP_WITHOUT_SM90();
  const SwigluRun r = make_swiglu_run({70, 0, 129, 5}, 768, 256);
  Status s;
  const std::vector<std::uint16_t> fused = run_gemm(r, GetParam(), GemmEpilogue::kSwiglu, &s);
  ASSERT_TRUE(s.ok()) << s.to_string();
  const std::vector<std::uint16_t> h = run_gemm(r, GetParam(), GemmEpilogue::kStore, &s);
  ASSERT_TRUE(s.ok()) << s.to_string();
  // h's columns are in W1's interleaved order; swiglu_rows_bf16 wants [gate | up] halves.
  std::vector<std::uint16_t> halves(h.size());
  for (std::int64_t row = 0; row < r.rows; ++row) {
    for (std::int64_t c = 0; c < r.inter; ++c) {
      halves[row * 2 * r.inter + c] = h[row * 2 * r.inter + interleaved_row(c, false)];
      halves[row * 2 * r.inter + r.inter + c] = h[row * 2 * r.inter + interleaved_row(c, true)];
    }
  }
  DeviceBuffer dh = DeviceBuffer::from(halves);
  DeviceBuffer dact(r.rows * r.inter * 2);
  dact.poison();
  DeviceBuffer drows = DeviceBuffer::from(std::vector<std::int32_t>{r.offsets.back()});
  cuda_moe::sm90::SwigluParams p;
  p.h = static_cast<const __nv_bfloat16*>(dh.data());
  p.act = static_cast<__nv_bfloat16*>(dact.data());
  p.rows = static_cast<const std::int32_t*>(drows.data());
  p.max_rows = r.rows;
  p.intermediate = r.inter;
  ASSERT_TRUE(cuda_moe::sm90::launch_swiglu_rows_bf16(p, nullptr).ok());
  FUSEKIT_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<std::uint16_t> unfused = dact.to_host<std::uint16_t>(r.rows * r.inter);
  std::int64_t differ = 0, nan = 0;
  for (std::size_t i = 0; i < fused.size(); ++i) {
    differ += fused[i] != unfused[i];
    nan += std::isnan(from_bits(std::vector<std::uint16_t>{fused[i]}, DType::kBF16)[0]);
  }
  EXPECT_EQ(nan, 0) << "rows left unwritten";
  EXPECT_EQ(differ, 0) << "of " << fused.size() << " outputs";
}

INSTANTIATE_TEST_SUITE_P(Tiles, Sm90SwigluEpilogueTest, ::testing::ValuesIn(cuda_moe::sm90::kGemmTiles), tile_name);

TEST(Sm90GroupedGemm, SwigluEpilogueBadArgumentsAreErrors) {
  SKIP_WITHOUT_SM90();
  const SwigluRun r = make_swiglu_run({8}, 200, 64);
  DeviceBuffer buf(1 << 20), ws(cuda_moe::sm90::grouped_gemm_bf16_sm90_workspace_size(1));
  DeviceBuffer doff = DeviceBuffer::from(r.offsets);
  GroupedGemmArgs args = args_on(buf, buf, buf, doff, ws);
  args.groups = 1;
  args.n = 200;  // 2I with I = 100: not a multiple of 16
  args.k = 64;
  args.epilogue = GemmEpilogue::kSwiglu;
  Status s = cuda_moe::sm90::grouped_gemm_bf16_sm90(args, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("n % 16 == 0, got NK n=200"), std::string::npos) << s.message();
  args.n = 256;
  args.layout = MoeWeightLayout::kKN;
  s = cuda_moe::sm90::grouped_gemm_bf16_sm90(args, nullptr);
  EXPECT_NE(s.message().find("needs NK weights"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace fusekit::testing
#endif  // FUSEKIT_WITH_CUDA
