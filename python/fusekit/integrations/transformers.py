"""fusekit inside a Hugging Face ``transformers`` Qwen3-MoE model, swapped in place.

    from fusekit.integrations.transformers import swap_qwen3_moe
    model = AutoModelForCausalLM.from_pretrained(...)      # a Qwen3MoeForCausalLM
    swap_qwen3_moe(model)                                  # q/k norms and sparse MoE blocks -> fusekit

What changes, layer by layer:

- Attention (q/k norm). Qwen3 normalises each Q head and each K head (``q_norm``/``k_norm``,
  RMSNorm over head_dim) right after the q/k projections and before RoPE. fusekit's op works on
  a packed QKV activation, so the swap (1) packs ``q_proj``/``k_proj``/``v_proj`` into one
  [(Hq + 2*Hkv)*D, hidden] weight whose row slices *become* the three projections' weights
  (views: no extra memory, state_dict unchanged), (2) patches the attention's forward to run one
  QKV GEMM, then ``fusekit.qk_rmsnorm`` in place with the neox rotary fused (positions from
  ``position_ids``, a cos/sin cache built from the model's own ``inv_freq`` and
  ``attention_scaling``), then hands q/k/v views to the model's attention interface (sdpa,
  eager, flash...) exactly as before. For RoPE types whose frequencies change with the
  sequence length (dynamic, longrope) the rotary is not fused: the norm runs in fusekit and the
  model's own ``apply_rotary_pos_emb`` follows.
- Sparse MoE block (router + experts). The block's forward becomes: router logits (the
  model's gate weight, one GEMM) -> ``fusekit.MoE.forward`` (softmax top-k routing with the
  model's ``norm_topk_prob``, align, grouped GEMM1 + SwiGLU, GEMM2 x weight, sum over top-k).
  The experts' ``gate_up_proj`` [E, 2I, H] and ``down_proj`` [E, H, I] are read in place
  (fusekit's "nk" layout). One workspace serves every layer (they run one after another on
  the current stream); it grows when a call brings more tokens than it was sized for (outside
  CUDA-graph capture; pass ``max_tokens`` to size it up front).
  ``moe="experts"`` instead registers fusekit as a transformers *experts implementation*
  (``ExpertsInterface``, name "fusekit") and selects it with
  ``model.set_experts_implementation("fusekit")``: the model keeps its own router (torch softmax
  + top-k) and fusekit runs the experts from its top-k ids/weights.

Returns a summary dict. Nothing is copied from the weights except the QKV packing (done once).
Router logits are not recorded for ``output_router_logits`` in "block" mode (inference only).
"""

from __future__ import annotations

import sys
import types
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..moe import MoE, allocate_workspace, make_config, moe_workspace_size
from ..qk_norm import qk_rmsnorm

__all__ = ["swap_qwen3_moe", "unswap_qwen3_moe", "register_experts_implementation", "FUSEKIT_EXPERTS_NAME"]

FUSEKIT_EXPERTS_NAME = "fusekit"

# RoPE types whose inverse frequencies are fixed after init (so a cos/sin cache is exact).
_STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


# ---- shared per-model state --------------------------------------------------------------------


class _RotaryCache:
    """cos/sin cache [rows, D] fp32 (cos halves, then sin halves) from the model's inv_freq."""

    def __init__(self, rotary_emb, rows: int):
        self.rotary_emb = rotary_emb
        self.table = None
        self._build(rows)

    def _build(self, rows: int):
        inv_freq = self.rotary_emb.inv_freq.float()
        scale = float(getattr(self.rotary_emb, "attention_scaling", 1.0))
        pos = torch.arange(rows, device=inv_freq.device, dtype=torch.float32)
        freqs = pos[:, None] * inv_freq[None, :]  # the same fp32 products the model forms
        self.table = torch.cat([freqs.cos() * scale, freqs.sin() * scale], dim=-1).contiguous()

    def ensure(self, rows: int, device):
        if self.table.shape[0] < rows:
            self._build(max(rows, 2 * self.table.shape[0]))
        if self.table.device != device:
            self.table = self.table.to(device)
        return self.table


