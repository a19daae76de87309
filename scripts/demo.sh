#!/usr/bin/env bash
# Quick start, part 1: builds if needed, then runs `fusekit demo` (CUDA path on a GPU,
# otherwise the CPU path on smaller shapes), printing what ran, the check against the CPU
# oracle and the timings.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
exec "${FUSEKIT_BUILD_DIR:-build}/fusekit" demo "$@"
