// qk_rmsnorm kernel + launcher (sm_80+, bf16 / fp16 / fp32 storage, fp32 math).
//
// Formula: for every token t and every Q or K head h (Hq + Hkv heads of D lanes):
//   y = x * rsqrt(sum(x^2) / D + eps) * w      (w = q_weight for h < Hq, else k_weight)
//   then optional rotary on y[0, rotary_dim) (neox: halves; gptj: adjacent pairs) with
//   cos/sin from cos_sin[pos * rd + i] / cos_sin[pos * rd + rd/2 + i]; a position outside
//   [0, max_position) skips the rotation and never touches the cache.
// Shapes/layouts: qkv/out rows of [Q Hq*D | K Hkv*D | V Hkv*Dv], row strides in elements,
//   every row and both weights 16-byte aligned. V is not touched here (out of place, the
//   launcher in qk_rmsnorm_dispatch.cu copies it with cudaMemcpy2DAsync).
// Thread mapping: a "unit" is one (token, head) pair, numbered t * H + h; block b owns units
//   [b * kUnitsPerBlock, (b + 1) * kUnitsPerBlock). A group of kLanes consecutive lanes (a
//   power of two <= 32, so a group never straddles a warp) owns one unit at a time; lane l
//   holds 16-byte vectors l, l + kLanes, ... of the head (kVecs of them). A group may own
//   kHeadsPerGroup units (unit group and group + kGroups of the block's range): 2 for large
//   T*H (two 16-byte loads in flight per thread), 1 for small (see kTwoHeadsMinUnits).
//   All global loads of a thread (data, weights, position) are issued before any math, so a
//   cold call pays one memory latency. The sum of squares is reduced with xor-shuffles
//   inside the group.
// Compile-time head_dim (64, 128, 256) makes every lane exactly one or two vectors; the
//   generic instantiation (kHeadDim = 0) covers any multiple of 8 up to 512 with 32 lanes
//   and a per-vector guard.
// Limits: Hq + Hkv <= 65536 (32-bit unit arithmetic inside a block); tokens, unit numbers
//   and all element offsets are 64-bit. No allocation, no host synchronisation (CUDA-graph safe).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_check.h"
#include "fusekit/qk_norm.h"

namespace fusekit::cuda::qk_norm_detail {

constexpr int kThreads = 256;
// Heads per lane group: 2 keeps two 16-byte loads in flight per thread, which large T needs
// to reach copy bandwidth; 1 gives more, shorter blocks, which small T wants. The dispatch
// picks by the number of units; docs/PERF_NOTES.md (QK) has the measurements (4 loses).
constexpr std::int64_t kTwoHeadsMinUnits = 32768;
constexpr int kMaxHeadDim = 512;

// n / d for n < 2^31 with one multiply-high and a shift (round-up reciprocal; d >= 2).
struct FastDiv {
  std::uint32_t divisor = 1, multiplier = 0, shift = 0;
  static FastDiv make(std::uint32_t d) {
    FastDiv f;
    f.divisor = d;
    std::uint32_t log2_up = 0;
    while ((1ull << log2_up) < d) ++log2_up;
    const unsigned long long p = 31ull + log2_up;
    f.multiplier = static_cast<std::uint32_t>(((1ull << p) + d - 1) / d);
    f.shift = static_cast<std::uint32_t>(p - 32);
    return f;
  }
  __device__ __forceinline__ std::uint32_t div(std::uint32_t n) const { return __umulhi(n, multiplier) >> shift; }
};

struct KernelArgs {
  const void* qkv;
  void* out;
  std::int64_t in_stride, out_stride;
  std::int64_t tokens;
  int num_q_heads, heads, head_dim;
  FastDiv heads_div;
  const void* q_weight;
  const void* k_weight;
  DType weight_dtype;
  float eps, inv_head_dim;
  RotaryStyle rotary_style;
  int rotary_dim;
  const void* positions;
  DType position_dtype;
  const float* cos_sin;
  std::int64_t max_position;
};

// 16 bytes of storage <-> kPerVec floats.
template <typename T>
struct Pack;

template <>
struct Pack<__nv_bfloat16> {
  static constexpr int kPerVec = 8;
  __device__ __forceinline__ static void unpack(const uint4& v, float* f) {
    const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 x = __bfloat1622float2(p[i]);
      f[2 * i] = x.x;
      f[2 * i + 1] = x.y;
    }
  }
  __device__ __forceinline__ static uint4 pack(const float* f) {
    uint4 v;
    __nv_bfloat162* p = reinterpret_cast<__nv_bfloat162*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) p[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return v;
  }
};

