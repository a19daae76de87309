#!/usr/bin/env python3
"""QK RMSNorm peers on the GPU, in one process, with fusekit's methodology:

  torch_eager    the unfused sequence an engine runs: split, reshape, rms_norm (Q), rms_norm (K), cat
  torch_compile  torch.compile of that same function
  triton_fused   a fused in-place Triton kernel in FastDeploy's style (bench/triton_qk_norm.py)
  fusekit        `import fusekit` (fusekit.qk_rmsnorm) when the Python package imports and answers
                 correctly; otherwise the rows of `fusekit bench qk-norm --json` from the same
                 device call, passed with --fusekit-json (the output says which)

Timing, identical for every implementation: median over samples of 20 calls each, CUDA events,
L2 flushed before each sample, the 20 calls rotating over input sets so L2 does not serve them,
CUDA-graph replay for T <= 4096 (eager launches above). GB/s counts Q and K read + written.

    python3 bench/qk_norm_peers.py --fusekit-json fk.json --out bench/results/qk_norm_h100.json
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import triton_qk_norm  # noqa: E402

BATCH = 20
EPS = 1e-6


def unfused(qkv, q_weight, k_weight, hq: int, hkv: int, d: int):
    t = qkv.shape[0]
    q, k, v = qkv.split([hq * d, hkv * d, hkv * d], dim=-1)
    q = F.rms_norm(q.reshape(t, hq, d), (d,), q_weight, EPS).reshape(t, hq * d)
    k = F.rms_norm(k.reshape(t, hkv, d), (d,), k_weight, EPS).reshape(t, hkv * d)
    return torch.cat([q, k, v], dim=-1)


def reference(qkv, q_weight, k_weight, hq, hkv, d):
    t = qkv.shape[0]
    x = qkv.float()
    qk = x[:, : (hq + hkv) * d].reshape(t, hq + hkv, d)
    y = qk * torch.rsqrt(qk.pow(2).mean(-1, keepdim=True) + EPS)
    w = torch.cat([q_weight.float().expand(hq, d), k_weight.float().expand(hkv, d)])
    return torch.cat([(y * w).reshape(t, -1), x[:, (hq + hkv) * d:]], dim=-1)


def find_fusekit_python():
    """Returns a callable fk(qkv, qw, kw, hq, hkv, d) doing the op in place, or (None, why)."""
    try:
        import fusekit  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return None, f"import fusekit failed: {e!r}"
    fn = getattr(fusekit, "qk_rmsnorm", None)
    if fn is None:
        return None, "fusekit has no qk_rmsnorm"
    attempts = [
        lambda x, qw, kw, hq, hkv, d: fn(x, qw, kw, x, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, eps=EPS),
        lambda x, qw, kw, hq, hkv, d: fn(x, qw, kw, out=x, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, eps=EPS),
        lambda x, qw, kw, hq, hkv, d: fn(x, qw, kw, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, eps=EPS, out=x),
    ]
    hq, hkv, d = 4, 2, 128
    x = torch.randn(8, (hq + 2 * hkv) * d, device="cuda", dtype=torch.bfloat16)
    qw = torch.rand(d, device="cuda", dtype=torch.bfloat16) + 0.5
    kw = torch.rand(d, device="cuda", dtype=torch.bfloat16) + 0.5
    want = reference(x, qw, kw, hq, hkv, d)
    errors = []
    for call in attempts:
        y = x.clone()
        try:
            call(y, qw, kw, hq, hkv, d)
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
            continue
        if (y.float() - want).abs().max().item() < 0.05:
            return call, "python package (fusekit.qk_rmsnorm), same process"
        errors.append("wrong result")
    return None, "fusekit.qk_rmsnorm did not accept the tried signatures: " + "; ".join(errors)


class Timer:
    def __init__(self):
        l2 = torch.cuda.get_device_properties(0).L2_cache_size
        self.flush = torch.empty(max(2 * l2, 64 << 20), dtype=torch.uint8, device="cuda")
        self.start = torch.cuda.Event(enable_timing=True)
        self.stop = torch.cuda.Event(enable_timing=True)

    def median_us(self, call, sets, use_graph, iters=20):
        """call(i) runs one op on input set i % len(sets)."""
        for i in range(3):
            call(i)
        torch.cuda.synchronize()
        graph = None
        if use_graph:
            try:
                graph = torch.cuda.CUDAGraph()
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for i in range(2):
                        call(i)
                torch.cuda.current_stream().wait_stream(stream)
                torch.cuda.synchronize()
                with torch.cuda.graph(graph):
                    for i in range(BATCH):
                        call(i)
            except Exception as e:  # noqa: BLE001
                print(f"    (graph capture failed, timing eager: {e!r})")
                graph = None
        samples = []
        for it in range(iters + 2):
            self.flush.zero_()
            self.start.record()
            if graph is not None:
                graph.replay()
            else:
                for i in range(BATCH):
                    call(i)
            self.stop.record()
            self.stop.synchronize()
            if it >= 2:
                samples.append(self.start.elapsed_time(self.stop) * 1000.0 / BATCH)
        samples.sort()
        return samples[len(samples) // 2], graph is not None


def copy_gbps():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(20):
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    del a, b
    return 2.0 * n / (times[len(times) // 2] * 1e-3) / 1e9


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=os.path.join(here, "cases", "qk_norm_qwen3.json"))
    ap.add_argument("--tokens", default=None, help="comma list; default from the cases file")
    ap.add_argument("--only", default="", help="comma list of case names")
    ap.add_argument("--fusekit-json", default="", help="fusekit bench qk-norm --json output to merge")
    ap.add_argument("--out", default="", help="merged bench/results JSON")
    args = ap.parse_args()

    spec = json.load(open(args.cases))
    tokens = [int(t) for t in args.tokens.split(",")] if args.tokens else spec["tokens"]
    cases = [c for c in spec["cases"] if not args.only or c["case"] in args.only.split(",")]
    torch.manual_seed(0)
    torch._dynamo.config.cache_size_limit = 64

    fk_call, fk_source = find_fusekit_python()
    cli = json.load(open(args.fusekit_json)) if args.fusekit_json and os.path.exists(args.fusekit_json) else None
    if fk_call is None:
        fk_source = ("CLI `fusekit bench qk-norm` in the same device call (" + fk_source + ")") if cli else \
            ("not measured (" + fk_source + ")")
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; fusekit numbers: {fk_source}")
    copy = cli["copy_gbps"] if cli else copy_gbps()
    print(f"copy bandwidth {copy:.0f} GB/s ({'from the fusekit run' if cli else 'measured here'}); "
          f"torch copy_ here: {copy_gbps():.0f} GB/s")
    cli_us = {}
    if cli:
        for r in cli["records"]:
            cli_us[(r["case"], r["tokens"])] = r["median_us"]

    timer = Timer()
    compiled = {}
    records = []
    header = f"{'case':16s} {'T':>6s} {'fusekit':>9s} {'triton':>9s} {'compile':>9s} {'eager':>9s}   " \
             f"{'x triton':>8s} {'x compile':>9s} {'x eager':>8s}  fusekit %copy"
    print(header)
    for c in cases:
        hq, hkv, d = c["hq"], c["hkv"], c["d"]
        width = (hq + 2 * hkv) * d
        key = (hq, hkv, d)
        if key not in compiled:
            compiled[key] = torch.compile(lambda x, qw, kw, hq=hq, hkv=hkv, d=d: unfused(x, qw, kw, hq, hkv, d),
                                          dynamic=True)
        comp = compiled[key]
        qw = (torch.rand(d, device="cuda") + 0.5).to(torch.bfloat16)
        kw = (torch.rand(d, device="cuda") + 0.5).to(torch.bfloat16)
        for t in tokens:
            set_bytes = t * width * 2
            n_sets = max(1, min(BATCH, max(256 << 20, 3 * set_bytes) // set_bytes))
            base = torch.randn(t, width, device="cuda", dtype=torch.bfloat16)
            sets = [base.clone() for _ in range(n_sets)]
            want = reference(base, qw, kw, hq, hkv, d)
            qk_bytes = 2.0 * t * (hq + hkv) * d * 2
            use_graph = t <= 4096
            row = {}
            impls = [
                ("torch_eager", lambda x: unfused(x, qw, kw, hq, hkv, d)),
                ("torch_compile", lambda x: comp(x, qw, kw)),
                ("triton_fused", lambda x: triton_qk_norm.qk_rmsnorm_(x, qw, kw, hq, hkv, d, EPS)),
            ]
            if fk_call is not None:
                impls.append(("fusekit", lambda x: (fk_call(x, qw, kw, hq, hkv, d), x)[1]))
            for name, fn in impls:
                x = base.clone()
                y = fn(x)
                torch.cuda.synchronize()
                err = ((y.float() - want).abs().max() / want.abs().max()).item()
                us, graphed = timer.median_us(lambda i: fn(sets[i % n_sets]), sets, use_graph)
                row[name] = us
                records.append({"op": "qk_norm", "impl": name, "case": c["case"],
                                "params": {"hq": hq, "hkv": hkv, "d": d, "dtype": "bf16",
                                           "in_place": name in ("triton_fused", "fusekit"),
                                           "timing": "graph" if graphed else "eager"},
                                "tokens": t, "median_us": round(us, 3), "gbps": round(qk_bytes / (us * 1e3), 1),
                                "tflops": None, "floor_us": round(qk_bytes / (copy * 1e3), 3),
                                "fraction_of_floor": round(qk_bytes / (copy * 1e3) / us, 4),
                                "max_rel_err": err})
            fk = row.get("fusekit", cli_us.get((c["case"], t)))
            if fk is not None and "fusekit" not in row:
                row["fusekit"] = fk

            def f(v):
                return f"{v:9.2f}" if v is not None else f"{'-':>9s}"

            def sp(peer):
                return f"{row[peer] / fk:7.2f}x" if fk else "      - "
            pct = f"{100.0 * qk_bytes / (fk * 1e3) / copy:6.1f}%" if fk else "-"
            print(f"{c['case']:16s} {t:6d} {f(fk)} {f(row['triton_fused'])} {f(row['torch_compile'])} "
                  f"{f(row['torch_eager'])}   {sp('triton_fused'):>8s} {sp('torch_compile'):>9s} "
                  f"{sp('torch_eager'):>8s}  {pct}", flush=True)
            del sets, base, want

    if args.out:
        merged = dict(cli) if cli else {
            "device": torch.cuda.get_device_name(0), "commit": "unknown", "date": time.strftime("%Y-%m-%d"),
            "copy_gbps": copy, "matmul_tflops": None, "records": []}
        merged["command"] = (merged.get("command", "") + " ; python3 " + " ".join(sys.argv)).strip(" ;")
        merged["fusekit_source"] = fk_source
        merged["peer_versions"] = {"torch": torch.__version__, "triton": __import__("triton").__version__}
        if fk_call is not None:
            merged["records"] = [r for r in merged["records"] if r["impl"] != "fusekit"]
        merged["records"] = merged["records"] + records
        with open(args.out, "w") as fh:
            json.dump(merged, fh, indent=1)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
