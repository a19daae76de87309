#!/usr/bin/env bash
# One GPU call: bench/grouped_gemm_probe.cu (grouped vs one group vs cuBLAS vs plain and
# tile-walk reads of the same expert weights, plus extra tiles from grouped_gemm_probe_tile.cu and
# dense non-ptr-array GEMMs from grouped_gemm_probe_dense.cu).
# Builds the library (and the suites in SUITES), then compiles the probe's translation units in
# parallel while the SUITES run on the GPU, then runs the probe.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/grouped_gemm_probe_device_run.sh
# PROBE_ARGS=k-sweep: the same W2 bytes at three depths of K; PROBE_ARGS=large: 256 and 1024 rows
# per expert, grouped vs one group vs dense non-ptr-array CUTLASS vs cuBLAS (see the probe).
# SUITES="moe_sm90_grouped_gemm_test ...": GPU suites to build and run first (default: none).
# PROBE_NCU=1: then every GEMM of the large mode once more under ncu (L2 and tensor-pipe metrics).
set -uo pipefail
source "$(dirname "$0")/device_lib.sh" grouped_gemm_probe
NVCC="nvcc -O3 -DNDEBUG -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -DFUSEKIT_WITH_CUDA=1
  -DFUSEKIT_WITH_CUTLASS=1 -DFUSEKIT_DEPENDENT_LAUNCH=1 -Iinclude -Isrc -isystem /tmp/site/cutlass_library/source/include"
compile_probe() {
  $NVCC -c bench/grouped_gemm_probe.cu -o "$W/main.o" &
  $NVCC -DPROBE_FN=probe_pp64x128x128 -DPROBE_TILE_N=128 -DPROBE_TILE_K=128 -c bench/grouped_gemm_probe_tile.cu -o "$W/t1.o" &
  $NVCC -DPROBE_FN=probe_pp64x64x128 -DPROBE_TILE_N=64 -DPROBE_TILE_K=128 -c bench/grouped_gemm_probe_tile.cu -o "$W/t2.o" &
  SWAP="$NVCC -DPROBE_SWAPPED=1 -DPROBE_TILE_K=128 -c bench/grouped_gemm_probe_tile.cu"
  $SWAP -DPROBE_FN=probe_swap_c128x16 -DPROBE_TILE_M=128 -DPROBE_TILE_N=16 -o "$W/s1.o" &
  $SWAP -DPROBE_FN=probe_swap_c128x32 -DPROBE_TILE_M=128 -DPROBE_TILE_N=32 -o "$W/s2.o" &
  $SWAP -DPROBE_FN=probe_swap_p64x16 -DPROBE_TILE_M=64 -DPROBE_TILE_N=16 -o "$W/s3.o" &
  $SWAP -DPROBE_FN=probe_swap_p64x32 -DPROBE_TILE_M=64 -DPROBE_TILE_N=32 -o "$W/s4.o" &
  DENSE="$NVCC -c bench/grouped_gemm_probe_dense.cu"
  $DENSE -DPROBE_FN=dense_coop128x256_c2x1 -DPROBE_TILE_M=128 -DPROBE_TILE_N=256 -DPROBE_CLUSTER_M=2 -DPROBE_CLUSTER_N=1 -DPROBE_PINGPONG=0 -o "$W/d1.o" &
  $DENSE -DPROBE_FN=dense_coop256x128_c1x2 -DPROBE_TILE_M=256 -DPROBE_TILE_N=128 -DPROBE_CLUSTER_M=1 -DPROBE_CLUSTER_N=2 -DPROBE_PINGPONG=0 -o "$W/d2.o" &
  $DENSE -DPROBE_FN=dense_coop256x128_c1x1 -DPROBE_TILE_M=256 -DPROBE_TILE_N=128 -DPROBE_CLUSTER_M=1 -DPROBE_CLUSTER_N=1 -DPROBE_PINGPONG=0 -o "$W/d3.o" &
  $DENSE -DPROBE_FN=dense_pingpong64x256_c1x1 -DPROBE_TILE_M=64 -DPROBE_TILE_N=256 -DPROBE_CLUSTER_M=1 -DPROBE_CLUSTER_N=1 -DPROBE_PINGPONG=1 -o "$W/d4.o" &
  $DENSE -DPROBE_FN=dense_pingpong128x128_c1x1 -DPROBE_TILE_M=128 -DPROBE_TILE_N=128 -DPROBE_CLUSTER_M=1 -DPROBE_CLUSTER_N=1 -DPROBE_PINGPONG=1 -o "$W/d5.o" &
  $DENSE -DPROBE_FN=dense_pingpong128x128_c2x1 -DPROBE_TILE_M=128 -DPROBE_TILE_N=128 -DPROBE_CLUSTER_M=2 -DPROBE_CLUSTER_N=1 -DPROBE_PINGPONG=1 -o "$W/d6.o" &
  $DENSE -DPROBE_FN=dense_pingpong128x128_c1x2 -DPROBE_TILE_M=128 -DPROBE_TILE_N=128 -DPROBE_CLUSTER_M=1 -DPROBE_CLUSTER_N=2 -DPROBE_PINGPONG=1 -o "$W/d7.o" &
  wait
}
{
  stamp build
  FUSEKIT_BUILD_TARGETS="fusekit ${SUITES:-}" bash scripts/device_build.sh 2>&1 | tail -2
  stamp "probe compile ‖ tests"
  compile_probe > "$W/probe_compile.txt" 2>&1 &
  compiling=$!
  [ -n "${SUITES:-}" ] && run_gpu_tests $SUITES
  wait $compiling
  grep -E "error" "$W/probe_compile.txt" | head -10
  stamp probe
  nvcc -gencode=arch=compute_90a,code=sm_90a "$W"/main.o "$W"/t1.o "$W"/t2.o "$W"/s[1-4].o "$W"/d[1-7].o build-device/src/libfusekit.a -lcublas \
    -o "$W/grouped_gemm_probe" && timeout 240 "$W/grouped_gemm_probe" ${PROBE_ARGS:-}
  if [ "${PROBE_NCU:-0}" = 1 ]; then
    # Every GEMM of the `large` mode once under ncu: is the L2 -> SM traffic the ceiling (PERF_NOTES v14)?
    stamp "ncu large-once"
    # The tensor-pipe and L2-throughput names are the ones hoped for on Hopper; if ncu rejects one,
    # the second run keeps the metrics bench/gemm_ncu_device_run.sh has used (lts__t_bytes added).
    M=gpu__time_duration.sum,lts__t_bytes.sum,lts__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size
    M_BASE=gpu__time_duration.sum,lts__t_bytes.sum,dram__bytes_read.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size
    for metrics in "$M" "$M_BASE"; do
      timeout 300 ncu --clock-control none --csv --page raw -k regex:"device_kernel|gemm|nvjet" --metrics "$metrics" "$W/grouped_gemm_probe" large-once \
        > "$W/ncu_large_once.csv" 2> "$W/ncu_large_once.err"
      rc=$?
      echo "ncu rc=$rc ($(grep -c device_kernel "$W/ncu_large_once.csv") CUTLASS kernels profiled; metrics $metrics)"
      [ $rc -eq 0 ] && break
    done
  fi
  rm -f "$W"/*.o "$W/grouped_gemm_probe"
  stamp done
} 2>&1 | tee "$W/log.txt"
pack
