// `fusekit bench device`: the two ceilings every benchmark is measured against.
#include <cstdio>

#include "bench_util.h"
#include "cli.h"

namespace {

int bench_device(const fusekit::cli::Args&) {
#if FUSEKIT_WITH_CUDA
  const double copy = fusekit::bench::measure_copy_gbps();
  const double mm = fusekit::bench::measure_matmul_tflops();
  std::printf("device %s: copy %.0f GB/s (read + written), bf16 matmul %.0f TFLOP/s (cuBLAS 8192^3)\n",
              fusekit::bench::device_name().c_str(), copy, mm);
  return copy > 0 && mm > 0 ? 0 : 1;
#else
  std::printf("bench device: this build has no CUDA backend\n");
  return 1;
#endif
}

FUSEKIT_CLI_COMMAND("bench", "device", "measured copy bandwidth and bf16 matmul rate", bench_device);

}  // namespace
