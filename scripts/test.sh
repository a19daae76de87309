#!/usr/bin/env bash
# Quick start, part 2: builds if needed and runs every test.
#   1. C++ tests (ctest): cpu-labelled always; gpu-labelled skip themselves without a GPU.
#   2. The CPU tests again under AddressSanitizer + UndefinedBehaviorSanitizer
#      (skip with FUSEKIT_SKIP_SANITIZERS=1).
#   3. The Python package: pip install . and its tests (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${FUSEKIT_BUILD_DIR:-build}

bash scripts/build.sh
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" ${FUSEKIT_CTEST_ARGS:-}

if [ "${FUSEKIT_SKIP_SANITIZERS:-0}" != 1 ]; then
  FUSEKIT_BUILD_DIR=build-sanitize \
    FUSEKIT_CMAKE_ARGS="-DFUSEKIT_CUDA=OFF -DFUSEKIT_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo" \
    bash scripts/build.sh
  ctest --test-dir build-sanitize --output-on-failure -j "$(nproc)" -L cpu
fi

# 3. Python: `pip install .` into the current interpreter (needs scikit-build-core and nanobind,
#    see requirements-dev.txt), then pytest. The build tree persists under build-python/, so a
#    second run recompiles only what changed. The extension gets the CUDA backend only where a
#    GPU can run it (nvidia-smi works) or FUSEKIT_PY_CUDA=ON: without a GPU its CUDA path
#    cannot be tested, and step 1 has already compiled every CUDA source. Skip with
#    FUSEKIT_SKIP_PYTHON=1. pytest's "no tests collected" (exit 5) is not a failure.
if [ "${FUSEKIT_SKIP_PYTHON:-0}" != 1 ]; then
  py_cuda=${FUSEKIT_PY_CUDA:-}
  if [ -z "$py_cuda" ]; then
    if nvidia-smi -L >/dev/null 2>&1; then py_cuda=ON; else py_cuda=OFF; fi
  fi
  py_start=$(date +%s)
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    --no-build-isolation --no-deps -Cbuild-dir="build-python/test-cuda-$py_cuda" \
    -Ccmake.define.FUSEKIT_CUDA="$py_cuda" ${FUSEKIT_PY_PIP_ARGS:-} .
  echo "python: pip install . (CUDA $py_cuda) took $(( $(date +%s) - py_start )) s"
  py_rc=0
  python3 -m pytest -q python/tests || py_rc=$?
  if [ "$py_rc" != 0 ] && [ "$py_rc" != 5 ]; then exit "$py_rc"; fi
fi
