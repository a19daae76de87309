// fusekit._fusekit — the nanobind binding of the public C++ API (include/fusekit).
//
// It only converts, dispatches and translates errors; every check on shapes, dtypes,
// devices, strides and alignment is the library's (src/api), so Python and C++ users get the
// same error texts and the same guarantee: an error means nothing was launched or written.
//
// Arrays: anything DLPack-capable (torch CPU/CUDA tensors, NumPy, CuPy, ...) arrives as an
// nb::ndarray and becomes a fusekit::TensorView zero-copy: same pointer, strides in elements,
// device type and id. Inputs are taken read-only, outputs must be writable.
//
// Errors (the rule the Python package documents):
//   TypeError          the object is not an array, or its dtype is one fusekit has no name for
//                      (float64, uint8, ...), or the library's invalid-argument message is about
//                      a dtype (the validator's "expected dtype" / "expected the dtype" wording)
//   ValueError         every other invalid-argument error (shape, rank, stride, alignment,
//                      device, range, overlap)
//   NotImplementedError  unsupported by this build or device (e.g. CUDA tensors, CPU-only build)
//   RuntimeError       CUDA / NCCL / internal errors
// Streams arrive as integers (a cudaStream_t value); the Python layer passes torch's current
// stream explicitly, so nothing here picks a stream on its own.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "fusekit/moe.h"
#include "fusekit/qk_norm.h"
#include "fusekit/status.h"
#include "fusekit/tensor.h"

namespace nb = nanobind;

namespace {

using fusekit::DType;
using fusekit::Status;
using fusekit::StatusCode;
using fusekit::TensorView;

using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

bool is_dtype_message(const std::string& m) {
  return m.find("expected dtype") != std::string::npos || m.find("expected the dtype") != std::string::npos;
}

// The library names arguments by their C++ path (router.logits, layer.weights.w1, ...); a
// Python caller passed them as keyword arguments, so the leading name is spelled that way.
std::string python_names(const std::string& message) {
  static const char* const kRenames[][2] = {
      {"router.logits", "router_logits"},
      {"router.correction_bias", "correction_bias"},
      {"layer.weights.w1", "w1"},
      {"layer.weights.w2", "w2"},
      {"routed.topk_ids", "topk_ids"},
      {"routed.topk_weights", "topk_weights"},
      {"params.rotary.positions", "positions"},
      {"params.rotary.cos_sin_cache", "cos_sin_cache"},
      {"params.rotary.rotary_dim", "rotary_dim"},
      {"params.rotary.style", "rotary"},
      {"config.routing.mode", "routing"},
      {"config.routing.norm", "renormalize"},
      {"config.routing.", ""},
      {"layer.config.", ""},
      {"config.", ""},
      {"params.", ""},
  };
  for (const auto& r : kRenames) {
    const std::string from = r[0];
    if (message.compare(0, from.size(), from) == 0) return r[1] + message.substr(from.size());
  }
  return message;
}

void raise_if_error(const Status& s) {
  if (s.ok()) return;
  const std::string m = python_names(s.message());
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
      if (is_dtype_message(m)) throw nb::type_error(m.c_str());
      throw nb::value_error(m.c_str());
    case StatusCode::kUnsupported:
      PyErr_SetString(PyExc_NotImplementedError, m.c_str());
      throw nb::python_error();
    default:
      throw std::runtime_error(s.to_string());
  }
}

// Runs a library call without the GIL (a CPU MoE forward can take a while) and raises its error.
template <class F>
void call(F&& f) {
  Status s;
  {
    nb::gil_scoped_release release;
    s = f();
  }
  raise_if_error(s);
}

std::string py_type_name(nb::handle h) { return nb::type_name(h.type()).c_str(); }

