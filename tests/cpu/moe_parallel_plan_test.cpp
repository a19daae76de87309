// Host logic of the parallel MoE (fusekit/moe_parallel.h, src/dist/moe_parallel_plan.h),
// without GPUs or NCCL: config resolution and its error texts, expert ownership, the config
// fingerprint and header comparison, the workspace carve, weight slicing in both layouts, the
// EP dispatch plan — and both parallel algorithms emulated rank by rank on the host with the
// `cpu` MoE backend, against the single-device forward: EP (plan -> rows -> expand -> local
// forward with top_k 1 -> row reduce -> combine) and TP (sliced weights, summed outputs).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "dist/moe_parallel_plan.h"
#include "fusekit/moe.h"
#include "fusekit/moe_parallel.h"
#include "support/test_support.h"

namespace fusekit::testing {
namespace {

using dist::EpLayout;
using dist::ParallelKind;
using dist::ParallelPlan;

MoeParallelConfig ep_config(std::int64_t E, std::int64_t k, std::int64_t H, std::int64_t I, std::int64_t R,
                            std::int64_t max_tokens, MoeWeightLayout layout = MoeWeightLayout::kNK) {
  MoeParallelConfig c;
  c.layer.num_experts = E;
  c.layer.top_k = k;
  c.layer.hidden = H;
  c.layer.intermediate = I;
  c.layer.max_tokens = max_tokens;
  c.layer.layout = layout;
  c.layer.expert_parallel_size = R;
  return c;
}
MoeParallelConfig tp_config(std::int64_t E, std::int64_t k, std::int64_t H, std::int64_t I, std::int64_t R,
                            std::int64_t max_tokens, MoeWeightLayout layout = MoeWeightLayout::kNK) {
  MoeParallelConfig c = ep_config(E, k, H, I, 1, max_tokens, layout);
  c.tensor_parallel_size = R;
  return c;
}

// ---- config resolution ----

TEST(MoeParallelPlan, ResolvesExpertParallelQwen3) {
  ParallelPlan p;
  ASSERT_TRUE(dist::resolve_plan(ep_config(128, 8, 2048, 768, 2, 4096), &p).ok());
  EXPECT_EQ(p.kind, ParallelKind::kExpert);
  EXPECT_EQ(p.ranks, 2);
  EXPECT_EQ(p.experts_per_rank, 64);
  EXPECT_EQ(p.max_send_rows, 4096 * 2);      // a token goes to at most min(R, k) ranks
  EXPECT_EQ(p.max_recv_rows, 2 * 4096);      // every token of every rank
  EXPECT_EQ(p.max_pairs, 2 * 4096 * 8);      // with all k experts here
  EXPECT_EQ(p.meta_width, 2 + 2 * 8);
  EXPECT_EQ(p.local.num_experts, 64);
  EXPECT_EQ(p.local.top_k, 1);
  EXPECT_EQ(p.local.max_tokens, p.max_pairs);
  EXPECT_EQ(p.local.intermediate, 768);
  EXPECT_EQ(p.local.expert_parallel_size, 1);
}

TEST(MoeParallelPlan, PairsPerRowAreBoundedByLocalExperts) {
  ParallelPlan p;
  // E/R = 2 < k = 6: a row carries at most 2 pairs.
  ASSERT_TRUE(dist::resolve_plan(ep_config(64, 6, 2048, 1408, 32, 16), &p).ok());
  EXPECT_EQ(p.max_pairs, 32 * 16 * 2);
  EXPECT_EQ(p.max_send_rows, 16 * 6);
}

TEST(MoeParallelPlan, ResolvesTensorParallelDeepSeekV2Lite) {
  ParallelPlan p;
  ASSERT_TRUE(dist::resolve_plan(tp_config(64, 6, 2048, 1408, 2, 256), &p).ok());
  EXPECT_EQ(p.kind, ParallelKind::kTensor);
  EXPECT_EQ(p.ranks, 2);
  EXPECT_EQ(p.local.intermediate, 704);
  EXPECT_EQ(p.local.num_experts, 64);
  EXPECT_EQ(p.local.top_k, 6);
  EXPECT_EQ(p.local.max_tokens, 256);
}

TEST(MoeParallelPlan, SingleRankIsPlainLayer) {
  ParallelPlan p;
  ASSERT_TRUE(dist::resolve_plan(ep_config(8, 2, 64, 32, 1, 4), &p).ok());
  EXPECT_EQ(p.ranks, 1);
  EXPECT_EQ(p.local.intermediate, 32);
  EXPECT_EQ(p.local.num_experts, 8);
}

TEST(MoeParallelPlan, ErrorsNameTheField) {
  ParallelPlan p;
  Status s = dist::resolve_plan(ep_config(127, 8, 2048, 768, 2, 64), &p);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("config.layer.num_experts (127) is not divisible by expert_parallel_size (2)"),
            std::string::npos)
      << s.message();

