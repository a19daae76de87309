// Design experiment for docs/PERF_NOTES.md (QK RMSNorm), not part of the library: times the
// kernel with 1, 2 and 4 heads per lane group (loads in flight per thread) on qwen3-8b
// (Hq=32, Hkv=8, D=128), bf16, in place, next to a copy of the same bytes with the same access
// pattern and no math (the practical floor of this layout). Same method as
// `fusekit bench qk-norm`: L2 flushed per sample, 20 calls per sample on rotating input sets,
// graph replay for T <= 4096.
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr \
//        -Iinclude -Isrc bench/qk_norm_variants.cu -o /tmp/qk_norm_variants && /tmp/qk_norm_variants
#include <algorithm>
#include <cstdio>
#include <functional>
#include <vector>

#include "cuda/qk_norm/qk_rmsnorm_kernel.cuh"

using namespace fusekit;
using namespace fusekit::cuda::qk_norm_detail;

// Reads and writes back the Q/K part of every row, 16 bytes per thread, no math.
__global__ void qk_copy_kernel(uint4* qkv, std::int64_t tokens, int vecs_per_row_qk, int row_stride_vecs) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t t = i / vecs_per_row_qk;
  if (t >= tokens) return;
  uint4* p = qkv + t * row_stride_vecs + (i - t * vecs_per_row_qk);
  uint4 v = *p;
  v.x ^= 0x00010001u;  // keep the store from being elided
  *p = v;
}

int main() {
  const int hq = 32, hkv = 8, d = 128, width = (hq + 2 * hkv) * d;
  const int batch = 20;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const std::size_t flush_bytes = 2 * static_cast<std::size_t>(prop.l2CacheSize);
  void* flush = nullptr;
  cudaMalloc(&flush, flush_bytes);
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<std::uint16_t> w(d, 0x3f80);  // bf16 1.0
  void *qw, *kw;
  cudaMalloc(&qw, d * 2);
  cudaMalloc(&kw, d * 2);
  cudaMemcpy(qw, w.data(), d * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(kw, w.data(), d * 2, cudaMemcpyHostToDevice);

  std::printf("%7s %10s %10s %10s %10s   (us per call; GB/s of Q+K read+written in brackets)\n", "T", "copy-only",
              "1 head", "2 heads", "4 heads");
  for (std::int64_t tokens : {1, 64, 1024, 4096, 16384, 65536}) {
    const std::size_t set_bytes = static_cast<std::size_t>(tokens) * width * 2;
    const int sets = static_cast<int>(std::min<std::size_t>(batch, std::max<std::size_t>(256u << 20, 3 * set_bytes) / set_bytes));
    void* pool = nullptr;
    cudaMalloc(&pool, sets * set_bytes);
    std::vector<std::uint16_t> host(static_cast<std::size_t>(tokens) * width);
    for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<std::uint16_t>(0x3f00 + (i * 2654435761u) % 0x100);
    for (int s = 0; s < sets; ++s) cudaMemcpy(static_cast<char*>(pool) + s * set_bytes, host.data(), set_bytes, cudaMemcpyHostToDevice);
    KernelArgs a{};
    a.in_stride = a.out_stride = width;
    a.tokens = tokens;
    a.num_q_heads = hq;
    a.heads = hq + hkv;
    a.head_dim = d;
    a.heads_div = FastDiv::make(hq + hkv);
    a.q_weight = qw;
    a.k_weight = kw;
    a.weight_dtype = DType::kBF16;
    a.eps = 1e-6f;
    a.inv_head_dim = 1.f / d;
    a.rotary_style = RotaryStyle::kNone;
    auto at = [&](int i) { return static_cast<char*>(pool) + static_cast<std::size_t>(i % sets) * set_bytes; };
    std::vector<std::function<void(int)>> variants = {
        [&](int i) {
          const int vq = (hq + hkv) * d / 8;
          const std::int64_t n = tokens * vq;
          qk_copy_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(static_cast<uint4*>((void*)at(i)),
                                                                                    tokens, vq, width / 8);
        },
        [&](int i) { a.qkv = a.out = at(i); (void)launch_qk_rmsnorm<__nv_bfloat16, 128, 1>(a, stream); },
        [&](int i) { a.qkv = a.out = at(i); (void)launch_qk_rmsnorm<__nv_bfloat16, 128, 2>(a, stream); },
        [&](int i) { a.qkv = a.out = at(i); (void)launch_qk_rmsnorm<__nv_bfloat16, 128, 4>(a, stream); },
    };
    std::printf("%7lld", (long long)tokens);
    const double qk_bytes = 2.0 * tokens * (hq + hkv) * d * 2;
    for (auto& launch : variants) {
      const bool graph = tokens <= 4096;
      cudaGraphExec_t exec = nullptr;
      for (int i = 0; i < 3; ++i) launch(i);
      if (graph) {
        cudaGraph_t g;
        cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
        for (int i = 0; i < batch; ++i) launch(i);
        cudaStreamEndCapture(stream, &g);
        cudaGraphInstantiate(&exec, g, 0);
        cudaGraphDestroy(g);
      }
      std::vector<float> samples;
      for (int it = 0; it < 22; ++it) {
        cudaMemsetAsync(flush, it, flush_bytes, stream);
        cudaEventRecord(e0, stream);
        if (graph) {
          cudaGraphLaunch(exec, stream);
        } else {
          for (int i = 0; i < batch; ++i) launch(i);
        }
        cudaEventRecord(e1, stream);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (it >= 2) samples.push_back(ms * 1000 / batch);
      }
      if (exec) cudaGraphExecDestroy(exec);
      std::sort(samples.begin(), samples.end());
      const double us = samples[samples.size() / 2];
      std::printf(" %7.2f [%4.0f]", us, qk_bytes / (us * 1e3));
    }
    std::printf("\n");
    cudaFree(pool);
  }
  const cudaError_t err = cudaGetLastError();
  std::printf("cuda: %s\n", cudaGetErrorString(err));
  return err == cudaSuccess ? 0 : 1;
}
