#!/usr/bin/env bash
# One GPU call for decode gemm1 picking its experts from the logits at one token: build (with
# the Python extension), the kernel tests (its act rows have the bits of gemm1 on the route's
# ids; the layer from the logits has the bits of the layer on those ids), the layer tests, the
# A/B at T = 1, 2, 8 in fresh processes (FUSEKIT_MOE_DECODE_ROUTE=kernel: gemm1 waits for the route's
# ids), then, with the faster of the two, the peers benchmark and the CLI decode table.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/decode_route_device_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/decode_route_out}
mkdir -p "$OUT"
B=./build-device/fusekit
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
{
  stamp build
  FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" bash scripts/device_build.sh 2>&1 | tail -2
  stamp tests
  timeout 200 ./build-device/tests/moe_cuda_kernels_test 2>&1 | grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which|differ" | head -12
  timeout 250 ./build-device/tests/moe_cuda_test 2>&1 | grep -E "^\[  (PASSED|FAILED) |Failure" | head -8; echo "moe_cuda_test rc=${PIPESTATUS[0]}"
  FUSEKIT_PRINT_CONFIG=1 $B bench moe --cases qwen3-30b-a3b --tokens 1 --stages 0 --iters 3 2>&1 | grep -E "moe forward" | head -1
  stamp "A/B at T=1"
  for run in 1 2; do
    for mode in kernel picks; do
      if [ $mode = kernel ]; then export FUSEKIT_MOE_DECODE_ROUTE=kernel; else unset FUSEKIT_MOE_DECODE_ROUTE; fi
      $B bench moe --tokens 1,2,8 --stages 0 --json "$OUT/ab_${mode}_$run.json" | grep -E " moe " | sed "s/^/$mode $run: /"
    done
  done
  unset FUSEKIT_MOE_DECODE_ROUTE
  winner=$(python3 - "$OUT" <<'PY'
import json, sys, statistics
out = sys.argv[1]
def t(mode):
    return statistics.mean(r["median_us"] for run in (1, 2) for r in json.load(open(f"{out}/ab_{mode}_{run}.json"))["records"]
                           if r["case"] == "qwen3-30b-a3b" and r["tokens"] == 1)
print("picks" if t("picks") < t("kernel") else "kernel")
PY
)
  stamp "faster at T=1 (qwen3-30b-a3b, mean of two runs): $winner"
  [ "$winner" = kernel ] && export FUSEKIT_MOE_DECODE_ROUTE=kernel
  TUNE=0 LAYER_TESTS=0 MOE_TESTS=none_xyz OUT="$OUT" bash bench/moe_device_run.sh | grep -vE "^\[fusekit\]" | tail -60
  stamp "CLI decode table"
  $B bench moe --tokens 1,2,4,8,16,64 --stages 0 --json "$OUT/moe_decode_h100.json" | grep -E " moe "
  stamp done
} 2>&1 | tee "$OUT/decode_route_log.txt"
