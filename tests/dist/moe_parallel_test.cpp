// Expert- and tensor-parallel MoE (fusekit/moe_parallel.h) on 2 GPUs in one process: one
// NCCL communicator per GPU from ncclCommInitAll (moe_comm_init_all), one thread per rank.
//
// Accuracy: EP and TP outputs against the single-GPU `cuda` forward on the same inputs
// (relative L2 <= 1e-2, NaN never passes, outputs poisoned first) and bit-identical run to
// run, for Qwen3-30B-A3B (128, 8, 2048, 768) and DeepSeek-V2-Lite (64, 6, 2048, 1408), both
// weight layouts, T in {1, 7, 256, 4096}, plus precomputed ids that send every token to rank
// 0's experts (rank 1 receives nothing) and a rank with no tokens at all.
// Faults: mismatched configs, E not divisible by R, communicators of the wrong size, too many
// tokens on one rank, stream capture of EP, wrong device, null communicator — clear errors on
// every rank, no hang (a watchdog ends the process if a call ever hangs).
// Also: the EP plan kernel against its host reference, and the TP forward captured in a CUDA
// graph replaying bit-identically.
//
// NVLink multicast stays off (NCCL_NVLS_ENABLE=0, set before any NCCL call). Skips with < 2 GPUs.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "fusekit/moe.h"
#include "fusekit/moe_parallel.h"
#include "support/test_support.h"

#if FUSEKIT_WITH_NCCL
#include <cuda_runtime.h>

#include "dist/ep_kernels.h"
#include "dist/moe_parallel_plan.h"

