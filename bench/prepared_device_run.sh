#!/usr/bin/env bash
# One GPU call (sixth session): prepared weights (moe_prepared_config: on an H100 W1 in
# interleaved8 order, SwiGLU in GEMM1's epilogue). Build with the Python extension, the MoE GPU
# tests and the Python tests, then the peers benchmark through `fusekit.MoE(..., prepare=True)`
# and the CLI decode table on prepared weights. Everything comes back as one archive plus the
# peers JSON and plots.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/prepared_device_run.sh
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" prepared
{
  FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" bash scripts/device_build.sh 2>&1 | tail -2
  run_gpu_tests  # every MoE GPU suite, then pytest (the extension was just built)
  TUNE=0 LAYER_TESTS=0 MOE_TESTS=none_xyz OUT="$OUT" bash bench/moe_device_run.sh | grep -E "T=|copy"
  $B bench moe --tokens 1,2,4,8,16,64 --stages 0 --gate-up-order prepared --json "$W/moe_decode_h100.json" \
    > "$W/decode.txt" 2>&1
  grep -E "^(qwen|mixtral)" "$W/decode.txt"
} 2>&1 | tee "$W/log.txt"
pack
