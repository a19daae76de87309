#!/usr/bin/env python3
"""Fused MoE layer (BF16, router logits -> output) on one GPU: fusekit against its peers, in one
process, each checked against an fp32 reference, with the floor measured in the same run.

Implementations (all route softmax -> top-k -> renormalise from the same router logits):
  fusekit            the `cuda` backend: `import fusekit` (python/fusekit, fusekit.MoE) when the
                     package is importable and passes --probe, else the C-ABI shim
                     bench/fusekit_moe_shim.cpp (ctypes, same process); each record says which.
                     Through the package the layer prepares its weights once (prepare=True, the
                     device's fastest format; --fusekit-prepare 0 reads torch's order as given)
  torch_grouped_mm   permute (argsort) + torch._grouped_mm GEMM1 + SwiGLU + torch._grouped_mm GEMM2
                     + weighted scatter-add (index_add_)
  triton_fused_moe   bench/triton_fused_moe.py: vLLM/FastDeploy-style Triton kernels, vLLM's tuned
                     H100 tiles

Timing: median of CUDA-event samples; T <= --graph-max-tokens are graph-replayed (a graph of
--graph-batch calls, each on its own input set so weights are not served from L2), larger T
eager with the same rotation. Floor = max(FLOPs / measured bf16 matmul rate, bytes of the
experts' weights touched / measured copy bandwidth), both ceilings measured here.

  python3 bench/moe_peers.py --out bench/results/moe_h100.json [--cases ...] [--tokens ...]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import statistics
import subprocess
import sys
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import triton_fused_moe as tfm  # noqa: E402

CASES = {
    "qwen3-30b-a3b": (128, 8, 2048, 768),
    "qwen3-235b-a22b": (128, 8, 4096, 1536),
    "mixtral-8x7b": (8, 2, 4096, 14336),
}
TOKENS = [1, 8, 64, 256, 1024, 4096, 16384]


# ---------------------------------------------------------------------------------- ceilings
def time_events(fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b) * 1000.0)
    return statistics.median(samples)


def measure_copy_gbps():
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    us = time_events(lambda: dst.copy_(src), 20)
    return 2.0 * n / (us * 1e-6) / 1e9


def measure_matmul_tflops(n=8192):
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    us = time_events(lambda: torch.matmul(a, b), 20)
    return 2.0 * n**3 / (us * 1e-6) / 1e12


# ----------------------------------------------------------------------------------- routing
def route(logits, k):
    p = torch.softmax(logits.float(), dim=-1)
    w, ids = torch.topk(p, k, dim=-1)
    return w / w.sum(dim=-1, keepdim=True), ids.to(torch.int32)


def make_logits(T, E, gen):
    # Distinct, well separated values per token (a shuffled ramp): no near-ties, so every
    # implementation's top-k picks the same experts.
    ramp = torch.linspace(-4.0, 4.0, E, device="cuda")
    perm = torch.argsort(torch.rand(T, E, device="cuda", generator=gen), dim=1)
    return ramp[perm].contiguous()


def reference(x, logits, w1, w2, k, I):
    """fp32 layer on the same routing (GPU, TF32 off)."""
    w, ids = route(logits, k)
    T, H = x.shape
    out = torch.zeros(T, H, dtype=torch.float32, device="cuda")
    xf = x.float()
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    for e in torch.unique(ids).tolist():
        tok, slot = torch.nonzero(ids == e, as_tuple=True)
        h = xf[tok] @ w1[e].float().t()
        a = F.silu(h[:, :I]) * h[:, I:]
        y = a @ w2[e].float().t()
        out.index_add_(0, tok, y * w[tok, slot].unsqueeze(1))
    torch.backends.cuda.matmul.allow_tf32 = prev
    return out


# ------------------------------------------------------------------------------------- peers
def torch_grouped_mm_layer(x, logits, w1t, w2t, k, E, I):
    w, ids = route(logits, k)
    T, H = x.shape
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.zeros(E, dtype=torch.int32, device=x.device)
    counts.scatter_add_(0, flat.long(), torch.ones_like(flat))
    offs = torch.cumsum(counts, 0, dtype=torch.int32)
    tok = order // k
    xs = x.index_select(0, tok)
    h = torch._grouped_mm(xs, w1t, offs=offs)
    act = F.silu(h[:, :I]) * h[:, I:]
    y = torch._grouped_mm(act, w2t, offs=offs)
    y = y.float() * w.reshape(-1)[order].unsqueeze(1)
    return torch.zeros(T, H, dtype=torch.float32, device=x.device).index_add_(0, tok, y).to(torch.bfloat16)


def triton_layer(x, logits, w1, w2, k, cfg):
    w, ids = route(logits, k)
    return tfm.fused_moe(x, w1, w2, w, ids, layout="nk", config=cfg)


class FusekitShim:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.fk_moe_workspace_size.restype = ctypes.c_size_t
        self.lib.fk_moe_workspace_size.argtypes = [ctypes.c_int64] * 5
        self.lib.fk_moe_forward.restype = ctypes.c_int
        self.lib.fk_moe_forward.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_size_t] + [ctypes.c_int64] * 6 + [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        self.err = ctypes.create_string_buffer(512)

    def layer(self, E, k, H, I, max_tokens):
        ws = torch.empty(self.lib.fk_moe_workspace_size(E, k, H, I, max_tokens), dtype=torch.uint8, device="cuda")

        def run(x, logits, w1, w2, out):
            rc = self.lib.fk_moe_forward(x.data_ptr(), logits.data_ptr(), w1.data_ptr(), w2.data_ptr(), out.data_ptr(),
                                         ws.data_ptr(), ws.numel(), x.shape[0], E, k, H, I, max_tokens,
                                         torch.cuda.current_stream().cuda_stream, self.err, 512)
            if rc != 0:
                raise RuntimeError(self.err.value.decode())
            return out

        return run


def fusekit_python_layer(w1, w2, k, max_tokens, prepare):
    """The Python package (python/fusekit): a layer object; calls run on torch's current stream.
    prepare: the layer copies the weights once into the device's fastest format (what an engine
    does at weight loading; on an H100 W1's gate/up rows interleaved for SwiGLU in GEMM1)."""
    import fusekit

    layer = fusekit.MoE(w1, w2, top_k=k, max_tokens=max_tokens, layout="nk", routing="softmax", renormalize=True,
                        backend="cuda", prepare=prepare)

    def run(x, logits, out):
        return layer(x, logits, out=out)

    return run


