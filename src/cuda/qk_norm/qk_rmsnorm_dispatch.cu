// The one place that maps runtime (dtype, T*H, head_dim) to the compiled kernels, and the
// out-of-place V copy. Everything here is asynchronous on the caller's stream.
#include <string>

#include "cuda/qk_norm/qk_norm_cuda.h"
#include "cuda/qk_norm/qk_rmsnorm_kernel.cuh"

namespace fusekit::cuda {

namespace qk_norm_detail {
FUSEKIT_QK_RMSNORM_INSTANTIATIONS(extern, __nv_bfloat16)
FUSEKIT_QK_RMSNORM_INSTANTIATIONS(extern, __half)
FUSEKIT_QK_RMSNORM_INSTANTIATIONS(extern, float)
}  // namespace qk_norm_detail

namespace {

using qk_norm_detail::KernelArgs;

template <typename T, int kHeadsPerGroup>
Status dispatch_head_dim(const KernelArgs& a, cudaStream_t stream) {
  switch (a.head_dim) {
    case 64: return qk_norm_detail::launch_qk_rmsnorm<T, 64, kHeadsPerGroup>(a, stream);
    case 128: return qk_norm_detail::launch_qk_rmsnorm<T, 128, kHeadsPerGroup>(a, stream);
    case 256: return qk_norm_detail::launch_qk_rmsnorm<T, 256, kHeadsPerGroup>(a, stream);
    default:
      if (a.head_dim >= 8 && a.head_dim <= qk_norm_detail::kMaxHeadDim && a.head_dim % 8 == 0) {
        return qk_norm_detail::launch_qk_rmsnorm<T, 0, kHeadsPerGroup>(a, stream);
      }
      return unsupported("params.head_dim: supported are 64, 128, 256 (fast paths) and any multiple of 8 in [8, 512], got " +
                         std::to_string(a.head_dim));
  }
}

template <typename T>
Status dispatch_heads_per_group(const KernelArgs& a, cudaStream_t stream) {
  if (a.tokens * a.heads >= qk_norm_detail::kTwoHeadsMinUnits) return dispatch_head_dim<T, 2>(a, stream);
  return dispatch_head_dim<T, 1>(a, stream);
}

}  // namespace

Status qk_rmsnorm_cuda(const QkNormProblem& p, void* stream_ptr) {
  if (p.tokens == 0) return Status::Ok();
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const std::size_t esize = dtype_size(p.dtype);
  if (p.out != p.qkv) {
    const std::int64_t v_begin = static_cast<std::int64_t>(p.num_q_heads + p.num_kv_heads) * p.head_dim;
    FUSEKIT_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(
        static_cast<char*>(p.out) + v_begin * esize, p.out_row_stride * esize,
        static_cast<const char*>(p.qkv) + v_begin * esize, p.qkv_row_stride * esize,
        static_cast<std::size_t>(p.num_kv_heads) * p.v_head_dim * esize, static_cast<std::size_t>(p.tokens),
        cudaMemcpyDeviceToDevice, stream));
  }
  KernelArgs a{};
  a.qkv = p.qkv;
  a.out = p.out;
  a.in_stride = p.qkv_row_stride;
  a.out_stride = p.out_row_stride;
  a.tokens = p.tokens;
  a.num_q_heads = p.num_q_heads;
  a.heads = p.num_q_heads + p.num_kv_heads;
  a.head_dim = p.head_dim;
  a.heads_div = qk_norm_detail::FastDiv::make(static_cast<std::uint32_t>(a.heads));
  a.q_weight = p.q_weight;
  a.k_weight = p.k_weight;
  a.weight_dtype = p.weight_dtype;
  a.eps = p.eps;
  a.inv_head_dim = 1.0f / static_cast<float>(p.head_dim);
  a.rotary_style = p.rotary_style;
  a.rotary_dim = p.rotary_dim;
  a.positions = p.positions;
  a.position_dtype = p.position_dtype;
  a.cos_sin = p.cos_sin;
  a.max_position = p.max_position;
  switch (p.dtype) {
    case DType::kBF16: return dispatch_heads_per_group<__nv_bfloat16>(a, stream);
    case DType::kF16: return dispatch_heads_per_group<__half>(a, stream);
    case DType::kF32: return dispatch_heads_per_group<float>(a, stream);
    default:
      return unsupported(std::string("qkv: supported dtypes are bf16, fp16 and fp32, got ") + dtype_name(p.dtype));
  }
}

}  // namespace fusekit::cuda
