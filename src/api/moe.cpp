// The MoE API: validate every argument, pick the backend, then hand the call to the CPU oracle
// (src/cpu/moe_cpu.h) or the CUDA backends (src/cuda/moe/moe_cuda.h). The one place MoE errors
// are worded; the texts are asserted by tests/api/moe_errors_test.cpp.
//
// Order of checks: configuration, then each tensor's presence, dtype, rank, shape and strides,
// then devices, alignment, aliasing and the workspace. Nothing is launched or written before
// every check has passed.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>

#include "api/validate.h"
#include "common/moe_gate_up.h"
#include "cpu/moe_cpu.h"
#include "cpu/moe_ref.h"
#include "fusekit/moe.h"

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>

#include "cuda/moe/moe_cuda.h"
#endif

namespace fusekit {

namespace {

constexpr std::int64_t kMaxExperts = cpu::kMaxExperts;
constexpr std::int64_t kMaxWidth = 65536;  // H and I
constexpr std::int64_t kMaxBlockM = 4096;
constexpr std::int64_t kInt32Max = 2147483647;
constexpr const char* kBackendValues = "auto, cpu, cuda, cuda-ref";

std::string str(std::int64_t v) { return std::to_string(v); }

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

const char* layout_name(MoeWeightLayout layout) { return layout == MoeWeightLayout::kNK ? "kNK" : "kKN"; }

// ---- configuration ------------------------------------------------------------------------

enum class ConfigUse {
  kForward,  // forward and workspace sizing: max_tokens sizes the workspace
  kStage,    // a stage function: max_tokens is not used
};

Status check_width(std::int64_t v, const char* name) {
  if (v < 8 || v > kMaxWidth || v % 8 != 0) {
    return invalid_argument(std::string(name) + ": expected a multiple of 8 in [8, 65536], got " + str(v));
  }
  return Status::Ok();
}

// The weight format of `c` (named `name` in errors: "config", or moe_prepare_weights' "to").
Status check_weight_format(const MoeConfig& c, const std::string& name) {
  if (c.layout != MoeWeightLayout::kNK && c.layout != MoeWeightLayout::kKN) {
    return invalid_argument(name + ".layout: expected kNK or kKN, got " + str(static_cast<std::int64_t>(c.layout)));
  }
  if (c.gate_up_order != MoeGateUpOrder::kHalves && c.gate_up_order != MoeGateUpOrder::kInterleaved8) {
    return invalid_argument(name + ".gate_up_order: expected kHalves or kInterleaved8, got " +
                            str(static_cast<std::int64_t>(c.gate_up_order)));
  }
  if (c.gate_up_order == MoeGateUpOrder::kInterleaved8 && c.layout != MoeWeightLayout::kNK) {
    return invalid_argument(name + ".gate_up_order: kInterleaved8 needs layout kNK, got kKN");
  }
  return Status::Ok();
}

Status check_routing(const MoeConfig& c) {
  const MoeRouting& r = c.routing;
  if (r.mode != MoeRoutingMode::kSoftmaxTopK && r.mode != MoeRoutingMode::kSigmoidGroupedTopK) {
    return invalid_argument("config.routing.mode: expected kSoftmaxTopK or kSigmoidGroupedTopK, got " +
                            str(static_cast<std::int64_t>(r.mode)));
  }
  if (r.norm != MoeTopkNorm::kNone && r.norm != MoeTopkNorm::kRenormalize) {
    return invalid_argument("config.routing.norm: expected kNone or kRenormalize, got " +
                            str(static_cast<std::int64_t>(r.norm)));
  }
  if (!std::isfinite(r.routed_scaling_factor) || !(r.routed_scaling_factor > 0.f)) {
    return invalid_argument("config.routing.routed_scaling_factor: expected a finite value > 0, got " +
                            num(r.routed_scaling_factor));
  }
  if (r.mode == MoeRoutingMode::kSoftmaxTopK) {
    if (r.num_groups != 1) {
      return invalid_argument(
          "config.routing.num_groups: expected 1 for softmax top-k routing (grouped top-k is kSigmoidGroupedTopK), got " +
          str(r.num_groups));
    }
    if (r.topk_groups != 1) {
      return invalid_argument(
          "config.routing.topk_groups: expected 1 for softmax top-k routing (grouped top-k is kSigmoidGroupedTopK), "
          "got " + str(r.topk_groups));
    }
    return Status::Ok();
  }
  const std::int64_t E = c.num_experts;
  if (r.num_groups < 1 || r.num_groups > E || E % r.num_groups != 0) {
    return invalid_argument("config.routing.num_groups: expected a divisor of num_experts = " + str(E) + ", got " +
                            str(r.num_groups));
  }
  if (r.topk_groups < 1 || r.topk_groups > r.num_groups) {
    return invalid_argument("config.routing.topk_groups: expected 1 <= topk_groups <= num_groups = " +
                            str(r.num_groups) + ", got " + str(r.topk_groups));
  }
  const std::int64_t reachable = r.topk_groups * (E / r.num_groups);
  if (c.top_k > reachable) {
    return invalid_argument("config.top_k: expected <= topk_groups * (num_experts / num_groups) = " +
                            str(r.topk_groups) + " * " + str(E / r.num_groups) + " = " + str(reachable) +
                            " experts in the chosen groups, got " + str(c.top_k));
  }
  return Status::Ok();
}

Status check_config(const MoeConfig& c, ConfigUse use) {
  if (c.expert_parallel_size != 1) {
    if (c.expert_parallel_size > 1) {
      return unsupported("config.expert_parallel_size: " + str(c.expert_parallel_size) +
                         " asks for expert parallelism, which the single-device moe_* entry points do not do; use "
                         "fusekit/moe_parallel.h (moe_parallel_forward over NCCL), or set expert_parallel_size = 1");
    }
    return invalid_argument("config.expert_parallel_size: expected 1, got " + str(c.expert_parallel_size));
  }
  if (c.num_experts < 1 || c.num_experts > kMaxExperts) {
    return invalid_argument("config.num_experts: expected 1 <= num_experts <= 512, got " + str(c.num_experts));
  }
  if (c.top_k < 1 || c.top_k > c.num_experts) {
    return invalid_argument("config.top_k: expected 1 <= top_k <= num_experts = " + str(c.num_experts) + ", got " +
                            str(c.top_k));
  }
  FUSEKIT_RETURN_IF_ERROR(check_width(c.hidden, "config.hidden"));
  FUSEKIT_RETURN_IF_ERROR(check_width(c.intermediate, "config.intermediate"));
  FUSEKIT_RETURN_IF_ERROR(check_weight_format(c, "config"));
  if (c.backend != MoeBackend::kAuto && c.backend != MoeBackend::kCpu && c.backend != MoeBackend::kCuda &&
      c.backend != MoeBackend::kCudaRef) {
    return invalid_argument("config.backend: unknown value " + str(static_cast<std::int64_t>(c.backend)) +
                            "; valid values: " + kBackendValues);
  }
  FUSEKIT_RETURN_IF_ERROR(check_routing(c));
  if (use == ConfigUse::kForward) {
    if (c.max_tokens < 1) return invalid_argument("config.max_tokens: expected >= 1, got " + str(c.max_tokens));
    // Pair indices (and the padding value T*k) are int32 on every backend.
    if (c.max_tokens > kInt32Max / c.top_k ||
        moe_align_capacity(c.max_tokens, c.top_k, c.num_experts, kMaxBlockM) > kInt32Max) {
      return invalid_argument("config.max_tokens: max_tokens * top_k = " + str(c.max_tokens) + " * " + str(c.top_k) +
                              " pairs (plus block padding) exceeds the int32 index range");
    }
  }
  return Status::Ok();
}

// ---- tensors -----------------------------------------------------------------------------

Status expect_element_aligned(const TensorView& t, const char* name) {
  return expect_aligned(t, name, dtype_size(t.dtype));
}

// Rows start 16-byte aligned (pointer and row stride): the kernels' vector loads and stores.
Status expect_aligned_rows(const TensorView& t, const char* name) {
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(t, name, 16));
  const std::int64_t stride_bytes = t.strides[0] * static_cast<std::int64_t>(dtype_size(t.dtype));
  if (t.shape[0] > 1 && stride_bytes % 16 != 0) {
    return invalid_argument(std::string(name) + ": row stride " + str(t.strides[0]) + " elements (" +
                            str(stride_bytes) + " bytes) is not a multiple of 16 bytes (" + t.describe() + ")");
  }
  return Status::Ok();
}

// A [rows, width] matrix of `dtype` whose rows are contiguous and 16-byte aligned.
Status expect_matrix(const TensorView& t, const char* name, DType dtype, std::int64_t rows, std::int64_t width,
                     const std::string& text) {
  FUSEKIT_RETURN_IF_ERROR(expect_present(t, name));
  FUSEKIT_RETURN_IF_ERROR(expect_dtype(t, name, {dtype}));
  FUSEKIT_RETURN_IF_ERROR(expect_rank(t, name, 2));
  FUSEKIT_RETURN_IF_ERROR(expect_shape(t, name, {rows, width}, text));
  return expect_contiguous_rows(t, name);
}

// A packed int32/fp32 tensor of the given shape.
Status expect_packed(const TensorView& t, const char* name, DType dtype, std::initializer_list<std::int64_t> dims,
                     const std::string& text) {
  FUSEKIT_RETURN_IF_ERROR(expect_present(t, name));
  FUSEKIT_RETURN_IF_ERROR(expect_dtype(t, name, {dtype}));
  FUSEKIT_RETURN_IF_ERROR(expect_rank(t, name, static_cast<int>(dims.size())));
  FUSEKIT_RETURN_IF_ERROR(expect_shape(t, name, dims, text));
  return expect_contiguous(t, name);
}

std::string shape_text(const char* symbolic, std::initializer_list<std::int64_t> dims) {
  std::ostringstream os;
  os << symbolic << " = [";
  int i = 0;
  for (std::int64_t d : dims) os << (i++ ? ", " : "") << d;
  os << "]";
  return os.str();
}

Status check_weight(const TensorView& w, const char* name, const MoeConfig& c, bool first) {
  const std::int64_t E = c.num_experts, H = c.hidden, I = c.intermediate;
  const bool nk = c.layout == MoeWeightLayout::kNK;
  std::int64_t d1, d2;
  std::string sym;
  if (first) {
    d1 = nk ? 2 * I : H;
    d2 = nk ? H : 2 * I;
    sym = nk ? "[num_experts, 2*intermediate, hidden]" : "[num_experts, hidden, 2*intermediate]";
  } else {
    d1 = nk ? H : I;
    d2 = nk ? I : H;
    sym = nk ? "[num_experts, hidden, intermediate]" : "[num_experts, intermediate, hidden]";
  }
  const std::string text = shape_text(sym.c_str(), {E, d1, d2}) + " (layout " + layout_name(c.layout) + ")";
  FUSEKIT_RETURN_IF_ERROR(expect_present(w, name));
  FUSEKIT_RETURN_IF_ERROR(expect_dtype(w, name, {DType::kBF16}));
  FUSEKIT_RETURN_IF_ERROR(expect_rank(w, name, 3));
  FUSEKIT_RETURN_IF_ERROR(expect_shape(w, name, {E, d1, d2}, text));
  return expect_contiguous(w, name);
}

Status check_logits(const MoeConfig& c, const MoeRouterInput& router, std::int64_t T, bool t_known) {
  const std::int64_t E = c.num_experts;
  const TensorView& l = router.logits;
  FUSEKIT_RETURN_IF_ERROR(expect_present(l, "router.logits"));
  FUSEKIT_RETURN_IF_ERROR(expect_dtype(l, "router.logits", {DType::kF32, DType::kBF16}));
  FUSEKIT_RETURN_IF_ERROR(expect_rank(l, "router.logits", 2));
  const std::string text = t_known ? shape_text("[T, num_experts]", {T, E}) : "[T, num_experts] = [T, " + str(E) + "]";
  FUSEKIT_RETURN_IF_ERROR(expect_shape(l, "router.logits", {t_known ? T : kAnyDim, E}, text));
  FUSEKIT_RETURN_IF_ERROR(expect_contiguous_rows(l, "router.logits"));
  const TensorView& b = router.correction_bias;
  if (!b.empty_view()) {
    if (c.routing.mode != MoeRoutingMode::kSigmoidGroupedTopK) {
      return invalid_argument(
          "router.correction_bias: only kSigmoidGroupedTopK routing takes a correction bias; pass an empty view for "
          "kSoftmaxTopK, got " + b.describe());
    }
    FUSEKIT_RETURN_IF_ERROR(
        expect_packed(b, "router.correction_bias", DType::kF32, {E}, shape_text("[num_experts]", {E})));
  }
  return Status::Ok();
}

Status check_routed(const MoeConfig& c, const MoeRouted& routed, std::int64_t T, const char* ids_name,
                    const char* weights_name) {
  const std::int64_t k = c.top_k;
  const std::string text = shape_text("[T, top_k]", {T, k});
  FUSEKIT_RETURN_IF_ERROR(expect_packed(routed.topk_ids, ids_name, DType::kI32, {T, k}, text));
  return expect_packed(routed.topk_weights, weights_name, DType::kF32, {T, k}, text);
}

// The alignment of T tokens: capacity rows (>= moe_align_capacity, a multiple of block_m).
Status check_alignment(const MoeConfig& c, const MoeAlignment& a, std::int64_t T) {
  const std::int64_t E = c.num_experts, k = c.top_k, bm = a.block_m;
  if (bm < 1 || bm > kMaxBlockM) {
    return invalid_argument("alignment.block_m: expected 1 <= block_m <= 4096, got " + str(bm));
  }
  const std::int64_t need = moe_align_capacity(T, k, E, bm);
  if (T > kInt32Max / k || need > kInt32Max) {
    return invalid_argument("alignment: T * top_k = " + str(T) + " * " + str(k) +
                            " pairs (plus block padding) exceeds the int32 index range");
  }
  const TensorView& s = a.sorted_token_ids;
  const char* sname = "alignment.sorted_token_ids";
  FUSEKIT_RETURN_IF_ERROR(expect_present(s, sname));
  FUSEKIT_RETURN_IF_ERROR(expect_dtype(s, sname, {DType::kI32}));
  FUSEKIT_RETURN_IF_ERROR(expect_rank(s, sname, 1));
  if (s.shape[0] < need || s.shape[0] % bm != 0) {
    return invalid_argument(std::string(sname) + ": expected shape [capacity] with capacity >= moe_align_capacity(T = " +
                            str(T) + ", top_k = " + str(k) + ", num_experts = " + str(E) + ", block_m = " + str(bm) +
                            ") = " + str(need) + " and a multiple of block_m, got " + s.describe());
  }
  FUSEKIT_RETURN_IF_ERROR(expect_contiguous(s, sname));
  const std::int64_t blocks = s.shape[0] / bm;
  FUSEKIT_RETURN_IF_ERROR(expect_packed(a.expert_ids, "alignment.expert_ids", DType::kI32, {blocks},
                                        shape_text("[capacity / block_m]", {blocks})));
  FUSEKIT_RETURN_IF_ERROR(expect_packed(a.expert_offsets, "alignment.expert_offsets", DType::kI32, {E + 1},
                                        shape_text("[num_experts + 1]", {E + 1})));
  return expect_packed(a.num_tokens_post_padded, "alignment.num_tokens_post_padded", DType::kI32, {1}, "[1]");
}

struct Named {
  const TensorView* t;
  const char* name;
};

Status check_devices(std::initializer_list<Named> tensors, const TensorView& where) {
  for (const Named& n : tensors) {
    if (n.t->empty_view()) continue;
    FUSEKIT_RETURN_IF_ERROR(expect_device(*n.t, n.name, where.device, where.device_id));
  }
  return Status::Ok();
}

Status check_alignment_devices(const MoeAlignment& a, const TensorView& where) {
  return check_devices({{&a.sorted_token_ids, "alignment.sorted_token_ids"},
                        {&a.expert_ids, "alignment.expert_ids"},
                        {&a.expert_offsets, "alignment.expert_offsets"},
                        {&a.num_tokens_post_padded, "alignment.num_tokens_post_padded"}},
                       where);
}

Status check_int32_aligned(const MoeAlignment& a) {
  FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(a.sorted_token_ids, "alignment.sorted_token_ids"));
  FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(a.expert_ids, "alignment.expert_ids"));
  FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(a.expert_offsets, "alignment.expert_offsets"));
  return expect_element_aligned(a.num_tokens_post_padded, "alignment.num_tokens_post_padded");
}

