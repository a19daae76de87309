"""A fused QK RMSNorm in Triton, written for fusekit's benchmark as the peer in the style of
FastDeploy's Triton kernel: one kernel, in place on the packed QKV activation, each program
normalising a block of BLOCK_H heads of one token (a [BLOCK_H, D] tile), fp32 math, V untouched.

    qkv [T, (Hq + 2*Hkv) * D] (row stride may be larger), q_weight/k_weight [D]
    y = x * rsqrt(mean(x^2) + eps) * w   for the Hq + Hkv Q/K heads of every token

BLOCK_H and num_warps are autotuned per (T, Hq, Hkv, D) so the peer is not handicapped by
a fixed choice.
"""
import torch
import triton
import triton.language as tl

_CONFIGS = [triton.Config({"BLOCK_H": bh}, num_warps=nw) for bh in (1, 2, 4, 8) for nw in (1, 4)]


@triton.autotune(configs=_CONFIGS, key=["n_tokens", "HQ", "HKV", "D"])
@triton.jit
def _qk_rmsnorm_kernel(qkv_ptr, qw_ptr, kw_ptr, row_stride, n_tokens, eps, HQ, HKV,
                       D: tl.constexpr, BLOCK_H: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    h0 = tl.program_id(1) * BLOCK_H
    heads = h0 + tl.arange(0, BLOCK_H)
    cols = tl.arange(0, D)
    mask = heads[:, None] < HQ + HKV
    offs = t * row_stride + heads[:, None] * D + cols[None, :]
    x = tl.load(qkv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)
    wq = tl.load(qw_ptr + cols).to(tl.float32)
    wk = tl.load(kw_ptr + cols).to(tl.float32)
    w = tl.where(heads[:, None] < HQ, wq[None, :], wk[None, :])
    y = x * inv_rms[:, None] * w
    tl.store(qkv_ptr + offs, y.to(qkv_ptr.dtype.element_ty), mask=mask)


def qk_rmsnorm_(qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor,
                hq: int, hkv: int, d: int, eps: float = 1e-6) -> torch.Tensor:
    """In place on qkv [T, width]; returns qkv."""
    assert qkv.stride(-1) == 1 and d & (d - 1) == 0, "rows contiguous, power-of-two head_dim"
    t = qkv.shape[0]
    if t == 0:
        return qkv
    grid = lambda meta: (t, triton.cdiv(hq + hkv, meta["BLOCK_H"]))
    _qk_rmsnorm_kernel[grid](qkv, q_weight, k_weight, qkv.stride(0), t, eps, HQ=hq, HKV=hkv, D=d)
    return qkv