bool to_dtype(const nb::dlpack::dtype& d, DType* out) {
  using Code = nb::dlpack::dtype_code;
  if (d.lanes != 1) return false;
  const auto code = static_cast<Code>(d.code);
  if (code == Code::Bfloat && d.bits == 16) *out = DType::kBF16;
  else if (code == Code::Float && d.bits == 16) *out = DType::kF16;
  else if (code == Code::Float && d.bits == 32) *out = DType::kF32;
  else if (code == Code::Int && d.bits == 32) *out = DType::kI32;
  else if (code == Code::Int && d.bits == 64) *out = DType::kI64;
  else return false;
  return true;
}

std::string dlpack_dtype_text(const nb::dlpack::dtype& d) {
  using Code = nb::dlpack::dtype_code;
  const char* kind = "?";
  switch (static_cast<Code>(d.code)) {
    case Code::Int: kind = "int"; break;
    case Code::UInt: kind = "uint"; break;
    case Code::Float: kind = "float"; break;
    case Code::Bfloat: kind = "bfloat"; break;
    case Code::Complex: kind = "complex"; break;
    case Code::Bool: kind = "bool"; break;
    default: break;
  }
  std::string s = std::string(kind) + std::to_string(d.bits);
  if (d.lanes != 1) s += "x" + std::to_string(d.lanes);
  return s;
}

template <class Array>
TensorView view_of(const Array& a, const char* name) {
  TensorView t;
  if (!to_dtype(a.dtype(), &t.dtype)) {
    throw nb::type_error((std::string(name) + ": dtype " + dlpack_dtype_text(a.dtype()) +
                          " is not supported by fusekit (bf16, fp16, fp32, int32, int64)")
                             .c_str());
  }
  if (a.ndim() > static_cast<std::size_t>(TensorView::kMaxRank)) {
    throw nb::value_error((std::string(name) + ": rank " + std::to_string(a.ndim()) +
                           " is more than fusekit's maximum of " + std::to_string(TensorView::kMaxRank))
                              .c_str());
  }
  t.rank = static_cast<int>(a.ndim());
  for (int d = 0; d < t.rank; ++d) {
    t.shape[d] = static_cast<std::int64_t>(a.shape(d));
    t.strides[d] = static_cast<std::int64_t>(a.stride(d));
  }
  if (t.numel() == 0) {
    // Exporters disagree on the strides of an empty array (NumPy's DLPack gives zeros); it has
    // no element to address, so describe it as packed.
    std::int64_t stride = 1;
    for (int d = t.rank - 1; d >= 0; --d) {
      t.strides[d] = stride;
      stride *= std::max<std::int64_t>(t.shape[d], 1);
    }
  }
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  const int dev = a.device_type();
  if (dev == nb::device::cpu::value || dev == nb::device::cuda_host::value) {
    t.device = fusekit::DeviceType::kCPU;  // pinned host memory is host memory to fusekit
    t.device_id = 0;
  } else if (dev == nb::device::cuda::value || dev == nb::device::cuda_managed::value) {
    t.device = fusekit::DeviceType::kCUDA;
    t.device_id = a.device_id();
  } else {
    throw nb::value_error((std::string(name) + ": arrays on DLPack device type " + std::to_string(dev) +
                           " are not supported (cpu or cuda)")
                              .c_str());
  }
  return t;
}

// Arguments hold their nb::ndarray (and so the exporter's buffer) for the whole call.
struct In {
  InArray array;
  TensorView view;
};
struct Out {
  OutArray array;
  TensorView view;
};

In input(nb::handle h, const char* name, bool optional = false) {
  In r;
  if (h.is_none()) {
    if (optional) return r;
    throw nb::type_error((std::string(name) + ": expected an array, got None").c_str());
  }
  if (!nb::try_cast(h, r.array, /*convert=*/false)) {
    throw nb::type_error((std::string(name) + ": expected a DLPack-capable array (torch tensor, NumPy array, ...), got " +
                          py_type_name(h))
                             .c_str());
  }
  r.view = view_of(r.array, name);
  return r;
}