# ------------------------------------------------------------------------------------ timing
def time_impl(fn_for_set, n_sets, use_graph, iters, graph_batch):
    """fn_for_set(i) runs the layer on input set i. Returns the median us per call."""
    for i in range(n_sets):
        fn_for_set(i)
    torch.cuda.synchronize()
    if use_graph:
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for i in range(n_sets):  # warm inside the side stream (allocator pools)
                fn_for_set(i)
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize()
        with torch.cuda.graph(g):
            for j in range(graph_batch):
                fn_for_set(j % n_sets)
        g.replay()
        torch.cuda.synchronize()
        samples = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            g.replay()
            b.record()
            b.synchronize()
            samples.append(a.elapsed_time(b) * 1000.0 / graph_batch)
        del g
        return statistics.median(samples)
    samples = []
    for it in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn_for_set(it % n_sets)
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b) * 1000.0)
    return statistics.median(samples)


def rel_errors(out, ref):
    d = out.float() - ref
    rel_l2 = (d.norm() / ref.norm()).item()
    max_rel = (d.abs().max() / ref.abs().max()).item()
    finite = bool(torch.isfinite(out.float()).all().item())
    return rel_l2, max_rel, finite


def git_commit():
    try:
        c = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
        return c + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def pick_fusekit(want, shim_path, cli_path):
    """(via, shim): the Python package, else the ctypes shim, else the CLI."""
    if want in ("auto", "python"):
        try:
            import fusekit

            if not fusekit.with_cuda:
                raise ImportError("fusekit was built without CUDA")
            return "python", None
        except Exception as e:  # noqa: BLE001
            print(f"fusekit Python package not usable ({type(e).__name__}: {e})", flush=True)
    if want in ("auto", "shim") and os.path.exists(shim_path):
        return "ctypes-shim", FusekitShim(shim_path)
    if os.path.exists(cli_path):
        return "cli", None
    return None, None


def fusekit_fn(via, shim, w1, w2, xs, lg, E, k, H, I, T, sets, prepare=False):
    outs = [torch.empty(T, H, device="cuda", dtype=torch.bfloat16) for _ in range(sets)]
    if via == "ctypes-shim":
        run = shim.layer(E, k, H, I, T)
        return lambda i: run(xs[i], lg[i], w1, w2, outs[i])
    if via == "python":
        pyrun = fusekit_python_layer(w1, w2, k, T, prepare)
        return lambda i: pyrun(xs[i], lg[i], outs[i])
    raise RuntimeError(f"fusekit via {via} cannot run in-process")


