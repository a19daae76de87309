#!/usr/bin/env bash
# Two GPU calls (sixth session): whether a 64x256 pingpong tile (half the tiles per expert of
# 64x128; 64-row M tiles) serves the MoE GEMMs better. Call 1 (STAGE=first): the GPU tests,
# layer bench on the committed table, re-tune with the new tile among the candidates, rebuild on
# the new table, layer bench again. Call 2 (STAGE=retune, default): the sm90 GEMM tests, the
# tuner, a rebuild on its table, and the layer bench with the choices printed; everything it
# writes comes back as one archive (the device returns ~8 files).
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/tile64x256_device_run.sh
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" tile64x256
LAYER_TOKENS=${LAYER_TOKENS:-1,8,64,256,1024,4096,16384}
{
  bash scripts/device_build.sh 2>&1 | tail -2
  run_gpu_tests moe_sm90_grouped_gemm_test moe_sm90_experts_test
  cp src/cuda/moe/sm90/tuned_configs_sm90_${GPU_TAG}.inc "$W/tuned_before.inc"
  $B tune moe --write src/cuda/moe/sm90/tuned_configs_sm90_${GPU_TAG}.inc --json "$W/tune.json" > "$W/tune.txt" 2>&1
  echo "tune rc=$?"
  cp src/cuda/moe/sm90/tuned_configs_sm90_${GPU_TAG}.inc "$W/tuned_after.inc"
  bash scripts/device_build.sh 2>&1 | tail -1
  FUSEKIT_PRINT_CONFIG=1 $B bench moe --tokens "$LAYER_TOKENS" --stages 0 --json "$W/layer_after.json" > "$W/layer_after.txt" 2>&1
  grep -E "^(qwen|mixtral)|moe sm90" "$W/layer_after.txt"
  $B bench moe --tokens 1024,4096,16384 --stages 0 --gate-up-order interleaved8 --json "$W/layer_interleaved8.json" \
    > "$W/layer_interleaved8.txt" 2>&1
  grep -E "^(qwen|mixtral)" "$W/layer_interleaved8.txt"
} 2>&1 | tee "$W/log.txt"
pack
