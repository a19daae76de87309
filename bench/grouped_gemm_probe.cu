// Diagnostic (not a test, not shipped): how fast the Hopper grouped GEMM streams expert weights
// when the rows per expert are few, against the same bytes and FLOPs as ONE group, cuBLAS, and
// reads of the weights. Each row reads the same weights [E, n, k] once:
//   read       a vectorised sum over the weights (the device's streaming read rate)
//   tile walk  the same sum walking 128 rows at a time, C bytes of each per step (C = 128 is a
//              K=64 tile's TMA box; 256 is K=128's)
//   cublas     one GEMM of m rows against all experts stacked [E * n, k], through cublasGemmEx
//   grouped    E groups of m rows (what the MoE forward runs), per library tile
//   one group  1 group of m rows against the stacked experts (no per-group switches)
//   extras     tiles from grouped_gemm_probe_tile.cu, grouped
// If "one group" is much faster than "grouped", the per-group work of the persistent kernel
// costs the time; if the 128 B walk is slower than the 256 B one, the tile's walk does.
// Build and run: bench/grouped_gemm_probe_device_run.sh (results: docs/PERF_NOTES.md, v4).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "cuda/moe/sm90/grouped_gemm_bf16_sm90.h"

namespace sm90 = fusekit::cuda_moe::sm90;

// Extra tiles from grouped_gemm_probe_tile.cu (64 x N x K pingpong), called with the launch that
// prepare_group_arrays() carves for a library tile of the same layout.
namespace fusekit::cuda_moe::sm90::detail {
Status probe_pp64x128x128(const GroupedGemmLaunch& launch, cudaStream_t stream);
Status probe_pp64x64x128(const GroupedGemmLaunch& launch, cudaStream_t stream);
// Swapped operands (grouped_gemm_probe_tile.cu, PROBE_SWAPPED): weights as M, a group's rows as N.
#define PROBE_SWAPPED_DECL(name)                                                                                 \
  Status name(const __nv_bfloat16* w, const __nv_bfloat16* a, __nv_bfloat16* d, int groups, std::int64_t n,   \
              std::int64_t k, int m, int sm_count, void* workspace, std::size_t workspace_bytes, cudaStream_t stream);
PROBE_SWAPPED_DECL(probe_swap_c128x16)
PROBE_SWAPPED_DECL(probe_swap_c128x32)
PROBE_SWAPPED_DECL(probe_swap_p64x16)
PROBE_SWAPPED_DECL(probe_swap_p64x32)
#undef PROBE_SWAPPED_DECL
}  // namespace fusekit::cuda_moe::sm90::detail

// Dense, non-ptr-array CUTLASS GEMMs (grouped_gemm_probe_dense.cu): D[m, n] = A[m, k] . B[n, k]^T.
#define PROBE_DENSE_DECL(name)                                                                             \
  int name(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* d, int m, int n, int k, int sm_count, \
           void* workspace, cudaStream_t stream);
PROBE_DENSE_DECL(dense_coop128x256_c2x1)
PROBE_DENSE_DECL(dense_coop256x128_c1x2)
PROBE_DENSE_DECL(dense_coop256x128_c1x1)
PROBE_DENSE_DECL(dense_pingpong64x256_c1x1)
PROBE_DENSE_DECL(dense_pingpong128x128_c1x1)
PROBE_DENSE_DECL(dense_pingpong128x128_c2x1)
PROBE_DENSE_DECL(dense_pingpong128x128_c1x2)
#undef PROBE_DENSE_DECL

namespace {

__global__ void fill_kernel(__nv_bfloat16* p, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint32_t h = std::uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    p[i] = __float2bfloat16(float(h & 0xffff) / 65536.f - 0.5f);
  }
}

__global__ void read_kernel(const uint4* p, std::size_t n, float* sink) {
  float acc = 0.f;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    const uint4 v = __ldg(p + i);
    acc += __uint_as_float(v.x ^ v.y ^ v.z ^ v.w);
  }
  if (acc == 1.2345f) *sink = acc;  // keeps the loads
}

