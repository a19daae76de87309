// Host logic of the parallel MoE layer that every build has (no NCCL, no CUDA needed):
// config resolution, fingerprints and headers, workspace carve, weight slicing, the host
// reference of the EP plan — and, in builds without NCCL, the entry points that say so.
#include "dist/moe_parallel_plan.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <sstream>

#include "api/validate.h"
#include "fusekit/moe_parallel.h"

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>

#include "common/cuda_check.h"
#endif

namespace fusekit::dist {
namespace {

constexpr std::int64_t kInt32Max = INT32_MAX;

std::string str(std::int64_t v) { return std::to_string(v); }

// Enum-valued header fields by name, the others as numbers.
std::string field_value(std::int32_t WireHeader::*member, std::int32_t v) {
  if (member == &WireHeader::kind) {
    return v == static_cast<std::int32_t>(ParallelKind::kExpert)   ? "expert"
           : v == static_cast<std::int32_t>(ParallelKind::kTensor) ? "tensor"
                                                                   : str(v);
  }
  if (member == &WireHeader::layout) {
    return v == static_cast<std::int32_t>(MoeWeightLayout::kNK)   ? "kNK"
           : v == static_cast<std::int32_t>(MoeWeightLayout::kKN) ? "kKN"
                                                                  : str(v);
  }
  if (member == &WireHeader::routing_mode) {
    return v == static_cast<std::int32_t>(MoeRoutingMode::kSoftmaxTopK)          ? "kSoftmaxTopK"
           : v == static_cast<std::int32_t>(MoeRoutingMode::kSigmoidGroupedTopK) ? "kSigmoidGroupedTopK"
                                                                                 : str(v);
  }
  return str(v);
}

}  // namespace

Status resolve_plan(const MoeParallelConfig& config, ParallelPlan* plan) {
  const MoeConfig& layer = config.layer;
  const std::int64_t ep = layer.expert_parallel_size;
  const std::int64_t tp = config.tensor_parallel_size;
  if (ep < 1) {
    return invalid_argument("config.layer.expert_parallel_size: expected >= 1, got " + str(ep));
  }
  if (layer.gate_up_order != MoeGateUpOrder::kHalves) {
    // Each rank's W1 slice is read in kHalves order by the parallel planner and kernels.
    return invalid_argument("config.layer.gate_up_order: moe_parallel supports kHalves only");
  }
  if (tp < 1) {
    return invalid_argument("config.tensor_parallel_size: expected >= 1, got " + str(tp));
  }
  if (ep > 1 && tp > 1) {
    return unsupported("config: expert_parallel_size " + str(ep) + " and tensor_parallel_size " + str(tp) +
                       " are both > 1; expert and tensor parallelism together are not supported");
  }
  // The layer itself (E, top_k, H, I, max_tokens, routing) is validated by the single-GPU
  // API, so both paths word those errors the same way.
  MoeConfig whole = layer;
  whole.expert_parallel_size = 1;
  std::size_t unused = 0;
  FUSEKIT_RETURN_IF_ERROR(moe_workspace_size(whole, &unused));

  ParallelPlan p;
  p.kind = ep > 1 ? ParallelKind::kExpert : ParallelKind::kTensor;
  p.ranks = std::max(ep, tp);
  p.max_tokens = layer.max_tokens;
  p.top_k = layer.top_k;
  p.local = whole;
  const std::int64_t R = p.ranks;
  const std::int64_t E = layer.num_experts;
  const std::int64_t k = layer.top_k;
  const std::int64_t M = layer.max_tokens;
  if (p.kind == ParallelKind::kExpert) {
    if (E % R != 0) {
      return invalid_argument("config.layer.num_experts (" + str(E) + ") is not divisible by expert_parallel_size (" +
                              str(R) + "): expert parallelism gives every rank E/R experts");
    }
    p.experts_per_rank = E / R;
    p.max_send_rows = M * std::min(R, k);
    p.max_recv_rows = R * M;
    p.max_pairs = R * M * std::min(k, p.experts_per_rank);
    p.meta_width = 2 + 2 * k;
    if (M > kInt32Max / k || p.max_pairs > kInt32Max || p.max_recv_rows > kInt32Max) {
      return invalid_argument("config.layer.max_tokens (" + str(M) + ") is too large for expert parallelism over " +
                              str(R) + " ranks with top_k " + str(k) + ": R * max_tokens * min(top_k, E/R) = " +
                              str(p.max_pairs) + " must stay below 2^31");
    }
    // Each rank runs its E/R experts on received (token, expert) pairs, one pair per row.
    p.local.num_experts = p.experts_per_rank;
    p.local.top_k = 1;
    p.local.max_tokens = p.max_pairs;
    p.local.routing = MoeRouting{};
  } else {
    const std::int64_t I = layer.intermediate;
    if (I % R != 0 || (I / R) % 8 != 0) {
      return invalid_argument("config.layer.intermediate (" + str(I) + ") must split into tensor_parallel_size (" +
                              str(R) + ") slices that are multiples of 8: I / R = " +
                              (I % R == 0 ? str(I / R) : std::string("not an integer")));
    }
    p.experts_per_rank = E;
    p.local.intermediate = I / R;
  }
  *plan = p;
  return Status::Ok();
}

std::uint64_t config_fingerprint(const MoeParallelConfig& config) {
  const MoeConfig& l = config.layer;
  std::uint32_t scale_bits = 0;
  std::memcpy(&scale_bits, &l.routing.routed_scaling_factor, 4);
  const std::int64_t fields[] = {
      l.expert_parallel_size, config.tensor_parallel_size, l.num_experts, l.top_k, l.hidden, l.intermediate,
      l.max_tokens, static_cast<std::int64_t>(l.layout), static_cast<std::int64_t>(l.routing.mode),
      static_cast<std::int64_t>(l.routing.norm), l.routing.num_groups, l.routing.topk_groups,
      static_cast<std::int64_t>(scale_bits)};
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::int64_t f : fields) {
    for (int b = 0; b < 8; ++b) {
      h ^= static_cast<std::uint64_t>(f >> (8 * b)) & 0xffu;
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

WireHeader make_header(const MoeParallelConfig& config, std::int64_t tokens, bool valid) {
  const MoeConfig& l = config.layer;
  auto clamp32 = [](std::int64_t v) {
    return static_cast<std::int32_t>(std::max<std::int64_t>(INT32_MIN, std::min<std::int64_t>(kInt32Max, v)));
  };
  const std::uint64_t fp = config_fingerprint(config);
  WireHeader h{};
  h.magic = kHeaderMagic;
  h.valid = valid ? 1 : 0;
  h.fingerprint_lo = static_cast<std::uint32_t>(fp);
  h.fingerprint_hi = static_cast<std::uint32_t>(fp >> 32);
  h.rows = 0;
  h.pairs = 0;
  h.tokens = clamp32(tokens);
  const bool ep = l.expert_parallel_size > 1;
  h.kind = static_cast<std::int32_t>(ep ? ParallelKind::kExpert : ParallelKind::kTensor);
  h.ranks = clamp32(ep ? l.expert_parallel_size : config.tensor_parallel_size);
  h.num_experts = clamp32(l.num_experts);
  h.top_k = clamp32(l.top_k);
  h.hidden = clamp32(l.hidden);
  h.intermediate = clamp32(l.intermediate);
  h.max_tokens = clamp32(l.max_tokens);
  h.layout = static_cast<std::int32_t>(l.layout);
  h.routing_mode = static_cast<std::int32_t>(l.routing.mode);
  return h;
}

Status compare_headers(const WireHeader* headers, std::int64_t ranks, const char* what) {
  for (std::int64_t s = 0; s < ranks; ++s) {
    if (headers[s].magic != kHeaderMagic) {
      return Status(StatusCode::kNcclError,
                    std::string(what) + ": rank " + str(s) +
                        " sent no valid header; every rank must call the same entry point with the same communicator");
    }
  }
  struct Field {
    const char* name;
    std::int32_t WireHeader::*member;
  };
  static const Field fields[] = {
      {"the parallelism (expert or tensor)", &WireHeader::kind},
      {"the rank count (expert_parallel_size or tensor_parallel_size)", &WireHeader::ranks},
      {"layer.num_experts", &WireHeader::num_experts},
      {"layer.top_k", &WireHeader::top_k},
      {"layer.hidden", &WireHeader::hidden},
      {"layer.intermediate", &WireHeader::intermediate},
      {"layer.max_tokens", &WireHeader::max_tokens},
      {"layer.layout", &WireHeader::layout},
      {"layer.routing.mode", &WireHeader::routing_mode},
  };
  const WireHeader& h0 = headers[0];
  for (std::int64_t s = 1; s < ranks; ++s) {
    const WireHeader& h = headers[s];
    for (const Field& f : fields) {
      if (h.*(f.member) != h0.*(f.member)) {
        const auto value = [&f](std::int32_t v) { return field_value(f.member, v); };
        return invalid_argument(std::string(what) + ": the ranks' configurations differ: " + f.name + " is " +
                                value(h0.*(f.member)) + " on rank 0 but " + value(h.*(f.member)) + " on rank " +
                                str(s) + "; every rank must pass the same MoeParallelConfig");
      }
    }
    if (h.fingerprint_lo != h0.fingerprint_lo || h.fingerprint_hi != h0.fingerprint_hi) {
      std::ostringstream os;
      os << what << ": the ranks' configurations differ (fingerprint 0x" << std::hex << h0.fingerprint_hi
         << h0.fingerprint_lo << " on rank 0, 0x" << h.fingerprint_hi << h.fingerprint_lo << std::dec << " on rank "
         << s << "): routing (norm, groups, scaling factor) or max_tokens differ; every rank must pass the same "
         << "MoeParallelConfig";
      return invalid_argument(os.str());
    }
  }
  // Same configuration everywhere, but a rank's own checks failed (its tensors, its workspace).
  for (std::int64_t s = 0; s < ranks; ++s) {
    if (!headers[s].valid) {
      return invalid_argument(std::string(what) + ": rank " + str(s) +
                              " rejected this call (its own error says why); no rank exchanged token data");
    }
  }
  return Status::Ok();
}

HeaderRegion header_region(std::int64_t ranks) {
  HeaderRegion r;
  const std::size_t hdr = static_cast<std::size_t>(ranks) * sizeof(WireHeader);
  r.send = 0;
  r.recv = align_up(hdr);
  r.offsets = r.recv + align_up(hdr);
  r.bytes = r.offsets + align_up(3 * static_cast<std::size_t>(ranks + 1) * sizeof(std::int32_t));
  return r;
}

Status ep_layout(const ParallelPlan& plan, EpLayout* out) {
  if (plan.kind != ParallelKind::kExpert) return Status(StatusCode::kInternal, "ep_layout: not an EP plan");
  EpLayout l;
  l.header = header_region(plan.ranks);
  const auto M = static_cast<std::size_t>(plan.max_tokens);
  const auto k = static_cast<std::size_t>(plan.top_k);
  const auto H = static_cast<std::size_t>(plan.local.hidden);
  const auto R = static_cast<std::size_t>(plan.ranks);
  const auto S = static_cast<std::size_t>(plan.max_send_rows);
  const auto V = static_cast<std::size_t>(plan.max_recv_rows);
  const auto P = static_cast<std::size_t>(plan.max_pairs);
  const auto W = static_cast<std::size_t>(plan.meta_width);
  std::size_t at = l.header.bytes;
  auto take = [&](std::size_t bytes) {
    const std::size_t here = at;
    at += align_up(bytes);
    return here;
  };
  l.topk_ids = take(M * k * 4);
  l.topk_weights = take(M * k * 4);
  l.dest_plan = take(M * R * 2 * 4);
  l.send_x = take(S * H * 2);
  l.send_meta = take(S * W * 4);
  l.recv_x = take(V * H * 2);
  l.recv_meta = take(V * W * 4);
  l.pair_x = take(P * H * 2);
  l.pair_ids = take(P * 4);
  l.pair_weights = take(P * 4);
  l.pair_y = take(P * H * 2);
  FUSEKIT_RETURN_IF_ERROR(moe_workspace_size(plan.local, &l.local_workspace_bytes));
  l.local_workspace = take(l.local_workspace_bytes);
  l.total = at;
  *out = l;
  return Status::Ok();
}

Status tp_layout(const ParallelPlan& plan, TpLayout* out) {
  TpLayout l;
  l.header = header_region(plan.ranks);
  FUSEKIT_RETURN_IF_ERROR(moe_workspace_size(plan.local, &l.local_workspace_bytes));
  l.local_workspace = l.header.bytes;
  l.total = l.local_workspace + align_up(l.local_workspace_bytes);
  *out = l;
  return Status::Ok();
}

int token_owners(const std::int32_t* ids, std::int64_t top_k, std::int32_t num_experts, std::int32_t experts_per_rank,
                 std::int32_t* owners) {
  int n = 0;
  for (std::int64_t j = 0; j < top_k; ++j) {
    const std::int32_t d = expert_owner(ids[j], num_experts, experts_per_rank);
    if (d < 0) continue;
    bool seen = false;
    for (int i = 0; i < n; ++i) seen = seen || owners[i] == d;
    if (!seen) owners[n++] = d;
  }
  return n;
}

EpPlanReference ep_plan_reference(const std::int32_t* topk_ids, std::int64_t tokens, std::int64_t top_k,
                                  std::int64_t num_experts, std::int64_t ranks) {
  EpPlanReference r;
  const auto E = static_cast<std::int32_t>(num_experts);
  const auto El = static_cast<std::int32_t>(num_experts / ranks);
  r.rows.assign(static_cast<std::size_t>(ranks), 0);
  r.pairs.assign(static_cast<std::size_t>(ranks), 0);
  r.dest_plan.assign(static_cast<std::size_t>(tokens * ranks * 2), -1);
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int64_t d = 0; d < ranks; ++d) {
      std::int32_t n = 0;
      for (std::int64_t j = 0; j < top_k; ++j) n += expert_owner(topk_ids[t * top_k + j], E, El) == d ? 1 : 0;
      if (n == 0) continue;
      const std::size_t at = static_cast<std::size_t>((t * ranks + d) * 2);
      r.dest_plan[at] = r.rows[d]++;
      r.dest_plan[at + 1] = r.pairs[d];
      r.pairs[d] += n;
    }
  }
  return r;
}

}  // namespace fusekit::dist