  s = dist::resolve_plan(tp_config(128, 8, 2048, 760, 2, 64), &p);  // I/R = 380, not a multiple of 8
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("config.layer.intermediate (760)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("I / R = 380"), std::string::npos) << s.message();

  s = dist::resolve_plan(tp_config(128, 8, 2048, 768, 5, 64), &p);
  EXPECT_NE(s.message().find("not an integer"), std::string::npos) << s.message();

  MoeParallelConfig both = ep_config(128, 8, 2048, 768, 2, 64);
  both.tensor_parallel_size = 2;
  s = dist::resolve_plan(both, &p);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("expert and tensor parallelism together are not supported"), std::string::npos);

  s = dist::resolve_plan(ep_config(128, 8, 2048, 768, 0, 64), &p);
  EXPECT_NE(s.message().find("config.layer.expert_parallel_size: expected >= 1, got 0"), std::string::npos);
  s = dist::resolve_plan(tp_config(128, 8, 2048, 768, -1, 64), &p);
  EXPECT_NE(s.message().find("config.tensor_parallel_size: expected >= 1, got -1"), std::string::npos);

  // A bad layer is worded by the single-GPU API.
  s = dist::resolve_plan(ep_config(128, 0, 2048, 768, 2, 64), &p);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(s.message().empty());

  // 2 * 2^27 * 8 pairs do not fit int32 rows.
  s = dist::resolve_plan(ep_config(128, 8, 2048, 768, 2, std::int64_t(1) << 27), &p);
  EXPECT_NE(s.message().find("must stay below 2^31"), std::string::npos) << s.message();
}

// ---- ownership ----

TEST(MoeParallelPlan, ExpertOwnership) {
  const std::int32_t E = 128, El = 32;
  for (std::int32_t e = 0; e < E; ++e) {
    EXPECT_EQ(dist::expert_owner(e, E, El), e / 32);
    EXPECT_EQ(dist::local_expert(e, El), e % 32);
    EXPECT_EQ(dist::expert_owner(e, E, El) * El + dist::local_expert(e, El), e);
  }
  EXPECT_EQ(dist::expert_owner(-1, E, El), -1);
  EXPECT_EQ(dist::expert_owner(E, E, El), -1);
  const std::int32_t ids[] = {5, 40, 7, 100, 41, 200};
  std::int32_t owners[6];
  ASSERT_EQ(dist::token_owners(ids, 6, E, El, owners), 3);
  EXPECT_EQ(owners[0], 0);
  EXPECT_EQ(owners[1], 1);
  EXPECT_EQ(owners[2], 3);
}

// ---- fingerprints and headers ----

TEST(MoeParallelPlan, FingerprintCoversEveryAgreedField) {
  const MoeParallelConfig base = ep_config(128, 8, 2048, 768, 2, 4096);
  const std::uint64_t f0 = dist::config_fingerprint(base);
  EXPECT_EQ(f0, dist::config_fingerprint(base));
  MoeParallelConfig other = base;
  other.layer.backend = MoeBackend::kCudaRef;  // a per-rank choice
  EXPECT_EQ(f0, dist::config_fingerprint(other));

  std::vector<MoeParallelConfig> changed;
  auto variant = [&](auto edit) {
    MoeParallelConfig c = base;
    edit(c);
    changed.push_back(c);
  };
  variant([](MoeParallelConfig& c) { c.layer.num_experts = 64; });
  variant([](MoeParallelConfig& c) { c.layer.top_k = 6; });
  variant([](MoeParallelConfig& c) { c.layer.hidden = 4096; });
  variant([](MoeParallelConfig& c) { c.layer.intermediate = 1536; });
  variant([](MoeParallelConfig& c) { c.layer.max_tokens = 4095; });
  variant([](MoeParallelConfig& c) { c.layer.layout = MoeWeightLayout::kKN; });
  variant([](MoeParallelConfig& c) { c.layer.routing.mode = MoeRoutingMode::kSigmoidGroupedTopK; });
  variant([](MoeParallelConfig& c) { c.layer.routing.norm = MoeTopkNorm::kNone; });
  variant([](MoeParallelConfig& c) { c.layer.routing.num_groups = 8; });
  variant([](MoeParallelConfig& c) { c.layer.routing.topk_groups = 4; });
  variant([](MoeParallelConfig& c) { c.layer.routing.routed_scaling_factor = 2.5f; });
  variant([](MoeParallelConfig& c) { c.layer.expert_parallel_size = 4; });
  variant([](MoeParallelConfig& c) {
    c.layer.expert_parallel_size = 1;
    c.tensor_parallel_size = 2;
  });
  std::vector<std::uint64_t> seen{f0};
  for (const auto& c : changed) {
    const std::uint64_t f = dist::config_fingerprint(c);
    EXPECT_EQ(std::count(seen.begin(), seen.end(), f), 0) << "fingerprint collision";
    seen.push_back(f);
  }
}

TEST(MoeParallelPlan, HeaderComparisonNamesTheDifference) {
  const MoeParallelConfig a = ep_config(128, 8, 2048, 768, 2, 4096);
  std::vector<dist::WireHeader> h{dist::make_header(a, 7, true), dist::make_header(a, 0, true)};
  EXPECT_TRUE(dist::compare_headers(h.data(), 2, "f").ok());  // T may differ between ranks

  MoeParallelConfig b = a;
  b.layer.top_k = 6;
  h[1] = dist::make_header(b, 7, true);
  Status s = dist::compare_headers(h.data(), 2, "moe_parallel_forward");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("moe_parallel_forward: the ranks' configurations differ: layer.top_k is 8 on rank 0 "
                             "but 6 on rank 1"),
            std::string::npos)
      << s.message();