// Reads [rows, row_bytes] the way a GEMM tile walks its weights: 128 rows at a time, `chunk`
// bytes of each of them per step, then the next chunk. One block per 128-row tile.
__global__ void tile_walk_read_kernel(const char* p, std::int64_t row_bytes, int chunk, float* sink) {
  const char* tile = p + std::int64_t(blockIdx.x) * 128 * row_bytes;
  const int per_row = chunk / 16;
  float acc = 0.f;
  for (std::int64_t c0 = 0; c0 < row_bytes; c0 += chunk) {
    for (int i = threadIdx.x; i < 128 * per_row; i += blockDim.x) {
      const int r = i / per_row, v = i % per_row;
      const uint4 x = __ldg(reinterpret_cast<const uint4*>(tile + r * row_bytes + c0) + v);
      acc += __uint_as_float(x.x ^ x.y ^ x.z ^ x.w);
    }
  }
  if (acc == 1.2345f) *sink = acc;
}

// sums[0] += (x - y)^2, sums[1] += y^2 over n elements: rel-L2 of x against y.
__global__ void squared_error_kernel(const __nv_bfloat16* x, const __nv_bfloat16* y, std::size_t n, double* sums) {
  double e = 0, r = 0;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    const double a = __bfloat162float(x[i]), b = __bfloat162float(y[i]);
    e += (a - b) * (a - b);  // NaN propagates
    r += b * b;
  }
  atomicAdd(sums, e);
  atomicAdd(sums + 1, r);
}

double rel_l2(const __nv_bfloat16* x, const __nv_bfloat16* y, std::size_t n) {
  double* sums;
  cudaMalloc(&sums, 16);
  cudaMemset(sums, 0, 16);
  squared_error_kernel<<<1024, 256>>>(x, y, n, sums);
  double h[2];
  cudaMemcpy(h, sums, 16, cudaMemcpyDeviceToHost);
  cudaFree(sums);
  return h[1] > 0 ? std::sqrt(h[0] / h[1]) : -1.0;
}

struct Shape {
  const char* name;
  int E;
  std::int64_t n, k;
};

// The buffers of one grouped run: E groups (offsets, device) of rows of a against w, into d.
struct GroupedRun {
  const __nv_bfloat16* a;
  const __nv_bfloat16* w;
  __nv_bfloat16* d;
  const std::int32_t* offsets;
  void* workspace;
  std::size_t workspace_bytes;
};

sm90::GroupedGemmArgs grouped_args(const GroupedRun& r, const Shape& s, sm90::GemmTile tile) {
  sm90::GroupedGemmArgs g;
  g.a = r.a;
  g.b = r.w;
  g.d = r.d;
  g.n = s.n;
  g.k = s.k;
  g.tile = tile;
  g.workspace = r.workspace;
  g.workspace_bytes = r.workspace_bytes;
  g.group_offsets = r.offsets;
  g.groups = s.E;
  return g;
}

// `large-once` (for ncu, which replays each kernel itself): every timed call runs once, no warm-up.
bool g_run_once = false;

