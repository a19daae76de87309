"""A Triton fused-MoE peer in the style of vLLM's / FastDeploy's unquantised BF16 path.

Written for fusekit's benchmark (bench/moe_peers.py); no vLLM code is copied. The algorithm
is the one those engines ship:

  align    pairs p = t*k + j grouped by expert, each expert's run padded to BLOCK_M
           (sorted_token_ids, expert id per block, padded total) - three small Triton kernels,
           fixed grids, no host sync (CUDA-graph capturable)
  gemm1    one program per (BLOCK_M aligned rows, BLOCK_N columns): gathers its rows of x by
           pair // k, multiplies by W1[expert of the block], writes cache1[p] (bf16, [T*k, 2I])
  act      silu(gate) * up -> cache2 [T*k, I]
  gemm2    the same kernel on cache2 (rows by pair), times topk_weight[p] -> cache3 [T*k, H]
  reduce   out[t] = sum_j cache3[t*k + j]

Tile configs: vLLM's tuned H100 tables (keyed by the token count M, nearest key wins) for
E=128,N=768 (Qwen3-30B-A3B) and E=8,N=7168 (Mixtral at TP2; vLLM ships no TP1 H100 table for
N=14336, so its nearest tuned table stands in); Qwen3-235B-A22B (E=128,N=1536) has no vLLM H100
table either, and uses E=128,N=768's. The values are tuning data read from vLLM's repository
(vllm/model_executor/layers/fused_moe/configs/), restated here as numbers.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# M -> (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages)
_H100_E128_N768 = {
    1: (16, 32, 64, 1, 4, 4), 2: (16, 64, 64, 32, 4, 3), 4: (16, 128, 64, 1, 4, 4), 8: (16, 64, 64, 64, 4, 5),
    16: (16, 32, 256, 64, 4, 2), 24: (16, 64, 128, 16, 4, 3), 32: (16, 32, 128, 1, 4, 5), 48: (16, 64, 128, 1, 4, 3),
    64: (16, 256, 128, 1, 8, 3), 96: (16, 128, 128, 1, 4, 2), 128: (16, 256, 128, 1, 8, 2), 256: (32, 256, 128, 1, 8, 3),
    512: (64, 128, 64, 1, 4, 3), 1024: (64, 256, 64, 1, 8, 5), 1536: (128, 256, 64, 1, 8, 4),
    2048: (128, 256, 64, 1, 8, 4), 3072: (128, 256, 64, 1, 8, 4), 4096: (128, 256, 64, 1, 8, 4),
}
_H100_E8_N7168 = {
    1: (16, 64, 128, 64, 4, 4), 2: (16, 128, 128, 32, 8, 4), 4: (16, 32, 256, 16, 4, 4), 8: (16, 128, 128, 32, 8, 4),
    16: (16, 128, 128, 1, 4, 4), 24: (16, 128, 128, 1, 4, 4), 32: (16, 128, 128, 1, 4, 4), 48: (32, 128, 128, 1, 4, 4),
    64: (32, 128, 128, 1, 4, 4), 96: (32, 128, 128, 64, 4, 4), 128: (64, 128, 128, 1, 4, 4), 256: (64, 128, 128, 64, 4, 4),
    512: (64, 256, 64, 32, 4, 4), 1024: (128, 256, 64, 16, 8, 4), 1536: (128, 256, 64, 64, 8, 4),
    2048: (128, 256, 64, 32, 8, 4), 3072: (128, 256, 64, 64, 8, 4), 4096: (128, 256, 64, 16, 8, 4),
}
# (E, I) -> (table, where it comes from)
TABLES = {
    (128, 768): (_H100_E128_N768, "vLLM E=128,N=768,device_name=NVIDIA_H100_80GB_HBM3"),
    (128, 1536): (_H100_E128_N768, "vLLM E=128,N=768 H100 (no N=1536 H100 table in vLLM)"),
    (8, 14336): (_H100_E8_N7168, "vLLM E=8,N=7168 H100 (TP2 table; no TP1 H100 table in vLLM)"),
}


def pick_config(num_experts: int, intermediate: int, tokens: int):
    table, source = TABLES.get((num_experts, intermediate), (_H100_E128_N768, "vLLM E=128,N=768 H100 (fallback)"))
    key = min(table, key=lambda m: abs(m - tokens))
    bm, bn, bk, gm, warps, stages = table[key]
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, num_warps=warps, num_stages=stages), source


# ---------------------------------------------------------------------------------------------
# align: rank of each pair inside its expert (atomic counter), padded offsets, scatter.


@triton.jit
def _count_kernel(ids_ptr, counts_ptr, rank_ptr, n, E, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    e = tl.load(ids_ptr + offs, mask=mask, other=0)
    valid = mask & (e >= 0) & (e < E)
    rank = tl.atomic_add(counts_ptr + e, 1, mask=valid)
    tl.store(rank_ptr + offs, rank, mask=valid)


@triton.jit
def _offsets_kernel(counts_ptr, offsets_ptr, expert_ids_ptr, total_ptr, E, num_blocks, BLOCK_M: tl.constexpr,
                    E_POW2: tl.constexpr, CHUNK: tl.constexpr):
    e = tl.arange(0, E_POW2)
    c = tl.load(counts_ptr + e, mask=e < E, other=0)
    padded = (c + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    incl = tl.cumsum(padded, axis=0)
    tl.store(offsets_ptr + e, incl - padded, mask=e < E)
    total = tl.sum(padded, axis=0)
    tl.store(total_ptr, total)
    # expert of block b: the number of experts whose run ends at or before b*BLOCK_M
    for b0 in range(0, num_blocks, CHUNK):
        b = b0 + tl.arange(0, CHUNK)
        row = b * BLOCK_M
        ends = tl.where(e[None, :] < E, incl[None, :], 2147483647)
        idx = tl.sum((ends <= row[:, None]).to(tl.int32), axis=1)
        idx = tl.where(row < total, idx, -1)
        tl.store(expert_ids_ptr + b, idx, mask=b < num_blocks)


@triton.jit
def _scatter_kernel(ids_ptr, rank_ptr, offsets_ptr, sorted_ptr, n, E, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    e = tl.load(ids_ptr + offs, mask=mask, other=0)
    valid = mask & (e >= 0) & (e < E)
    r = tl.load(rank_ptr + offs, mask=valid, other=0)
    start = tl.load(offsets_ptr + e, mask=valid, other=0)
    tl.store(sorted_ptr + start + r, offs.to(tl.int32), mask=valid)


def moe_align(topk_ids: torch.Tensor, num_experts: int, block_m: int):
    flat = topk_ids.reshape(-1).to(torch.int32)
    n = flat.numel()
    capacity = (n + min(n, num_experts) * (block_m - 1) + block_m - 1) // block_m * block_m
    num_blocks = capacity // block_m
    dev = flat.device
    counts = torch.zeros(num_experts, dtype=torch.int32, device=dev)
    rank = torch.empty(n, dtype=torch.int32, device=dev)
    offsets = torch.empty(num_experts, dtype=torch.int32, device=dev)
    sorted_ids = torch.full((capacity,), n, dtype=torch.int32, device=dev)
    expert_ids = torch.empty(num_blocks, dtype=torch.int32, device=dev)
    total = torch.empty(1, dtype=torch.int32, device=dev)
    blk = 1024
    _count_kernel[(triton.cdiv(n, blk),)](flat, counts, rank, n, num_experts, BLOCK=blk)
    _offsets_kernel[(1,)](counts, offsets, expert_ids, total, num_experts, num_blocks, BLOCK_M=block_m,
                          E_POW2=triton.next_power_of_2(num_experts), CHUNK=64)
    _scatter_kernel[(triton.cdiv(n, blk),)](flat, rank, offsets, sorted_ids, n, num_experts, BLOCK=blk)
    return sorted_ids, expert_ids, total


# ---------------------------------------------------------------------------------------------
# The grouped GEMM over aligned blocks (gathers A rows, masks N and K).


@triton.jit
def _fused_moe_gemm_kernel(a_ptr, b_ptr, c_ptr, w_ptr, sorted_ptr, expert_ids_ptr, total_ptr, N, K, EM, num_valid,
                           stride_am, stride_be, stride_bk, stride_bn, stride_cm, top_k: tl.constexpr,
                           MUL_WEIGHT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(EM, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_pid_n
    first_m = (pid // group) * GROUP_M
    size_m = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % group) % size_m)
    pid_n = (pid % group) // size_m
    if pid_m * BLOCK_M >= tl.load(total_ptr):
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    pair = tl.load(sorted_ptr + rows)
    row_ok = pair < num_valid
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    ks = tl.arange(0, BLOCK_K)
    a_rows = (pair // top_k).to(tl.int64)
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + ks[None, :]
    b_ptrs = b_ptr + expert * stride_be + ks[:, None] * stride_bk + cols[None, :].to(tl.int64) * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k0 * BLOCK_K
        a = tl.load(a_ptrs, mask=row_ok[:, None] & (ks[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(ks[:, None] < k_left) & col_ok[None, :], other=0.0)
        acc += tl.dot(a, b)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * stride_bk
    if MUL_WEIGHT:
        w = tl.load(w_ptr + pair, mask=row_ok, other=0.0)
        acc = acc * w[:, None]
    c_ptrs = c_ptr + pair.to(tl.int64)[:, None] * stride_cm + cols[None, :]
    tl.store(c_ptrs, acc.to(tl.bfloat16), mask=row_ok[:, None] & col_ok[None, :])


def _gemm(a, w, c, topk_weights, sorted_ids, expert_ids, total, top_k, mul_weight, cfg, layout):
    # w: NK [E, N, K] or KN [E, K, N]; c: [pairs, N]
    if layout == "nk":
        E, N, K = w.shape
        s_be, s_bk, s_bn = w.stride(0), w.stride(2), w.stride(1)
    else:
        E, K, N = w.shape
        s_be, s_bk, s_bn = w.stride(0), w.stride(1), w.stride(2)
    EM = sorted_ids.numel()
    grid = (triton.cdiv(EM, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
    _fused_moe_gemm_kernel[grid](a, w, c, topk_weights, sorted_ids, expert_ids, total, N, K, EM, c.shape[0],
                                 a.stride(0), s_be, s_bk, s_bn, c.stride(0), top_k=top_k, MUL_WEIGHT=mul_weight,
                                 BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
                                 GROUP_M=cfg["GROUP_M"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])


@triton.jit
def _silu_mul_kernel(h_ptr, out_ptr, I, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < I
    g = tl.load(h_ptr + row * 2 * I + cols, mask=m, other=0.0).to(tl.float32)
    u = tl.load(h_ptr + row * 2 * I + I + cols, mask=m, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * I + cols, (g / (1.0 + tl.exp(-g)) * u).to(tl.bfloat16), mask=m)


def fused_moe(x, w1, w2, topk_weights, topk_ids, layout="nk", config=None):
    """out [T, H] = sum_j w[t, j] * (silu(x W1g^T) * (x W1u^T)) W2^T, vLLM-style Triton kernels."""
    T, H = x.shape
    k = topk_ids.shape[1]
    E = w1.shape[0]
    I = w2.shape[2] if layout == "nk" else w2.shape[1]
    cfg = config or pick_config(E, I, T)[0]
    sorted_ids, expert_ids, total = moe_align(topk_ids, E, cfg["BLOCK_M"])
    pairs = T * k
    cache1 = torch.empty(pairs, 2 * I, dtype=torch.bfloat16, device=x.device)
    cache2 = torch.empty(pairs, I, dtype=torch.bfloat16, device=x.device)
    cache3 = torch.empty(pairs, H, dtype=torch.bfloat16, device=x.device)
    w = topk_weights.reshape(-1).to(torch.float32)
    _gemm(x, w1, cache1, w, sorted_ids, expert_ids, total, k, False, cfg, layout)
    _silu_mul_kernel[(pairs, triton.cdiv(I, 1024))](cache1, cache2, I, BLOCK=1024)
    _gemm(cache2, w2, cache3, w, sorted_ids, expert_ids, total, 1, True, cfg, layout)
    return cache3.view(T, k, H).sum(dim=1, dtype=torch.float32).to(torch.bfloat16)
