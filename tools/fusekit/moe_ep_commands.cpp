// `fusekit bench moe-ep`: the MoE layer spread over R GPUs (expert parallel and tensor
// parallel, fusekit/moe_parallel.h) against the single-GPU forward, with each parallel layer's
// communication share.
//
//   fusekit bench moe-ep [--ranks 2] [--cases qwen3-30b-a3b,deepseek-v2-lite]
//                        [--tokens 1,8,64,256,1024,4096] [--layout nk|kn] [--iters 30]
//                        [--json bench/results/moe_ep_h200x2.json]
//
// One process, one thread per GPU, communicators from ncclCommInitAll; NCCL_NVLS_ENABLE=0 is
// set before NCCL starts. Tokens are per rank: EP and TP rank r each handle T tokens (TP ranks
// all hold the same T tokens; EP ranks hold different ones), the single-GPU forward handles T.
// Per-call times are CUDA-event times on rank 0's stream from the start of the call to out
// (host-side barrier before each iteration so the ranks start together); communication =
// header exchange + dispatch + return for EP, the all-reduce for TP (see
// src/dist/moe_parallel_internal.h). max_rel_err: relative L2 of rank 0's output against the
// single-GPU `cuda` forward on the same inputs.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "moe_shape_config.h"
#include "cli.h"
#include "common/float_bits.h"
#include "fusekit/moe.h"
#include "fusekit/moe_parallel.h"

#if FUSEKIT_WITH_NCCL
#include <cuda_runtime.h>

#include "dist/moe_parallel_internal.h"
#endif

namespace {

#if FUSEKIT_WITH_NCCL
using namespace fusekit;

struct Case {
  std::string name;
  std::int64_t E, k, H, I;
  MoeTopkNorm norm;
};
const Case kCases[] = {{"qwen3-30b-a3b", 128, 8, 2048, 768, MoeTopkNorm::kRenormalize},
                       {"deepseek-v2-lite", 64, 6, 2048, 1408, MoeTopkNorm::kNone}};

std::uint64_t splitmix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
std::vector<std::uint16_t> random_bf16(std::uint64_t seed, std::size_t n, float scale) {
  std::vector<std::uint16_t> v(n);
  const std::size_t workers = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (std::size_t w = 0; w < workers; ++w) {
    pool.emplace_back([&, w] {
      for (std::size_t i = n * w / workers; i < n * (w + 1) / workers; ++i) {
        const std::uint64_t r = splitmix(seed + i);
        v[i] = float_to_bf16_bits((static_cast<float>((r >> 40) | 1u) / 8388608.0f - 1.0f) * scale);
      }
    });
  }
  for (auto& t : pool) t.join();
  return v;
}
std::vector<float> random_f32(std::uint64_t seed, std::size_t n, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = (static_cast<float>((splitmix(seed + i) >> 40) | 1u) / 8388608.0f - 1.0f) * scale;
  }
  return v;
}

// A reusable barrier for the rank threads (C++17 has none).
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    const int gen = gen_.load();
    if (arrived_.fetch_add(1) + 1 == n_) {
      arrived_.store(0);
      gen_.fetch_add(1);
    } else {
      while (gen_.load() == gen) std::this_thread::yield();
    }
  }

 private:
  const int n_;
  std::atomic<int> arrived_{0};
  std::atomic<int> gen_{0};
};

void on_ranks(int ranks, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      cudaSetDevice(r);
      fn(r);
    });
  }
  for (auto& t : threads) t.join();
}

bool check(const Status& s, const char* what) {
  if (!s.ok()) std::fprintf(stderr, "bench moe-ep: %s: %s\n", what, s.to_string().c_str());
  return s.ok();
}

