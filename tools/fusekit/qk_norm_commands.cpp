// `fusekit demo|verify|bench qk-norm`: the QK RMSNorm operator from the command line.
//
//   demo    GPU: the CUDA path on Qwen3 shapes, checked against the CPU oracle, timed.
//           No GPU: the CPU path on smaller shapes, checked and timed. Prints what ran.
//   verify  CUDA (when available) and CPU against the oracle over dtypes, weight dtypes,
//           rotary styles, partial rotary, padded strides, in place and out of place.
//   bench   CUDA, bf16, in place, Qwen3 shapes (bench/cases/qk_norm_qwen3.json): median us per
//           call (CUDA events; CUDA-graph replay of 20 calls for T <= 4096, 20 eager calls
//           above; L2 flushed before every sample and the 20 calls rotate over input sets so
//           L2 does not serve them), GB/s of Q and K read + written, % of the device's copy
//           bandwidth measured in the same run. --json PATH writes bench/results format.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "cli.h"
#include "common/float_bits.h"
#include "cpu/qk_norm_ref.h"
#include "fusekit/fusekit.h"
#include "fusekit/qk_norm.h"

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace {

using fusekit::DType;
using fusekit::RotaryStyle;
using fusekit::TensorView;

struct Shape {
  const char* name;
  std::int64_t hq, hkv, d;
};
// Same list as bench/cases/qk_norm_qwen3.json.
const Shape kQwen3[] = {{"qwen3-8b", 32, 8, 128},
                        {"qwen3-30b-a3b", 32, 4, 128},
                        {"qwen3-32b", 64, 8, 128},
                        {"qwen3-235b-a22b", 64, 4, 128}};

struct Case {
  Shape shape;
  std::int64_t tokens = 1, dv = 0, row_pad = 0;
  DType dtype = DType::kBF16, weight_dtype = DType::kBF16;
  RotaryStyle style = RotaryStyle::kNone;
  std::int64_t rotary_dim = 0;
  DType position_dtype = DType::kI64;
  std::int64_t max_position = 4096;

  std::int64_t v_dim() const { return dv ? dv : shape.d; }
  std::int64_t width() const { return (shape.hq + shape.hkv) * shape.d + shape.hkv * v_dim(); }
  std::int64_t stride() const { return width() + row_pad; }
  std::size_t es() const { return fusekit::dtype_size(dtype); }
  std::size_t bytes() const { return static_cast<std::size_t>(tokens * stride()) * es(); }
  // Q and K read + written once.
  double qk_bytes_moved() const { return 2.0 * tokens * (shape.hq + shape.hkv) * shape.d * es(); }
  std::string describe() const {
    static const char* styles[] = {"", " rope-neox", " rope-gptj"};
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s (Hq=%lld Hkv=%lld D=%lld%s) T=%lld %s w=%s%s%s", shape.name,
                  (long long)shape.hq, (long long)shape.hkv, (long long)shape.d,
                  dv ? (" Dv=" + std::to_string(dv)).c_str() : "", (long long)tokens, fusekit::dtype_name(dtype),
                  fusekit::dtype_name(weight_dtype), styles[static_cast<int>(style)],
                  row_pad ? (" pad=" + std::to_string(row_pad)).c_str() : "");
    return buf;
  }
};

float decode(const std::uint8_t* p, DType dt, std::int64_t i) {
  if (dt == DType::kF32) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  std::uint16_t b;
  std::memcpy(&b, p + 2 * i, 2);
  return dt == DType::kBF16 ? fusekit::bf16_bits_to_float(b) : fusekit::fp16_bits_to_float(b);
}

void encode(std::uint8_t* p, DType dt, std::int64_t i, float v) {
  if (dt == DType::kF32) {
    std::memcpy(p + 4 * i, &v, 4);
    return;
  }
  const std::uint16_t b = dt == DType::kBF16 ? fusekit::float_to_bf16_bits(v) : fusekit::float_to_fp16_bits(v);
  std::memcpy(p + 2 * i, &b, 2);
}

