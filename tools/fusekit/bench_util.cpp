#include "bench_util.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>

#if FUSEKIT_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_bf16.h>
#endif

#include "common/float_bits.h"

namespace fusekit::bench {

std::string git_commit() {
  std::string out = "unknown";
  if (FILE* p = popen("git rev-parse --short HEAD 2>/dev/null", "r")) {
    char buf[64] = {0};
    if (std::fgets(buf, sizeof buf, p)) {
      out = buf;
      while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    }
    pclose(p);
  }
  if (FILE* p = popen("git status --porcelain --untracked-files=no 2>/dev/null | head -1", "r")) {
    char buf[8] = {0};
    if (std::fgets(buf, sizeof buf, p) && out != "unknown") out += "-dirty";
    pclose(p);
  }
  return out;
}

std::string today() {
  std::time_t t = std::time(nullptr);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

static std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}
static std::string num_or_null(double v) {
  if (v < 0) return "null";
  std::ostringstream os;
  os.precision(6);
  os << v;
  return os.str();
}

bool write_json(const BenchRun& run, const std::string& path) {
  std::ofstream f(path);
  if (!f) return false;
  f << "{\n  \"device\": \"" << json_escape(run.device) << "\",\n  \"commit\": \"" << run.commit
    << "\",\n  \"date\": \"" << run.date << "\",\n  \"command\": \"" << json_escape(run.command)
    << "\",\n  \"copy_gbps\": " << num_or_null(run.copy_gbps) << ",\n  \"matmul_tflops\": "
    << num_or_null(run.matmul_tflops) << ",\n  \"records\": [\n";
  for (std::size_t i = 0; i < run.records.size(); ++i) {
    const BenchRecord& r = run.records[i];
    const double fraction = (r.floor_us > 0 && r.median_us > 0) ? r.floor_us / r.median_us : -1;
    f << "    {\"op\": \"" << r.op << "\", \"impl\": \"" << r.impl << "\", \"case\": \"" << r.case_name
      << "\", \"params\": " << (r.params_json.empty() ? "{}" : r.params_json) << ", \"tokens\": " << r.tokens
      << ", \"median_us\": " << num_or_null(r.median_us) << ", \"gbps\": " << num_or_null(r.gbps)
      << ", \"tflops\": " << num_or_null(r.tflops) << ", \"floor_us\": " << num_or_null(r.floor_us)
      << ", \"fraction_of_floor\": " << num_or_null(fraction)
      << ", \"max_rel_err\": " << num_or_null(r.max_rel_err) << "}" << (i + 1 < run.records.size() ? "," : "")
      << "\n";
  }
  f << "  ]\n}\n";
  return static_cast<bool>(f);
}

bool write_json_if_requested(const BenchRun& run, const std::string& path, const char* command) {
  if (path.empty()) return true;
  if (!write_json(run, path)) {
    std::fprintf(stderr, "%s: cannot write %s\n", command, path.c_str());
    return false;
  }
  std::printf("wrote %s\n", path.c_str());
  return true;
}

#if FUSEKIT_WITH_CUDA
std::string device_name() {
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) return "unknown";
  return prop.name;
}

double measure_copy_gbps(std::size_t bytes) {
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    cudaFree(a);
    return -1;
  }
  cudaMemset(a, 0x5a, bytes);
  cudaStream_t s;
  cudaStreamCreate(&s);
  const double us = median_us([&](int, cudaStream_t st) { cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, st); },
                              TimingOptions{3, 20, false, 1}, s);
  cudaStreamDestroy(s);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * static_cast<double>(bytes) / (us * 1e-6) / 1e9;
}

double measure_matmul_tflops(int n) {
  const std::size_t elems = static_cast<std::size_t>(n) * n;
  std::vector<std::uint16_t> host(elems);
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (auto& h : host) h = float_to_bf16_bits(dist(rng));
  void *A = nullptr, *B = nullptr, *C = nullptr;
  cudaMalloc(&A, elems * 2);
  cudaMalloc(&B, elems * 2);
  cudaMalloc(&C, elems * 2);
  cudaMemcpy(A, host.data(), elems * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(B, host.data(), elems * 2, cudaMemcpyHostToDevice);
  cublasHandle_t h;
  cublasCreate(&h);
  cudaStream_t s;
  cudaStreamCreate(&s);
  cublasSetStream(h, s);
  const float alpha = 1.f, beta = 0.f;
  const double us = median_us(
      [&](int, cudaStream_t) {
        cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, A, CUDA_R_16BF, n, B, CUDA_R_16BF, n, &beta, C,
                     CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      },
      TimingOptions{3, 20, false, 1}, s);
  cublasDestroy(h);
  cudaStreamDestroy(s);
  cudaFree(A);
  cudaFree(B);
  cudaFree(C);
  return 2.0 * n * double(n) * n / (us * 1e-6) / 1e12;
}

double median_us(const std::function<void(int, cudaStream_t)>& launch, const TimingOptions& o, cudaStream_t stream) {
  for (int i = 0; i < o.warmup; ++i) launch(i, stream);
  cudaStreamSynchronize(stream);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> samples;
  if (o.use_graph) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    for (int i = 0; i < o.graph_batch; ++i) launch(i, stream);
    cudaStreamEndCapture(stream, &graph);
    cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphLaunch(exec, stream);  // warm
    cudaStreamSynchronize(stream);
    for (int it = 0; it < o.iters; ++it) {
      cudaEventRecord(start, stream);
      cudaGraphLaunch(exec, stream);
      cudaEventRecord(stop, stream);
      cudaEventSynchronize(stop);
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      samples.push_back(ms * 1000.f / o.graph_batch);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  } else {
    for (int it = 0; it < o.iters; ++it) {
      cudaEventRecord(start, stream);
      launch(it, stream);
      cudaEventRecord(stop, stream);
      cudaEventSynchronize(stop);
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      samples.push_back(ms * 1000.f);
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(samples.begin(), samples.end());
  return samples.empty() ? -1 : samples[samples.size() / 2];
}
#endif

}  // namespace fusekit::bench
