#!/usr/bin/env bash
# One GPU-machine call for the MoE Hopper work: build (with the Python extension), the C-ABI
# bench shim, the MoE GPU tests, `fusekit tune moe`, the peer benchmark and its plots.
# Everything worth keeping lands in $OUT (at most 8 files). Run here first:
#   bash scripts/device_carry.sh
# then on the device (carry [".carry"]):  bash bench/moe_device_run.sh
# Knobs: MOE_TESTS (ctest -R regex), TUNE=0 (skip the tuner), BENCH_ARGS (extra moe_peers.py args).
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" moe  # OUT (default /tmp/moe_out), GPU_TAG, stamp
LOG="$OUT/moe_device_log.txt"
{
  stamp "build"
  FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" bash scripts/device_build.sh
  stamp "shim"
  g++ -O2 -shared -fPIC bench/fusekit_moe_shim.cpp -Iinclude -Isrc -I/usr/local/cuda/include \
    build-device/src/libfusekit.a -L/usr/local/cuda/lib64 -lcudart -lcublas -o build-device/libfusekit_moe_shim.so \
    || echo "shim build FAILED"
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
  stamp "tests"
  ctest --test-dir build-device -R "${MOE_TESTS:-moe_sm90|moe_cuda_kernels}" --output-on-failure --timeout 240 2>&1 | tail -60
  # The layer through the `cuda` backend's forward (which takes the Hopper path for prefill):
  # graph replay, run-to-run identity, one expert, NaN logits, 64-bit offsets, prepared weights.
  [ "${LAYER_TESTS:-1}" != 0 ] && timeout 240 ./build-device/tests/moe_cuda_test --gtest_filter="${LAYER_FILTER:-MoeCuda.*}" 2>&1 \
    | grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) *\]|Failure|error" | tail -30
  if [ "${TUNE:-1}" != 0 ]; then
    stamp "tune"
    ./build-device/fusekit tune moe --write "$OUT/tuned_configs_sm90_${GPU_TAG}.inc" --json "$OUT/moe_tune_${GPU_TAG}.json"
  fi
  stamp "probe"
  export PYTHONPATH=python FUSEKIT_PRINT_CONFIG=1
  VIA=""
  for via in ${FUSEKIT_VIA:-python shim}; do
    if python3 -X faulthandler bench/moe_peers.py --probe --fusekit-via "$via"; then VIA=$via; break; fi
    echo "probe: fusekit via $via FAILED"
  done
  stamp "bench (fusekit via ${VIA:-none})"
  # A crash (segfault) ends a process, not the run: resume past the row that crashed.
  SKIP=""
  for attempt in 1 2 3 4; do
    RESUME=""; [ "$attempt" -gt 1 ] && RESUME="--resume"
    python3 -X faulthandler bench/moe_peers.py --out "$OUT/moe_${GPU_TAG}.json" --fusekit-via "${VIA:-shim}" \
      $RESUME --skip "$SKIP" ${BENCH_ARGS:-} > "$OUT/bench_attempt.txt" 2>&1
    rc=$?
    cat "$OUT/bench_attempt.txt"
    [ $rc -eq 0 ] && break
    last=$(grep '^RUN ' "$OUT/bench_attempt.txt" | tail -1 | cut -d' ' -f2)
    echo "bench process exited $rc during $last; resuming without it"
    SKIP="$SKIP,$last"
  done
  rm -f "$OUT/bench_attempt.txt"
  python3 bench/plot_moe.py "$OUT/moe_${GPU_TAG}.json" --out-dir "$OUT"
  stamp "done"
} > "$LOG" 2>&1
# The reply carries the tail: keep the tables, not the build noise.
grep -E "^\[[0-9]+s\]|FAILED|Failed|failed|error:|tests passed|Passed|device |fusekit via|probe|exited|T=|wrote|SKIPPED|PASSED|Fatal|\[fusekit\]" "$LOG" | tail -150