namespace fusekit {

using dist::ParallelKind;
using dist::ParallelPlan;

Status moe_parallel_local_config(const MoeParallelConfig& config, MoeConfig* local) {
  if (local == nullptr) return invalid_argument("local: null pointer");
  ParallelPlan plan;
  FUSEKIT_RETURN_IF_ERROR(dist::resolve_plan(config, &plan));
  *local = plan.local;
  return Status::Ok();
}

Status moe_parallel_workspace_size(const MoeParallelConfig& config, std::size_t* bytes) {
  if (bytes == nullptr) return invalid_argument("bytes: null pointer");
  ParallelPlan plan;
  FUSEKIT_RETURN_IF_ERROR(dist::resolve_plan(config, &plan));
  if (plan.kind == ParallelKind::kExpert) {
    dist::EpLayout l;
    FUSEKIT_RETURN_IF_ERROR(dist::ep_layout(plan, &l));
    *bytes = l.total;
  } else {
    dist::TpLayout l;
    FUSEKIT_RETURN_IF_ERROR(dist::tp_layout(plan, &l));
    *bytes = l.total;
  }
  return Status::Ok();
}

namespace {

// W1/W2 shapes of a config, for messages and checks.
struct WeightShapes {
  std::int64_t w1[3];
  std::int64_t w2[3];
};
WeightShapes weight_shapes(std::int64_t E, std::int64_t H, std::int64_t I, MoeWeightLayout layout) {
  if (layout == MoeWeightLayout::kNK) return {{E, 2 * I, H}, {E, H, I}};
  return {{E, H, 2 * I}, {E, I, H}};
}
std::string shape3(const std::int64_t* s) {
  return "[" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " + std::to_string(s[2]) + "]";
}

Status expect_weight(const TensorView& t, const char* name, const std::int64_t* shape) {
  FUSEKIT_RETURN_IF_ERROR(expect_present(t, name));
  FUSEKIT_RETURN_IF_ERROR(expect_dtype(t, name, {DType::kBF16}));
  FUSEKIT_RETURN_IF_ERROR(expect_shape(t, name, {shape[0], shape[1], shape[2]}, shape3(shape)));
  FUSEKIT_RETURN_IF_ERROR(expect_contiguous(t, name));
  return Status::Ok();
}

// One strided copy: `rows` rows of `width` bytes.
struct Copy2D {
  char* dst;
  std::size_t dpitch;
  const char* src;
  std::size_t spitch;
  std::size_t width;
  std::size_t rows;
};

Status run_copy(const Copy2D& c, bool host_only, void* stream) {
  if (c.rows == 0 || c.width == 0) return Status::Ok();
  if (host_only) {
    for (std::size_t r = 0; r < c.rows; ++r) std::memcpy(c.dst + r * c.dpitch, c.src + r * c.spitch, c.width);
    return Status::Ok();
  }
#if FUSEKIT_WITH_CUDA
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(c.dst, c.dpitch, c.src, c.spitch, c.width, c.rows,
                                                 cudaMemcpyDefault, static_cast<cudaStream_t>(stream)));
  return Status::Ok();
#else
  (void)stream;
  return unsupported("moe_parallel_slice_weights: device tensors need a CUDA build of fusekit");
#endif
}

