#include "fusekit/tensor.h"

#include <sstream>

namespace fusekit {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return "bf16";
    case DType::kF16: return "fp16";
    case DType::kF32: return "fp32";
    case DType::kI32: return "int32";
    case DType::kI64: return "int64";
  }
  return "?";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
    case DType::kF16: return 2;
    case DType::kF32:
    case DType::kI32: return 4;
    case DType::kI64: return 8;
  }
  return 0;
}

TensorView TensorView::contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                                  DeviceType device, int device_id) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.rank = static_cast<int>(shape.size());
  int i = 0;
  for (std::int64_t s : shape) t.shape[i++] = s;
  std::int64_t stride = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.strides[d] = stride;
    stride *= t.shape[d];
  }
  t.device = device;
  t.device_id = device_id;
  return t;
}

std::int64_t TensorView::numel() const {
  std::int64_t n = 1;
  for (int d = 0; d < rank; ++d) n *= shape[d];
  return n;
}

bool TensorView::is_contiguous() const {
  std::int64_t expected = 1;
  for (int d = rank - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

bool TensorView::has_contiguous_rows() const {
  if (rank == 0) return true;
  if (shape[rank - 1] > 1 && strides[rank - 1] != 1) return false;
  // Outer dims must not overlap the row they contain.
  std::int64_t span = shape[rank - 1];
  for (int d = rank - 2; d >= 0; --d) {
    if (shape[d] > 1 && strides[d] < span) return false;
    span = strides[d] * shape[d];
  }
  return true;
}

std::string TensorView::describe() const {
  std::ostringstream os;
  os << dtype_name(dtype) << "[";
  for (int d = 0; d < rank; ++d) os << (d ? ", " : "") << shape[d];
  os << "]";
  if (!is_contiguous()) {
    os << " (strides [";
    for (int d = 0; d < rank; ++d) os << (d ? ", " : "") << strides[d];
    os << "])";
  }
  os << " on " << (device == DeviceType::kCPU ? "cpu" : "cuda:" + std::to_string(device_id));
  return os.str();
}

}  // namespace fusekit