  b = a;
  b.layer.routing.norm = MoeTopkNorm::kNone;  // not a header field: caught by the fingerprint
  h[1] = dist::make_header(b, 7, true);
  s = dist::compare_headers(h.data(), 2, "f");
  EXPECT_NE(s.message().find("fingerprint"), std::string::npos) << s.message();

  h[1] = dist::make_header(a, 7, false);
  s = dist::compare_headers(h.data(), 2, "f");
  EXPECT_NE(s.message().find("rank 1 rejected this call"), std::string::npos) << s.message();

  b = a;
  b.layer.layout = MoeWeightLayout::kKN;
  h[1] = dist::make_header(b, 7, true);
  s = dist::compare_headers(h.data(), 2, "f");
  EXPECT_NE(s.message().find("layer.layout is kNK on rank 0 but kKN on rank 1"), std::string::npos) << s.message();
  MoeParallelConfig t = a;
  t.layer.expert_parallel_size = 1;
  t.tensor_parallel_size = 2;
  h[1] = dist::make_header(t, 7, true);
  s = dist::compare_headers(h.data(), 2, "f");
  EXPECT_NE(s.message().find("the parallelism (expert or tensor) is expert on rank 0 but tensor on rank 1"),
            std::string::npos)
      << s.message();

  // A config difference is the root cause and wins over a rank's failed own checks.
  MoeParallelConfig c7 = a;
  c7.layer.num_experts = 127;
  h[1] = dist::make_header(c7, 7, false);
  s = dist::compare_headers(h.data(), 2, "f");
  EXPECT_NE(s.message().find("layer.num_experts is 128 on rank 0 but 127 on rank 1"), std::string::npos)
      << s.message();

  h[1].magic = 0;
  s = dist::compare_headers(h.data(), 2, "f");
  EXPECT_EQ(s.code(), StatusCode::kNcclError);
  EXPECT_NE(s.message().find("rank 1 sent no valid header"), std::string::npos) << s.message();

  // Every rank reaches the same verdict: compared against rank 0, in rank order.
  std::vector<dist::WireHeader> three{dist::make_header(a, 1, true), dist::make_header(a, 1, true),
                                      dist::make_header(ep_config(128, 8, 2048, 768, 4, 4096), 1, true)};
  s = dist::compare_headers(three.data(), 3, "f");
  EXPECT_NE(s.message().find("is 2 on rank 0 but 4 on rank 2"), std::string::npos) << s.message();
}

// ---- workspace ----

