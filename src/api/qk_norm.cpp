// qk_rmsnorm: validate every argument, then hand the call to the backend of the tensors'
// device. The error texts are asserted by tests/api/qk_norm_errors_test.cpp.
#include <cstdio>
#include <string>

#include "api/validate.h"
#include "cpu/qk_norm_cpu.h"
#include "fusekit/qk_norm.h"

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>

#include "cuda/qk_norm/qk_norm_cuda.h"
#endif

namespace fusekit {

namespace {

constexpr std::int64_t kMaxHeadDim = 512;
constexpr std::int64_t kMaxHeads = 65536;

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

bool valid_head_dim(std::int64_t d) { return d >= 8 && d <= kMaxHeadDim && d % 8 == 0; }

Status check_params(const QkNormParams& p) {
  if (p.num_q_heads < 1) {
    return invalid_argument("params.num_q_heads: expected >= 1, got " + std::to_string(p.num_q_heads));
  }
  if (p.num_kv_heads < 1) {
    return invalid_argument("params.num_kv_heads: expected >= 1, got " + std::to_string(p.num_kv_heads));
  }
  if (p.num_q_heads + p.num_kv_heads > kMaxHeads) {
    return invalid_argument("params.num_q_heads + params.num_kv_heads: expected <= 65536, got " +
                            std::to_string(p.num_q_heads + p.num_kv_heads));
  }
  if (!valid_head_dim(p.head_dim)) {
    return invalid_argument("params.head_dim: expected a multiple of 8 in [8, 512] (fast paths 64, 128, 256), got " +
                            std::to_string(p.head_dim));
  }
  if (p.v_head_dim != 0 && !valid_head_dim(p.v_head_dim)) {
    return invalid_argument("params.v_head_dim: expected 0 (= head_dim) or a multiple of 8 in [8, 512], got " +
                            std::to_string(p.v_head_dim));
  }
  if (!(p.eps > 0.f)) return invalid_argument("params.eps: expected > 0, got " + num(p.eps));
  const QkRotary& r = p.rotary;
  if (r.style != RotaryStyle::kNone && (r.rotary_dim < 2 || r.rotary_dim > p.head_dim || r.rotary_dim % 2 != 0)) {
    return invalid_argument("params.rotary.rotary_dim: expected an even number in [2, head_dim = " +
                            std::to_string(p.head_dim) + "], got " + std::to_string(r.rotary_dim));
  }
  return Status::Ok();
}

// Rows start 16-byte aligned: the pointer and the row stride in bytes.
Status expect_aligned_rows(const TensorView& t, const char* name) {
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(t, name, 16));
  const std::int64_t stride_bytes = t.strides[0] * static_cast<std::int64_t>(dtype_size(t.dtype));
  if (t.shape[0] > 1 && stride_bytes % 16 != 0) {
    return invalid_argument(std::string(name) + ": row stride " + std::to_string(t.strides[0]) + " elements (" +
                            std::to_string(stride_bytes) + " bytes) is not a multiple of 16 bytes (" + t.describe() +
                            ")");
  }
  return Status::Ok();
}

Status expect_no_overlap(const TensorView& out, const TensorView& other, const char* other_name) {
  if (ranges_overlap(byte_range(out), byte_range(other))) {
    return invalid_argument(std::string("out: overlaps ") + other_name + " (out " + out.describe() + ", " +
                            other_name + " " + other.describe() + ")");
  }
  return Status::Ok();
}

Status validate(const TensorView& qkv, const TensorView& q_weight, const TensorView& k_weight, const TensorView& out,
                const QkNormParams& p) {
  FUSEKIT_RETURN_IF_ERROR(check_params(p));
  const std::int64_t d = p.head_dim;
  const std::int64_t dv = p.v_head_dim != 0 ? p.v_head_dim : d;
  const std::int64_t width = (p.num_q_heads + p.num_kv_heads) * d + p.num_kv_heads * dv;
  const std::string width_text = "[T, (Hq + Hkv)*D + Hkv*Dv] = [T, " + std::to_string(width) + "]";
  const QkRotary& r = p.rotary;
  const bool rotary = r.style != RotaryStyle::kNone;

  // Presence, dtypes, ranks and shapes.
  FUSEKIT_RETURN_IF_ERROR(expect_present(qkv, "qkv"));
  FUSEKIT_RETURN_IF_ERROR(expect_dtype(qkv, "qkv", {DType::kBF16, DType::kF16, DType::kF32}));
  FUSEKIT_RETURN_IF_ERROR(expect_rank(qkv, "qkv", 2));
  FUSEKIT_RETURN_IF_ERROR(expect_shape(qkv, "qkv", {kAnyDim, width}, width_text));
  FUSEKIT_RETURN_IF_ERROR(expect_contiguous_rows(qkv, "qkv"));
  const std::int64_t tokens = qkv.shape[0];

  FUSEKIT_RETURN_IF_ERROR(expect_present(out, "out"));
  if (out.dtype != qkv.dtype) {
    return invalid_argument(std::string("out: expected dtype ") + dtype_name(qkv.dtype) + " (the dtype of qkv), got " +
                            out.describe());
  }
  FUSEKIT_RETURN_IF_ERROR(expect_shape(out, "out", {tokens, width},
                                       "[" + std::to_string(tokens) + ", " + std::to_string(width) + "] (the shape of qkv)"));
  FUSEKIT_RETURN_IF_ERROR(expect_contiguous_rows(out, "out"));

  const std::string d_text = "[head_dim] = [" + std::to_string(d) + "]";
  for (const auto& [w, name] : {std::pair<const TensorView*, const char*>{&q_weight, "q_weight"}, {&k_weight, "k_weight"}}) {
    FUSEKIT_RETURN_IF_ERROR(expect_present(*w, name));
    if (qkv.dtype == DType::kF32) {
      FUSEKIT_RETURN_IF_ERROR(expect_dtype(*w, name, {DType::kF32}));
    } else {
      FUSEKIT_RETURN_IF_ERROR(expect_dtype(*w, name, {qkv.dtype, DType::kF32}));
    }
    FUSEKIT_RETURN_IF_ERROR(expect_shape(*w, name, {d}, d_text));
    FUSEKIT_RETURN_IF_ERROR(expect_contiguous(*w, name));
  }
  if (k_weight.dtype != q_weight.dtype) {
    return invalid_argument(std::string("k_weight: expected the dtype of q_weight (") + dtype_name(q_weight.dtype) +
                            "), got " + k_weight.describe());
  }

  if (rotary) {
    FUSEKIT_RETURN_IF_ERROR(expect_present(r.positions, "params.rotary.positions"));
    FUSEKIT_RETURN_IF_ERROR(expect_dtype(r.positions, "params.rotary.positions", {DType::kI32, DType::kI64}));
    FUSEKIT_RETURN_IF_ERROR(
        expect_shape(r.positions, "params.rotary.positions", {tokens}, "[T] = [" + std::to_string(tokens) + "]"));
    FUSEKIT_RETURN_IF_ERROR(expect_contiguous(r.positions, "params.rotary.positions"));
    FUSEKIT_RETURN_IF_ERROR(expect_present(r.cos_sin_cache, "params.rotary.cos_sin_cache"));
    FUSEKIT_RETURN_IF_ERROR(expect_dtype(r.cos_sin_cache, "params.rotary.cos_sin_cache", {DType::kF32}));
    FUSEKIT_RETURN_IF_ERROR(expect_shape(r.cos_sin_cache, "params.rotary.cos_sin_cache", {kAnyDim, r.rotary_dim},
                                         "[max_position, rotary_dim] = [max_position, " +
                                             std::to_string(r.rotary_dim) + "]"));
    FUSEKIT_RETURN_IF_ERROR(expect_contiguous(r.cos_sin_cache, "params.rotary.cos_sin_cache"));
  }

  // Devices: everything where qkv is (for CUDA, really device memory on that device).
  FUSEKIT_RETURN_IF_ERROR(expect_device(qkv, "qkv", qkv.device, qkv.device_id));
  FUSEKIT_RETURN_IF_ERROR(expect_device(out, "out", qkv.device, qkv.device_id));
  FUSEKIT_RETURN_IF_ERROR(expect_device(q_weight, "q_weight", qkv.device, qkv.device_id));
  FUSEKIT_RETURN_IF_ERROR(expect_device(k_weight, "k_weight", qkv.device, qkv.device_id));
  if (rotary) {
    FUSEKIT_RETURN_IF_ERROR(expect_device(r.positions, "params.rotary.positions", qkv.device, qkv.device_id));
    FUSEKIT_RETURN_IF_ERROR(expect_device(r.cos_sin_cache, "params.rotary.cos_sin_cache", qkv.device, qkv.device_id));
  }

  // 16-byte vector accesses.
  FUSEKIT_RETURN_IF_ERROR(expect_aligned_rows(qkv, "qkv"));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned_rows(out, "out"));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(q_weight, "q_weight", 16));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(k_weight, "k_weight", 16));

  // Aliasing: out is qkv itself, or disjoint from every input.
  const bool in_place = out.data == qkv.data && (out.strides[0] == qkv.strides[0] || tokens <= 1);
  if (!in_place && ranges_overlap(byte_range(out), byte_range(qkv))) {
    return invalid_argument("out: partially overlaps qkv; pass qkv itself (same pointer and strides) for in place, or a "
                            "disjoint tensor (out " + out.describe() + ", qkv " + qkv.describe() + ")");
  }
  FUSEKIT_RETURN_IF_ERROR(expect_no_overlap(out, q_weight, "q_weight"));
  FUSEKIT_RETURN_IF_ERROR(expect_no_overlap(out, k_weight, "k_weight"));
  if (rotary) {
    FUSEKIT_RETURN_IF_ERROR(expect_no_overlap(out, r.positions, "params.rotary.positions"));
    FUSEKIT_RETURN_IF_ERROR(expect_no_overlap(out, r.cos_sin_cache, "params.rotary.cos_sin_cache"));
  }
  return Status::Ok();
}

}  // namespace