class _MoePool:
    """The MoE layers of one model and the workspace they share."""

    def __init__(self, max_tokens: int, backend: Optional[str]):
        self.max_tokens = max(int(max_tokens), 1)
        self.backend = backend
        self.workspace = None
        self.layers = {}  # id(block) -> (MoE, experts module)

    def _workspace_bytes(self, experts, top_k, norm):
        gu, dn = experts.gate_up_proj, experts.down_proj
        cfg = make_config(
            num_experts=gu.shape[0],
            top_k=top_k,
            hidden=gu.shape[2],
            intermediate=dn.shape[2],
            max_tokens=self.max_tokens,
            renormalize=norm,
            backend=self.backend,
        )
        return moe_workspace_size(cfg)

    def layer(self, key, experts, top_k, norm, tokens):
        if tokens > self.max_tokens:
            self.max_tokens = max(tokens, 2 * self.max_tokens)
            self.layers.clear()
            self.workspace = None
        entry = self.layers.get(key)
        if entry is None:
            need = self._workspace_bytes(experts, top_k, norm)
            if self.workspace is None or self.workspace.numel() < need:
                self.workspace = allocate_workspace(need, experts.gate_up_proj)
            moe = MoE(
                experts.gate_up_proj,
                experts.down_proj,
                top_k=top_k,
                max_tokens=self.max_tokens,
                layout="nk",
                routing="softmax",
                renormalize=norm,
                backend=self.backend,
                workspace=self.workspace,
            )
            entry = self.layers[key] = moe
        return entry


# ---- attention: packed QKV + fused q/k norm (+ rotary) -----------------------------------------


def _pack_qkv(attn):
    """One [Wq; Wk; Wv] weight (and bias); the three projections become views of it."""
    projs = (attn.q_proj, attn.k_proj, attn.v_proj)
    with torch.no_grad():
        w = torch.cat([p.weight for p in projs], dim=0)
        b = None
        if all(p.bias is not None for p in projs):
            b = torch.cat([p.bias for p in projs], dim=0)
        elif any(p.bias is not None for p in projs):
            raise NotImplementedError("fusekit swap: q/k/v projections with partial biases")
    sizes = [p.weight.shape[0] for p in projs]
    off = 0
    for p, n in zip(projs, sizes):
        p.weight = torch.nn.Parameter(w[off : off + n], requires_grad=p.weight.requires_grad)
        if b is not None:
            p.bias = torch.nn.Parameter(b[off : off + n], requires_grad=p.bias.requires_grad)
        off += n
    return w, b, sizes


def _fused_attention_forward(self, hidden_states, position_embeddings=None, attention_mask=None, past_key_values=None, **kwargs):
    st = self._fusekit
    input_shape = hidden_states.shape[:-1]
    qkv = F.linear(hidden_states, st["weight"], st["bias"])  # [..., (Hq + 2*Hkv) * D]
    nq, nk, _ = st["sizes"]
    D = self.head_dim
    position_ids = kwargs.get("position_ids")
    cache = st["rotary"]
    rotated = False
    if cache is not None and position_ids is not None:
        past = past_key_values.get_seq_length(self.layer_idx) if past_key_values is not None else 0
        table = cache.ensure(int(past) + int(input_shape[-1]) + 1, qkv.device)
        positions = position_ids
        if tuple(positions.shape) != tuple(input_shape):
            positions = positions.expand(*input_shape)
        qk_rmsnorm(
            qkv,
            self.q_norm.weight,
            self.k_norm.weight,
            num_q_heads=nq // D,
            num_kv_heads=nk // D,
            head_dim=D,
            eps=st["eps"],
            out=qkv,
            rotary="neox",
            positions=positions.reshape(-1).contiguous(),
            cos_sin_cache=table,
        )
        rotated = True
    else:
        qk_rmsnorm(
            qkv,
            self.q_norm.weight,
            self.k_norm.weight,
            num_q_heads=nq // D,
            num_kv_heads=nk // D,
            head_dim=D,
            eps=st["eps"],
            out=qkv,
        )
    hidden_shape = (*input_shape, -1, D)
    query_states = qkv[..., :nq].view(hidden_shape).transpose(1, 2)
    key_states = qkv[..., nq : nq + nk].view(hidden_shape).transpose(1, 2)
    value_states = qkv[..., nq + nk :].view(hidden_shape).transpose(1, 2)
    if not rotated:
        cos, sin = position_embeddings
        query_states, key_states = st["apply_rotary"](query_states, key_states, cos, sin)

    if past_key_values is not None:
        key_states, value_states = past_key_values.update(key_states, value_states, self.layer_idx)

    attention_interface = st["attention_interface"](self.config._attn_implementation)
    attn_output, attn_weights = attention_interface(
        self,
        query_states,
        key_states,
        value_states,
        attention_mask,
        dropout=0.0 if not self.training else self.attention_dropout,
        scaling=self.scaling,
        sliding_window=getattr(self, "sliding_window", None),
        **kwargs,
    )
    attn_output = attn_output.reshape(*input_shape, -1).contiguous()
    attn_output = self.o_proj(attn_output)
    return attn_output, attn_weights


