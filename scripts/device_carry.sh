#!/usr/bin/env bash
# Run HERE (no GPU) before a device call: fills .carry/ (git-ignored) with what the GPU
# machine lacks and cannot download: GoogleTest's sources and the nvidia-cutlass wheel.
# Then call the device with carry [".carry"] and a command that starts with
#   bash scripts/device_build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .carry
[ -d .carry/googletest ] || cp -r /usr/src/googletest .carry/googletest
if ! ls .carry/nvidia_cutlass-*.whl >/dev/null 2>&1; then
  python3 -m pip download -q --no-deps --only-binary=:all: -d .carry nvidia-cutlass==4.2.0.0
fi
du -sh .carry
