"""Shared fixtures and references for fusekit's Python tests.

CPU tests use NumPy (always) and torch CPU tensors (when torch is installed); tests that need
torch, a CUDA device or transformers skip themselves cleanly when those are absent.
"""

import importlib.util
import os
import zlib

import numpy as np
import pytest

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_TRANSFORMERS = HAVE_TORCH and importlib.util.find_spec("transformers") is not None


def _have_cuda():
    if not HAVE_TORCH:
        return False
    import torch

    return torch.cuda.is_available()


HAVE_CUDA = _have_cuda()

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
needs_cuda = pytest.mark.skipif(not HAVE_CUDA, reason="needs torch with a CUDA device")
needs_transformers = pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="needs torch and transformers")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "cuda" in item.name or item.fspath.basename.startswith("test_gpu"):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture
def rng(request):
    # Seeded from the test's id (reproducible); FUSEKIT_TEST_SEED=<n> mixes in another seed to
    # draw fresh inputs.
    seed = zlib.crc32(request.node.nodeid.encode()) ^ int(os.environ.get("FUSEKIT_TEST_SEED", "0"))
    return np.random.default_rng(seed)


# ---- references (float64) ---------------------------------------------------------------------


def qk_norm_ref(qkv, q_weight, k_weight, hq, hkv, d, eps, rotary=None, positions=None, cache=None, rotary_dim=0):
    """fp64 reference of fusekit.qk_rmsnorm on a [T, W] array (any dtype), returns fp64 [T, W]."""
    x = np.asarray(qkv, dtype=np.float64).copy()
    wq = np.asarray(q_weight, dtype=np.float64)
    wk = np.asarray(k_weight, dtype=np.float64)
    for h in range(hq + hkv):
        seg = x[:, h * d : (h + 1) * d]
        w = wq if h < hq else wk
        y = seg / np.sqrt((seg * seg).mean(-1, keepdims=True) + eps) * w
        if rotary is not None:
            half = rotary_dim // 2
            for t in range(x.shape[0]):
                p = int(positions[t])
                if p < 0 or p >= cache.shape[0]:
                    continue
                c = np.asarray(cache[p, :half], dtype=np.float64)
                s = np.asarray(cache[p, half:rotary_dim], dtype=np.float64)
                r = y[t].copy()
                if rotary == "neox":
                    a, b = r[:half].copy(), r[half:rotary_dim].copy()
                    r[:half] = a * c - b * s
                    r[half:rotary_dim] = b * c + a * s
                else:
                    a, b = r[0:rotary_dim:2].copy(), r[1:rotary_dim:2].copy()
                    r[0:rotary_dim:2] = a * c - b * s
                    r[1:rotary_dim:2] = b * c + a * s
                y[t] = r
        x[:, h * d : (h + 1) * d] = y
    return x


def rope_cache(max_pos, rotary_dim, base=10000.0):
    inv = 1.0 / (base ** (np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim))
    f = np.arange(max_pos, dtype=np.float64)[:, None] * inv[None, :]
    return np.concatenate([np.cos(f), np.sin(f)], axis=1).astype(np.float32)


def route_ref(logits, top_k, renormalize=True, scale=1.0):
    """Softmax top-k in fp64; ties to the lower expert index. Returns ids [T,k], weights [T,k]."""
    lg = np.asarray(logits, dtype=np.float64)
    p = np.exp(lg - lg.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ids = np.argsort(-p, axis=-1, kind="stable")[:, :top_k]
    w = np.take_along_axis(p, ids, -1)
    if renormalize:
        w = w / w.sum(-1, keepdims=True)
    return ids.astype(np.int32), w * scale


def moe_ref(x, w1, w2, ids, weights):
    """fp64 fused-MoE reference, layout nk: W1 [E, 2I, H] (gate rows, then up), W2 [E, H, I]."""
    x = np.asarray(x, dtype=np.float64)
    w1 = np.asarray(w1, dtype=np.float64)
    w2 = np.asarray(w2, dtype=np.float64)
    I = w2.shape[2]
    out = np.zeros((x.shape[0], w2.shape[1]))
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            h = w1[e] @ x[t]
            g, u = h[:I], h[I:]
            a = g / (1.0 + np.exp(-g)) * u
            out[t] += float(weights[t, j]) * (w2[e] @ a)
    return out


def rel_l2(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def assert_close(got, ref, rel, maxabs, what=""):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert not np.isnan(got).any(), f"{what}: NaN in the result"
    r = rel_l2(got, ref)
    m = float(np.abs(got - ref).max()) if got.size else 0.0
    assert r <= rel and m <= maxabs, f"{what}: rel-L2 {r:.3g} (<= {rel}), max-abs {m:.3g} (<= {maxabs})"
