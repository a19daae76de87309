#!/usr/bin/env bash
# One GPU call (eighth session): the swapped-operand streaming tile (kStreamSwapAb,
# grouped_gemm_bf16_swapab_nk.cu). Build, the sm90 GEMM and experts suites (the new tile in
# every case that takes NK weights), the CLI layer on the committed table, `fusekit tune moe`
# with the new tile among the candidates (written into the source table), a rebuild on that
# table, and the same CLI layer again: before and after on one machine. One archive comes back.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/swapab_device_run.sh
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" swapab
LAYER_TOKENS=${LAYER_TOKENS:-64,128,256,512,1024}
layer() {
  FUSEKIT_PRINT_CONFIG=1 timeout 200 $B bench moe --tokens "$LAYER_TOKENS" --stages 0 --gate-up-order prepared \
    --json "$W/layer_$1.json" > "$W/layer_$1.txt" 2>&1
  grep -E "^(qwen|mixtral)|moe sm90" "$W/layer_$1.txt" | sort -u
  pack
}
{
  stamp build
  bash scripts/device_build.sh 2>&1 | grep -v "Potential Performance Loss" | tail -3
  stamp tests
  run_gpu_tests moe_sm90_grouped_gemm_test moe_sm90_experts_test
  stamp layer before
  layer before
  stamp tune
  cp src/cuda/moe/sm90/tuned_configs_sm90_${GPU_TAG}.inc "$W/tuned_before.inc"
  timeout 300 $B tune moe --write src/cuda/moe/sm90/tuned_configs_sm90_${GPU_TAG}.inc --json "$W/moe_tune_${GPU_TAG}.json" > "$W/tune.txt" 2>&1
  echo "tune rc=$?"; grep -E "T=" "$W/tune.txt"
  cp src/cuda/moe/sm90/tuned_configs_sm90_${GPU_TAG}.inc "$W/tuned_configs_sm90_${GPU_TAG}.inc"
  pack
  stamp rebuild
  bash scripts/device_build.sh 2>&1 | tail -1
  stamp layer after
  layer after
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