TEST(MoeParallelPlan, WorkspaceCarveIsAlignedAndDisjoint) {
  for (const auto& cfg : {ep_config(128, 8, 2048, 768, 2, 4096), ep_config(64, 6, 2048, 1408, 4, 7),
                          ep_config(7, 3, 200, 96, 7, 1)}) {
    ParallelPlan p;
    ASSERT_TRUE(dist::resolve_plan(cfg, &p).ok());
    EpLayout l;
    ASSERT_TRUE(dist::ep_layout(p, &l).ok());
    const std::size_t H = static_cast<std::size_t>(cfg.layer.hidden);
    const std::size_t M = static_cast<std::size_t>(cfg.layer.max_tokens), k = static_cast<std::size_t>(cfg.layer.top_k);
    const std::size_t R = static_cast<std::size_t>(p.ranks), W = static_cast<std::size_t>(p.meta_width);
    struct Region {
      std::size_t at, bytes;
    };
    const std::vector<Region> regions{
        {l.header.send, R * 64},
        {l.header.recv, R * 64},
        {l.header.offsets, 3 * (R + 1) * 4},
        {l.topk_ids, M * k * 4},
        {l.topk_weights, M * k * 4},
        {l.dest_plan, M * R * 8},
        {l.send_x, static_cast<std::size_t>(p.max_send_rows) * H * 2},
        {l.send_meta, static_cast<std::size_t>(p.max_send_rows) * W * 4},
        {l.recv_x, static_cast<std::size_t>(p.max_recv_rows) * H * 2},
        {l.recv_meta, static_cast<std::size_t>(p.max_recv_rows) * W * 4},
        {l.pair_x, static_cast<std::size_t>(p.max_pairs) * H * 2},
        {l.pair_ids, static_cast<std::size_t>(p.max_pairs) * 4},
        {l.pair_weights, static_cast<std::size_t>(p.max_pairs) * 4},
        {l.pair_y, static_cast<std::size_t>(p.max_pairs) * H * 2},
        {l.local_workspace, l.local_workspace_bytes},
    };
    EXPECT_EQ(l.header.send, 0u);
    for (std::size_t i = 0; i < regions.size(); ++i) {
      EXPECT_EQ(regions[i].at % 256, 0u) << "region " << i;
      if (i + 1 < regions.size()) EXPECT_LE(regions[i].at + regions[i].bytes, regions[i + 1].at) << "region " << i;
    }
    EXPECT_LE(regions.back().at + regions.back().bytes, l.total);
    std::size_t public_bytes = 0;
    ASSERT_TRUE(moe_parallel_workspace_size(cfg, &public_bytes).ok());
    EXPECT_EQ(public_bytes, l.total);
    std::size_t local_bytes = 0;
    ASSERT_TRUE(moe_workspace_size(p.local, &local_bytes).ok());
    EXPECT_EQ(local_bytes, l.local_workspace_bytes);
  }
  // TP: headers (for moe_parallel_check) + the local forward's workspace.
  const MoeParallelConfig tp = tp_config(128, 8, 2048, 768, 2, 256);
  std::size_t tp_bytes = 0, local_bytes = 0;
  ASSERT_TRUE(moe_parallel_workspace_size(tp, &tp_bytes).ok());
  MoeConfig local;
  ASSERT_TRUE(moe_parallel_local_config(tp, &local).ok());
  ASSERT_TRUE(moe_workspace_size(local, &local_bytes).ok());
  EXPECT_GE(tp_bytes, local_bytes + dist::header_region(2).bytes);
  EXPECT_EQ(moe_parallel_workspace_size(ep_config(127, 8, 2048, 768, 2, 64), &tp_bytes).code(),
            StatusCode::kInvalidArgument);
}

// ---- the EP plan ----

// k distinct experts per token, in random order.
std::vector<std::int32_t> random_topk(std::mt19937_64& rng, std::int64_t T, std::int64_t k, std::int64_t E,
                                      std::int64_t id_limit) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(T * k));
  std::vector<std::int32_t> all(static_cast<std::size_t>(id_limit));
  std::iota(all.begin(), all.end(), 0);
  for (std::int64_t t = 0; t < T; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    for (std::int64_t j = 0; j < k; ++j) ids[static_cast<std::size_t>(t * k + j)] = all[static_cast<std::size_t>(j)];
  }
  (void)E;
  return ids;
}

TEST(MoeParallelPlan, PlanReferenceInvariants) {
  auto rng = make_rng();
  for (auto [T, k, E, R] : std::vector<std::array<std::int64_t, 4>>{{1, 8, 128, 2}, {257, 8, 128, 2}, {64, 6, 64, 4},
                                                                    {33, 3, 7, 7}, {5, 1, 8, 8}}) {
    const auto ids = random_topk(rng, T, k, E, E);
    const auto plan = dist::ep_plan_reference(ids.data(), T, k, E, R);
    const std::int64_t El = E / R;
    std::int64_t all_pairs = 0;
    for (std::int64_t d = 0; d < R; ++d) {
      std::int32_t next_row = 0, next_pair = 0;
      for (std::int64_t t = 0; t < T; ++t) {
        std::int32_t n = 0;
        for (std::int64_t j = 0; j < k; ++j) n += ids[static_cast<std::size_t>(t * k + j)] / El == d ? 1 : 0;
        const std::int32_t* slot = &plan.dest_plan[static_cast<std::size_t>((t * R + d) * 2)];
        if (n == 0) {
          EXPECT_EQ(slot[0], -1);
          EXPECT_EQ(slot[1], -1);
          continue;
        }
        EXPECT_EQ(slot[0], next_row++);  // ascending tokens, no gaps
        EXPECT_EQ(slot[1], next_pair);
        next_pair += n;
      }
      EXPECT_EQ(plan.rows[static_cast<std::size_t>(d)], next_row);
      EXPECT_EQ(plan.pairs[static_cast<std::size_t>(d)], next_pair);
      all_pairs += next_pair;
    }
    EXPECT_EQ(all_pairs, T * k);
  }
}