// 16-byte aligned host storage.
struct HostBytes {
  std::vector<std::uint64_t> words;
  explicit HostBytes(std::size_t n = 0) : words((n + 7) / 8 + 2) {}
  std::uint8_t* data() const {
    auto* w = const_cast<std::uint64_t*>(words.data());
    return reinterpret_cast<std::uint8_t*>(w + (reinterpret_cast<std::uintptr_t>(w) % 16 ? 1 : 0));
  }
};

struct Data {
  Case c;
  HostBytes qkv, q_weight, k_weight;
  std::vector<std::int64_t> positions;
  std::vector<std::int32_t> positions32;
  std::vector<float> cos_sin, q_weight_f, k_weight_f;
};

Data make_data(const Case& c, std::uint64_t seed) {
  Data d;
  d.c = c;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> val(-2.f, 2.f), wdist(0.25f, 1.75f);
  d.qkv = HostBytes(c.bytes());
  // Rows repeat every 1024 tokens (positions do not): keeps big demos quick to set up.
  const std::int64_t period = std::min<std::int64_t>(c.tokens, 1024);
  const std::size_t row_bytes = static_cast<std::size_t>(c.stride()) * c.es();
  for (std::int64_t t = 0; t < period; ++t) {
    for (std::int64_t i = 0; i < c.stride(); ++i) encode(d.qkv.data() + t * row_bytes, c.dtype, i, val(rng));
  }
  for (std::int64_t t = period; t < c.tokens; ++t) {
    std::memcpy(d.qkv.data() + t * row_bytes, d.qkv.data() + (t % period) * row_bytes, row_bytes);
  }
  d.q_weight = HostBytes(c.shape.d * 4);
  d.k_weight = HostBytes(c.shape.d * 4);
  for (std::int64_t i = 0; i < c.shape.d; ++i) {
    encode(d.q_weight.data(), c.weight_dtype, i, wdist(rng));
    encode(d.k_weight.data(), c.weight_dtype, i, wdist(rng));
    d.q_weight_f.push_back(decode(d.q_weight.data(), c.weight_dtype, i));
    d.k_weight_f.push_back(decode(d.k_weight.data(), c.weight_dtype, i));
  }
  std::uniform_int_distribution<std::int64_t> pos(0, c.max_position - 1);
  for (std::int64_t t = 0; t < c.tokens; ++t) {
    d.positions.push_back(t % 97 == 5 ? c.max_position + t : pos(rng));  // a few out of range
    d.positions32.push_back(static_cast<std::int32_t>(d.positions.back()));
  }
  if (c.style != RotaryStyle::kNone) {
    const std::int64_t rd = c.rotary_dim, half = rd / 2;
    d.cos_sin.resize(static_cast<std::size_t>(c.max_position * rd));
    for (std::int64_t p = 0; p < c.max_position; ++p) {
      for (std::int64_t i = 0; i < half; ++i) {
        const double f = std::pow(10000.0, -2.0 * i / static_cast<double>(rd));
        d.cos_sin[p * rd + i] = static_cast<float>(std::cos(p * f));
        d.cos_sin[p * rd + half + i] = static_cast<float>(std::sin(p * f));
      }
    }
  }
  return d;
}

struct Check {
  bool ok = false;
  double rel_l2 = 0, max_err_rel = 0;  // max |got - ref| / max |ref|
  std::string why;
};

