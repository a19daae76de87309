// ref_forward (`cuda-ref`): an independent path to cross-check the fused kernels' precision,
// the way FastDeploy checks its Triton MoE against its CUTLASS one. Shares nothing with the
// fused path but the routing kernels.
//   1 route on the device (or take the caller's ids/weights), copy ids to the host (sync)
//   2 per chunk of tokens, on the host: rows grouped by expert (pairs in increasing order)
//   3 gather x rows -> xs [rows, H] bf16
//   4 per expert: H1 = xs_e . W1[e]^T          cublasGemmEx, bf16 in, fp32 out and compute
//   5 act = bf16(silu(gate) * up)              [rows, I]
//   6 per expert: Y = act_e . W2[e]^T          cublasGemmEx, fp32 out
//   7 out[t] = bf16( sum_j w[t, j] * Y[row of (t, j)] ), j in order, fp32
// Ids outside [0, E) contribute nothing. Token chunks bound the fp32 scratch (ref_workspace_size).
// cuBLAS: one handle per device, created on first use under a mutex and deliberately never
// destroyed (destroying it from a static destructor can run after the CUDA runtime has shut
// down); the mutex is held for the whole call since a handle's stream is per handle.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <vector>

#include "common/cuda_check.h"
#include "common/moe_gate_up.h"
#include "cuda/moe/device_utils.cuh"
#include "cuda/moe/kernels.h"
#include "cuda/moe/moe_cuda.h"

namespace fusekit::cuda_moe {
namespace {

constexpr std::size_t kRefChunkBudget = std::size_t(1) << 30;  // bytes of per-chunk scratch

struct RefLayout {
  std::size_t ids = 0, weights = 0, pair_of_row = 0, row_of_pair = 0, xs = 0, h1 = 0, act = 0, y = 0, total = 0;
  std::int64_t chunk_tokens = 0;
};

RefLayout ref_layout(const MoeConfig& c) {
  RefLayout l;
  const std::int64_t k = c.top_k, H = c.hidden, I = c.intermediate;
  const std::size_t per_token = static_cast<std::size_t>(k) * (8 + 2 * H + 4 * 2 * I + 2 * I + 4 * H);
  l.chunk_tokens = std::max<std::int64_t>(1, std::min<std::int64_t>(c.max_tokens, kRefChunkBudget / per_token));
  const std::int64_t rows = l.chunk_tokens * k;
  std::size_t at = 0;
  auto take = [&at](std::size_t bytes) {
    const std::size_t here = at;
    at += (bytes + 255) / 256 * 256;
    return here;
  };
  l.ids = take(4 * static_cast<std::size_t>(c.max_tokens * k));
  l.weights = take(4 * static_cast<std::size_t>(c.max_tokens * k));
  l.pair_of_row = take(4 * static_cast<std::size_t>(rows));
  l.row_of_pair = take(4 * static_cast<std::size_t>(rows));
  l.xs = take(2 * static_cast<std::size_t>(rows) * H);
  l.h1 = take(4 * static_cast<std::size_t>(rows) * 2 * I);
  l.act = take(2 * static_cast<std::size_t>(rows) * I);
  l.y = take(4 * static_cast<std::size_t>(rows) * H);
  l.total = at;
  return l;
}

__global__ void ref_gather_rows(const __nv_bfloat16* x, std::int64_t x_stride, const std::int32_t* pair_of_row,
                                std::int64_t first_pair, int top_k, std::int64_t rows, std::int64_t H,
                                __nv_bfloat16* xs) {
  const std::int64_t total = rows * H;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / H, h = i % H;
    const std::int64_t t = (first_pair + pair_of_row[r]) / top_k;
    xs[i] = x[t * x_stride + h];
  }
}

__global__ void ref_swiglu(const float* h1, std::int64_t rows, std::int64_t I, MoeGateUpOrder order,
                           __nv_bfloat16* act) {
  const std::int64_t total = rows * I;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / I, c = i % I;
    const float g = h1[r * 2 * I + w1_row(order, I, c, false)], u = h1[r * 2 * I + w1_row(order, I, c, true)];
    act[i] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
  }
}

