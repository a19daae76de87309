// fusekit/tensor.h — the one non-owning tensor view at every public entry point.
//
// A TensorView is a pointer plus dtype, shape, strides (in elements) and device. It owns
// nothing and never allocates. Strides may exceed the packed size (padded rows) where an
// entry point says so; every entry point states which strides it accepts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace fusekit {

enum class DType { kBF16, kF16, kF32, kI32, kI64 };
enum class DeviceType { kCPU, kCUDA };

const char* dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);

struct TensorView {
  static constexpr int kMaxRank = 4;

  void* data = nullptr;
  DType dtype = DType::kF32;
  int rank = 0;
  std::int64_t shape[kMaxRank] = {0, 0, 0, 0};
  std::int64_t strides[kMaxRank] = {0, 0, 0, 0};  // in elements
  DeviceType device = DeviceType::kCPU;
  int device_id = 0;

  // A packed (row-major, contiguous) view.
  static TensorView contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                               DeviceType device = DeviceType::kCPU, int device_id = 0);

  bool empty_view() const { return rank == 0 && data == nullptr; }
  std::int64_t numel() const;
  bool is_contiguous() const;
  // Rows (last dimension) contiguous; outer strides may be padded.
  bool has_contiguous_rows() const;
  // "bf16[4096, 5120] (strides [6144, 1]) on cuda:0" — used in error messages.
  std::string describe() const;
};

}  // namespace fusekit