// Q/K against the oracle on every `step`-th token (and the last), V bit for bit, no NaN.
Check check(const Data& d, const std::uint8_t* in, const std::uint8_t* out, std::int64_t step) {
  const Case& c = d.c;
  Check r;
  fusekit::cpu::QkRefProblem p;
  p.tokens = c.tokens;
  p.row_stride = c.stride();
  p.hq = c.shape.hq;
  p.hkv = c.shape.hkv;
  p.d = c.shape.d;
  p.dv = c.v_dim();
  p.eps = 1e-6;
  p.style = c.style;
  p.rotary_dim = c.rotary_dim;
  p.positions = d.positions.data();
  p.cos_sin = d.cos_sin.data();
  p.max_position = c.max_position;
  const std::int64_t qk = (c.shape.hq + c.shape.hkv) * c.shape.d, width = c.width();
  std::vector<float> row_in(static_cast<std::size_t>(c.stride()));
  std::vector<double> ref(static_cast<std::size_t>(width));
  double diff2 = 0, ref2 = 0, max_err = 0, ref_max = 0;
  const std::size_t row_bytes = static_cast<std::size_t>(c.stride()) * c.es();
  for (std::int64_t t = 0; t < c.tokens; ++t) {
    const std::uint8_t* o = out + t * row_bytes;
    const std::uint8_t* x = in + t * row_bytes;
    if (std::memcmp(o + qk * c.es(), x + qk * c.es(), (width - qk) * c.es()) != 0) {
      r.why = "V differs at token " + std::to_string(t);
      return r;
    }
    if (t % step != 0 && t != c.tokens - 1) continue;
    for (std::int64_t i = 0; i < c.stride(); ++i) row_in[i] = decode(x, c.dtype, i);
    fusekit::cpu::qk_rmsnorm_ref_row(p, t, row_in.data(), d.q_weight_f.data(), d.k_weight_f.data(), ref.data());
    for (std::int64_t i = 0; i < qk; ++i) {
      const double got = decode(o, c.dtype, i);
      if (!std::isfinite(got)) {
        r.why = "non-finite output at token " + std::to_string(t);
        return r;
      }
      diff2 += (got - ref[i]) * (got - ref[i]);
      ref2 += ref[i] * ref[i];
      max_err = std::max(max_err, std::fabs(got - ref[i]));
      ref_max = std::max(ref_max, std::fabs(ref[i]));
    }
  }
  r.rel_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : 0;
  r.max_err_rel = ref_max > 0 ? max_err / ref_max : 0;
  const double bound = c.dtype == DType::kBF16 ? 8e-3 : c.dtype == DType::kF16 ? 1e-3 : 1e-5;
  const double max_bound = c.dtype == DType::kBF16 ? 1.0 / 128 : c.dtype == DType::kF16 ? 1.0 / 1024 : 1e-5;
  r.ok = r.rel_l2 <= bound && r.max_err_rel <= max_bound;
  if (!r.ok) r.why = "error above the dtype's bounds";
  return r;
}

fusekit::QkNormParams params_for(const Case& c, const TensorView& positions, const TensorView& cos_sin) {
  fusekit::QkNormParams p;
  p.num_q_heads = c.shape.hq;
  p.num_kv_heads = c.shape.hkv;
  p.head_dim = c.shape.d;
  p.v_head_dim = c.dv;
  p.rotary.style = c.style;
  p.rotary.rotary_dim = c.rotary_dim;
  if (c.style != RotaryStyle::kNone) {
    p.rotary.positions = positions;
    p.rotary.cos_sin_cache = cos_sin;
  }
  return p;
}

TensorView rows_view(void* ptr, const Case& c, fusekit::DeviceType dev) {
  TensorView t = TensorView::contiguous(ptr, c.dtype, {c.tokens, c.width()}, dev, 0);
  t.strides[0] = c.stride();
  return t;
}

enum class Placement { kInPlace, kOutOfPlace };

struct RunResult {
  fusekit::Status status;
  Check check;
  double us = -1;  // median per call
};

std::string status_line(const RunResult& r) {
  if (!r.status.ok()) return "ERROR " + r.status.to_string();
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s rel_l2=%.2e max_err/max_ref=%.2e%s%s", r.check.ok ? "PASS" : "FAIL",
                r.check.rel_l2, r.check.max_err_rel, r.check.why.empty() ? "" : " ", r.check.why.c_str());
  return buf;
}

