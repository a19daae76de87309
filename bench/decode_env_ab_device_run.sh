#!/usr/bin/env bash
# One GPU call: an A/B of decode-path variants that one build selects by environment variables
# (VARIANTS="name=VAR=value ..."; the first is the base), the layer bench alternated twice; ncu
# of the decode kernels at T=1 under each variant (kernels serialised, caches flushed); then
# every MoE GPU suite and pytest, and the decode kernel tests again under each variant.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]):
#   VARIANTS=... bash bench/decode_env_ab_device_run.sh      (AB_CASES, AB_TOKENS, SUITES;
#   NCU=0 and PER_VARIANT_TESTS=0 skip those two parts, for a call short of device time)
# Prefill variants take the same script: NCU_CASE, NCU_TOKENS and NCU_KERNELS (an ncu -k regex)
# move the profile, NCU_SECTIONS="SpeedOfLight ..." prints those ncu sections instead of the metrics.
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" decode_env_ab
CASES=${AB_CASES:-qwen3-30b-a3b,qwen3-235b-a22b,mixtral-8x7b}
TOKENS=${AB_TOKENS:-1,2,4,8,64}
# name=VAR=value[,VAR=value...]: commas separate the assignments of one variant
VARIANTS=${VARIANTS:?name the variants, e.g. "base=FUSEKIT_X=0 new="}
{
  stamp "build (everything, with Python)"
  FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" build_cli_to /tmp/fk || exit 1
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
  for round in 1 2; do
    for v in $VARIANTS; do
      name=${v%%=*}; envs=${v#*=}
      stamp "$name round $round ($envs)"
      env ${envs//,/ } timeout 120 /tmp/fk bench moe --cases "$CASES" --tokens "$TOKENS" --stages 0 \
        --gate-up-order prepared --json "$W/moe_ab_${name}_$round.json" > "$W/ab_${name}_$round.txt" 2>&1
      echo "rc=$?"
      pack
    done
  done
  python3 bench/ab_summary.py "$W" $(for v in $VARIANTS; do echo "${v%%=*}"; done)
  for v in $( [ "${NCU:-1}" != 0 ] && echo $VARIANTS ); do
    name=${v%%=*}; envs=${v#*=}
    ncu_case=${NCU_CASE:-qwen3-30b-a3b}; ncu_t=${NCU_TOKENS:-1}
    stamp "ncu $name: $ncu_case T=$ncu_t"
    if [ -n "${NCU_SECTIONS:-}" ]; then
      env ${envs//,/ } timeout 200 ncu --clock-control none -k regex:"${NCU_KERNELS:-decode}" --launch-count 4 \
        $(for x in $NCU_SECTIONS; do echo --section "$x"; done) \
        /tmp/fk bench moe --cases "$ncu_case" --tokens "$ncu_t" --stages 0 --iters 1 --gate-up-order prepared \
        > "$W/ncu_$name.txt" 2>&1
      grep -vE "^==PROF==|^ *-+ *$|^ *$" "$W/ncu_$name.txt" | cut -c1-150 | tail -300
    else
      env ${envs//,/ } timeout 120 ncu --clock-control none -k regex:"${NCU_KERNELS:-decode}" --launch-count 4 \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,lts__t_sector_hit_rate.pct,dram__throughput.avg.pct_of_peak_sustained_elapsed \
        /tmp/fk bench moe --cases "$ncu_case" --tokens "$ncu_t" --stages 0 --iters 1 --gate-up-order prepared 2>&1 \
        | grep -E "^  [a-z_].*\(|gpu__time|dram__|lts__" | sed -e 's/(fusekit::cuda_moe::[A-Za-z]*)//' | tail -16
    fi
    pack
  done
  stamp tests
  run_gpu_tests ${SUITES:-}
  for v in $( [ "${PER_VARIANT_TESTS:-1}" != 0 ] && echo $VARIANTS ); do
    name=${v%%=*}; envs=${v#*=}
    echo "== moe_cuda_kernels_test under $name ($envs)"
    env ${envs//,/ } timeout 200 ./build-device/tests/moe_cuda_kernels_test --gtest_brief=1 > "$W/kernels_$name.txt" 2>&1
    echo "rc=$?"; grep -E "FAILED|Failure" "$W/kernels_$name.txt" | head -5; tail -2 "$W/kernels_$name.txt"
  done
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
