#!/usr/bin/env bash
# Branch swiglu-epilogue, first GPU call: the SwiGLU epilogue of the Hopper grouped GEMM1
# against the fp64 reference and bit for bit against GEMM + swiglu_rows_bf16, every tile; then
# the rest of the Hopper GEMM and MoE tests (the stock epilogue's setup kernel changed too).
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/swiglu_epilogue_device_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/swiglu_out}
mkdir -p "$OUT"
{
  bash scripts/device_build.sh 2>&1 | tail -3
  timeout 300 ./build-device/tests/moe_sm90_grouped_gemm_test 2>&1 | grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) *\]|Failure|Expected|Which|rel|max" | head -60
  for t in moe_sm90_experts_test moe_cuda_test moe_cuda_kernels_test; do
    timeout 200 ./build-device/tests/$t 2>&1 | grep -E "^\[  (PASSED|FAILED) |Failure" | head -8
  done
} 2>&1 | tee "$OUT/swiglu_epilogue_log.txt"
