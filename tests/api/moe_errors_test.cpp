// MoE argument checks: every bad input returns an error with the exact text below, and no
// output (out, the workspace, a stage's outputs) is written — each is poisoned before the call
// and compared byte for byte after it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/moe_cpu.h"
#include "fusekit/moe.h"
#include "support/test_support.h"

namespace fusekit::testing {
namespace {

// 64-byte aligned bytes filled with a pattern.
class Bytes {
 public:
  Bytes(std::size_t n, std::uint8_t fill) : storage_(n + 64, fill), size_(n) {}
  std::uint8_t* data() {
    auto p = reinterpret_cast<std::uintptr_t>(storage_.data());
    return storage_.data() + ((64 - p % 64) % 64);
  }
  std::vector<std::uint8_t> snapshot() { return std::vector<std::uint8_t>(data(), data() + size_); }
  std::size_t size() const { return size_; }

 private:
  std::vector<std::uint8_t> storage_;
  std::size_t size_;
};

std::string ptr(const void* p) {
  std::ostringstream os;
  os << p;
  return os.str();
}

// A valid layer call: E = 8, k = 2, H = 64, I = 24, T = max_tokens = 4, softmax, NK, cpu.
struct Call {
  static constexpr std::int64_t E = 8, k = 2, H = 64, I = 24, T = 4;
  MoeConfig config;
  Bytes x_buf{8 * 80 * 2, 0x3c}, logits_buf{8 * 16 * 4, 0x3f}, bias_buf{16 * 4, 0x00};
  Bytes w1_buf{E * 2 * I * H * 2 + 64, 0x3c}, w2_buf{E * H * I * 2 + 64, 0x3c};
  Bytes ids_buf{T * k * 8, 0x00}, weights_buf{T * k * 8, 0x3f};
  Bytes out_buf{8 * 80 * 4, 0x5a};
  std::size_t ws_bytes = 0;
  Bytes ws_buf{1, 0};
  MoeLayer layer;
  TensorView x, out;
  MoeRouterInput router;
  MoeRouted routed;
  MoeWorkspace ws;

