// gemm1_swiglu / gemm2 oracles (formulas in moe_ref.h). bf16 operands widened to
// fp64, fp64 dot products, one bf16 rounding per stored value — where the `cuda` backend
// rounds its fp32 accumulators. Each output row is computed in a fixed order, so the result
// does not depend on how rows are spread over threads.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/float_bits.h"
#include "common/moe_gate_up.h"
#include "cpu/moe_parallel_rows.h"
#include "cpu/moe_ref.h"

namespace fusekit::cpu {

namespace {

constexpr std::int64_t kChunk = 64;  // outputs accumulated together (stack accumulators)

// The product of two bf16 values is exact in fp32 (8 x 8 significant bits), so it is formed in
// fp32 (vectorises wider) and only the sum is carried in fp64.
inline double mul(bf16_t a, bf16_t b) {
  return static_cast<double>(bf16_bits_to_float(a) * bf16_bits_to_float(b));
}
inline bf16_t narrow(double v) { return float_to_bf16_bits(static_cast<float>(v)); }

// acc[j] = sum_c a[c] * W[n0 + j][c] for j < count, W one expert's [N, K] (kNK: W[n][c] at
// n*K + c) or [K, N] (kKN: at c*N + n).
void dot_chunk(MoeWeightLayout layout, const bf16_t* w, std::int64_t N, std::int64_t K, std::int64_t n0,
               std::int64_t count, const bf16_t* a, double* acc) {
  for (std::int64_t j = 0; j < count; ++j) acc[j] = 0;
  if (layout == MoeWeightLayout::kNK) {
    // Eight fixed partial sums (lane l takes c = l mod 8), added in a fixed order at the end:
    // the compiler can vectorise it, and the order is the same on every run.
    constexpr int kLanes = 8;
    for (std::int64_t j = 0; j < count; ++j) {
      const bf16_t* row = w + (n0 + j) * K;
      double part[kLanes] = {};
      std::int64_t c = 0;
      for (; c + kLanes <= K; c += kLanes) {
        for (int l = 0; l < kLanes; ++l) part[l] += mul(a[c + l], row[c + l]);
      }
      for (; c < K; ++c) part[c % kLanes] += mul(a[c], row[c]);
      double s = 0;
      for (int l = 0; l < kLanes; ++l) s += part[l];
      acc[j] = s;
    }
  } else {
    for (std::int64_t c = 0; c < K; ++c) {
      const bf16_t ac = a[c];
      const bf16_t* row = w + c * N + n0;
      for (std::int64_t j = 0; j < count; ++j) acc[j] += mul(ac, row[j]);
    }
  }
}

std::int64_t clamp_total(const AlignView& a) { return std::clamp<std::int64_t>(a.total, 0, a.capacity); }

// The expert and pair of row r, or false for a row that holds no pair.
bool row_pair(const MoeDims& d, std::int64_t pairs, const AlignView& a, std::int64_t total, std::int64_t r,
              std::int64_t* expert, std::int64_t* pair) {
  if (r >= total) return false;
  const std::int64_t e = a.expert_ids[r / a.block_m];
  const std::int64_t p = a.sorted_token_ids[r];
  if (e < 0 || e >= d.E || p < 0 || p >= pairs) return false;
  *expert = e;
  *pair = p;
  return true;
}

}  // namespace

void gemm1_swiglu_ref(const MoeDims& d, std::int64_t T, const bf16_t* x, std::int64_t x_stride, const bf16_t* w1,
                      const AlignView& a, bf16_t* act, std::int64_t act_stride) {
  const std::int64_t pairs = T * d.k, total = clamp_total(a), N = 2 * d.I, K = d.H;
  parallel_rows(a.capacity, 2.0 * static_cast<double>(N) * static_cast<double>(K), [&](std::int64_t r) {
    bf16_t* out = act + r * act_stride;
    std::int64_t e = 0, p = 0;
    if (!row_pair(d, pairs, a, total, r, &e, &p)) {
      std::memset(out, 0, sizeof(bf16_t) * d.I);
      return;
    }
    const bf16_t* xr = x + (p / d.k) * x_stride;
    const bf16_t* we = w1 + e * N * K;
    double gate[kChunk], up[kChunk];
    for (std::int64_t n0 = 0; n0 < d.I; n0 += kChunk) {
      const std::int64_t count = std::min(kChunk, d.I - n0);
      if (d.gate_up_order == MoeGateUpOrder::kHalves) {
        dot_chunk(d.layout, we, N, K, n0, count, xr, gate);
        dot_chunk(d.layout, we, N, K, d.I + n0, count, xr, up);
      } else {  // 8 consecutive columns are 8 consecutive rows (I % 8 == 0, kChunk % 8 == 0)
        for (std::int64_t s = 0; s < count; s += 8) {
          dot_chunk(d.layout, we, N, K, w1_row(d.gate_up_order, d.I, n0 + s, false), 8, xr, gate + s);
          dot_chunk(d.layout, we, N, K, w1_row(d.gate_up_order, d.I, n0 + s, true), 8, xr, up + s);
        }
      }
      for (std::int64_t j = 0; j < count; ++j) {
        const double g = gate[j];
        out[n0 + j] = narrow(g / (1.0 + std::exp(-g)) * up[j]);
      }
    }
  });
}

void gemm2_ref(const MoeDims& d, std::int64_t T, const bf16_t* act, std::int64_t act_stride, const bf16_t* w2,
               const AlignView& a, const float* weights, bf16_t* y, std::int64_t y_stride) {
  const std::int64_t pairs = T * d.k, total = clamp_total(a), N = d.H, K = d.I;
  // Pairs that no row holds keep these zeros.
  for (std::int64_t p = 0; p < pairs; ++p) std::memset(y + p * y_stride, 0, sizeof(bf16_t) * N);
  parallel_rows(total, 2.0 * static_cast<double>(N) * static_cast<double>(K), [&](std::int64_t r) {
    std::int64_t e = 0, p = 0;
    if (!row_pair(d, pairs, a, total, r, &e, &p)) return;
    const bf16_t* ar = act + r * act_stride;
    const bf16_t* we = w2 + e * N * K;
    const double w = weights[p];
    bf16_t* out = y + p * y_stride;
    double acc[kChunk];
    for (std::int64_t n0 = 0; n0 < N; n0 += kChunk) {
      const std::int64_t count = std::min(kChunk, N - n0);
      dot_chunk(d.layout, we, N, K, n0, count, ar, acc);
      for (std::int64_t j = 0; j < count; ++j) out[n0 + j] = narrow(w * acc[j]);
    }
  });
}

}  // namespace fusekit::cpu
