"""fusekit's BF16 fused Mixture-of-Experts FFN (see include/fusekit/moe.h for the contract).

    x [T, H] bf16, router_logits [T, E] fp32|bf16
    route -> topk_ids [T, k] int32, topk_weights [T, k] fp32
    align -> sorted pairs per expert, padded to block_m
    gemm1_swiglu -> act [capacity, I] bf16;  gemm2 -> y [T*k, H] bf16;  finalize -> out [T, H]

``MoE`` holds a layer: its config, its weights (zero-copy views of the caller's arrays) and a
workspace allocated once (torch on the weights' device for torch weights, NumPy for NumPy),
so a forward call allocates nothing but the outputs it is not given, and with ``out=`` given
nothing at all: it can be captured in a CUDA graph (torch.cuda.graph) and replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from . import _fusekit
from ._util import arg, array_shape, empty, is_cuda_array, is_torch, rows_view, stream_for

# The CUDA backends want a 256-byte aligned workspace, the CPU backend 16 bytes.
_WORKSPACE_ALIGN = 256


@dataclass
class MoeAlignment:
    """The output of ``MoE.align``: each expert's pairs (t*k + j) grouped and padded to block_m."""

    block_m: int
    sorted_token_ids: Any  # [capacity] int32
    expert_ids: Any  # [capacity / block_m] int32
    expert_offsets: Any  # [E + 1] int32
    num_tokens_post_padded: Any  # [1] int32

    def _args(self):
        return (
            int(self.block_m),
            self.sorted_token_ids,
            self.expert_ids,
            self.expert_offsets,
            self.num_tokens_post_padded,
        )


_shape = array_shape


def allocate_workspace(nbytes: int, like: Any):
    """A workspace of at least `nbytes` bytes, 256-byte aligned, on the device of `like`
    (torch tensor -> torch uint8 tensor; anything else -> NumPy uint8 array)."""
    nbytes = max(int(nbytes), 1)
    if is_torch(like):
        import torch

        raw = torch.empty(nbytes + _WORKSPACE_ALIGN, dtype=torch.uint8, device=like.device)
        off = (-raw.data_ptr()) % _WORKSPACE_ALIGN
        return raw[off : off + nbytes]
    if is_cuda_array(like):
        raise TypeError("workspace: pass workspace= for non-torch CUDA weights (fusekit allocates with torch or NumPy)")
    raw = np.empty(nbytes + _WORKSPACE_ALIGN, dtype=np.uint8)
    off = (-raw.ctypes.data) % _WORKSPACE_ALIGN
    return raw[off : off + nbytes]


def make_config(
    *,
    num_experts: int,
    top_k: int,
    hidden: int,
    intermediate: int,
    max_tokens: int = 0,
    layout: str = "nk",
    routing: str = "softmax",
    renormalize: bool = True,
    num_groups: int = 1,
    topk_groups: int = 1,
    routed_scaling_factor: float = 1.0,
    backend: Optional[str] = None,
    gate_up_order: str = "halves",
):
    """A fusekit MoeConfig. ``backend`` None means "auto": FUSEKIT_MOE_BACKEND if set (read
    by the library at each call), else the best for the tensors' device."""
    c = _fusekit.MoeConfig()
    c.num_experts = int(num_experts)
    c.top_k = int(top_k)
    c.hidden = int(hidden)
    c.intermediate = int(intermediate)
    c.max_tokens = int(max_tokens)
    c.layout = layout
    c.gate_up_order = gate_up_order
    c.routing = routing
    c.renormalize = bool(renormalize)
    c.num_groups = int(num_groups)
    c.topk_groups = int(topk_groups)
    c.routed_scaling_factor = float(routed_scaling_factor)
    c.backend = "auto" if backend is None else backend
    return c


def _dims_from_weights(w1, w2, layout):
    s1 = _shape(w1, "w1")
    s2 = _shape(w2, "w2")
    if len(s1) != 3:
        raise ValueError(f"w1: expected rank 3 ([E, 2*I, H] for layout nk, [E, H, 2*I] for kn), got shape {list(s1)}")
    if len(s2) != 3:
        raise ValueError(f"w2: expected rank 3 ([E, H, I] for layout nk, [E, I, H] for kn), got shape {list(s2)}")
    if layout in ("nk", "NK"):
        return s1[0], s1[2], s2[2]  # E, H (from w1), I (from w2); the library checks the rest
    return s1[0], s1[1], s2[1]