// `out` (named) must not share a byte with any of `inputs`.
Status expect_disjoint(const TensorView& out, const char* out_name, std::initializer_list<Named> others) {
  const ByteRange r = byte_range(out);
  for (const Named& n : others) {
    if (n.t->empty_view()) continue;
    if (ranges_overlap(r, byte_range(*n.t))) {
      return invalid_argument(std::string(out_name) + ": overlaps " + n.name + " (" + out_name + " " + out.describe() +
                              ", " + n.name + " " + n.t->describe() + ")");
    }
  }
  return Status::Ok();
}

// `out` must not overlap any of the align stage's outputs.
Status expect_disjoint_from_alignment(const TensorView& out, const char* out_name, const MoeAlignment& a) {
  return expect_disjoint(out, out_name,
                         {{&a.sorted_token_ids, "alignment.sorted_token_ids"},
                          {&a.expert_ids, "alignment.expert_ids"},
                          {&a.expert_offsets, "alignment.expert_offsets"},
                          {&a.num_tokens_post_padded, "alignment.num_tokens_post_padded"}});
}

// The calling thread's current CUDA device must be the tensors' device.
Status check_current_device(const TensorView& t, const char* name) {
  if (t.device != DeviceType::kCUDA) return Status::Ok();
#if FUSEKIT_WITH_CUDA
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess || current != t.device_id) {
    cudaGetLastError();
    return invalid_argument(std::string(name) + ": is on cuda:" + str(t.device_id) +
                            " but the current CUDA device is " +
                            (current < 0 ? std::string("unavailable") : "cuda:" + str(current)) +
                            "; call cudaSetDevice first");
  }
  return Status::Ok();
