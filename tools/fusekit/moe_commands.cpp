// `fusekit demo|verify|bench moe`: the BF16 fused MoE layer from the command line.
//
//   verify  GPU: the shapes (bench/cases/moe_shapes.json), both layouts and both
//           routing modes, T in --tokens (default 1,7,64,257,4096): `cuda` and `cuda-ref` against
//           the CPU oracle on up to --oracle-rows rows (first and last half; tokens are
//           independent, so rows of the layer are the layer of those rows), and `cuda` against
//           `cuda-ref` on every row. No GPU: the `cpu` backend on the same shapes with H and I
//           divided by 8, against a per-token reference (the oracle's routing, then direct
//           per-(token, slot) loops instead of the aligned stages). Prints one table row per
//           check: shape, variant, T, backend, rows checked, rel-L2, max-abs, NaN count, result.
//           Passes with rel-L2 <= 1e-2 and no NaN.
//   demo    GPU: a Qwen3-30B-A3B layer on `cuda`, checked against the oracle and timed.
//           No GPU: a small layer on `cpu`, checked and timed.
//   bench   GPU: the forward (`cuda`) and each stage through its public function, median us
//           (CUDA events; graph replay of 10 calls for T <= --graph-max-tokens, eager above),
//           TFLOP/s, GB/s of weights touched (bytes of the distinct experts the routing hits),
//           and floor = max(FLOPs / matmul rate, touched bytes / copy bandwidth), both ceilings
//           measured in the same run; --json PATH writes bench/results format. The forward is
//           timed over kBenchInputSets token windows (different x, logits, hence experts)
//           taken in turn (while kBenchInputSets * T <= kMaxRotatedRows), so the weights of one
//           call are not in L2 for the next one, as in a model where the next layer's weights
//           come between (bench/moe_peers.py does the same). With stages, `moe_routed` is the
//           layer from each window's precomputed routing (moe_forward_routed, same rotation), so
//           moe - moe_routed is what routing adds to the layer; the per-stage and cuda-ref rows
//           reuse the first window.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "moe_shape_config.h"
#include "cli.h"
#include "common/float_bits.h"
#include "cpu/moe_ref.h"
#include "fusekit/fusekit.h"
#include "fusekit/moe.h"

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace {

using fusekit::DType;
using fusekit::MoeBackend;
using fusekit::MoeConfig;
using fusekit::MoeGateUpOrder;
using fusekit::MoeRoutingMode;
using fusekit::MoeTopkNorm;
using fusekit::MoeWeightLayout;
using fusekit::Status;
using fusekit::TensorView;
using bf16 = std::uint16_t;

// ---- shapes (same list as bench/cases/moe_shapes.json) ------------------------------------

struct MoeCase {
  const char* name;
  std::int64_t E, k, H, I;
  MoeRoutingMode mode;        // the model's routing; verify also runs the other mode
  MoeTopkNorm norm;
  std::int64_t groups, topk_groups;
  float scale;
};

constexpr MoeRoutingMode kSoftmax = MoeRoutingMode::kSoftmaxTopK;
constexpr MoeRoutingMode kSigmoid = MoeRoutingMode::kSigmoidGroupedTopK;
constexpr MoeTopkNorm kRenorm = MoeTopkNorm::kRenormalize;
constexpr std::int64_t kBenchInputSets = 4;      // token windows the bench forward rotates through
constexpr std::int64_t kMaxRotatedRows = 16384;  // ... while kBenchInputSets * T stays within this

const MoeCase kCases[] = {
    {"qwen3-30b-a3b", 128, 8, 2048, 768, kSoftmax, kRenorm, 1, 1, 1.f},
    {"qwen3-235b-a22b", 128, 8, 4096, 1536, kSoftmax, kRenorm, 1, 1, 1.f},
    {"mixtral-8x7b", 8, 2, 4096, 14336, kSoftmax, kRenorm, 1, 1, 1.f},
    {"deepseek-v2-lite", 64, 6, 2048, 1408, kSoftmax, MoeTopkNorm::kNone, 1, 1, 1.f},
    {"odd-e7-k3", 7, 3, 200, 96, kSoftmax, kRenorm, 1, 1, 1.f},
    {"one-expert", 1, 1, 64, 32, kSoftmax, kRenorm, 1, 1, 1.f},
    {"e256-k8-h7168-i256", 256, 8, 7168, 256, kSigmoid, kRenorm, 8, 4, 2.5f},
    {"e512-k10-h1024-i128", 512, 10, 1024, 128, kSigmoid, kRenorm, 8, 4, 1.f},
};

const MoeCase* find_case(const std::string& name) {
  for (const MoeCase& c : kCases) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    if (comma > pos) out.push_back(s.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return out;
}

// One way of running a shape: its layout and routing.
struct Variant {
  MoeWeightLayout layout = MoeWeightLayout::kNK;
  MoeRoutingMode mode = kSoftmax;
  MoeGateUpOrder gate_up_order = MoeGateUpOrder::kHalves;  // bench --gate-up-order
};
std::string variant_name(const Variant& v) {
  return std::string(v.layout == MoeWeightLayout::kNK ? "nk" : "kn") + "/" + (v.mode == kSoftmax ? "softmax" : "sigmoid");
}

MoeConfig config_of(const MoeCase& c, const Variant& v, std::int64_t max_tokens) {
  MoeConfig cfg = fusekit::bench::moe_config_of_shape(c.E, c.k, c.H, c.I, max_tokens);
  cfg.layout = v.layout;
  cfg.gate_up_order = v.gate_up_order;
  cfg.routing.mode = v.mode;
  cfg.routing.norm = c.norm;
  cfg.routing.routed_scaling_factor = c.scale;
  if (v.mode == kSigmoid) {
    // The case's grouping when it has one, else the largest of 8, 4, 2 groups that divides E.
    std::int64_t g = c.groups;
    if (g == 1) {
      for (std::int64_t cand : {8, 4, 2}) {
        if (c.E % cand == 0 && c.E >= cand) {
          g = cand;
          break;
        }
      }
    }
    const std::int64_t per = c.E / g;
    cfg.routing.num_groups = g;
    cfg.routing.topk_groups = std::max<std::int64_t>(c.mode == kSigmoid ? c.topk_groups : g / 2, (c.k + per - 1) / per);
  }
  return cfg;
}

// ---- host data ----------------------------------------------------------------------------

std::uint64_t splitmix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// Uniform in (-scale, scale), never 0 (odd numerators over 2^23), from a counter: fast enough
// for gigabytes of weights, spread over the host's cores.
template <typename Store>
void fill(std::size_t n, std::uint64_t seed, Store store) {
  const std::size_t threads = std::max<std::size_t>(1, std::min<std::size_t>(16, std::thread::hardware_concurrency()));
  const std::size_t chunk = (n + threads - 1) / threads;
  auto work = [&](std::size_t t) {
    for (std::size_t i = t * chunk; i < std::min(n, (t + 1) * chunk); ++i) {
      const std::uint64_t r = splitmix(seed * 0x100000001b3ull + i);
      store(i, static_cast<float>((r >> 40) | 1u) / 8388608.0f - 1.0f);
    }
  };
  if (n < (std::size_t(1) << 20) || threads == 1) {
    for (std::size_t t = 0; t < threads; ++t) work(t);
    return;
  }
  std::vector<std::thread> pool;
  for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();
}
std::vector<bf16> random_bf16(std::size_t n, std::uint64_t seed, float scale) {
  std::vector<bf16> v(n);
  fill(n, seed, [&](std::size_t i, float u) { v[i] = fusekit::float_to_bf16_bits(u * scale); });
  return v;
}
std::vector<float> random_f32(std::size_t n, std::uint64_t seed, float scale) {
  std::vector<float> v(n);
  fill(n, seed, [&](std::size_t i, float u) { v[i] = u * scale; });
  return v;
}

// A layer and inputs for max_tokens tokens, on the host.
struct HostLayer {
  MoeConfig config;
  std::vector<bf16> x, w1, w2;
  std::vector<float> logits, bias;

  HostLayer(const MoeConfig& c, std::uint64_t seed) : config(c) {
    const std::int64_t E = c.num_experts, H = c.hidden, I = c.intermediate, M = c.max_tokens;
    x = random_bf16(static_cast<std::size_t>(M * H), seed + 1, 1.0f);
    w1 = random_bf16(static_cast<std::size_t>(E * 2 * I * H), seed + 2, 1.0f / std::sqrt(static_cast<float>(H)));
    w2 = random_bf16(static_cast<std::size_t>(E * H * I), seed + 3, 1.0f / std::sqrt(static_cast<float>(I)));
    logits = random_f32(static_cast<std::size_t>(M * E), seed + 4, 4.0f);
    if (c.routing.mode == kSigmoid) bias = random_f32(static_cast<std::size_t>(E), seed + 5, 0.2f);
  }
  std::int64_t E() const { return config.num_experts; }
  std::int64_t H() const { return config.hidden; }
  std::int64_t I() const { return config.intermediate; }
  std::vector<std::int64_t> w1_shape() const {
    return config.layout == MoeWeightLayout::kNK ? std::vector<std::int64_t>{E(), 2 * I(), H()}
                                                 : std::vector<std::int64_t>{E(), H(), 2 * I()};
  }
  std::vector<std::int64_t> w2_shape() const {
    return config.layout == MoeWeightLayout::kNK ? std::vector<std::int64_t>{E(), H(), I()}
                                                 : std::vector<std::int64_t>{E(), I(), H()};
  }
  // W1[e][n][h] and W2[e][h][i] whatever the layout.
  float w1_at(std::int64_t e, std::int64_t n, std::int64_t h) const {
    const std::int64_t N = 2 * I();
    const std::size_t at = config.layout == MoeWeightLayout::kNK ? (e * N + n) * H() + h : (e * H() + h) * N + n;
    return fusekit::bf16_bits_to_float(w1[at]);
  }
  float w2_at(std::int64_t e, std::int64_t h, std::int64_t i) const {
    const std::size_t at = config.layout == MoeWeightLayout::kNK ? (e * H() + h) * I() + i : (e * I() + i) * H() + h;
    return fusekit::bf16_bits_to_float(w2[at]);
  }
};

TensorView view3(void* p, const std::vector<std::int64_t>& s, fusekit::DeviceType dev) {
  return TensorView::contiguous(p, DType::kBF16, {s[0], s[1], s[2]}, dev, 0);
}

// The CPU oracle (the `cpu` backend) on tokens [t0, t0 + n): bf16 bits of [n, H].
Status oracle_rows(const HostLayer& L, std::int64_t t0, std::int64_t n, std::vector<bf16>* out) {
  fusekit::MoeLayer layer;
  layer.config = L.config;
  layer.config.backend = MoeBackend::kCpu;
  layer.config.max_tokens = std::max<std::int64_t>(n, 1);
  layer.weights.w1 = view3(const_cast<bf16*>(L.w1.data()), L.w1_shape(), fusekit::DeviceType::kCPU);
  layer.weights.w2 = view3(const_cast<bf16*>(L.w2.data()), L.w2_shape(), fusekit::DeviceType::kCPU);
  std::size_t bytes = 0;
  FUSEKIT_RETURN_IF_ERROR(fusekit::moe_workspace_size(layer.config, &bytes));
  std::vector<std::uint64_t> ws(bytes / 8 + 64);
  auto* aligned = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(ws.data()) + 255) / 256 * 256);
  out->assign(static_cast<std::size_t>(n * L.H()), 0xFFFF);
  fusekit::MoeRouterInput r;
  r.logits = TensorView::contiguous(const_cast<float*>(L.logits.data()) + t0 * L.E(), DType::kF32, {n, L.E()});
  if (!L.bias.empty()) r.correction_bias = TensorView::contiguous(const_cast<float*>(L.bias.data()), DType::kF32, {L.E()});
  return fusekit::moe_forward(layer, TensorView::contiguous(const_cast<bf16*>(L.x.data()) + t0 * L.H(), DType::kBF16, {n, L.H()}),
                              r, TensorView::contiguous(out->data(), DType::kBF16, {n, L.H()}),
                              fusekit::MoeWorkspace{aligned, bytes}, nullptr);
}

