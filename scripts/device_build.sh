#!/usr/bin/env bash
# Run ON THE GPU MACHINE (16 cores): builds fusekit for sm_90a only into build-device/,
# with GoogleTest and CUTLASS from .carry/ (see scripts/device_carry.sh).
# Extra CMake arguments: FUSEKIT_CMAKE_ARGS; build only some targets: FUSEKIT_BUILD_TARGETS.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /tmp/site/cutlass_library ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/nvidia_cutlass-*.whl
fi
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export PATH=/usr/local/cuda/bin:$PATH
# A cache from an earlier call keeps its options: configure again whenever options are given
# (FUSEKIT_CMAKE_ARGS), or a call asking for the Python extension gets a build without it.
if [ ! -f build-device/CMakeCache.txt ] || [ -n "${FUSEKIT_CMAKE_ARGS:-}" ]; then
  cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DFUSEKIT_GTEST_SOURCE_DIR="$PWD/.carry/googletest" \
    -DFUSEKIT_CUTLASS_INCLUDE=/tmp/site/cutlass_library/source/include \
    "-DFUSEKIT_CUDA_GENCODE=-gencode=arch=compute_90a,code=sm_90a" ${FUSEKIT_CMAKE_ARGS:-} -Wno-dev -Wno-deprecated >/dev/null
fi
# -k 0: one broken target (someone else's work in progress) does not stop the others.
if ! cmake --build build-device -j "$(nproc)" ${FUSEKIT_BUILD_TARGETS:+--target $FUSEKIT_BUILD_TARGETS} -- -k 0 > build-device/build.log 2>&1; then
  grep -E 'error|Error' build-device/build.log | head -40
  tail -20 build-device/build.log
  echo "device_build: SOME TARGETS FAILED (see above); continuing with what was built"
fi
grep -iE 'warning' build-device/build.log | grep -v googletest | head -20 || true
echo "device_build: done"
