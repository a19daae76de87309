#!/usr/bin/env bash
# One GPU call on a card the committed table was not tuned on: build (with Python), `fusekit tune
# moe` (its table and records to $OUT, not applied), the CLI decode table on prepared weights,
# then every MoE GPU suite and pytest (archived after each suite, so a cut-off call still returns
# what finished).   bash scripts/device_carry.sh here; on the device (carry [".carry"]):
#   bash bench/card_tune_tests_device_run.sh
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" tune_tests
{
  stamp build
  FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" bash scripts/device_build.sh 2>&1 | tail -1
  stamp tune
  timeout 280 $B tune moe --write "$OUT/tuned_configs_sm90_${GPU_TAG}.inc" --json "$OUT/moe_tune_${GPU_TAG}.json" > "$W/tune.txt" 2>&1
  echo "tune rc=$?"; tail -40 "$W/tune.txt"
  stamp decode
  $B bench moe --tokens 1,2,4,8,16,64 --stages 0 --gate-up-order prepared --json "$OUT/moe_decode_${GPU_TAG}.json" \
    > "$W/decode.txt" 2>&1
  grep -E "^(qwen|mixtral)" "$W/decode.txt"
  stamp tests
  run_gpu_tests
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