// A per-token reference independent of the oracle's aligned stages: the oracle's routing of
// each token, then for each slot act = bf16(silu(x.Wg) * (x.Wu)), y = bf16(w * act.W2),
// out = bf16(sum of y) — the roundings the stages make, in a different loop order.
std::vector<double> reference_rows(const HostLayer& L, std::int64_t t0, std::int64_t n) {
  const MoeConfig& c = L.config;
  const std::int64_t E = c.num_experts, k = c.top_k, H = c.hidden, I = c.intermediate;
  std::vector<double> out(static_cast<std::size_t>(n * H));
  std::vector<std::int32_t> ids(k);
  std::vector<float> w(k), xf(H), act(I);
  std::vector<double> sum(H);
  for (std::int64_t t = t0; t < t0 + n; ++t) {
    fusekit::cpu::route_ref_token(c.routing, E, k, L.logits.data() + t * E, L.bias.empty() ? nullptr : L.bias.data(),
                                  ids.data(), w.data());
    for (std::int64_t h = 0; h < H; ++h) xf[h] = fusekit::bf16_bits_to_float(L.x[t * H + h]);
    std::fill(sum.begin(), sum.end(), 0.0);
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t e = ids[j];
      for (std::int64_t i = 0; i < I; ++i) {
        double g = 0, u = 0;
        for (std::int64_t h = 0; h < H; ++h) {
          g += static_cast<double>(xf[h]) * L.w1_at(e, i, h);
          u += static_cast<double>(xf[h]) * L.w1_at(e, I + i, h);
        }
        act[i] = fusekit::bf16_bits_to_float(fusekit::float_to_bf16_bits(static_cast<float>(g / (1 + std::exp(-g)) * u)));
      }
      for (std::int64_t h = 0; h < H; ++h) {
        double d = 0;
        for (std::int64_t i = 0; i < I; ++i) d += static_cast<double>(act[i]) * L.w2_at(e, h, i);
        sum[h] += fusekit::bf16_bits_to_float(fusekit::float_to_bf16_bits(static_cast<float>(w[j] * d)));
      }
    }
    for (std::int64_t h = 0; h < H; ++h) {
      out[(t - t0) * H + h] = fusekit::bf16_bits_to_float(fusekit::float_to_bf16_bits(static_cast<float>(sum[h])));
    }
  }
  return out;
}

