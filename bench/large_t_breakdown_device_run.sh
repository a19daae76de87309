#!/usr/bin/env bash
# One GPU call (eleventh session): the GPU suites on the committed code, then where the large-T
# layer goes on this card: ncu per kernel (duration, DRAM bytes) of the CLI layer on prepared
# weights at T = LAYER_TOKENS, and the layer itself without a profiler.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]):
#   CASES="qwen3-30b-a3b" bash bench/large_t_breakdown_device_run.sh
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
    stamp "ncu layer $c"
    timeout 200 ncu --clock-control none --print-units base --csv --page raw --metrics "$M" \
      $B bench moe --cases "$c" --tokens "${LAYER_TOKENS:-4096}" --stages 0 --iters 1 --gate-up-order prepared \
      > "$W/ncu_layer_$c.csv" 2> "$W/ncu_layer_$c.err"
    echo "rc=$?"
    python3 - "$W/ncu_layer_$c.csv" <<'PY'
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
hdr = None
for i, r in enumerate(rows):
    if "Kernel Name" in r and "gpu__time_duration.sum" in r:
        hdr = r; body = rows[i + 2:]; break
if hdr is None:
    print("no ncu table"); sys.exit(0)
ki, ti = hdr.index("Kernel Name"), hdr.index("gpu__time_duration.sum")
ri, wi = hdr.index("dram__bytes_read.sum"), hdr.index("dram__bytes_write.sum")
gi = hdr.index("launch__grid_size")
print("units:", rows[i + 1][ti], rows[i + 1][ri])
agg = collections.OrderedDict()
for r in body:
    if len(r) <= ti: continue
    name = r[ki][:100]
    t, rd, wr = (float(r[j].replace(',', '')) for j in (ti, ri, wi))
    a = agg.setdefault(name, [0, 0.0, 0.0, 0.0, r[gi]])
    a[0] += 1; a[1] += t; a[2] += rd; a[3] += wr
for name, (n, t, rd, wr, g) in agg.items():
    print(f"x{n:<3d} {t/n/1e3:9.1f} us  rd {rd/n/1e6:8.1f} MB  wr {wr/n/1e6:8.1f} MB  grid {g:>7}  {name}")
PY
    pack
  done
  stamp "layer timings (no profiler)"
  $B bench moe --cases "${CASES// /,}" --tokens "${LAYER_TOKENS:-4096}" --stages 0 --gate-up-order prepared > "$W/layer.txt" 2>&1
  grep -E "^(qwen|mixtral)" "$W/layer.txt"
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
