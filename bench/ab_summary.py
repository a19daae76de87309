"""The layer A/B table of a device call: per (case, tokens), each side's median µs per round and
its best against the first side's best.
  python3 bench/ab_summary.py DIR SIDE [SIDE ...]   reads DIR/moe_ab_<side>_<round>.json, rounds 1-2
"""
import collections
import json
import sys

work, names = sys.argv[1], sys.argv[2:]
res = collections.defaultdict(lambda: collections.defaultdict(list))
for side in names:
    for r in (1, 2):
        try:
            d = json.load(open(f"{work}/moe_ab_{side}_{r}.json"))
        except Exception as e:
            print(side, r, e)
            continue
        for x in d["records"]:
            if x["op"] == "moe":
                res[(x["case"], x["tokens"])][side].append(x["median_us"])
for k in sorted(res):
    v = res[k]
    b = min(v[names[0]]) if v[names[0]] else float("nan")
    print(f"{k[0]:16s} {k[1]:6d} " + "  ".join(
        f"{s} {' '.join(f'{u:8.1f}' for u in v[s])} ({100*(min(v[s])/b-1):+5.1f}%)" for s in names if s in v))