TEST(MoeParallelPlan, PlanWithAllTokensOnRankZeroAndInvalidIds) {
  const std::int64_t T = 4, k = 2, E = 8, R = 2;
  const std::vector<std::int32_t> ids{0, 3, 1, 2, 3, -1, 8, 2};  // -1 and 8 have no owner
  const auto plan = dist::ep_plan_reference(ids.data(), T, k, E, R);
  EXPECT_EQ(plan.rows[0], 4);
  EXPECT_EQ(plan.pairs[0], 2 + 2 + 1 + 1);
  EXPECT_EQ(plan.rows[1], 0);
  EXPECT_EQ(plan.pairs[1], 0);
  for (std::int64_t t = 0; t < T; ++t) EXPECT_EQ(plan.dest_plan[static_cast<std::size_t>((t * R + 1) * 2)], -1);
}

// ---- weight slicing ----

struct HostWeights {
  std::vector<std::uint16_t> w1, w2;
  MoeWeights view(const MoeConfig& c, std::int64_t E, std::int64_t I) {
    MoeWeights w;
    const bool nk = c.layout == MoeWeightLayout::kNK;
    w.w1 = TensorView::contiguous(w1.data(), DType::kBF16, {E, nk ? 2 * I : c.hidden, nk ? c.hidden : 2 * I});
    w.w2 = TensorView::contiguous(w2.data(), DType::kBF16, {E, nk ? c.hidden : I, nk ? I : c.hidden});
    return w;
  }
};

HostWeights random_weights(std::mt19937_64& rng, const MoeConfig& c) {
  HostWeights w;
  const auto n1 = static_cast<std::size_t>(c.num_experts * 2 * c.intermediate * c.hidden);
  const auto n2 = static_cast<std::size_t>(c.num_experts * c.intermediate * c.hidden);
  w.w1 = to_bits(random_floats(rng, n1, -1.f / std::sqrt(float(c.hidden)), 1.f / std::sqrt(float(c.hidden))),
                 DType::kBF16);
  w.w2 = to_bits(random_floats(rng, n2, -1.f / std::sqrt(float(c.intermediate)), 1.f / std::sqrt(float(c.intermediate))),
                 DType::kBF16);
  return w;
}

// Element (e, n, kk) of W1 as math sees it (n over 2I: gate rows then up rows; kk over H).
std::uint16_t w1_at(const std::vector<std::uint16_t>& w, MoeWeightLayout layout, std::int64_t E_, std::int64_t N,
                    std::int64_t K, std::int64_t e, std::int64_t n, std::int64_t kk) {
  (void)E_;
  return layout == MoeWeightLayout::kNK ? w[static_cast<std::size_t>((e * N + n) * K + kk)]
                                        : w[static_cast<std::size_t>((e * K + kk) * N + n)];
}

TEST(MoeParallelPlan, TensorParallelSlicesBothLayouts) {
  auto rng = make_rng();
  for (MoeWeightLayout layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
    const std::int64_t E = 3, H = 16, I = 48, R = 3, Il = 16;
    const MoeParallelConfig cfg = tp_config(E, 2, H, I, R, 4, layout);
    HostWeights full = random_weights(rng, cfg.layer);
    for (std::int64_t r = 0; r < R; ++r) {
      HostWeights part;
      part.w1.assign(static_cast<std::size_t>(E * 2 * Il * H), 0);
      part.w2.assign(static_cast<std::size_t>(E * Il * H), 0);
      ASSERT_TRUE(moe_parallel_slice_weights(cfg, r, full.view(cfg.layer, E, I), part.view(cfg.layer, E, Il), nullptr)
                      .ok());
      for (std::int64_t e = 0; e < E; ++e) {
        for (std::int64_t i = 0; i < Il; ++i) {
          for (std::int64_t h = 0; h < H; ++h) {
            // gate row r*Il + i -> local row i; up row I + r*Il + i -> local row Il + i.
            EXPECT_EQ(w1_at(part.w1, layout, E, 2 * Il, H, e, i, h), w1_at(full.w1, layout, E, 2 * I, H, e, r * Il + i, h));
            EXPECT_EQ(w1_at(part.w1, layout, E, 2 * Il, H, e, Il + i, h),
                      w1_at(full.w1, layout, E, 2 * I, H, e, I + r * Il + i, h));
            // W2 math element (e, h, i): nk [E, H, I], kn [E, I, H].
            const std::uint16_t got = layout == MoeWeightLayout::kNK
                                          ? part.w2[static_cast<std::size_t>((e * H + h) * Il + i)]
                                          : part.w2[static_cast<std::size_t>((e * Il + i) * H + h)];
            const std::uint16_t want = layout == MoeWeightLayout::kNK
                                           ? full.w2[static_cast<std::size_t>((e * H + h) * I + r * Il + i)]
                                           : full.w2[static_cast<std::size_t>((e * I + r * Il + i) * H + h)];
            EXPECT_EQ(got, want);
          }
        }
      }
    }
  }
}

