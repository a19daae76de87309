#include "support/test_support.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

namespace fusekit::testing {

std::uint64_t process_seed() {
  static const std::uint64_t seed = [] {
    std::uint64_t s;
    if (const char* env = std::getenv("FUSEKIT_TEST_SEED")) {
      s = std::strtoull(env, nullptr, 0);
    } else {
      s = (static_cast<std::uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
    }
    std::printf("[fusekit] FUSEKIT_TEST_SEED=%llu\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

std::mt19937_64 make_rng() {
  std::string name = "fusekit";
  if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
    name = std::string(info->test_suite_name()) + "." + info->name();
  }
  return std::mt19937_64(process_seed() ^ std::hash<std::string>{}(name));
}

std::vector<float> random_floats(std::mt19937_64& rng, std::size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<std::uint16_t> to_bits(const std::vector<float>& v, DType dtype) {
  std::vector<std::uint16_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    out[i] = dtype == DType::kBF16 ? float_to_bf16_bits(v[i]) : float_to_fp16_bits(v[i]);
  }
  return out;
}

std::vector<float> from_bits(const std::vector<std::uint16_t>& v, DType dtype) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    out[i] = dtype == DType::kBF16 ? bf16_bits_to_float(v[i]) : fp16_bits_to_float(v[i]);
  }
  return out;
}

std::vector<float> quantize(const std::vector<float>& v, DType dtype) {
  if (dtype == DType::kF32) return v;
  return from_bits(to_bits(v, dtype), dtype);
}

ErrorStats compare(const float* got, const double* ref, std::size_t n) {
  ErrorStats s;
  s.count = static_cast<std::int64_t>(n);
  double diff2 = 0, ref2 = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i]) && std::isfinite(ref[i])) {
      ++s.non_finite;
      continue;
    }
    const double d = static_cast<double>(got[i]) - ref[i];
    diff2 += d * d;
    ref2 += ref[i] * ref[i];
    s.max_abs = std::max(s.max_abs, std::fabs(d));
  }
  s.rel_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  return s;
}

ErrorStats compare(const std::vector<float>& got, const std::vector<double>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  return compare(got.data(), ref.data(), std::min(got.size(), ref.size()));
}

::testing::AssertionResult within(const ErrorStats& s, double rel_l2_bound, double max_abs_bound) {
  if (s.non_finite > 0 || !(s.rel_l2 <= rel_l2_bound) || !(s.max_abs <= max_abs_bound)) {
    return ::testing::AssertionFailure()
           << "non_finite=" << s.non_finite << " of " << s.count << ", rel_l2=" << s.rel_l2
           << " (bound " << rel_l2_bound << "), max_abs=" << s.max_abs << " (bound " << max_abs_bound
           << ")";
  }
  return ::testing::AssertionSuccess() << "rel_l2=" << s.rel_l2 << " max_abs=" << s.max_abs;
}

double rel_l2_bound_for(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return 8e-3;
    case DType::kF16: return 1e-3;
    default: return 1e-5;
  }
}

double max_abs_bound_for(DType dtype, double ref_max_abs) {
  // One unit in the last place at the largest magnitude, plus slack for fp32 reductions.
  switch (dtype) {
    case DType::kBF16: return ref_max_abs * (1.0 / 128) + 1e-6;
    case DType::kF16: return ref_max_abs * (1.0 / 1024) + 1e-6;
    default: return ref_max_abs * 1e-5 + 1e-6;
  }
}

bool gpu_available() {
#if FUSEKIT_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
#else
  return false;
#endif
}

#if FUSEKIT_WITH_CUDA
DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes > 0 && cudaMalloc(&ptr_, bytes) != cudaSuccess) {
    ptr_ = nullptr;
    ADD_FAILURE() << "cudaMalloc(" << bytes << ") failed";
  }
}
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}
DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
  o.ptr_ = nullptr;
  o.bytes_ = 0;
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}
void DeviceBuffer::upload(const void* host, std::size_t bytes, std::size_t offset) {
  EXPECT_EQ(cudaMemcpy(static_cast<char*>(ptr_) + offset, host, bytes, cudaMemcpyHostToDevice), cudaSuccess);
}
void DeviceBuffer::download(void* host, std::size_t bytes, std::size_t offset) const {
  EXPECT_EQ(cudaMemcpy(host, static_cast<const char*>(ptr_) + offset, bytes, cudaMemcpyDeviceToHost),
            cudaSuccess);
}
void DeviceBuffer::poison() { EXPECT_EQ(cudaMemset(ptr_, 0xFF, bytes_), cudaSuccess); }

TensorView device_view(const DeviceBuffer& b, DType dtype, std::initializer_list<std::int64_t> shape) {
  int dev = 0;
  cudaGetDevice(&dev);
  return TensorView::contiguous(b.data(), dtype, shape, DeviceType::kCUDA, dev);
}
#endif

}  // namespace fusekit::testing
