// route (sigmoid + correction bias + grouped top-k, DeepSeek-V3): for each token t
//   s[e] = sigmoid(l[e])                       (fp64 rounded to fp32; NaN logit -> -inf -> s = 0)
//   b[e] = s[e] + bias[e]                      (bias absent -> 0; NaN -> -inf for selection)
//   group g (E / G consecutive experts) scores sum of its 2 largest b (its only b if E/G = 1)
//   keep the topk_groups best groups (ties to the lower group), then the k best b among their
//   experts (ties to the lower expert index)
//   w[t, j] = s[ids[t, j]] (/ sum_j s[ids[t, j]] if renormalised) * routed_scaling_factor
// Shapes: logits [T, E] fp32|bf16 (row stride given), bias [E] fp32, ids/weights [T, k]. E <= 512.
// Threads: one warp per token, 4 tokens per CTA; expert e in lane e % 32; per-warp shared
// scratch for b[] and the chosen-group flags. Deterministic (fixed shuffle trees).
#include <cmath>

#include "common/cuda_check.h"
#include "cuda/moe/route_topk_common.cuh"

namespace fusekit::cuda_moe {
namespace {

using namespace route_detail;

__global__ void __launch_bounds__(kWarpsPerBlock * 32) route_sigmoid_grouped_topk_kernel(RouteParams p) {
  __shared__ float biased_smem[kWarpsPerBlock][kMaxExperts];
  __shared__ unsigned char group_chosen[kWarpsPerBlock][kMaxExperts];
  const int warp = threadIdx.x / 32;
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  if (t >= p.tokens) return;
  const int lane = threadIdx.x % 32;
  const int E = p.num_experts;
  const int G = static_cast<int>(p.routing.num_groups);
  const int group_size = E / G;
  float* biased_row = biased_smem[warp];

  float score[kSlots];
  float biased[kSlots];
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int e = lane + 32 * s;
    score[s] = 0.f;
    biased[s] = -INFINITY;
    if (e < E) {
      const float l = load_logit(p.logits, p.logits_type, t * p.logits_row_stride + e);
      // fp64 then one rounding, as the CPU oracle does: ids then agree bit for bit.
      score[s] = static_cast<float>(1.0 / (1.0 + exp(-static_cast<double>(l))));
      float b = score[s] + (p.correction_bias ? p.correction_bias[e] : 0.f);
      biased[s] = isnan(b) ? -INFINITY : b;
      biased_row[e] = biased[s];
    }
  }
  std::uint32_t eligible = 0;
  if (G > 1 && p.routing.topk_groups < G) {
    __syncwarp();
    float gscore[kSlots];
    std::uint32_t group_left = 0;
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int g = lane + 32 * s;
      gscore[s] = -INFINITY;
      if (g < G) {
        float top1 = -INFINITY, top2 = -INFINITY;
        for (int i = 0; i < group_size; ++i) {
          const float v = biased_row[g * group_size + i];
          if (v > top1) {
            top2 = top1;
            top1 = v;
          } else if (v > top2) {
            top2 = v;
          }
        }
        const float gs = group_size == 1 ? top1 : top1 + top2;
        gscore[s] = isnan(gs) ? -INFINITY : gs;
        group_left |= 1u << s;
        group_chosen[warp][g] = 0;
      }
    }
    __syncwarp();
    for (int j = 0; j < p.routing.topk_groups; ++j) {
      Candidate mine{-INFINITY, -1};
#pragma unroll
      for (int s = 0; s < kSlots; ++s) {
        if (group_left >> s & 1u) {
          Candidate c{gscore[s], lane + 32 * s};
          if (better(c, mine)) mine = c;
        }
      }
      const Candidate best = warp_best(mine);
      if (best.index >= 0 && best.index % 32 == lane) {
        group_left &= ~(1u << (best.index / 32));
        group_chosen[warp][best.index] = 1;
      }
    }
    __syncwarp();
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int e = lane + 32 * s;
      if (e < E && group_chosen[warp][e / group_size]) eligible |= 1u << s;
    }
  } else {
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      if (lane + 32 * s < E) eligible |= 1u << s;
    }
  }
  auto weight_of = [&](int s) { return score[s]; };
  select_topk(biased, eligible, p.top_k, p.routing.norm == MoeTopkNorm::kRenormalize,
              p.routing.routed_scaling_factor, p.topk_ids + t * p.top_k, p.topk_weights + t * p.top_k, weight_of);
}

}  // namespace

Status launch_route_sigmoid_grouped_topk(const RouteParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return Status::Ok();
  if (p.num_experts < 1 || p.num_experts > kMaxExperts || p.routing.num_groups < 1 ||
      p.num_experts % p.routing.num_groups != 0) {
    return invalid_argument("route: num_experts must be in [1, 512] and a multiple of num_groups, got E = " +
                            std::to_string(p.num_experts) + ", num_groups = " + std::to_string(p.routing.num_groups));
  }
  const std::int64_t blocks = (p.tokens + kWarpsPerBlock - 1) / kWarpsPerBlock;
  route_sigmoid_grouped_topk_kernel<<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(p);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("route_sigmoid_grouped_topk_kernel");
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