def probe(via, shim_path):
    """Runs fusekit once per path (decode and prefill sizes) against the reference; exit code 0 if right."""
    via, shim = pick_fusekit(via, shim_path, "")
    gen = torch.Generator(device="cuda").manual_seed(7)
    E, k, H, I = CASES["qwen3-30b-a3b"]
    w1 = (torch.randn(E, 2 * I, H, device="cuda", dtype=torch.bfloat16, generator=gen) / H**0.5).contiguous()
    w2 = (torch.randn(E, H, I, device="cuda", dtype=torch.bfloat16, generator=gen) / I**0.5).contiguous()
    ok = True
    for T in (1, 64):
        xs = [torch.randn(T, H, device="cuda", dtype=torch.bfloat16, generator=gen)]
        lg = [make_logits(T, E, gen)]
        out = fusekit_fn(via, shim, w1, w2, xs, lg, E, k, H, I, T, 1)(0)
        torch.cuda.synchronize()
        rel_l2, max_rel, finite = rel_errors(out, reference(xs[0], lg[0], w1, w2, k, I))
        print(f"probe fusekit via {via}: T={T} rel_l2={rel_l2:.2e} finite={finite}", flush=True)
        ok = ok and finite and rel_l2 < 2e-2
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/moe_h100.json")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    ap.add_argument("--impls", default="fusekit,torch_grouped_mm,triton_fused_moe")
    ap.add_argument("--shim", default="build-device/libfusekit_moe_shim.so")
    ap.add_argument("--cli", default="build-device/fusekit")
    ap.add_argument("--fusekit-via", default="auto", choices=["auto", "python", "shim", "cli"])
    ap.add_argument("--fusekit-prepare", type=int, default=1, choices=[0, 1],
                    help="1: fusekit.MoE(..., prepare=True), the weights copied once into the device's fastest format")
    ap.add_argument("--probe", action="store_true", help="only check that fusekit runs and is right (exit code)")
    ap.add_argument("--resume", action="store_true", help="keep the records already in --out, run the rest")
    ap.add_argument("--skip", default="", help="case:T:impl,... recorded as crashed, not run")
    ap.add_argument("--graph-max-tokens", type=int, default=1024)
    ap.add_argument("--graph-batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--sets", type=int, default=4, help="input sets rotated between calls")
    ap.add_argument("--time-budget-s", type=float, default=1e9, help="skip remaining rows past this wall time")
    args = ap.parse_args()
    if args.probe:
        sys.exit(probe(args.fusekit_via, args.shim))
    t_start = datetime.datetime.now()

    torch.manual_seed(0)
    gen = torch.Generator(device="cuda").manual_seed(1234)
    copy_gbps = measure_copy_gbps()
    matmul_tflops = measure_matmul_tflops()
    print(f"device {torch.cuda.get_device_name()}: copy {copy_gbps:.0f} GB/s, bf16 matmul {matmul_tflops:.0f} TFLOP/s",
          flush=True)

    impls = args.impls.split(",")
    fusekit_via, shim = (None, None)
    if "fusekit" in impls:
        fusekit_via, shim = pick_fusekit(args.fusekit_via, args.shim, args.cli)
        print(f"fusekit via: {fusekit_via}", flush=True)

    result = {
        "device": torch.cuda.get_device_name(), "commit": git_commit(),
        "date": datetime.date.today().isoformat(), "command": " ".join(["python3"] + sys.argv),
        "copy_gbps": copy_gbps, "matmul_tflops": matmul_tflops, "fusekit_via": fusekit_via,
        "torch": torch.__version__, "triton": __import__("triton").__version__, "records": [],
        "processes": 1,
    }
    if args.resume and os.path.exists(args.out):
        with open(args.out) as f:
            prev = json.load(f)
        result["records"] = prev["records"]
        result["processes"] = prev.get("processes", 1) + 1
        for key in ("copy_gbps", "matmul_tflops", "date", "command", "commit"):
            result[key] = prev[key]
        # This process's own ceilings still set its rows' floors (copied into each record).
    done = {(r["case"], r["tokens"], r["impl"]) for r in result["records"]}
    skip = set()
    for item in filter(None, args.skip.split(",")):
        c, t, i = item.split(":")
        skip.add((c, int(t), i))
    records = result["records"]

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

    for case in args.cases.split(","):
        E, k, H, I = CASES[case]
        todo = [int(t) for t in args.tokens.split(",") if any((case, int(t), i) not in done for i in impls)]
        if not todo:
            continue
        params = {"e": E, "k": k, "h": H, "i": I, "dtype": "bf16", "layout": "nk", "routing": "softmax_topk_renorm"}
        w1 = (torch.randn(E, 2 * I, H, device="cuda", dtype=torch.bfloat16, generator=gen) / H**0.5).contiguous()
        w2 = (torch.randn(E, H, I, device="cuda", dtype=torch.bfloat16, generator=gen) / I**0.5).contiguous()
        w1t, w2t = w1.transpose(1, 2), w2.transpose(1, 2)
        for T in todo:
            if (datetime.datetime.now() - t_start).total_seconds() > args.time_budget_s:
                print(f"time budget reached: skipping {case} T={T}", flush=True)
                continue
            xs = [torch.randn(T, H, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(args.sets)]
            lg = [make_logits(T, E, gen) for _ in range(args.sets)]
            ref = reference(xs[0], lg[0], w1, w2, k, I)
            hit = [torch.unique(route(l, k)[1]).numel() for l in lg]
            experts_hit = sum(hit) / len(hit)
            flops = 6.0 * T * k * H * I
            weight_bytes = experts_hit * 3.0 * H * I * 2
            floor_us = max(flops / (matmul_tflops * 1e12), weight_bytes / (copy_gbps * 1e9)) * 1e6
            use_graph = T <= args.graph_max_tokens
            row = {r["impl"]: r for r in records if r["case"] == case and r["tokens"] == T and r.get("median_us")}
            for impl in impls:
                if (case, T, impl) in done:
                    continue
                if (case, T, impl) in skip:
                    records.append({"op": "moe", "impl": impl, "case": case, "params": dict(params), "tokens": T,
                                    "median_us": None, "error": "crashed the benchmark process (segfault); skipped"})
                    continue
                print(f"RUN {case}:{T}:{impl}", flush=True)
                try:
                    if impl == "fusekit":
                        fn = fusekit_fn(fusekit_via, shim, w1, w2, xs, lg, E, k, H, I, T, args.sets,
                                        args.fusekit_prepare == 1)
                    elif impl == "torch_grouped_mm":
                        fn = lambda i: torch_grouped_mm_layer(xs[i], lg[i], w1t, w2t, k, E, I)  # noqa: E731
                    elif impl == "triton_fused_moe":
                        cfg, source = tfm.pick_config(E, I, T)
                        fn = lambda i: triton_layer(xs[i], lg[i], w1, w2, k, cfg)  # noqa: E731
                    else:
                        raise ValueError(impl)
                    out = fn(0)
                    torch.cuda.synchronize()
                    rel_l2, max_rel, finite = rel_errors(out, ref)
                    iters = args.iters if T < 4096 else max(5, args.iters // 2)
                    us = time_impl(fn, args.sets, use_graph, iters, args.graph_batch)
                    rec = {
                        "op": "moe", "impl": impl, "case": case, "params": dict(params), "tokens": T,
                        "median_us": us, "gbps": weight_bytes / (us * 1e-6) / 1e9,
                        "tflops": flops / (us * 1e-6) / 1e12, "floor_us": floor_us,
                        "fraction_of_floor": floor_us / us, "max_rel_err": max_rel, "rel_l2": rel_l2,
                        "all_finite": finite, "graph_replay": use_graph, "experts_hit": experts_hit,
                        "weight_bytes": weight_bytes, "flops": flops, "copy_gbps": copy_gbps,
                        "matmul_tflops": matmul_tflops,
                        "fraction_of_matmul_rate": flops / (us * 1e-6) / 1e12 / matmul_tflops,
                    }
                    if impl == "fusekit":
                        rec["via"] = fusekit_via
                        rec["prepared_weights"] = args.fusekit_prepare == 1 and fusekit_via == "python"
                    if impl == "triton_fused_moe":
                        rec["params"]["triton_config"] = cfg
                        rec["params"]["triton_config_source"] = source
                    if rel_l2 > 2e-2 or not finite:
                        rec["check"] = "FAILED"
                    records.append(rec)
                    row[impl] = rec
                except Exception as e:  # noqa: BLE001
                    print(f"{case} T={T} {impl}: FAILED {type(e).__name__}: {e}", flush=True)
                    traceback.print_exc(limit=2)
                    records.append({"op": "moe", "impl": impl, "case": case, "params": dict(params), "tokens": T,
                                    "median_us": None, "error": f"{type(e).__name__}: {e}"[:300]})
            if "fusekit" in row:
                fk = row["fusekit"]
                fk["speedup_vs"] = {p: row[p]["median_us"] / fk["median_us"] for p in row if p != "fusekit"}
                peers = [row[p]["median_us"] for p in row if p != "fusekit"]
                if peers:
                    fk["speedup_vs_best_peer"] = min(peers) / fk["median_us"]
            line = f"{case:16s} T={T:6d} floor {floor_us:9.1f} us |"
            for impl in impls:
                r = row.get(impl)
                line += f" {impl} {r['median_us']:9.1f} us ({100 * r['fraction_of_floor']:5.1f}%, err {r['rel_l2']:.1e})" \
                    if r else f" {impl} --"
            print(line, flush=True)
            save()
            del xs, lg, ref
        del w1, w2, w1t, w2t
        torch.cuda.empty_cache()

    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
