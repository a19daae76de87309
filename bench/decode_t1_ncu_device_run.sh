#!/usr/bin/env bash
# One GPU call: Nsight Compute on the T=1 decode kernels of Qwen3-30B-A3B (route, decode gemm1,
# decode gemm2), one launch of each after warm-up: speed of light, memory workload, warp
# stalls, occupancy. ncu serialises the kernels, so the chain's overlap is not in these
# numbers; each kernel's own DRAM rate and stall mix are.
#   bash scripts/device_carry.sh here; on the device (carry [".carry"]): bash bench/decode_t1_ncu_device_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/decode_ncu_out}
mkdir -p "$OUT"
B=./build-device/fusekit
{
  bash scripts/device_build.sh 2>&1 | tail -1
  timeout 300 ncu -k regex:"decode_gemm|route_softmax" --launch-skip 6 --launch-count 3 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
    --section LaunchStats --section SchedulerStats \
    $B bench moe --cases qwen3-30b-a3b --tokens 1 --stages 0 --iters 2 > "$OUT/ncu_t1_qwen30b.txt" 2>&1
  echo "ncu rc=$?"
  grep -E "decode_gemm|route_softmax|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Warp Cycles Per Issued|Stall|L2 Hit|L1/TEX Hit|Registers Per|Block Limit|Waves Per SM|Issued Warp|No Eligible|Active Warps" "$OUT/ncu_t1_qwen30b.txt" | head -90
} 2>&1 | tee "$OUT/ncu_log.txt"
