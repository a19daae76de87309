"""fusekit.qk_rmsnorm: per-head RMSNorm of the Q and K heads of a packed QKV activation,
with optional fused rotary embedding (see include/fusekit/qk_norm.h for the contract)."""

from __future__ import annotations

from typing import Any, Optional

from . import _fusekit
from ._util import arg, array_shape, dtype_name, empty, rows_view, stream_for


def qk_rmsnorm(
    qkv: Any,
    q_weight: Any,
    k_weight: Any,
    *,
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    v_head_dim: Optional[int] = None,
    eps: float = 1e-6,
    out: Any = None,
    rotary: Optional[str] = None,
    positions: Any = None,
    cos_sin_cache: Any = None,
    rotary_dim: Optional[int] = None,
    stream: Any = None,
):
    """Normalise every Q head and K head of ``qkv``: ``x * rsqrt(mean(x^2) + eps) * w`` (fp32
    math, written in qkv's dtype); V is left untouched (copied through when out is separate).

    qkv        [T, Hq*D + Hkv*D + Hkv*Dv] (or [..., width]: leading dims are merged as a view)
               bf16 / fp16 / fp32; the row stride may exceed the width (a padded or sliced
               tensor), rows must be contiguous and 16-byte aligned.
    q_weight, k_weight  [D], qkv's dtype or fp32.
    out        None: a new array like qkv is returned. ``out=qkv``: in place. Else an array of
               qkv's shape and dtype that does not overlap qkv.
    rotary     None, "neox" (rotate halves, HF's rotate_half) or "gptj" (rotate pairs), applied
               after the norm with ``positions`` [T] int32/int64 and ``cos_sin_cache``
               [max_position, rotary_dim] fp32 (cos halves, then sin halves). rotary_dim
               defaults to the cache's width. A position outside the cache is not rotated.
    stream     Defaults to torch's current stream for torch CUDA tensors (see fusekit.stream_for).

    Returns ``out``. Raises ValueError / TypeError (dtype problems) naming the argument; on an
    error nothing was written.
    """
    shape = array_shape(qkv, "qkv")
    if out is None:
        dt = dtype_name(qkv)
        if dt not in ("bf16", "fp16", "fp32"):
            raise TypeError(f"qkv: expected dtype bf16, fp16 or fp32, got {qkv.dtype} with shape {list(shape)}")
        out = empty(qkv, shape, dt, "out")
    style = "none"
    rd = 0
    if rotary is not None:
        style = rotary
        if rotary_dim is not None:
            rd = int(rotary_dim)
        elif cos_sin_cache is not None and len(cos_sin_cache.shape) == 2:
            rd = int(cos_sin_cache.shape[1])
    s = stream_for((qkv, out), stream)
    _fusekit.qk_rmsnorm(
        arg(rows_view(qkv, "qkv")),
        arg(q_weight),
        arg(k_weight),
        arg(rows_view(out, "out")),
        int(num_q_heads),
        int(num_kv_heads),
        int(head_dim),
        0 if v_head_dim is None else int(v_head_dim),
        float(eps),
        style,
        rd,
        arg(positions),
        arg(cos_sin_cache),
        s,
    )
    return out
