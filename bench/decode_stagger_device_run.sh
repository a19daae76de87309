#!/usr/bin/env bash
# One H100 call: decode gemm1 sweeping K from a different step in each warp (so the warps in
# flight do not all read the same 1 KB of their 4 KB rows: ncu showed gemm1 at 58% of DRAM peak
# with 11.5 warps per SM each holding 8 KB in flight, i.e. ~6 us per round trip). Build, the
# decode kernel tests, the A/B at T = 1, 2, 8 (FUSEKIT_MOE_DECODE_STAGGER=0 = in order), the
# CLI decode table with the faster order, then as much of moe_cuda_test as time leaves.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/decode_stagger_device_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/decode_stagger_out}
mkdir -p "$OUT"
B=./build-device/fusekit
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
{
  bash scripts/device_build.sh 2>&1 | tail -1
  stamp tests
  timeout 90 ./build-device/tests/moe_cuda_kernels_test 2>&1 | grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which|differ" | head -12
  stamp "A/B"
  for run in 1 2; do
    for mode in in_order staggered; do
      if [ $mode = in_order ]; then export FUSEKIT_MOE_DECODE_STAGGER=0; else unset FUSEKIT_MOE_DECODE_STAGGER; fi
      $B bench moe --tokens 1,2,8 --stages 0 --json "$OUT/ab_${mode}_$run.json" | grep -E " moe " | sed "s/^/$mode $run: /"
    done
  done
  unset FUSEKIT_MOE_DECODE_STAGGER
  winner=$(python3 - "$OUT" <<'PY'
import json, sys, statistics
out = sys.argv[1]
def t(mode):
    return statistics.mean(r["median_us"] for run in (1, 2) for r in json.load(open(f"{out}/ab_{mode}_{run}.json"))["records"])
print("staggered" if t("staggered") < t("in_order") else "in_order")
PY
)
  stamp "faster (mean over every shape and T of both runs): $winner"
  [ "$winner" = in_order ] && export FUSEKIT_MOE_DECODE_STAGGER=0
  $B bench moe --tokens 1,2,4,8,16,64 --stages 0 --json "$OUT/moe_decode_h100.json" | grep -E " moe "
  stamp "moe_cuda_test (decode-relevant part)"
  timeout 100 ./build-device/tests/moe_cuda_test --gtest_filter='MoeCuda.*:Shapes/MoeCudaLayer.MatchesOracleAndRef/E7_*:Shapes/MoeCudaLayer.MatchesOracleAndRef/E1_*:Shapes/MoeCudaLayer.MatchesOracleAndRef/E128_k8_H2048*' 2>&1 \
    | grep -E "^\[ *(OK|FAILED|PASSED) *\]|Failure" | head -30
  stamp done
} 2>&1 | tee "$OUT/decode_stagger_log.txt"
