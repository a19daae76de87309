"""fusekit.qk_rmsnorm on CPU arrays (NumPy; torch CPU tensors when torch is installed)
against a float64 reference."""

import numpy as np
import pytest

import fusekit
from conftest import HAVE_TORCH, assert_close, needs_torch, qk_norm_ref, rope_cache

SHAPES = [(4, 2, 64), (8, 1, 128), (2, 2, 96), (3, 1, 256)]
TOL = {"fp32": (1e-5, 1e-4), "fp16": (2e-3, 1e-2)}
NP_DTYPE = {"fp32": np.float32, "fp16": np.float16}


def make(rng, T, hq, hkv, d, dv=None, dtype=np.float32, pad=0):
    dv = d if dv is None else dv
    width = (hq + hkv) * d + hkv * dv
    # Inputs drawn away from zero, weights around 1 with spread.
    big = (rng.standard_normal((T, width + pad)) * 2 + 0.5).astype(dtype)
    qkv = big[:, :width]
    wq = rng.uniform(0.5, 1.5, d).astype(dtype)
    wk = rng.uniform(0.5, 1.5, d).astype(dtype)
    return qkv, wq, wk, width


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("hq,hkv,d", SHAPES)
@pytest.mark.parametrize("T", [1, 3, 17])
def test_out_of_place_matches_reference(rng, dtype, hq, hkv, d, T):
    qkv, wq, wk, width = make(rng, T, hq, hkv, d, dtype=NP_DTYPE[dtype])
    before = qkv.copy()
    out = np.full_like(qkv, np.nan)
    got = fusekit.qk_rmsnorm(qkv, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, eps=1e-6, out=out)
    assert got is out
    ref = qk_norm_ref(qkv, wq, wk, hq, hkv, d, 1e-6)
    assert_close(out, ref, *TOL[dtype], what=f"{dtype} T={T}")
    # V copied through bit for bit, the input untouched.
    v0 = (hq + hkv) * d
    assert np.array_equal(out[:, v0:], qkv[:, v0:])
    assert np.array_equal(qkv, before)


@pytest.mark.parametrize("hq,hkv,d", SHAPES[:2])
def test_in_place_equals_out_of_place(rng, hq, hkv, d):
    qkv, wq, wk, _ = make(rng, 9, hq, hkv, d)
    separate = fusekit.qk_rmsnorm(qkv, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d)
    same = fusekit.qk_rmsnorm(qkv, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, out=qkv)
    assert same is qkv
    assert np.array_equal(separate, qkv)


def test_padded_row_stride_and_fp32_weights_for_fp16(rng):
    hq, hkv, d = 4, 2, 64
    qkv, _, _, width = make(rng, 5, hq, hkv, d, dtype=np.float16, pad=64)  # row stride > width
    assert qkv.strides[0] > qkv.shape[1] * qkv.itemsize
    wq = rng.uniform(0.5, 1.5, d).astype(np.float32)
    wk = rng.uniform(0.5, 1.5, d).astype(np.float32)
    ref = qk_norm_ref(qkv, wq, wk, hq, hkv, d, 1e-5)
    fusekit.qk_rmsnorm(qkv, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, eps=1e-5, out=qkv)
    assert_close(qkv, ref, *TOL["fp16"], what="padded fp16")


def test_v_head_dim_differs(rng):
    hq, hkv, d, dv = 4, 2, 64, 32
    qkv, wq, wk, width = make(rng, 6, hq, hkv, d, dv=dv)
    assert width == 6 * 64 + 2 * 32
    out = fusekit.qk_rmsnorm(qkv, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, v_head_dim=dv)
    assert_close(out, qk_norm_ref(qkv, wq, wk, hq, hkv, d, 1e-6), *TOL["fp32"])


def test_leading_dims_are_merged_as_a_view(rng):
    hq, hkv, d = 4, 2, 64
    qkv, wq, wk, width = make(rng, 6, hq, hkv, d)
    x = np.ascontiguousarray(qkv).reshape(2, 3, width)
    ref = qk_norm_ref(x.reshape(6, width), wq, wk, hq, hkv, d, 1e-6).reshape(2, 3, width)
    fusekit.qk_rmsnorm(x, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, out=x)  # in place, 3-D
    assert_close(x, ref, *TOL["fp32"])
    y = fusekit.qk_rmsnorm(np.ascontiguousarray(qkv).reshape(2, 3, width), wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d)
    assert y.shape == (2, 3, width)


def test_zero_tokens_is_a_no_op(rng):
    _, wq, wk, width = make(rng, 1, 4, 2, 64)
    qkv = np.empty((0, width), np.float32)
    out = fusekit.qk_rmsnorm(qkv, wq, wk, num_q_heads=4, num_kv_heads=2, head_dim=64)
    assert out.shape == (0, width)


@pytest.mark.parametrize("style", ["neox", "gptj"])
@pytest.mark.parametrize("rotary_dim", [64, 32])
@pytest.mark.parametrize("pos_dtype", [np.int32, np.int64])
def test_fused_rotary(rng, style, rotary_dim, pos_dtype):
    hq, hkv, d, T = 4, 2, 64, 7
    qkv, wq, wk, _ = make(rng, T, hq, hkv, d)
    cache = rope_cache(32, rotary_dim)
    positions = rng.integers(0, 32, T).astype(pos_dtype)
    positions[0] = 40  # outside the cache: normalised, not rotated (documented)
    ref = qk_norm_ref(qkv, wq, wk, hq, hkv, d, 1e-6, style, positions, cache, rotary_dim)
    out = fusekit.qk_rmsnorm(
        qkv, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, rotary=style, positions=positions, cos_sin_cache=cache
    )
    assert_close(out, ref, *TOL["fp32"], what=style)


@needs_torch
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_torch_cpu_tensors(rng, dtype):
    import torch

    hq, hkv, d, T = 8, 2, 128, 11
    qkv_np, wq_np, wk_np, width = make(rng, T, hq, hkv, d)
    dt = getattr(torch, dtype)
    qkv = torch.from_numpy(np.ascontiguousarray(qkv_np)).to(dt)
    wq = torch.from_numpy(wq_np).to(dt)
    wk = torch.from_numpy(wk_np).to(dt)
    ref = qk_norm_ref(qkv.float().numpy(), wq.float().numpy(), wk.float().numpy(), hq, hkv, d, 1e-6)
    out = fusekit.qk_rmsnorm(qkv, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d)
    assert isinstance(out, torch.Tensor) and out.dtype == dt
    tol = {"bfloat16": (1e-2, 5e-2), "float16": (2e-3, 1e-2), "float32": (1e-5, 1e-4)}[dtype]
    assert_close(out.float().numpy(), ref, *tol, what=dtype)
    # In place on a tensor that requires grad (a parameter-like tensor) works through a detached view.
    p = qkv.clone().requires_grad_(True)
    with torch.no_grad():
        fusekit.qk_rmsnorm(p, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, out=p)
    assert torch.equal(p.detach(), out)


def test_stream_for_cpu_arrays_is_zero():
    assert fusekit.stream_for((np.zeros(4),)) == 0
    assert fusekit.stream_for((np.zeros(4),), stream=1234) == 1234


@pytest.mark.skipif(HAVE_TORCH, reason="only meaningful without torch")
def test_imports_without_torch():
    import sys

    assert "torch" not in sys.modules
