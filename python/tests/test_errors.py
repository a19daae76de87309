"""Bad input raises ValueError / TypeError naming the argument (and its shape), and writes
nothing. The rule: TypeError for a non-array or a dtype fusekit does not accept there;
ValueError for shape, rank, stride, alignment, range, overlap; NotImplementedError for what the
build or device cannot do."""

import numpy as np
import pytest

import fusekit
from conftest import needs_torch

HQ, HKV, D = 4, 2, 64
W = (HQ + 2 * HKV) * D


def inputs(rng, T=3):
    qkv = (rng.standard_normal((T, W)) + 0.5).astype(np.float32)
    wq = rng.uniform(0.5, 1.5, D).astype(np.float32)
    wk = rng.uniform(0.5, 1.5, D).astype(np.float32)
    return qkv, wq, wk


def call(qkv, wq, wk, out, **kw):
    args = dict(num_q_heads=HQ, num_kv_heads=HKV, head_dim=D)
    args.update(kw)
    return fusekit.qk_rmsnorm(qkv, wq, wk, out=out, **args)


CASES = [
    # (what, mutate(qkv, wq, wk) -> (qkv, wq, wk, extra kwargs), exception, words in the message)
    ("qkv float64", lambda q, a, b: (q.astype(np.float64), a, b, {}), TypeError, ["qkv", "float64"]),
    ("q_weight fp16 for fp32 qkv", lambda q, a, b: (q, a.astype(np.float16), b, {}), TypeError, ["q_weight", "dtype", "fp16[64]"]),
    ("k_weight int32", lambda q, a, b: (q, a, b.astype(np.int32), {}), TypeError, ["k_weight", "dtype"]),
    ("q_weight too short", lambda q, a, b: (q, a[:32], b, {}), ValueError, ["q_weight", "[64]", "[32]"]),
    ("qkv width wrong", lambda q, a, b: (q[:, :-8], a, b, {}), ValueError, ["qkv", str(W - 8)]),
    ("qkv rank 1", lambda q, a, b: (q[0], a, b, {}), ValueError, ["qkv"]),
    ("head_dim not a multiple of 8", lambda q, a, b: (q, a, b, {"head_dim": 60}), ValueError, ["head_dim", "60"]),
    ("eps <= 0", lambda q, a, b: (q, a, b, {"eps": 0.0}), ValueError, ["eps"]),
    ("num_kv_heads 0", lambda q, a, b: (q, a, b, {"num_kv_heads": 0}), ValueError, ["num_kv_heads"]),
    ("qkv misaligned", lambda q, a, b: (np.ascontiguousarray(np.pad(q, ((0, 0), (1, 0))))[:, 1:], a, b, {}), ValueError, ["qkv", "align"]),
    ("qkv columns strided", lambda q, a, b: (np.repeat(q, 2, axis=1)[:, ::2], a, b, {}), ValueError, ["qkv"]),
    ("rotary unknown", lambda q, a, b: (q, a, b, {"rotary": "spiral", "positions": np.zeros(3, np.int32), "cos_sin_cache": np.ones((8, 64), np.float32)}), ValueError, ["rotary", "spiral"]),
    ("rotary without positions", lambda q, a, b: (q, a, b, {"rotary": "neox", "cos_sin_cache": np.ones((8, 64), np.float32)}), TypeError, ["positions", "None"]),
    ("positions float", lambda q, a, b: (q, a, b, {"rotary": "neox", "positions": np.zeros(3, np.float32), "cos_sin_cache": np.ones((8, 64), np.float32)}), TypeError, ["positions", "dtype"]),
    ("positions wrong length", lambda q, a, b: (q, a, b, {"rotary": "neox", "positions": np.zeros(2, np.int32), "cos_sin_cache": np.ones((8, 64), np.float32)}), ValueError, ["positions"]),
    ("rotary_dim odd", lambda q, a, b: (q, a, b, {"rotary": "neox", "positions": np.zeros(3, np.int32), "cos_sin_cache": np.ones((8, 64), np.float32), "rotary_dim": 63}), ValueError, ["rotary_dim"]),
    ("qkv not an array", lambda q, a, b: (q.tolist(), a, b, {}), TypeError, ["qkv", "list"]),
    ("q_weight not an array", lambda q, a, b: (q, "w", b, {}), TypeError, ["q_weight", "str"]),
]


@pytest.mark.parametrize("what,mutate,exc,words", CASES, ids=[c[0] for c in CASES])
def test_qk_norm_errors_name_the_argument_and_write_nothing(rng, what, mutate, exc, words):
    qkv, wq, wk = inputs(rng)
    qkv2, wq2, wk2, kw = mutate(qkv, wq, wk)
    out = np.full((3, W), np.nan, np.float32)
    before = np.array(qkv2, copy=True) if hasattr(qkv2, "shape") else None
    with pytest.raises(exc) as info:
        call(qkv2, wq2, wk2, out, **kw)
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{what}: {w!r} not in {msg!r}"
    assert np.isnan(out).all(), f"{what}: out was written"
    if before is not None:
        assert np.array_equal(np.asarray(qkv2), before, equal_nan=True), f"{what}: qkv was written"


