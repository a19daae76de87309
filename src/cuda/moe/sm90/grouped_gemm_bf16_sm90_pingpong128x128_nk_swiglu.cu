// Instantiation: Hopper BF16 grouped GEMM1 with SwiGLU in the epilogue, tile Pingpong128x128, weights NK
// (W1 rows interleaved in 8-row blocks; see grouped_gemm_bf16_sm90.h, GemmEpilogue::kSwiglu).
#include "cuda/moe/sm90/grouped_gemm_bf16_sm90_kernel.cuh"

#if FUSEKIT_WITH_CUTLASS
FUSEKIT_SM90_GEMM_SWIGLU_INSTANCE(gemm_sm90_pingpong128x128_nk_swiglu, Pingpong128x128, kNK)
#endif