double median_us(const std::function<void()>& f) {
  if (g_run_once) {
    f();
    cudaDeviceSynchronize();
    return 0;
  }
  for (int i = 0; i < 3; ++i) f();
  cudaDeviceSynchronize();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<float> v;
  for (int i = 0; i < 15; ++i) {
    cudaEventRecord(a);
    f();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    v.push_back(ms * 1000.f);
  }
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

// `large`: the compute-bound end (256 and 1024 rows per expert, T = 4096 / 16384 at top-8). The
// same FLOPs four ways: E groups of m rows, each against its own expert (what the MoE forward
// runs); ONE group of E * m rows against one expert (the same ptr-array kernel with no group
// switch); dense non-ptr-array CUTLASS GEMMs (grouped_gemm_probe_dense.cu) and cuBLAS on that
// one-expert problem. Rates against cuBLAS at 8192^3 measured here. Caveat: the one-expert
// problems read one expert's weights (L2-resident), the grouped run all E experts' from DRAM, so
// at m = 256 (about 1.4x the card's FLOP-per-byte ridge) part of the gap is the weight reads.
void large_rows_probe(const std::vector<Shape>& shapes, cublasHandle_t h, void* ws, std::size_t ws_bytes,
                      int sm_count) {
  const float alpha = 1.f, beta = 0.f;
  double matmul_tflops = 0;
  {
    const int s = 8192;
    __nv_bfloat16 *x, *y, *z;
    cudaMalloc(&x, std::size_t(s) * s * 2);
    cudaMalloc(&y, std::size_t(s) * s * 2);
    cudaMalloc(&z, std::size_t(s) * s * 2);
    fill_kernel<<<1024, 256>>>(x, std::size_t(s) * s, 3);
    fill_kernel<<<1024, 256>>>(y, std::size_t(s) * s, 4);
    const double us = median_us([&] {
      cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, s, s, s, &alpha, x, CUDA_R_16BF, s, y, CUDA_R_16BF, s, &beta, z,
                   CUDA_R_16BF, s, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    });
    matmul_tflops = 2.0 * s * s * s / us / 1e6;
    std::printf("matmul rate (cuBLAS 8192^3): %.1f us, %.0f TFLOP/s\n", us, matmul_tflops);
    cudaFree(x);
    cudaFree(y);
    cudaFree(z);
  }
  const sm90::GemmTile tiles[] = {sm90::GemmTile::kPingpong64x128, sm90::GemmTile::kCooperative128x128,
                                  sm90::GemmTile::kPingpong64x256, sm90::GemmTile::kCooperative128x256,
                                  sm90::GemmTile::kPingpong128x128};
  for (const Shape& s : shapes) {
    for (int m : {256, 1024}) {
      const std::int64_t rows = std::int64_t(s.E) * m;
      __nv_bfloat16 *w, *a, *d;
      cudaMalloc(&w, std::size_t(s.E) * s.n * s.k * 2);
      cudaMalloc(&a, std::size_t(rows) * s.k * 2);
      cudaMalloc(&d, std::size_t(rows) * s.n * 2);
      fill_kernel<<<1024, 256>>>(w, std::size_t(s.E) * s.n * s.k, 1);
      fill_kernel<<<1024, 256>>>(a, std::size_t(rows) * s.k, 2);
      std::vector<std::int32_t> offs(s.E + 1);
      for (int g = 0; g <= s.E; ++g) offs[g] = g * m;
      const std::int32_t one[2] = {0, std::int32_t(rows)};
      std::int32_t *d_offs, *d_one;
      cudaMalloc(&d_offs, offs.size() * 4);
      cudaMalloc(&d_one, 8);
      cudaMemcpy(d_offs, offs.data(), offs.size() * 4, cudaMemcpyHostToDevice);
      cudaMemcpy(d_one, one, 8, cudaMemcpyHostToDevice);
      const double flops = 2.0 * rows * s.n * s.k;
      auto rate = [&](double us) { return flops / us / 1e6; };
      const double cublas_us = median_us([&] {
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(s.n), int(rows), int(s.k), &alpha, w, CUDA_R_16BF, int(s.k), a,
                     CUDA_R_16BF, int(s.k), &beta, d, CUDA_R_16BF, int(s.n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      });
      std::printf("%-14s m=%4d rows=%lld  cublas dense %8.1f us (%.0f TFLOP/s, %.0f%%)\n", s.name, m,
                  static_cast<long long>(rows), cublas_us, rate(cublas_us), 100 * rate(cublas_us) / matmul_tflops);
      {
        __nv_bfloat16* ref;  // cuBLAS's D, to check the dense CUTLASS GEMMs against
        cudaMalloc(&ref, std::size_t(rows) * s.n * 2);
        cudaMemcpy(ref, d, std::size_t(rows) * s.n * 2, cudaMemcpyDeviceToDevice);
        struct Dense {
          const char* name;
          decltype(&dense_coop128x256_c2x1) fn;
        };
        const Dense dense[] = {{"cooperative_128x256x64_c2x1", dense_coop128x256_c2x1},
                               {"cooperative_256x128x64_c1x2", dense_coop256x128_c1x2},
                               {"cooperative_256x128x64_c1x1", dense_coop256x128_c1x1},
                               {"pingpong_64x256x64_c1x1", dense_pingpong64x256_c1x1},
                               {"pingpong_128x128x64_c1x1", dense_pingpong128x128_c1x1},
                               // L2 -> SM bytes per FLOP: 2x1 multicasts B, 1x2 A (PERF_NOTES v14's hypothesis)
                               {"pingpong_128x128x64_c2x1", dense_pingpong128x128_c2x1},
                               {"pingpong_128x128x64_c1x2", dense_pingpong128x128_c1x2}};
        for (const Dense& x : dense) {
          cudaMemset(d, 0xff, std::size_t(rows) * s.n * 2);  // NaN
          int rc = x.fn(a, w, d, int(rows), int(s.n), int(s.k), sm_count, ws, nullptr);
          const double err = rel_l2(d, ref, std::size_t(rows) * s.n);
          const double us = median_us([&] { rc |= x.fn(a, w, d, int(rows), int(s.n), int(s.k), sm_count, ws, nullptr); });
          std::printf("  dense (not ptr-array) %-28s %8.1f us (%.0f TFLOP/s, %.0f%%)  rel-L2 vs cuBLAS %.1e rc=%d\n",
                      x.name, us, rate(us), 100 * rate(us) / matmul_tflops, err, rc);
        }
        cudaFree(ref);
      }
      for (sm90::GemmTile t : tiles) {
        const sm90::GroupedGemmArgs g = grouped_args({a, w, d, d_offs, ws, ws_bytes}, s, t);
        fusekit::Status st1, st2;
        const double grouped_us = median_us([&] { st1 = sm90::grouped_gemm_bf16_sm90(g, nullptr); });
        sm90::GroupedGemmArgs single = g;
        single.group_offsets = d_one;
        single.groups = 1;
        const double one_us = median_us([&] { st2 = sm90::grouped_gemm_bf16_sm90(single, nullptr); });
        std::printf("  %-28s grouped %8.1f us (%.0f TFLOP/s, %.0f%%)  one group %8.1f us (%.0f TFLOP/s, %.0f%%) %s %s\n",
                    sm90::gemm_tile_name(t), grouped_us, rate(grouped_us), 100 * rate(grouped_us) / matmul_tflops,
                    one_us, rate(one_us), 100 * rate(one_us) / matmul_tflops, st1.ok() ? "" : st1.to_string().c_str(),
                    st2.ok() ? "" : st2.to_string().c_str());
      }
      cudaFree(d_offs);
      cudaFree(d_one);
      cudaFree(w);
      cudaFree(a);
      cudaFree(d);
    }
  }
}

int main(int argc, char** argv) {
  const std::vector<Shape> model_shapes = {{"qwen30b gemm1", 128, 1536, 2048}, {"qwen30b gemm2", 128, 2048, 768},
                                           {"235b gemm1", 128, 3072, 4096},   {"235b gemm2", 128, 4096, 1536}};
  // `k-sweep`: Qwen3-30B-A3B's W2 bytes (403 MB) as n x k = 2048 x 768, 1024 x 1536, 512 x 3072:
  // the same bytes in 1/2, 1/4 the output tiles, each twice, four times as deep. Time falling
  // with the tile count says a fixed cost per tile; flat says the per-byte rate.
  const std::vector<Shape> k_sweep = {{"w2 n2048 k768", 128, 2048, 768}, {"w2 n1024 k1536", 128, 1024, 1536},
                                      {"w2 n512 k3072", 128, 512, 3072}};
  const std::string mode = argc > 1 ? argv[1] : "";
  const bool sweep = mode == "k-sweep";
  const std::vector<Shape>& shapes = sweep ? k_sweep : model_shapes;
  const sm90::GemmTile tiles[] = {sm90::GemmTile::kPingpong64x128, sm90::GemmTile::kCooperative128x128,
                                  sm90::GemmTile::kPingpong64x256};
  int device = 0, sm_count = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device);  // sizes the persistent grid
  cublasHandle_t h;
  cublasCreate(&h);
  float* sink;
  cudaMalloc(&sink, 4);
  const std::size_t ws_bytes = sm90::grouped_gemm_bf16_sm90_workspace_size(128);
  void* ws;
  cudaMalloc(&ws, ws_bytes);
  g_run_once = mode == "large-once";
  if (mode == "large" || mode == "large-once") {
    large_rows_probe(model_shapes, h, ws, ws_bytes, sm_count);
    std::printf("cuda: %s\n", cudaGetErrorString(cudaDeviceSynchronize()));
    return 0;
  }
  for (const Shape& s : shapes) {
    const std::size_t wbytes = std::size_t(s.E) * s.n * s.k * 2;
    __nv_bfloat16 *w, *a, *d;
    const int max_m = 64;
    cudaMalloc(&w, wbytes);
    cudaMalloc(&a, std::size_t(s.E) * max_m * s.k * 2);
    cudaMalloc(&d, std::size_t(s.E) * max_m * s.n * 2);
    fill_kernel<<<1024, 256>>>(w, wbytes / 2, 1);
    fill_kernel<<<1024, 256>>>(a, std::size_t(s.E) * max_m * s.k, 2);
    const double read_us = median_us([&] { read_kernel<<<132 * 8, 512>>>(reinterpret_cast<const uint4*>(w), wbytes / 16, sink); });
    std::printf("%-14s weights %.0f MB  read %.1f us (%.0f GB/s)\n", s.name, wbytes / 1e6, read_us, wbytes / read_us / 1e3);
    for (int chunk : {128, 256, 512, 1024}) {
      const double us = median_us([&] {
        tile_walk_read_kernel<<<int(s.E * s.n / 128), 256>>>(reinterpret_cast<const char*>(w), s.k * 2, chunk, sink);
      });
      std::printf("  tile-walk read, %4d B per row per step: %.1f us (%.0f GB/s)\n", chunk, us, wbytes / us / 1e3);
    }
    for (int m : sweep ? std::vector<int>{16} : std::vector<int>{16, 64}) {
      std::vector<std::int32_t> offs(s.E + 1);
      for (int g = 0; g <= s.E; ++g) offs[g] = g * m;
      std::int32_t* d_offs;
      cudaMalloc(&d_offs, offs.size() * 4);
      cudaMemcpy(d_offs, offs.data(), offs.size() * 4, cudaMemcpyHostToDevice);
      std::int32_t* d_one;  // {0, m}: one group of m rows
      cudaMalloc(&d_one, 8);
      cudaMemcpy(d_one, offs.data(), 8, cudaMemcpyHostToDevice);
      // E groups of m rows of a against w, into `out`: every grouped run below.
      auto grouped_run = [&](__nv_bfloat16* out) { return GroupedRun{a, w, out, d_offs, ws, ws_bytes}; };
      const float alpha = 1.f, beta = 0.f;
      const double cublas_us = median_us([&] {
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(s.E * s.n), m, int(s.k), &alpha, w, CUDA_R_16BF, int(s.k), a,
                     CUDA_R_16BF, int(s.k), &beta, d, CUDA_R_16BF, int(s.E * s.n), CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT);
      });
      std::printf("  m=%2d cublas one GEMM %8.1f us (%.0f GB/s)\n", m, cublas_us, wbytes / cublas_us / 1e3);
      for (sm90::GemmTile t : tiles) {
        const sm90::GroupedGemmArgs g = grouped_args(grouped_run(d), s, t);
        fusekit::Status st1, st2;
        const double grouped_us = median_us([&] { st1 = sm90::grouped_gemm_bf16_sm90(g, nullptr); });
        sm90::GroupedGemmArgs one = g;
        one.group_offsets = d_one;
        one.groups = 1;
        one.n = s.E * s.n;
        const double one_us = median_us([&] { st2 = sm90::grouped_gemm_bf16_sm90(one, nullptr); });
        std::printf("  m=%2d %-28s grouped %8.1f us (%.0f GB/s)  one group %8.1f us (%.0f GB/s) %s %s\n", m,
                    sm90::gemm_tile_name(t), grouped_us, wbytes / grouped_us / 1e3, one_us, wbytes / one_us / 1e3,
                    st1.ok() ? "" : st1.to_string().c_str(), st2.ok() ? "" : st2.to_string().c_str());
      }
      // The extra tiles, grouped (E groups of m rows), on the arrays the dispatcher carves for a
      // library tile of the same layout (the array types depend on the layout only).
      struct Extra {
        const char* name;
        fusekit::Status (*fn)(const sm90::detail::GroupedGemmLaunch&, cudaStream_t);
      };
      const Extra extras[] = {{"pingpong_64x128x128", sm90::detail::probe_pp64x128x128},
                              {"pingpong_64x64x128", sm90::detail::probe_pp64x64x128}};
      for (const Extra& x : extras) {
        const sm90::GroupedGemmArgs g = grouped_args(grouped_run(d), s, sm90::GemmTile::kPingpong64x128k128);
        sm90::GroupArraysToWrite carved;
        const fusekit::Status prepared = sm90::prepare_group_arrays(g, &carved);
        if (!prepared.ok() || carved.count != 1) {
          std::printf("  m=%2d %-28s not run: %s\n", m, x.name, prepared.to_string().c_str());
          continue;
        }
        sm90::detail::GroupedGemmLaunch L = carved.calls[0];
        L.sm_count = sm_count;
        fusekit::Status st;
        const double us = median_us([&] { st = x.fn(L, nullptr); });
        std::printf("  m=%2d %-28s grouped %8.1f us (%.0f GB/s) %s\n", m, x.name, us, wbytes / us / 1e3,
                    st.ok() ? "" : st.to_string().c_str());
      }
      if (sweep) {
        // Reference: the library's pingpong 64x256 on the same rows, D [rows, n] per group.
        __nv_bfloat16* d_ref;
        cudaMalloc(&d_ref, std::size_t(s.E) * m * s.n * 2);
        const sm90::GroupedGemmArgs g = grouped_args(grouped_run(d_ref), s, sm90::GemmTile::kPingpong64x256);
        const fusekit::Status ref_st = sm90::grouped_gemm_bf16_sm90(g, nullptr);
        std::vector<__nv_bfloat16> ref(std::size_t(s.E) * m * s.n), got(ref.size());
        cudaMemcpy(ref.data(), d_ref, ref.size() * 2, cudaMemcpyDeviceToHost);
        struct Swapped {
          const char* name;
          decltype(&sm90::detail::probe_swap_c128x16) fn;
        };
        const Swapped swapped[] = {{"swapped coop 128x16x128", sm90::detail::probe_swap_c128x16},
                                   {"swapped coop 128x32x128", sm90::detail::probe_swap_c128x32},
                                   {"swapped pingpong 64x16x128", sm90::detail::probe_swap_p64x16},
                                   {"swapped pingpong 64x32x128", sm90::detail::probe_swap_p64x32}};
        for (const Swapped& x : swapped) {
          fusekit::Status st;
          cudaMemset(d, 0xff, std::size_t(s.E) * m * s.n * 2);  // NaN
          st = x.fn(w, a, d, s.E, s.n, s.k, m, sm_count, ws, ws_bytes, nullptr);
          cudaMemcpy(got.data(), d, got.size() * 2, cudaMemcpyDeviceToHost);
          double err2 = 0, ref2 = 0;
          bool nan = false;
          for (int e = 0; e < s.E; ++e) {
            for (int r = 0; r < m; ++r) {
              for (std::int64_t j = 0; j < s.n; ++j) {
                const float want = __bfloat162float(ref[(std::size_t(e) * m + r) * s.n + j]);
                const float have = __bfloat162float(got[std::size_t(e) * m * s.n + j * m + r]);
                nan |= have != have;
                err2 += double(have - want) * (have - want);
                ref2 += double(want) * want;
              }
            }
          }
          const double us = median_us([&] { st = x.fn(w, a, d, s.E, s.n, s.k, m, sm_count, ws, ws_bytes, nullptr); });
          std::printf("  m=%2d %-28s grouped %8.1f us (%.0f GB/s)  rel-L2 vs pingpong 64x256 %.2e%s %s %s\n", m, x.name,
                      us, wbytes / us / 1e3, ref2 > 0 ? std::sqrt(err2 / ref2) : -1.0, nan ? " NaN" : "",
                      st.ok() ? "" : st.to_string().c_str(), ref_st.ok() ? "" : ref_st.to_string().c_str());
        }
        cudaFree(d_ref);
      }
      cudaFree(d_offs);
      cudaFree(d_one);
    }
    cudaFree(w);
    cudaFree(a);
    cudaFree(d);
  }
  std::printf("cuda: %s\n", cudaGetErrorString(cudaDeviceSynchronize()));
  return 0;
}
