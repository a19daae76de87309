#!/usr/bin/env bash
# One call on nvidia-h200-x2: build against the NCCL of the machine's nvidia-nccl wheel (the
# image has no system NCCL), the 2-GPU tests (EP and TP against the single-GPU forward, faults,
# no hang), then `fusekit bench moe-ep`. NVLink multicast stays off.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/moe_ep_device_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/moe_ep_out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  nccl_dir=$(python3 -c "import nvidia.nccl as m; print(list(m.__path__)[0])")
  nccl_lib=$(ls "$nccl_dir"/lib/libnccl.so* | head -1)
  echo "NCCL: $nccl_lib, header $(grep -m1 -E 'define NCCL_(VERSION_CODE|MAJOR)' "$nccl_dir/include/nccl.h")"
  stamp build
  FUSEKIT_CMAKE_ARGS="-DFUSEKIT_NCCL_LIBRARY=$nccl_lib -DFUSEKIT_NCCL_INCLUDE_DIR=$nccl_dir/include" \
    bash scripts/device_build.sh 2>&1 | tail -3
  grep -E "FUSEKIT_NCCL_(LIBRARY|INCLUDE_DIR)" build-device/CMakeCache.txt
  stamp "moe_parallel_test"
  timeout 240 ./build-device/tests/moe_parallel_test 2>&1 | grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) *\]|Failure|Expected|Which|rel|error" | head -60
  echo "moe_parallel_test rc=${PIPESTATUS[0]}"
  stamp "bench moe-ep"
  timeout 200 ./build-device/fusekit bench moe-ep --json "$OUT/moe_ep_h200x2.json" 2>&1 | tail -40
  stamp done
} 2>&1 | tee "$OUT/moe_ep_log.txt"