TEST(MoeParallelPlan, ExpertParallelSlicesAndViews) {
  auto rng = make_rng();
  for (MoeWeightLayout layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
    const std::int64_t E = 6, H = 8, I = 16, R = 3, El = 2;
    const MoeParallelConfig cfg = ep_config(E, 2, H, I, R, 4, layout);
    HostWeights full = random_weights(rng, cfg.layer);
    for (std::int64_t r = 0; r < R; ++r) {
      HostWeights part;
      part.w1.assign(static_cast<std::size_t>(El * 2 * I * H), 0);
      part.w2.assign(static_cast<std::size_t>(El * I * H), 0);
      ASSERT_TRUE(
          moe_parallel_slice_weights(cfg, r, full.view(cfg.layer, E, I), part.view(cfg.layer, El, I), nullptr).ok());
      const std::size_t n1 = part.w1.size(), n2 = part.w2.size();
      EXPECT_TRUE(std::equal(part.w1.begin(), part.w1.end(), full.w1.begin() + static_cast<std::ptrdiff_t>(r * n1)));
      EXPECT_TRUE(std::equal(part.w2.begin(), part.w2.end(), full.w2.begin() + static_cast<std::ptrdiff_t>(r * n2)));
      MoeWeights v;
      ASSERT_TRUE(moe_parallel_expert_views(cfg, r, full.view(cfg.layer, E, I), &v).ok());
      EXPECT_EQ(v.w1.shape[0], El);
      EXPECT_EQ(v.w2.shape[0], El);
      EXPECT_EQ(std::memcmp(v.w1.data, part.w1.data(), n1 * 2), 0);
      EXPECT_EQ(std::memcmp(v.w2.data, part.w2.data(), n2 * 2), 0);
    }
  }
}

TEST(MoeParallelPlan, SliceErrors) {
  auto rng = make_rng();
  const MoeParallelConfig cfg = tp_config(2, 1, 8, 16, 2, 4);
  HostWeights full = random_weights(rng, cfg.layer);
  HostWeights part;
  part.w1.assign(2 * 2 * 8 * 8, 0);
  part.w2.assign(2 * 8 * 8, 0);
  Status s = moe_parallel_slice_weights(cfg, 2, full.view(cfg.layer, 2, 16), part.view(cfg.layer, 2, 8), nullptr);
  EXPECT_NE(s.message().find("rank: expected 0 <= rank < 2, got 2"), std::string::npos) << s.message();
  s = moe_parallel_slice_weights(cfg, 0, full.view(cfg.layer, 2, 16), part.view(cfg.layer, 2, 16), nullptr);
  EXPECT_NE(s.message().find("dst.w1: expected shape [2, 16, 8]"), std::string::npos) << s.message();
  s = moe_parallel_slice_weights(cfg, 0, part.view(cfg.layer, 2, 8), part.view(cfg.layer, 2, 8), nullptr);
  EXPECT_NE(s.message().find("full.w1: expected shape [2, 32, 8]"), std::string::npos) << s.message();
  MoeWeights v;
  s = moe_parallel_expert_views(cfg, 0, full.view(cfg.layer, 2, 16), &v);
  EXPECT_NE(s.message().find("needs expert parallelism"), std::string::npos) << s.message();
}

// ---- the algorithms, emulated rank by rank with the cpu backend ----

struct RankInput {
  std::int64_t T = 0;
  std::vector<std::uint16_t> x;
  std::vector<std::int32_t> ids;
  std::vector<float> weights;
};

std::vector<std::uint16_t> cpu_forward_routed(const MoeConfig& cfg, const MoeWeights& w, std::int64_t T,
                                              const std::vector<std::uint16_t>& x, const std::vector<std::int32_t>& ids,
                                              const std::vector<float>& weights) {
  std::vector<std::uint16_t> out(static_cast<std::size_t>(T * cfg.hidden), 0xFFFF);
  if (T == 0) return out;
  MoeConfig c = cfg;
  c.backend = MoeBackend::kCpu;
  std::size_t bytes = 0;
  EXPECT_TRUE(moe_workspace_size(c, &bytes).ok());
  std::vector<unsigned char> ws(std::max<std::size_t>(bytes, 256) + 256);
  void* aligned = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(ws.data()) + 255) / 256 * 256);
  MoeRouted r;
  r.topk_ids = TensorView::contiguous(const_cast<std::int32_t*>(ids.data()), DType::kI32, {T, c.top_k});
  r.topk_weights = TensorView::contiguous(const_cast<float*>(weights.data()), DType::kF32, {T, c.top_k});
  const Status s = moe_forward_routed(
      MoeLayer{c, w}, TensorView::contiguous(const_cast<std::uint16_t*>(x.data()), DType::kBF16, {T, c.hidden}), r,
      TensorView::contiguous(out.data(), DType::kBF16, {T, c.hidden}), MoeWorkspace{aligned, bytes}, nullptr);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return out;
}