struct DevBuf {
  void* p = nullptr;
  std::size_t bytes = 0;
  DevBuf() = default;
  explicit DevBuf(std::size_t n) : bytes(n) {
    if (cudaMalloc(&p, std::max<std::size_t>(n, 256)) != cudaSuccess) {
      p = nullptr;
      std::fprintf(stderr, "bench moe-ep: cudaMalloc(%zu) failed\n", n);
    }
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(p, o.p);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~DevBuf() {
    if (p != nullptr) cudaFree(p);
  }
  template <typename T>
  void upload(const std::vector<T>& v) {
    cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
};

TensorView dview(const DevBuf& b, DType t, std::initializer_list<std::int64_t> shape, int device) {
  return TensorView::contiguous(b.p, t, shape, DeviceType::kCUDA, device);
}

struct RankState {
  int device = 0;
  cudaStream_t stream = nullptr;
  MoeConfig whole;
  DevBuf w1, w2, tw1, tw2, ws_single, ws_ep, ws_tp;
  MoeLayer single;
  MoeParallelLayer ep, tp;
  dist::PhaseMarks marks;
  // per token count
  DevBuf x, x0, logits, logits0, out;
};

double median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double rel_l2(const std::vector<std::uint16_t>& got, const std::vector<std::uint16_t>& ref) {
  double d2 = 0, r2 = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = bf16_bits_to_float(got[i]), r = bf16_bits_to_float(ref[i]);
    if (!std::isfinite(g)) return 1e30;
    d2 += (g - r) * (g - r);
    r2 += r * r;
  }
  return r2 > 0 ? std::sqrt(d2 / r2) : std::sqrt(d2);
}

std::string fmt(double v) {
  std::ostringstream os;
  os.precision(5);
  os << v;
  return os.str();
}

int bench_moe_ep(const cli::Args& args) {
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  int gpus = 0;
  cudaGetDeviceCount(&gpus);
  const int R = static_cast<int>(args.get_int("ranks", 2));
  if (R < 2 || gpus < R) {
    std::fprintf(stderr, "bench moe-ep: needs --ranks >= 2 GPUs (found %d, asked %d)\n", gpus, R);
    return 1;
  }
  const auto tokens = args.get_int_list("tokens", {1, 8, 64, 256, 1024, 4096});
  const std::string case_list = args.get("cases", "qwen3-30b-a3b,deepseek-v2-lite");
  const MoeWeightLayout layout = args.get("layout", "nk") == "kn" ? MoeWeightLayout::kKN : MoeWeightLayout::kNK;
  const int iters = static_cast<int>(args.get_int("iters", 30));
  const int warmup = static_cast<int>(args.get_int("warmup", 5));
  const std::int64_t max_tokens = *std::max_element(tokens.begin(), tokens.end());

  cudaSetDevice(0);
  bench::BenchRun run;
  run.device = bench::device_name() + " x" + std::to_string(R);
  run.commit = bench::git_commit();
  run.date = bench::today();
  run.command = args.command_line;
  run.copy_gbps = bench::measure_copy_gbps();
  run.matmul_tflops = bench::measure_matmul_tflops();
  std::printf("device %s: copy %.0f GB/s, bf16 matmul %.0f TFLOP/s (GPU 0)\n", run.device.c_str(), run.copy_gbps,
              run.matmul_tflops);

  std::vector<int> devices(static_cast<std::size_t>(R));
  for (int r = 0; r < R; ++r) devices[static_cast<std::size_t>(r)] = r;
  std::vector<MoeComm> comms(static_cast<std::size_t>(R));
  if (!check(moe_comm_init_all(R, devices.data(), comms.data()), "moe_comm_init_all")) return 1;

  bool ok = true;
  std::printf("%-18s %6s %12s %12s %8s %12s %8s %10s %10s\n", "case", "T/rank", "single_us", "ep_us", "ep_comm",
              "tp_us", "tp_comm", "ep_err", "tp_err");
  for (const Case& c : kCases) {
    if (case_list.find(c.name) == std::string::npos) continue;
    MoeConfig whole = bench::moe_config_of_shape(c.E, c.k, c.H, c.I, max_tokens);
    whole.layout = layout;
    whole.routing.norm = c.norm;
    whole.backend = MoeBackend::kCuda;
    const auto hw1 = random_bf16(11, static_cast<std::size_t>(c.E * 2 * c.I * c.H), 1.0f / std::sqrt(float(c.H)));
    const auto hw2 = random_bf16(12, static_cast<std::size_t>(c.E * c.H * c.I), 1.0f / std::sqrt(float(c.I)));
    const bool nk = layout == MoeWeightLayout::kNK;
    std::vector<RankState> ranks(static_cast<std::size_t>(R));
    std::atomic<bool> setup_ok{true};
    on_ranks(R, [&](int r) {
      RankState& s = ranks[static_cast<std::size_t>(r)];
      s.device = r;
      s.whole = whole;
      cudaStreamCreate(&s.stream);
      for (auto& e : s.marks.events) cudaEventCreate(&e);
      s.w1 = DevBuf(hw1.size() * 2);
      s.w2 = DevBuf(hw2.size() * 2);
      s.w1.upload(hw1);
      s.w2.upload(hw2);
      s.single = MoeLayer{whole,
                          {dview(s.w1, DType::kBF16, {c.E, nk ? 2 * c.I : c.H, nk ? c.H : 2 * c.I}, r),
                           dview(s.w2, DType::kBF16, {c.E, nk ? c.H : c.I, nk ? c.I : c.H}, r)}};
      std::size_t bytes = 0;
      bool good = check(moe_workspace_size(whole, &bytes), "moe_workspace_size");
      s.ws_single = DevBuf(bytes);
      s.ep.config.layer = whole;
      s.ep.config.layer.expert_parallel_size = R;
      s.ep.comm = comms[static_cast<std::size_t>(r)];
      good = good && check(moe_parallel_expert_views(s.ep.config, r, s.single.weights, &s.ep.weights), "expert views");
      good = good && check(moe_parallel_workspace_size(s.ep.config, &bytes), "EP workspace");
      s.ws_ep = DevBuf(bytes);
      s.tp.config.layer = whole;
      s.tp.config.tensor_parallel_size = R;
      s.tp.comm = comms[static_cast<std::size_t>(r)];
      const std::int64_t Il = c.I / R;
      s.tw1 = DevBuf(hw1.size() * 2 / static_cast<std::size_t>(R));
      s.tw2 = DevBuf(hw2.size() * 2 / static_cast<std::size_t>(R));
      s.tp.weights = {dview(s.tw1, DType::kBF16, {c.E, nk ? 2 * Il : c.H, nk ? c.H : 2 * Il}, r),
                      dview(s.tw2, DType::kBF16, {c.E, nk ? c.H : Il, nk ? Il : c.H}, r)};
      good = good && check(moe_parallel_slice_weights(s.tp.config, r, s.single.weights, s.tp.weights, s.stream),
                           "slice weights");
      good = good && check(moe_parallel_workspace_size(s.tp.config, &bytes), "TP workspace");
      s.ws_tp = DevBuf(bytes);
      cudaStreamSynchronize(s.stream);
      if (!good) setup_ok = false;
    });
    if (!setup_ok) return 1;
    // Both layers agree across ranks (collective; TP does not check per call).
    on_ranks(R, [&](int r) {
      RankState& s = ranks[static_cast<std::size_t>(r)];
      if (!check(moe_parallel_check(s.tp, MoeWorkspace{s.ws_tp.p, s.ws_tp.bytes}, s.stream), "check TP") ||
          !check(moe_parallel_check(s.ep, MoeWorkspace{s.ws_ep.p, s.ws_ep.bytes}, s.stream), "check EP")) {
        setup_ok = false;
      }
    });
    if (!setup_ok) return 1;

    for (std::int64_t T : tokens) {
      // Inputs: rank r's own tokens (EP) and rank 0's tokens on every rank (TP).
      std::vector<std::vector<std::uint16_t>> hx(static_cast<std::size_t>(R));
      std::vector<std::vector<float>> hl(static_cast<std::size_t>(R));
      for (int r = 0; r < R; ++r) {
        hx[static_cast<std::size_t>(r)] = random_bf16(100 + 7 * r + T, static_cast<std::size_t>(T * c.H), 1.0f);
        hl[static_cast<std::size_t>(r)] = random_f32(200 + 7 * r + T, static_cast<std::size_t>(T * c.E), 4.0f);
      }
      on_ranks(R, [&](int r) {
        RankState& s = ranks[static_cast<std::size_t>(r)];
        s.x = DevBuf(static_cast<std::size_t>(T * c.H * 2));
        s.x0 = DevBuf(static_cast<std::size_t>(T * c.H * 2));
        s.logits = DevBuf(static_cast<std::size_t>(T * c.E * 4));
        s.logits0 = DevBuf(static_cast<std::size_t>(T * c.E * 4));
        s.out = DevBuf(static_cast<std::size_t>(T * c.H * 2));
        s.x.upload(hx[static_cast<std::size_t>(r)]);
        s.logits.upload(hl[static_cast<std::size_t>(r)]);
        s.x0.upload(hx[0]);
        s.logits0.upload(hl[0]);
      });

      // Single GPU (GPU 0, rank 0's tokens): time and reference output.
      RankState& s0 = ranks[0];
      cudaSetDevice(0);
      MoeRouterInput router0;
      router0.logits = dview(s0.logits, DType::kF32, {T, c.E}, 0);
      const TensorView x0 = dview(s0.x, DType::kBF16, {T, c.H}, 0), out0 = dview(s0.out, DType::kBF16, {T, c.H}, 0);
      const MoeWorkspace ws0{s0.ws_single.p, s0.ws_single.bytes};
      if (!check(moe_forward(s0.single, x0, router0, out0, ws0, s0.stream), "single forward")) return 1;
      cudaStreamSynchronize(s0.stream);
      std::vector<std::uint16_t> ref(static_cast<std::size_t>(T * c.H)), got(ref.size());
      cudaMemcpy(ref.data(), s0.out.p, ref.size() * 2, cudaMemcpyDeviceToHost);
      const double single_us = bench::median_us(
          [&](int, cudaStream_t st) { moe_forward(s0.single, x0, router0, out0, ws0, st); },
          bench::TimingOptions{warmup, std::max(iters, 50), false, 1}, s0.stream);

      // A parallel layer: per-iteration total and communication on rank 0; error vs ref.
      struct Timing {
        double total_us = -1, comm_us = -1, err = -1;
        double phase_us[dist::kNumMarks - 1] = {};
      };
      auto time_parallel = [&](bool ep) {
        Timing tm;
        Barrier barrier(R);
        std::vector<std::vector<double>> totals(1), comms_us(1), phases(dist::kNumMarks - 1);
        std::atomic<bool> good{true};
        on_ranks(R, [&](int r) {
          RankState& s = ranks[static_cast<std::size_t>(r)];
          dist::ForwardCall call;
          call.layer = ep ? &s.ep : &s.tp;
          MoeRouterInput router;
          router.logits = dview(ep ? s.logits : s.logits0, DType::kF32, {T, c.E}, r);
          call.x = dview(ep ? s.x : s.x0, DType::kBF16, {T, c.H}, r);
          call.router = &router;
          call.out = dview(s.out, DType::kBF16, {T, c.H}, r);
          call.workspace = ep ? MoeWorkspace{s.ws_ep.p, s.ws_ep.bytes} : MoeWorkspace{s.ws_tp.p, s.ws_tp.bytes};
          call.stream = s.stream;
          call.marks = &s.marks;
          for (int it = 0; it < warmup + iters; ++it) {
            barrier.wait();
            cudaMemsetAsync(s.out.p, 0xFF, s.out.bytes, s.stream);  // poisoned: every call must write out
            if (!dist::parallel_forward(call).ok()) good = false;
            cudaStreamSynchronize(s.stream);
            if (r != 0 || it < warmup) continue;
            float ms[dist::kNumMarks - 1];
            for (int m = 0; m + 1 < dist::kNumMarks; ++m) {
              cudaEventElapsedTime(&ms[m], s.marks.events[m], s.marks.events[m + 1]);
              phases[static_cast<std::size_t>(m)].push_back(ms[m] * 1000.0);
            }
            float total = 0;
            cudaEventElapsedTime(&total, s.marks.events[dist::kMarkStart], s.marks.events[dist::kMarkEnd]);
            totals[0].push_back(total * 1000.0);
            // Intervals m -> m+1: prepared->counted (headers), counted->dispatched, computed->returned.
            const double comm = ms[dist::kMarkPrepared] + ms[dist::kMarkCounted] + ms[dist::kMarkComputed];
            comms_us[0].push_back(comm * 1000.0);
          }
        });
        if (!good) {
          std::fprintf(stderr, "bench moe-ep: %s forward failed\n", ep ? "EP" : "TP");
          return tm;
        }
        tm.total_us = median(totals[0]);
        tm.comm_us = median(comms_us[0]);
        for (int m = 0; m + 1 < dist::kNumMarks; ++m) tm.phase_us[m] = median(phases[static_cast<std::size_t>(m)]);
        cudaSetDevice(0);
        cudaMemcpy(got.data(), ranks[0].out.p, got.size() * 2, cudaMemcpyDeviceToHost);
        tm.err = rel_l2(got, ref);
        return tm;
      };
      const Timing ep = time_parallel(true);
      const Timing tp = time_parallel(false);
      ok = ok && ep.total_us > 0 && tp.total_us > 0 && ep.err < 1e-2 && tp.err < 1e-2;

      std::printf("%-18s %6lld %12.1f %12.1f %7.0f%% %12.1f %7.0f%% %10.2e %10.2e\n", c.name.c_str(),
                  static_cast<long long>(T), single_us, ep.total_us, 100.0 * ep.comm_us / ep.total_us, tp.total_us,
                  100.0 * tp.comm_us / tp.total_us, ep.err, tp.err);

      // Floors (compute and weight reads of one rank; communication has no floor here).
      const double flops = 6.0 * double(T) * double(c.k) * double(c.H) * double(c.I);
      const double expert_bytes = 3.0 * double(c.H) * double(c.I) * 2.0;
      auto hit = [&](double experts, double pairs) { return experts * (1.0 - std::pow(1.0 - 1.0 / experts, pairs)); };
      const double single_bytes = hit(double(c.E), double(T * c.k)) * expert_bytes;
      const double ep_bytes = hit(double(c.E) / R, double(T * c.k)) * expert_bytes;  // R*T*k pairs over E experts
      const double tp_bytes = single_bytes / R;
      auto floor_us = [&](double f, double b) {
        return std::max(f / (run.matmul_tflops * 1e12), b / (run.copy_gbps * 1e9)) * 1e6;
      };
      auto params = [&](const char* impl, const Timing* t) {
        std::ostringstream os;
        os << "{\"experts\": " << c.E << ", \"top_k\": " << c.k << ", \"hidden\": " << c.H
           << ", \"intermediate\": " << c.I << ", \"layout\": \"" << (nk ? "nk" : "kn") << "\", \"dtype\": \"bf16\""
           << ", \"ranks\": " << (t ? R : 1) << ", \"tokens_per_rank\": " << T << ", \"parallelism\": \"" << impl
           << "\"";
        if (t != nullptr) {
          os << ", \"comm_us\": " << fmt(t->comm_us) << ", \"comm_share\": " << fmt(t->comm_us / t->total_us)
             << ", \"phases_us\": {";
          const char* names[] = {"prepare", "counts", "dispatch", "compute", "return", "combine"};
          for (int m = 0; m + 1 < dist::kNumMarks; ++m) {
            os << (m ? ", " : "") << "\"" << names[m] << "\": " << fmt(t->phase_us[m]);
          }
          os << "}";
        }
        os << "}";
        return os.str();
      };
      auto record = [&](const char* impl, double us, double f, double b, double err, const Timing* t) {
        bench::BenchRecord rec;
        rec.op = "moe_ep";
        rec.impl = impl;
        rec.case_name = c.name;
        rec.params_json = params(impl, t);
        rec.tokens = T;
        rec.median_us = us;
        rec.gbps = b / (us * 1e-6) / 1e9;
        rec.tflops = f / (us * 1e-6) / 1e12;
        rec.floor_us = floor_us(f, b);
        rec.max_rel_err = err;
        run.records.push_back(rec);
      };
      record("single_gpu", single_us, flops, single_bytes, 0.0, nullptr);
      record("expert_parallel", ep.total_us, flops, ep_bytes, ep.err, &ep);
      record("tensor_parallel", tp.total_us, flops / R, tp_bytes, tp.err, &tp);
    }
    on_ranks(R, [&](int r) {
      RankState& s = ranks[static_cast<std::size_t>(r)];
      for (auto& e : s.marks.events) cudaEventDestroy(e);
      cudaStreamDestroy(s.stream);
      s = RankState{};
    });
  }
  for (auto& c : comms) moe_comm_destroy(&c);
  if (!bench::write_json_if_requested(run, args.get("json", ""), "bench moe-ep")) return 1;
  if (!ok) std::fprintf(stderr, "bench moe-ep: a parallel forward failed or its error exceeded 1e-2\n");
  return ok ? 0 : 1;
}
#else
int bench_moe_ep(const fusekit::cli::Args&) {
  std::printf("bench moe-ep: this build has no NCCL (multi-GPU MoE is off)\n");
  return 1;
}
#endif

FUSEKIT_CLI_COMMAND("bench", "moe-ep", "expert- and tensor-parallel MoE on several GPUs vs one GPU (NCCL)",
                    bench_moe_ep);

}  // namespace