  Call() {
    config.num_experts = E;
    config.top_k = k;
    config.hidden = H;
    config.intermediate = I;
    config.max_tokens = T;
    config.backend = MoeBackend::kCpu;
    EXPECT_TRUE(moe_workspace_size(config, &ws_bytes).ok());
    ws_buf = Bytes(ws_bytes + 64, 0x77);
    x = TensorView::contiguous(x_buf.data(), DType::kBF16, {T, H});
    out = TensorView::contiguous(out_buf.data(), DType::kBF16, {T, H});
    router.logits = TensorView::contiguous(logits_buf.data(), DType::kF32, {T, E});
    // Logits in [-2, 2): bytes 0x3f3f3f3f = 0.747.
    routed.topk_ids = TensorView::contiguous(ids_buf.data(), DType::kI32, {T, k});
    routed.topk_weights = TensorView::contiguous(weights_buf.data(), DType::kF32, {T, k});
    ws = MoeWorkspace{ws_buf.data(), ws_bytes};
    relayer();
  }
  // Weight views for the current config.
  void relayer() {
    layer.config = config;
    const bool nk = config.layout == MoeWeightLayout::kNK;
    layer.weights.w1 = nk ? TensorView::contiguous(w1_buf.data(), DType::kBF16, {E, 2 * I, H})
                          : TensorView::contiguous(w1_buf.data(), DType::kBF16, {E, H, 2 * I});
    layer.weights.w2 = nk ? TensorView::contiguous(w2_buf.data(), DType::kBF16, {E, H, I})
                          : TensorView::contiguous(w2_buf.data(), DType::kBF16, {E, I, H});
  }
  void sigmoid() {
    config.routing.mode = MoeRoutingMode::kSigmoidGroupedTopK;
    config.routing.num_groups = 4;
    config.routing.topk_groups = 2;
    router.correction_bias = TensorView::contiguous(bias_buf.data(), DType::kF32, {E});
    layer.config = config;
  }
  Status forward() {
    layer.config = config;
    return moe_forward(layer, x, router, out, ws, nullptr);
  }
  Status forward_routed() {
    layer.config = config;
    return moe_forward_routed(layer, x, routed, out, ws, nullptr);
  }
};

// The call fails with exactly `text` (and `code`) and writes neither out nor the workspace.
void expect_error(Call& c, Status (Call::*run)(), const std::string& text,
                  StatusCode code = StatusCode::kInvalidArgument) {
  const auto out_before = c.out_buf.snapshot();
  const auto ws_before = c.ws_buf.snapshot();
  const auto ids_before = c.ids_buf.snapshot();
  const Status st = (c.*run)();
  EXPECT_EQ(st.code(), code) << st.to_string();
  EXPECT_EQ(st.message(), text);
  EXPECT_TRUE(c.out_buf.snapshot() == out_before) << "out was written";
  EXPECT_TRUE(c.ws_buf.snapshot() == ws_before) << "workspace was written";
  EXPECT_TRUE(c.ids_buf.snapshot() == ids_before) << "topk_ids was written";
}
void expect_forward_error(Call& c, const std::string& text, StatusCode code = StatusCode::kInvalidArgument) {
  expect_error(c, &Call::forward, text, code);
}

TEST(MoeErrors, ValidCallSucceedsAndWrites) {
  Call c;
  const auto before = c.out_buf.snapshot();
  const Status st = c.forward();
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_FALSE(c.out_buf.snapshot() == before);
  Call r;
  ASSERT_TRUE(r.forward_routed().ok());
  Call s;
  s.sigmoid();
  const Status sst = s.forward();
  ASSERT_TRUE(sst.ok()) << sst.to_string();
}

TEST(MoeErrors, ConfigRanges) {
  struct Case {
    void (*edit)(MoeConfig&);
    const char* text;
  };
  const Case cases[] = {
      {[](MoeConfig& c) { c.num_experts = 0; }, "config.num_experts: expected 1 <= num_experts <= 512, got 0"},
      {[](MoeConfig& c) { c.num_experts = 600; }, "config.num_experts: expected 1 <= num_experts <= 512, got 600"},
      {[](MoeConfig& c) { c.top_k = 0; }, "config.top_k: expected 1 <= top_k <= num_experts = 8, got 0"},
      {[](MoeConfig& c) { c.top_k = 9; }, "config.top_k: expected 1 <= top_k <= num_experts = 8, got 9"},
      {[](MoeConfig& c) { c.hidden = 60; }, "config.hidden: expected a multiple of 8 in [8, 65536], got 60"},
      {[](MoeConfig& c) { c.intermediate = 0; }, "config.intermediate: expected a multiple of 8 in [8, 65536], got 0"},
      {[](MoeConfig& c) { c.max_tokens = 0; }, "config.max_tokens: expected >= 1, got 0"},
      {[](MoeConfig& c) { c.max_tokens = std::int64_t(1) << 31; },
       "config.max_tokens: max_tokens * top_k = 2147483648 * 2 pairs (plus block padding) exceeds the int32 index "
       "range"},
      {[](MoeConfig& c) { c.layout = static_cast<MoeWeightLayout>(5); }, "config.layout: expected kNK or kKN, got 5"},
      {[](MoeConfig& c) { c.gate_up_order = static_cast<MoeGateUpOrder>(4); },
       "config.gate_up_order: expected kHalves or kInterleaved8, got 4"},
      {[](MoeConfig& c) {
         c.layout = MoeWeightLayout::kKN;
         c.gate_up_order = MoeGateUpOrder::kInterleaved8;
       },
       "config.gate_up_order: kInterleaved8 needs layout kNK, got kKN"},
      {[](MoeConfig& c) { c.backend = static_cast<MoeBackend>(9); },
       "config.backend: unknown value 9; valid values: auto, cpu, cuda, cuda-ref"},
      {[](MoeConfig& c) { c.routing.mode = static_cast<MoeRoutingMode>(7); },
       "config.routing.mode: expected kSoftmaxTopK or kSigmoidGroupedTopK, got 7"},
      {[](MoeConfig& c) { c.routing.norm = static_cast<MoeTopkNorm>(3); },
       "config.routing.norm: expected kNone or kRenormalize, got 3"},
      {[](MoeConfig& c) { c.routing.routed_scaling_factor = std::nanf(""); },
       "config.routing.routed_scaling_factor: expected a finite value > 0, got nan"},
      {[](MoeConfig& c) { c.routing.routed_scaling_factor = 0.f; },
       "config.routing.routed_scaling_factor: expected a finite value > 0, got 0"},
      {[](MoeConfig& c) { c.routing.num_groups = 2; },
       "config.routing.num_groups: expected 1 for softmax top-k routing (grouped top-k is kSigmoidGroupedTopK), got 2"},
      {[](MoeConfig& c) { c.routing.topk_groups = 2; },
       "config.routing.topk_groups: expected 1 for softmax top-k routing (grouped top-k is kSigmoidGroupedTopK), got "
       "2"},
      {[](MoeConfig& c) { c.expert_parallel_size = 0; }, "config.expert_parallel_size: expected 1, got 0"},
  };
  for (const Case& cs : cases) {
    Call c;
    cs.edit(c.config);
    expect_forward_error(c, cs.text);
    std::size_t bytes = 12345;
    const Status st = moe_workspace_size(c.config, &bytes);
    EXPECT_EQ(st.message(), cs.text) << "moe_workspace_size";
    EXPECT_EQ(bytes, 12345u) << "moe_workspace_size wrote its output on error";
  }
}

TEST(MoeErrors, SigmoidGrouping) {
  {
    Call c;
    c.sigmoid();
    c.config.routing.num_groups = 3;
    expect_forward_error(c, "config.routing.num_groups: expected a divisor of num_experts = 8, got 3");
  }
  {
    Call c;
    c.sigmoid();
    c.config.routing.topk_groups = 5;
    expect_forward_error(c, "config.routing.topk_groups: expected 1 <= topk_groups <= num_groups = 4, got 5");
  }
  {
    Call c;
    c.sigmoid();
    c.config.routing.topk_groups = 1;
    c.config.top_k = 3;
    expect_forward_error(c,
                         "config.top_k: expected <= topk_groups * (num_experts / num_groups) = 1 * 2 = 2 experts in "
                         "the chosen groups, got 3");
  }
}

TEST(MoeErrors, ExpertParallelismPointsToMoeParallel) {
  Call c;
  c.config.expert_parallel_size = 2;
  expect_forward_error(c,
                       "config.expert_parallel_size: 2 asks for expert parallelism, which the single-device moe_* "
                       "entry points do not do; use fusekit/moe_parallel.h (moe_parallel_forward over NCCL), or set "
                       "expert_parallel_size = 1",
                       StatusCode::kUnsupported);
}

TEST(MoeErrors, X) {
  {
    Call c;
    c.x.dtype = DType::kF32;
    expect_forward_error(c, "x: expected dtype bf16, got fp32[4, 64] on cpu");
  }
  {
    Call c;
    c.x = TensorView::contiguous(c.x_buf.data(), DType::kBF16, {4, 1, 64});
    expect_forward_error(c, "x: expected rank 2, got bf16[4, 1, 64] on cpu");
  }
  {
    Call c;
    c.x = TensorView::contiguous(c.x_buf.data(), DType::kBF16, {4, 56});
    expect_forward_error(c, "x: expected shape [T, hidden] = [T, 64], got bf16[4, 56] on cpu");
  }
  {
    Call c;
    c.x.strides[1] = 2;
    expect_forward_error(c, "x: expected contiguous rows (last stride 1), got bf16[4, 64] (strides [64, 2]) on cpu");
  }
  {
    Call c;  // T above the workspace's max tokens
    c.x = TensorView::contiguous(c.x_buf.data(), DType::kBF16, {5, 64});
    expect_forward_error(c,
                         "x: T = 5 tokens exceeds config.max_tokens = 4 (the workspace is sized for max_tokens), got "
                         "bf16[5, 64] on cpu");
  }
  {
    Call c;
    c.x.data = c.x_buf.data() + 2;
    expect_forward_error(c, "x: data pointer " + ptr(c.x.data) + " is not 16-byte aligned (bf16[4, 64] on cpu)");
  }
  {
    Call c;
    c.x.strides[0] = 68;
    expect_forward_error(c,
                         "x: row stride 68 elements (136 bytes) is not a multiple of 16 bytes (bf16[4, 64] (strides "
                         "[68, 1]) on cpu)");
  }
  {
    Call c;
    c.x.data = nullptr;
    expect_forward_error(c, "x: null data pointer for bf16[4, 64] on cpu");
  }
}

TEST(MoeErrors, RouterLogits) {
  {
    Call c;
    c.router.logits.dtype = DType::kF16;
    expect_forward_error(c, "router.logits: expected dtype fp32 or bf16, got fp16[4, 8] on cpu");
  }
  {
    Call c;  // E mismatch between the logits and the layer (config and weights say 8)
    c.router.logits = TensorView::contiguous(c.logits_buf.data(), DType::kF32, {4, 16});
    expect_forward_error(c, "router.logits: expected shape [T, num_experts] = [4, 8], got fp32[4, 16] on cpu");
  }
  {
    Call c;
    c.router.logits = TensorView::contiguous(c.logits_buf.data(), DType::kF32, {3, 8});
    expect_forward_error(c, "router.logits: expected shape [T, num_experts] = [4, 8], got fp32[3, 8] on cpu");
  }
  {
    Call c;
    c.router.logits.strides[1] = 2;
    expect_forward_error(c,
                         "router.logits: expected contiguous rows (last stride 1), got fp32[4, 8] (strides [8, 2]) on "
                         "cpu");
  }
  {
    Call c;
    c.router.logits.data = c.logits_buf.data() + 2;
    expect_forward_error(c, "router.logits: data pointer " + ptr(c.router.logits.data) +
                                " is not 4-byte aligned (fp32[4, 8] on cpu)");
  }
  {
    Call c;
    c.router.correction_bias = TensorView::contiguous(c.bias_buf.data(), DType::kF32, {8});
    expect_forward_error(c,
                         "router.correction_bias: only kSigmoidGroupedTopK routing takes a correction bias; pass an "
                         "empty view for kSoftmaxTopK, got fp32[8] on cpu");
  }
  {
    Call c;
    c.sigmoid();
    c.router.correction_bias = TensorView::contiguous(c.bias_buf.data(), DType::kF32, {7});
    expect_forward_error(c, "router.correction_bias: expected shape [num_experts] = [8], got fp32[7] on cpu");
  }
  {
    Call c;
    c.sigmoid();
    c.router.correction_bias.dtype = DType::kBF16;
    expect_forward_error(c, "router.correction_bias: expected dtype fp32, got bf16[8] on cpu");
  }
}

TEST(MoeErrors, Weights) {
  {
    Call c;
    c.layer.weights.w1.dtype = DType::kF16;
    expect_forward_error(c, "layer.weights.w1: expected dtype bf16, got fp16[8, 48, 64] on cpu");
  }
  {
    Call c;  // E mismatch between the weights and the config / logits
    c.layer.weights.w1 = TensorView::contiguous(c.w1_buf.data(), DType::kBF16, {7, 48, 64});
    expect_forward_error(c,
                         "layer.weights.w1: expected shape [num_experts, 2*intermediate, hidden] = [8, 48, 64] (layout "
                         "kNK), got bf16[7, 48, 64] on cpu");
  }
  {
    Call c;  // NK tensors under a KN config: the wrong layout
    c.config.layout = MoeWeightLayout::kKN;
    expect_forward_error(c,
                         "layer.weights.w1: expected shape [num_experts, hidden, 2*intermediate] = [8, 64, 48] (layout "
                         "kKN), got bf16[8, 48, 64] on cpu");
  }
  {
    Call c;
    c.config.layout = MoeWeightLayout::kKN;
    c.relayer();
    c.layer.weights.w2 = TensorView::contiguous(c.w2_buf.data(), DType::kBF16, {8, 64, 24});
    expect_forward_error(c,
                         "layer.weights.w2: expected shape [num_experts, intermediate, hidden] = [8, 24, 64] (layout "
                         "kKN), got bf16[8, 64, 24] on cpu");
  }
  {
    Call c;
    c.layer.weights.w2.strides[1] = 1;
    c.layer.weights.w2.strides[2] = 64;
    expect_forward_error(c,
                         "layer.weights.w2: expected a contiguous tensor, got bf16[8, 64, 24] (strides [1536, 1, 64]) "
                         "on cpu");
  }
  {
    Call c;
    c.layer.weights.w1.data = c.w1_buf.data() + 8;
    expect_forward_error(c, "layer.weights.w1: data pointer " + ptr(c.layer.weights.w1.data) +
                                " is not 16-byte aligned (bf16[8, 48, 64] on cpu)");
  }
  {
    Call c;
    c.layer.weights.w2 = TensorView::contiguous(c.w2_buf.data(), DType::kBF16, {8 * 64, 24});
    expect_forward_error(c, "layer.weights.w2: expected rank 3, got bf16[512, 24] on cpu");
  }
}

TEST(MoeErrors, Out) {
  {
    Call c;
    c.out = TensorView::contiguous(c.out_buf.data(), DType::kBF16, {3, 64});
    expect_forward_error(c, "out: expected shape [T, hidden] = [4, 64] (the shape of x), got bf16[3, 64] on cpu");
  }
  {
    Call c;
    c.out.dtype = DType::kF32;
    expect_forward_error(c, "out: expected dtype bf16, got fp32[4, 64] on cpu");
  }
  {
    Call c;
    c.out.data = c.out_buf.data() + 4;
    expect_forward_error(c, "out: data pointer " + ptr(c.out.data) + " is not 16-byte aligned (bf16[4, 64] on cpu)");
  }
  {
    Call c;  // out aliasing x: x would be read after out is written
    c.x = TensorView::contiguous(c.out_buf.data(), DType::kBF16, {4, 64});
    expect_forward_error(c, "out: overlaps x (out bf16[4, 64] on cpu, x bf16[4, 64] on cpu)");
  }
  {
    Call c;
    c.out = TensorView::contiguous(c.w2_buf.data(), DType::kBF16, {4, 64});
    const auto w2_before = c.w2_buf.snapshot();
    const Status st = c.forward();
    EXPECT_EQ(st.message(), "out: overlaps layer.weights.w2 (out bf16[4, 64] on cpu, layer.weights.w2 bf16[8, 64, 24] on cpu)");
    EXPECT_TRUE(c.w2_buf.snapshot() == w2_before);
  }
}

TEST(MoeErrors, Devices) {
  {
    Call c;
    c.layer.weights.w1.device = DeviceType::kCUDA;
    expect_forward_error(c, "layer.weights.w1: expected a tensor on cpu, got bf16[8, 48, 64] on cuda:0");
  }
  {
    Call c;
    c.out.device = DeviceType::kCUDA;
    expect_forward_error(c, "out: expected a tensor on cpu, got bf16[4, 64] on cuda:0");
  }
#if !FUSEKIT_WITH_CUDA
  {
    Call c;  // every tensor labelled cuda: the cpu backend cannot take them
    for (TensorView* t : {&c.x, &c.out, &c.router.logits, &c.layer.weights.w1, &c.layer.weights.w2}) {
      t->device = DeviceType::kCUDA;
    }
    // relayer() would reset the weights; forward() only copies the config.
    expect_forward_error(c,
                         "config.backend: backend cpu cannot run on CUDA tensors (x is bf16[4, 64] on cuda:0); valid "
                         "values: auto, cpu, cuda, cuda-ref (cpu takes host tensors)");
  }
#endif
}

TEST(MoeErrors, Workspace) {
  const std::size_t cpu_need = cpu::moe_workspace_size_cpu(Call().config);
  {
    Call c;
    c.ws.bytes = cpu_need - 1;
    expect_forward_error(c, "workspace: expected at least " + std::to_string(cpu_need) +
                                " bytes for backend cpu (moe_workspace_size), got " + std::to_string(cpu_need - 1));
  }
  {
    Call c;
    c.ws.data = nullptr;
    expect_forward_error(c, "workspace: null data pointer for " + std::to_string(c.ws_bytes) + " bytes");
  }
  {
    Call c;
    c.ws.data = c.ws_buf.data() + 8;
    expect_forward_error(c, "workspace: data pointer " + ptr(c.ws.data) + " is not 16-byte aligned (backend cpu)");
  }
  {
    Call c;  // out inside the workspace
    c.out = TensorView::contiguous(c.ws_buf.data() + 256, DType::kBF16, {4, 64});
    const std::string ws_desc = "int32[" + std::to_string(c.ws_bytes / 4) + "] on cpu";
    expect_forward_error(c, "workspace: overlaps out (workspace " + ws_desc + ", out bf16[4, 64] on cpu)");
  }
  {
    Call c;
    const Status st = moe_workspace_size(c.config, nullptr);
    EXPECT_EQ(st.message(), "bytes: null output pointer");
  }
}

TEST(MoeErrors, Routed) {
  {
    Call c;
    c.routed.topk_ids.dtype = DType::kI64;
    expect_error(c, &Call::forward_routed, "routed.topk_ids: expected dtype int32, got int64[4, 2] on cpu");
  }
  {
    Call c;
    c.routed.topk_weights = TensorView::contiguous(c.weights_buf.data(), DType::kF32, {4, 3});
    expect_error(c, &Call::forward_routed,
                 "routed.topk_weights: expected shape [T, top_k] = [4, 2], got fp32[4, 3] on cpu");
  }
  {
    Call c;
    c.routed.topk_ids.strides[0] = 4;
    expect_error(c, &Call::forward_routed,
                 "routed.topk_ids: expected a contiguous tensor, got int32[4, 2] (strides [4, 1]) on cpu");
  }
  {
    Call c;
    c.routed.topk_weights.data = static_cast<char*>(c.routed.topk_weights.data) + 2;
    expect_error(c, &Call::forward_routed,
                 "routed.topk_weights: data pointer " + ptr(c.routed.topk_weights.data) +
                     " is not 4-byte aligned (fp32[4, 2] on cpu)");
  }
}

// The backend: argument, else FUSEKIT_MOE_BACKEND, else the tensors' device.
TEST(MoeErrors, Backend) {
  MoeBackend b = MoeBackend::kCpu;
  Status st = parse_moe_backend("gpu", &b);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "unknown MoE backend \"gpu\"; valid values: auto, cpu, cuda, cuda-ref");
  EXPECT_EQ(b, MoeBackend::kCpu);
  for (MoeBackend want : {MoeBackend::kAuto, MoeBackend::kCpu, MoeBackend::kCuda, MoeBackend::kCudaRef}) {
    ASSERT_TRUE(parse_moe_backend(moe_backend_name(want), &b).ok());
    EXPECT_EQ(b, want);
  }
  EXPECT_EQ(parse_moe_backend(nullptr, &b).message(), "name: null; valid values: auto, cpu, cuda, cuda-ref");

#if FUSEKIT_WITH_CUDA
  const std::string cuda_text =
      "config.backend: backend cuda cannot run on host tensors (x is bf16[4, 64] on cpu); valid values: auto, cpu, "
      "cuda, cuda-ref (cuda and cuda-ref take device tensors)";
  const std::string env_text =
      "FUSEKIT_MOE_BACKEND: backend cuda-ref cannot run on host tensors (x is bf16[4, 64] on cpu); valid values: auto, "
      "cpu, cuda, cuda-ref (cuda and cuda-ref take device tensors)";
  const StatusCode no_cuda = StatusCode::kInvalidArgument;
#else
  const std::string cuda_text =
      "config.backend: backend cuda is not available: this build of fusekit has no CUDA backend; valid values: auto, "
      "cpu, cuda, cuda-ref (here: auto, cpu)";
  const std::string env_text =
      "FUSEKIT_MOE_BACKEND: backend cuda-ref is not available: this build of fusekit has no CUDA backend; valid "
      "values: auto, cpu, cuda, cuda-ref (here: auto, cpu)";
  const StatusCode no_cuda = StatusCode::kUnsupported;
#endif
  {
    Call c;
    c.config.backend = MoeBackend::kCuda;
    expect_forward_error(c, cuda_text, no_cuda);
  }
  {
    Call c;
    c.config.backend = MoeBackend::kAuto;
    ASSERT_EQ(0, setenv("FUSEKIT_MOE_BACKEND", "gpu", 1));
    expect_forward_error(c, "FUSEKIT_MOE_BACKEND: unknown backend \"gpu\"; valid values: auto, cpu, cuda, cuda-ref");
    ASSERT_EQ(0, setenv("FUSEKIT_MOE_BACKEND", "cuda-ref", 1));
    expect_forward_error(c, env_text, no_cuda);
    // The argument wins over the environment.
    c.config.backend = MoeBackend::kCpu;
    ASSERT_EQ(0, setenv("FUSEKIT_MOE_BACKEND", "gpu", 1));
    EXPECT_TRUE(c.forward().ok());
    unsetenv("FUSEKIT_MOE_BACKEND");
    c.config.backend = MoeBackend::kAuto;
    EXPECT_TRUE(c.forward().ok()) << "auto on host tensors is cpu";
  }
}

// ---- stage functions ----------------------------------------------------------------------

struct Stages : Call {
  static constexpr std::int64_t kBm = 16, kCap = 128;  // moe_align_capacity(4, 2, 8, 16)
  Bytes sorted_buf{kCap * 4 + 64, 0x11}, blocks_buf{(kCap / kBm) * 4 + 64, 0x22}, offsets_buf{16 * 4, 0x33},
      ntpp_buf{64, 0x44}, act_buf{kCap * 32 * 2, 0x55}, y_buf{8 * 80 * 2, 0x66};
  MoeAlignment a;
  TensorView act, y;
  Stages() {
    a.block_m = kBm;
    a.sorted_token_ids = TensorView::contiguous(sorted_buf.data(), DType::kI32, {kCap});
    a.expert_ids = TensorView::contiguous(blocks_buf.data(), DType::kI32, {kCap / kBm});
    a.expert_offsets = TensorView::contiguous(offsets_buf.data(), DType::kI32, {E + 1});
    a.num_tokens_post_padded = TensorView::contiguous(ntpp_buf.data(), DType::kI32, {1});
    act = TensorView::contiguous(act_buf.data(), DType::kBF16, {kCap, I});
    y = TensorView::contiguous(y_buf.data(), DType::kBF16, {T * k, H});
  }
  std::vector<std::vector<std::uint8_t>> outputs() {
    return {ids_buf.snapshot(), weights_buf.snapshot(), sorted_buf.snapshot(), blocks_buf.snapshot(),
            offsets_buf.snapshot(), ntpp_buf.snapshot(), act_buf.snapshot(), y_buf.snapshot(), out_buf.snapshot()};
  }
  Status route() { return moe_route(config, router, routed, nullptr); }
  Status align() { return moe_align(config, routed.topk_ids, a, nullptr); }
  Status gemm1() {
    layer.config = config;
    return moe_gemm1_swiglu(layer, x, a, act, nullptr);
  }
  Status gemm2() {
    layer.config = config;
    return moe_gemm2(layer, act, a, routed.topk_weights, y, nullptr);
  }
  Status finalize() { return moe_finalize(config, y, out, nullptr); }
};

void expect_stage_error(Stages& s, Status (Stages::*run)(), const std::string& text) {
  const auto before = s.outputs();
  const Status st = (s.*run)();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_EQ(st.message(), text);
  EXPECT_TRUE(s.outputs() == before) << "an output was written";
}

TEST(MoeStageErrors, ValidStagesSucceed) {
  Stages s;
  // Valid ids first (the buffer holds a pattern), then every stage in order.
  ASSERT_TRUE(s.route().ok());
  Status st = s.align();
  ASSERT_TRUE(st.ok()) << st.to_string();
  st = s.gemm1();
  ASSERT_TRUE(st.ok()) << st.to_string();
  st = s.gemm2();
  ASSERT_TRUE(st.ok()) << st.to_string();
  st = s.finalize();
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(moe_align_capacity(4, 2, 8, 16), Stages::kCap);
}

TEST(MoeStageErrors, Route) {
  {
    Stages s;
    s.routed.topk_ids = TensorView::contiguous(s.ids_buf.data(), DType::kI32, {4, 3});
    expect_stage_error(s, &Stages::route, "routed.topk_ids: expected shape [T, top_k] = [4, 2], got int32[4, 3] on cpu");
  }
  {
    Stages s;
    s.routed.topk_weights.dtype = DType::kBF16;
    expect_stage_error(s, &Stages::route, "routed.topk_weights: expected dtype fp32, got bf16[4, 2] on cpu");
  }
  {
    Stages s;
    s.routed.topk_weights.data = s.routed.topk_ids.data;
    expect_stage_error(s, &Stages::route,
                       "routed.topk_ids: overlaps routed.topk_weights (routed.topk_ids int32[4, 2] on cpu, "
                       "routed.topk_weights fp32[4, 2] on cpu)");
  }
  {
    Stages s;
    s.routed.topk_ids.data = s.router.logits.data;
    expect_stage_error(s, &Stages::route,
                       "routed.topk_ids: overlaps router.logits (routed.topk_ids int32[4, 2] on cpu, router.logits "
                       "fp32[4, 8] on cpu)");
  }
  {
    Stages s;
    s.router.logits = TensorView::contiguous(s.logits_buf.data(), DType::kF32, {4, 9});
    expect_stage_error(s, &Stages::route,
                       "router.logits: expected shape [T, num_experts] = [T, 8], got fp32[4, 9] on cpu");
  }
  {
    Stages s;
    s.config.top_k = 10;
    expect_stage_error(s, &Stages::route, "config.top_k: expected 1 <= top_k <= num_experts = 8, got 10");
  }
}

TEST(MoeStageErrors, Align) {
  {
    Stages s;
    s.a.block_m = 0;
    expect_stage_error(s, &Stages::align, "alignment.block_m: expected 1 <= block_m <= 4096, got 0");
  }
  {
    Stages s;
    s.a.sorted_token_ids = TensorView::contiguous(s.sorted_buf.data(), DType::kI32, {64});
    expect_stage_error(s, &Stages::align,
                       "alignment.sorted_token_ids: expected shape [capacity] with capacity >= moe_align_capacity(T = "
                       "4, top_k = 2, num_experts = 8, block_m = 16) = 128 and a multiple of block_m, got int32[64] on "
                       "cpu");
  }
  {
    Stages s;
    s.a.sorted_token_ids = TensorView::contiguous(s.sorted_buf.data(), DType::kI32, {130});
    expect_stage_error(s, &Stages::align,
                       "alignment.sorted_token_ids: expected shape [capacity] with capacity >= moe_align_capacity(T = "
                       "4, top_k = 2, num_experts = 8, block_m = 16) = 128 and a multiple of block_m, got int32[130] on "
                       "cpu");
  }
  {
    Stages s;
    s.a.expert_ids = TensorView::contiguous(s.blocks_buf.data(), DType::kI32, {7});
    expect_stage_error(s, &Stages::align,
                       "alignment.expert_ids: expected shape [capacity / block_m] = [8], got int32[7] on cpu");
  }
  {
    Stages s;
    s.a.expert_offsets = TensorView::contiguous(s.offsets_buf.data(), DType::kI32, {8});
    expect_stage_error(s, &Stages::align,
                       "alignment.expert_offsets: expected shape [num_experts + 1] = [9], got int32[8] on cpu");
  }
  {
    Stages s;
    s.a.num_tokens_post_padded.dtype = DType::kI64;
    expect_stage_error(s, &Stages::align,
                       "alignment.num_tokens_post_padded: expected dtype int32, got int64[1] on cpu");
  }
  {
    Stages s;
    s.routed.topk_ids.dtype = DType::kF32;
    expect_stage_error(s, &Stages::align, "topk_ids: expected dtype int32, got fp32[4, 2] on cpu");
  }
  {
    Stages s;
    s.a.expert_ids.data = s.a.sorted_token_ids.data;
    expect_stage_error(s, &Stages::align,
                       "alignment.sorted_token_ids: overlaps alignment.expert_ids (alignment.sorted_token_ids "
                       "int32[128] on cpu, alignment.expert_ids int32[8] on cpu)");
  }
  {
    Stages s;
    s.a.expert_offsets.device = DeviceType::kCUDA;
    expect_stage_error(s, &Stages::align,
                       "alignment.expert_offsets: expected a tensor on cpu, got int32[9] on cuda:0");
  }
}

TEST(MoeStageErrors, Gemms) {
  {
    Stages s;
    s.act = TensorView::contiguous(s.act_buf.data(), DType::kBF16, {128, 32});
    expect_stage_error(s, &Stages::gemm1,
                       "act: expected shape [capacity, intermediate] = [128, 24], got bf16[128, 32] on cpu");
  }
  {
    Stages s;
    s.act = TensorView::contiguous(s.act_buf.data(), DType::kBF16, {112, 24});
    expect_stage_error(s, &Stages::gemm1,
                       "act: expected shape [capacity, intermediate] = [128, 24], got bf16[112, 24] on cpu");
  }
  {
    Stages s;
    s.x.dtype = DType::kF16;
    expect_stage_error(s, &Stages::gemm1, "x: expected dtype bf16, got fp16[4, 64] on cpu");
  }
  {
    Stages s;
    s.act.data = s.x.data;
    expect_stage_error(s, &Stages::gemm1,
                       "act: overlaps x (act bf16[128, 24] on cpu, x bf16[4, 64] on cpu)");
  }
  {
    Stages s;
    s.y = TensorView::contiguous(s.y_buf.data(), DType::kBF16, {4, 64});
    expect_stage_error(s, &Stages::gemm2, "y: expected shape [T * top_k, hidden] = [8, 64], got bf16[4, 64] on cpu");
  }
  {
    Stages s;
    s.routed.topk_weights.dtype = DType::kI32;
    expect_stage_error(s, &Stages::gemm2, "topk_weights: expected dtype fp32, got int32[4, 2] on cpu");
  }
  {
    Stages s;
    s.layer.weights.w2 = TensorView::contiguous(s.w2_buf.data(), DType::kBF16, {8, 24, 64});
    s.config.layout = MoeWeightLayout::kNK;
    expect_stage_error(s, &Stages::gemm2,
                       "layer.weights.w2: expected shape [num_experts, hidden, intermediate] = [8, 64, 24] (layout "
                       "kNK), got bf16[8, 24, 64] on cpu");
  }
  {
    Stages s;
    s.y.data = s.act.data;
    expect_stage_error(s, &Stages::gemm2,
                       "y: overlaps act (y bf16[8, 64] on cpu, act bf16[128, 24] on cpu)");
  }
}

TEST(MoeStageErrors, Finalize) {
  {
    Stages s;
    s.y.strides[0] = 72;
    expect_stage_error(s, &Stages::finalize,
                       "y: expected a contiguous tensor, got bf16[8, 64] (strides [72, 1]) on cpu");
  }
  {
    Stages s;
    s.y = TensorView::contiguous(s.y_buf.data(), DType::kBF16, {9, 64});
    expect_stage_error(s, &Stages::finalize, "y: expected shape [T * top_k, hidden] = [8, 64], got bf16[9, 64] on cpu");
  }
  {
    Stages s;
    s.out.data = s.y.data;
    expect_stage_error(s, &Stages::finalize, "out: overlaps y (out bf16[4, 64] on cpu, y bf16[8, 64] on cpu)");
  }
}

TEST(MoeErrors, PrepareWeights) {
  Call c;
  Bytes d1(c.w1_buf.size(), 0x99), d2(c.w2_buf.size(), 0x99);
  const MoeConfig to = moe_prepared_config(c.config);
  const bool nk = to.layout == MoeWeightLayout::kNK;
  // dst in the other layout's shapes.
  MoeWeights dst{nk ? TensorView::contiguous(d1.data(), DType::kBF16, {8, 64, 48})
                    : TensorView::contiguous(d1.data(), DType::kBF16, {8, 48, 64}),
                 TensorView::contiguous(d2.data(), DType::kBF16, {8, 64, 24})};
  const auto before = d1.snapshot();
  const Status st = moe_prepare_weights(c.config, to, c.layer.weights, dst, nullptr);
  EXPECT_EQ(st.message(), nk ? "dst.w1: expected shape [num_experts, 2*intermediate, hidden] = [8, 48, 64] (layout "
                               "kNK), got bf16[8, 64, 48] on cpu"
                             : "dst.w1: expected shape [num_experts, hidden, 2*intermediate] = [8, 64, 48] (layout "
                               "kKN), got bf16[8, 48, 64] on cpu");
  EXPECT_TRUE(d1.snapshot() == before);
  MoeWeights same{c.layer.weights.w1, c.layer.weights.w2};
  if (nk) {
    EXPECT_EQ(moe_prepare_weights(c.config, to, c.layer.weights, same, nullptr).message(),
              "dst.w1: overlaps src.w1 (dst.w1 bf16[8, 48, 64] on cpu, src.w1 bf16[8, 48, 64] on cpu)");
  }
  // The target format: another shape, kInterleaved8 in KN, and a reorder out of kInterleaved8.
  MoeWeights good{TensorView::contiguous(d1.data(), DType::kBF16, {8, 48, 64}),
                  TensorView::contiguous(d2.data(), DType::kBF16, {8, 64, 24})};
  MoeConfig wider = to;
  wider.hidden = 128;
  EXPECT_EQ(moe_prepare_weights(c.config, wider, c.layer.weights, good, nullptr).message(),
            "to: must differ from config in layout and gate_up_order only, got (E, H, I) = (8, 128, 24) vs config's "
            "(8, 64, 24)");
  MoeConfig kn_interleaved = to;
  kn_interleaved.layout = MoeWeightLayout::kKN;
  kn_interleaved.gate_up_order = MoeGateUpOrder::kInterleaved8;
  EXPECT_EQ(moe_prepare_weights(c.config, kn_interleaved, c.layer.weights, good, nullptr).message(),
            "to.gate_up_order: kInterleaved8 needs layout kNK, got kKN");
  MoeConfig interleaved = c.config;
  interleaved.layout = MoeWeightLayout::kNK;
  interleaved.gate_up_order = MoeGateUpOrder::kInterleaved8;
  MoeConfig halves = interleaved;
  halves.gate_up_order = MoeGateUpOrder::kHalves;
  EXPECT_EQ(moe_prepare_weights(interleaved, halves, good, good, nullptr).message(),
            "to.gate_up_order: W1 is reordered from kHalves only (config.gate_up_order is kInterleaved8)");
  EXPECT_TRUE(d1.snapshot() == before);
}

}  // namespace
}  // namespace fusekit::testing
