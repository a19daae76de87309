#!/usr/bin/env bash
# The closing GPU call of a session, on the code as committed: build with the Python extension,
# the issue's peer benchmark (bench/moe_device_run.sh; moe_h100.json and the plots go straight to
# $OUT), every MoE GPU suite and the Python GPU tests (archived after each suite), then the CLI
# decode table on prepared weights (moe_decode_h100.json). Whatever finished comes back even if
# the call is cut off at its time limit. STAGE=bench or STAGE=tests runs one half.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/session_device_run.sh
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" session
STAGE=${STAGE:-all}
{
  stamp build
  FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" bash scripts/device_build.sh 2>&1 | tail -1
  if [ "$STAGE" != tests ]; then
    stamp bench
    TUNE=0 LAYER_TESTS=0 MOE_TESTS=none_xyz OUT="$OUT" bash bench/moe_device_run.sh | grep -E "T=|fusekit via|FAILED"
  fi
  if [ "$STAGE" != bench ]; then
    stamp tests
    run_gpu_tests
    stamp decode
    $B bench moe --tokens 1,2,4,8,16,64 --stages 0 --gate-up-order prepared --json "$OUT/moe_decode_h100.json" \
      > "$W/decode.txt" 2>&1
    grep -E "^(qwen|mixtral)" "$W/decode.txt"
  fi
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