Status expect_weight_device(const TensorView& t, const char* name) {
  return expect_device(t, name, t.device, t.device_id);
}

}  // namespace

Status moe_parallel_slice_weights(const MoeParallelConfig& config, std::int64_t rank, const MoeWeights& full,
                                  const MoeWeights& dst, void* stream) {
  ParallelPlan plan;
  FUSEKIT_RETURN_IF_ERROR(dist::resolve_plan(config, &plan));
  if (rank < 0 || rank >= plan.ranks) {
    return invalid_argument("rank: expected 0 <= rank < " + std::to_string(plan.ranks) + ", got " +
                            std::to_string(rank));
  }
  const MoeConfig& l = config.layer;
  const std::int64_t E = l.num_experts, H = l.hidden, I = l.intermediate;
  const WeightShapes fs = weight_shapes(E, H, I, l.layout);
  const bool ep = plan.kind == ParallelKind::kExpert;
  const std::int64_t El = ep ? plan.experts_per_rank : E;
  const std::int64_t Il = ep ? I : plan.local.intermediate;
  const WeightShapes ds = weight_shapes(El, H, Il, l.layout);
  FUSEKIT_RETURN_IF_ERROR(expect_weight(full.w1, "full.w1", fs.w1));
  FUSEKIT_RETURN_IF_ERROR(expect_weight(full.w2, "full.w2", fs.w2));
  FUSEKIT_RETURN_IF_ERROR(expect_weight(dst.w1, "dst.w1", ds.w1));
  FUSEKIT_RETURN_IF_ERROR(expect_weight(dst.w2, "dst.w2", ds.w2));
  FUSEKIT_RETURN_IF_ERROR(expect_weight_device(full.w1, "full.w1"));
  FUSEKIT_RETURN_IF_ERROR(expect_weight_device(full.w2, "full.w2"));
  FUSEKIT_RETURN_IF_ERROR(expect_weight_device(dst.w1, "dst.w1"));
  FUSEKIT_RETURN_IF_ERROR(expect_weight_device(dst.w2, "dst.w2"));
  if (ranges_overlap(byte_range(dst.w1), byte_range(dst.w2)) ||
      ranges_overlap(byte_range(dst.w1), byte_range(full.w1)) ||
      ranges_overlap(byte_range(dst.w1), byte_range(full.w2)) ||
      ranges_overlap(byte_range(dst.w2), byte_range(full.w1)) ||
      ranges_overlap(byte_range(dst.w2), byte_range(full.w2))) {
    return invalid_argument("dst: dst.w1 and dst.w2 must not overlap each other or the full weights");
  }
  const bool host_only = full.w1.device == DeviceType::kCPU && full.w2.device == DeviceType::kCPU &&
                         dst.w1.device == DeviceType::kCPU && dst.w2.device == DeviceType::kCPU;
  const std::size_t b = 2;  // bf16
  auto* s1 = static_cast<const char*>(full.w1.data);
  auto* s2 = static_cast<const char*>(full.w2.data);
  auto* d1 = static_cast<char*>(dst.w1.data);
  auto* d2 = static_cast<char*>(dst.w2.data);
  const auto uE = static_cast<std::size_t>(E), uH = static_cast<std::size_t>(H), uI = static_cast<std::size_t>(I);
  const auto uIl = static_cast<std::size_t>(Il), ur = static_cast<std::size_t>(rank);
  std::vector<Copy2D> copies;
  if (ep) {
    // Experts are the outermost dimension: one contiguous block per weight.
    const std::size_t w1_expert = 2 * uI * uH * b, w2_expert = uI * uH * b, El_u = static_cast<std::size_t>(El);
    copies.push_back({d1, 0, s1 + ur * El_u * w1_expert, 0, El_u * w1_expert, 1});
    copies.push_back({d2, 0, s2 + ur * El_u * w2_expert, 0, El_u * w2_expert, 1});
  } else if (l.layout == MoeWeightLayout::kNK) {
    // W1 [E, 2I, H]: per expert, this rank's gate rows then its up rows (each Il*H contiguous).
    const std::size_t src_e = 2 * uI * uH * b, dst_e = 2 * uIl * uH * b, blk = uIl * uH * b;
    copies.push_back({d1, dst_e, s1 + ur * blk, src_e, blk, uE});
    copies.push_back({d1 + blk, dst_e, s1 + (uI * uH * b) + ur * blk, src_e, blk, uE});
    // W2 [E, H, I]: columns [r*Il, (r+1)*Il) of every row.
    copies.push_back({d2, uIl * b, s2 + ur * uIl * b, uI * b, uIl * b, uE * uH});
  } else {
    // W1 [E, H, 2I]: per row h, this rank's gate columns then its up columns.
    copies.push_back({d1, 2 * uIl * b, s1 + ur * uIl * b, 2 * uI * b, uIl * b, uE * uH});
    copies.push_back({d1 + uIl * b, 2 * uIl * b, s1 + (uI + ur * uIl) * b, 2 * uI * b, uIl * b, uE * uH});
    // W2 [E, I, H]: per expert, rows [r*Il, (r+1)*Il) — one contiguous block.
    const std::size_t blk = uIl * uH * b;
    copies.push_back({d2, blk, s2 + ur * blk, uI * uH * b, blk, uE});
  }
  for (const Copy2D& c : copies) {
    Copy2D cc = c;
    if (cc.rows == 1) cc.dpitch = cc.spitch = cc.width;
    FUSEKIT_RETURN_IF_ERROR(run_copy(cc, host_only, stream));
  }
  return Status::Ok();
}

