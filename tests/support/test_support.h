// Shared test support: seeded random inputs (never zeros), NaN poisoning, error metrics
// (relative L2 + max-abs, NaN never passes), bf16/fp16 host conversions, device buffers.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "common/float_bits.h"
#include "fusekit/tensor.h"

namespace fusekit::testing {

// Sets an environment variable for a scope, then unsets it: the library's measuring knobs that
// tests pin (FUSEKIT_MOE_DECODE_MAX_PAIRS, FUSEKIT_MOE_DECODE_GEMM1_COLS / _TOKENS: read per call).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

// One seed per process: FUSEKIT_TEST_SEED if set, else fresh; printed once so a failure
// can be replayed. Each test mixes in its own name so tests draw different inputs.
std::uint64_t process_seed();
std::mt19937_64 make_rng();

// Uniform in [lo, hi); with lo < 0 < hi exact zeros are vanishingly rare.
std::vector<float> random_floats(std::mt19937_64& rng, std::size_t n, float lo = -1.f, float hi = 1.f);

// Round-trips through a storage dtype, so the reference sees exactly what the kernel sees.
std::vector<std::uint16_t> to_bits(const std::vector<float>& v, DType dtype);  // bf16 / fp16
std::vector<float> from_bits(const std::vector<std::uint16_t>& v, DType dtype);
std::vector<float> quantize(const std::vector<float>& v, DType dtype);  // identity for fp32

struct ErrorStats {
  double rel_l2 = 0;   // ||got - ref|| / ||ref||
  double max_abs = 0;  // max |got - ref|
  std::int64_t non_finite = 0;  // NaN or inf in `got` where ref is finite
  std::int64_t count = 0;
};
ErrorStats compare(const float* got, const double* ref, std::size_t n);
ErrorStats compare(const std::vector<float>& got, const std::vector<double>& ref);
// Passes only with no NaN/inf, rel_l2 <= rel_l2_bound and max_abs <= max_abs_bound.
::testing::AssertionResult within(const ErrorStats& s, double rel_l2_bound, double max_abs_bound);

// Tolerances that fit each storage dtype for normalisation-like ops.
double rel_l2_bound_for(DType dtype);
double max_abs_bound_for(DType dtype, double ref_max_abs);

bool gpu_available();

}  // namespace fusekit::testing

#define FUSEKIT_SKIP_WITHOUT_GPU()                                          \
  do {                                                                      \
    if (!::fusekit::testing::gpu_available()) GTEST_SKIP() << "no CUDA GPU"; \
  } while (0)

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>

#include "fusekit/status.h"

#define FUSEKIT_ASSERT_CUDA(expr) ASSERT_EQ((expr), cudaSuccess) << cudaGetErrorString(cudaGetLastError())

namespace fusekit::testing {

// Owning device allocation for tests; never used by the library.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  void upload(const void* host, std::size_t bytes, std::size_t offset = 0);
  void download(void* host, std::size_t bytes, std::size_t offset = 0) const;
  // 0xFF bytes: NaN in bf16, fp16 and fp32, so unwritten outputs are caught.
  void poison();

  template <typename T>
  static DeviceBuffer from(const std::vector<T>& host) {
    DeviceBuffer b(host.size() * sizeof(T));
    b.upload(host.data(), host.size() * sizeof(T));
    return b;
  }
  template <typename T>
  std::vector<T> to_host(std::size_t count) const {
    std::vector<T> out(count);
    download(out.data(), count * sizeof(T));
    return out;
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// A device view of the buffer with the given packed shape.
TensorView device_view(const DeviceBuffer& b, DType dtype, std::initializer_list<std::int64_t> shape);

// Calls captured once on `stream` into an executable graph (begin, the calls, end, instantiate),
// then replayed. error() is empty when the capture worked and the calls returned ok.
class CapturedGraph {
 public:
  template <class Calls>
  CapturedGraph(cudaStream_t stream, Calls&& calls) : stream_(stream) {
    if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) != cudaSuccess) {
      error_ = "cudaStreamBeginCapture failed";
      return;
    }
    const Status s = calls();
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    if (!s.ok()) {
      error_ = "a captured call failed: " + s.to_string();
    } else if (end != cudaSuccess) {
      error_ = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(end);
    } else if (cudaGraphInstantiate(&exec_, graph, 0) != cudaSuccess) {
      error_ = "cudaGraphInstantiate failed";
      exec_ = nullptr;
    }
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
  ~CapturedGraph() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
  }
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;

  const std::string& error() const { return error_; }
  // One replay, waited for. False if the graph did not build or the launch failed.
  bool replay() const {
    return exec_ != nullptr && cudaGraphLaunch(exec_, stream_) == cudaSuccess &&
           cudaStreamSynchronize(stream_) == cudaSuccess;
  }

 private:
  cudaStream_t stream_;
  cudaGraphExec_t exec_ = nullptr;
  std::string error_;
};

}  // namespace fusekit::testing
#endif
