// qk_rmsnorm instantiations for fp16 storage: head_dim 64, 128, 256 and the generic path.
// One file per dtype so the CUDA build spreads over cores and each unit stays small.
#include "cuda/qk_norm/qk_rmsnorm_kernel.cuh"

namespace fusekit::cuda::qk_norm_detail {
FUSEKIT_QK_RMSNORM_INSTANTIATIONS(, __half)
}  // namespace fusekit::cuda::qk_norm_detail