__global__ void ref_combine(const float* y, const std::int32_t* row_of_pair, const float* weights,
                            std::int64_t first_token, std::int64_t tokens, int top_k, std::int64_t H,
                            __nv_bfloat16* out, std::int64_t out_stride) {
  const std::int64_t total = tokens * H;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t tl = i / H, h = i % H;
    float s = 0.f;
    for (int j = 0; j < top_k; ++j) {
      const std::int64_t local_pair = tl * top_k + j;
      const int r = row_of_pair[local_pair];
      if (r >= 0) s += weights[(first_token + tl) * top_k + j] * y[static_cast<std::int64_t>(r) * H + h];
    }
    out[(first_token + tl) * out_stride + h] = __float2bfloat16(s);
  }
}

unsigned grid_for(std::int64_t n) {
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>((n + 255) / 256, 65536)));
}

std::mutex g_cublas_mutex;

Status cublas_handle_for_current_device(cublasHandle_t* handle) {
  static std::map<int, cublasHandle_t> handles;  // never destroyed; see the file comment
  int device = 0;
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  auto it = handles.find(device);
  if (it == handles.end()) {
    cublasHandle_t h = nullptr;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return Status(StatusCode::kCudaError, "cuda-ref: cublasCreate failed");
    it = handles.emplace(device, h).first;
  }
  *handle = it->second;
  return Status::Ok();
}

Status cublas_ok(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return Status(StatusCode::kCudaError, std::string("cuda-ref: ") + what + " failed with cuBLAS status " +
                                            std::to_string(static_cast<int>(s)));
}

// Row-major C[rows, n] (fp32) = A[rows, kdim] (bf16) . W^T where W is [n, kdim] (NK) or
// [kdim, n] (KN). cuBLAS is column-major: C^T = op(W) . A^T.
Status gemm_rows(cublasHandle_t h, MoeWeightLayout layout, const __nv_bfloat16* w, const __nv_bfloat16* a,
                 float* c, std::int64_t rows, std::int64_t n, std::int64_t kdim) {
  const float one = 1.f, zero = 0.f;
  const bool nk = layout == MoeWeightLayout::kNK;
  return cublas_ok(cublasGemmEx(h, nk ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n),
                                static_cast<int>(rows), static_cast<int>(kdim), &one, w, CUDA_R_16BF,
                                static_cast<int>(nk ? kdim : n), a, CUDA_R_16BF, static_cast<int>(kdim), &zero, c,
                                CUDA_R_32F, static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   "cublasGemmEx");
}

}  // namespace

std::size_t ref_workspace_size(const MoeConfig& config) { return ref_layout(config).total; }

