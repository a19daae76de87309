#!/usr/bin/env bash
# Run ON THE GPU MACHINE (see COMMON device flow; carry [".carry"]): builds the Python package
# for sm_90a against the device's torch/Python (no download: scikit-build-core, nanobind, cmake
# and ninja are installed there, CUTLASS comes from .carry/), runs the Python tests, then the
# transformers Qwen3-MoE benchmark. Results go to $OUT (pytest log, JSON, the built wheel).
# A wheel left in .carry/ (from an earlier run's $OUT) is installed instead of building.
#   FUSEKIT_PY_TESTS=0 skips pytest, FUSEKIT_PY_BENCH=0 skips the benchmark.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fusekit-out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
python3 --version; nvcc --version | tail -1; echo "LDFLAGS=${LDFLAGS:-} CXX=${CXX:-}"; ls /usr/lib/gcc/x86_64-linux-gnu/*/libstdc++.so /usr/lib/gcc/x86_64-linux-gnu/*/libstdc++.a 2>&1 | head -3
python3 -c "import torch, transformers; print('torch', torch.__version__, torch.version.cuda, 'transformers', transformers.__version__)"
if [ ! -d /tmp/site/cutlass_library ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/nvidia_cutlass-*.whl
fi
start=$(date +%s)
if ls .carry/fusekit-*.whl >/dev/null 2>&1; then
  wheel=$(ls .carry/fusekit-*.whl | head -1)
else
  python3 -m pip wheel -q --no-build-isolation --no-deps -w "$OUT" \
    -Cbuild-dir=build-python/device \
    "-Ccmake.define.FUSEKIT_CUDA_GENCODE=-gencode=arch=compute_90a,code=sm_90a" \
    -Ccmake.define.FUSEKIT_CUTLASS_INCLUDE=/tmp/site/cutlass_library/source/include \
    -Ccmake.define.FUSEKIT_NCCL=OFF . > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  wheel=$(ls "$OUT"/fusekit-*.whl | head -1)
fi
python3 -m pip install -q --no-index --no-deps --target /tmp/fk "$wheel" || exit 1
echo "device_run: wheel ready in $(( $(date +%s) - start )) s: $wheel"
export PYTHONPATH=/tmp/fk:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import fusekit; print('fusekit with_cuda =', fusekit.with_cuda)" || exit 1
so=$(ls /tmp/fk/fusekit/_fusekit*.so)
echo "device_run: $(nm -D --defined-only "$so" | wc -l) exported symbols; $(readelf -d "$so" | grep -c NEEDED) NEEDED: $(readelf -d "$so" | grep NEEDED | grep -o '\[.*\]' | tr '\n' ' ')"
rc=0
if [ "${FUSEKIT_PY_TESTS:-1}" != 0 ]; then
  # One pytest process per file: a crash in one file still leaves the others' results.
  : > "$OUT/pytest.log"
  for f in python/tests/test_*.py; do
    frc=0
    timeout "${FUSEKIT_PY_TEST_TIMEOUT:-120}" python3 -X faulthandler -m pytest -q -p no:cacheprovider "$f" \
      ${FUSEKIT_PY_TEST_ARGS:-} >> "$OUT/pytest.log" 2>&1 || frc=$?
    echo "device_run: $f -> $(tail -1 "$OUT/pytest.log") (rc $frc)"
    if [ "$frc" -ge 124 ] && command -v gdb >/dev/null; then
      # A crash or hang: a native backtrace of the first failing test.
      timeout 120 gdb -q -batch -ex run -ex bt --args python3 -m pytest -x -q -p no:cacheprovider "$f" \
        2>&1 | grep -E "^#|signal|SIG" | head -40 >> "$OUT/pytest.log"
    fi
    if [ "$frc" != 0 ] && [ "$frc" != 5 ]; then rc=$frc; fi
  done
  grep -E "^(FAILED|ERROR)|^#[0-9]" "$OUT/pytest.log" | head -40
fi
if [ "${FUSEKIT_PY_BENCH:-1}" != 0 ]; then
  timeout "${FUSEKIT_PY_BENCH_TIMEOUT:-150}" python3 -X faulthandler python/benchmarks/bench_transformers_qwen3moe.py \
    --out "$OUT/transformers_qwen3moe_h100.json" ${FUSEKIT_PY_BENCH_ARGS:-} 2>&1 | tail -30
fi
exit $rc