def _attention_interface_getter(modeling):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = modeling.eager_attention_forward

    def get(name):
        if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):
            return ALL_ATTENTION_FUNCTIONS.get_interface(name, eager)
        return eager if name == "eager" else ALL_ATTENTION_FUNCTIONS[name]

    return get


def _swap_attention(attn, rotary: Optional[_RotaryCache]):
    modeling = sys.modules[type(attn).__module__]
    w, b, sizes = _pack_qkv(attn)
    D = attn.head_dim
    if sizes[0] % D or sizes[1] % D or sizes[1] != sizes[2]:
        raise NotImplementedError(f"fusekit swap: q/k/v projection sizes {sizes} do not fit head_dim {D}")
    if attn.q_norm.variance_epsilon != attn.k_norm.variance_epsilon:
        raise NotImplementedError("fusekit swap: q_norm and k_norm with different eps")
    attn._fusekit = {
        "weight": w,
        "bias": b,
        "sizes": sizes,
        "eps": float(attn.q_norm.variance_epsilon),
        "rotary": rotary,
        "apply_rotary": modeling.apply_rotary_pos_emb,
        "attention_interface": _attention_interface_getter(modeling),
    }
    attn.forward = types.MethodType(_fused_attention_forward, attn)


# ---- sparse MoE block ---------------------------------------------------------------------------


def _fused_moe_block_forward(self, hidden_states):
    st = self._fusekit
    shape = hidden_states.shape
    x = hidden_states.reshape(-1, shape[-1])
    logits = F.linear(x, self.gate.weight)  # [T, E], the model's router GEMM
    moe = st["pool"].layer(id(self), self.experts, st["top_k"], st["norm"], x.shape[0])
    return moe.forward(x, logits).view(shape)


def _swap_moe_block(block, pool: _MoePool):
    experts, gate = block.experts, block.gate
    act = getattr(experts.config if hasattr(experts, "config") else gate, "hidden_act", "silu")
    if act != "silu":
        raise NotImplementedError(f"fusekit swap: experts activation {act!r} (fusekit fuses SwiGLU: silu)")
    block._fusekit = {
        "pool": pool,
        "top_k": int(gate.top_k),
        "norm": bool(gate.norm_topk_prob),
    }
    block.forward = types.MethodType(_fused_moe_block_forward, block)


# ---- experts implementation (transformers' ExpertsInterface hook) -------------------------------


def _fusekit_experts_forward(self, hidden_states, top_k_index, top_k_weights):
    if getattr(self, "is_transposed", False) or not getattr(self, "is_concatenated", True) or getattr(self, "has_bias", False):
        raise NotImplementedError(
            "fusekit experts: supports concatenated [gate; up] gate_up_proj [E, 2I, H], down_proj [E, H, I], no bias"
        )
    pool = getattr(self, "_fusekit_pool", None)
    if pool is None:
        pool = self._fusekit_pool = _MoePool(max_tokens=hidden_states.shape[0], backend=None)
    k = top_k_index.shape[-1]
    moe = pool.layer(id(self), self, k, False, hidden_states.shape[0])
    ids = top_k_index.to(torch.int32)
    weights = top_k_weights.to(torch.float32)
    return moe.forward_routed(hidden_states, ids, weights)


def register_experts_implementation(name: str = FUSEKIT_EXPERTS_NAME) -> bool:
    """Register fusekit in transformers' ExpertsInterface under `name` (transformers >= 5 with
    ``use_experts_implementation``). Returns False when this transformers has no such hook."""
    try:
        from transformers.integrations.moe import ExpertsInterface
    except ImportError:
        return False
    ExpertsInterface.register(name, _fusekit_experts_forward)
    return True


