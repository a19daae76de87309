// Diagnostic companion of grouped_gemm_probe.cu: one extra tile configuration of the Hopper
// grouped GEMM (NK weights, plain store), compiled once per -D set so the variants build in
// parallel:
//   -DPROBE_FN=name -DPROBE_TILE_N=128 -DPROBE_TILE_K=128                  pingpong 64 x N x K
//   -DPROBE_FN=name -DPROBE_SWAPPED=1 -DPROBE_TILE_M=128 -DPROBE_TILE_N=32 -DPROBE_TILE_K=128
//       the operands swapped (weights as wgmma's M, a group's few rows as its N): per group
//       D^T = W . A^T, M = n, N = the group's rows, K = k; cooperative M x N x K (M = 128) or
//       pingpong (M = 64). D is written transposed ([n, rows] per group): the same bytes.
#include <vector>

#include "cuda/moe/sm90/grouped_gemm_bf16_sm90_kernel.cuh"

#ifndef PROBE_SWAPPED
namespace fusekit::cuda_moe::sm90::detail {
using ProbeConfig = PingpongTile<64, PROBE_TILE_N, PROBE_TILE_K>;
}  // namespace fusekit::cuda_moe::sm90::detail
FUSEKIT_SM90_GEMM_INSTANCE(PROBE_FN, ProbeConfig, kNK)
#else
namespace fusekit::cuda_moe::sm90::detail {
using ProbeConfig = std::conditional_t<PROBE_TILE_M == 64, PingpongTile<64, PROBE_TILE_N, PROBE_TILE_K>,
                                       CooperativeTile<PROBE_TILE_M, PROBE_TILE_N, PROBE_TILE_K, 1>>;

// groups x (n weight rows, m rows each) from w [groups, n, k] and a [groups * m, k]. The arrays
// are written on the first call for a problem and kept (a probe, timed by repeated calls).
Status PROBE_FN(const __nv_bfloat16* w, const __nv_bfloat16* a, __nv_bfloat16* d, int groups, std::int64_t n,
                std::int64_t k, int m, int sm_count, void* workspace, std::size_t workspace_bytes,
                cudaStream_t stream) {
  using T = GroupArrayTypes<MoeWeightLayout::kNK>;
  struct Problem {
    const void *w, *a, *d;
    std::int64_t groups, n, k, m;
    bool operator==(const Problem& o) const {
      return w == o.w && a == o.a && d == o.d && groups == o.groups && n == o.n && k == o.k && m == o.m;
    }
  };
  static GroupedGemmLaunch launch;
  static Problem written{};
  const Problem problem{w, a, d, groups, n, k, m};
  if (!(written == problem)) {
    std::vector<T::ProblemShapeMNK> shapes(groups);
    std::vector<const __nv_bfloat16*> pa(groups), pb(groups);
    std::vector<__nv_bfloat16*> pd(groups);
    std::vector<T::StrideA> sa(groups);
    std::vector<T::StrideB> sb(groups);
    std::vector<T::StrideD> sd(groups);
    for (int g = 0; g < groups; ++g) {
      shapes[g] = {int(n), m, int(k)};
      pa[g] = w + std::int64_t(g) * n * k;
      pb[g] = a + std::int64_t(g) * m * k;
      pd[g] = d + std::int64_t(g) * m * n;
      sa[g] = leading_dim_stride<T::StrideA>(k);
      sb[g] = leading_dim_stride<T::StrideB>(k);
      sd[g] = leading_dim_stride<T::StrideD>(m);
    }
    GroupedGemmDeviceArrays& arr = launch.arrays;
    for (void* p : {arr.problem_shapes, arr.ptr_a, arr.ptr_b, arr.ptr_d, arr.stride_a, arr.stride_b, arr.stride_d}) {
      cudaFree(p);
    }
    auto upload = [](void** dst, const void* src, std::size_t bytes) {
      cudaMalloc(dst, bytes);
      cudaMemcpy(*dst, src, bytes, cudaMemcpyHostToDevice);
    };
    upload(&arr.problem_shapes, shapes.data(), groups * sizeof(shapes[0]));
    upload(&arr.ptr_a, pa.data(), groups * sizeof(pa[0]));
    upload(&arr.ptr_b, pb.data(), groups * sizeof(pb[0]));
    upload(&arr.ptr_d, pd.data(), groups * sizeof(pd[0]));
    upload(&arr.stride_a, sa.data(), groups * sizeof(sa[0]));
    upload(&arr.stride_b, sb.data(), groups * sizeof(sb[0]));
    upload(&arr.stride_d, sd.data(), groups * sizeof(sd[0]));
    launch.args.groups = groups;
    launch.args.k_splits = 1;
    launch.args.n = n;
    launch.args.k = k;
    launch.args.group_arrays = GroupArrays::kPrewritten;
    written = problem;
  }
  launch.arrays.cutlass_workspace = workspace;
  launch.arrays.cutlass_workspace_bytes = workspace_bytes;
  launch.sm_count = sm_count;
  return run_grouped_gemm<ProbeConfig, MoeWeightLayout::kNK>(launch, stream, "probe (swapped)");
}
}  // namespace fusekit::cuda_moe::sm90::detail
#endif
