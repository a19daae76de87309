#!/usr/bin/env bash
# One GPU call: re-tune this card's table on the working tree and A/B it against the committed
# one in the layer. Builds (the CLI and the sm90 suites), keeps that CLI (committed table), runs
# the sm90 GEMM and experts suites, `fusekit tune moe --write` over this card's .inc (the new
# table and the tuner's records go to $OUT), rebuilds the CLI on it, then the CLI layer bench
# (prepared weights, graph replay up to T=1024) alternating the two binaries twice.
# SIDES_ON_COMMITTED="name=VAR=value[,VAR=value] ..." adds sides that run the committed binary
# under those variables (e.g. a path pin), in the same alternation.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/retune_ab_device_run.sh
#   (TUNE_ARGS, e.g. "--cases mixtral-8x7b": the other shapes keep their rows; AB_CASES, AB_TOKENS;
#   SUITES: the GPU suites run before the tuner, SUITES=none for none)
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" retune_ab
INC=src/cuda/moe/sm90/tuned_configs_sm90_${GPU_TAG}.inc
CASES=${AB_CASES:-qwen3-30b-a3b,qwen3-235b-a22b,mixtral-8x7b}
TOKENS=${AB_TOKENS:-16,64,256,1024,4096,16384}
{
  stamp build
  FUSEKIT_BUILD_TARGETS="fusekit moe_sm90_grouped_gemm_test moe_sm90_experts_test" build_cli_to /tmp/fk_committed || exit 1
  stamp tests
  [ "${SUITES:-}" = none ] || run_gpu_tests ${SUITES:-moe_sm90_grouped_gemm_test moe_sm90_experts_test}
  stamp tune
  timeout 300 $B tune moe ${TUNE_ARGS:-} --write "$INC" --json "$OUT/moe_tune_${GPU_TAG}.json" > "$W/tune.txt" 2>&1
  rc=$?; echo "tune rc=$rc"; grep -E "T=" "$W/tune.txt" | sed -E 's/gemm1 us:.*  -> /-> /'; cp "$INC" "$OUT/"
  pack
  [ $rc -eq 0 ] || { echo "the tuner failed: no A/B"; exit 1; }
  stamp "build on the new table"
  FUSEKIT_BUILD_TARGETS=fusekit build_cli_to /tmp/fk_retuned || exit 1
  SIDES="committed retuned"
  same_binaries /tmp/fk_committed /tmp/fk_retuned && { echo "(the new table equals the committed one)"; SIDES=committed; }
  [ "$SIDES" = committed ] && [ -z "${SIDES_ON_COMMITTED:-}" ] && exit 0
  for round in 1 2; do
    for side in $SIDES ${SIDES_ON_COMMITTED:-}; do
      name=${side%%=*}; envs=; bin=/tmp/fk_$side
      [ "$name" != "$side" ] && { envs=${side#*=}; bin=/tmp/fk_committed; }
      stamp "$name round $round ${envs}"
      env FUSEKIT_PRINT_CONFIG=${PRINT_CONFIG:-0} ${envs//,/ } $bin bench moe --cases "$CASES" --tokens "$TOKENS" --stages 0 \
        --gate-up-order prepared --json "$W/moe_ab_${name}_$round.json" > "$W/ab_${name}_$round.txt" 2>&1
      grep -E "^(qwen|mixtral)|moe sm90" "$W/ab_${name}_$round.txt"
      pack
    done
  done
  python3 bench/ab_summary.py "$W" $SIDES $(for v in ${SIDES_ON_COMMITTED:-}; do echo "${v%%=*}"; done)
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