struct Check {
  std::int64_t rows = 0;
  double rel_l2 = 0, max_abs = 0;
  std::int64_t nan = 0;
  bool ok() const { return nan == 0 && rel_l2 <= 1e-2; }
};

// Accumulates rows of got (bf16) against ref.
struct Accum {
  double diff2 = 0, ref2 = 0, max_abs = 0;
  std::int64_t nan = 0, rows = 0;
  void add(const bf16* got, const double* ref, std::int64_t n, std::int64_t row_len) {
    for (std::int64_t i = 0; i < n * row_len; ++i) {
      const double g = fusekit::bf16_bits_to_float(got[i]);
      if (!std::isfinite(g)) {
        ++nan;
        continue;
      }
      diff2 += (g - ref[i]) * (g - ref[i]);
      ref2 += ref[i] * ref[i];
      max_abs = std::max(max_abs, std::fabs(g - ref[i]));
    }
    rows += n;
  }
  Check result() const {
    Check c;
    c.rows = rows;
    c.rel_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
    c.max_abs = max_abs;
    c.nan = nan;
    return c;
  }
};


void print_header() {
  std::printf("%-20s %-12s %6s %-15s %6s %10s %10s %5s  %s\n", "shape", "variant", "T", "backend", "rows", "rel-L2",
              "max-abs", "NaN", "result");
}
void print_row(const std::string& shape, const std::string& variant, std::int64_t T, const std::string& backend,
               const Check& c, const std::string& note = "") {
  std::printf("%-20s %-12s %6lld %-15s %6lld %10.2e %10.2e %5lld  %s%s\n", shape.c_str(), variant.c_str(),
              static_cast<long long>(T), backend.c_str(), static_cast<long long>(c.rows), c.rel_l2, c.max_abs,
              static_cast<long long>(c.nan), c.ok() ? "PASS" : "FAIL", note.c_str());
  std::fflush(stdout);
}

