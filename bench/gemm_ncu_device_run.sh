#!/usr/bin/env bash
# One GPU call (seventh session): the final code's GPU tests, then where the mid-T time goes.
# (1) ncu on the tuner's grouped GEMMs (every tile, GEMM1 and GEMM2 apart) at T = 256 and 1024:
#     duration, DRAM bytes and rate, L2 hit rate, SM throughput, grid; (2) ncu on the whole layer
#     through the CLI (prepared weights) at T = 256 / 1024: every kernel's duration and DRAM bytes.
# ncu serialises the kernels and runs with --clock-control none (METHOD.md). The first run (all
# three shapes) ran past the 600 s limit during Mixtral's layer; CASES picks fewer. Each step packs.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/gemm_ncu_device_run.sh
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" gemm_ncu
M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sector_hit_rate.pct,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size
{
  stamp build
  FUSEKIT_CMAKE_ARGS="-DFUSEKIT_BUILD_PYTHON=ON" bash scripts/device_build.sh 2>&1 | tail -2
  stamp tests
  run_gpu_tests
  for c in ${CASES:-qwen3-30b-a3b qwen3-235b-a22b}; do
    stamp "ncu tuner GEMMs $c"
    timeout 240 ncu --clock-control none --csv --page raw -k regex:device_kernel --metrics "$M" \
      $B tune moe --cases "$c" --tokens "${TUNE_TOKENS:-256,1024}" --iters 2 > "$W/ncu_tune_$c.csv" 2> "$W/ncu_tune_$c.err"
    echo "rc=$?"
    stamp "ncu layer $c"
    timeout 240 ncu --clock-control none --csv --page raw --metrics "$M" \
      $B bench moe --cases "$c" --tokens "${LAYER_TOKENS:-256,1024}" --stages 0 --iters 1 --gate-up-order prepared \
      > "$W/ncu_layer_$c.csv" 2> "$W/ncu_layer_$c.err"
    echo "rc=$?"
    pack
  done
  stamp "layer timings (no profiler)"
  $B bench moe --tokens 256,1024 --stages 0 --gate-up-order prepared > "$W/layer.txt" 2>&1
  grep -E "^(qwen|mixtral)" "$W/layer.txt"
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
