// Benchmark plumbing shared by every `fusekit bench` command: the two measured ceilings
// (device copy bandwidth, bf16 matmul rate), CUDA-event timing with optional graph replay,
// and JSON in the bench/results format (see docs/BENCHMARKS.md).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace fusekit::bench {

struct BenchRecord {
  std::string op;           // "qk_norm" | "moe" | stage name
  std::string impl = "fusekit";
  std::string case_name;    // a named shape from bench/cases
  std::string params_json;  // {"hq": 32, ...} — already JSON
  std::int64_t tokens = 0;
  double median_us = 0;
  double gbps = -1;          // < 0 -> null
  double tflops = -1;        // < 0 -> null
  double floor_us = -1;
  double max_rel_err = -1;   // < 0 -> null
};

struct BenchRun {
  std::string device;
  std::string commit;
  std::string date;
  std::string command;
  double copy_gbps = 0;
  double matmul_tflops = 0;
  std::vector<BenchRecord> records;
};

std::string git_commit();  // short hash of the working tree, or "unknown"
std::string today();       // YYYY-MM-DD
bool write_json(const BenchRun& run, const std::string& path);
// For `--json PATH`: nothing when `path` is empty; else writes it and says so. False only when
// the write failed (the message names `command`, e.g. "bench moe").
bool write_json_if_requested(const BenchRun& run, const std::string& path, const char* command);

#if FUSEKIT_WITH_CUDA
std::string device_name();
// Device-to-device copy of `bytes`, counted as read + written bytes / time.
double measure_copy_gbps(std::size_t bytes = std::size_t(1) << 30);
// A large bf16 cuBLAS GEMM on random data (m = n = k = 8192), fp32 accumulate.
double measure_matmul_tflops(int size = 8192);

struct TimingOptions {
  int warmup = 10;
  int iters = 100;
  // Replays the launch captured `graph_batch` times in one graph, so launch overhead is
  // amortised the way an engine's CUDA-graph decode step amortises it.
  bool use_graph = false;
  int graph_batch = 20;
};
// Median microseconds of one call of `launch(iteration, stream)`. The iteration index lets
// the caller rotate among several input sets so L2 does not serve them.
double median_us(const std::function<void(int, cudaStream_t)>& launch, const TimingOptions& options,
                 cudaStream_t stream);
#endif

}  // namespace fusekit::bench