// EP over R emulated ranks, mirroring the kernels: plan, send blocks (ascending owner,
// ascending token), received blocks (ascending source), expanded pairs, local forward with
// top_k 1, row reduce (fp32 in slot order -> bf16), combine (fp32 in owner order -> bf16).
std::vector<std::vector<std::uint16_t>> emulate_ep(const MoeParallelConfig& cfg, HostWeights& full,
                                                   const std::vector<RankInput>& in) {
  ParallelPlan plan;
  EXPECT_TRUE(dist::resolve_plan(cfg, &plan).ok());
  const std::int64_t R = plan.ranks, k = cfg.layer.top_k, E = cfg.layer.num_experts, H = cfg.layer.hidden;
  const std::int64_t El = plan.experts_per_rank;
  struct Row {
    std::int64_t src, t;                 // sender rank and token
    std::vector<std::int32_t> local_ids;  // slot order
    std::vector<float> weights;
  };
  std::vector<dist::EpPlanReference> plans;
  for (std::int64_t r = 0; r < R; ++r) plans.push_back(dist::ep_plan_reference(in[r].ids.data(), in[r].T, k, E, R));
  // returned[r][t][d] = the partial row owner d sent back for token t of rank r.
  std::vector<std::vector<std::vector<std::uint16_t>>> returned(static_cast<std::size_t>(R));
  for (std::int64_t r = 0; r < R; ++r) {
    returned[r].assign(static_cast<std::size_t>(in[r].T * R), {});
  }
  for (std::int64_t d = 0; d < R; ++d) {
    std::vector<Row> rows;
    for (std::int64_t s = 0; s < R; ++s) {
      for (std::int64_t t = 0; t < in[s].T; ++t) {
        if (plans[s].dest_plan[static_cast<std::size_t>((t * R + d) * 2)] < 0) continue;
        Row row{s, t, {}, {}};
        for (std::int64_t j = 0; j < k; ++j) {
          const std::int32_t e = in[s].ids[static_cast<std::size_t>(t * k + j)];
          if (dist::expert_owner(e, static_cast<std::int32_t>(E), static_cast<std::int32_t>(El)) != d) continue;
          row.local_ids.push_back(dist::local_expert(e, static_cast<std::int32_t>(El)));
          row.weights.push_back(in[s].weights[static_cast<std::size_t>(t * k + j)]);
        }
        rows.push_back(row);
      }
    }
    std::vector<std::uint16_t> px;
    std::vector<std::int32_t> pid;
    std::vector<float> pw;
    for (const Row& row : rows) {
      for (std::size_t q = 0; q < row.local_ids.size(); ++q) {
        const auto* xr = &in[row.src].x[static_cast<std::size_t>(row.t * H)];
        px.insert(px.end(), xr, xr + H);
        pid.push_back(row.local_ids[q]);
        pw.push_back(row.weights[q]);
      }
    }
    const auto P = static_cast<std::int64_t>(pid.size());
    MoeWeights views;
    EXPECT_TRUE(moe_parallel_expert_views(cfg, d, full.view(cfg.layer, E, cfg.layer.intermediate), &views).ok());
    const auto py = cpu_forward_routed(plan.local, views, P, px, pid, pw);
    std::size_t p = 0;
    for (const Row& row : rows) {
      std::vector<std::uint16_t> reduced(static_cast<std::size_t>(H));
      for (std::int64_t h = 0; h < H; ++h) {
        float acc = 0.f;
        for (std::size_t q = 0; q < row.local_ids.size(); ++q) {
          acc += bf16_bits_to_float(py[(p + q) * static_cast<std::size_t>(H) + static_cast<std::size_t>(h)]);
        }
        reduced[static_cast<std::size_t>(h)] = float_to_bf16_bits(acc);
      }
      p += row.local_ids.size();
      returned[row.src][static_cast<std::size_t>(row.t * R + d)] = reduced;
    }
  }
  std::vector<std::vector<std::uint16_t>> out(static_cast<std::size_t>(R));
  for (std::int64_t r = 0; r < R; ++r) {
    out[r].assign(static_cast<std::size_t>(in[r].T * H), 0);
    for (std::int64_t t = 0; t < in[r].T; ++t) {
      for (std::int64_t h = 0; h < H; ++h) {
        float acc = 0.f;
        for (std::int64_t d = 0; d < R; ++d) {
          const auto& part = returned[r][static_cast<std::size_t>(t * R + d)];
          if (!part.empty()) acc += bf16_bits_to_float(part[static_cast<std::size_t>(h)]);
        }
        out[r][static_cast<std::size_t>(t * H + h)] = float_to_bf16_bits(acc);
      }
    }
  }
  return out;
}