#else
  return unsupported(std::string(name) + ": " + t.describe() +
                     " is on a CUDA device but this build of fusekit has no CUDA backend");
#endif
}

// ---- backend -----------------------------------------------------------------------------

bool parse_name(const char* name, MoeBackend* b) {
  if (std::strcmp(name, "auto") == 0) *b = MoeBackend::kAuto;
  else if (std::strcmp(name, "cpu") == 0) *b = MoeBackend::kCpu;
  else if (std::strcmp(name, "cuda") == 0) *b = MoeBackend::kCuda;
  else if (std::strcmp(name, "cuda-ref") == 0) *b = MoeBackend::kCudaRef;
  else return false;
  return true;
}

// The argument, else FUSEKIT_MOE_BACKEND, else the best for x's device.
Status resolve_backend(const MoeConfig& c, const TensorView& x, MoeBackend* out) {
  MoeBackend b = c.backend;
  std::string source = "config.backend";
  if (b == MoeBackend::kAuto) {
    const char* env = std::getenv("FUSEKIT_MOE_BACKEND");
    if (env != nullptr && env[0] != '\0') {
      source = "FUSEKIT_MOE_BACKEND";
      if (!parse_name(env, &b)) {
        return invalid_argument(std::string("FUSEKIT_MOE_BACKEND: unknown backend \"") + env +
                                "\"; valid values: " + kBackendValues);
      }
    }
  }
  if (b == MoeBackend::kAuto) {
    b = x.device == DeviceType::kCPU ? MoeBackend::kCpu : MoeBackend::kCuda;
    source += " (auto, from the device of x)";
  }
  const bool wants_cuda = b == MoeBackend::kCuda || b == MoeBackend::kCudaRef;
  if (b == MoeBackend::kCpu && x.device != DeviceType::kCPU) {
    return invalid_argument(source + ": backend cpu cannot run on CUDA tensors (x is " + x.describe() +
                            "); valid values: " + kBackendValues + " (cpu takes host tensors)");
  }
  if (wants_cuda) {
#if FUSEKIT_WITH_CUDA
    if (x.device != DeviceType::kCUDA) {
      return invalid_argument(source + ": backend " + moe_backend_name(b) + " cannot run on host tensors (x is " +
                              x.describe() + "); valid values: " + kBackendValues +
                              " (cuda and cuda-ref take device tensors)");
    }
#else
    return unsupported(source + ": backend " + moe_backend_name(b) +
                       " is not available: this build of fusekit has no CUDA backend; valid values: " +
                       kBackendValues + " (here: auto, cpu)");
#endif
  }
  *out = b;
  return Status::Ok();
}