// Rows [0, a) and [T - b, T) with a + b = min(T, n): the checked subset of a big T.
void checked_ranges(std::int64_t T, std::int64_t n, std::int64_t* first, std::int64_t* last) {
  n = std::min(T, n);
  *first = (n + 1) / 2;
  *last = n - *first;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---- CPU path (no GPU) --------------------------------------------------------------------

MoeCase reduced(const MoeCase& c) {
  MoeCase r = c;
  auto shrink = [](std::int64_t v, std::int64_t floor) { return std::max<std::int64_t>(floor, (v / 8 + 7) / 8 * 8); };
  if (c.H > 256) r.H = shrink(c.H, 64);
  if (c.I > 128) r.I = shrink(c.I, 16);
  return r;
}

// The cpu backend on [0, T) against the per-token reference on up to `check_rows` rows.
int verify_cpu_case(const MoeCase& c, const Variant& v, const std::vector<std::int64_t>& tokens,
                    std::int64_t check_rows, std::uint64_t seed) {
  const std::int64_t max_t = *std::max_element(tokens.begin(), tokens.end());
  HostLayer L(config_of(c, v, max_t), seed);
  int failures = 0;
  for (std::int64_t T : tokens) {
    std::vector<bf16> out;
    const auto t0 = std::chrono::steady_clock::now();
    const Status s = oracle_rows(L, 0, T, &out);
    const double secs = seconds_since(t0);
    if (!s.ok()) {
      std::printf("%-20s %-12s %6lld cpu  ERROR %s\n", c.name, variant_name(v).c_str(), static_cast<long long>(T),
                  s.to_string().c_str());
      ++failures;
      continue;
    }
    std::int64_t first = 0, last = 0;
    checked_ranges(T, check_rows, &first, &last);
    Accum acc;
    acc.add(out.data(), reference_rows(L, 0, first).data(), first, L.H());
    if (last > 0) acc.add(out.data() + (T - last) * L.H(), reference_rows(L, T - last, last).data(), last, L.H());
    const Check chk = acc.result();
    failures += !chk.ok();
    char note[64];
    std::snprintf(note, sizeof note, "  (%.1f ms)", secs * 1e3);
    print_row(c.name, variant_name(v), T, "cpu", chk, note);
  }
  return failures;
}

#if FUSEKIT_WITH_CUDA
// ---- CUDA path ----------------------------------------------------------------------------

std::vector<double> widen(const std::vector<bf16>& v) {
  std::vector<double> d(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) d[i] = fusekit::bf16_bits_to_float(v[i]);
  return d;
}

struct DevMem {
  void* p = nullptr;
  std::size_t bytes = 0;
  DevMem() = default;
  explicit DevMem(std::size_t n) : bytes(n) {
    if (n && cudaMalloc(&p, n) != cudaSuccess) {
      cudaGetLastError();
      p = nullptr;
    }
  }
  ~DevMem() { cudaFree(p); }
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
  DevMem(DevMem&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; }
  DevMem& operator=(DevMem&& o) noexcept {
    std::swap(p, o.p);
    std::swap(bytes, o.bytes);
    return *this;
  }
  template <typename T>
  static DevMem from(const std::vector<T>& v) {
    DevMem m(std::max<std::size_t>(v.size() * sizeof(T), 16));
    if (m.p && !v.empty()) cudaMemcpy(m.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
    return m;
  }
};

// The layer's tensors on the device, with an output and a workspace for max_tokens tokens.
struct DeviceLayer {
  DevMem x, w1, w2, logits, bias, out, ws;
  std::size_t ws_bytes = 0;
  bool ok = false;
  explicit DeviceLayer(const HostLayer& L) {
    x = DevMem::from(L.x);
    w1 = DevMem::from(L.w1);
    w2 = DevMem::from(L.w2);
    logits = DevMem::from(L.logits);
    if (!L.bias.empty()) bias = DevMem::from(L.bias);
    out = DevMem(static_cast<std::size_t>(L.config.max_tokens * L.H() * 2));
    if (!fusekit::moe_workspace_size(L.config, &ws_bytes).ok()) return;
    ws = DevMem(std::max<std::size_t>(ws_bytes, 256));
    ok = x.p && w1.p && w2.p && logits.p && out.p && ws.p && (L.bias.empty() || bias.p);
  }
  fusekit::MoeLayer layer(const HostLayer& L, MoeBackend backend) const {
    fusekit::MoeLayer l;
    l.config = L.config;
    l.config.backend = backend;
    l.weights.w1 = view3(w1.p, L.w1_shape(), fusekit::DeviceType::kCUDA);
    l.weights.w2 = view3(w2.p, L.w2_shape(), fusekit::DeviceType::kCUDA);
    return l;
  }
  // Tokens [t0, t0 + T) of the inputs.
  fusekit::MoeRouterInput router(const HostLayer& L, std::int64_t T, std::int64_t t0 = 0) const {
    fusekit::MoeRouterInput r;
    r.logits = TensorView::contiguous(static_cast<float*>(logits.p) + t0 * L.E(), DType::kF32, {T, L.E()},
                                      fusekit::DeviceType::kCUDA, 0);
    if (bias.p) r.correction_bias = TensorView::contiguous(bias.p, DType::kF32, {L.E()}, fusekit::DeviceType::kCUDA, 0);
    return r;
  }
  TensorView xv(const HostLayer& L, std::int64_t T, std::int64_t t0 = 0) const {
    return TensorView::contiguous(static_cast<bf16*>(x.p) + t0 * L.H(), DType::kBF16, {T, L.H()},
                                  fusekit::DeviceType::kCUDA, 0);
  }
  TensorView outv(const HostLayer& L, std::int64_t T) const {
    return TensorView::contiguous(out.p, DType::kBF16, {T, L.H()}, fusekit::DeviceType::kCUDA, 0);
  }
  fusekit::MoeWorkspace workspace() const { return fusekit::MoeWorkspace{ws.p, ws_bytes}; }

  // The forward on [0, T) into a NaN-poisoned out; the output's bf16 bits.
  Status forward(const HostLayer& L, MoeBackend backend, std::int64_t T, std::vector<bf16>* result,
                 cudaStream_t stream = nullptr) const {
    cudaMemsetAsync(out.p, 0xFF, static_cast<std::size_t>(T * L.H() * 2), stream);
    FUSEKIT_RETURN_IF_ERROR(
        fusekit::moe_forward(layer(L, backend), xv(L, T), router(L, T), outv(L, T), workspace(), stream));
    if (cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) {
      return Status(fusekit::StatusCode::kCudaError, cudaGetErrorString(e));
    }
    result->resize(static_cast<std::size_t>(T * L.H()));
    cudaMemcpy(result->data(), out.p, result->size() * 2, cudaMemcpyDeviceToHost);
    return Status::Ok();
  }
};

// cuda and cuda-ref on [0, T) against the oracle on up to oracle_rows rows, and against each other.
int verify_cuda_tokens(const MoeCase& c, const Variant& v, const HostLayer& L, const DeviceLayer& D, std::int64_t T,
                       std::int64_t oracle_rows_max) {
  int failures = 0;
  std::int64_t first = 0, last = 0;
  checked_ranges(T, oracle_rows_max, &first, &last);
  std::vector<bf16> ref_first, ref_last;
  Status s = oracle_rows(L, 0, first, &ref_first);
  if (s.ok() && last > 0) s = oracle_rows(L, T - last, last, &ref_last);
  if (!s.ok()) {
    std::printf("%-20s %-12s %6lld oracle ERROR %s\n", c.name, variant_name(v).c_str(), static_cast<long long>(T),
                s.to_string().c_str());
    return 1;
  }
  const std::vector<double> rf = widen(ref_first), rl = widen(ref_last);
  std::vector<bf16> results[2];
  const MoeBackend backends[2] = {MoeBackend::kCuda, MoeBackend::kCudaRef};
  for (int b = 0; b < 2; ++b) {
    s = D.forward(L, backends[b], T, &results[b]);
    if (!s.ok()) {
      std::printf("%-20s %-12s %6lld %-15s ERROR %s\n", c.name, variant_name(v).c_str(), static_cast<long long>(T),
                  fusekit::moe_backend_name(backends[b]), s.to_string().c_str());
      ++failures;
      results[b].clear();
      continue;
    }
    Accum acc;
    acc.add(results[b].data(), rf.data(), first, L.H());
    if (last > 0) acc.add(results[b].data() + (T - last) * L.H(), rl.data(), last, L.H());
    const Check chk = acc.result();
    failures += !chk.ok();
    print_row(c.name, variant_name(v), T, fusekit::moe_backend_name(backends[b]), chk, "  vs cpu oracle");
  }
  if (!results[0].empty() && !results[1].empty()) {
    Accum acc;
    acc.add(results[0].data(), widen(results[1]).data(), T, L.H());
    const Check chk = acc.result();
    failures += !chk.ok();
    print_row(c.name, variant_name(v), T, "cuda", chk, "  vs cuda-ref, every row");
  }
  return failures;
}
#endif

// ---- verify -------------------------------------------------------------------------------

int verify(const fusekit::cli::Args& args) {
  const bool gpu = fusekit::cuda_available();
  std::vector<const MoeCase*> cases;
  for (const std::string& name : split(args.get("cases", ""))) {
    if (const MoeCase* c = find_case(name)) {
      cases.push_back(c);
    } else {
      std::printf("verify moe: unknown case %s\n", name.c_str());
      return 2;
    }
  }
  if (cases.empty()) {
    for (const MoeCase& c : kCases) cases.push_back(&c);
  }
  int failures = 0;
  const auto start = std::chrono::steady_clock::now();
  if (gpu) {
#if FUSEKIT_WITH_CUDA
    const std::vector<std::int64_t> tokens = args.get_int_list("tokens", {1, 7, 64, 257, 4096});
    const std::int64_t oracle_rows_max = args.get_int("oracle-rows", 64);
    std::printf("verify moe on %s: cuda and cuda-ref vs the CPU oracle (fp64 accumulation, bf16 act/y/out) on up to "
                "%lld rows per T (first and last), cuda vs cuda-ref on every row; pass: rel-L2 <= 1e-2, no NaN\n",
                fusekit::bench::device_name().c_str(), static_cast<long long>(oracle_rows_max));
    print_header();
    std::uint64_t seed = 1000;
    for (const MoeCase* c : cases) {
      const Variant variants[2] = {{MoeWeightLayout::kNK, c->mode},
                                   {MoeWeightLayout::kKN, c->mode == kSoftmax ? kSigmoid : kSoftmax}};
      for (const Variant& v : variants) {
        // The second variant stops at T = 4096 to bound the run time.
        std::vector<std::int64_t> ts;
        for (std::int64_t T : tokens) {
          if (&v == &variants[0] || T <= 4096) ts.push_back(T);
        }
        const std::int64_t max_t = *std::max_element(ts.begin(), ts.end());
        const HostLayer L(config_of(*c, v, max_t), seed += 10);
        const DeviceLayer D(L);
        if (!D.ok) {
          std::printf("%-20s %-12s  ERROR: cannot allocate the layer on the device\n", c->name, variant_name(v).c_str());
          ++failures;
          continue;
        }
        for (std::int64_t T : ts) failures += verify_cuda_tokens(*c, v, L, D, T, oracle_rows_max);
      }
    }
#endif
  } else {
    const std::vector<std::int64_t> tokens = args.get_int_list("tokens", {1, 7, 64, 257});
    const std::int64_t check_rows = args.get_int("oracle-rows", 32);
    std::printf("verify moe: no CUDA GPU (or no CUDA backend in this build): the cpu backend on the issue's shapes with "
                "H and I divided by 8, against a per-token reference on up to %lld rows per T; pass: rel-L2 <= 1e-2, "
                "no NaN\n",
                static_cast<long long>(check_rows));
    print_header();
    std::uint64_t seed = 2000;
    for (const MoeCase* c : cases) {
      const MoeCase r = reduced(*c);
      const std::string shown = r.H != c->H || r.I != c->I ? std::string(c->name) + "/8" : c->name;
      MoeCase named = r;
      named.name = shown.c_str();
      const Variant variants[2] = {{MoeWeightLayout::kNK, c->mode},
                                   {MoeWeightLayout::kKN, c->mode == kSoftmax ? kSigmoid : kSoftmax}};
      for (const Variant& v : variants) failures += verify_cpu_case(named, v, tokens, check_rows, seed += 10);
    }
  }
  std::printf("verify moe: %s (%.1f s)\n", failures ? "FAILED" : "all checks passed", seconds_since(start));
  return failures ? 1 : 0;
}

// ---- demo ---------------------------------------------------------------------------------

int demo(const fusekit::cli::Args&) {
  int failures = 0;
  if (fusekit::cuda_available()) {
#if FUSEKIT_WITH_CUDA
    const MoeCase& c = kCases[0];  // Qwen3-30B-A3B
    const Variant v{MoeWeightLayout::kNK, kSoftmax};
    const std::vector<std::int64_t> tokens = {1, 16, 256, 4096};
    const HostLayer L(config_of(c, v, tokens.back()), 42);
    const DeviceLayer D(L);
    std::printf("moe: a Qwen3-30B-A3B layer (E=128, top_k=8, H=2048, I=768, bf16, NK, softmax top-k) on the cuda "
                "backend of %s, checked against the CPU oracle (fp64 accumulation) on up to 16 rows per T, timed with "
                "CUDA events\n",
                fusekit::bench::device_name().c_str());
    if (!D.ok) {
      std::printf("  ERROR: cannot allocate the layer on the device\n");
      return 1;
    }
    cudaStream_t stream;
    cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    for (std::int64_t T : tokens) {
      std::vector<bf16> got, ref_first, ref_last;
      Status s = D.forward(L, MoeBackend::kCuda, T, &got, stream);
      std::int64_t first = 0, last = 0;
      checked_ranges(T, 16, &first, &last);
      if (s.ok()) s = oracle_rows(L, 0, first, &ref_first);
      if (s.ok() && last > 0) s = oracle_rows(L, T - last, last, &ref_last);
      if (!s.ok()) {
        std::printf("  T=%-5lld ERROR %s\n", static_cast<long long>(T), s.to_string().c_str());
        ++failures;
        continue;
      }
      Accum acc;
      acc.add(got.data(), widen(ref_first).data(), first, L.H());
      if (last > 0) acc.add(got.data() + (T - last) * L.H(), widen(ref_last).data(), last, L.H());
      const Check chk = acc.result();
      failures += !chk.ok();
      const fusekit::MoeLayer layer = D.layer(L, MoeBackend::kCuda);
      const auto router = D.router(L, T);
      const TensorView xv = D.xv(L, T), ov = D.outv(L, T);
      const bool graph = T <= 256;
      const double us = fusekit::bench::median_us(
          [&](int, cudaStream_t st) { (void)fusekit::moe_forward(layer, xv, router, ov, D.workspace(), st); },
          fusekit::bench::TimingOptions{5, 30, graph, 10}, stream);
      const double flops = 6.0 * T * c.k * c.H * c.I;
      std::printf("  T=%-5lld %s rel-L2 %.2e max-abs %.2e NaN %lld (%lld rows)   %9.1f us (%s)  %7.1f TFLOP/s\n",
                  static_cast<long long>(T), chk.ok() ? "PASS" : "FAIL", chk.rel_l2, chk.max_abs,
                  static_cast<long long>(chk.nan), static_cast<long long>(chk.rows), us, graph ? "graph" : "eager",
                  flops / (us * 1e6));
      std::fflush(stdout);
    }
    cudaStreamDestroy(stream);
#endif
  } else {
    const MoeCase small{"small", 16, 4, 512, 256, kSoftmax, kRenorm, 1, 1, 1.f};
    const Variant v{MoeWeightLayout::kNK, kSoftmax};
    const std::int64_t T = 32;
    const HostLayer L(config_of(small, v, T), 7);
    std::printf("moe: no CUDA GPU (or no CUDA backend in this build): a small layer (E=16, top_k=4, H=512, I=256, "
                "bf16, NK, softmax top-k) on the cpu backend, T=%lld, checked against a per-token reference\n",
                static_cast<long long>(T));
    std::vector<bf16> out;
    std::vector<double> samples;
    Status s;
    for (int i = 0; i < 3 && s.ok(); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      s = oracle_rows(L, 0, T, &out);
      samples.push_back(seconds_since(t0) * 1e6);
    }
    if (!s.ok()) {
      std::printf("  ERROR %s\n", s.to_string().c_str());
      return 1;
    }
    std::sort(samples.begin(), samples.end());
    Accum acc;
    acc.add(out.data(), reference_rows(L, 0, T).data(), T, L.H());
    const Check chk = acc.result();
    failures += !chk.ok();
    std::printf("  T=%lld %s rel-L2 %.2e max-abs %.2e NaN %lld   %.0f us per layer (median of 3)\n",
                static_cast<long long>(T), chk.ok() ? "PASS" : "FAIL", chk.rel_l2, chk.max_abs,
                static_cast<long long>(chk.nan), samples[samples.size() / 2]);
  }
  std::printf("moe demo: %s\n", failures ? "FAILED" : "all checks passed");
  return failures ? 1 : 0;
}

// ---- bench --------------------------------------------------------------------------------

int bench(const fusekit::cli::Args& args) {
#if FUSEKIT_WITH_CUDA
  if (!fusekit::cuda_available()) {
    std::printf("bench moe: no CUDA GPU\n");
    return 1;
  }
  std::vector<const MoeCase*> cases;
  for (const std::string& name : split(args.get("cases", "qwen3-30b-a3b,qwen3-235b-a22b,mixtral-8x7b"))) {
    const MoeCase* c = find_case(name);
    if (!c) {
      std::printf("bench moe: unknown case %s\n", name.c_str());
      return 2;
    }
    cases.push_back(c);
  }
  const std::vector<std::int64_t> tokens = args.get_int_list("tokens", {1, 8, 64, 256, 1024, 4096, 16384});
  const std::int64_t graph_max = args.get_int("graph-max-tokens", 4096);
  const int iters = static_cast<int>(args.get_int("iters", 30));
  const bool stages = args.get("stages", "1") != "0";
  const std::string order = args.get("gate-up-order", "halves");
  if (order != "halves" && order != "interleaved8" && order != "prepared") {
    std::printf("bench moe: --gate-up-order must be halves, interleaved8 or prepared (moe_prepared_config's), got %s\n",
                order.c_str());
    return 1;
  }
  const bool with_ref = args.has("ref");

  using fusekit::bench::BenchRecord;
  fusekit::bench::BenchRun run;
  run.device = fusekit::bench::device_name();
  run.commit = fusekit::bench::git_commit();
  run.date = fusekit::bench::today();
  run.command = args.command_line;
  run.copy_gbps = fusekit::bench::measure_copy_gbps();
  run.matmul_tflops = fusekit::bench::measure_matmul_tflops();
  std::printf("bench moe on %s: copy %.0f GB/s (read + written), bf16 matmul %.0f TFLOP/s; bf16, layout %s\n",
              run.device.c_str(), run.copy_gbps, run.matmul_tflops, "of moe_prepared_config");
  std::printf("%-18s %6s %-13s %11s %9s %9s %11s %7s %6s %9s\n", "case", "T", "op", "median_us", "TFLOP/s", "GB/s",
              "floor_us", "%floor", "timing", "err");
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  int failures = 0;

  for (const MoeCase* c : cases) {
    Variant v{MoeWeightLayout::kNK, c->mode};
    const MoeConfig prepared = fusekit::moe_prepared_config(config_of(*c, v, 1));
    v.layout = prepared.layout;
    if (order == "interleaved8" || (order == "prepared" && prepared.gate_up_order == MoeGateUpOrder::kInterleaved8)) {
      if (v.layout != MoeWeightLayout::kNK) {
        std::printf("%-18s  SKIPPED: --gate-up-order interleaved8 needs the NK layout\n", c->name);
        continue;
      }
      v.gate_up_order = MoeGateUpOrder::kInterleaved8;
    }
    // Rows for kBenchInputSets windows of every T up to kMaxRotatedRows / kBenchInputSets
    // (above that, T = 4096 tokens touch every expert of the shapes each call anyway).
    auto input_sets = [](std::int64_t T) { return kBenchInputSets * T <= kMaxRotatedRows ? kBenchInputSets : 1; };
    std::int64_t max_t = 1;
    for (std::int64_t T : tokens) max_t = std::max(max_t, input_sets(T) * T);
    const HostLayer L(config_of(*c, v, max_t), 77);
    const DeviceLayer D(L);
    if (!D.ok) {
      std::printf("%-18s  ERROR: cannot allocate the layer on the device\n", c->name);
      ++failures;
      continue;
    }
    const MoeConfig& cfg = L.config;
    const std::int64_t E = c->E, k = c->k, H = c->H, I = c->I;
    const std::int64_t bm = fusekit::moe_align_block_m(cfg, fusekit::DeviceType::kCUDA);
    const std::int64_t cap_max = fusekit::moe_align_capacity(max_t, k, E, bm);
    DevMem ids(static_cast<std::size_t>(max_t * k * 4)), weights(static_cast<std::size_t>(max_t * k * 4)),
        sorted(static_cast<std::size_t>(cap_max * 4 + 16)), blocks(static_cast<std::size_t>(cap_max / bm * 4 + 16)),
        offsets(static_cast<std::size_t>((E + 1) * 4)), ntpp(16), act(static_cast<std::size_t>(cap_max * I * 2 + 16)),
        y(static_cast<std::size_t>(max_t * k * H * 2));
    const double expert_bytes = 3.0 * H * I * 2;  // W1 (2I x H) + W2 (H x I), bf16

    for (std::int64_t T : tokens) {
      const auto dev = fusekit::DeviceType::kCUDA;
      const fusekit::MoeLayer layer = D.layer(L, MoeBackend::kCuda);
      const auto router = D.router(L, T);
      const TensorView xv = D.xv(L, T), ov = D.outv(L, T);
      // Window w's routing lives at row w * T of ids / weights (window 0: the stage rows' input).
      auto routed_of = [&](std::int64_t window) {
        return fusekit::MoeRouted{
            TensorView::contiguous(static_cast<std::int32_t*>(ids.p) + window * T * k, DType::kI32, {T, k}, dev, 0),
            TensorView::contiguous(static_cast<float*>(weights.p) + window * T * k, DType::kF32, {T, k}, dev, 0)};
      };
      const fusekit::MoeRouted routed = routed_of(0);
      const std::int64_t cap = fusekit::moe_align_capacity(T, k, E, bm);
      const fusekit::MoeAlignment al{bm, TensorView::contiguous(sorted.p, DType::kI32, {cap}, dev, 0),
                                     TensorView::contiguous(blocks.p, DType::kI32, {cap / bm}, dev, 0),
                                     TensorView::contiguous(offsets.p, DType::kI32, {E + 1}, dev, 0),
                                     TensorView::contiguous(ntpp.p, DType::kI32, {1}, dev, 0)};
      const TensorView actv = TensorView::contiguous(act.p, DType::kBF16, {cap, I}, dev, 0);
      const TensorView yv = TensorView::contiguous(y.p, DType::kBF16, {T * k, H}, dev, 0);

      // Correctness of the timed configuration (first rows vs the oracle) and the experts hit.
      std::vector<bf16> got, ref;
      Status s = D.forward(L, MoeBackend::kCuda, T, &got, stream);
      const std::int64_t check = std::min<std::int64_t>(T, 8);
      if (s.ok()) s = oracle_rows(L, 0, check, &ref);
      if (s.ok()) s = fusekit::moe_route(cfg, router, routed, stream);
      std::vector<std::int32_t> host_ids(static_cast<std::size_t>(T * k));
      if (s.ok()) {
        cudaStreamSynchronize(stream);
        cudaMemcpy(host_ids.data(), ids.p, host_ids.size() * 4, cudaMemcpyDeviceToHost);
      }
      if (!s.ok()) {
        std::printf("%-18s %6lld  ERROR %s\n", c->name, static_cast<long long>(T), s.to_string().c_str());
        ++failures;
        continue;
      }
      double max_err = 0, ref_max = 0;
      std::int64_t nan = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) {
        const double g = fusekit::bf16_bits_to_float(got[i]), r = fusekit::bf16_bits_to_float(ref[i]);
        if (!std::isfinite(g)) ++nan;
        max_err = std::max(max_err, std::fabs(g - r));
        ref_max = std::max(ref_max, std::fabs(r));
      }
      const double err = ref_max > 0 ? max_err / ref_max : max_err;
      if (nan > 0 || err > 0.05) {
        std::printf("%-18s %6lld  FAILED check: max-abs/max-ref %.2e, %lld NaN\n", c->name, static_cast<long long>(T),
                    err, static_cast<long long>(nan));
        ++failures;
        continue;
      }
      const bool graph = T <= graph_max;
      const fusekit::bench::TimingOptions topt{3, iters, graph, 10};
      const std::int64_t sets = input_sets(T);
      // Distinct experts of each window; the forward's count is the mean over the calls timed
      // (call i routes window i % sets), the stage rows' is window 0's.
      std::vector<double> window_hits;
      for (std::int64_t set = 0; set < sets && s.ok(); ++set) {
        if (set > 0) {
          s = fusekit::moe_route(cfg, D.router(L, T, set * T), routed_of(set), stream);
          cudaStreamSynchronize(stream);
          cudaMemcpy(host_ids.data(), static_cast<std::int32_t*>(ids.p) + set * T * k, host_ids.size() * 4,
                     cudaMemcpyDeviceToHost);
        }
        std::vector<char> hit(static_cast<std::size_t>(E), 0);
        for (std::int32_t id : host_ids) {
          if (id >= 0 && id < E) hit[id] = 1;
        }
        window_hits.push_back(static_cast<double>(std::count(hit.begin(), hit.end(), 1)));
      }
      if (!s.ok()) {
        std::printf("%-18s %6lld  ERROR %s\n", c->name, static_cast<long long>(T), s.to_string().c_str());
        ++failures;
        continue;
      }
      const int calls = graph ? topt.graph_batch : topt.iters;
      double forward_hits = 0;
      for (int i = 0; i < calls; ++i) forward_hits += window_hits[static_cast<std::size_t>(i % sets)] / calls;
      // What the params of the next records say: the forward's windows, then window 0 alone.
      double row_hits = forward_hits;
      std::int64_t row_sets = sets;
      auto params = [&](const char* extra) {
        char buf[400];
        std::snprintf(buf, sizeof buf,
                      "{\"E\": %lld, \"top_k\": %lld, \"H\": %lld, \"I\": %lld, \"dtype\": \"bf16\", \"layout\": \"%s\", "
                      "\"gate_up_order\": \"%s\", "
                      "\"routing\": \"%s\", \"experts_hit\": %.2f, \"input_sets\": %lld, \"timing\": \"%s\"%s}",
                      static_cast<long long>(E), static_cast<long long>(k), static_cast<long long>(H),
                      static_cast<long long>(I), v.layout == MoeWeightLayout::kNK ? "nk" : "kn", order.c_str(),
                      v.mode == kSoftmax ? "softmax" : "sigmoid", row_hits, static_cast<long long>(row_sets),
                      graph ? "graph" : "eager", extra);
        return std::string(buf);
      };
      // flops and bytes: weights-touched bytes for the GEMMs and the layer, bytes moved otherwise.
      auto record = [&](const char* op, const char* impl, double us, double flops, double bytes, bool weights_bytes,
                        double rel_err) {
        BenchRecord r;
        r.op = op;
        r.impl = impl;
        r.case_name = c->name;
        r.params_json = params(weights_bytes ? "" : ", \"gbps_of\": \"bytes moved\"");
        r.tokens = T;
        r.median_us = us;
        r.gbps = us > 0 ? bytes / (us * 1e3) : -1;
        r.tflops = flops > 0 && us > 0 ? flops / (us * 1e6) : -1;
        r.floor_us = std::max(flops / (run.matmul_tflops * 1e6), bytes / (run.copy_gbps * 1e3));
        r.max_rel_err = rel_err;
        run.records.push_back(r);
        std::printf("%-18s %6lld %-13s %11.2f %9.1f %9.0f %11.2f %6.1f%% %6s %9.2e\n", c->name,
                    static_cast<long long>(T), (std::string(op) + (std::string(impl) == "fusekit" ? "" : "*")).c_str(),
                    us, r.tflops > 0 ? r.tflops : 0.0, r.gbps, r.floor_us, 100.0 * r.floor_us / us,
                    graph ? "graph" : "eager", rel_err >= 0 ? rel_err : 0.0);
        std::fflush(stdout);
      };
      const double pairs = static_cast<double>(T) * k;
      std::vector<fusekit::MoeRouterInput> routers;
      std::vector<TensorView> xs;
      for (std::int64_t set = 0; set < sets; ++set) {
        routers.push_back(D.router(L, T, set * T));
        xs.push_back(D.xv(L, T, set * T));
      }
      const double us_fwd = fusekit::bench::median_us(
          [&](int it, cudaStream_t st) {
            const std::size_t set = static_cast<std::size_t>(it % sets);
            (void)fusekit::moe_forward(layer, xs[set], routers[set], ov, D.workspace(), st);
          },
          topt, stream);
      record("moe", "fusekit", us_fwd, 6.0 * pairs * H * I, forward_hits * expert_bytes, true, err);
      const double experts_hit = window_hits[0];

      if (stages) {
        // The layer from each window's precomputed routing: moe minus this is what the route
        // adds to the layer's critical path (at decode sizes: route -> gemm1 -> gemm2 vs gemm1 -> gemm2).
        const double us_routed = fusekit::bench::median_us(
            [&](int it, cudaStream_t st) {
              const std::int64_t set = it % sets;
              (void)fusekit::moe_forward_routed(layer, xs[static_cast<std::size_t>(set)], routed_of(set), ov,
                                                D.workspace(), st);
            },
            topt, stream);
        record("moe_routed", "fusekit", us_routed, 6.0 * pairs * H * I, forward_hits * expert_bytes, true, -1);
        row_hits = window_hits[0];
        row_sets = 1;
        (void)fusekit::moe_align(cfg, routed.topk_ids, al, stream);
        const double us_route = fusekit::bench::median_us(
            [&](int, cudaStream_t st) { (void)fusekit::moe_route(cfg, router, routed, st); }, topt, stream);
        record("route", "fusekit", us_route, 0, T * E * 4.0 + pairs * 8, false, -1);
        const double us_align = fusekit::bench::median_us(
            [&](int, cudaStream_t st) { (void)fusekit::moe_align(cfg, routed.topk_ids, al, st); }, topt, stream);
        record("align", "fusekit", us_align, 0, pairs * 4 + cap * 4.0, false, -1);
        const double us_g1 = fusekit::bench::median_us(
            [&](int, cudaStream_t st) { (void)fusekit::moe_gemm1_swiglu(layer, xv, al, actv, st); }, topt, stream);
        record("gemm1_swiglu", "fusekit", us_g1, 4.0 * pairs * H * I, experts_hit * 2.0 * I * H * 2, true, -1);
        const double us_g2 = fusekit::bench::median_us(
            [&](int, cudaStream_t st) { (void)fusekit::moe_gemm2(layer, actv, al, routed.topk_weights, yv, st); }, topt,
            stream);
        record("gemm2", "fusekit", us_g2, 2.0 * pairs * H * I, experts_hit * 1.0 * H * I * 2, true, -1);
        const double us_fin = fusekit::bench::median_us(
            [&](int, cudaStream_t st) { (void)fusekit::moe_finalize(cfg, yv, ov, st); }, topt, stream);
        record("finalize", "fusekit", us_fin, 0, pairs * H * 2 + T * H * 2.0, false, -1);
      }
      if (with_ref) {
        row_hits = window_hits[0];
        row_sets = 1;
        const fusekit::MoeLayer ref_layer = D.layer(L, MoeBackend::kCudaRef);
        const double us_ref = fusekit::bench::median_us(
            [&](int, cudaStream_t st) { (void)fusekit::moe_forward(ref_layer, xv, router, ov, D.workspace(), st); },
            fusekit::bench::TimingOptions{2, std::max(5, iters / 3), false, 1}, stream);
        record("moe", "fusekit_cuda_ref", us_ref, 6.0 * pairs * H * I, experts_hit * expert_bytes, true, -1);
      }
      if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) {
        std::printf("%-18s %6lld  CUDA error: %s\n", c->name, static_cast<long long>(T), cudaGetErrorString(e));
        ++failures;
      }
    }
  }
  cudaStreamDestroy(stream);
  std::printf("(GB/s: weights touched for moe and the GEMMs; bytes moved for route, align, finalize. err: max-abs / "
              "max-ref of the forward vs the CPU oracle on the first rows)\n");
  if (stages) {
    // The stage rows would otherwise read as a breakdown of the moe row, which on Hopper they are not.
    std::printf("(route .. finalize rows time the public stage functions, which run the portable grouped kernels on "
                "every GPU; on Hopper the forward's grouped path is src/cuda/moe/sm90/, so they need not add up to moe)\n");
  }
  if (!fusekit::bench::write_json_if_requested(run, args.get("json", ""), "bench moe")) return 1;
  return failures ? 1 : 0;
#else
  (void)args;
  std::printf("bench moe: this build has no CUDA backend\n");
  return 1;
#endif
}

FUSEKIT_CLI_COMMAND("demo", "moe", "a Qwen3-30B-A3B MoE layer on cuda (or a small one on cpu), checked and timed", demo);
FUSEKIT_CLI_COMMAND("verify", "moe",
                    "cuda and cuda-ref (or cpu) MoE vs the CPU oracle on the issue's shapes [--cases L] [--tokens L]",
                    verify);
FUSEKIT_CLI_COMMAND("bench", "moe",
                    "MoE forward and each stage: median us, TFLOP/s, GB/s of weights touched [--cases L] [--tokens L] "
                    "[--gate-up-order halves|interleaved8|prepared] [--ref] [--json PATH]",
                    bench);

}  // namespace