Out output(nb::handle h, const char* name) {
  Out r;
  if (h.is_none()) throw nb::type_error((std::string(name) + ": expected an output array, got None").c_str());
  if (!nb::try_cast(h, r.array, /*convert=*/false)) {
    // Distinguish a read-only array from something that is no array at all.
    InArray ro;
    if (nb::try_cast(h, ro, false)) {
      throw nb::value_error((std::string(name) + ": is read-only; an output array must be writable").c_str());
    }
    throw nb::type_error((std::string(name) + ": expected a writable DLPack-capable array, got " + py_type_name(h)).c_str());
  }
  r.view = view_of(r.array, name);
  return r;
}

void* stream_ptr(std::uintptr_t stream) { return reinterpret_cast<void*>(stream); }

// ---- QK RMSNorm ----

fusekit::RotaryStyle parse_rotary_style(const std::string& s) {
  if (s.empty() || s == "none") return fusekit::RotaryStyle::kNone;
  if (s == "neox") return fusekit::RotaryStyle::kNeox;
  if (s == "gptj") return fusekit::RotaryStyle::kGptj;
  throw nb::value_error(("rotary: expected None, \"neox\" or \"gptj\", got \"" + s + "\"").c_str());
}

void qk_rmsnorm(nb::handle qkv, nb::handle q_weight, nb::handle k_weight, nb::handle out, std::int64_t num_q_heads,
                std::int64_t num_kv_heads, std::int64_t head_dim, std::int64_t v_head_dim, float eps,
                const std::string& rotary_style, std::int64_t rotary_dim, nb::handle positions,
                nb::handle cos_sin_cache, std::uintptr_t stream) {
  In a = input(qkv, "qkv");
  In wq = input(q_weight, "q_weight");
  In wk = input(k_weight, "k_weight");
  Out o = output(out, "out");
  fusekit::QkNormParams p;
  p.num_q_heads = num_q_heads;
  p.num_kv_heads = num_kv_heads;
  p.head_dim = head_dim;
  p.v_head_dim = v_head_dim;
  p.eps = eps;
  p.rotary.style = parse_rotary_style(rotary_style);
  In pos, cache;
  if (p.rotary.style != fusekit::RotaryStyle::kNone) {
    pos = input(positions, "positions");
    cache = input(cos_sin_cache, "cos_sin_cache");
    p.rotary.rotary_dim = rotary_dim;
    p.rotary.positions = pos.view;
    p.rotary.cos_sin_cache = cache.view;
  }
  call([&] { return fusekit::qk_rmsnorm(a.view, wq.view, wk.view, o.view, p, stream_ptr(stream)); });
}

// ---- MoE ----

std::string layout_name(fusekit::MoeWeightLayout l) { return l == fusekit::MoeWeightLayout::kNK ? "nk" : "kn"; }
std::string gate_up_order_name(fusekit::MoeGateUpOrder o) {
  return o == fusekit::MoeGateUpOrder::kHalves ? "halves" : "interleaved8";
}
fusekit::MoeGateUpOrder parse_gate_up_order(const std::string& s) {
  if (s == "halves") return fusekit::MoeGateUpOrder::kHalves;
  if (s == "interleaved8") return fusekit::MoeGateUpOrder::kInterleaved8;
  throw nb::value_error(("gate_up_order: expected \"halves\" (W1 gate rows, then up rows) or \"interleaved8\" "
                         "(blocks of 8 gate rows and 8 up rows alternating), got \"" +
                         s + "\"")
                            .c_str());
}
fusekit::MoeWeightLayout parse_layout(const std::string& s) {
  if (s == "nk" || s == "NK") return fusekit::MoeWeightLayout::kNK;
  if (s == "kn" || s == "KN") return fusekit::MoeWeightLayout::kKN;
  throw nb::value_error(("layout: expected \"nk\" (W1 [E, 2I, H], W2 [E, H, I]) or \"kn\" (W1 [E, H, 2I], W2 [E, I, H]), got \"" +
                         s + "\"")
                            .c_str());
}
std::string routing_name(fusekit::MoeRoutingMode m) {
  return m == fusekit::MoeRoutingMode::kSoftmaxTopK ? "softmax" : "sigmoid";
}
fusekit::MoeRoutingMode parse_routing(const std::string& s) {
  if (s == "softmax") return fusekit::MoeRoutingMode::kSoftmaxTopK;
  if (s == "sigmoid") return fusekit::MoeRoutingMode::kSigmoidGroupedTopK;
  throw nb::value_error(("routing: expected \"softmax\" (softmax top-k) or \"sigmoid\" (sigmoid + bias, grouped top-k), got \"" +
                         s + "\"")
                            .c_str());
}
fusekit::MoeBackend parse_backend(const std::string& s) {
  fusekit::MoeBackend b;
  Status st = fusekit::parse_moe_backend(s.c_str(), &b);
  if (!st.ok()) throw nb::value_error(("backend: " + st.message()).c_str());
  return b;
}

