#include "api/validate.h"

#include <sstream>

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace fusekit {

std::string dtype_list(std::initializer_list<DType> allowed) {
  std::string out;
  std::size_t i = 0;
  for (DType d : allowed) {
    if (i > 0) out += (i + 1 == allowed.size()) ? " or " : ", ";
    out += dtype_name(d);
    ++i;
  }
  return out;
}

std::string shape_string(const TensorView& t) {
  std::ostringstream os;
  os << "[";
  for (int d = 0; d < t.rank; ++d) os << (d ? ", " : "") << t.shape[d];
  os << "]";
  return os.str();
}

Status expect_present(const TensorView& t, const char* name) {
  if (t.data == nullptr && t.numel() != 0) {
    return invalid_argument(std::string(name) + ": null data pointer for " + t.describe());
  }
  return Status::Ok();
}

Status expect_dtype(const TensorView& t, const char* name, std::initializer_list<DType> allowed) {
  for (DType d : allowed) {
    if (t.dtype == d) return Status::Ok();
  }
  return invalid_argument(std::string(name) + ": expected dtype " + dtype_list(allowed) + ", got " +
                          t.describe());
}

Status expect_rank(const TensorView& t, const char* name, int rank) {
  if (t.rank == rank) return Status::Ok();
  return invalid_argument(std::string(name) + ": expected rank " + std::to_string(rank) + ", got " +
                          t.describe());
}

Status expect_shape(const TensorView& t, const char* name, std::initializer_list<std::int64_t> dims,
                    const std::string& expected_text) {
  bool match = t.rank == static_cast<int>(dims.size());
  int d = 0;
  for (std::int64_t want : dims) {
    if (!match) break;
    if (want != kAnyDim && t.shape[d] != want) match = false;
    ++d;
  }
  if (match) return Status::Ok();
  return invalid_argument(std::string(name) + ": expected shape " + expected_text + ", got " +
                          t.describe());
}

Status expect_contiguous(const TensorView& t, const char* name) {
  if (t.is_contiguous()) return Status::Ok();
  return invalid_argument(std::string(name) + ": expected a contiguous tensor, got " + t.describe());
}

Status expect_contiguous_rows(const TensorView& t, const char* name) {
  if (t.has_contiguous_rows()) return Status::Ok();
  return invalid_argument(std::string(name) + ": expected contiguous rows (last stride 1), got " +
                          t.describe());
}

Status expect_aligned(const TensorView& t, const char* name, std::size_t bytes) {
  const auto addr = reinterpret_cast<std::uintptr_t>(t.data);
  if (addr % bytes == 0) return Status::Ok();
  std::ostringstream os;
  os << name << ": data pointer " << t.data << " is not " << bytes << "-byte aligned (" << t.describe()
     << ")";
  return invalid_argument(os.str());
}

Status expect_device(const TensorView& t, const char* name, DeviceType device, int device_id) {
  const char* want = device == DeviceType::kCPU ? "cpu" : "cuda";
  if (t.device != device || (device == DeviceType::kCUDA && t.device_id != device_id)) {
    std::string where = device == DeviceType::kCPU ? "cpu" : "cuda:" + std::to_string(device_id);
    return invalid_argument(std::string(name) + ": expected a tensor on " + where + ", got " +
                            t.describe());
  }
  (void)want;
#if FUSEKIT_WITH_CUDA
  if (device == DeviceType::kCUDA && t.data != nullptr) {
    cudaPointerAttributes attr{};
    cudaError_t err = cudaPointerGetAttributes(&attr, t.data);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error this call may leave
      return invalid_argument(std::string(name) + ": pointer is not CUDA memory (" + t.describe() +
                              "): " + cudaGetErrorString(err));
    }
    const bool device_memory = attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
    if (!device_memory) {
      return invalid_argument(std::string(name) + ": tensor says " + t.describe() +
                              " but its pointer is host memory; pass device memory");
    }
    if (attr.type == cudaMemoryTypeDevice && attr.device != device_id) {
      return invalid_argument(std::string(name) + ": pointer lives on cuda:" + std::to_string(attr.device) +
                              " but the tensor says " + t.describe());
    }
  }
#endif
  return Status::Ok();
}

ByteRange byte_range(const TensorView& t) {
  ByteRange r;
  if (t.data == nullptr || t.numel() == 0) return r;
  std::int64_t last = 0;
  for (int d = 0; d < t.rank; ++d) last += (t.shape[d] - 1) * t.strides[d];
  r.begin = reinterpret_cast<std::uintptr_t>(t.data);
  r.end = r.begin + static_cast<std::uintptr_t>((last + 1) * static_cast<std::int64_t>(dtype_size(t.dtype)));
  return r;
}

bool ranges_overlap(const ByteRange& a, const ByteRange& b) {
  if (a.begin == a.end || b.begin == b.end) return false;
  return a.begin < b.end && b.begin < a.end;
}

}  // namespace fusekit
