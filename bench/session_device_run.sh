#!/usr/bin/env bash
# The closing GPU calls of a session, on the code as committed (two calls: each fits the 600 s
# limit; whatever a call finished lands in $OUT even if it is cut off).
#   STAGE=bench  build with the Python extension, then the issue's peer benchmark
#                (bench/moe_device_run.sh: moe_h100.json and the plots go straight to $OUT)
#   STAGE=tests  every MoE GPU suite, the Python GPU tests, and the CLI decode table on
#                prepared weights (moe_decode_h100.json)
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): STAGE=... bash bench/session_device_run.sh
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" session
case "${STAGE:-bench}" in
  bench)
    TUNE=0 LAYER_TESTS=0 MOE_TESTS=none_xyz OUT="$OUT" bash bench/moe_device_run.sh | grep -E "T=|copy|FAILED|probe"
    ;;
  tests)
    {
      stamp build
      FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" bash scripts/device_build.sh 2>&1 | tail -1
      stamp tests
      run_gpu_tests
      pack
      stamp decode
      $B bench moe --tokens 1,2,4,8,16,64 --stages 0 --gate-up-order prepared --json "$OUT/moe_decode_h100.json" \
        > "$W/decode.txt" 2>&1
      grep -E "^(qwen|mixtral)" "$W/decode.txt"
      stamp done
    } 2>&1 | tee "$W/log.txt"
    pack
    ;;
esac
