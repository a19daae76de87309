#!/usr/bin/env bash
# One GPU call: does this card's own tuned table (tuned_configs_sm90_<card>.inc) beat running
# without it? Builds twice (the second build renames this card's rows so they match no device,
# which is what a card without its own table gets: the heuristic; before the tables were keyed by
# device name, an H200 read the H100's rows), runs the sm90 experts suite (Sm90Config.* among it),
# then the CLI layer bench (prepared weights, graph replay up to T=1024) alternating the two
# binaries twice, then the issue's peers bench on the binary with the table.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/table_ab_device_run.sh
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" table_ab
INC=src/cuda/moe/sm90/tuned_configs_sm90_${GPU_TAG}.inc
CASES=${AB_CASES:-qwen3-30b-a3b,qwen3-235b-a22b,mixtral-8x7b}
TOKENS=${AB_TOKENS:-16,32,64,1024,4096,8192}
{
  stamp build
  FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" bash scripts/device_build.sh 2>&1 | tail -1
  cp build-device/fusekit /tmp/fk_table
  stamp "build without this card's rows"
  cp "$INC" /tmp/inc.keep
  sed -i 's/{"NVIDIA /{"untuned NVIDIA /' "$INC"
  FUSEKIT_BUILD_TARGETS=fusekit bash scripts/device_build.sh 2>&1 | tail -1
  cp build-device/fusekit /tmp/fk_untuned
  cp /tmp/inc.keep "$INC"
  FUSEKIT_BUILD_TARGETS=fusekit bash scripts/device_build.sh 2>&1 | tail -1
  stamp tests
  run_gpu_tests moe_sm90_experts_test
  for round in 1 2; do
    for side in untuned table; do
      stamp "$side round $round"
      /tmp/fk_$side bench moe --cases "$CASES" --tokens "$TOKENS" --stages 0 --gate-up-order prepared \
        --json "$W/moe_ab_${side}_$round.json" > "$W/ab_${side}_$round.txt" 2>&1
      grep -E "^(qwen|mixtral)" "$W/ab_${side}_$round.txt"
      pack
    done
  done
  stamp "peers bench"
  TUNE=0 LAYER_TESTS=0 MOE_TESTS=none_xyz OUT="$OUT" bash bench/moe_device_run.sh | grep -E "T=|fusekit via|FAILED"
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