class MoE:
    """One MoE layer: config + weights + a reusable workspace.

    w1, w2      layout "nk" (torch/HF nn.Linear order): W1 [E, 2I, H] (gate rows, then up
                rows), W2 [E, H, I]; layout "kn": W1 [E, H, 2I], W2 [E, I, H]. bf16, contiguous.
                Held by reference (zero-copy): the layer reads whatever they hold at call time.
    top_k       experts per token.
    max_tokens  the workspace serves any T <= max_tokens.
    routing     "softmax" (Mixtral, Qwen-MoE) or "sigmoid" (DeepSeek-V3: sigmoid + correction
                bias, grouped top-k with num_groups / topk_groups).
    renormalize divide the chosen weights by their sum; then times routed_scaling_factor.
    backend     "cpu" | "cuda" | "cuda-ref" | "auto"/None (FUSEKIT_MOE_BACKEND, else by device).
    prepare     copy the weights once into the format the fastest kernels of the current
                device read (fusekit.moe_prepared_config: layout "nk", and on a Hopper GPU
                W1 in "interleaved8" order for intermediate <= 4096, SwiGLU then runs in
                GEMM1's epilogue) when it differs from ``layout`` / ``gate_up_order``. The
                layer then holds the copy.
    gate_up_order  "halves" (W1's gate rows, then its up rows) or "interleaved8" (layout "nk"
                only: blocks of 8 gate rows and 8 up rows alternate; the order the Hopper GEMM1
                with SwiGLU in its epilogue reads).
    workspace   an existing workspace to share (e.g. between the layers of one model, which run
                one after the other on one stream); at least ``workspace_bytes`` bytes.
    """

    def __init__(
        self,
        w1: Any,
        w2: Any,
        *,
        top_k: int,
        max_tokens: int,
        layout: str = "nk",
        routing: str = "softmax",
        renormalize: bool = True,
        num_groups: int = 1,
        topk_groups: int = 1,
        routed_scaling_factor: float = 1.0,
        backend: Optional[str] = None,
        prepare: bool = False,
        workspace: Any = None,
        gate_up_order: str = "halves",
    ):
        E, H, I = _dims_from_weights(w1, w2, layout)
        self.config = make_config(
            num_experts=E,
            top_k=top_k,
            hidden=H,
            intermediate=I,
            max_tokens=max_tokens,
            layout=layout,
            routing=routing,
            renormalize=renormalize,
            num_groups=num_groups,
            topk_groups=topk_groups,
            routed_scaling_factor=routed_scaling_factor,
            backend=backend,
            gate_up_order=gate_up_order,
        )
        self.w1 = arg(w1)
        self.w2 = arg(w2)
        if prepare:
            self._prepare()
        self.workspace_bytes = _fusekit.moe_workspace_size(self.config)
        if workspace is None:
            workspace = allocate_workspace(self.workspace_bytes, self.w1)
        self.workspace = workspace

    # -- shape ------------------------------------------------------------------------------
    num_experts = property(lambda self: self.config.num_experts)
    top_k = property(lambda self: self.config.top_k)
    hidden = property(lambda self: self.config.hidden)
    intermediate = property(lambda self: self.config.intermediate)
    max_tokens = property(lambda self: self.config.max_tokens)
    layout = property(lambda self: self.config.layout)

    def _prepare(self):
        to = _fusekit.moe_prepared_config(self.config)
        if to.layout == self.config.layout and to.gate_up_order == self.config.gate_up_order:
            return
        s1, s2 = _shape(self.w1, "w1"), _shape(self.w2, "w2")
        if to.layout != self.config.layout:
            s1, s2 = (s1[0], s1[2], s1[1]), (s2[0], s2[2], s2[1])
        d1 = empty(self.w1, s1, "bf16", "w1")
        d2 = empty(self.w2, s2, "bf16", "w2")
        _fusekit.moe_prepare_weights(self.config, to, self.w1, self.w2, d1, d2, stream_for((self.w1,)))
        self.w1, self.w2 = d1, d2
        self.config = to

    # -- whole layer ------------------------------------------------------------------------
    def forward(self, x, router_logits, *, correction_bias=None, out=None, stream=None):
        """out[t] = sum_j w[t,j] * W2[e] . swiglu(W1[e] . x[t]) over the top_k experts e of
        token t chosen from router_logits [T, E]. x: [T, H] bf16 (or [..., H]); returns out,
        shaped like x."""
        if out is None:
            out = empty(x, _shape(x, "x"), "bf16", "out")
        s = stream_for((x, out), stream)
        _fusekit.moe_forward(
            self.config,
            self.w1,
            self.w2,
            arg(rows_view(x, "x")),
            arg(rows_view(router_logits, "router_logits")),
            arg(correction_bias),
            arg(rows_view(out, "out")),
            self.workspace,
            s,
        )
        return out

    __call__ = forward

    def forward_routed(self, x, topk_ids, topk_weights, *, out=None, stream=None):
        """The layer with routing done elsewhere: topk_ids [T, k] int32, topk_weights [T, k] fp32."""
        if out is None:
            out = empty(x, _shape(x, "x"), "bf16", "out")
        s = stream_for((x, out), stream)
        _fusekit.moe_forward_routed(
            self.config,
            self.w1,
            self.w2,
            arg(rows_view(x, "x")),
            arg(topk_ids),
            arg(topk_weights),
            arg(rows_view(out, "out")),
            self.workspace,
            s,
        )
        return out

    # -- stages -----------------------------------------------------------------------------
    def route(self, router_logits, *, correction_bias=None, topk_ids=None, topk_weights=None, stream=None):
        """router_logits [T, E] -> (topk_ids [T, k] int32, topk_weights [T, k] fp32)."""
        return route(
            router_logits,
            config=self.config,
            correction_bias=correction_bias,
            topk_ids=topk_ids,
            topk_weights=topk_weights,
            stream=stream,
        )

    def align_block_m(self, like) -> int:
        """The block_m that gemm1_swiglu/gemm2 accept for arrays on `like`'s device."""
        return align_block_m(self.config, like)

    def align(self, topk_ids, *, block_m=None, out: Optional[MoeAlignment] = None, stream=None) -> MoeAlignment:
        """topk_ids [T, k] -> MoeAlignment (block_m defaults to what the GEMM stages accept)."""
        return align(topk_ids, config=self.config, block_m=block_m, out=out, stream=stream)

    def gemm1_swiglu(self, x, alignment: MoeAlignment, *, act=None, stream=None):
        """act[row] = silu(x[t] . W1[e] gate rows) * (x[t] . W1[e] up rows): [capacity, I] bf16."""
        if act is None:
            act = empty(x, (_shape(alignment.sorted_token_ids, "alignment.sorted_token_ids")[0], self.intermediate), "bf16", "act")
        s = stream_for((x, act), stream)
        _fusekit.moe_gemm1_swiglu(self.config, self.w1, self.w2, arg(x), *alignment._args(), arg(act), s)
        return act

    def gemm2(self, act, alignment: MoeAlignment, topk_weights, *, y=None, stream=None):
        """y[p] = topk_weights[p] * (act[row of p] . W2[e]): [T*k, H] bf16."""
        if y is None:
            T, k = _shape(topk_weights, "topk_weights")[:2]
            y = empty(act, (T * k, self.hidden), "bf16", "y")
        s = stream_for((act, y), stream)
        _fusekit.moe_gemm2(self.config, self.w1, self.w2, arg(act), *alignment._args(), arg(topk_weights), arg(y), s)
        return y

    def finalize(self, y, *, out=None, stream=None):
        """out[t] = sum_j y[t*k + j] (fp32 sum in j order, bf16 out): [T, H]."""
        return finalize(y, config=self.config, out=out, stream=stream)

    def __repr__(self):
        c = self.config
        return (
            f"fusekit.MoE(E={c.num_experts}, top_k={c.top_k}, H={c.hidden}, I={c.intermediate}, "
            f"max_tokens={c.max_tokens}, layout={c.layout!r}, routing={c.routing!r}, backend={c.backend!r})"
        )