template <>
struct Pack<__half> {
  static constexpr int kPerVec = 8;
  __device__ __forceinline__ static void unpack(const uint4& v, float* f) {
    const __half2* p = reinterpret_cast<const __half2*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 x = __half22float2(p[i]);
      f[2 * i] = x.x;
      f[2 * i + 1] = x.y;
    }
  }
  __device__ __forceinline__ static uint4 pack(const float* f) {
    uint4 v;
    __half2* p = reinterpret_cast<__half2*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) p[i] = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
    return v;
  }
};

template <>
struct Pack<float> {
  static constexpr int kPerVec = 4;
  __device__ __forceinline__ static void unpack(const uint4& v, float* f) {
    f[0] = __uint_as_float(v.x);
    f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z);
    f[3] = __uint_as_float(v.w);
  }
  __device__ __forceinline__ static uint4 pack(const float* f) {
    return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
  }
};

template <typename T, int kHeadDim, int kHeadsPerGroup>
struct Shape {
  static constexpr int kPerVec = Pack<T>::kPerVec;
  static constexpr int kVecsPerHead = (kHeadDim ? kHeadDim : kMaxHeadDim) / kPerVec;
  static constexpr int kLanes = kVecsPerHead < 32 ? kVecsPerHead : 32;
  static constexpr int kVecs = kVecsPerHead / kLanes;  // per lane
  static constexpr int kGroups = kThreads / kLanes;
  static constexpr int kUnitsPerBlock = kGroups * kHeadsPerGroup;
  static_assert((kLanes & (kLanes - 1)) == 0, "a group must be a power of two lanes inside one warp");
};

template <typename T, int kHeadDim, int kHeadsPerGroup>
__global__ void __launch_bounds__(kThreads) qk_rmsnorm_kernel(const KernelArgs a) {
  using S = Shape<T, kHeadDim, kHeadsPerGroup>;
  constexpr int kPerVec = S::kPerVec, kLanes = S::kLanes, kVecs = S::kVecs, kGroups = S::kGroups;
  const int head_dim = kHeadDim ? kHeadDim : a.head_dim;
  const int lane = threadIdx.x % kLanes;
  const int group = threadIdx.x / kLanes;

  // The block's first unit as (token, head). Below 2^31 units (T * H; every practical
  // size) a multiply-high does it; beyond, a 64-bit division (slow, uniform per block).
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * S::kUnitsPerBlock;
  std::int64_t first_token;
  if (first < (std::int64_t{1} << 31)) {
    first_token = a.heads_div.div(static_cast<std::uint32_t>(first));
  } else {
    first_token = first / a.heads;
  }
  const int first_head = static_cast<int>(first - first_token * a.heads);

  const T* in = static_cast<const T*>(a.qkv);
  T* out = static_cast<T*>(a.out);
  const bool rotary = a.rotary_style != RotaryStyle::kNone;  // uniform over the grid
  constexpr int kWeightWords = kPerVec / 4;  // 16-byte words of kPerVec fp32 weights

  // Phase 1: every independent global load is issued before any math (data, weights,
  // position), so a cold call pays one memory latency, not several in a row.
  uint4 raw[kHeadsPerGroup][kVecs];
  uint4 wraw[kHeadsPerGroup][kVecs][kWeightWords];
  std::int64_t token[kHeadsPerGroup], pos[kHeadsPerGroup];
  int head[kHeadsPerGroup];
  bool valid[kHeadsPerGroup];
#pragma unroll
  for (int u = 0; u < kHeadsPerGroup; ++u) {
    const std::uint32_t r = static_cast<std::uint32_t>(first_head + group + u * kGroups);
    const std::uint32_t dt = a.heads_div.div(r);
    head[u] = static_cast<int>(r - dt * static_cast<std::uint32_t>(a.heads));
    token[u] = first_token + dt;
    valid[u] = token[u] < a.tokens;
    const T* src = in + token[u] * a.in_stride + static_cast<std::int64_t>(head[u]) * head_dim;
    const void* w = head[u] < a.num_q_heads ? a.q_weight : a.k_weight;
#pragma unroll
    for (int v = 0; v < kVecs; ++v) {
      const int e = (lane + v * kLanes) * kPerVec;
      raw[u][v] = make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int j = 0; j < kWeightWords; ++j) wraw[u][v][j] = make_uint4(0, 0, 0, 0);
      if (kHeadDim != 0 || e < head_dim) {
        if (valid[u]) raw[u][v] = *reinterpret_cast<const uint4*>(src + e);
        if (a.weight_dtype == DType::kF32) {
#pragma unroll
          for (int j = 0; j < kWeightWords; ++j) {
            wraw[u][v][j] = __ldg(reinterpret_cast<const uint4*>(static_cast<const float*>(w) + e) + j);
          }
        } else {
          wraw[u][v][0] = __ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(w) + e));
        }
      }
    }
    pos[u] = -1;
    if (rotary && valid[u]) {
      pos[u] = a.position_dtype == DType::kI32 ? static_cast<const std::int32_t*>(a.positions)[token[u]]
                                               : static_cast<const std::int64_t*>(a.positions)[token[u]];
    }
  }

  // Phase 2: RMS over the head (xor-shuffles inside the lane group), scale, weight.
  float y[kHeadsPerGroup][kVecs][kPerVec];