std::size_t backend_workspace_bytes(const MoeConfig& c, MoeBackend b) {
  switch (b) {
#if FUSEKIT_WITH_CUDA
    case MoeBackend::kCuda: return cuda_moe::workspace_size(c);
    case MoeBackend::kCudaRef: return cuda_moe::ref_workspace_size(c);
#endif
    default: return cpu::moe_workspace_size_cpu(c);
  }
}

Status check_workspace(const MoeConfig& c, MoeBackend backend, const MoeWorkspace& ws, const TensorView& x,
                       std::initializer_list<Named> others) {
  const std::size_t need = backend_workspace_bytes(c, backend);
  if (ws.bytes < need) {
    return invalid_argument("workspace: expected at least " + std::to_string(need) + " bytes for backend " +
                            moe_backend_name(backend) + " (moe_workspace_size), got " + std::to_string(ws.bytes));
  }
  if (need == 0) return Status::Ok();
  if (ws.data == nullptr) {
    return invalid_argument("workspace: null data pointer for " + std::to_string(ws.bytes) + " bytes");
  }
  const std::size_t align = backend == MoeBackend::kCpu ? 16 : 256;
  if (reinterpret_cast<std::uintptr_t>(ws.data) % align != 0) {
    std::ostringstream os;
    os << "workspace: data pointer " << ws.data << " is not " << align << "-byte aligned (backend "
       << moe_backend_name(backend) << ")";
    return invalid_argument(os.str());
  }
  // A byte view of the workspace for the device and overlap checks (int32 words).
  const TensorView view = TensorView::contiguous(ws.data, DType::kI32, {static_cast<std::int64_t>(ws.bytes / 4)},
                                                 x.device, x.device_id);
  FUSEKIT_RETURN_IF_ERROR(expect_device(view, "workspace", x.device, x.device_id));
  return expect_disjoint(view, "workspace", others);
}

#if FUSEKIT_WITH_CUDA
cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

Status check_cuda_block_m(const MoeConfig& c, const MoeAlignment& a) {
  const std::int64_t bm = cuda_moe::align_block_m(c);
  if (a.block_m != bm) {
    return invalid_argument("alignment.block_m: the cuda grouped GEMMs are built for block_m = " + str(bm) +
                            " (moe_align_block_m), got " + str(a.block_m));
  }
  return Status::Ok();
}
#endif

// ---- forward -----------------------------------------------------------------------------

