#!/usr/bin/env bash
# One GPU call (eleventh session): the GPU suites on the committed code, then where the large-T
# layer goes on this card: ncu per kernel (duration, DRAM bytes) of the CLI layer on prepared
# weights, one ncu run per T in LAYER_TOKENS, medians per kernel; then the layer itself without a
# profiler. bench/results/moe_large_t_breakdown_h200.json came from this call's CSVs.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]):
#   CASES="qwen3-30b-a3b qwen3-235b-a22b" LAYER_TOKENS="4096 16384" bash bench/large_t_breakdown_device_run.sh
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" large_t
M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size
{
  stamp build
  FUSEKIT_BUILD_TARGETS="${TARGETS:-fusekit moe_cuda_test moe_sm90_experts_test moe_cuda_kernels_test moe_sm90_grouped_gemm_test}" \
    bash scripts/device_build.sh 2>&1 | tail -3
  stamp tests
  run_gpu_tests ${SUITES:-moe_cuda_test moe_sm90_experts_test moe_cuda_kernels_test}
  for c in ${CASES:-qwen3-30b-a3b}; do
    for t in ${LAYER_TOKENS:-4096}; do
      stamp "ncu layer $c T=$t"
      csv="$W/ncu_layer_${c}_$t.csv"
      timeout 200 ncu --clock-control none --print-units base --csv --page raw --metrics "$M" \
        $B bench moe --cases "$c" --tokens "$t" --stages 0 --iters 1 --gate-up-order prepared > "$csv" 2> "${csv%.csv}.err"
      echo "rc=$?"
      python3 - "$csv" <<'PY'
import csv, sys, statistics, collections
rows = list(csv.reader(open(sys.argv[1])))
hdr = next((i for i, r in enumerate(rows) if "Kernel Name" in r and "gpu__time_duration.sum" in r), None)
if hdr is None:
    print("no ncu table"); sys.exit(0)
h = rows[hdr]; body = rows[hdr + 2:]
ki, ti, ri, wi = (h.index(x) for x in ("Kernel Name", "gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum"))
f = lambda s: float(s.replace(",", ""))
by = collections.OrderedDict()
for r in body:
    if len(r) <= ti: continue
    by.setdefault(r[ki], []).append((f(r[ti]) / 1e3, f(r[ri]) / 1e6, f(r[wi]) / 1e6))
for name, v in by.items():
    short = name if "cutlass::device_kernel" not in name else "grouped GEMM " + ("SwiGLU epilogue" if "Swiglu" in name else "store epilogue") + " " + name[-60:]
    print(f"x{len(v):<3d} {statistics.median(x[0] for x in v):9.1f} us  rd {statistics.median(x[1] for x in v):8.1f} MB"
          f"  wr {statistics.median(x[2] for x in v):8.1f} MB  {short[:110]}")
PY
      pack
    done
  done
  stamp "layer timings (no profiler)"
  $B bench moe --cases "${CASES// /,}" --tokens "${LAYER_TOKENS// /,}" --stages 0 --gate-up-order prepared > "$W/layer.txt" 2>&1
  grep -E "^(qwen|mixtral)" "$W/layer.txt"
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
