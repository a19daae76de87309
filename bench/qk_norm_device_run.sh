#!/usr/bin/env bash
# One device call for QK RMSNorm: build, GPU + CPU tests, compute-sanitizer (memcheck and
# racecheck on a reduced case set), demo, verify, the kernel-variant experiment, the CLI
# benchmark and the peers. Logs go to $OUT. Steps: QK_STEPS="build test sanitize demo variants bench peers".
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/qk_out}
mkdir -p "$OUT"
steps=${QK_STEPS:-"build test sanitize demo variants bench peers"}
has() { [[ " $steps " == *" $1 "* ]]; }
export PATH=/usr/local/cuda/bin:$PATH
log() { echo "=== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee -a "$OUT/summary.txt"
if has build; then
  log build
  bash scripts/device_build.sh 2>&1 | tail -25 | tee -a "$OUT/summary.txt"
  # Others' work in progress can break the library link; never report numbers from old binaries.
  for bin in build-device/fusekit build-device/tests/qk_norm_cuda_test; do
    if [ ! -e "$bin" ] || [ "$bin" -ot src/cuda/qk_norm/qk_rmsnorm_kernel.cuh ] || [ "$bin" -ot src/cuda/qk_norm/qk_rmsnorm_dispatch.cu ]; then
      echo "STALE OR MISSING: $bin is older than the QK kernel sources" | tee -a "$OUT/summary.txt"
    else
      echo "fresh: $bin" | tee -a "$OUT/summary.txt"
    fi
  done
fi
B=build-device
if has test; then
  log "ctest qk_norm (cpu + gpu)"
  timeout 300 ctest --test-dir $B -R qk_norm --output-on-failure > "$OUT/ctest.txt" 2>&1
  echo "ctest rc=$?" | tee -a "$OUT/summary.txt"
  grep -E "tests passed|Passed|Failed|\*\*\*" "$OUT/ctest.txt" | tail -8 | tee -a "$OUT/summary.txt"
  grep -E "FAILED|Failure" "$OUT/ctest.txt" | head -20 | tee -a "$OUT/summary.txt"
fi
FILTER='Grid/QkNormCudaGrid.MatchesOracle/*T17_*:Grid/QkNormCudaGrid.MatchesOracle/bf16_T4097_*:QkNormCuda.Padded*:QkNormCuda.Graph*:QkNormCuda.Cpu*:QkNormCuda.VBit*'
if has sanitize; then
  for tool in memcheck racecheck; do
    log "compute-sanitizer $tool"
    timeout 240 compute-sanitizer --tool $tool --error-exitcode 9 $B/tests/qk_norm_cuda_test --gtest_filter="$FILTER" \
      > "$OUT/sanitizer_$tool.txt" 2>&1
    echo "sanitizer $tool rc=$?" | tee -a "$OUT/summary.txt"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$OUT/sanitizer_$tool.txt" | tail -4 | tee -a "$OUT/summary.txt"
  done
fi
if has demo; then
  log "fusekit demo qk-norm / verify qk-norm"
  { timeout 120 $B/fusekit demo qk-norm; echo "demo rc=$?"; timeout 120 $B/fusekit verify qk-norm | tail -3; echo "verify rc=$?"; } \
    > "$OUT/demo.txt" 2>&1
  tail -4 "$OUT/demo.txt" | tee -a "$OUT/summary.txt"
fi
if has variants; then
  log "kernel variants"
  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Iinclude -Isrc \
    bench/qk_norm_variants.cu -o /tmp/qk_norm_variants && timeout 120 /tmp/qk_norm_variants 2>&1 | tee -a "$OUT/summary.txt"
fi
if has bench; then
  log "fusekit bench qk-norm"
  timeout 240 $B/fusekit bench qk-norm --json "$OUT/fusekit_bench.json" ${QK_BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.txt" | tail -45
fi
if has peers; then
  log "peers"
  timeout 400 python3 bench/qk_norm_peers.py --fusekit-json "$OUT/fusekit_bench.json" --out "$OUT/qk_norm_h100.json" \
    ${QK_PEER_ARGS:-} > "$OUT/peers.txt" 2>&1
  echo "peers rc=$?" | tee -a "$OUT/summary.txt"
  grep -vE "^\s*$|Warning|warn" "$OUT/peers.txt" | tail -50
fi
log done
