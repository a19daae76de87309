// Diagnostic companion of grouped_gemm_probe.cu: one extra pingpong tile configuration of the
// Hopper grouped GEMM (NK weights, plain store), compiled once per -D set so the variants build
// in parallel:  -DPROBE_FN=name -DPROBE_TILE_N=128 -DPROBE_TILE_K=128
#include "cuda/moe/sm90/grouped_gemm_bf16_sm90_kernel.cuh"

namespace fusekit::cuda_moe::sm90::detail {
using ProbeConfig = PingpongTile<64, PROBE_TILE_N, PROBE_TILE_K>;
}  // namespace fusekit::cuda_moe::sm90::detail
FUSEKIT_SM90_GEMM_INSTANCE(PROBE_FN, ProbeConfig, kNK)
