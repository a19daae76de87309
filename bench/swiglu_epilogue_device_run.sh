#!/usr/bin/env bash
# Branch swiglu-epilogue, first GPU call: (1) the SwiGLU epilogue of the Hopper grouped GEMM1
# against the fp64 reference and bit for bit against GEMM + swiglu_rows_bf16, every tile;
# (2) the layer with W1 in interleaved gate/up order against the same layer in halves order,
# bit for bit (cuda and cuda-ref, T = 1..2048), and every other GPU test; (3) the layer bench
# in both orders at decode and prefill sizes (interleaved = GEMM1 with SwiGLU fused); (4) the
# T=1 split (moe_routed row, branch bench-routed) and the route's warp stalls.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/swiglu_epilogue_device_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/swiglu_out}
mkdir -p "$OUT"
B=./build-device/fusekit
{
  bash scripts/device_build.sh 2>&1 | tail -3
  timeout 300 ./build-device/tests/moe_sm90_grouped_gemm_test 2>&1 | grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) *\]|Failure|Expected|Which|rel|max" | head -60
  timeout 200 ./build-device/tests/moe_cuda_test --gtest_filter='*Interleaved*' 2>&1 | grep -E "^\[ *(OK|FAILED) *\]|Failure|T=" | head -20
  for t in qk_norm_cuda_test moe_sm90_experts_test moe_cuda_kernels_test; do
    timeout 200 ./build-device/tests/$t 2>&1 | grep -E "^\[  (PASSED|FAILED) |Failure" | head -8
  done
  echo "== moe_cuda_test (all but the interleaved test above)"
  timeout 280 ./build-device/tests/moe_cuda_test --gtest_filter='-*Interleaved*' 2>&1 | grep -E "^\[  (PASSED|FAILED) |Failure|tests ran" | head -8; echo "rc=${PIPESTATUS[0]}"
  echo "== T=1 split: moe vs moe_routed (the layer from precomputed routing) and the stage rows"
  $B bench moe --tokens 1,8 | grep -E " (moe|moe_routed|route) "
  echo "== route warp stalls, sampled every 32 cycles"
  ncu -k regex:route --launch-count 1 --sampling-interval 0 --section WarpStateStats --section SourceCounters \
    --metrics smsp__pcsamp_sample_count,smsp__pcsamp_warps_issue_stalled_no_instructions,smsp__pcsamp_warps_issue_stalled_long_scoreboard,smsp__pcsamp_warps_issue_stalled_wait,smsp__pcsamp_warps_issue_stalled_short_scoreboard,smsp__pcsamp_warps_issue_stalled_branch_resolving \
    $B bench moe --cases qwen3-30b-a3b --tokens 1 --stages 0 --iters 1 2>&1 | grep -E "pcsamp|Stall|Warp Cycles" | head -20
  for order in halves interleaved8; do
    echo "== layer, W1 gate/up order $order"
    $B bench moe --tokens 1,8,1024,4096,16384 --stages 0 --gate-up-order $order --json "$OUT/moe_$order.json" | grep -E " moe |SKIPPED"
  done
} 2>&1 | tee "$OUT/swiglu_epilogue_log.txt"