namespace fusekit::testing {
namespace {

// Before any NCCL initialisation: multicast off, and a watchdog so that a hang fails the run
// instead of eating the machine's time.
const bool kEnvironmentReady = [] {
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  const char* limit = std::getenv("FUSEKIT_DIST_TEST_TIMEOUT_S");
  const int seconds = limit != nullptr ? std::atoi(limit) : 480;
  std::thread([seconds] {
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    std::fprintf(stderr, "moe_parallel_test: watchdog: still running after %d s (a hang?); exiting\n", seconds);
    std::fflush(stderr);
    std::_Exit(124);
  }).detach();
  return true;
}();

constexpr int kRanks = 2;
constexpr double kRelL2 = 1e-2;

int gpu_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

// Runs fn(rank) on one thread per rank with that rank's GPU current. A rank that does not
// return within the limit means a hang: fail loudly and end the process (NCCL cannot be
// interrupted).
void on_ranks(int ranks, const std::function<void(int)>& fn, int limit_s = 240) {
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      EXPECT_EQ(cudaSetDevice(r), cudaSuccess);
      fn(r);
      done.fetch_add(1);
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(limit_s);
  while (done.load() < ranks && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (done.load() < ranks) {
    ADD_FAILURE() << "a rank did not return within " << limit_s << " s: the call hangs";
    std::fprintf(stderr, "moe_parallel_test: hang detected, exiting\n");
    std::fflush(stderr);
    std::_Exit(1);
  }
  for (auto& t : threads) t.join();
}

std::uint64_t splitmix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// Uniform in (-scale, scale) without 0, counter-based and multi-threaded (GBs of weights).
std::vector<std::uint16_t> random_bf16(std::mt19937_64& rng, std::size_t n, float scale) {
  const std::uint64_t seed = rng();
  std::vector<std::uint16_t> v(n);
  const std::size_t workers = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (std::size_t w = 0; w < workers; ++w) {
    pool.emplace_back([&, w] {
      for (std::size_t i = n * w / workers; i < n * (w + 1) / workers; ++i) {
        const std::uint64_t r = splitmix(seed + i);
        const float u = (static_cast<float>((r >> 40) | 1u) / 8388608.0f - 1.0f) * scale;
        v[i] = float_to_bf16_bits(u);
      }
    });
  }
  for (auto& t : pool) t.join();
  return v;
}

std::vector<float> bf16_to_float(const std::vector<std::uint16_t>& bits) {
  std::vector<float> v(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) v[i] = bf16_bits_to_float(bits[i]);
  return v;
}
std::vector<double> bf16_to_double(const std::vector<std::uint16_t>& bits) {
  std::vector<double> v(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) v[i] = bf16_bits_to_float(bits[i]);
  return v;
}
::testing::AssertionResult close_to(const std::vector<std::uint16_t>& got, const std::vector<std::uint16_t>& want) {
  const auto ref = bf16_to_double(want);
  double m = 0;
  for (double r : ref) m = std::max(m, std::fabs(r));
  return within(compare(bf16_to_float(got), ref), kRelL2, 0.05 * m + 1e-3);
}

// k distinct experts per token from [0, limit), in random order; weights in (0.05, 1).
void random_routing(std::mt19937_64& rng, std::int64_t T, std::int64_t k, std::int64_t limit,
                    std::vector<std::int32_t>* ids, std::vector<float>* weights) {
  ids->resize(static_cast<std::size_t>(T * k));
  std::vector<std::int32_t> all(static_cast<std::size_t>(limit));
  std::iota(all.begin(), all.end(), 0);
  for (std::int64_t t = 0; t < T; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    std::copy(all.begin(), all.begin() + k, ids->begin() + t * k);
  }
  *weights = random_floats(rng, static_cast<std::size_t>(T * k), 0.05f, 1.f);
}

class MoeParallelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (gpu_count() < kRanks) return;
    const int devices[kRanks] = {0, 1};
    const Status s = moe_comm_init_all(kRanks, devices, comms_);
    if (!s.ok()) std::fprintf(stderr, "moe_comm_init_all: %s\n", s.to_string().c_str());
  }
  static void TearDownTestSuite() {
    for (auto& c : comms_) moe_comm_destroy(&c);
  }
  void SetUp() override {
    FUSEKIT_SKIP_WITHOUT_GPU();
    if (gpu_count() < kRanks) GTEST_SKIP() << "needs " << kRanks << " GPUs, found " << gpu_count();
    ASSERT_NE(comms_[0].nccl_comm, nullptr) << "NCCL communicators could not be created";
  }
  static MoeComm comms_[kRanks];
};
MoeComm MoeParallelTest::comms_[kRanks];

// ---------------------------------------------------------------------------------------
// Accuracy and determinism on the model shapes.

struct ModelShape {
  const char* name;
  std::int64_t E, k, H, I;
  MoeTopkNorm norm;
};
const ModelShape kQwen3{"qwen3_30b_a3b", 128, 8, 2048, 768, MoeTopkNorm::kRenormalize};
const ModelShape kDeepSeekV2Lite{"deepseek_v2_lite", 64, 6, 2048, 1408, MoeTopkNorm::kNone};
constexpr std::int64_t kMaxTokens = 4096;

MoeConfig layer_config(const ModelShape& s, MoeWeightLayout layout, std::int64_t max_tokens) {
  MoeConfig c;
  c.num_experts = s.E;
  c.top_k = s.k;
  c.hidden = s.H;
  c.intermediate = s.I;
  c.max_tokens = max_tokens;
  c.layout = layout;
  c.routing.norm = s.norm;
  c.backend = MoeBackend::kCuda;
  return c;
}
std::vector<std::int64_t> w1_shape(const MoeConfig& c, std::int64_t E, std::int64_t I) {
  return c.layout == MoeWeightLayout::kNK ? std::vector<std::int64_t>{E, 2 * I, c.hidden}
                                          : std::vector<std::int64_t>{E, c.hidden, 2 * I};
}
std::vector<std::int64_t> w2_shape(const MoeConfig& c, std::int64_t E, std::int64_t I) {
  return c.layout == MoeWeightLayout::kNK ? std::vector<std::int64_t>{E, c.hidden, I}
                                          : std::vector<std::int64_t>{E, I, c.hidden};
}
TensorView view3(const DeviceBuffer& b, const std::vector<std::int64_t>& s) {
  return device_view(b, DType::kBF16, {s[0], s[1], s[2]});
}

// One rank's GPU state for a layer: full weights (the single-GPU reference, EP's expert views
// and TP's slicing source), the TP slice, workspaces, a stream.
struct Rank {
  int device = 0;
  cudaStream_t stream = nullptr;
  MoeConfig single;
  MoeLayer single_layer;
  MoeParallelLayer ep, tp;
  DeviceBuffer w1, w2, tw1, tw2, ws_single, ws_ep, ws_tp;

