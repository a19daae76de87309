#!/usr/bin/env bash
# The closing GPU call of a session, on the code as committed: build with the Python extension,
# the issue's peer benchmark (bench/moe_device_run.sh; moe_h100.json and the plots go straight to
# $OUT), every MoE GPU suite and the Python GPU tests (archived after each suite), then the CLI
# decode table on prepared weights (moe_decode_${GPU_TAG}.json). Whatever finished comes back even if
# the call is cut off at its time limit. STAGE=bench or STAGE=tests runs one half.
# AB="NAME=VALUE" adds an A/B at the end: the CLI layer bench (AB_CASES, AB_TOKENS) run four
# times, alternating without and with that environment variable (moe_ab_*.json in the archive).
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/session_device_run.sh
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" session
STAGE=${STAGE:-all}
{
  stamp build
  FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" bash scripts/device_build.sh 2>&1 | tail -1
  if [ "$STAGE" != tests ]; then
    stamp bench
    TUNE=${TUNE:-0} LAYER_TESTS=0 MOE_TESTS=none_xyz OUT="$OUT" bash bench/moe_device_run.sh | grep -E "T=|fusekit via|FAILED"
  fi
  if [ "$STAGE" != bench ]; then
    stamp tests
    run_gpu_tests
    stamp decode
    $B bench moe --tokens 1,2,4,8,16,64 --stages 0 --gate-up-order prepared --json "$OUT/moe_decode_${GPU_TAG}.json" \
      > "$W/decode.txt" 2>&1
    grep -E "^(qwen|mixtral)" "$W/decode.txt"
  fi
  if [ -n "${AB:-}" ]; then
    stamp "A/B: without / with $AB"
    for round in 1 2; do
      for side in base var; do
        env_set=(); [ "$side" = var ] && env_set=("$AB")
        env "${env_set[@]}" $B bench moe --cases "${AB_CASES:-qwen3-30b-a3b}" --tokens "${AB_TOKENS:-64,256,1024}" \
          --stages 0 --gate-up-order prepared --json "$W/moe_ab_${side}_$round.json" > "$W/ab_${side}_$round.txt" 2>&1
        echo "$side round $round:"; grep -E "^(qwen|mixtral)" "$W/ab_${side}_$round.txt"
      done
    done
  fi
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