struct Weights {
  In w1, w2;
  fusekit::MoeLayer layer(const fusekit::MoeConfig& c) const {
    fusekit::MoeLayer l;
    l.config = c;
    l.weights.w1 = w1.view;
    l.weights.w2 = w2.view;
    return l;
  }
};
Weights weights(nb::handle w1, nb::handle w2) { return Weights{input(w1, "w1"), input(w2, "w2")}; }

struct Workspace {
  OutArray array;
  fusekit::MoeWorkspace ws;
};
// The workspace is raw bytes: any writable contiguous array, its whole extent.
Workspace workspace(nb::handle h) {
  Workspace w;
  if (h.is_none()) return w;
  if (!nb::try_cast(h, w.array, false)) {
    throw nb::type_error(("workspace: expected a writable DLPack-capable array, got " + py_type_name(h)).c_str());
  }
  std::size_t n = 1;
  std::int64_t expected = 1;
  for (std::size_t d = w.array.ndim(); d-- > 0;) {
    if (w.array.shape(d) != 1 && w.array.stride(d) != expected) {
      throw nb::value_error("workspace: expected a contiguous array");
    }
    expected *= static_cast<std::int64_t>(w.array.shape(d));
    n *= w.array.shape(d);
  }
  w.ws.data = w.array.data();
  w.ws.bytes = n * (w.array.dtype().bits / 8) * w.array.dtype().lanes;
  return w;
}

struct Alignment {
  Out sorted, expert_ids, offsets, ntpp;
  fusekit::MoeAlignment get(std::int64_t block_m) const {
    fusekit::MoeAlignment a;
    a.block_m = block_m;
    a.sorted_token_ids = sorted.view;
    a.expert_ids = expert_ids.view;
    a.expert_offsets = offsets.view;
    a.num_tokens_post_padded = ntpp.view;
    return a;
  }
};
// Stages after align only read the alignment, but it is bound writable: it is the caller's
// scratch, made by fusekit.MoE.align.
Alignment alignment(nb::handle sorted, nb::handle expert_ids, nb::handle offsets, nb::handle ntpp) {
  return Alignment{output(sorted, "alignment.sorted_token_ids"), output(expert_ids, "alignment.expert_ids"),
                   output(offsets, "alignment.expert_offsets"), output(ntpp, "alignment.num_tokens_post_padded")};
}

void moe_forward(const fusekit::MoeConfig& config, nb::handle w1, nb::handle w2, nb::handle x, nb::handle logits,
                 nb::handle correction_bias, nb::handle out, nb::handle ws, std::uintptr_t stream) {
  Weights w = weights(w1, w2);
  In xi = input(x, "x");
  fusekit::MoeRouterInput r;
  In lg = input(logits, "router_logits");
  In bias = input(correction_bias, "correction_bias", /*optional=*/true);
  r.logits = lg.view;
  r.correction_bias = bias.view;
  Out o = output(out, "out");
  Workspace wsp = workspace(ws);
  const fusekit::MoeLayer layer = w.layer(config);
  call([&] { return fusekit::moe_forward(layer, xi.view, r, o.view, wsp.ws, stream_ptr(stream)); });
}