std::vector<double> as_double(const std::vector<std::uint16_t>& bits) {
  std::vector<double> v(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) v[i] = bf16_bits_to_float(bits[i]);
  return v;
}
std::vector<float> as_float(const std::vector<std::uint16_t>& bits) {
  std::vector<float> v(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) v[i] = bf16_bits_to_float(bits[i]);
  return v;
}
double max_abs_of(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

RankInput random_rank(std::mt19937_64& rng, std::int64_t T, const MoeConfig& c, std::int64_t id_limit) {
  RankInput in;
  in.T = T;
  in.x = to_bits(random_floats(rng, static_cast<std::size_t>(T * c.hidden)), DType::kBF16);
  in.ids = random_topk(rng, T, c.top_k, c.num_experts, id_limit);
  in.weights = random_floats(rng, static_cast<std::size_t>(T * c.top_k), 0.05f, 1.f);
  return in;
}

struct EmuCase {
  std::int64_t E, k, H, I, R;
  std::vector<std::int64_t> tokens;  // per rank
  bool rank0_only;                   // every id on rank 0's experts
};

TEST(MoeParallelEmulation, ExpertParallelMatchesSingleDevice) {
  auto rng = make_rng();
  const std::vector<EmuCase> cases{
      {8, 2, 64, 32, 2, {7, 5}, false},   {8, 3, 64, 32, 4, {1, 9, 0, 4}, false},
      {6, 3, 32, 48, 3, {6, 6, 6}, false}, {8, 2, 64, 32, 2, {11, 3}, true},
      {16, 8, 32, 16, 2, {13, 1}, false},  {4, 4, 32, 16, 4, {5, 2, 7, 1}, false},
  };
  for (MoeWeightLayout layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
    for (const EmuCase& ec : cases) {
      SCOPED_TRACE("E=" + std::to_string(ec.E) + " k=" + std::to_string(ec.k) + " R=" + std::to_string(ec.R) +
                   (layout == MoeWeightLayout::kNK ? " nk" : " kn"));
      const MoeParallelConfig cfg = ep_config(ec.E, ec.k, ec.H, ec.I, ec.R, 16, layout);
      HostWeights full = random_weights(rng, cfg.layer);
      const std::int64_t id_limit = ec.rank0_only ? ec.E / ec.R : ec.E;
      if (ec.rank0_only && ec.k > id_limit) continue;
      std::vector<RankInput> in;
      for (std::int64_t T : ec.tokens) in.push_back(random_rank(rng, T, cfg.layer, id_limit));
      const auto got = emulate_ep(cfg, full, in);
      MoeConfig whole = cfg.layer;
      whole.expert_parallel_size = 1;
      for (std::size_t r = 0; r < in.size(); ++r) {
        if (in[r].T == 0) continue;
        const auto want = cpu_forward_routed(whole, full.view(whole, ec.E, ec.I), in[r].T, in[r].x, in[r].ids,
                                             in[r].weights);
        const auto ref = as_double(want);
        EXPECT_TRUE(within(compare(as_float(got[r]), ref), 1e-2, 0.05 * max_abs_of(ref) + 1e-3)) << "rank " << r;
      }
    }
  }
}

TEST(MoeParallelEmulation, TensorParallelSlicesSumToSingleDevice) {
  auto rng = make_rng();
  for (MoeWeightLayout layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN}) {
    for (std::int64_t R : {2, 3}) {
      const std::int64_t E = 6, k = 2, H = 32, I = 48, T = 9;
      const MoeParallelConfig cfg = tp_config(E, k, H, I, R, 16, layout);
      HostWeights full = random_weights(rng, cfg.layer);
      const RankInput in = random_rank(rng, T, cfg.layer, E);
      MoeConfig local;
      ASSERT_TRUE(moe_parallel_local_config(cfg, &local).ok());
      const std::int64_t Il = I / R;
      std::vector<float> sum(static_cast<std::size_t>(T * H), 0.f);
      for (std::int64_t r = 0; r < R; ++r) {
        HostWeights part;
        part.w1.assign(static_cast<std::size_t>(E * 2 * Il * H), 0);
        part.w2.assign(static_cast<std::size_t>(E * Il * H), 0);
        ASSERT_TRUE(moe_parallel_slice_weights(cfg, r, full.view(cfg.layer, E, I), part.view(local, E, Il), nullptr).ok());
        const auto y = cpu_forward_routed(local, part.view(local, E, Il), T, in.x, in.ids, in.weights);
        for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += bf16_bits_to_float(y[i]);
      }
      std::vector<float> got(sum.size());
      for (std::size_t i = 0; i < sum.size(); ++i) got[i] = bf16_bits_to_float(float_to_bf16_bits(sum[i]));
      const auto ref = as_double(cpu_forward_routed(cfg.layer, full.view(cfg.layer, E, I), T, in.x, in.ids, in.weights));
      EXPECT_TRUE(within(compare(got, ref), 1e-2, 0.05 * max_abs_of(ref) + 1e-3)) << "R=" << R;
    }
  }
}

}  // namespace
}  // namespace fusekit::testing