// ---- CPU path ---------------------------------------------------------------------------

RunResult run_cpu(Data& d, Placement placement, int timing_iters) {
  const Case& c = d.c;
  RunResult r;
  HostBytes in(c.bytes()), out(c.bytes());
  std::memcpy(in.data(), d.qkv.data(), c.bytes());
  std::memset(out.data(), 0xFF, c.bytes());
  const TensorView positions = c.position_dtype == DType::kI32
                                   ? TensorView::contiguous(d.positions32.data(), DType::kI32, {c.tokens})
                                   : TensorView::contiguous(d.positions.data(), DType::kI64, {c.tokens});
  const TensorView cos_sin = TensorView::contiguous(d.cos_sin.data(), DType::kF32, {c.max_position, c.rotary_dim});
  const TensorView qkv_v = rows_view(in.data(), c, fusekit::DeviceType::kCPU);
  const TensorView out_v = placement == Placement::kInPlace ? qkv_v : rows_view(out.data(), c, fusekit::DeviceType::kCPU);
  const TensorView qw = TensorView::contiguous(d.q_weight.data(), c.weight_dtype, {c.shape.d});
  const TensorView kw = TensorView::contiguous(d.k_weight.data(), c.weight_dtype, {c.shape.d});
  const fusekit::QkNormParams params = params_for(c, positions, cos_sin);
  r.status = fusekit::qk_rmsnorm(qkv_v, qw, kw, out_v, params);
  if (!r.status.ok()) return r;
  r.check = check(d, d.qkv.data(), placement == Placement::kInPlace ? in.data() : out.data(), 1);
  std::vector<double> samples;
  for (int i = 0; i < timing_iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    (void)fusekit::qk_rmsnorm(qkv_v, qw, kw, out_v, params);
    samples.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  if (!samples.empty()) {
    std::sort(samples.begin(), samples.end());
    r.us = samples[samples.size() / 2];
  }
  return r;
}

#if FUSEKIT_WITH_CUDA
// ---- CUDA path --------------------------------------------------------------------------

struct DevMem {
  void* p = nullptr;
  explicit DevMem(std::size_t n = 0) {
    if (n && cudaMalloc(&p, n) != cudaSuccess) p = nullptr;
  }
  ~DevMem() { cudaFree(p); }
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
};

RunResult run_cuda(Data& d, Placement placement, int timing_iters) {
  const Case& c = d.c;
  RunResult r;
  DevMem in(c.bytes()), out(c.bytes()), qw(c.shape.d * 4), kw(c.shape.d * 4), pos(c.tokens * 8 + 8),
      cs(d.cos_sin.size() * 4 + 16);
  if (!in.p || !out.p) {
    r.status = fusekit::Status(fusekit::StatusCode::kCudaError, "cudaMalloc failed");
    return r;
  }
  cudaMemcpy(in.p, d.qkv.data(), c.bytes(), cudaMemcpyHostToDevice);
  cudaMemset(out.p, 0xFF, c.bytes());
  cudaMemcpy(qw.p, d.q_weight.data(), c.shape.d * fusekit::dtype_size(c.weight_dtype), cudaMemcpyHostToDevice);
  cudaMemcpy(kw.p, d.k_weight.data(), c.shape.d * fusekit::dtype_size(c.weight_dtype), cudaMemcpyHostToDevice);
  if (c.position_dtype == DType::kI32) {
    cudaMemcpy(pos.p, d.positions32.data(), c.tokens * 4, cudaMemcpyHostToDevice);
  } else {
    cudaMemcpy(pos.p, d.positions.data(), c.tokens * 8, cudaMemcpyHostToDevice);
  }
  if (!d.cos_sin.empty()) cudaMemcpy(cs.p, d.cos_sin.data(), d.cos_sin.size() * 4, cudaMemcpyHostToDevice);
  using fusekit::DeviceType;
  const TensorView positions = TensorView::contiguous(pos.p, c.position_dtype, {c.tokens}, DeviceType::kCUDA, 0);
  const TensorView cos_sin =
      TensorView::contiguous(cs.p, DType::kF32, {c.max_position, c.rotary_dim}, DeviceType::kCUDA, 0);
  const TensorView qkv_v = rows_view(in.p, c, DeviceType::kCUDA);
  const TensorView out_v = placement == Placement::kInPlace ? qkv_v : rows_view(out.p, c, DeviceType::kCUDA);
  const TensorView qw_v = TensorView::contiguous(qw.p, c.weight_dtype, {c.shape.d}, DeviceType::kCUDA, 0);
  const TensorView kw_v = TensorView::contiguous(kw.p, c.weight_dtype, {c.shape.d}, DeviceType::kCUDA, 0);
  const fusekit::QkNormParams params = params_for(c, positions, cos_sin);
  r.status = fusekit::qk_rmsnorm(qkv_v, qw_v, kw_v, out_v, params, nullptr);
  if (!r.status.ok()) return r;
  if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) {
    r.status = fusekit::Status(fusekit::StatusCode::kCudaError, cudaGetErrorString(e));
    return r;
  }
  HostBytes result(c.bytes());
  cudaMemcpy(result.data(), placement == Placement::kInPlace ? in.p : out.p, c.bytes(), cudaMemcpyDeviceToHost);
  r.check = check(d, d.qkv.data(), result.data(), c.tokens > 8192 ? 31 : 1);
  if (timing_iters > 0) {
    // In place, 20 calls per CUDA graph (how an engine runs it), L2 warm: the cold-L2 numbers
    // are `fusekit bench qk-norm`'s.
    cudaStream_t stream;
    cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    r.us = fusekit::bench::median_us(
        [&](int, cudaStream_t s) { (void)fusekit::qk_rmsnorm(qkv_v, qw_v, kw_v, qkv_v, params, s); },
        fusekit::bench::TimingOptions{5, timing_iters, true, 20}, stream);
    cudaStreamDestroy(stream);
  }
  return r;
}
#endif

