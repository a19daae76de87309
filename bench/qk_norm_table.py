#!/usr/bin/env python3
"""Markdown table of a QK-norm results file (bench/results/qk_norm_*.json) for docs/BENCHMARKS.md."""
import json
import sys


def main(path):
    r = json.load(open(path))
    copy = r["copy_gbps"]
    by = {}
    for rec in r["records"]:
        by.setdefault((rec["case"], rec["tokens"]), {})[rec["impl"]] = rec
    print(f"Device: {r['device']}; copy bandwidth measured in the run: {copy:.0f} GB/s (read + written); "
          f"fusekit numbers: {r.get('fusekit_source', 'fusekit bench qk-norm')}.\n")
    print("| case | T | fusekit µs | % copy BW | Triton fused µs | torch.compile µs | torch eager µs "
          "| × Triton | × compile | × eager |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (case, t), row in by.items():
        fk = row.get("fusekit")
        if fk is None:
            continue
        us = fk["median_us"]

        def peer(name):
            p = row.get(name)
            return (f"{p['median_us']:.2f}", f"{p['median_us'] / us:.2f}×") if p else ("-", "-")
        tr, ctr = peer("triton_fused")
        co, cco = peer("torch_compile")
        ea, cea = peer("torch_eager")
        print(f"| {case} | {t} | {us:.2f} | {100 * fk['gbps'] / copy:.1f}% | {tr} | {co} | {ea} | {ctr} | {cco} | {cea} |")


if __name__ == "__main__":
    main(sys.argv[1])