Status forward_impl(const MoeLayer& layer, const TensorView& x, const MoeRouterInput* router, const MoeRouted* routed,
                    const TensorView& out, const MoeWorkspace& workspace, void* stream) {
  const MoeConfig& c = layer.config;
  FUSEKIT_RETURN_IF_ERROR(check_config(c, ConfigUse::kForward));
  const std::int64_t H = c.hidden;
  FUSEKIT_RETURN_IF_ERROR(expect_matrix(x, "x", DType::kBF16, kAnyDim, H, "[T, hidden] = [T, " + str(H) + "]"));
  const std::int64_t T = x.shape[0];
  if (T > c.max_tokens) {
    return invalid_argument("x: T = " + str(T) + " tokens exceeds config.max_tokens = " + str(c.max_tokens) +
                            " (the workspace is sized for max_tokens), got " + x.describe());
  }
  if (router != nullptr) {
    FUSEKIT_RETURN_IF_ERROR(check_logits(c, *router, T, true));
  } else {
    FUSEKIT_RETURN_IF_ERROR(check_routed(c, *routed, T, "routed.topk_ids", "routed.topk_weights"));
  }
  FUSEKIT_RETURN_IF_ERROR(check_weight(layer.weights.w1, "layer.weights.w1", c, true));
  FUSEKIT_RETURN_IF_ERROR(check_weight(layer.weights.w2, "layer.weights.w2", c, false));
  FUSEKIT_RETURN_IF_ERROR(
      expect_matrix(out, "out", DType::kBF16, T, H, shape_text("[T, hidden]", {T, H}) + " (the shape of x)"));

  static const TensorView kNone;
  const TensorView& logits = router ? router->logits : kNone;
  const TensorView& bias = router ? router->correction_bias : kNone;
  const TensorView& ids = routed ? routed->topk_ids : kNone;
  const TensorView& weights = routed ? routed->topk_weights : kNone;
  const char* logits_name = "router.logits";
  const char* bias_name = "router.correction_bias";
  const char* ids_name = "routed.topk_ids";
  const char* weights_name = "routed.topk_weights";
  const TensorView& w1 = layer.weights.w1;
  const TensorView& w2 = layer.weights.w2;

  FUSEKIT_RETURN_IF_ERROR(check_devices({{&x, "x"},
                                         {&logits, logits_name},
                                         {&bias, bias_name},
                                         {&ids, ids_name},
                                         {&weights, weights_name},
                                         {&w1, "layer.weights.w1"},
                                         {&w2, "layer.weights.w2"},
                                         {&out, "out"}},
                                        x));
  MoeBackend backend = MoeBackend::kCpu;
  FUSEKIT_RETURN_IF_ERROR(resolve_backend(c, x, &backend));
  FUSEKIT_RETURN_IF_ERROR(check_current_device(x, "x"));

  FUSEKIT_RETURN_IF_ERROR(expect_aligned_rows(x, "x"));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned_rows(out, "out"));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(w1, "layer.weights.w1", 16));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(w2, "layer.weights.w2", 16));
  if (router != nullptr) {
    FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(logits, logits_name));
    if (!bias.empty_view()) FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(bias, bias_name));
  } else {
    FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(ids, ids_name));
    FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(weights, weights_name));
  }
  FUSEKIT_RETURN_IF_ERROR(expect_disjoint(out, "out",
                                          {{&x, "x"},
                                           {&logits, logits_name},
                                           {&bias, bias_name},
                                           {&ids, ids_name},
                                           {&weights, weights_name},
                                           {&w1, "layer.weights.w1"},
                                           {&w2, "layer.weights.w2"}}));
  FUSEKIT_RETURN_IF_ERROR(check_workspace(c, backend, workspace, x,
                                          {{&x, "x"},
                                           {&logits, logits_name},
                                           {&bias, bias_name},
                                           {&ids, ids_name},
                                           {&weights, weights_name},
                                           {&w1, "layer.weights.w1"},
                                           {&w2, "layer.weights.w2"},
                                           {&out, "out"}}));
  if (T == 0) return Status::Ok();

  switch (backend) {
#if FUSEKIT_WITH_CUDA
    case MoeBackend::kCuda:
      return cuda_moe::forward(layer, x, router, routed, out, workspace, as_stream(stream));
    case MoeBackend::kCudaRef:
      return cuda_moe::ref_forward(layer, x, router, routed, out, workspace, as_stream(stream));
#endif
    default:
      (void)stream;
      return cpu::moe_forward_cpu(layer, x, router, routed, out, workspace);
  }
}

// Host-side repack for CPU weights, per expert: [A, B] -> [B, A] when transposing (source
// column b lands in row row_of(b)), else rows a -> row_of(a). row_of places W1's gate/up rows in
// `order` from kHalves (w1_row_from_halves); the identity for kHalves (W2, or W1 kept in its order).
void repack_host(const TensorView& s, const TensorView& d, bool transpose, MoeGateUpOrder order) {
  const auto* src = static_cast<const std::uint16_t*>(s.data);
  auto* dst = static_cast<std::uint16_t*>(d.data);
  if (!transpose && order == MoeGateUpOrder::kHalves) {
    std::memcpy(dst, src, sizeof(std::uint16_t) * static_cast<std::size_t>(s.numel()));
    return;
  }
  const std::int64_t E = s.shape[0], A = s.shape[1], B = s.shape[2];
  const std::int64_t half = (transpose ? B : A) / 2;
  auto row_of = [&](std::int64_t r) { return w1_row_from_halves(order, half, r); };
  for (std::int64_t e = 0; e < E; ++e) {
    const std::uint16_t* se = src + e * A * B;
    std::uint16_t* de = dst + e * A * B;
    for (std::int64_t a = 0; a < A; ++a) {
      if (transpose) {
        for (std::int64_t b = 0; b < B; ++b) de[row_of(b) * A + a] = se[a * B + b];
      } else {
        std::memcpy(de + row_of(a) * B, se + a * B, sizeof(std::uint16_t) * static_cast<std::size_t>(B));
      }
    }
  }
}

}  // namespace

// ---- public ------------------------------------------------------------------------------

Status parse_moe_backend(const char* name, MoeBackend* backend) {
  if (backend == nullptr) return invalid_argument("backend: null output pointer");
  if (name == nullptr) return invalid_argument(std::string("name: null; valid values: ") + kBackendValues);
  MoeBackend b;
  if (!parse_name(name, &b)) {
    return invalid_argument(std::string("unknown MoE backend \"") + name + "\"; valid values: " + kBackendValues);
  }
  *backend = b;
  return Status::Ok();
}

const char* moe_backend_name(MoeBackend backend) {
  switch (backend) {
    case MoeBackend::kAuto: return "auto";
    case MoeBackend::kCpu: return "cpu";
    case MoeBackend::kCuda: return "cuda";
    case MoeBackend::kCudaRef: return "cuda-ref";
  }
  return "unknown";
}

std::int64_t moe_align_capacity(std::int64_t tokens, std::int64_t top_k, std::int64_t num_experts,
                                std::int64_t block_m) {
  if (tokens <= 0 || top_k <= 0 || num_experts <= 0 || block_m <= 0) return 0;
  // Every non-empty expert's run is padded by at most block_m - 1 rows, and at most
  // min(T*k, E) experts are non-empty.
  const std::int64_t pairs = tokens * top_k;
  const std::int64_t rows = pairs + std::min(pairs, num_experts) * (block_m - 1);
  return (rows + block_m - 1) / block_m * block_m;
}

