#!/usr/bin/env bash
# One GPU-machine call for the MoE decode path (T = 1..16): build, the MoE GPU tests, a
# per-kernel breakdown of route / decode gemm1 / decode gemm2 (ncu: duration, DRAM bytes and
# throughput), decode-vs-grouped timings on given ids, and the layer benchmark at decode sizes.
# Run here first: bash scripts/device_carry.sh; then on the device (carry [".carry"]):
#   bash bench/moe_decode_device_run.sh
# Lands in $OUT: moe_decode_log.txt, moe_decode_h100.json (fusekit bench moe records).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/moe_decode_out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
{
  stamp "build"
  bash scripts/device_build.sh
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
  stamp "tests"
  ctest --test-dir build-device -R "moe_cuda_kernels|moe_sm90" --output-on-failure --timeout 240 2>&1 | tail -30
  timeout 300 ./build-device/tests/moe_cuda_test 2>&1 | grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) *\]|Failure" | tail -30
  stamp "ncu breakdown (decode forced at every T listed)"
  for T in 1 4 8; do
    echo "--- qwen3-30b-a3b T=$T"
    FUSEKIT_MOE_DECODE_MAX_PAIRS=64 ncu --clock-control none -k regex:"decode|route" --launch-count 3 \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed \
      ./build-device/fusekit bench moe --cases qwen3-30b-a3b --tokens "$T" --stages 0 --iters 1 2>&1 \
      | grep -E "^  [a-z_]+.*\(|gpu__time|dram__" | sed -e 's/(fusekit::cuda_moe::[A-Za-z]*)//'
  done
  stamp "route: where its cycles go (warp stall reasons, one token, E = 128, k = 8)"
  ncu -k regex:route --launch-count 1 --section WarpStateStats --section SourceCounters \
    --metrics smsp__pcsamp_warps_issue_stalled_no_instructions,smsp__pcsamp_warps_issue_stalled_long_scoreboard,smsp__pcsamp_warps_issue_stalled_wait,smsp__pcsamp_warps_issue_stalled_short_scoreboard,smsp__pcsamp_sample_count,sm__cycles_elapsed.max \
    ./build-device/fusekit bench moe --cases qwen3-30b-a3b --tokens 1 --stages 0 --iters 1 2>&1 \
    | grep -E "pcsamp|cycles_elapsed|Stall|Warp Cycles|Branch|Instructions" | head -30
  stamp "decode vs grouped, eager, given ids"
  FUSEKIT_MOE_TIMING=1 ./build-device/tests/moe_cuda_kernels_test --gtest_filter='*Timing*' 2>&1 | grep timing \
    | grep -E "T= +(1|2|4|8|16|32) "
  stamp "layer bench (graph replay, route included, 4 rotated token windows)"
  ./build-device/fusekit bench moe --tokens 1,2,4,8,16,64 --stages 0 --json "$OUT/moe_decode_h100.json"
  stamp "the same forced onto the grouped path (decode bound check)"
  FUSEKIT_MOE_DECODE_MAX_PAIRS=0 ./build-device/fusekit bench moe --tokens 2,4,8,16 --stages 0 | grep -E " moe "
  stamp "done"
} 2>&1 | tee "$OUT/moe_decode_log.txt"
