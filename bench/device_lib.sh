#!/usr/bin/env bash
# Sourced by the one-call GPU scripts in bench/: the work folders, the test loop and the archive
# that every such call repeated. The device returns only a few files from $OUT, so a call writes
# its logs to $W and packs them into one archive at the end.
#   source bench/device_lib.sh <name>   ->  OUT, W, B (the CLI), stamp, run_gpu_tests, pack
DEVICE_CALL_NAME=${1:?usage: source bench/device_lib.sh <name>}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-/tmp/${DEVICE_CALL_NAME}_out}
W=/tmp/${DEVICE_CALL_NAME}_work
mkdir -p "$OUT" "$W"
B=./build-device/fusekit
# Result files are named for the card they were measured on (moe_h100.json, moe_h200.json).
GPU_TAG=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | grep -oiE 'h100|h200|h20|a100|l40s' | head -1 | tr 'A-Z' 'a-z')
GPU_TAG=${GPU_TAG:-gpu}
DEVICE_CALL_T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - DEVICE_CALL_T0 ))s] $*"; }

# Every MoE GPU suite (or the ones named), then the Python GPU tests when the extension was built.
# Each suite's output lands in $W/test_<name>.txt; the log keeps rc, failures and the summary.
run_gpu_tests() {
  local suites=${*:-moe_sm90_grouped_gemm_test moe_sm90_experts_test moe_cuda_kernels_test moe_cuda_test moe_errors_test moe_forward_cpu_test}
  for t in $suites; do
    echo "== $t"
    timeout 300 "./build-device/tests/$t" --gtest_brief=1 > "$W/test_$t.txt" 2>&1
    echo "rc=$?"; grep -E "FAILED|Failure" "$W/test_$t.txt" | head -10; tail -3 "$W/test_$t.txt"
    pack  # a call cut off at its time limit still returns the suites that finished
  done
  if ls python/fusekit/_fusekit*.so >/dev/null 2>&1; then
    echo "== pytest"
    PYTHONPATH=python timeout 200 python3 -m pytest -q python/tests/test_gpu.py python/tests/test_moe.py \
      > "$W/pytest.txt" 2>&1
    echo "rc=$?"; tail -5 "$W/pytest.txt"
  fi
}

pack() { tar czf "$OUT/${DEVICE_CALL_NAME}.tgz" -C "$W" .; }

# Builds (FUSEKIT_BUILD_TARGETS and FUSEKIT_CMAKE_ARGS as scripts/device_build.sh takes them; no
# targets: everything) and copies the CLI to $1, outside the build tree. The old binary is removed
# first, so a failed build leaves no stale CLI behind to be timed as if it were the new one.
build_cli_to() {
  rm -f build-device/fusekit
  bash scripts/device_build.sh 2>&1 | tail -2
  if [ ! -x build-device/fusekit ]; then echo "build_cli_to $1: NO CLI BUILT"; return 1; fi
  cp build-device/fusekit "$1"
}
# Stops an A/B whose two binaries are the same file (nothing to compare).
same_binaries() { [ "$(md5sum < "$1")" = "$(md5sum < "$2")" ] && echo "A/B: $1 and $2 are identical; stopping" ; }

