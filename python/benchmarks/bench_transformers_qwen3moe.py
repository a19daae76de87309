"""Whole-model forward time of a Hugging Face Qwen3-MoE before and after fusekit's swap.

A random-weight model with Qwen3-30B-A3B's layer shapes (hidden 2048, 32 Q / 4 KV heads of
128, 128 experts, top-8, expert width 768) but few layers and a small vocabulary, so it fits
anywhere and builds in seconds on the GPU (no download). Times (CUDA events, median):

  prefill  one sequence of --prefill tokens, no cache, logits of the last position only
  decode   one token per sequence for --batch sequences with --context cached tokens each
           (the cache is cropped back after every step, so each step sees the same length)

for these implementations, in this order on one model:
  hf_eager_experts   transformers' eager experts loop (its reference implementation)
  hf_grouped_mm      transformers' default experts implementation (torch grouped GEMM)
  fusekit_qk_norm    packed QKV + fusekit q/k norm with fused rotary; HF grouped_mm experts
  fusekit_experts_hook  q/k norm + fusekit experts through transformers' ExpertsInterface
                     (HF's own router: torch softmax + top-k)
  fusekit            q/k norm + the whole sparse MoE block in fusekit (swap_qwen3_moe)

Writes one JSON file in bench/results format (shared/BENCH_FORMAT.md): op "model_prefill"
or "model_decode", speed-ups against hf_grouped_mm in "speedup_vs_hf_grouped_mm".
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import traceback

import torch


def measure_copy_gbps():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    return 2 * n / sorted(times)[len(times) // 2] / 1e9


def measure_matmul_tflops():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e12


def build_model(layers, vocab, seed=0):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    cfg = Qwen3MoeConfig(
        vocab_size=vocab,
        hidden_size=2048,
        intermediate_size=6144,
        moe_intermediate_size=768,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=4,
        head_dim=128,
        num_experts=128,
        num_experts_per_tok=8,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        max_position_embeddings=40960,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = Qwen3MoeForCausalLM(cfg)
    model = model.to(torch.bfloat16).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.1)
    return model, cfg


def timed(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e3)
    times.sort()
    return times[len(times) // 2]


def prefill_fn(model, ids):
    def run():
        with torch.no_grad():
            return model(ids, use_cache=False, logits_to_keep=1).logits

    return run


def decode_setup(model, batch, context, vocab):
    from transformers import DynamicCache

    g = torch.Generator(device="cuda").manual_seed(1)
    ctx = torch.randint(0, vocab, (batch, context), device="cuda", generator=g)
    tok = torch.randint(0, vocab, (batch, 1), device="cuda", generator=g)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(ctx, past_key_values=cache, use_cache=True, logits_to_keep=1)

    def run():
        with torch.no_grad():
            out = model(tok, past_key_values=cache, use_cache=True).logits
        cache.crop(-1)  # drop the step's token: every step sees `context` cached tokens
        return out

    return run


def rel_l2(a, b):
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--prefill", type=int, default=4096)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", default="bench/results/transformers_qwen3moe_h100.json")
    args = ap.parse_args()

    import transformers

    import fusekit
    from fusekit.integrations.transformers import swap_qwen3_moe, unswap_qwen3_moe

    t0 = time.time()
    copy_gbps = measure_copy_gbps()
    matmul_tflops = measure_matmul_tflops()
    model, cfg = build_model(args.layers, args.vocab)
    print(f"model built in {time.time() - t0:.1f} s; experts implementation: {model.config._experts_implementation}", flush=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(0, args.vocab, (1, args.prefill), device="cuda", generator=g)

    impls = [
        ("hf_grouped_mm", None, None),
        ("hf_eager_experts", lambda m: m.set_experts_implementation("eager"), lambda m: m.set_experts_implementation("grouped_mm")),
        ("fusekit_qk_norm", lambda m: swap_qwen3_moe(m, moe=False, max_tokens=args.prefill), unswap_qwen3_moe),
        ("fusekit_experts_hook", lambda m: swap_qwen3_moe(m, moe="experts", max_tokens=args.prefill), unswap_qwen3_moe),
        ("fusekit", lambda m: swap_qwen3_moe(m, moe="block", max_tokens=args.prefill), unswap_qwen3_moe),
    ]
    params = {
        "layers": args.layers,
        "hidden": 2048,
        "hq": 32,
        "hkv": 4,
        "d": 128,
        "experts": 128,
        "top_k": 8,
        "moe_intermediate": 768,
        "vocab": args.vocab,
        "dtype": "bf16",
        "attn": "sdpa",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    records = []
    reference = {}
    for name, on, off in impls:
        if on is not None:
            on(model)
        try:
            run = prefill_fn(model, ids)
            logits = run()
            us = timed(run, 2, args.iters)
            key = ("prefill", args.prefill)
            err = None
            if name == "hf_grouped_mm":
                reference[key] = logits
            elif key in reference:
                err = rel_l2(logits, reference[key])
            records.append(
                {"op": "model_prefill", "impl": name, "case": "qwen3-30b-a3b-shapes", "params": dict(params, batch=1),
                 "tokens": args.prefill, "median_us": us, "gbps": None, "tflops": None, "floor_us": None,
                 "fraction_of_floor": None, "max_rel_err": err}
            )
            print(f"{name:18s} prefill T={args.prefill}: {us / 1e3:.2f} ms (rel-L2 vs hf_grouped_mm {err})", flush=True)
            for b in args.batch:
                run = decode_setup(model, b, args.context, args.vocab)
                logits = run()
                us = timed(run, 3, max(args.iters, 20))
                key = ("decode", b)
                err = None
                if name == "hf_grouped_mm":
                    reference[key] = logits
                elif key in reference:
                    err = rel_l2(logits, reference[key])
                records.append(
                    {"op": "model_decode", "impl": name, "case": "qwen3-30b-a3b-shapes",
                     "params": dict(params, batch=b, context=args.context), "tokens": b, "median_us": us, "gbps": None,
                     "tflops": None, "floor_us": None, "fraction_of_floor": None, "max_rel_err": err}
                )
                print(f"{name:18s} decode batch={b} ctx={args.context}: {us / 1e3:.3f} ms (rel-L2 {err})", flush=True)
        except Exception:  # keep what the other implementations measured
            traceback.print_exc()
        finally:
            if off is not None:
                off(model)

    base = {(r["op"], r["tokens"]): r["median_us"] for r in records if r["impl"] == "hf_grouped_mm"}
    for r in records:
        b = base.get((r["op"], r["tokens"]))
        r["speedup_vs_hf_grouped_mm"] = (b / r["median_us"]) if b else None

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    except OSError:
        commit = None
    result = {
        "device": torch.cuda.get_device_name(),
        "commit": commit or os.environ.get("FUSEKIT_COMMIT"),
        "date": datetime.date.today().isoformat(),
        "command": "python " + " ".join(sys.argv),
        "copy_gbps": copy_gbps,
        "matmul_tflops": matmul_tflops,
        "fusekit_with_cuda": fusekit.with_cuda,
        "records": records,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
