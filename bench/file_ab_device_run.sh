#!/usr/bin/env bash
# One GPU call: A/B in the layer of one source file against its committed version, then every
# MoE GPU suite and pytest on the working tree. Put the committed version in .carry first:
#   git show HEAD:<path> > .carry/ab_base.cu; bash scripts/device_carry.sh
# then on the device (carry [".carry"]):
#   AB_FILE=<path> bash bench/file_ab_device_run.sh
# Builds the CLI with .carry/ab_base.cu in place of AB_FILE ("base"), then the working tree
# with Python ("new"), runs the CLI layer bench (prepared weights, graph replay up to T=1024)
# alternating the two binaries twice, then the suites.
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" file_ab
AB_FILE=${AB_FILE:?name the source file to A/B}
CASES=${AB_CASES:-qwen3-30b-a3b,qwen3-235b-a22b,mixtral-8x7b}
TOKENS=${AB_TOKENS:-1024,4096,16384}
{
  [ -f .carry/ab_base.cu ] || { echo "no .carry/ab_base.cu: nothing to compare against"; exit 1; }
  stamp "build base"
  cp "$AB_FILE" /tmp/ab_new
  cp .carry/ab_base.cu "$AB_FILE"
  FUSEKIT_BUILD_TARGETS=fusekit build_cli_to /tmp/fk_base || exit 1
  cp /tmp/ab_new "$AB_FILE"
  stamp "build new (everything, with Python)"
  FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" build_cli_to /tmp/fk_new || exit 1
  same_binaries /tmp/fk_base /tmp/fk_new && exit 1
  for round in 1 2; do
    for side in base new; do
      stamp "$side round $round"
      /tmp/fk_$side bench moe --cases "$CASES" --tokens "$TOKENS" --stages 0 --gate-up-order prepared \
        --json "$W/moe_ab_${side}_$round.json" > "$W/ab_${side}_$round.txt" 2>&1
      pack
    done
  done
  python3 bench/ab_summary.py "$W" base new
  if [ -n "${TUNE_TOKENS:-}" ]; then
    stamp "tuner (not applied)"
    timeout 120 $B tune moe ${TUNE_CASES:+--cases "$TUNE_CASES"} --tokens "$TUNE_TOKENS" --json "$W/tune.json" > "$W/tune.txt" 2>&1
    echo "tune rc=$?"; grep -E "T=" "$W/tune.txt" | sed -E 's/gemm1 us:.*  -> /-> /'
  fi
  stamp tests
  run_gpu_tests ${SUITES:-}
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
