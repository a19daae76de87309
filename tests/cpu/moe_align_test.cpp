// align on the cpu backend (the oracle) against a naive per-expert scan that builds the whole
// documented MoeAlignment format: runs stable in the pair index, padding rows = T*k, rows
// past the total = T*k, expert_ids -1 past the total, expert_offsets [E+1]. Outputs are
// poisoned first; every entry is compared exactly.
#include "cpu/moe_testing.h"

namespace fusekit::testing::moe {
namespace {

struct Expected {
  std::vector<std::int32_t> sorted, expert_ids, offsets;
  std::int32_t total = 0;
};

Expected naive_align(const std::vector<std::int32_t>& ids, std::int64_t E, std::int64_t bm, std::int64_t capacity) {
  const auto pairs = static_cast<std::int32_t>(ids.size());
  Expected x;
  x.sorted.assign(capacity, pairs);
  x.expert_ids.assign(capacity / bm, -1);
  std::int64_t row = 0;
  for (std::int64_t e = 0; e < E; ++e) {
    x.offsets.push_back(static_cast<std::int32_t>(row));
    std::int64_t n = 0;
    for (std::int32_t p = 0; p < pairs; ++p) {
      if (ids[p] == e) x.sorted[row + n++] = p;
    }
    const std::int64_t padded = (n + bm - 1) / bm * bm;
    for (std::int64_t b = row / bm; b < (row + padded) / bm; ++b) x.expert_ids[b] = static_cast<std::int32_t>(e);
    row += padded;
  }
  x.offsets.push_back(static_cast<std::int32_t>(row));
  x.total = static_cast<std::int32_t>(row);
  return x;
}

void check_align(std::int64_t E, std::int64_t k, std::int64_t bm, const std::vector<std::int32_t>& ids,
                 std::int64_t extra_blocks = 0) {
  const std::int64_t T = static_cast<std::int64_t>(ids.size()) / k;
  SCOPED_TRACE("E=" + std::to_string(E) + " k=" + std::to_string(k) + " T=" + std::to_string(T) +
               " block_m=" + std::to_string(bm));
  MoeConfig c = config_for({E, k, 8, 8}, std::max<std::int64_t>(T, 1), MoeWeightLayout::kNK);
  const std::int64_t capacity = moe_align_capacity(T, k, E, bm) + extra_blocks * bm;
  Buf<std::int32_t> in(ids);
  Buf<std::int32_t> sorted(capacity, -7), blocks(capacity / bm, -7), offsets(E + 1, -7), ntpp(1, -7);
  const MoeAlignment a{bm, TensorView::contiguous(sorted.data(), DType::kI32, {capacity}),
                       TensorView::contiguous(blocks.data(), DType::kI32, {capacity / bm}),
                       TensorView::contiguous(offsets.data(), DType::kI32, {E + 1}),
                       TensorView::contiguous(ntpp.data(), DType::kI32, {1})};
  const Status s = moe_align(c, TensorView::contiguous(in.data(), DType::kI32, {T, k}), a, nullptr);
  ASSERT_TRUE(s.ok()) << s.to_string();
  const Expected want = naive_align(ids, E, bm, capacity);
  ASSERT_EQ(ntpp[0], want.total);
  ASSERT_LE(want.total, capacity);
  EXPECT_EQ(offsets.vec(), want.offsets);
  EXPECT_EQ(blocks.vec(), want.expert_ids);
  EXPECT_EQ(sorted.vec(), want.sorted);
  EXPECT_EQ(in.vec(), ids) << "topk_ids was written";
}

std::vector<std::int32_t> random_ids(std::mt19937_64& rng, std::int64_t T, std::int64_t k, std::int64_t E) {
  // Distinct experts per token, as routing produces.
  std::vector<std::int32_t> ids;
  std::vector<std::int32_t> all(E);
  std::iota(all.begin(), all.end(), 0);
  for (std::int64_t t = 0; t < T; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    ids.insert(ids.end(), all.begin(), all.begin() + k);
  }
  return ids;
}

TEST(MoeAlign, RandomMatchesNaive) {
  auto rng = make_rng();
  struct C {
    std::int64_t E, k;
  };
  for (const C& c : {C{1, 1}, C{7, 3}, C{8, 2}, C{64, 6}, C{128, 8}, C{512, 10}}) {
    for (std::int64_t T : {1, 2, 7, 64, 257}) {
      for (std::int64_t bm : {1, 7, 16, 64}) check_align(c.E, c.k, bm, random_ids(rng, T, c.k, c.E));
    }
  }
}

TEST(MoeAlign, AllTokensToOneExpert) {
  for (std::int64_t bm : {16, 64}) {
    std::vector<std::int32_t> ids(100, 5);  // k = 1, T = 100, every pair to expert 5
    check_align(16, 1, bm, ids);
  }
  // Every expert empty but one, with k = 4: the pairs go to experts 3, 3, 3, 3 of 8 (not
  // distinct, as precomputed ids may be).
  check_align(8, 4, 64, std::vector<std::int32_t>(4 * 33, 3));
}

TEST(MoeAlign, EveryExpertEmptyButOne) {
  auto rng = make_rng();
  // 512 experts, few tokens: nearly every expert is empty; the last expert takes the first slot.
  std::vector<std::int32_t> ids = random_ids(rng, 3, 10, 512);
  ids[0] = 511;
  ids[1] = ids[1] == 511 ? 0 : ids[1];
  check_align(512, 10, 64, ids);
  check_align(512, 1, 16, std::vector<std::int32_t>(1, 0));
  check_align(512, 1, 16, std::vector<std::int32_t>(1, 511));
}

// A buffer sized for more tokens: the rows and blocks past the total are padding and -1.
TEST(MoeAlign, LargerCapacity) {
  auto rng = make_rng();
  check_align(64, 6, 16, random_ids(rng, 9, 6, 64), /*extra_blocks=*/5);
}

// Ids outside [0, E) belong to no expert.
TEST(MoeAlign, OutOfRangeIdsAreSkipped) {
  auto rng = make_rng();
  std::vector<std::int32_t> ids = random_ids(rng, 20, 4, 32);
  ids[3] = -1;
  ids[10] = 32;
  ids[11] = 1 << 30;
  ids[79] = -2147483647 - 1;
  check_align(32, 4, 16, ids);
}

TEST(MoeAlign, NoTokens) {
  // T = 0: capacity 0, offsets all 0, total 0.
  MoeConfig c = config_for({8, 2, 8, 8}, 4, MoeWeightLayout::kNK);
  Buf<std::int32_t> ids(2, 0), sorted(1, -7), blocks(1, -7), offsets(9, -7), ntpp(1, -7);
  const MoeAlignment a{16, TensorView::contiguous(sorted.data(), DType::kI32, {0}),
                       TensorView::contiguous(blocks.data(), DType::kI32, {0}),
                       TensorView::contiguous(offsets.data(), DType::kI32, {9}),
                       TensorView::contiguous(ntpp.data(), DType::kI32, {1})};
  ASSERT_TRUE(moe_align(c, TensorView::contiguous(ids.data(), DType::kI32, {0, 2}), a, nullptr).ok());
  EXPECT_EQ(ntpp[0], 0);
  EXPECT_EQ(offsets.vec(), std::vector<std::int32_t>(9, 0));
  EXPECT_EQ(sorted[0], -7);
}

// The capacity formula bounds the padded total for the worst case (every expert with one pair).
TEST(MoeAlign, CapacityBound) {
  for (std::int64_t E : {1, 7, 64, 512}) {
    for (std::int64_t bm : {1, 16, 64, 100}) {
      for (std::int64_t pairs : {1, 5, 63, 64, 65, 1000}) {
        const std::int64_t busy = std::min(pairs, E);
        // pairs spread so that `busy` experts each have a remainder of one row
        std::int64_t worst = 0;
        const std::int64_t each = pairs / busy, rest = pairs % busy;
        for (std::int64_t e = 0; e < busy; ++e) worst += (each + (e < rest) + bm - 1) / bm * bm;
        EXPECT_GE(moe_align_capacity(pairs, 1, E, bm), worst) << E << " " << bm << " " << pairs;
        EXPECT_EQ(moe_align_capacity(pairs, 1, E, bm) % bm, 0);
      }
    }
  }
  EXPECT_EQ(moe_align_capacity(0, 8, 128, 64), 0);
}

TEST(MoeAlign, BitIdenticalRunToRun) {
  auto rng = make_rng();
  const std::vector<std::int32_t> ids = random_ids(rng, 300, 8, 128);
  for (int rep = 0; rep < 2; ++rep) check_align(128, 8, 64, ids);  // compared exactly each time
}

}  // namespace
}  // namespace fusekit::testing::moe