  void setup(int rank, const MoeConfig& whole, const std::vector<std::uint16_t>& hw1,
             const std::vector<std::uint16_t>& hw2, MoeComm comm) {
    device = rank;
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
    single = whole;
    w1 = DeviceBuffer::from(hw1);
    w2 = DeviceBuffer::from(hw2);
    single_layer = MoeLayer{single, {view3(w1, w1_shape(single, whole.num_experts, whole.intermediate)),
                                     view3(w2, w2_shape(single, whole.num_experts, whole.intermediate))}};
    std::size_t bytes = 0;
    ASSERT_TRUE(moe_workspace_size(single, &bytes).ok());
    ws_single = DeviceBuffer(bytes);

    ep.config.layer = whole;
    ep.config.layer.expert_parallel_size = kRanks;
    ep.comm = comm;
    ASSERT_TRUE(moe_parallel_expert_views(ep.config, rank, single_layer.weights, &ep.weights).ok());
    ASSERT_TRUE(moe_parallel_workspace_size(ep.config, &bytes).ok());
    ws_ep = DeviceBuffer(bytes);

    tp.config.layer = whole;
    tp.config.tensor_parallel_size = kRanks;
    tp.comm = comm;
    const std::int64_t Il = whole.intermediate / kRanks;
    tw1 = DeviceBuffer(hw1.size() / kRanks * 2);
    tw2 = DeviceBuffer(hw2.size() / kRanks * 2);
    tp.weights = {view3(tw1, w1_shape(single, whole.num_experts, Il)), view3(tw2, w2_shape(single, whole.num_experts, Il))};
    const Status sliced = moe_parallel_slice_weights(tp.config, rank, single_layer.weights, tp.weights, stream);
    ASSERT_TRUE(sliced.ok()) << sliced.to_string();
    ASSERT_TRUE(moe_parallel_workspace_size(tp.config, &bytes).ok());
    ws_tp = DeviceBuffer(bytes);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    const Status checked = moe_parallel_check(tp, MoeWorkspace{ws_tp.data(), ws_tp.bytes()}, stream);
    EXPECT_TRUE(checked.ok()) << checked.to_string();
  }
  ~Rank() {
    if (stream != nullptr) {
      cudaSetDevice(device);
      cudaStreamDestroy(stream);
    }
  }
};

// Inputs of one rank for one call.
struct Inputs {
  std::int64_t T = 0;
  std::vector<std::uint16_t> x;
  std::vector<float> logits;
  std::vector<std::int32_t> ids;  // when routed
  std::vector<float> weights;
};

enum class Path { kSingle, kExpert, kTensor };

// Runs one forward of `path` on this rank (device current), out poisoned first; returns out.
std::vector<std::uint16_t> run_forward(Rank& rk, Path path, const Inputs& in, bool routed) {
  const std::int64_t T = in.T, H = rk.single.hidden, E = rk.single.num_experts, k = rk.single.top_k;
  DeviceBuffer dx = DeviceBuffer::from(in.x);
  DeviceBuffer dout(static_cast<std::size_t>(T * H * 2));
  dout.poison();
  DeviceBuffer dlogits, dids, dweights;
  const TensorView x = device_view(dx, DType::kBF16, {T, H});
  const TensorView out = device_view(dout, DType::kBF16, {T, H});
  MoeRouterInput router;
  MoeRouted r;
  if (routed) {
    dids = DeviceBuffer::from(in.ids);
    dweights = DeviceBuffer::from(in.weights);
    r.topk_ids = device_view(dids, DType::kI32, {T, k});
    r.topk_weights = device_view(dweights, DType::kF32, {T, k});
  } else {
    dlogits = DeviceBuffer::from(in.logits);
    router.logits = device_view(dlogits, DType::kF32, {T, E});
  }
  Status s;
  switch (path) {
    case Path::kSingle: {
      const MoeWorkspace ws{rk.ws_single.data(), rk.ws_single.bytes()};
      s = routed ? moe_forward_routed(rk.single_layer, x, r, out, ws, rk.stream)
                 : moe_forward(rk.single_layer, x, router, out, ws, rk.stream);
      break;
    }
    case Path::kExpert: {
      const MoeWorkspace ws{rk.ws_ep.data(), rk.ws_ep.bytes()};
      s = routed ? moe_parallel_forward_routed(rk.ep, x, r, out, ws, rk.stream)
                 : moe_parallel_forward(rk.ep, x, router, out, ws, rk.stream);
      break;
    }
    case Path::kTensor: {
      const MoeWorkspace ws{rk.ws_tp.data(), rk.ws_tp.bytes()};
      s = routed ? moe_parallel_forward_routed(rk.tp, x, r, out, ws, rk.stream)
                 : moe_parallel_forward(rk.tp, x, router, out, ws, rk.stream);
      break;
    }
  }
  EXPECT_TRUE(s.ok()) << "rank " << rk.device << ": " << s.to_string();
  EXPECT_EQ(cudaStreamSynchronize(rk.stream), cudaSuccess);
  return dout.to_host<std::uint16_t>(static_cast<std::size_t>(T * H));
}

struct AccuracyParam {
  ModelShape shape;
  MoeWeightLayout layout;
};
std::string param_name(const ::testing::TestParamInfo<AccuracyParam>& info) {
  return std::string(info.param.shape.name) + (info.param.layout == MoeWeightLayout::kNK ? "_nk" : "_kn");
}

class MoeParallelAccuracy : public MoeParallelTest, public ::testing::WithParamInterface<AccuracyParam> {};

TEST_P(MoeParallelAccuracy, MatchesSingleGpuAndIsDeterministic) {
  const AccuracyParam p = GetParam();
  auto rng = make_rng();
  const MoeConfig whole = layer_config(p.shape, p.layout, kMaxTokens);
  const auto E = p.shape.E, k = p.shape.k, H = p.shape.H, I = p.shape.I;
  const auto hw1 = random_bf16(rng, static_cast<std::size_t>(E * 2 * I * H), 1.0f / std::sqrt(float(H)));
  const auto hw2 = random_bf16(rng, static_cast<std::size_t>(E * H * I), 1.0f / std::sqrt(float(I)));
  Rank ranks[kRanks];
  on_ranks(kRanks, [&](int r) { ranks[r].setup(r, whole, hw1, hw2, comms_[r]); });
  if (HasFatalFailure()) return;

  for (std::int64_t T : {1, 7, 256, 4096}) {
    for (bool routed : {false, true}) {
      SCOPED_TRACE("T=" + std::to_string(T) + (routed ? " routed to rank 0's experts" : " router logits"));
      Inputs in[kRanks];
      for (auto& i : in) {
        i.T = T;
        i.x = random_bf16(rng, static_cast<std::size_t>(T * H), 1.0f);
        i.logits = random_floats(rng, static_cast<std::size_t>(T * E), -4.f, 4.f);
        // Every id on rank 0's experts: rank 1 receives no token.
        if (routed) random_routing(rng, T, k, E / kRanks, &i.ids, &i.weights);
      }
      std::vector<std::uint16_t> ref[kRanks], ep[kRanks][2], tp[kRanks][2];
      on_ranks(kRanks, [&](int r) {
        ref[r] = run_forward(ranks[r], Path::kSingle, in[r], routed);
        for (int rep = 0; rep < 2; ++rep) ep[r][rep] = run_forward(ranks[r], Path::kExpert, in[r], routed);
        // TP replicates the tokens: every rank passes rank 0's inputs.
        for (int rep = 0; rep < 2; ++rep) tp[r][rep] = run_forward(ranks[r], Path::kTensor, in[0], routed);
      });
      for (int r = 0; r < kRanks; ++r) {
        EXPECT_TRUE(close_to(ep[r][0], ref[r])) << "EP rank " << r;
        EXPECT_EQ(ep[r][0], ep[r][1]) << "EP rank " << r << " is not deterministic";
        EXPECT_TRUE(close_to(tp[r][0], ref[0])) << "TP rank " << r;
        EXPECT_EQ(tp[r][0], tp[r][1]) << "TP rank " << r << " is not deterministic";
      }
      EXPECT_EQ(tp[0][0], tp[1][0]) << "TP ranks disagree";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, MoeParallelAccuracy,
                         ::testing::Values(AccuracyParam{kQwen3, MoeWeightLayout::kNK},
                                           AccuracyParam{kQwen3, MoeWeightLayout::kKN},
                                           AccuracyParam{kDeepSeekV2Lite, MoeWeightLayout::kNK},
                                           AccuracyParam{kDeepSeekV2Lite, MoeWeightLayout::kKN}),
                         param_name);

// ---------------------------------------------------------------------------------------
// Small layers: ranks without tokens, graphs, faults.

const ModelShape kSmall{"small", 8, 2, 64, 32, MoeTopkNorm::kRenormalize};
constexpr std::int64_t kSmallMax = 16;

struct SmallWorld {
  Rank ranks[kRanks];
  // EP workspaces large enough for every variant the fault tests pass (top_k up to E), so a
  // rank's own checks pass and the cross-rank comparison is what fails.
  DeviceBuffer ws_any[kRanks];
  void setup(MoeComm* comms, std::mt19937_64& rng) {
    const MoeConfig whole = layer_config(kSmall, MoeWeightLayout::kNK, kSmallMax);
    const auto hw1 = random_bf16(rng, static_cast<std::size_t>(8 * 2 * 32 * 64), 0.125f);
    const auto hw2 = random_bf16(rng, static_cast<std::size_t>(8 * 64 * 32), 0.18f);
    on_ranks(kRanks, [&](int r) {
      ranks[r].setup(r, whole, hw1, hw2, comms[r]);
      MoeParallelConfig widest = ranks[r].ep.config;
      widest.layer.top_k = widest.layer.num_experts;
      std::size_t bytes = 0;
      ASSERT_TRUE(moe_parallel_workspace_size(widest, &bytes).ok());
      ws_any[r] = DeviceBuffer(bytes);
    });
  }
};

Inputs small_inputs(std::mt19937_64& rng, std::int64_t T) {
  Inputs i;
  i.T = T;
  i.x = random_bf16(rng, static_cast<std::size_t>(T * kSmall.H), 1.0f);
  i.logits = random_floats(rng, static_cast<std::size_t>(T * kSmall.E), -4.f, 4.f);
  return i;
}

TEST_F(MoeParallelTest, ExpertParallelRankWithoutTokens) {
  auto rng = make_rng();
  SmallWorld w;
  w.setup(comms_, rng);
  const Inputs in[kRanks] = {small_inputs(rng, 9), small_inputs(rng, 0)};
  std::vector<std::uint16_t> ref, got[kRanks];
  on_ranks(kRanks, [&](int r) {
    if (r == 0) ref = run_forward(w.ranks[r], Path::kSingle, in[r], false);
    got[r] = run_forward(w.ranks[r], Path::kExpert, in[r], false);
  });
  EXPECT_TRUE(close_to(got[0], ref));
  EXPECT_TRUE(got[1].empty());
}

TEST_F(MoeParallelTest, TensorParallelGraphReplayIsBitIdentical) {
  auto rng = make_rng();
  SmallWorld w;
  w.setup(comms_, rng);
  const Inputs in = small_inputs(rng, 13);
  std::vector<std::uint16_t> eager[kRanks], replay[kRanks];
  on_ranks(kRanks, [&](int r) {
    Rank& rk = w.ranks[r];
    eager[r] = run_forward(rk, Path::kTensor, in, false);
    DeviceBuffer dx = DeviceBuffer::from(in.x), dlogits = DeviceBuffer::from(in.logits);
    DeviceBuffer dout(static_cast<std::size_t>(in.T * kSmall.H * 2));
    dout.poison();
    MoeRouterInput router;
    router.logits = device_view(dlogits, DType::kF32, {in.T, kSmall.E});
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // the legacy-stream poison is done before capture
    ASSERT_EQ(cudaStreamBeginCapture(rk.stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    const Status s = moe_parallel_forward(rk.tp, device_view(dx, DType::kBF16, {in.T, kSmall.H}), router,
                                          device_view(dout, DType::kBF16, {in.T, kSmall.H}),
                                          MoeWorkspace{rk.ws_tp.data(), rk.ws_tp.bytes()}, rk.stream);
    ASSERT_EQ(cudaStreamEndCapture(rk.stream, &graph), cudaSuccess);
    ASSERT_TRUE(s.ok()) << s.to_string();
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int rep = 0; rep < 3; ++rep) ASSERT_EQ(cudaGraphLaunch(exec, rk.stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(rk.stream), cudaSuccess);
    replay[r] = dout.to_host<std::uint16_t>(static_cast<std::size_t>(in.T * kSmall.H));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  });
  for (int r = 0; r < kRanks; ++r) EXPECT_EQ(eager[r], replay[r]) << "rank " << r;
}

// Runs one EP forward per rank with per-rank configs/inputs; returns the statuses.
struct Call {
  MoeParallelLayer layer;
  Inputs in;
};
std::vector<Status> ep_calls(SmallWorld& w, Call (&calls)[kRanks]) {
  std::vector<Status> st(kRanks);
  on_ranks(kRanks, [&](int r) {
    Rank& rk = w.ranks[r];
    const Inputs& in = calls[r].in;
    DeviceBuffer dx = DeviceBuffer::from(in.x), dlogits = DeviceBuffer::from(in.logits);
    DeviceBuffer dout(std::max<std::size_t>(16, static_cast<std::size_t>(in.T * kSmall.H * 2)));
    dout.poison();
    MoeRouterInput router;
    router.logits = device_view(dlogits, DType::kF32, {in.T, calls[r].layer.config.layer.num_experts});
    st[r] = moe_parallel_forward(calls[r].layer, device_view(dx, DType::kBF16, {in.T, kSmall.H}), router,
                                 device_view(dout, DType::kBF16, {in.T, kSmall.H}),
                                 MoeWorkspace{w.ws_any[r].data(), w.ws_any[r].bytes()}, rk.stream);
    EXPECT_EQ(cudaStreamSynchronize(rk.stream), cudaSuccess);
  });
  return st;
}

::testing::AssertionResult has_error(const Status& s, const std::string& text) {
  if (s.ok()) return ::testing::AssertionFailure() << "expected an error containing \"" << text << "\", got OK";
  if (s.message().find(text) == std::string::npos) {
    return ::testing::AssertionFailure() << "expected \"" << text << "\" in: " << s.to_string();
  }
  return ::testing::AssertionSuccess();
}

// After a fault the communicators still work: a valid EP call on both ranks matches the reference.
void expect_valid_call_works(SmallWorld& w, std::mt19937_64& rng) {
  const Inputs in[kRanks] = {small_inputs(rng, 5), small_inputs(rng, 11)};
  std::vector<std::uint16_t> ref[kRanks], got[kRanks];
  on_ranks(kRanks, [&](int r) {
    ref[r] = run_forward(w.ranks[r], Path::kSingle, in[r], false);
    got[r] = run_forward(w.ranks[r], Path::kExpert, in[r], false);
  });
  for (int r = 0; r < kRanks; ++r) EXPECT_TRUE(close_to(got[r], ref[r])) << "rank " << r;
}

TEST_F(MoeParallelTest, FaultMismatchedConfigs) {
  auto rng = make_rng();
  SmallWorld w;
  w.setup(comms_, rng);
  Call calls[kRanks] = {{w.ranks[0].ep, small_inputs(rng, 4)}, {w.ranks[1].ep, small_inputs(rng, 4)}};
  calls[1].layer.config.layer.top_k = 3;
  auto st = ep_calls(w, calls);
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_TRUE(has_error(st[r], "the ranks' configurations differ: layer.top_k is 2 on rank 0 but 3 on rank 1"))
        << "rank " << r;
  }
  // Differences outside the header's named fields are caught by the fingerprint.
  calls[1].layer = w.ranks[1].ep;
  calls[1].layer.config.layer.routing.norm = MoeTopkNorm::kNone;
  st = ep_calls(w, calls);
  for (int r = 0; r < kRanks; ++r) EXPECT_TRUE(has_error(st[r], "fingerprint")) << "rank " << r;

  // TP exchanges nothing per call; moe_parallel_check catches it, on both ranks.
  std::vector<Status> checked(kRanks);
  on_ranks(kRanks, [&](int r) {
    MoeParallelLayer layer = w.ranks[r].tp;
    if (r == 1) layer.config.layer.routing.routed_scaling_factor = 2.0f;
    checked[r] = moe_parallel_check(layer, MoeWorkspace{w.ranks[r].ws_tp.data(), w.ranks[r].ws_tp.bytes()},
                                    w.ranks[r].stream);
  });
  for (int r = 0; r < kRanks; ++r) EXPECT_TRUE(has_error(checked[r], "moe_parallel_check: the ranks' configurations differ"));
  expect_valid_call_works(w, rng);
}

TEST_F(MoeParallelTest, FaultExpertsNotDivisible) {
  auto rng = make_rng();
  SmallWorld w;
  w.setup(comms_, rng);
  Call calls[kRanks] = {{w.ranks[0].ep, small_inputs(rng, 4)}, {w.ranks[1].ep, small_inputs(rng, 4)}};
  for (auto& c : calls) c.layer.config.layer.num_experts = 7;
  auto st = ep_calls(w, calls);
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_TRUE(has_error(st[r], "config.layer.num_experts (7) is not divisible by expert_parallel_size (2)"));
  }
  // Only rank 1 is wrong: it says why, rank 0 learns of it through the header exchange.
  calls[0].layer = w.ranks[0].ep;
  st = ep_calls(w, calls);
  EXPECT_TRUE(has_error(st[0], "layer.num_experts is 8 on rank 0 but 7 on rank 1"));
  EXPECT_TRUE(has_error(st[1], "is not divisible by expert_parallel_size (2)"));
  expect_valid_call_works(w, rng);
}

TEST_F(MoeParallelTest, FaultCommunicatorOfWrongSize) {
  auto rng = make_rng();
  SmallWorld w;
  w.setup(comms_, rng);
  Call calls[kRanks] = {{w.ranks[0].ep, small_inputs(rng, 4)}, {w.ranks[1].ep, small_inputs(rng, 4)}};
  for (auto& c : calls) c.layer.config.layer.expert_parallel_size = 4;
  auto st = ep_calls(w, calls);
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_TRUE(has_error(st[r], "layer.comm: the communicator has 2 ranks but the config asks for "
                                 "layer.expert_parallel_size = 4"));
  }
  // TP: the same check, local on every rank.
  std::vector<Status> tp(kRanks);
  on_ranks(kRanks, [&](int r) {
    MoeParallelLayer layer = w.ranks[r].tp;
    layer.config.tensor_parallel_size = 4;
    const Inputs in = small_inputs(rng, 3);
    DeviceBuffer dx = DeviceBuffer::from(in.x), dl = DeviceBuffer::from(in.logits), dout(3 * 64 * 2);
    MoeRouterInput router;
    router.logits = device_view(dl, DType::kF32, {3, 8});
    tp[r] = moe_parallel_forward(layer, device_view(dx, DType::kBF16, {3, 64}), router,
                                 device_view(dout, DType::kBF16, {3, 64}),
                                 MoeWorkspace{w.ranks[r].ws_tp.data(), w.ranks[r].ws_tp.bytes()}, w.ranks[r].stream);
  });
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_TRUE(has_error(tp[r], "the communicator has 2 ranks but the config asks for tensor_parallel_size = 4"));
  }
  // A communicator of one rank for a 2-rank config.
  MoeComm solo;
  const int dev0 = 0;
  ASSERT_TRUE(moe_comm_init_all(1, &dev0, &solo).ok());
  on_ranks(1, [&](int) {
    MoeParallelLayer layer = w.ranks[0].ep;
    layer.comm = solo;
    const Inputs in = small_inputs(rng, 2);
    DeviceBuffer dx = DeviceBuffer::from(in.x), dl = DeviceBuffer::from(in.logits), dout(2 * 64 * 2);
    MoeRouterInput router;
    router.logits = device_view(dl, DType::kF32, {2, 8});
    const Status s = moe_parallel_forward(layer, device_view(dx, DType::kBF16, {2, 64}), router,
                                          device_view(dout, DType::kBF16, {2, 64}),
                                          MoeWorkspace{w.ranks[0].ws_ep.data(), w.ranks[0].ws_ep.bytes()},
                                          w.ranks[0].stream);
    EXPECT_TRUE(has_error(s, "the communicator has 1 ranks but the config asks for layer.expert_parallel_size = 2"));
  });
  moe_comm_destroy(&solo);
  expect_valid_call_works(w, rng);
}

TEST_F(MoeParallelTest, FaultTooManyTokensOnOneRank) {
  auto rng = make_rng();
  SmallWorld w;
  w.setup(comms_, rng);
  Call calls[kRanks] = {{w.ranks[0].ep, small_inputs(rng, 4)}, {w.ranks[1].ep, small_inputs(rng, kSmallMax + 1)}};
  const auto st = ep_calls(w, calls);
  EXPECT_TRUE(has_error(st[0], "rank 1 rejected this call"));
  EXPECT_TRUE(has_error(st[1], "x: T = 17 tokens exceeds config.layer.max_tokens (16)"));
  expect_valid_call_works(w, rng);
}

TEST_F(MoeParallelTest, FaultLocalErrorsBeforeAnyExchange) {
  auto rng = make_rng();
  SmallWorld w;
  w.setup(comms_, rng);
  const Inputs in = small_inputs(rng, 3);
  // These return on the rank that makes them, before communicating, so one rank alone may call.
  on_ranks(1, [&](int) {
    Rank& rk = w.ranks[0];
    DeviceBuffer dx = DeviceBuffer::from(in.x), dl = DeviceBuffer::from(in.logits), dout(3 * 64 * 2);
    MoeRouterInput router;
    router.logits = device_view(dl, DType::kF32, {3, 8});
    const TensorView x = device_view(dx, DType::kBF16, {3, 64}), out = device_view(dout, DType::kBF16, {3, 64});
    const MoeWorkspace ws{rk.ws_ep.data(), rk.ws_ep.bytes()};

    MoeParallelLayer no_comm = rk.ep;
    no_comm.comm = MoeComm{};
    EXPECT_TRUE(has_error(moe_parallel_forward(no_comm, x, router, out, ws, rk.stream), "layer.comm: null NCCL communicator"));

    EXPECT_TRUE(has_error(moe_parallel_forward(rk.ep, x, router, out, MoeWorkspace{rk.ws_ep.data(), 64}, rk.stream),
                          "cannot even hold the rank headers"));

    // Rank 1's communicator called with GPU 0 current.
    EXPECT_TRUE(has_error(moe_parallel_forward(w.ranks[1].ep, x, router, out, ws, rk.stream),
                          "the current CUDA device is cuda:0 but layer.comm belongs to cuda:1"));

    // EP reads counts on the host: capturing it is refused up front.
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ASSERT_EQ(cudaStreamBeginCapture(rk.stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    const Status captured = moe_parallel_forward(rk.ep, x, router, out, ws, rk.stream);
    ASSERT_EQ(cudaStreamEndCapture(rk.stream, &graph), cudaSuccess);
    if (graph != nullptr) cudaGraphDestroy(graph);
    EXPECT_TRUE(has_error(captured, "cannot be captured in a CUDA graph"));
  });
  expect_valid_call_works(w, rng);
}

TEST_F(MoeParallelTest, FaultBadTensorOnOneRankFailsBoth) {
  auto rng = make_rng();
  SmallWorld w;
  w.setup(comms_, rng);
  std::vector<Status> st(kRanks);
  on_ranks(kRanks, [&](int r) {
    Rank& rk = w.ranks[r];
    const Inputs in = small_inputs(rng, 4);
    DeviceBuffer dx = DeviceBuffer::from(in.x), dl = DeviceBuffer::from(in.logits), dout(4 * 64 * 2);
    MoeRouterInput router;
    router.logits = device_view(dl, DType::kF32, {4, 8});
    // Rank 1 passes an fp32-typed out.
    const TensorView out = device_view(dout, r == 1 ? DType::kF32 : DType::kBF16, {4, r == 1 ? 32 : 64});
    st[r] = moe_parallel_forward(rk.ep, device_view(dx, DType::kBF16, {4, 64}), router, out,
                                 MoeWorkspace{rk.ws_ep.data(), rk.ws_ep.bytes()}, rk.stream);
  });
  EXPECT_TRUE(has_error(st[0], "rank 1 rejected this call"));
  EXPECT_TRUE(has_error(st[1], "out: expected dtype bf16"));
  expect_valid_call_works(w, rng);
}

// ---------------------------------------------------------------------------------------
// The plan kernel against its host reference (one GPU).

TEST(EpPlanKernel, MatchesHostReference) {
  FUSEKIT_SKIP_WITHOUT_GPU();
  auto rng = make_rng();
  for (auto [T, k, E, R] : std::vector<std::array<std::int64_t, 4>>{
           {1, 8, 128, 2}, {7, 6, 64, 2}, {4096, 8, 128, 2}, {3000, 8, 256, 8}, {513, 1, 8, 8}, {0, 2, 8, 2}}) {
    SCOPED_TRACE("T=" + std::to_string(T) + " k=" + std::to_string(k) + " R=" + std::to_string(R));
    std::vector<std::int32_t> ids;
    std::vector<float> unused;
    random_routing(rng, T, k, E, &ids, &unused);
    if (T > 3) {
      ids[3] = -1;  // no owner
      ids[static_cast<std::size_t>(T * k - 1)] = static_cast<std::int32_t>(E);
    }
    const auto want = dist::ep_plan_reference(ids.data(), T, k, E, R);
    DeviceBuffer dids(std::max<std::size_t>(4, ids.size() * 4)), dplan(std::max<std::int64_t>(1, T * R * 2) * 4),
        dhdr(static_cast<std::size_t>(R) * 64);
    if (!ids.empty()) dids.upload(ids.data(), ids.size() * 4);
    dplan.poison();
    dist::EpDims dims;
    dims.tokens = T;
    dims.top_k = static_cast<std::int32_t>(k);
    dims.num_experts = static_cast<std::int32_t>(E);
    dims.experts_per_rank = static_cast<std::int32_t>(E / R);
    dims.ranks = static_cast<std::int32_t>(R);
    dims.hidden = 64;
    dims.meta_width = static_cast<std::int32_t>(2 + 2 * k);
    dist::WireHeader tmpl{};
    tmpl.magic = dist::kHeaderMagic;
    tmpl.top_k = 77;
    const dist::EpPlanArgs args{dims, static_cast<const std::int32_t*>(dids.data()),
                                static_cast<std::int32_t*>(dplan.data()), tmpl,
                                static_cast<dist::WireHeader*>(dhdr.data())};
    ASSERT_TRUE(dist::launch_ep_plan_rows(args, nullptr).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto plan = dplan.to_host<std::int32_t>(static_cast<std::size_t>(T * R * 2));
    const auto hdr = dhdr.to_host<dist::WireHeader>(static_cast<std::size_t>(R));
    EXPECT_EQ(plan, want.dest_plan);
    for (std::int64_t d = 0; d < R; ++d) {
      EXPECT_EQ(hdr[d].rows, want.rows[d]) << "d=" << d;
      EXPECT_EQ(hdr[d].pairs, want.pairs[d]) << "d=" << d;
      EXPECT_EQ(hdr[d].magic, dist::kHeaderMagic);
      EXPECT_EQ(hdr[d].top_k, 77);
    }
  }
}

}  // namespace
}  // namespace fusekit::testing

#else
TEST(MoeParallel, NeedsNccl) { GTEST_SKIP() << "this build has no NCCL"; }
#endif