#pragma unroll
  for (int u = 0; u < kHeadsPerGroup; ++u) {
    float sum_sq = 0.f;
#pragma unroll
    for (int v = 0; v < kVecs; ++v) {
      Pack<T>::unpack(raw[u][v], y[u][v]);
#pragma unroll
      for (int i = 0; i < kPerVec; ++i) sum_sq = fmaf(y[u][v][i], y[u][v][i], sum_sq);
    }
#pragma unroll
    for (int offset = kLanes / 2; offset > 0; offset /= 2) sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, offset);
    const float inv_rms = rsqrtf(sum_sq * a.inv_head_dim + a.eps);
#pragma unroll
    for (int v = 0; v < kVecs; ++v) {
      float wv[kPerVec];
      if (a.weight_dtype == DType::kF32) {
#pragma unroll
        for (int j = 0; j < kWeightWords; ++j) Pack<float>::unpack(wraw[u][v][j], wv + 4 * j);
      } else {
        Pack<T>::unpack(wraw[u][v][0], wv);
      }
#pragma unroll
      for (int i = 0; i < kPerVec; ++i) y[u][v][i] = y[u][v][i] * inv_rms * wv[i];
    }
  }

  // Phase 3: rotary, applied per 4-lane chunk with that chunk's cos/sin (loaded here, late,
  // to keep registers for the plain path; the table is small and L2-resident). Vector loads
  // when rotary_dim % 8 == 0 and the cache is 16-byte aligned: then every 4-lane chunk lies
  // on one side of rd/2 and its table entries are contiguous. gptj pairs (2i, 2i+1) sit in
  // one 16-byte vector; neox pairs lane i with lane i + rd/2, usually in another thread, so
  // the normalised head goes through shared memory (one slot per unit; a group lies inside
  // one warp, so __syncwarp orders it).
  if (rotary) {
    const int rd = a.rotary_dim, half = rd / 2;
    const bool vec_ok = rd % 8 == 0 && (reinterpret_cast<std::uintptr_t>(a.cos_sin) & 15) == 0;
    const bool neox = a.rotary_style == RotaryStyle::kNeox;
    extern __shared__ float4 s_heads4[];  // neox: [kUnitsPerBlock][head_dim] floats
    float* s_heads = reinterpret_cast<float*>(s_heads4);
    if (neox) {
#pragma unroll
      for (int u = 0; u < kHeadsPerGroup; ++u) {
        float* slot = s_heads + (group * kHeadsPerGroup + u) * head_dim;
#pragma unroll
        for (int v = 0; v < kVecs; ++v) {
          const int e = (lane + v * kLanes) * kPerVec;
          if (kHeadDim != 0 || e < head_dim) {
#pragma unroll
            for (int q = 0; q < kPerVec; q += 4) {
              *reinterpret_cast<float4*>(slot + e + q) =
                  make_float4(y[u][v][q], y[u][v][q + 1], y[u][v][q + 2], y[u][v][q + 3]);
            }
          }
        }
      }
      __syncwarp();
    }
#pragma unroll
    for (int u = 0; u < kHeadsPerGroup; ++u) {
      const bool rotate = pos[u] >= 0 && pos[u] < a.max_position;  // else: documented, unrotated
      if (!rotate) continue;
      const float* cs = a.cos_sin + pos[u] * rd;
      const float* slot = s_heads + (group * kHeadsPerGroup + u) * head_dim;
#pragma unroll
      for (int v = 0; v < kVecs; ++v) {
        const int e = (lane + v * kLanes) * kPerVec;
#pragma unroll
        for (int q = 0; q < kPerVec; q += 4) {
          const int idx = e + q;  // first of 4 lanes
          if (idx >= rd) continue;
          float c[4] = {1.f, 1.f, 1.f, 1.f}, s[4] = {0.f, 0.f, 0.f, 0.f};
          if (vec_ok && neox) {
            const int i = idx < half ? idx : idx - half;
            const float4 cv = __ldg(reinterpret_cast<const float4*>(cs + i));
            const float4 sv = __ldg(reinterpret_cast<const float4*>(cs + half + i));
            c[0] = cv.x; c[1] = cv.y; c[2] = cv.z; c[3] = cv.w;
            s[0] = sv.x; s[1] = sv.y; s[2] = sv.z; s[3] = sv.w;
          } else if (vec_ok) {
            const int i = idx / 2;
            const float2 cv = __ldg(reinterpret_cast<const float2*>(cs + i));
            const float2 sv = __ldg(reinterpret_cast<const float2*>(cs + half + i));
            c[0] = c[1] = cv.x; c[2] = c[3] = cv.y;
            s[0] = s[1] = sv.x; s[2] = s[3] = sv.y;
          } else {
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              const int el = idx + k;
              if (el < rd) {
                const int i = neox ? (el < half ? el : el - half) : el / 2;
                c[k] = __ldg(cs + i);
                s[k] = __ldg(cs + half + i);
              }
            }
          }
          float* yq = &y[u][v][q];
          if (neox) {
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              const int el = idx + k;
              if (el < rd) {
                const float partner = el < half ? -slot[el + half] : slot[el - half];
                yq[k] = yq[k] * c[k] + partner * s[k];
              }
            }
          } else {  // rd even and idx even: pairs (0,1), (2,3) are both inside or both outside
#pragma unroll
            for (int k = 0; k < 4; k += 2) {
              const float x1 = yq[k], x2 = yq[k + 1];
              yq[k] = x1 * c[k] - x2 * s[k];
              yq[k + 1] = x2 * c[k + 1] + x1 * s[k + 1];
            }
          }
        }
      }
    }
  }

  // Phase 4: store.
