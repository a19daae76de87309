// Diagnostic companion of grouped_gemm_probe.cu: one extra pingpong tile configuration of the
// Hopper grouped GEMM (NK weights, plain store), compiled once per -D set so the variants build
// in parallel:  -DPROBE_FN=name -DPROBE_TILE_N=128 -DPROBE_TILE_K=128
#include "cuda/moe/sm90/grouped_gemm_bf16_sm90_kernel.cuh"

namespace fusekit::cuda_moe::sm90::detail {
using ProbeConfig = TileConfig<cute::Shape<cute::_64, cute::Int<PROBE_TILE_N>, cute::Int<PROBE_TILE_K>>,
                               cute::Shape<cute::_1, cute::_1, cute::_1>,
                               cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpong,
                               cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong>;
}  // namespace fusekit::cuda_moe::sm90::detail
FUSEKIT_SM90_GEMM_INSTANCE(PROBE_FN, ProbeConfig, kNK)
