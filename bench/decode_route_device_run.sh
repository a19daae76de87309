#!/usr/bin/env bash
# One GPU call for the one-token decode with routing inside gemm1 and gemm2 (no route kernel):
# build, the kernel tests (bits equal to the route kernel's, every logits pattern), the whole
# GPU suite, then the layer at T = 1, 2, 8 with and without it, alternated, in fresh processes.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/decode_route_device_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/decode_route_out}
mkdir -p "$OUT"
B=./build-device/fusekit
{
  bash scripts/device_build.sh 2>&1 | tail -3
  for t in moe_cuda_kernels_test qk_norm_cuda_test moe_sm90_experts_test moe_sm90_grouped_gemm_test; do
    timeout 200 ./build-device/tests/$t 2>&1 | grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which|in-kernel" | head -12
  done
  timeout 280 ./build-device/tests/moe_cuda_test 2>&1 | grep -E "^\[  (PASSED|FAILED) |Failure" | head -8; echo "moe_cuda_test rc=${PIPESTATUS[0]}"
  FUSEKIT_PRINT_CONFIG=1 $B bench moe --cases qwen3-30b-a3b --tokens 1 --stages 0 --iters 3 2>&1 | grep -E "moe forward" | head -2
  for run in 1 2; do
    for mode in kernel in_kernels; do
      echo "== run $run, routing: $mode"
      if [ $mode = kernel ]; then export FUSEKIT_MOE_DECODE_ROUTE=kernel; else unset FUSEKIT_MOE_DECODE_ROUTE; fi
      $B bench moe --tokens 1,2,8 --stages 0 --json "$OUT/moe_route_${mode}_$run.json" | grep -E " moe "
    done
  done
  unset FUSEKIT_MOE_DECODE_ROUTE
  echo "== with stages (moe_routed: the layer from precomputed ids)"
  $B bench moe --tokens 1 | grep -E " (moe|moe_routed|route) "
} 2>&1 | tee "$OUT/decode_route_log.txt"