// ---- demo -------------------------------------------------------------------------------

int demo(const fusekit::cli::Args&) {
  int failures = 0;
  if (fusekit::cuda_available()) {
#if FUSEKIT_WITH_CUDA
    std::printf("qk-norm: CUDA path on %s, Qwen3 shapes, bf16, checked against the CPU oracle (fp64)\n",
                fusekit::bench::device_name().c_str());
    for (const Shape& s : kQwen3) {
      for (std::int64_t tokens : {8, 4096}) {
        for (RotaryStyle style : {RotaryStyle::kNone, RotaryStyle::kNeox}) {
          Case c;
          c.shape = s;
          c.tokens = tokens;
          c.style = style;
          c.rotary_dim = style == RotaryStyle::kNone ? 0 : s.d;
          Data d = make_data(c, 42 + tokens);
          const RunResult r = run_cuda(d, Placement::kInPlace, 50);
          failures += !(r.status.ok() && r.check.ok);
          std::printf("  cuda in place  %-62s %s  %8.2f us/call (graph, L2 warm)  %7.0f GB/s\n", c.describe().c_str(), status_line(r).c_str(),
                      r.us, r.us > 0 ? c.qk_bytes_moved() / (r.us * 1e3) : 0.0);
        }
      }
    }
#endif
  } else {
    std::printf("qk-norm: no CUDA GPU (or no CUDA backend in this build): CPU path on smaller shapes, checked "
                "against the oracle (fp64)\n");
    for (const Shape& s : {Shape{"small-gqa", 8, 2, 128}, Shape{"qwen3-0.6b", 16, 8, 128}}) {
      for (std::int64_t tokens : {1, 64, 512}) {
        Case c;
        c.shape = s;
        c.tokens = tokens;
        c.style = tokens == 64 ? RotaryStyle::kNeox : RotaryStyle::kNone;
        c.rotary_dim = c.style == RotaryStyle::kNone ? 0 : s.d;
        Data d = make_data(c, 7 + tokens);
        const RunResult r = run_cpu(d, Placement::kInPlace, 5);
        failures += !(r.status.ok() && r.check.ok);
        std::printf("  cpu in place   %-62s %s  %10.1f us\n", c.describe().c_str(), status_line(r).c_str(), r.us);
      }
    }
  }
  std::printf("qk-norm demo: %s\n", failures ? "FAILED" : "all checks passed");
  return failures ? 1 : 0;
}

