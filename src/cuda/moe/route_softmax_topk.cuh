// Softmax top-k of one token by one warp: the body of route_softmax_topk_kernel, shared with
// decode gemm1, which routes the few tokens of a decode step itself (decode_gemm1_swiglu_nk_bf16.cu).
//   p[e] = exp(l[e] - max l) / sum_e' exp(l[e'] - max l)          (fp32; NaN logit -> -inf -> p = 0)
//   ids[0..k) = the k experts of largest logit, ties to the lower index
//   w[j] = p[ids[j]] (/ sum_j p[ids[j]] if renormalised) * routed_scaling_factor
// ids and weights may be global or shared memory (written by lane 0, then rescaled in place).
#pragma once

#include <cmath>

#include "cuda/moe/route_topk_common.cuh"

namespace fusekit::cuda_moe::route_detail {

template <int kSlotsT>
__device__ __forceinline__ void softmax_topk_one_token(const RouteParams& p, std::int64_t t, std::int32_t* ids,
                                                       float* weights) {
  const int lane = threadIdx.x % 32;
  float logit[kSlotsT];
  std::uint32_t eligible = 0;
  float mx = -INFINITY;
#pragma unroll
  for (int s = 0; s < kSlotsT; ++s) {
    const int e = lane + 32 * s;
    logit[s] = -INFINITY;
    if (e < p.num_experts) {
      logit[s] = load_logit(p.logits, p.logits_type, t * p.logits_row_stride + e);
      eligible |= 1u << s;
      mx = fmaxf(mx, logit[s]);
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  float sum = 0.f;
  if (mx != -INFINITY) {
#pragma unroll
    for (int s = 0; s < kSlotsT; ++s) {
      if (lane + 32 * s < p.num_experts) sum += expf(logit[s] - mx);
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float inv_sum = sum > 0.f ? 1.0f / sum : 0.f;
  auto weight_of = [&](int s) { return mx == -INFINITY ? 0.f : expf(logit[s] - mx) * inv_sum; };
  select_topk(logit, eligible, p.top_k, p.routing.norm == MoeTopkNorm::kRenormalize, p.routing.routed_scaling_factor,
              ids, weights, weight_of);
}

}  // namespace fusekit::cuda_moe::route_detail