void moe_forward_routed(const fusekit::MoeConfig& config, nb::handle w1, nb::handle w2, nb::handle x,
                        nb::handle topk_ids, nb::handle topk_weights, nb::handle out, nb::handle ws,
                        std::uintptr_t stream) {
  Weights w = weights(w1, w2);
  In xi = input(x, "x");
  In ids = input(topk_ids, "topk_ids");
  In tw = input(topk_weights, "topk_weights");
  fusekit::MoeRouted routed;
  routed.topk_ids = ids.view;
  routed.topk_weights = tw.view;
  Out o = output(out, "out");
  Workspace wsp = workspace(ws);
  const fusekit::MoeLayer layer = w.layer(config);
  call([&] { return fusekit::moe_forward_routed(layer, xi.view, routed, o.view, wsp.ws, stream_ptr(stream)); });
}

void moe_route(const fusekit::MoeConfig& config, nb::handle logits, nb::handle correction_bias, nb::handle topk_ids,
               nb::handle topk_weights, std::uintptr_t stream) {
  In lg = input(logits, "router_logits");
  In bias = input(correction_bias, "correction_bias", true);
  Out ids = output(topk_ids, "topk_ids");
  Out tw = output(topk_weights, "topk_weights");
  fusekit::MoeRouterInput r;
  r.logits = lg.view;
  r.correction_bias = bias.view;
  fusekit::MoeRouted routed;
  routed.topk_ids = ids.view;
  routed.topk_weights = tw.view;
  call([&] { return fusekit::moe_route(config, r, routed, stream_ptr(stream)); });
}

void moe_align(const fusekit::MoeConfig& config, nb::handle topk_ids, std::int64_t block_m, nb::handle sorted,
               nb::handle expert_ids, nb::handle offsets, nb::handle ntpp, std::uintptr_t stream) {
  In ids = input(topk_ids, "topk_ids");
  Alignment al = alignment(sorted, expert_ids, offsets, ntpp);
  const fusekit::MoeAlignment a = al.get(block_m);
  call([&] { return fusekit::moe_align(config, ids.view, a, stream_ptr(stream)); });
}

void moe_gemm1_swiglu(const fusekit::MoeConfig& config, nb::handle w1, nb::handle w2, nb::handle x,
                      std::int64_t block_m, nb::handle sorted, nb::handle expert_ids, nb::handle offsets,
                      nb::handle ntpp, nb::handle act, std::uintptr_t stream) {
  Weights w = weights(w1, w2);
  In xi = input(x, "x");
  Alignment al = alignment(sorted, expert_ids, offsets, ntpp);
  Out a = output(act, "act");
  const fusekit::MoeLayer layer = w.layer(config);
  const fusekit::MoeAlignment alg = al.get(block_m);
  call([&] { return fusekit::moe_gemm1_swiglu(layer, xi.view, alg, a.view, stream_ptr(stream)); });
}

void moe_gemm2(const fusekit::MoeConfig& config, nb::handle w1, nb::handle w2, nb::handle act, std::int64_t block_m,
               nb::handle sorted, nb::handle expert_ids, nb::handle offsets, nb::handle ntpp, nb::handle topk_weights,
               nb::handle y, std::uintptr_t stream) {
  Weights w = weights(w1, w2);
  In a = input(act, "act");
  Alignment al = alignment(sorted, expert_ids, offsets, ntpp);
  In tw = input(topk_weights, "topk_weights");
  Out yo = output(y, "y");
  const fusekit::MoeLayer layer = w.layer(config);
  const fusekit::MoeAlignment alg = al.get(block_m);
  call([&] { return fusekit::moe_gemm2(layer, a.view, alg, tw.view, yo.view, stream_ptr(stream)); });
}