std::int64_t moe_align_block_m(const MoeConfig& config, DeviceType device) {
  if (device == DeviceType::kCPU) return cpu::kCpuBlockM;
#if FUSEKIT_WITH_CUDA
  return cuda_moe::align_block_m(config);
#else
  (void)config;
  return 0;
#endif
}

Status moe_workspace_size(const MoeConfig& config, std::size_t* bytes) {
  if (bytes == nullptr) return invalid_argument("bytes: null output pointer");
  FUSEKIT_RETURN_IF_ERROR(check_config(config, ConfigUse::kForward));
  std::size_t need = cpu::moe_workspace_size_cpu(config);
#if FUSEKIT_WITH_CUDA
  need = std::max(need, cuda_moe::workspace_size(config));
  need = std::max(need, cuda_moe::ref_workspace_size(config));
#endif
  *bytes = need;
  return Status::Ok();
}

MoeConfig moe_prepared_config(const MoeConfig& config) {
#if FUSEKIT_WITH_CUDA
  return cuda_moe::prepared_config(config);
#else
  MoeConfig to = config;
  to.layout = MoeWeightLayout::kNK;  // the CPU oracle reads both layouts and orders alike
  return to;
#endif
}

Status moe_prepare_weights(const MoeConfig& config, const MoeConfig& to, const MoeWeights& src,
                           const MoeWeights& dst, void* stream) {
  FUSEKIT_RETURN_IF_ERROR(check_config(config, ConfigUse::kStage));
  FUSEKIT_RETURN_IF_ERROR(check_weight_format(to, "to"));
  if (to.num_experts != config.num_experts || to.hidden != config.hidden || to.intermediate != config.intermediate) {
    return invalid_argument("to: must differ from config in layout and gate_up_order only, got (E, H, I) = (" +
                            str(to.num_experts) + ", " + str(to.hidden) + ", " + str(to.intermediate) +
                            ") vs config's (" + str(config.num_experts) + ", " + str(config.hidden) + ", " +
                            str(config.intermediate) + ")");
  }
  if (config.gate_up_order != to.gate_up_order && config.gate_up_order != MoeGateUpOrder::kHalves) {
    return invalid_argument("to.gate_up_order: W1 is reordered from kHalves only (config.gate_up_order is kInterleaved8)");
  }
  FUSEKIT_RETURN_IF_ERROR(check_weight(src.w1, "src.w1", config, true));
  FUSEKIT_RETURN_IF_ERROR(check_weight(src.w2, "src.w2", config, false));
  FUSEKIT_RETURN_IF_ERROR(check_weight(dst.w1, "dst.w1", to, true));
  FUSEKIT_RETURN_IF_ERROR(check_weight(dst.w2, "dst.w2", to, false));
  const TensorView& where = src.w1;
  FUSEKIT_RETURN_IF_ERROR(
      check_devices({{&src.w1, "src.w1"}, {&src.w2, "src.w2"}, {&dst.w1, "dst.w1"}, {&dst.w2, "dst.w2"}}, where));
  FUSEKIT_RETURN_IF_ERROR(check_current_device(where, "src.w1"));
  for (const Named& d : {Named{&dst.w1, "dst.w1"}, Named{&dst.w2, "dst.w2"}}) {
    FUSEKIT_RETURN_IF_ERROR(expect_aligned(*d.t, d.name, 16));
    FUSEKIT_RETURN_IF_ERROR(expect_disjoint(*d.t, d.name, {{&src.w1, "src.w1"}, {&src.w2, "src.w2"}}));
  }
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(src.w1, "src.w1", 16));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(src.w2, "src.w2", 16));
  FUSEKIT_RETURN_IF_ERROR(expect_disjoint(dst.w1, "dst.w1", {{&dst.w2, "dst.w2"}}));
  if (where.device == DeviceType::kCPU) {
    const bool transpose = to.layout != config.layout;
    const bool reorder = to.gate_up_order != config.gate_up_order;  // kHalves -> kInterleaved8 only
    repack_host(src.w1, dst.w1, transpose, reorder ? to.gate_up_order : MoeGateUpOrder::kHalves);
    repack_host(src.w2, dst.w2, transpose, MoeGateUpOrder::kHalves);
    return Status::Ok();
  }
#if FUSEKIT_WITH_CUDA
  return cuda_moe::prepare_weights(config, to, src, dst, as_stream(stream));
#else
  (void)stream;
  return unsupported("src.w1: is on a CUDA device but this build of fusekit has no CUDA backend");
#endif
}

Status moe_forward(const MoeLayer& layer, const TensorView& x, const MoeRouterInput& router, const TensorView& out,
                   const MoeWorkspace& workspace, void* stream) {
  return forward_impl(layer, x, &router, nullptr, out, workspace, stream);
}

Status moe_forward_routed(const MoeLayer& layer, const TensorView& x, const MoeRouted& routed,
                          const TensorView& out, const MoeWorkspace& workspace, void* stream) {
  return forward_impl(layer, x, nullptr, &routed, out, workspace, stream);
}

// ---- stages ------------------------------------------------------------------------------

Status moe_route(const MoeConfig& config, const MoeRouterInput& router, const MoeRouted& routed, void* stream) {
  FUSEKIT_RETURN_IF_ERROR(check_config(config, ConfigUse::kStage));
  FUSEKIT_RETURN_IF_ERROR(check_logits(config, router, 0, false));
  const TensorView& l = router.logits;
  const std::int64_t T = l.shape[0];
  FUSEKIT_RETURN_IF_ERROR(check_routed(config, routed, T, "routed.topk_ids", "routed.topk_weights"));
  const TensorView& b = router.correction_bias;
  FUSEKIT_RETURN_IF_ERROR(check_devices({{&l, "router.logits"},
                                         {&b, "router.correction_bias"},
                                         {&routed.topk_ids, "routed.topk_ids"},
                                         {&routed.topk_weights, "routed.topk_weights"}},
                                        l));
  FUSEKIT_RETURN_IF_ERROR(check_current_device(l, "router.logits"));
  FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(l, "router.logits"));
  if (!b.empty_view()) FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(b, "router.correction_bias"));
  FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(routed.topk_ids, "routed.topk_ids"));
  FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(routed.topk_weights, "routed.topk_weights"));
  FUSEKIT_RETURN_IF_ERROR(expect_disjoint(routed.topk_ids, "routed.topk_ids",
                                          {{&l, "router.logits"},
                                           {&b, "router.correction_bias"},
                                           {&routed.topk_weights, "routed.topk_weights"}}));
  FUSEKIT_RETURN_IF_ERROR(expect_disjoint(routed.topk_weights, "routed.topk_weights",
                                          {{&l, "router.logits"}, {&b, "router.correction_bias"}}));
  if (T == 0) return Status::Ok();
  if (l.device == DeviceType::kCPU) return cpu::moe_route_cpu(config, router, routed);