# ---- module-level functions -----------------------------------------------------------------


def moe_workspace_size(config) -> int:
    """Bytes of workspace a forward needs for any T <= config.max_tokens (any backend)."""
    return _fusekit.moe_workspace_size(config)


def moe_align_capacity(tokens: int, top_k: int, num_experts: int, block_m: int) -> int:
    return _fusekit.moe_align_capacity(int(tokens), int(top_k), int(num_experts), int(block_m))


def moe_prepared_config(config):
    """config with the weight format the fastest kernels of the current device read (a copy)."""
    return _fusekit.moe_prepared_config(config)


def align_block_m(config, like) -> int:
    """The block_m the GEMM stages accept for arrays on `like`'s device (0: no CUDA backend)."""
    return _fusekit.moe_align_block_m(config, bool(is_cuda_array(like)))


def _config_from(config, kwargs, what):
    if config is not None:
        if kwargs:
            raise TypeError(f"{what}: pass either config= or the config keywords, not both")
        return config
    return make_config(**kwargs)


def route(router_logits, *, config=None, correction_bias=None, topk_ids=None, topk_weights=None, stream=None, **kw):
    """Routing stage. Either ``config`` (MoE.config / make_config) or keywords: top_k,
    routing="softmax", renormalize=True, num_groups, topk_groups, routed_scaling_factor
    (num_experts is taken from router_logits). Returns (topk_ids, topk_weights)."""
    if config is None:
        kw.setdefault("num_experts", _shape(router_logits, "router_logits")[-1])
        kw.setdefault("hidden", 8)
        kw.setdefault("intermediate", 8)
    cfg = _config_from(config, kw, "route")
    T = _shape(router_logits, "router_logits")[0]
    if topk_ids is None:
        topk_ids = empty(router_logits, (T, cfg.top_k), "int32", "topk_ids")
    if topk_weights is None:
        topk_weights = empty(router_logits, (T, cfg.top_k), "fp32", "topk_weights")
    s = stream_for((router_logits, topk_ids), stream)
    _fusekit.moe_route(cfg, arg(router_logits), arg(correction_bias), arg(topk_ids), arg(topk_weights), s)
    return topk_ids, topk_weights