void moe_finalize(const fusekit::MoeConfig& config, nb::handle y, nb::handle out, std::uintptr_t stream) {
  In yi = input(y, "y");
  Out o = output(out, "out");
  call([&] { return fusekit::moe_finalize(config, yi.view, o.view, stream_ptr(stream)); });
}

void moe_prepare_weights(const fusekit::MoeConfig& config, const fusekit::MoeConfig& to, nb::handle src_w1,
                         nb::handle src_w2, nb::handle dst_w1, nb::handle dst_w2, std::uintptr_t stream) {
  In s1 = input(src_w1, "w1");
  In s2 = input(src_w2, "w2");
  Out d1 = output(dst_w1, "dst_w1");
  Out d2 = output(dst_w2, "dst_w2");
  fusekit::MoeWeights src{s1.view, s2.view}, dst{d1.view, d2.view};
  call([&] { return fusekit::moe_prepare_weights(config, to, src, dst, stream_ptr(stream)); });
}

std::size_t moe_workspace_size(const fusekit::MoeConfig& config) {
  std::size_t bytes = 0;
  raise_if_error(fusekit::moe_workspace_size(config, &bytes));
  return bytes;
}

}  // namespace

NB_MODULE(_fusekit, m) {
  m.doc() = "fusekit's C++ API bound with nanobind (use the `fusekit` package, not this module)";
  m.attr("with_cuda") = bool(FUSEKIT_PY_WITH_CUDA);

  m.def("qk_rmsnorm", &qk_rmsnorm, nb::arg("qkv"), nb::arg("q_weight"), nb::arg("k_weight"), nb::arg("out"),
        nb::arg("num_q_heads"), nb::arg("num_kv_heads"), nb::arg("head_dim"), nb::arg("v_head_dim"), nb::arg("eps"),
        nb::arg("rotary_style"), nb::arg("rotary_dim"), nb::arg("positions").none(), nb::arg("cos_sin_cache").none(),
        nb::arg("stream"));

  nb::class_<fusekit::MoeConfig>(m, "MoeConfig")
      .def(nb::init<>())
      .def_rw("num_experts", &fusekit::MoeConfig::num_experts)
      .def_rw("top_k", &fusekit::MoeConfig::top_k)
      .def_rw("hidden", &fusekit::MoeConfig::hidden)
      .def_rw("intermediate", &fusekit::MoeConfig::intermediate)
      .def_rw("max_tokens", &fusekit::MoeConfig::max_tokens)
      .def_rw("expert_parallel_size", &fusekit::MoeConfig::expert_parallel_size)
      .def_prop_rw(
          "layout", [](const fusekit::MoeConfig& c) { return layout_name(c.layout); },
          [](fusekit::MoeConfig& c, const std::string& s) { c.layout = parse_layout(s); })
      .def_prop_rw(
          "gate_up_order", [](const fusekit::MoeConfig& c) { return gate_up_order_name(c.gate_up_order); },
          [](fusekit::MoeConfig& c, const std::string& s) { c.gate_up_order = parse_gate_up_order(s); })
      .def_prop_rw(
          "routing", [](const fusekit::MoeConfig& c) { return routing_name(c.routing.mode); },
          [](fusekit::MoeConfig& c, const std::string& s) { c.routing.mode = parse_routing(s); })
      .def_prop_rw(
          "renormalize", [](const fusekit::MoeConfig& c) { return c.routing.norm == fusekit::MoeTopkNorm::kRenormalize; },
          [](fusekit::MoeConfig& c, bool v) {
            c.routing.norm = v ? fusekit::MoeTopkNorm::kRenormalize : fusekit::MoeTopkNorm::kNone;
          })
      .def_prop_rw(
          "num_groups", [](const fusekit::MoeConfig& c) { return c.routing.num_groups; },
          [](fusekit::MoeConfig& c, std::int64_t v) { c.routing.num_groups = v; })
      .def_prop_rw(
          "topk_groups", [](const fusekit::MoeConfig& c) { return c.routing.topk_groups; },
          [](fusekit::MoeConfig& c, std::int64_t v) { c.routing.topk_groups = v; })
      .def_prop_rw(
          "routed_scaling_factor", [](const fusekit::MoeConfig& c) { return c.routing.routed_scaling_factor; },
          [](fusekit::MoeConfig& c, float v) { c.routing.routed_scaling_factor = v; })
      .def_prop_rw(
          "backend", [](const fusekit::MoeConfig& c) { return std::string(fusekit::moe_backend_name(c.backend)); },
          [](fusekit::MoeConfig& c, const std::string& s) { c.backend = parse_backend(s); })
      .def("copy", [](const fusekit::MoeConfig& c) { return c; });

  m.def("moe_workspace_size", &moe_workspace_size, nb::arg("config"));
  m.def("moe_prepared_config", &fusekit::moe_prepared_config, nb::arg("config"));
  m.def(
      "moe_align_block_m",
      [](const fusekit::MoeConfig& c, bool cuda) {
        return fusekit::moe_align_block_m(c, cuda ? fusekit::DeviceType::kCUDA : fusekit::DeviceType::kCPU);
      },
      nb::arg("config"), nb::arg("cuda"));
  m.def("moe_align_capacity", &fusekit::moe_align_capacity, nb::arg("tokens"), nb::arg("top_k"),
        nb::arg("num_experts"), nb::arg("block_m"));
  m.def("moe_forward", &moe_forward, nb::arg("config"), nb::arg("w1"), nb::arg("w2"), nb::arg("x"),
        nb::arg("router_logits"), nb::arg("correction_bias").none(), nb::arg("out"), nb::arg("workspace").none(),
        nb::arg("stream"));
  m.def("moe_forward_routed", &moe_forward_routed, nb::arg("config"), nb::arg("w1"), nb::arg("w2"), nb::arg("x"),
        nb::arg("topk_ids"), nb::arg("topk_weights"), nb::arg("out"), nb::arg("workspace").none(), nb::arg("stream"));
  m.def("moe_route", &moe_route, nb::arg("config"), nb::arg("router_logits"), nb::arg("correction_bias").none(),
        nb::arg("topk_ids"), nb::arg("topk_weights"), nb::arg("stream"));
  m.def("moe_align", &moe_align, nb::arg("config"), nb::arg("topk_ids"), nb::arg("block_m"),
        nb::arg("sorted_token_ids"), nb::arg("expert_ids"), nb::arg("expert_offsets"),
        nb::arg("num_tokens_post_padded"), nb::arg("stream"));
  m.def("moe_gemm1_swiglu", &moe_gemm1_swiglu, nb::arg("config"), nb::arg("w1"), nb::arg("w2"), nb::arg("x"),
        nb::arg("block_m"), nb::arg("sorted_token_ids"), nb::arg("expert_ids"), nb::arg("expert_offsets"),
        nb::arg("num_tokens_post_padded"), nb::arg("act"), nb::arg("stream"));
  m.def("moe_gemm2", &moe_gemm2, nb::arg("config"), nb::arg("w1"), nb::arg("w2"), nb::arg("act"), nb::arg("block_m"),
        nb::arg("sorted_token_ids"), nb::arg("expert_ids"), nb::arg("expert_offsets"),
        nb::arg("num_tokens_post_padded"), nb::arg("topk_weights"), nb::arg("y"), nb::arg("stream"));
  m.def("moe_finalize", &moe_finalize, nb::arg("config"), nb::arg("y"), nb::arg("out"), nb::arg("stream"));
  m.def("moe_prepare_weights", &moe_prepare_weights, nb::arg("config"), nb::arg("to"), nb::arg("w1"), nb::arg("w2"),
        nb::arg("dst_w1"), nb::arg("dst_w2"), nb::arg("stream"));
}
