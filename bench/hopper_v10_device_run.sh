#!/usr/bin/env bash
# GPU calls of the eighteenth session (PERF_NOTES "MoE on Hopper v10"): build, then the layer A/B
# of that session's changes, each side against the code without it, in fresh processes,
# alternated, twice (CLI layer, graph replay, prepared weights), then the GPU tests of the changes:
#   base   FUSEKIT_MOE_GEMM2_K_SPLITS=1, Mixtral's W1 in halves order (the code before)
#   split  + GEMM2 split in K by the rule (Mixtral T = 256..1024)
#   new    + Mixtral's W1 interleaved on the H200 (SwiGLU in GEMM1's epilogue): the landed defaults
# SIDES picks some (default all three), AB_QWEN="" leaves the Qwen shapes out (neither change
# reaches them), BUILD=0 takes build-device/ as it is, TESTS=0 skips the tests. (The first call
# also had a side "pdl", the CUTLASS GEMMs launched as programmatic dependents of their setup
# kernels: slower, removed.)
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/hopper_v10_device_run.sh
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" hopper_v10
QWEN=${AB_QWEN-qwen3-30b-a3b,qwen3-235b-a22b}
QWEN_TOKENS=${AB_QWEN_TOKENS:-64,256,1024,4096}
MIXTRAL_TOKENS=${AB_MIXTRAL_TOKENS:-64,256,512,1024,4096}
side() {  # name round envs mixtral_order
  local name=$1 round=$2 envs=$3 order=$4
  if [ -n "$QWEN" ]; then
    env $envs timeout 150 $B bench moe --cases "$QWEN" --tokens "$QWEN_TOKENS" --stages 0 --gate-up-order prepared \
      --json "$W/qwen_${name}_$round.json" > "$W/ab_qwen_${name}_$round.txt" 2>&1
    echo "$name qwen rc=$?"
  fi
  env $envs timeout 150 $B bench moe --cases mixtral-8x7b --tokens "$MIXTRAL_TOKENS" --stages 0 --gate-up-order "$order" \
    --json "$W/mixtral_${name}_$round.json" > "$W/ab_mixtral_${name}_$round.txt" 2>&1
  echo "$name mixtral rc=$?"
  python3 - "$W" "$name" "$round" <<'PY'
import json, sys
w, name, r = sys.argv[1:]
out = None
for part in ("qwen", "mixtral"):
    try:
        d = json.load(open(f"{w}/{part}_{name}_{r}.json"))
    except Exception as e:
        print(part, name, r, e); continue
    if out is None: out = d
    else: out["records"] += d["records"]
if out: json.dump(out, open(f"{w}/moe_ab_{name}_{r}.json", "w"))
PY
  pack
}
{
  if [ "${BUILD:-1}" != 0 ]; then
    stamp "build (everything, with Python)"
    FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" build_cli_to /tmp/fk || exit 1
  else
    cp build-device/fusekit /tmp/fk
  fi
  B=/tmp/fk
  SIDES=${SIDES:-base split new}
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
  for round in 1 2; do
    stamp "round $round"
    for name in $SIDES; do
      case $name in
        base) side base "$round" "FUSEKIT_MOE_GEMM2_K_SPLITS=1" halves ;;
        split) side split "$round" "" halves ;;
        new) side new "$round" "" prepared ;;
      esac
    done
  done
  python3 bench/ab_summary.py "$W" $SIDES
  FUSEKIT_PRINT_CONFIG=1 $B bench moe --cases mixtral-8x7b --tokens 256,1024,2048 --stages 0 --iters 2 \
    --gate-up-order prepared 2>&1 | grep -E "moe sm90|moe forward" | sort -u
  if [ "${TESTS:-1}" != 0 ]; then
    stamp tests
    for t in moe_sm90_grouped_gemm_test moe_sm90_experts_test; do
      echo "== $t"; timeout 200 ./build-device/tests/$t --gtest_brief=1 > "$W/test_$t.txt" 2>&1
      echo "rc=$?"; grep -E "FAILED|Failure" "$W/test_$t.txt" | head -10; tail -3 "$W/test_$t.txt"
    done
    echo "== moe_cuda_test (this session's tests, graph replay, run to run)"
    timeout 200 ./build-device/tests/moe_cuda_test --gtest_brief=1 \
      --gtest_filter='MoeCuda.Gemm2Split*:MoeCuda.GraphReplay*:MoeCuda.RunToRun*:MoeCuda.Prepared*:MoeCuda.Chained*' \
      > "$W/test_moe_cuda_test.txt" 2>&1
    echo "rc=$?"; grep -E "FAILED|Failure" "$W/test_moe_cuda_test.txt" | head -10; tail -3 "$W/test_moe_cuda_test.txt"
  fi
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