Status qk_rmsnorm(const TensorView& qkv, const TensorView& q_weight, const TensorView& k_weight, const TensorView& out,
                  const QkNormParams& params, void* stream) {
  FUSEKIT_RETURN_IF_ERROR(validate(qkv, q_weight, k_weight, out, params));
  if (qkv.device == DeviceType::kCPU) {
    if (qkv.shape[0] == 0) return Status::Ok();
    return cpu::qk_rmsnorm_cpu(qkv, q_weight, k_weight, out, params);
  }
#if FUSEKIT_WITH_CUDA
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess || current != qkv.device_id) {
    cudaGetLastError();
    return invalid_argument("qkv: is on cuda:" + std::to_string(qkv.device_id) + " but the current CUDA device is " +
                            (current < 0 ? std::string("unavailable") : "cuda:" + std::to_string(current)) +
                            "; call cudaSetDevice first");
  }
  if (qkv.shape[0] == 0) return Status::Ok();
  const QkRotary& r = params.rotary;
  cuda::QkNormProblem p;
  p.qkv = qkv.data;
  p.out = out.data;
  p.qkv_row_stride = qkv.strides[0];
  p.out_row_stride = out.strides[0];
  p.tokens = qkv.shape[0];
  p.num_q_heads = static_cast<int>(params.num_q_heads);
  p.num_kv_heads = static_cast<int>(params.num_kv_heads);
  p.head_dim = static_cast<int>(params.head_dim);
  p.v_head_dim = static_cast<int>(params.v_head_dim != 0 ? params.v_head_dim : params.head_dim);
  p.dtype = qkv.dtype;
  p.q_weight = q_weight.data;
  p.k_weight = k_weight.data;
  p.weight_dtype = q_weight.dtype;
  p.eps = params.eps;
  p.rotary_style = r.style;
  if (r.style != RotaryStyle::kNone) {
    p.rotary_dim = static_cast<int>(r.rotary_dim);
    p.positions = r.positions.data;
    p.position_dtype = r.positions.dtype;
    p.cos_sin = static_cast<const float*>(r.cos_sin_cache.data);
    p.max_position = r.cos_sin_cache.shape[0];
  }
  return cuda::qk_rmsnorm_cuda(p, stream);
#else
  (void)stream;
  return unsupported("qkv: " + qkv.describe() + " is on a CUDA device but this build of fusekit has no CUDA backend");
#endif
}

}  // namespace fusekit