Status moe_parallel_expert_views(const MoeParallelConfig& config, std::int64_t rank, const MoeWeights& full,
                                 MoeWeights* views) {
  if (views == nullptr) return invalid_argument("views: null pointer");
  ParallelPlan plan;
  FUSEKIT_RETURN_IF_ERROR(dist::resolve_plan(config, &plan));
  if (plan.kind != ParallelKind::kExpert) {
    return invalid_argument(
        "config: moe_parallel_expert_views needs expert parallelism (layer.expert_parallel_size > 1); tensor "
        "parallel slices are not contiguous, copy them with moe_parallel_slice_weights");
  }
  if (rank < 0 || rank >= plan.ranks) {
    return invalid_argument("rank: expected 0 <= rank < " + std::to_string(plan.ranks) + ", got " +
                            std::to_string(rank));
  }
  const MoeConfig& l = config.layer;
  const WeightShapes fs = weight_shapes(l.num_experts, l.hidden, l.intermediate, l.layout);
  FUSEKIT_RETURN_IF_ERROR(expect_weight(full.w1, "full.w1", fs.w1));
  FUSEKIT_RETURN_IF_ERROR(expect_weight(full.w2, "full.w2", fs.w2));
  const std::int64_t El = plan.experts_per_rank;
  MoeWeights v = full;
  const std::int64_t e1 = full.w1.shape[1] * full.w1.shape[2], e2 = full.w2.shape[1] * full.w2.shape[2];
  v.w1.data = static_cast<char*>(full.w1.data) + static_cast<std::size_t>(rank * El * e1) * 2;
  v.w2.data = static_cast<char*>(full.w2.data) + static_cast<std::size_t>(rank * El * e2) * 2;
  v.w1.shape[0] = El;
  v.w2.shape[0] = El;
  *views = v;
  return Status::Ok();
}

