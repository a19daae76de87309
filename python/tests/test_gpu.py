"""fusekit on torch CUDA tensors: accuracy against torch references, errors, the current
stream, and CUDA-graph capture of the Python calls. Skipped without a CUDA device."""

import numpy as np
import pytest

import fusekit
from conftest import HAVE_CUDA, assert_close, rel_l2

pytestmark = pytest.mark.skipif(not HAVE_CUDA, reason="needs torch with a CUDA device")

if HAVE_CUDA:
    import torch
    import torch.nn.functional as F

BF16 = (1e-2, 4e-2)


def gen(seed):
    return torch.Generator(device="cuda").manual_seed(seed)


# ---- QK RMSNorm -------------------------------------------------------------------------------


def qk_torch_ref(qkv, wq, wk, hq, hkv, d, eps, positions=None, cache=None):
    """The unfused torch sequence in fp32: split, per-head rms_norm, neox rotary, concat."""
    x = qkv.float()
    T = x.shape[0]
    q = x[:, : hq * d].view(T, hq, d)
    k = x[:, hq * d : (hq + hkv) * d].view(T, hkv, d)
    v = x[:, (hq + hkv) * d :]
    q = F.rms_norm(q, (d,), wq.float(), eps)
    k = F.rms_norm(k, (d,), wk.float(), eps)
    if positions is not None:
        rd = cache.shape[1]
        cos, sin = cache[positions.long(), : rd // 2][:, None], cache[positions.long(), rd // 2 :][:, None]

        def rot(t):
            a, b, rest = t[..., : rd // 2], t[..., rd // 2 : rd], t[..., rd:]
            return torch.cat([a * cos - b * sin, b * cos + a * sin, rest], -1)

        q, k = rot(q), rot(k)
    return torch.cat([q.reshape(T, -1), k.reshape(T, -1), v], -1)


def cos_sin(max_pos, rd, base=1e6):
    inv = 1.0 / (base ** (torch.arange(0, rd, 2, device="cuda", dtype=torch.float32) / rd))
    f = torch.arange(max_pos, device="cuda", dtype=torch.float32)[:, None] * inv[None]
    return torch.cat([f.cos(), f.sin()], -1).contiguous()


@pytest.mark.parametrize("hq,hkv,d", [(32, 4, 128), (64, 4, 128), (16, 8, 64), (8, 1, 256), (4, 2, 96)])
@pytest.mark.parametrize("T", [1, 17, 4097])
@pytest.mark.parametrize("rotary", [False, True])
def test_qk_rmsnorm_cuda_bf16(hq, hkv, d, T, rotary):
    g = gen(T * 31 + d)
    width = (hq + 2 * hkv) * d
    qkv = torch.randn(T, width, device="cuda", generator=g).to(torch.bfloat16)
    wq = (1 + 0.3 * torch.randn(d, device="cuda", generator=g)).to(torch.bfloat16)
    wk = (1 + 0.3 * torch.randn(d, device="cuda", generator=g)).to(torch.bfloat16)
    kw = {}
    positions = cache = None
    if rotary:
        cache = cos_sin(8192, d)
        positions = torch.randint(0, 8192, (T,), device="cuda", generator=g)
        kw = dict(rotary="neox", positions=positions, cos_sin_cache=cache)
    ref = qk_torch_ref(qkv, wq, wk, hq, hkv, d, 1e-6, positions, cache)
    out = torch.full_like(qkv, float("nan"))
    fusekit.qk_rmsnorm(qkv, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, out=out, **kw)
    torch.cuda.synchronize()
    assert_close(out.float().cpu(), ref.cpu(), *BF16, what=f"T={T}")
    assert torch.equal(out[:, (hq + hkv) * d :], qkv[:, (hq + hkv) * d :])
    # In place on a padded-stride view gives the same bits.
    big = torch.randn(T, width + 64, device="cuda", dtype=torch.bfloat16)
    view = big[:, :width]
    view.copy_(qkv)
    fusekit.qk_rmsnorm(view, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, out=view, **kw)
    assert torch.equal(view, out)


def test_qk_rmsnorm_cuda_errors_write_nothing():
    hq, hkv, d, T = 8, 2, 128, 5
    qkv = torch.randn(T, (hq + 2 * hkv) * d, device="cuda", dtype=torch.bfloat16)
    before = qkv.clone()
    w = torch.ones(d, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="q_weight"):  # a CPU weight for CUDA qkv
        fusekit.qk_rmsnorm(qkv, w.cpu(), w, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, out=qkv)
    with pytest.raises(TypeError, match="k_weight.*dtype"):
        fusekit.qk_rmsnorm(qkv, w, w.half(), num_q_heads=hq, num_kv_heads=hkv, head_dim=d, out=qkv)
    flat = torch.randn(T * qkv.shape[1] + 8, device="cuda").to(torch.bfloat16)
    misaligned = flat[1 : 1 + T * qkv.shape[1]].view(T, -1)  # 2 bytes past a 16-byte boundary
    flat_before = flat.clone()
    with pytest.raises(ValueError, match="qkv.*16-byte aligned"):
        fusekit.qk_rmsnorm(misaligned, w, w, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, out=misaligned)
    torch.cuda.synchronize()
    assert torch.equal(flat, flat_before)
    torch.cuda.synchronize()
    assert torch.equal(qkv, before)


# ---- MoE ----------------------------------------------------------------------------------------


def moe_torch_ref(x, w1, w2, logits, k, renormalize=True):
    """fp32 torch reference: softmax top-k, per-expert SwiGLU MLP, weighted sum."""
    p = torch.softmax(logits.float(), -1)
    w, ids = p.topk(k, -1)
    if renormalize:
        w = w / w.sum(-1, keepdim=True)
    xf = x.float()
    out = torch.zeros(x.shape[0], w2.shape[1], device=x.device)
    I = w2.shape[2]
    for e in ids.unique().tolist():
        tok, slot = (ids == e).nonzero(as_tuple=True)
        h = xf[tok] @ w1[e].float().t()
        a = F.silu(h[:, :I]) * h[:, I:]
        out.index_add_(0, tok, (a @ w2[e].float().t()) * w[tok, slot, None])
    return out


def make_moe(seed, T, E, k, H, I):
    g = gen(seed)
    w1 = (torch.randn(E, 2 * I, H, device="cuda", generator=g) / H**0.5).to(torch.bfloat16)
    w2 = (torch.randn(E, H, I, device="cuda", generator=g) / I**0.5).to(torch.bfloat16)
    x = torch.randn(T, H, device="cuda", generator=g).to(torch.bfloat16)
    logits = torch.randn(T, E, device="cuda", generator=g) * 2
    return w1, w2, x, logits


MOE_SHAPES = [(8, 2, 256, 128), (64, 6, 512, 256), (128, 8, 2048, 768)]


@pytest.mark.parametrize("E,k,H,I", MOE_SHAPES)
@pytest.mark.parametrize("T", [1, 5, 33, 512, 2048])
@pytest.mark.parametrize("backend", ["cuda", "cuda-ref"])
def test_moe_forward_cuda(E, k, H, I, T, backend):
    w1, w2, x, logits = make_moe(E * 7 + T, T, E, k, H, I)
    moe = fusekit.MoE(w1, w2, top_k=k, max_tokens=2048, backend=backend)
    assert moe.workspace.is_cuda
    out = torch.full((T, H), float("nan"), device="cuda", dtype=torch.bfloat16)
    moe(x, logits, out=out)
    ref = moe_torch_ref(x, w1, w2, logits, k)
    torch.cuda.synchronize()
    assert_close(out.float().cpu(), ref.cpu(), *BF16, what=f"{backend} T={T}")


def test_moe_stages_and_routed_cuda():
    T, E, k, H, I = 300, 16, 4, 256, 128
    w1, w2, x, logits = make_moe(3, T, E, k, H, I)
    moe = fusekit.MoE(w1, w2, top_k=k, max_tokens=T)
    full = moe(x, logits)
    ids, weights = moe.route(logits)
    ref_w, ref_ids = torch.softmax(logits, -1).topk(k, -1)
    assert torch.equal(ids.long().sort(-1).values, ref_ids.sort(-1).values)
    routed = moe.forward_routed(x, ids, weights)
    al = moe.align(ids)
    assert al.block_m == moe.align_block_m(x)
    y = moe.gemm2(moe.gemm1_swiglu(x, al), al, weights)
    staged = moe.finalize(y)
    ref = moe_torch_ref(x, w1, w2, logits, k)
    torch.cuda.synchronize()
    for what, got in (("full", full), ("routed", routed), ("stages", staged)):
        assert_close(got.float().cpu(), ref.cpu(), *BF16, what=what)


def test_moe_prepare_weights_cuda():
    T, E, k, H, I = 64, 16, 4, 256, 128
    w1, w2, x, logits = make_moe(5, T, E, k, H, I)
    plain = fusekit.MoE(w1, w2, top_k=k, max_tokens=T)
    prepared = fusekit.MoE(w1, w2, top_k=k, max_tokens=T, prepare=True)
    want = fusekit.moe_prepared_config(plain.config)
    assert want.layout == "nk"  # on an H100 also gate_up_order "interleaved8" (SwiGLU in GEMM1's epilogue)
    assert (prepared.layout, prepared.config.gate_up_order) == (want.layout, want.gate_up_order)
    for T_run in (1, 8, T):  # decode kernels and the grouped path read the prepared order
        a, b = plain(x[:T_run], logits[:T_run]), prepared(x[:T_run], logits[:T_run])
        torch.cuda.synchronize()
        assert torch.equal(a, b), f"T={T_run}"


def test_moe_cuda_errors_write_nothing():
    T, E, k, H, I = 8, 8, 2, 256, 128
    w1, w2, x, logits = make_moe(9, T, E, k, H, I)
    moe = fusekit.MoE(w1, w2, top_k=k, max_tokens=T)
    out = torch.full((T, H), float("nan"), device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="router_logits"):
        moe(x, logits.cpu(), out=out)
    with pytest.raises(TypeError, match="x.*bf16"):
        moe(x.half(), logits, out=out)
    with pytest.raises(ValueError, match="max_tokens"):
        moe(torch.cat([x, x]), torch.cat([logits, logits]), out=torch.cat([out, out]))
    torch.cuda.synchronize()
    assert torch.isnan(out).all()


# ---- streams and graphs -------------------------------------------------------------------------


def test_runs_on_the_current_stream():
    """On a side stream, fusekit must run after the torch work queued before it on that stream.
    The side stream is non-blocking (torch's pool), so work on the legacy default stream would
    not wait for the delayed copy and would read the poisoned input."""
    hq, hkv, d, T = 32, 4, 128, 4096
    E, k, H, I = 16, 4, 512, 256
    g = gen(11)
    src = torch.randn(T, (hq + 2 * hkv) * d, device="cuda", generator=g).to(torch.bfloat16)
    w = torch.ones(d, device="cuda", dtype=torch.bfloat16)
    ref = qk_torch_ref(src, w, w, hq, hkv, d, 1e-6)
    w1, w2, x_src, logits = make_moe(12, 256, E, k, H, I)
    moe = fusekit.MoE(w1, w2, top_k=k, max_tokens=256)
    moe_ref = moe_torch_ref(x_src, w1, w2, logits, k)
    torch.cuda.synchronize()

    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        assert fusekit.stream_for((src,)) == side.cuda_stream != torch.cuda.default_stream().cuda_stream
        qkv = torch.full_like(src, float("nan"))
        x = torch.full_like(x_src, float("nan"))
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time before the inputs are written
        qkv.copy_(src)
        x.copy_(x_src)
        fusekit.qk_rmsnorm(qkv, w, w, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, out=qkv)
        out = moe(x, logits)
    side.synchronize()
    assert_close(qkv.float().cpu(), ref.cpu(), *BF16, what="qk on side stream")
    assert_close(out.float().cpu(), moe_ref.cpu(), *BF16, what="moe on side stream")


def test_cuda_graph_capture_and_replay():
    hq, hkv, d, T = 32, 4, 128, 64
    E, k, H, I = 64, 6, 512, 256
    g = gen(21)
    qkv = torch.randn(T, (hq + 2 * hkv) * d, device="cuda", generator=g).to(torch.bfloat16)
    wq = (1 + 0.3 * torch.randn(d, device="cuda", generator=g)).to(torch.bfloat16)
    wk = (1 + 0.3 * torch.randn(d, device="cuda", generator=g)).to(torch.bfloat16)
    cache = cos_sin(4096, d)
    positions = torch.randint(0, 4096, (T,), device="cuda", generator=g)
    qkv_out = torch.empty_like(qkv)
    w1, w2, x, logits = make_moe(22, T, E, k, H, I)
    moe = fusekit.MoE(w1, w2, top_k=k, max_tokens=T)
    moe_out = torch.empty(T, H, device="cuda", dtype=torch.bfloat16)

    def step():
        fusekit.qk_rmsnorm(qkv, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, out=qkv_out,
                           rotary="neox", positions=positions, cos_sin_cache=cache)
        moe(x, logits, out=moe_out)

    warm = torch.cuda.Stream()
    warm.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(warm):
        step()
    torch.cuda.current_stream().wait_stream(warm)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for trial in range(3):
        g2 = gen(100 + trial)
        qkv.copy_(torch.randn(qkv.shape, device="cuda", generator=g2))
        positions.copy_(torch.randint(0, 4096, (T,), device="cuda", generator=g2))
        x.copy_(torch.randn(x.shape, device="cuda", generator=g2))
        logits.copy_(torch.randn(logits.shape, device="cuda", generator=g2) * 2)
        qkv_out.fill_(float("nan"))
        moe_out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        eager_qk = torch.empty_like(qkv)
        fusekit.qk_rmsnorm(qkv, wq, wk, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, out=eager_qk,
                           rotary="neox", positions=positions, cos_sin_cache=cache)
        eager_moe = moe(x, logits)
        torch.cuda.synchronize()
        assert torch.equal(qkv_out, eager_qk), "qk_rmsnorm: replay differs from eager"
        assert rel_l2(moe_out.float().cpu(), eager_moe.float().cpu()) < 1e-3, "moe: replay differs from eager"
        assert_close(moe_out.float().cpu(), moe_torch_ref(x, w1, w2, logits, k).cpu(), *BF16, what="moe replay")