def align(topk_ids, *, config=None, block_m=None, out: Optional[MoeAlignment] = None, stream=None, **kw) -> MoeAlignment:
    """Alignment stage: topk_ids [T, k] -> MoeAlignment. Either ``config`` or the keyword
    num_experts (top_k is taken from topk_ids). block_m defaults to the GEMM stages' one."""
    T, k = _shape(topk_ids, "topk_ids")[:2]
    if config is None:
        kw.setdefault("top_k", k)
        kw.setdefault("hidden", 8)
        kw.setdefault("intermediate", 8)
    cfg = _config_from(config, kw, "align")
    if out is None:
        bm = int(block_m) if block_m is not None else align_block_m(cfg, topk_ids)
        if bm <= 0:
            raise ValueError("block_m: this build has no CUDA MoE backend to choose one for CUDA arrays; pass block_m=")
        cap = max(moe_align_capacity(T, k, cfg.num_experts, bm), bm)
        out = MoeAlignment(
            block_m=bm,
            sorted_token_ids=empty(topk_ids, (cap,), "int32", "alignment.sorted_token_ids"),
            expert_ids=empty(topk_ids, (cap // bm,), "int32", "alignment.expert_ids"),
            expert_offsets=empty(topk_ids, (cfg.num_experts + 1,), "int32", "alignment.expert_offsets"),
            num_tokens_post_padded=empty(topk_ids, (1,), "int32", "alignment.num_tokens_post_padded"),
        )
    elif block_m is not None and int(block_m) != out.block_m:
        raise ValueError(f"block_m: {block_m} differs from out.block_m = {out.block_m}")
    s = stream_for((topk_ids, out.sorted_token_ids), stream)
    _fusekit.moe_align(cfg, arg(topk_ids), *out._args(), s)
    return out


def finalize(y, *, config=None, out=None, stream=None, **kw):
    """Final reduction: y [T*k, H] -> out [T, H], out[t] = sum_j y[t*k + j]. Either ``config``
    or the keyword top_k (hidden is taken from y)."""
    rows, H = _shape(y, "y")[:2]
    if config is None:
        kw.setdefault("hidden", H)
        kw.setdefault("num_experts", max(int(kw.get("top_k", 1)), 1))
        kw.setdefault("intermediate", 8)
    cfg = _config_from(config, kw, "finalize")
    if out is None:
        out = empty(y, (rows // max(cfg.top_k, 1), H), "bf16", "out")
    s = stream_for((y, out), stream)
    _fusekit.moe_finalize(cfg, arg(y), arg(out), s)
    return out


def moe_forward(
    x,
    router_logits,
    w1,
    w2,
    *,
    top_k: int,
    out=None,
    correction_bias=None,
    workspace=None,
    stream=None,
    **layer_kwargs,
):
    """One-shot fused MoE forward (a temporary MoE layer; reuse fusekit.MoE to keep the
    workspace across calls). layer_kwargs: layout, routing, renormalize, num_groups,
    topk_groups, routed_scaling_factor, backend."""
    T = _shape(x, "x")[0] if len(_shape(x, "x")) == 2 else int(np.prod(_shape(x, "x")[:-1]))
    layer = MoE(w1, w2, top_k=top_k, max_tokens=max(T, 1), workspace=workspace, **layer_kwargs)
    return layer.forward(x, router_logits, correction_bias=correction_bias, out=out, stream=stream)


def moe_forward_routed(x, topk_ids, topk_weights, w1, w2, *, out=None, workspace=None, stream=None, **layer_kwargs):
    """One-shot fused MoE forward with precomputed routing (topk_ids [T, k] int32,
    topk_weights [T, k] fp32)."""
    T = _shape(x, "x")[0] if len(_shape(x, "x")) == 2 else int(np.prod(_shape(x, "x")[:-1]))
    k = _shape(topk_ids, "topk_ids")[-1]
    layer = MoE(w1, w2, top_k=k, max_tokens=max(T, 1), workspace=workspace, **layer_kwargs)
    return layer.forward_routed(x, topk_ids, topk_weights, out=out, stream=stream)