def test_out_errors(rng):
    qkv, wq, wk = inputs(rng)
    ro = np.full_like(qkv, np.nan)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="out: is read-only"):
        call(qkv, wq, wk, ro)
    with pytest.raises(TypeError, match="out: expected dtype fp32"):
        call(qkv, wq, wk, np.full(qkv.shape, np.nan, np.float16))
    bad = np.full((4, W), np.nan, np.float32)
    with pytest.raises(ValueError, match=r"out"):
        call(qkv, wq, wk, bad)
    assert np.isnan(bad).all()
    # Partial overlap with qkv (shifted by one row): an error, and qkv is untouched.
    buf = (rng.standard_normal((4, W)) + 0.5).astype(np.float32)
    before = buf.copy()
    with pytest.raises(ValueError, match="overlap"):
        call(buf[:3], wq, wk, buf[1:4])
    assert np.array_equal(buf, before)


def test_rank_above_four_is_a_value_error(rng):
    qkv, wq, wk = inputs(rng)
    with pytest.raises(ValueError, match="positions: rank 5"):
        call(qkv, wq, wk, None, rotary="neox", positions=np.zeros((1, 1, 1, 1, 3), np.int32), cos_sin_cache=np.ones((8, 64), np.float32))


def test_moe_config_errors_without_torch():
    with pytest.raises(ValueError, match="top_k"):
        fusekit.moe_route(np.ones((2, 8), np.float32), top_k=9)
    with pytest.raises(ValueError, match="backend: unknown MoE backend \"gpu\""):
        fusekit.moe_config(num_experts=8, top_k=2, hidden=64, intermediate=32, backend="gpu")
    with pytest.raises(ValueError, match="routing"):
        fusekit.moe_config(num_experts=8, top_k=2, hidden=64, intermediate=32, routing="argmax")
    with pytest.raises(ValueError, match="layout"):
        fusekit.moe_config(num_experts=8, top_k=2, hidden=64, intermediate=32, layout="nkn")
    with pytest.raises(ValueError, match="w1: expected rank 3"):
        fusekit.MoE(np.zeros((8, 64), np.float32), np.zeros((8, 64, 32), np.float32), top_k=2, max_tokens=4)
    # NumPy has no bf16: a clear TypeError rather than a silent conversion.
    with pytest.raises(TypeError, match="NumPy has no bf16"):
        fusekit.moe_finalize(np.ones((4, 64), np.float32), top_k=2)


@needs_torch
def test_moe_errors_name_the_argument_and_write_nothing(rng):
    import torch

    E, k, H, I, T = 8, 2, 64, 32, 4
    w1 = torch.randn(E, 2 * I, H, dtype=torch.bfloat16)
    w2 = torch.randn(E, H, I, dtype=torch.bfloat16)
    x = torch.randn(T, H, dtype=torch.bfloat16)
    lg = torch.randn(T, E)
    moe = fusekit.MoE(w1, w2, top_k=k, max_tokens=T, backend="cpu")
    out = torch.full((T, H), float("nan"), dtype=torch.bfloat16)

    def check(exc, words, fn):
        with pytest.raises(exc) as info:
            fn()
        for w in words:
            assert w in str(info.value), f"{w!r} not in {str(info.value)!r}"
        assert torch.isnan(out).all(), "out was written"

    check(TypeError, ["x", "bf16", "fp32[4, 64]"], lambda: moe(x.float(), lg, out=out))
    check(ValueError, ["router_logits", "[4, 8]", "[4, 7]"], lambda: moe(x, lg[:, :7], out=out))
    check(TypeError, ["router_logits", "float64"], lambda: moe(x, lg.double(), out=out))
    check(ValueError, ["x", "max_tokens"], lambda: moe(torch.randn(T + 1, H, dtype=torch.bfloat16), torch.randn(T + 1, E), out=torch.empty(T + 1, H, dtype=torch.bfloat16)))
    check(ValueError, ["out"], lambda: moe(x, lg, out=out[:3]))
    check(TypeError, ["topk_ids", "int32", "int64"], lambda: moe.forward_routed(x, torch.zeros(T, k, dtype=torch.int64), torch.ones(T, k), out=out))
    check(ValueError, ["w1", "[8, 64, 64]"], lambda: fusekit.MoE(w1, w2[:, :, :16], top_k=k, max_tokens=T)(x, lg, out=out))
    check(TypeError, ["w1", "bf16"], lambda: fusekit.MoE(w1.float(), w2, top_k=k, max_tokens=T)(x, lg, out=out))
    check(ValueError, ["top_k"], lambda: fusekit.MoE(w1, w2, top_k=9, max_tokens=T))
    if not fusekit.with_cuda:
        check(NotImplementedError, ["cuda"], lambda: fusekit.MoE(w1, w2, top_k=k, max_tokens=T, backend="cuda")(x, lg, out=out))