Status ref_forward(const MoeLayer& layer, const TensorView& x, const MoeRouterInput* router, const MoeRouted* routed,
                   const TensorView& out, const MoeWorkspace& workspace, cudaStream_t stream) {
  const MoeConfig& c = layer.config;
  const std::int64_t T = x.shape[0], k = c.top_k, H = c.hidden, I = c.intermediate, E = c.num_experts;
  if (T == 0) return Status::Ok();
  const RefLayout l = ref_layout(c);
  if (workspace.bytes < l.total) {
    return invalid_argument("workspace: expected at least " + std::to_string(l.total) + " bytes, got " +
                            std::to_string(workspace.bytes));
  }
  char* ws = static_cast<char*>(workspace.data);
  const std::int32_t* ids_dev;
  const float* weights_dev;
  if (routed != nullptr) {
    ids_dev = static_cast<const std::int32_t*>(routed->topk_ids.data);
    weights_dev = static_cast<const float*>(routed->topk_weights.data);
  } else {
    MoeRouted mine;
    mine.topk_ids = TensorView::contiguous(ws + l.ids, DType::kI32, {T, k}, DeviceType::kCUDA, x.device_id);
    mine.topk_weights = TensorView::contiguous(ws + l.weights, DType::kF32, {T, k}, DeviceType::kCUDA, x.device_id);
    FUSEKIT_RETURN_IF_ERROR(route(c, *router, mine, stream));
    ids_dev = reinterpret_cast<const std::int32_t*>(ws + l.ids);
    weights_dev = reinterpret_cast<const float*>(ws + l.weights);
  }
  std::vector<std::int32_t> ids(static_cast<std::size_t>(T * k));
  FUSEKIT_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(ids.data(), ids_dev, ids.size() * sizeof(std::int32_t), cudaMemcpyDeviceToHost, stream));
  FUSEKIT_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));

  std::lock_guard<std::mutex> lock(g_cublas_mutex);
  cublasHandle_t handle = nullptr;
  FUSEKIT_RETURN_IF_ERROR(cublas_handle_for_current_device(&handle));
  FUSEKIT_RETURN_IF_ERROR(cublas_ok(cublasSetStream(handle, stream), "cublasSetStream"));

  auto* pair_of_row_dev = reinterpret_cast<std::int32_t*>(ws + l.pair_of_row);
  auto* row_of_pair_dev = reinterpret_cast<std::int32_t*>(ws + l.row_of_pair);
  auto* xs = reinterpret_cast<__nv_bfloat16*>(ws + l.xs);
  auto* h1 = reinterpret_cast<float*>(ws + l.h1);
  auto* act = reinterpret_cast<__nv_bfloat16*>(ws + l.act);
  auto* y = reinterpret_cast<float*>(ws + l.y);
  const auto* w1 = static_cast<const __nv_bfloat16*>(layer.weights.w1.data);
  const auto* w2 = static_cast<const __nv_bfloat16*>(layer.weights.w2.data);
  const auto* xp = static_cast<const __nv_bfloat16*>(x.data);

  for (std::int64_t t0 = 0; t0 < T; t0 += l.chunk_tokens) {
    const std::int64_t tc = std::min(l.chunk_tokens, T - t0);
    const std::int64_t first_pair = t0 * k;
    std::vector<std::int64_t> count(E + 1, 0);
    for (std::int64_t p = 0; p < tc * k; ++p) {
      const int e = ids[first_pair + p];
      if (e >= 0 && e < E) ++count[e + 1];
    }
    for (std::int64_t e = 0; e < E; ++e) count[e + 1] += count[e];
    const std::int64_t rows = count[E];
    std::vector<std::int32_t> pair_of_row(std::max<std::int64_t>(rows, 1)), row_of_pair(tc * k, -1);
    std::vector<std::int64_t> cursor(count.begin(), count.end() - 1);
    for (std::int64_t p = 0; p < tc * k; ++p) {
      const int e = ids[first_pair + p];
      if (e < 0 || e >= E) continue;
      const std::int64_t r = cursor[e]++;
      pair_of_row[r] = static_cast<std::int32_t>(p);
      row_of_pair[p] = static_cast<std::int32_t>(r);
    }
    FUSEKIT_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(pair_of_row_dev, pair_of_row.data(), 4 * pair_of_row.size(),
                                                 cudaMemcpyHostToDevice, stream));
    FUSEKIT_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(row_of_pair_dev, row_of_pair.data(), 4 * row_of_pair.size(),
                                                 cudaMemcpyHostToDevice, stream));
    if (rows > 0) {
      ref_gather_rows<<<grid_for(rows * H), 256, 0, stream>>>(xp, x.strides[0], pair_of_row_dev, first_pair,
                                                               static_cast<int>(k), rows, H, xs);
      FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("ref_gather_rows");
      for (std::int64_t e = 0; e < E; ++e) {
        const std::int64_t n_e = count[e + 1] - count[e];
        if (n_e == 0) continue;
        FUSEKIT_RETURN_IF_ERROR(gemm_rows(handle, c.layout, w1 + e * 2 * I * H, xs + count[e] * H, h1 + count[e] * 2 * I,
                                          n_e, 2 * I, H));
      }
      ref_swiglu<<<grid_for(rows * I), 256, 0, stream>>>(h1, rows, I, c.gate_up_order, act);
      FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("ref_swiglu");
      for (std::int64_t e = 0; e < E; ++e) {
        const std::int64_t n_e = count[e + 1] - count[e];
        if (n_e == 0) continue;
        FUSEKIT_RETURN_IF_ERROR(
            gemm_rows(handle, c.layout, w2 + e * H * I, act + count[e] * I, y + count[e] * H, n_e, H, I));
      }
    }
    ref_combine<<<grid_for(tc * H), 256, 0, stream>>>(y, row_of_pair_dev, weights_dev, t0, tc, static_cast<int>(k), H,
                                                      static_cast<__nv_bfloat16*>(out.data), out.strides[0]);
    FUSEKIT_CUDA_RETURN_IF_LAUNCH_FAILED("ref_combine");
    // The host vectors feeding the async copies die at the end of this iteration.
    FUSEKIT_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  }
  return Status::Ok();
}

}  // namespace fusekit::cuda_moe