#pragma unroll
  for (int u = 0; u < kHeadsPerGroup; ++u) {
    T* dst = out + token[u] * a.out_stride + static_cast<std::int64_t>(head[u]) * head_dim;
#pragma unroll
    for (int v = 0; v < kVecs; ++v) {
      const int e = (lane + v * kLanes) * kPerVec;
      if (valid[u] && (kHeadDim != 0 || e < head_dim)) {
        *reinterpret_cast<uint4*>(dst + e) = Pack<T>::pack(y[u][v]);
      }
    }
  }
}

template <typename T, int kHeadDim, int kHeadsPerGroup>
Status launch_qk_rmsnorm(const KernelArgs& a, cudaStream_t stream) {
  using S = Shape<T, kHeadDim, kHeadsPerGroup>;
  const std::int64_t units = a.tokens * a.heads;
  const std::int64_t blocks = (units + S::kUnitsPerBlock - 1) / S::kUnitsPerBlock;
  if (blocks > 0x7fffffff) {
    return invalid_argument("qkv: " + std::to_string(a.tokens) + " tokens x " + std::to_string(a.heads) +
                            " heads needs more than 2^31-1 thread blocks");
  }
  const std::size_t smem =
      a.rotary_style == RotaryStyle::kNeox ? sizeof(float) * S::kUnitsPerBlock * static_cast<std::size_t>(a.head_dim) : 0;
  qk_rmsnorm_kernel<T, kHeadDim, kHeadsPerGroup><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(a);
  FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("qk_rmsnorm_kernel");
  return Status::Ok();
}

// The instantiations that exist (one file per dtype): head_dim 64, 128, 256, and 0 = generic,
// each with 1 and 2 heads per lane group.
#define FUSEKIT_QK_RMSNORM_INSTANTIATIONS_ILP(EXTERN, T, H)                           \
  EXTERN template Status launch_qk_rmsnorm<T, 64, H>(const KernelArgs&, cudaStream_t);  \
  EXTERN template Status launch_qk_rmsnorm<T, 128, H>(const KernelArgs&, cudaStream_t); \
  EXTERN template Status launch_qk_rmsnorm<T, 256, H>(const KernelArgs&, cudaStream_t); \
  EXTERN template Status launch_qk_rmsnorm<T, 0, H>(const KernelArgs&, cudaStream_t);
#define FUSEKIT_QK_RMSNORM_INSTANTIATIONS(EXTERN, T)  \
  FUSEKIT_QK_RMSNORM_INSTANTIATIONS_ILP(EXTERN, T, 1) \
  FUSEKIT_QK_RMSNORM_INSTANTIATIONS_ILP(EXTERN, T, 2)

}  // namespace fusekit::cuda::qk_norm_detail
