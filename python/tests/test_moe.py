"""fusekit MoE on CPU arrays: routing and alignment with NumPy, the whole layer and its stages
with torch CPU bf16 tensors (NumPy has no bf16), against float64 references."""

import os

import numpy as np
import pytest

import fusekit
from conftest import assert_close, moe_ref, needs_torch, route_ref


@pytest.mark.parametrize("T,E,k", [(1, 8, 2), (13, 16, 4), (64, 128, 8)])
@pytest.mark.parametrize("renormalize", [True, False])
def test_route_softmax_numpy(rng, T, E, k, renormalize):
    logits = rng.standard_normal((T, E)).astype(np.float32) * 3
    ids = np.full((T, k), -7, np.int32)
    weights = np.full((T, k), np.nan, np.float32)
    fusekit.moe_route(logits, top_k=k, renormalize=renormalize, topk_ids=ids, topk_weights=weights)
    ref_ids, ref_w = route_ref(logits, k, renormalize)
    assert np.array_equal(ids, ref_ids)
    assert_close(weights, ref_w, 1e-6, 1e-6, "weights")


def test_route_sigmoid_grouped_numpy(rng):
    T, E, k, groups, topk_groups = 9, 16, 4, 4, 2
    logits = rng.standard_normal((T, E)).astype(np.float32)
    bias = rng.standard_normal(E).astype(np.float32) * 0.1
    ids, w = fusekit.moe_route(
        logits, correction_bias=bias, top_k=k, routing="sigmoid", num_groups=groups, topk_groups=topk_groups,
        routed_scaling_factor=2.5,
    )
    # DeepSeek-V3: score = sigmoid; choice on score + bias; group score = sum of its top-2 biased
    # scores; weights = unbiased scores of the chosen, renormalised, times the scaling factor.
    s = 1 / (1 + np.exp(-logits.astype(np.float64)))
    b = s + bias
    for t in range(T):
        g = b[t].reshape(groups, -1)
        gscore = np.sort(g, axis=1)[:, -2:].sum(1)
        keep = np.argsort(-gscore, kind="stable")[:topk_groups]
        masked = np.full(E, -np.inf)
        for gi in keep:
            masked[gi * (E // groups) : (gi + 1) * (E // groups)] = b[t, gi * (E // groups) : (gi + 1) * (E // groups)]
        ref_ids = np.argsort(-masked, kind="stable")[:k]
        assert sorted(ids[t].tolist()) == sorted(ref_ids.tolist()), f"token {t}"
        ref_w = s[t, ids[t]] / s[t, ids[t]].sum() * 2.5
        assert_close(w[t], ref_w, 1e-5, 1e-5, f"weights of token {t}")


@pytest.mark.parametrize("T,E,k,block_m", [(1, 8, 2, 16), (37, 8, 2, 16), (50, 64, 6, 64), (5, 128, 8, 4)])
def test_align_numpy_invariants(rng, T, E, k, block_m):
    ids = rng.integers(0, E, (T, k)).astype(np.int32)
    al = fusekit.moe_align(ids, num_experts=E, block_m=block_m)
    assert al.block_m == block_m
    sorted_ids = al.sorted_token_ids
    offsets = al.expert_offsets
    total = int(al.num_tokens_post_padded[0])
    assert offsets[0] == 0 and offsets[E] == total
    flat = ids.reshape(-1)
    for e in range(E):
        run = sorted_ids[offsets[e] : offsets[e + 1]]
        pairs = np.flatnonzero(flat == e)
        assert (offsets[e + 1] - offsets[e]) % block_m == 0
        assert np.array_equal(run[: len(pairs)], pairs), f"expert {e}: its pairs in increasing order"
        assert (run[len(pairs) :] == T * k).all(), f"expert {e}: padding holds T*k"
        blocks = al.expert_ids[offsets[e] // block_m : offsets[e + 1] // block_m]
        assert (blocks == e).all()
    assert (sorted_ids[total:] == T * k).all()
    assert (al.expert_ids[total // block_m :] == -1).all()


def test_align_capacity_formula():
    # Every non-empty expert's run is padded by at most block_m - 1 rows.
    assert fusekit.moe_align_capacity(1, 2, 8, 16) == 32
    assert fusekit.moe_align_capacity(0, 2, 8, 16) == 0
    cap = fusekit.moe_align_capacity(100, 8, 128, 64)
    assert cap % 64 == 0 and cap >= 800 + 128 * 63


def test_align_block_m_query():
    cfg = fusekit.moe_config(num_experts=8, top_k=2, hidden=64, intermediate=32)
    assert fusekit.align_block_m(cfg, np.zeros(1)) >= 1


# ---- torch CPU bf16: the whole layer ----------------------------------------------------------


def torch_layer(rng, T, E, k, H, I):
    import torch

    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    w1 = (torch.randn(E, 2 * I, H, generator=g) / H**0.5).to(torch.bfloat16)
    w2 = (torch.randn(E, H, I, generator=g) / I**0.5).to(torch.bfloat16)
    x = torch.randn(T, H, generator=g).to(torch.bfloat16)
    logits = torch.randn(T, E, generator=g) * 2
    return w1, w2, x, logits


def reference(w1, w2, x, logits, k, renormalize=True):
    ids, w = route_ref(logits.float().numpy(), k, renormalize)
    return moe_ref(x.float().numpy(), w1.float().numpy(), w2.float().numpy(), ids, w)


BF16_TOL = (1e-2, 3e-2)


@needs_torch
@pytest.mark.parametrize("T,E,k,H,I", [(1, 8, 2, 64, 32), (5, 8, 2, 128, 64), (33, 16, 4, 64, 96), (3, 4, 4, 40, 24)])
def test_forward_torch_cpu(rng, T, E, k, H, I):
    import torch

    w1, w2, x, logits = torch_layer(rng, T, E, k, H, I)
    moe = fusekit.MoE(w1, w2, top_k=k, max_tokens=64, backend="cpu")
    out = torch.full((T, H), float("nan"), dtype=torch.bfloat16)
    assert moe(x, logits, out=out) is out
    assert_close(out.float().numpy(), reference(w1, w2, x, logits, k), *BF16_TOL, what="forward")
    # bf16 logits route the same way as their fp32 values.
    out2 = moe(x, logits.to(torch.bfloat16))
    assert_close(out2.float().numpy(), reference(w1, w2, x, logits.to(torch.bfloat16).float(), k), *BF16_TOL)


@needs_torch
def test_forward_routed_and_stages_equal_forward(rng):
    import torch

    T, E, k, H, I = 21, 8, 2, 64, 48
    w1, w2, x, logits = torch_layer(rng, T, E, k, H, I)
    moe = fusekit.MoE(w1, w2, top_k=k, max_tokens=T)
    full = moe(x, logits)
    ids, weights = moe.route(logits)
    assert ids.dtype == torch.int32 and weights.dtype == torch.float32
    ref_ids, ref_w = route_ref(logits.numpy(), k)
    assert np.array_equal(ids.numpy(), ref_ids)
    routed = moe.forward_routed(x, ids, weights)
    assert torch.equal(routed, full)
    al = moe.align(ids)
    act = moe.gemm1_swiglu(x, al)
    y = moe.gemm2(act, al, weights)
    assert y.shape == (T * k, H)
    out = moe.finalize(y)
    assert_close(out.float().numpy(), full.float().numpy(), 1e-2, 3e-2, "stages vs forward")
    assert_close(out.float().numpy(), reference(w1, w2, x, logits, k), *BF16_TOL, what="stages")


@needs_torch
def test_interleaved_gate_up_order_gives_the_same_bits(rng):
    import torch

    T, E, k, H, I = 9, 8, 2, 64, 40
    w1, w2, x, logits = torch_layer(rng, T, E, k, H, I)
    # [E, 2I, H] gate rows then up rows -> blocks of 8 gate rows and 8 up rows alternating.
    gate, up = w1[:, :I].reshape(E, I // 8, 8, H), w1[:, I:].reshape(E, I // 8, 8, H)
    w1_interleaved = torch.stack([gate, up], dim=2).reshape(E, 2 * I, H).contiguous()
    halves = fusekit.MoE(w1, w2, top_k=k, max_tokens=T, backend="cpu")
    interleaved = fusekit.MoE(w1_interleaved, w2, top_k=k, max_tokens=T, backend="cpu", gate_up_order="interleaved8")
    assert interleaved.config.gate_up_order == "interleaved8"
    assert torch.equal(interleaved(x, logits), halves(x, logits))
    with pytest.raises(ValueError, match="gate_up_order"):
        fusekit.MoE(w1, w2, top_k=k, max_tokens=T, gate_up_order="interleaved")


@needs_torch
def test_kn_layout_and_prepare(rng):
    import torch

    T, E, k, H, I = 6, 8, 2, 64, 32
    w1, w2, x, logits = torch_layer(rng, T, E, k, H, I)
    ref = reference(w1, w2, x, logits, k)
    kn = fusekit.MoE(w1.transpose(1, 2).contiguous(), w2.transpose(1, 2).contiguous(), top_k=k, max_tokens=T, layout="kn")
    assert kn.hidden == H and kn.intermediate == I
    assert_close(kn(x, logits).float().numpy(), ref, *BF16_TOL, what="kn")
    prepared = fusekit.MoE(w1, w2, top_k=k, max_tokens=T, prepare=True)
    want = fusekit.moe_prepared_config(kn.config)
    assert (prepared.layout, prepared.config.gate_up_order) == (want.layout, want.gate_up_order)
    assert_close(prepared(x, logits).float().numpy(), ref, *BF16_TOL, what="prepared")


@needs_torch
def test_one_shot_functions_and_leading_dims(rng):
    import torch

    T, E, k, H, I = 8, 8, 2, 64, 32
    w1, w2, x, logits = torch_layer(rng, T, E, k, H, I)
    ref = reference(w1, w2, x, logits, k)
    out = fusekit.moe_forward(x.view(2, 4, H), logits.view(2, 4, E), w1, w2, top_k=k)
    assert out.shape == (2, 4, H)
    assert_close(out.reshape(T, H).float().numpy(), ref, *BF16_TOL)
    ids, w = fusekit.moe_route(logits, top_k=k)
    out2 = fusekit.moe_forward_routed(x, ids, w, w1, w2)
    assert_close(out2.float().numpy(), ref, *BF16_TOL)


@needs_torch
def test_backend_by_argument_and_environment(rng, monkeypatch):
    import torch

    T, E, k, H, I = 4, 8, 2, 64, 32
    w1, w2, x, logits = torch_layer(rng, T, E, k, H, I)
    by_arg = fusekit.MoE(w1, w2, top_k=k, max_tokens=T, backend="cpu")(x, logits)
    monkeypatch.setenv("FUSEKIT_MOE_BACKEND", "cpu")
    by_env = fusekit.MoE(w1, w2, top_k=k, max_tokens=T)(x, logits)
    assert torch.equal(by_arg, by_env)
    monkeypatch.setenv("FUSEKIT_MOE_BACKEND", "no-such-backend")
    with pytest.raises(ValueError, match="FUSEKIT_MOE_BACKEND"):
        fusekit.MoE(w1, w2, top_k=k, max_tokens=T)(x, logits)


@needs_torch
def test_workspace_is_allocated_once_and_aligned(rng):
    import torch

    T, E, k, H, I = 4, 8, 2, 64, 32
    w1, w2, x, logits = torch_layer(rng, T, E, k, H, I)
    moe = fusekit.MoE(w1, w2, top_k=k, max_tokens=T)
    ws = moe.workspace
    assert isinstance(ws, torch.Tensor) and ws.data_ptr() % 256 == 0 and ws.numel() >= moe.workspace_bytes
    moe(x, logits)
    moe(x, logits)
    assert moe.workspace is ws
    # A shared workspace: a second layer reuses the first one's.
    other = fusekit.MoE(w1, w2, top_k=k, max_tokens=T, workspace=ws)
    assert other.workspace is ws
    assert torch.equal(other(x, logits), moe(x, logits))
    with pytest.raises(ValueError, match="workspace"):
        fusekit.MoE(w1, w2, top_k=k, max_tokens=T, workspace=ws[:16])(x, logits)
