#!/usr/bin/env python3
"""Plots of a bench/moe_peers.py result: time per layer and % of the floor against T, one panel
per model shape, one line per implementation.

  python3 bench/plot_moe.py bench/results/moe_h100.json --out-dir bench/results
writes <stem>_time.png and <stem>_floor.png.
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"fusekit": ("tab:red", "o"), "torch_grouped_mm": ("tab:blue", "s"), "triton_fused_moe": ("tab:green", "^")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("result")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    with open(args.result) as f:
        run = json.load(f)
    recs = [r for r in run["records"] if r.get("op") == "moe" and r.get("median_us")]
    cases = list(dict.fromkeys(r["case"] for r in recs))
    impls = list(dict.fromkeys(r["impl"] for r in recs))
    stem = os.path.splitext(os.path.basename(args.result))[0]
    out_dir = args.out_dir or os.path.dirname(os.path.abspath(args.result))
    title = f"{run['device']} - copy {run['copy_gbps']:.0f} GB/s, bf16 matmul {run['matmul_tflops']:.0f} TFLOP/s"

    for what, ylabel, fname in (("median_us", "time per layer (us)", "time"),
                                ("fraction_of_floor", "% of floor", "floor")):
        fig, axes = plt.subplots(1, len(cases), figsize=(5.2 * len(cases), 4.2), squeeze=False)
        for ax, case in zip(axes[0], cases):
            for impl in impls:
                pts = sorted((r["tokens"], r[what]) for r in recs if r["case"] == case and r["impl"] == impl)
                if not pts:
                    continue
                xs = [p[0] for p in pts]
                ys = [100 * p[1] if what == "fraction_of_floor" else p[1] for p in pts]
                color, marker = STYLE.get(impl, ("gray", "x"))
                ax.plot(xs, ys, marker=marker, color=color, label=impl)
            if what == "median_us":
                floor = sorted({(r["tokens"], r["floor_us"]) for r in recs if r["case"] == case})
                ax.plot([p[0] for p in floor], [p[1] for p in floor], "k--", lw=1, label="floor")
                ax.set_yscale("log")
            else:
                ax.axhline(70, color="gray", lw=0.8, ls=":")
                ax.set_ylim(0, 110)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("tokens T")
            ax.set_ylabel(ylabel)
            ax.set_title(case)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{stem}_{fname}.png")
        fig.savefig(path, dpi=110)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