// ---- verify -----------------------------------------------------------------------------

int verify(const fusekit::cli::Args& args) {
  const bool gpu = fusekit::cuda_available();
  std::vector<Case> cases;
  const Shape shapes[] = {{"qwen3-8b", 32, 8, 128}, {"gqa-d64", 16, 8, 64}, {"d256", 8, 1, 256}, {"d96", 4, 2, 96}};
  int n = 0;
  for (const Shape& s : shapes) {
    for (DType dt : {DType::kBF16, DType::kF16, DType::kF32}) {
      for (RotaryStyle style : {RotaryStyle::kNone, RotaryStyle::kNeox, RotaryStyle::kGptj}) {
        Case c;
        c.shape = s;
        c.tokens = (n % 3 == 0) ? 1 : (n % 3 == 1) ? 17 : 300;
        c.dtype = dt;
        c.weight_dtype = n % 2 ? DType::kF32 : dt;
        c.style = style;
        c.rotary_dim = style == RotaryStyle::kNone ? 0 : (n % 4 == 3 ? s.d / 2 : s.d);
        c.position_dtype = n % 2 ? DType::kI32 : DType::kI64;
        c.row_pad = n % 5 == 0 ? 16 : 0;
        c.dv = n % 7 == 0 ? 64 : 0;
        cases.push_back(c);
        ++n;
      }
    }
  }
  const std::int64_t limit = args.get_int("cases", static_cast<std::int64_t>(cases.size()));
  int failures = 0, ran = 0;
  std::printf("verify qk-norm: %s against the CPU oracle (fp64)\n", gpu ? "CUDA and CPU" : "CPU only (no CUDA GPU)");
  for (std::int64_t i = 0; i < std::min<std::int64_t>(limit, cases.size()); ++i) {
    const Case& c = cases[i];
    Data d = make_data(c, 1000 + i);
    for (Placement pl : {Placement::kInPlace, Placement::kOutOfPlace}) {
      const char* where = pl == Placement::kInPlace ? "in place" : "separate";
#if FUSEKIT_WITH_CUDA
      if (gpu) {
        const RunResult r = run_cuda(d, pl, 0);
        failures += !(r.status.ok() && r.check.ok);
        ++ran;
        std::printf("  cuda %-8s %-66s %s\n", where, c.describe().c_str(), status_line(r).c_str());
      }
#endif
      const RunResult r = run_cpu(d, pl, 0);
      failures += !(r.status.ok() && r.check.ok);
      ++ran;
      std::printf("  cpu  %-8s %-66s %s\n", where, c.describe().c_str(), status_line(r).c_str());
    }
  }
  std::printf("verify qk-norm: %d of %d runs passed\n", ran - failures, ran);
  return failures ? 1 : 0;
}

// ---- bench ------------------------------------------------------------------------------