#if FUSEKIT_WITH_CUDA
  return cuda_moe::route(config, router, routed, as_stream(stream));
#else
  (void)stream;
  return Status(StatusCode::kInternal, "moe_route: unreachable without CUDA");
#endif
}

Status moe_align(const MoeConfig& config, const TensorView& topk_ids, const MoeAlignment& alignment, void* stream) {
  FUSEKIT_RETURN_IF_ERROR(check_config(config, ConfigUse::kStage));
  const std::int64_t k = config.top_k;
  FUSEKIT_RETURN_IF_ERROR(expect_present(topk_ids, "topk_ids"));
  FUSEKIT_RETURN_IF_ERROR(expect_dtype(topk_ids, "topk_ids", {DType::kI32}));
  FUSEKIT_RETURN_IF_ERROR(expect_rank(topk_ids, "topk_ids", 2));
  FUSEKIT_RETURN_IF_ERROR(expect_shape(topk_ids, "topk_ids", {kAnyDim, k}, "[T, top_k] = [T, " + str(k) + "]"));
  FUSEKIT_RETURN_IF_ERROR(expect_contiguous(topk_ids, "topk_ids"));
  const std::int64_t T = topk_ids.shape[0];
  FUSEKIT_RETURN_IF_ERROR(check_alignment(config, alignment, T));
  FUSEKIT_RETURN_IF_ERROR(check_devices({{&topk_ids, "topk_ids"}}, topk_ids));
  FUSEKIT_RETURN_IF_ERROR(check_alignment_devices(alignment, topk_ids));
  FUSEKIT_RETURN_IF_ERROR(check_current_device(topk_ids, "topk_ids"));
  FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(topk_ids, "topk_ids"));
  FUSEKIT_RETURN_IF_ERROR(check_int32_aligned(alignment));
  const MoeAlignment& a = alignment;
  FUSEKIT_RETURN_IF_ERROR(expect_disjoint(a.sorted_token_ids, "alignment.sorted_token_ids",
                                          {{&topk_ids, "topk_ids"},
                                           {&a.expert_ids, "alignment.expert_ids"},
                                           {&a.expert_offsets, "alignment.expert_offsets"},
                                           {&a.num_tokens_post_padded, "alignment.num_tokens_post_padded"}}));
  FUSEKIT_RETURN_IF_ERROR(expect_disjoint(a.expert_ids, "alignment.expert_ids",
                                          {{&topk_ids, "topk_ids"},
                                           {&a.expert_offsets, "alignment.expert_offsets"},
                                           {&a.num_tokens_post_padded, "alignment.num_tokens_post_padded"}}));
  FUSEKIT_RETURN_IF_ERROR(expect_disjoint(a.expert_offsets, "alignment.expert_offsets",
                                          {{&topk_ids, "topk_ids"},
                                           {&a.num_tokens_post_padded, "alignment.num_tokens_post_padded"}}));
  FUSEKIT_RETURN_IF_ERROR(
      expect_disjoint(a.num_tokens_post_padded, "alignment.num_tokens_post_padded", {{&topk_ids, "topk_ids"}}));
  if (topk_ids.device == DeviceType::kCPU) return cpu::moe_align_cpu(config, topk_ids, alignment);
#if FUSEKIT_WITH_CUDA
  return cuda_moe::align(config, topk_ids, alignment, as_stream(stream));
#else
  (void)stream;
  return Status(StatusCode::kInternal, "moe_align: unreachable without CUDA");
#endif
}

Status moe_gemm1_swiglu(const MoeLayer& layer, const TensorView& x, const MoeAlignment& alignment,
                        const TensorView& act, void* stream) {
  const MoeConfig& c = layer.config;
  FUSEKIT_RETURN_IF_ERROR(check_config(c, ConfigUse::kStage));
  const std::int64_t H = c.hidden, I = c.intermediate;
  FUSEKIT_RETURN_IF_ERROR(expect_matrix(x, "x", DType::kBF16, kAnyDim, H, "[T, hidden] = [T, " + str(H) + "]"));
  const std::int64_t T = x.shape[0];
  FUSEKIT_RETURN_IF_ERROR(check_weight(layer.weights.w1, "layer.weights.w1", c, true));
  FUSEKIT_RETURN_IF_ERROR(check_alignment(c, alignment, T));
  const std::int64_t cap = alignment.sorted_token_ids.shape[0];
  FUSEKIT_RETURN_IF_ERROR(
      expect_matrix(act, "act", DType::kBF16, cap, I, shape_text("[capacity, intermediate]", {cap, I})));
  const TensorView& w1 = layer.weights.w1;
  FUSEKIT_RETURN_IF_ERROR(check_devices({{&x, "x"}, {&w1, "layer.weights.w1"}, {&act, "act"}}, x));
  FUSEKIT_RETURN_IF_ERROR(check_alignment_devices(alignment, x));
  FUSEKIT_RETURN_IF_ERROR(check_current_device(x, "x"));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned_rows(x, "x"));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(w1, "layer.weights.w1", 16));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned_rows(act, "act"));
  FUSEKIT_RETURN_IF_ERROR(check_int32_aligned(alignment));
  FUSEKIT_RETURN_IF_ERROR(expect_disjoint(act, "act", {{&x, "x"}, {&w1, "layer.weights.w1"}}));
  FUSEKIT_RETURN_IF_ERROR(expect_disjoint_from_alignment(act, "act", alignment));
  if (x.device == DeviceType::kCPU) {
    if (cap == 0) return Status::Ok();
    return cpu::moe_gemm1_swiglu_cpu(layer, x, alignment, act);
  }