# ---- the swap ------------------------------------------------------------------------------------


def _is_qwen3_moe_attention(m) -> bool:
    return all(hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm", "head_dim"))


def _is_sparse_moe_block(m) -> bool:
    experts = getattr(m, "experts", None)
    gate = getattr(m, "gate", None)
    return (
        experts is not None
        and gate is not None
        and hasattr(experts, "gate_up_proj")
        and hasattr(experts, "down_proj")
        and hasattr(gate, "top_k")
        and hasattr(gate, "weight")
    )


def swap_qwen3_moe(
    model: Any,
    *,
    qk_norm: bool = True,
    moe: Any = "block",
    fuse_rotary: bool = True,
    max_tokens: int = 4096,
    backend: Optional[str] = None,
) -> dict:
    """Swap fusekit into a transformers Qwen3-MoE model (Qwen3MoeForCausalLM / Qwen3MoeModel),
    in place. qk_norm: packed QKV + fused q/k norm (+ neox rotary when ``fuse_rotary`` and the
    RoPE type is static). moe: "block" (router logits + fusekit routing and experts), "experts"
    (transformers' experts-implementation hook), or False. max_tokens: the MoE workspace's
    initial token capacity. backend: fusekit MoE backend (None: FUSEKIT_MOE_BACKEND, else by
    device). Returns {"qk_norm": layers swapped, "moe": layers swapped, "rotary_fused": bool}."""
    if getattr(model, "_fusekit_swapped", False):
        raise RuntimeError("swap_qwen3_moe: this model is already swapped")
    if moe not in ("block", "experts", False, None):
        raise ValueError(f"moe: expected 'block', 'experts' or False, got {moe!r}")
    summary = {"qk_norm": 0, "moe": 0, "rotary_fused": False, "moe_mode": moe or None}

    base = getattr(model, "model", model)
    config = getattr(model, "config", None)
    rotary = None
    if qk_norm and fuse_rotary:
        rotary_emb = getattr(base, "rotary_emb", None)
        rope_params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        rope_type = rope_params.get("rope_type", rope_params.get("type", "default")) if isinstance(rope_params, dict) else "default"
        if rotary_emb is not None and hasattr(rotary_emb, "inv_freq") and rope_type in _STATIC_ROPE_TYPES:
            rows = int(getattr(config, "max_position_embeddings", 4096) or 4096)
            rotary = _RotaryCache(rotary_emb, rows)
            summary["rotary_fused"] = True

    if moe == "experts":
        if not register_experts_implementation():
            raise NotImplementedError("moe='experts': this transformers has no experts-implementation hook")
        model._fusekit_previous_experts = model.config._experts_implementation
        model.set_experts_implementation(FUSEKIT_EXPERTS_NAME)
    pool = _MoePool(max_tokens, backend)
    for m in list(model.modules()):
        if qk_norm and _is_qwen3_moe_attention(m):
            _swap_attention(m, rotary)
            summary["qk_norm"] += 1
        elif moe == "block" and _is_sparse_moe_block(m):
            _swap_moe_block(m, pool)
            summary["moe"] += 1
        elif moe == "experts" and hasattr(m, "gate_up_proj") and hasattr(m, "down_proj"):
            m._fusekit_pool = pool
            summary["moe"] += 1
    model._fusekit_swapped = True
    model._fusekit_pool = pool
    return summary


def unswap_qwen3_moe(model: Any) -> None:
    """Undo swap_qwen3_moe: the model's own forwards again (the q/k/v projections stay views of
    the packed weight, which holds the same numbers)."""
    if not getattr(model, "_fusekit_swapped", False):
        return
    for m in model.modules():
        st = m.__dict__.get("_fusekit")
        if st is not None:
            del m.forward  # the instance attribute set by the swap; the class's forward shows again
            del m._fusekit
        if "_fusekit_pool" in m.__dict__ and m is not model:
            del m._fusekit_pool
    previous = model.__dict__.pop("_fusekit_previous_experts", None)
    if previous is not None:
        model.set_experts_implementation(previous)
    model._fusekit_swapped = False
    model._fusekit_pool = None
