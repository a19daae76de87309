#!/usr/bin/env bash
# Configures (once) and builds fusekit into build/ (or $FUSEKIT_BUILD_DIR). Incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${FUSEKIT_BUILD_DIR:-build}
jobs=${FUSEKIT_JOBS:-$(nproc)}
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${FUSEKIT_CMAKE_ARGS:-}
fi
cmake --build "$build_dir" -j "$jobs"
