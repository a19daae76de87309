#!/usr/bin/env bash
# One GPU call (sixth session): prepared weights (moe_prepared_config: on an H100 W1 in
# interleaved8 order, SwiGLU in GEMM1's epilogue). Build with the Python extension, the MoE GPU
# tests and the Python tests, then the peers benchmark through `fusekit.MoE(..., prepare=True)`
# and the CLI decode table on prepared weights. Everything comes back as one archive plus the
# peers JSON and plots.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/prepared_device_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/prepared_out}
W=/tmp/prepared_work
mkdir -p "$OUT" "$W"
B=./build-device/fusekit
{
  FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" bash scripts/device_build.sh 2>&1 | tail -2
  for t in moe_sm90_grouped_gemm_test moe_sm90_experts_test moe_cuda_kernels_test moe_cuda_test moe_errors_test \
           moe_forward_cpu_test; do
    echo "== $t"
    timeout 300 ./build-device/tests/$t --gtest_brief=1 > "$W/test_$t.txt" 2>&1
    echo "rc=$?"; grep -E "FAILED|Failure" "$W/test_$t.txt" | head -10; tail -3 "$W/test_$t.txt"
  done
  echo "== pytest"
  PYTHONPATH=python timeout 200 python3 -m pytest -q python/tests/test_gpu.py python/tests/test_moe.py \
    > "$W/pytest.txt" 2>&1
  echo "rc=$?"; tail -5 "$W/pytest.txt"
  TUNE=0 LAYER_TESTS=0 MOE_TESTS=none_xyz OUT="$OUT" bash bench/moe_device_run.sh | grep -E "T=|copy"
  $B bench moe --tokens 1,2,4,8,16,64 --stages 0 --gate-up-order prepared --json "$W/moe_decode_h100.json" \
    > "$W/decode.txt" 2>&1
  grep -E "^(qwen|mixtral)" "$W/decode.txt"
} 2>&1 | tee "$W/log.txt"
tar czf "$OUT/prepared.tgz" -C "$W" .
