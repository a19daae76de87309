#!/usr/bin/env bash
# One GPU call (seventh session): the 64x128x128 pingpong tile. Build, the sm90 GEMM and experts
# tests (every tile, the new one included), `fusekit tune moe` over all shapes with the new tile
# among the candidates (written into the source table), a rebuild on that table, and the CLI
# layer bench on prepared weights with the choices printed. One archive comes back.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/tile_k128_device_run.sh
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" tile_k128
{
  stamp build
  bash scripts/device_build.sh 2>&1 | grep -v "Potential Performance Loss" | tail -3
  stamp tests
  run_gpu_tests moe_sm90_grouped_gemm_test moe_sm90_experts_test
  stamp tune
  cp src/cuda/moe/sm90/tuned_configs_sm90_${GPU_TAG}.inc "$W/tuned_before.inc"
  timeout 300 $B tune moe --write src/cuda/moe/sm90/tuned_configs_sm90_${GPU_TAG}.inc --json "$W/moe_tune_${GPU_TAG}.json" > "$W/tune.txt" 2>&1
  echo "tune rc=$?"; grep -E "T=" "$W/tune.txt"
  cp src/cuda/moe/sm90/tuned_configs_sm90_${GPU_TAG}.inc "$W/tuned_configs_sm90_${GPU_TAG}.inc"
  stamp rebuild
  bash scripts/device_build.sh 2>&1 | tail -1
  stamp layer
  FUSEKIT_PRINT_CONFIG=1 timeout 200 $B bench moe --tokens 64,256,1024,4096,16384 --stages 0 --gate-up-order prepared \
    --json "$W/layer_after.json" > "$W/layer_after.txt" 2>&1
  grep -E "^(qwen|mixtral)|moe sm90" "$W/layer_after.txt" | sort -u
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
