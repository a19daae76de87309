// gemm1_swiglu, gemm2 and finalize on the cpu backend (the oracle) against naive per-pair
// computations (long double sums over NK-indexed weights; KN cases pass each expert's
// transpose). The naive results are rounded to bf16 where the stage stores bf16, so the only
// allowed difference is a rare one-ulp rounding flip. Outputs are NaN-poisoned first: every
// row must be written (padding rows with zeros).
#include <cmath>
#include <cstring>

#include "cpu/moe_ref.h"
#include "cpu/moe_testing.h"

namespace fusekit::testing::moe {
namespace {

struct Problem {
  Shape s;
  std::int64_t T = 0, bm = 16;
  MoeWeightLayout layout = MoeWeightLayout::kNK;
  std::vector<bf16> x, w1_nk, w2_nk;
  std::vector<std::int32_t> ids;
  std::vector<float> weights;
  // The alignment of `ids` made by the align stage (checked on its own in moe_align_test).
  std::int64_t capacity = 0;
  Buf<std::int32_t> sorted, blocks, offsets, ntpp;

  Problem(const Shape& shape, std::int64_t tokens, std::int64_t block_m, MoeWeightLayout l, std::mt19937_64& rng)
      : s(shape), T(tokens), bm(block_m), layout(l) {
    x = random_bf16(rng, T * s.H, 1.0f);
    w1_nk = random_bf16(rng, s.E * 2 * s.I * s.H, 1.0f / std::sqrt(static_cast<float>(s.H)));
    w2_nk = random_bf16(rng, s.E * s.H * s.I, 1.0f / std::sqrt(static_cast<float>(s.I)));
    std::vector<std::int32_t> all(s.E);
    std::iota(all.begin(), all.end(), 0);
    for (std::int64_t t = 0; t < T; ++t) {
      std::shuffle(all.begin(), all.end(), rng);
      ids.insert(ids.end(), all.begin(), all.begin() + s.k);
    }
    weights = random_floats(rng, T * s.k, 0.05f, 1.0f);
  }
  MoeConfig config() const { return config_for(s, std::max<std::int64_t>(T, 1), layout); }
  void align() {
    capacity = moe_align_capacity(T, s.k, s.E, bm);
    sorted = Buf<std::int32_t>(capacity, -7);
    blocks = Buf<std::int32_t>(capacity / bm, -7);
    offsets = Buf<std::int32_t>(s.E + 1, -7);
    ntpp = Buf<std::int32_t>(1, -7);
    Buf<std::int32_t> in(ids);
    ASSERT_TRUE(moe_align(config(), TensorView::contiguous(in.data(), DType::kI32, {T, s.k}), alignment(), nullptr).ok());
  }
  MoeAlignment alignment() {
    return MoeAlignment{bm, TensorView::contiguous(sorted.data(), DType::kI32, {capacity}),
                        TensorView::contiguous(blocks.data(), DType::kI32, {capacity / bm}),
                        TensorView::contiguous(offsets.data(), DType::kI32, {s.E + 1}),
                        TensorView::contiguous(ntpp.data(), DType::kI32, {1})};
  }
};

struct Layer {
  Buf<bf16> w1, w2;
  MoeLayer layer;
  Layer(const Problem& p) : w1(as_layout(p.w1_nk, p.s.E, 2 * p.s.I, p.s.H, p.layout)),
                            w2(as_layout(p.w2_nk, p.s.E, p.s.H, p.s.I, p.layout)) {
    layer.config = p.config();
    const bool nk = p.layout == MoeWeightLayout::kNK;
    const Shape& s = p.s;
    layer.weights.w1 = nk ? TensorView::contiguous(w1.data(), DType::kBF16, {s.E, 2 * s.I, s.H})
                          : TensorView::contiguous(w1.data(), DType::kBF16, {s.E, s.H, 2 * s.I});
    layer.weights.w2 = nk ? TensorView::contiguous(w2.data(), DType::kBF16, {s.E, s.H, s.I})
                          : TensorView::contiguous(w2.data(), DType::kBF16, {s.E, s.I, s.H});
  }
};

std::string trace(const Problem& p) {
  return name_of(p.s) + " T=" + std::to_string(p.T) + " block_m=" + std::to_string(p.bm) +
         (p.layout == MoeWeightLayout::kNK ? " NK" : " KN");
}

// Runs gemm1 on a poisoned act; checks every row against the naive act (or zeros).
Buf<bf16> check_gemm1(Problem& p) {
  const Shape& s = p.s;
  Layer L(p);
  Buf<bf16> x(p.x);
  Buf<bf16> act(p.capacity * s.I, kBf16NaN);
  const Status st = moe_gemm1_swiglu(L.layer, TensorView::contiguous(x.data(), DType::kBF16, {p.T, s.H}),
                                     p.alignment(), TensorView::contiguous(act.data(), DType::kBF16, {p.capacity, s.I}),
                                     nullptr);
  EXPECT_TRUE(st.ok()) << st.to_string();
  const std::int64_t pairs = p.T * s.k;
  std::vector<float> got;
  std::vector<double> want;
  for (std::int64_t r = 0; r < p.capacity; ++r) {
    const std::int32_t pair = p.sorted[r];
    if (pair == pairs) {
      for (std::int64_t i = 0; i < s.I; ++i) EXPECT_EQ(act[r * s.I + i], 0) << "padding row " << r;
      continue;
    }
    const std::vector<double> a = naive_act(s, p.x.data() + (pair / s.k) * s.H, p.w1_nk, p.ids[pair]);
    for (std::int64_t i = 0; i < s.I; ++i) {
      got.push_back(f(act[r * s.I + i]));
      want.push_back(f(b16(a[i])));
    }
  }
  EXPECT_EQ(static_cast<std::int64_t>(got.size()), pairs * s.I) << "every pair has exactly one row";
  EXPECT_TRUE(bf16_close(got, want)) << "gemm1_swiglu";
  return act;
}

// Runs gemm2 on the given act; checks y[p] = w[p] * naive(act[row of p]).
Buf<bf16> check_gemm2(Problem& p, const Buf<bf16>& act) {
  const Shape& s = p.s;
  Layer L(p);
  const std::int64_t pairs = p.T * s.k;
  Buf<float> w(p.weights);
  Buf<bf16> y(pairs * s.H, kBf16NaN);
  const Status st = moe_gemm2(L.layer, TensorView::contiguous(const_cast<bf16*>(act.data()), DType::kBF16, {p.capacity, s.I}),
                              p.alignment(), TensorView::contiguous(w.data(), DType::kF32, {p.T, s.k}),
                              TensorView::contiguous(y.data(), DType::kBF16, {pairs, s.H}), nullptr);
  EXPECT_TRUE(st.ok()) << st.to_string();
  std::vector<std::int64_t> row_of(pairs, -1);
  for (std::int64_t r = 0; r < p.capacity; ++r) {
    if (p.sorted[r] < pairs) row_of[p.sorted[r]] = r;
  }
  std::vector<float> got = floats_of(y.data(), pairs * s.H);
  std::vector<double> want;
  for (std::int64_t q = 0; q < pairs; ++q) {
    const std::vector<double> d = naive_down(s, act.data() + row_of[q] * s.I, p.w2_nk, p.ids[q]);
    for (double v : d) want.push_back(f(b16(static_cast<double>(p.weights[q]) * v)));
  }
  EXPECT_TRUE(bf16_close(got, want)) << "gemm2";
  return y;
}

void check_finalize(Problem& p, const Buf<bf16>& y) {
  const Shape& s = p.s;
  const std::int64_t pairs = p.T * s.k;
  Buf<bf16> out(p.T * s.H, kBf16NaN);
  const Status st = moe_finalize(p.config(), TensorView::contiguous(const_cast<bf16*>(y.data()), DType::kBF16, {pairs, s.H}),
                                 TensorView::contiguous(out.data(), DType::kBF16, {p.T, s.H}), nullptr);
  ASSERT_TRUE(st.ok()) << st.to_string();
  std::vector<double> want;
  for (std::int64_t t = 0; t < p.T; ++t) {
    for (std::int64_t h = 0; h < s.H; ++h) {
      long double sum = 0;
      for (std::int64_t j = 0; j < s.k; ++j) sum += f(y[(t * s.k + j) * s.H + h]);
      want.push_back(f(b16(static_cast<double>(sum))));
    }
  }
  EXPECT_TRUE(bf16_close(floats_of(out.data(), p.T * s.H), want)) << "finalize";
}

void check_all(const Shape& s, std::int64_t T, std::int64_t bm, MoeWeightLayout layout, std::mt19937_64& rng) {
  Problem p(s, T, bm, layout, rng);
  SCOPED_TRACE(trace(p));
  p.align();
  const Buf<bf16> act = check_gemm1(p);
  const Buf<bf16> y = check_gemm2(p, act);
  check_finalize(p, y);
}

// Sizes that are multiples of nothing in particular (H, I multiples of 8 as the API requires).
const Shape kShapes[] = {{1, 1, 64, 32}, {7, 3, 200, 96}, {16, 4, 136, 48}, {8, 2, 72, 104}, {64, 6, 128, 88}};

TEST(MoeGemm, StagesMatchNaiveBothLayouts) {
  auto rng = make_rng();
  for (const Shape& s : kShapes) {
    for (MoeWeightLayout layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
      for (std::int64_t T : {1, 7, 19}) check_all(s, T, T == 7 ? 64 : 16, layout, rng);
      if (HasFailure()) return;
    }
  }
}

TEST(MoeGemm, ManyExperts) {
  auto rng = make_rng();
  check_all({512, 10, 16, 8}, 9, 16, MoeWeightLayout::kNK, rng);
  check_all({512, 10, 16, 8}, 9, 1, MoeWeightLayout::kKN, rng);
}

// Every pair to one expert (k = 1), and every expert empty but one.
TEST(MoeGemm, OneExpertTakesEveryToken) {
  auto rng = make_rng();
  for (MoeWeightLayout layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
    Problem p({16, 1, 64, 40}, 45, 16, layout, rng);
    std::fill(p.ids.begin(), p.ids.end(), 13);
    SCOPED_TRACE(trace(p));
    p.align();
    const Buf<bf16> act = check_gemm1(p);
    const Buf<bf16> y = check_gemm2(p, act);
    check_finalize(p, y);
  }
}

// Rows beyond the padded total (a larger buffer) are written with zeros too; garbage expert or
// pair ids in an alignment never make the oracle read out of bounds — such rows are zeros.
TEST(MoeGemm, RowsWithoutPairsAreZeros) {
  auto rng = make_rng();
  Problem p({8, 2, 64, 32}, 5, 16, MoeWeightLayout::kNK, rng);
  p.align();
  const Shape& s = p.s;
  Layer L(p);
  Buf<bf16> x(p.x);
  // Corrupt: one block's expert out of range, one row's pair out of range.
  const std::int32_t saved_block = p.blocks[0], saved_row = p.sorted[1];
  p.blocks[0] = 99;
  p.sorted[1] = -5;
  Buf<bf16> act(p.capacity * s.I, kBf16NaN);
  ASSERT_TRUE(moe_gemm1_swiglu(L.layer, TensorView::contiguous(x.data(), DType::kBF16, {p.T, s.H}), p.alignment(),
                               TensorView::contiguous(act.data(), DType::kBF16, {p.capacity, s.I}), nullptr)
                  .ok());
  for (std::int64_t r = 0; r < p.bm; ++r) {
    for (std::int64_t i = 0; i < s.I; ++i) ASSERT_EQ(act[r * s.I + i], 0) << "row " << r;
  }
  for (std::size_t i = 0; i < act.size(); ++i) ASSERT_FALSE(std::isnan(f(act[i]))) << "unwritten act element " << i;
  p.blocks[0] = saved_block;
  p.sorted[1] = saved_row;
}

// Determinism, with rows large enough that the oracle spreads them over threads.
TEST(MoeGemm, BitIdenticalRunToRunThreaded) {
  auto rng = make_rng();
  Problem p({4, 2, 256, 256}, 12, 16, MoeWeightLayout::kKN, rng);
  p.align();
  SCOPED_TRACE(trace(p));
  const Buf<bf16> a1 = check_gemm1(p);
  const Buf<bf16> a2 = check_gemm1(p);
  EXPECT_EQ(a1.bytes(), a2.bytes());
  const Buf<bf16> y1 = check_gemm2(p, a1);
  const Buf<bf16> y2 = check_gemm2(p, a1);
  EXPECT_EQ(y1.bytes(), y2.bytes());
}

// Padded row strides: x, act and y rows further apart than their width.
TEST(MoeGemm, PaddedRowStrides) {
  auto rng = make_rng();
  Problem p({8, 2, 64, 48}, 6, 16, MoeWeightLayout::kNK, rng);
  p.align();
  const Shape& s = p.s;
  Layer L(p);
  const std::int64_t xs = s.H + 8, as = s.I + 16, ys = s.H + 24;
  Buf<bf16> x(p.T * xs, kBf16NaN);
  for (std::int64_t t = 0; t < p.T; ++t) std::memcpy(&x[t * xs], &p.x[t * s.H], s.H * 2);
  Buf<bf16> act(p.capacity * as, 0x7777), y(p.T * s.k * ys, 0x7777);
  TensorView xv = TensorView::contiguous(x.data(), DType::kBF16, {p.T, s.H});
  xv.strides[0] = xs;
  TensorView av = TensorView::contiguous(act.data(), DType::kBF16, {p.capacity, s.I});
  av.strides[0] = as;
  TensorView yv = TensorView::contiguous(y.data(), DType::kBF16, {p.T * s.k, s.H});
  yv.strides[0] = ys;
  Buf<float> w(p.weights);
  ASSERT_TRUE(moe_gemm1_swiglu(L.layer, xv, p.alignment(), av, nullptr).ok());
  ASSERT_TRUE(
      moe_gemm2(L.layer, av, p.alignment(), TensorView::contiguous(w.data(), DType::kF32, {p.T, s.k}), yv, nullptr).ok());
  // Same as packed.
  Buf<bf16> act_packed = check_gemm1(p);
  Buf<bf16> y_packed = check_gemm2(p, act_packed);
  for (std::int64_t r = 0; r < p.capacity; ++r) {
    ASSERT_EQ(0, std::memcmp(&act[r * as], &act_packed[r * s.I], s.I * 2)) << "act row " << r;
    for (std::int64_t i = s.I; i < as && r + 1 < p.capacity; ++i) ASSERT_EQ(act[r * as + i], 0x7777) << "act gap";
  }
  for (std::int64_t q = 0; q < p.T * s.k; ++q) {
    ASSERT_EQ(0, std::memcmp(&y[q * ys], &y_packed[q * s.H], s.H * 2)) << "y row " << q;
    for (std::int64_t h = s.H; h < ys && q + 1 < p.T * s.k; ++h) ASSERT_EQ(y[q * ys + h], 0x7777) << "y gap";
  }
}

}  // namespace
}  // namespace fusekit::testing::moe
