// Instantiation: Hopper BF16 grouped GEMM, tile Pingpong128x128, weights KN (see grouped_gemm_bf16_sm90_kernel.cuh
// for the formula, layouts and limits; gemm_config_sm90.h for the problems this tile serves).
#include "cuda/moe/sm90/grouped_gemm_bf16_sm90_kernel.cuh"

#if FUSEKIT_WITH_CUTLASS
FUSEKIT_SM90_GEMM_INSTANCE(gemm_sm90_pingpong128x128_kn, Pingpong128x128, kKN)
#endif