#if FUSEKIT_WITH_CUDA
  FUSEKIT_RETURN_IF_ERROR(check_cuda_block_m(c, alignment));
  if (cap == 0) return Status::Ok();
  return cuda_moe::gemm1_swiglu(layer, x, alignment, act, as_stream(stream));
#else
  (void)stream;
  return Status(StatusCode::kInternal, "moe_gemm1_swiglu: unreachable without CUDA");
#endif
}

Status moe_gemm2(const MoeLayer& layer, const TensorView& act, const MoeAlignment& alignment,
                 const TensorView& topk_weights, const TensorView& y, void* stream) {
  const MoeConfig& c = layer.config;
  FUSEKIT_RETURN_IF_ERROR(check_config(c, ConfigUse::kStage));
  const std::int64_t k = c.top_k, H = c.hidden, I = c.intermediate;
  FUSEKIT_RETURN_IF_ERROR(expect_present(topk_weights, "topk_weights"));
  FUSEKIT_RETURN_IF_ERROR(expect_dtype(topk_weights, "topk_weights", {DType::kF32}));
  FUSEKIT_RETURN_IF_ERROR(expect_rank(topk_weights, "topk_weights", 2));
  FUSEKIT_RETURN_IF_ERROR(
      expect_shape(topk_weights, "topk_weights", {kAnyDim, k}, "[T, top_k] = [T, " + str(k) + "]"));
  FUSEKIT_RETURN_IF_ERROR(expect_contiguous(topk_weights, "topk_weights"));
  const std::int64_t T = topk_weights.shape[0];
  FUSEKIT_RETURN_IF_ERROR(check_weight(layer.weights.w2, "layer.weights.w2", c, false));
  FUSEKIT_RETURN_IF_ERROR(check_alignment(c, alignment, T));
  const std::int64_t cap = alignment.sorted_token_ids.shape[0];
  FUSEKIT_RETURN_IF_ERROR(
      expect_matrix(act, "act", DType::kBF16, cap, I, shape_text("[capacity, intermediate]", {cap, I})));
  FUSEKIT_RETURN_IF_ERROR(
      expect_matrix(y, "y", DType::kBF16, T * k, H, shape_text("[T * top_k, hidden]", {T * k, H})));
  const TensorView& w2 = layer.weights.w2;
  FUSEKIT_RETURN_IF_ERROR(check_devices(
      {{&act, "act"}, {&w2, "layer.weights.w2"}, {&topk_weights, "topk_weights"}, {&y, "y"}}, act));
  FUSEKIT_RETURN_IF_ERROR(check_alignment_devices(alignment, act));
  FUSEKIT_RETURN_IF_ERROR(check_current_device(act, "act"));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned_rows(act, "act"));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(w2, "layer.weights.w2", 16));
  FUSEKIT_RETURN_IF_ERROR(expect_element_aligned(topk_weights, "topk_weights"));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned_rows(y, "y"));
  FUSEKIT_RETURN_IF_ERROR(check_int32_aligned(alignment));
  FUSEKIT_RETURN_IF_ERROR(
      expect_disjoint(y, "y", {{&act, "act"}, {&w2, "layer.weights.w2"}, {&topk_weights, "topk_weights"}}));
  FUSEKIT_RETURN_IF_ERROR(expect_disjoint_from_alignment(y, "y", alignment));
  if (act.device == DeviceType::kCPU) {
    if (T == 0) return Status::Ok();
    return cpu::moe_gemm2_cpu(layer, act, alignment, topk_weights, y);
  }
#if FUSEKIT_WITH_CUDA
  FUSEKIT_RETURN_IF_ERROR(check_cuda_block_m(c, alignment));
  if (T == 0) return Status::Ok();
  return cuda_moe::gemm2(layer, act, alignment, topk_weights, y, as_stream(stream));
#else
  (void)stream;
  return Status(StatusCode::kInternal, "moe_gemm2: unreachable without CUDA");
#endif
}

Status moe_finalize(const MoeConfig& config, const TensorView& y, const TensorView& out, void* stream) {
  FUSEKIT_RETURN_IF_ERROR(check_config(config, ConfigUse::kStage));
  const std::int64_t k = config.top_k, H = config.hidden;
  FUSEKIT_RETURN_IF_ERROR(expect_matrix(out, "out", DType::kBF16, kAnyDim, H, "[T, hidden] = [T, " + str(H) + "]"));
  const std::int64_t T = out.shape[0];
  FUSEKIT_RETURN_IF_ERROR(expect_present(y, "y"));
  FUSEKIT_RETURN_IF_ERROR(expect_dtype(y, "y", {DType::kBF16}));
  FUSEKIT_RETURN_IF_ERROR(expect_rank(y, "y", 2));
  FUSEKIT_RETURN_IF_ERROR(expect_shape(y, "y", {T * k, H}, shape_text("[T * top_k, hidden]", {T * k, H})));
  FUSEKIT_RETURN_IF_ERROR(expect_contiguous(y, "y"));
  FUSEKIT_RETURN_IF_ERROR(check_devices({{&y, "y"}, {&out, "out"}}, y));
  FUSEKIT_RETURN_IF_ERROR(check_current_device(y, "y"));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned(y, "y", 16));
  FUSEKIT_RETURN_IF_ERROR(expect_aligned_rows(out, "out"));
  FUSEKIT_RETURN_IF_ERROR(expect_disjoint(out, "out", {{&y, "y"}}));
  if (T == 0) return Status::Ok();
  if (y.device == DeviceType::kCPU) return cpu::moe_finalize_cpu(config, y, out);
#if FUSEKIT_WITH_CUDA
  return cuda_moe::finalize(config, y, out, as_stream(stream));
#else
  (void)stream;
  return Status(StatusCode::kInternal, "moe_finalize: unreachable without CUDA");
#endif
}

}  // namespace fusekit
