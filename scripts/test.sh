#!/usr/bin/env bash
# Quick start, part 2: builds if needed and runs every test.
#   1. C++ tests (ctest): cpu-labelled always; gpu-labelled skip themselves without a GPU.
#   2. The CPU tests again under AddressSanitizer + UndefinedBehaviorSanitizer
#      (skip with FUSEKIT_SKIP_SANITIZERS=1).
#   3. The Python package's tests (pytest), when the package is installed.
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

if python3 -c "import fusekit" 2>/dev/null && [ -d python/tests ]; then
  python3 -m pytest -q python/tests
fi