#if !FUSEKIT_WITH_NCCL
namespace {
Status no_nccl(const char* what) {
  return unsupported(std::string(what) +
                     ": this build of fusekit has no NCCL (multi-GPU MoE needs CUDA and NCCL at build time)");
}
}  // namespace

Status moe_comm_unique_id(MoeCommId*) { return no_nccl("moe_comm_unique_id"); }
Status moe_comm_init_rank(const MoeCommId&, int, int, MoeComm*) { return no_nccl("moe_comm_init_rank"); }
Status moe_comm_init_all(int, const int*, MoeComm*) { return no_nccl("moe_comm_init_all"); }
Status moe_comm_destroy(MoeComm*) { return no_nccl("moe_comm_destroy"); }
Status moe_comm_query(const MoeComm&, int*, int*, int*) { return no_nccl("moe_comm_query"); }
Status moe_parallel_check(const MoeParallelLayer&, const MoeWorkspace&, void*) {
  return no_nccl("moe_parallel_check");
}
Status moe_parallel_forward(const MoeParallelLayer&, const TensorView&, const MoeRouterInput&, const TensorView&,
                            const MoeWorkspace&, void*) {
  return no_nccl("moe_parallel_forward");
}
Status moe_parallel_forward_routed(const MoeParallelLayer&, const TensorView&, const MoeRouted&, const TensorView&,
                                   const MoeWorkspace&, void*) {
  return no_nccl("moe_parallel_forward_routed");
}
#endif

}  // namespace fusekit
