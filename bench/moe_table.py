"""The BENCHMARKS.md table of one peers run (bench/moe_peers.py --out FILE): per shape and T, the
floor, fusekit, each peer, fusekit's speed-up over the best peer, and which of issue 5's targets
the row meets (at every T: >= 1.25x the best peer or within 10% of the floor; T = 1: >= 70% of
the floor; T >= 4096: >= 70% of the measured bf16 matmul rate).
  python3 bench/moe_table.py bench/results/moe_h200.json
"""
import json
import sys

PEERS = ("torch_grouped_mm", "triton_fused_moe")


def verdict(r):
    floor, speedup = r["fraction_of_floor"], r["speedup_vs_best_peer"]
    met = speedup >= 1.25 or floor >= 0.9
    out = ["yes" if met else "no"]
    if r["tokens"] == 1:
        out.append(f"T=1 >=70% floor: {'yes' if floor >= 0.7 else 'no'} ({100 * floor:.1f}%)")
    if r["tokens"] >= 4096:
        mm = r["fraction_of_matmul_rate"]
        out.append(f">=70% matmul: {'yes' if mm >= 0.7 else 'no'} ({100 * mm:.0f}%)")
    return "; ".join(out)


def main(path):
    d = json.load(open(path))
    rows = {}
    for r in d["records"]:
        rows.setdefault((r["case"], r["tokens"]), {})[r["impl"]] = r
    cases = list(dict.fromkeys(r["case"] for r in d["records"]))
    print("| shape | T | floor µs | fusekit µs | % floor | " + " | ".join(f"{p} µs" for p in PEERS)
          + " | × best peer | target met? |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(PEERS) + "---:|---|")
    for case in cases:
        for t in sorted(t for c, t in rows if c == case):
            row = rows[(case, t)]
            f = row.get("fusekit")
            if f is None or not f.get("median_us"):
                continue
            peers = " | ".join(f"{row[p]['median_us']:.1f}" if p in row and row[p].get("median_us") else "-" for p in PEERS)
            print(f"| {case} | {t} | {f['floor_us']:.1f} | {f['median_us']:.1f} | {100 * f['fraction_of_floor']:.1f} | "
                  f"{peers} | {f['speedup_vs_best_peer']:.3f} | {verdict(f)} |")


if __name__ == "__main__":
    main(sys.argv[1])