int bench(const fusekit::cli::Args& args) {
#if FUSEKIT_WITH_CUDA
  if (!fusekit::cuda_available()) {
    std::printf("bench qk-norm: no CUDA GPU\n");
    return 1;
  }
  using fusekit::DeviceType;
  const std::vector<std::int64_t> token_list =
      args.get_int_list("tokens", {1, 4, 16, 64, 256, 1024, 4096, 16384, 32768, 65536});
  const std::string only = args.get("case", "");
  const std::int64_t graph_max_tokens = args.get_int("graph-max-tokens", 4096);
  const int iters = static_cast<int>(args.get_int("iters", 30));
  constexpr int kBatch = 20;

  fusekit::bench::BenchRun run;
  run.device = fusekit::bench::device_name();
  run.commit = fusekit::bench::git_commit();
  run.date = fusekit::bench::today();
  run.command = args.command_line;
  run.copy_gbps = fusekit::bench::measure_copy_gbps();
  run.matmul_tflops = fusekit::bench::measure_matmul_tflops();
  std::printf("bench qk-norm on %s: copy %.0f GB/s (read + written), bf16 matmul %.0f TFLOP/s; bf16, in place\n",
              run.device.c_str(), run.copy_gbps, run.matmul_tflops);
  std::printf("%-16s %7s %10s %9s %8s %7s %10s\n", "case", "T", "median_us", "GB/s", "%copy", "timing", "max_err");

  int dev = 0;
  cudaGetDevice(&dev);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, dev);
  const std::size_t flush_bytes = std::max<std::size_t>(2 * static_cast<std::size_t>(prop.l2CacheSize), 64 << 20);
  DevMem flush(flush_bytes);
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  int failures = 0;

  for (const Shape& s : kQwen3) {
    if (!only.empty() && only != s.name) continue;
    for (std::int64_t tokens : token_list) {
      Case c;
      c.shape = s;
      c.tokens = tokens;
      const std::size_t set_bytes = c.bytes();
      // Enough input sets that consecutive reuse of one is separated by > 2x L2 of traffic.
      const std::size_t pool_bytes = std::max<std::size_t>({std::size_t{256} << 20, 3 * set_bytes});
      const int sets = static_cast<int>(std::min<std::size_t>(kBatch, pool_bytes / set_bytes));
      DevMem pool(static_cast<std::size_t>(sets) * set_bytes), qw(c.shape.d * 2), kw(c.shape.d * 2);
      if (!pool.p) {
        std::printf("%-16s %7lld  (skipped: cannot allocate %zu MB)\n", s.name, (long long)tokens,
                    sets * set_bytes >> 20);
        continue;
      }
      Data d = make_data(c, 77 + tokens);
      for (int i = 0; i < sets; ++i) {
        cudaMemcpy(static_cast<char*>(pool.p) + i * set_bytes, d.qkv.data(), set_bytes,
                   cudaMemcpyHostToDevice);
      }
      cudaMemcpy(qw.p, d.q_weight.data(), c.shape.d * 2, cudaMemcpyHostToDevice);
      cudaMemcpy(kw.p, d.k_weight.data(), c.shape.d * 2, cudaMemcpyHostToDevice);
      const TensorView qw_v = TensorView::contiguous(qw.p, DType::kBF16, {c.shape.d}, DeviceType::kCUDA, dev);
      const TensorView kw_v = TensorView::contiguous(kw.p, DType::kBF16, {c.shape.d}, DeviceType::kCUDA, dev);
      const fusekit::QkNormParams params = params_for(c, {}, {});
      auto view = [&](int i) {
        return rows_view(static_cast<char*>(pool.p) + static_cast<std::size_t>(i % sets) * set_bytes, c,
                         DeviceType::kCUDA);
      };

      // Correctness of the timed configuration: set 0 once, in place, against the oracle.
      fusekit::Status st = fusekit::qk_rmsnorm(view(0), qw_v, kw_v, view(0), params, stream);
      cudaStreamSynchronize(stream);
      HostBytes result(set_bytes);
      cudaMemcpy(result.data(), pool.p, set_bytes, cudaMemcpyDeviceToHost);
      const Check chk = st.ok() ? check(d, d.qkv.data(), result.data(), tokens > 4096 ? 61 : 1)
                                : Check{};
      if (!st.ok() || !chk.ok) {
        ++failures;
        std::printf("%-16s %7lld  FAILED: %s\n", s.name, (long long)tokens,
                    st.ok() ? chk.why.c_str() : st.to_string().c_str());
        continue;
      }

      const bool use_graph = tokens <= graph_max_tokens;
      cudaGraphExec_t exec = nullptr;
      if (use_graph) {
        cudaGraph_t graph;
        cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
        for (int i = 0; i < kBatch; ++i) (void)fusekit::qk_rmsnorm(view(i), qw_v, kw_v, view(i), params, stream);
        cudaStreamEndCapture(stream, &graph);
        cudaGraphInstantiate(&exec, graph, 0);
        cudaGraphDestroy(graph);
      }
      std::vector<float> samples;
      for (int it = 0; it < iters + 2; ++it) {
        cudaMemsetAsync(flush.p, it & 0xff, flush_bytes, stream);  // evict the inputs from L2
        cudaEventRecord(start, stream);
        if (use_graph) {
          cudaGraphLaunch(exec, stream);
        } else {
          for (int i = 0; i < kBatch; ++i) (void)fusekit::qk_rmsnorm(view(i), qw_v, kw_v, view(i), params, stream);
        }
        cudaEventRecord(stop, stream);
        cudaEventSynchronize(stop);
        float ms = 0;
        cudaEventElapsedTime(&ms, start, stop);
        if (it >= 2) samples.push_back(ms * 1000.f / kBatch);  // the first two warm up
      }
      if (exec) cudaGraphExecDestroy(exec);
      if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) {
        ++failures;
        std::printf("%-16s %7lld  CUDA error: %s\n", s.name, (long long)tokens, cudaGetErrorString(e));
        continue;
      }
      std::sort(samples.begin(), samples.end());
      const double us = samples[samples.size() / 2];
      const double gbps = c.qk_bytes_moved() / (us * 1e3);
      fusekit::bench::BenchRecord rec;
      rec.op = "qk_norm";
      rec.impl = "fusekit";
      rec.case_name = s.name;
      rec.params_json = "{\"hq\": " + std::to_string(s.hq) + ", \"hkv\": " + std::to_string(s.hkv) +
                        ", \"d\": " + std::to_string(s.d) + ", \"dtype\": \"bf16\", \"in_place\": true, \"timing\": \"" +
                        (use_graph ? "graph" : "eager") + "\"}";
      rec.tokens = tokens;
      rec.median_us = us;
      rec.gbps = gbps;
      rec.floor_us = c.qk_bytes_moved() / (run.copy_gbps * 1e3);
      rec.max_rel_err = chk.max_err_rel;
      run.records.push_back(rec);
      std::printf("%-16s %7lld %10.2f %9.0f %7.1f%% %7s %10.2e\n", s.name, (long long)tokens, us, gbps,
                  100.0 * gbps / run.copy_gbps, use_graph ? "graph" : "eager", chk.max_err_rel);
      std::fflush(stdout);
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaStreamDestroy(stream);
  if (!fusekit::bench::write_json_if_requested(run, args.get("json", ""), "bench qk-norm")) return 1;
  return failures ? 1 : 0;
#else
  (void)args;
  std::printf("bench qk-norm: this build has no CUDA backend\n");
  return 1;
#endif
}

FUSEKIT_CLI_COMMAND("demo", "qk-norm", "QK RMSNorm on Qwen3 shapes (CUDA) or small shapes (CPU), checked and timed", demo);
FUSEKIT_CLI_COMMAND("verify", "qk-norm", "CUDA and CPU QK RMSNorm against the fp64 oracle", verify);
FUSEKIT_CLI_COMMAND("bench", "qk-norm", "QK RMSNorm bf16 in place on Qwen3 shapes [--tokens L] [--json PATH]", bench);

}  // namespace
