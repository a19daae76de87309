// The per-group arrays of the Hopper grouped GEMM (grouped_gemm_bf16_sm90.h, GroupArrays):
// for entry = s * groups + g (K slice s of group g), its (M, N, K), its A, B and D pointers and
// the CUTLASS strides of each. A slice keeps the operands' leading dimensions and starts
// kk = s * k / k_splits elements into K: A at column kk, B at its column (NK) or row (KN) kk; it
// writes D_s = d + s * d_split_stride.
//
// The array element types depend on the weight layout only (never on the tile), so any kernel can
// write them: the GEMM's own setup kernel (grouped_gemm_bf16_sm90_setup.cu), or the MoE's count +
// scan, which knows the offsets first (write_group_arrays). Each tile's instantiation checks at
// compile time that its CUTLASS types are these (grouped_gemm_bf16_sm90_kernel.cuh).
#pragma once

#if FUSEKIT_WITH_CUTLASS

#include <cstdint>
#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/detail/layout.hpp"
#include "cutlass/layout/matrix.h"
#include "cuda/moe/sm90/grouped_gemm_bf16_sm90.h"

namespace fusekit::cuda_moe::sm90::detail {

// kNK weights are [n, k] with k contiguous: CUTLASS's column-major B (K x N). kKN: row-major B.
template <MoeWeightLayout L>
using LayoutBFor =
    std::conditional_t<L == MoeWeightLayout::kNK, cutlass::layout::ColumnMajor, cutlass::layout::RowMajor>;

template <MoeWeightLayout L>
struct GroupArrayTypes {
  using ProblemShapeMNK = cute::Shape<int, int, int>;
  using StrideA = cute::remove_pointer_t<cutlass::detail::TagToStrideA_t<cutlass::layout::RowMajor*>>;
  using StrideB = cute::remove_pointer_t<cutlass::detail::TagToStrideB_t<LayoutBFor<L>*>>;
  using StrideD = cute::remove_pointer_t<cutlass::detail::TagToStrideC_t<cutlass::layout::RowMajor*>>;
};

// A packed 2-D stride has one run-time component, the leading dimension; the other is _1 (and
// the group mode _0). Set whichever is dynamic.
template <class Stride>
__host__ __device__ inline Stride leading_dim_stride(std::int64_t ld) {
  Stride s{};
  if constexpr (cute::is_static<cute::remove_cvref_t<decltype(cute::get<0>(s))>>::value) {
    cute::get<1>(s) = ld;
  } else {
    cute::get<0>(s) = ld;
  }
  return s;
}

template <MoeWeightLayout L>
__device__ inline void write_group_entry_as(const GroupedGemmLaunch& call, int entry, std::int64_t r0, int rows) {
  using T = GroupArrayTypes<L>;
  const GroupedGemmArgs& a = call.args;
  const GroupedGemmDeviceArrays& arr = call.arrays;
  const std::int64_t slice_k = a.k / a.k_splits;
  const std::int64_t s = entry / a.groups;
  const std::int64_t kk = s * slice_k;
  const int g = entry % a.groups;
  constexpr bool nk = L == MoeWeightLayout::kNK;
  static_cast<typename T::ProblemShapeMNK*>(arr.problem_shapes)[entry] = {rows, int(a.n), int(slice_k)};
  static_cast<const __nv_bfloat16**>(arr.ptr_a)[entry] = a.a + r0 * a.k + kk;
  static_cast<const __nv_bfloat16**>(arr.ptr_b)[entry] = a.b + std::int64_t(g) * a.n * a.k + (nk ? kk : kk * a.n);
  const std::int64_t d_cols = a.epilogue == GemmEpilogue::kSwiglu ? a.n / 2 : a.n;
  static_cast<__nv_bfloat16**>(arr.ptr_d)[entry] = a.d + s * a.d_split_stride + r0 * d_cols;
  static_cast<typename T::StrideA*>(arr.stride_a)[entry] = leading_dim_stride<typename T::StrideA>(a.k);
  static_cast<typename T::StrideB*>(arr.stride_b)[entry] = leading_dim_stride<typename T::StrideB>(nk ? a.k : a.n);
  static_cast<typename T::StrideD*>(arr.stride_d)[entry] = leading_dim_stride<typename T::StrideD>(d_cols);
}

// Entry `entry` of `call`, whose group starts at row r0 and has `rows` rows.
__device__ inline void write_group_entry(const GroupedGemmLaunch& call, int entry, std::int64_t r0, int rows) {
  if (call.args.layout == MoeWeightLayout::kNK) {
    write_group_entry_as<MoeWeightLayout::kNK>(call, entry, r0, rows);
  } else {
    write_group_entry_as<MoeWeightLayout::kKN>(call, entry, r0, rows);
  }
}

// Entry `entry` of `call`, its group's first row and rows read from offsets [groups + 1] and rows
// [groups] (null: the offsets' differences): the call's own group_offsets / group_rows, or the
// values they will hold, wherever the writing kernel has them.
__device__ inline void write_group_entry_from(const GroupedGemmLaunch& call, int entry, const std::int32_t* offsets,
                                              const std::int32_t* rows) {
  const int g = entry % call.args.groups;
  const std::int64_t r0 = offsets[g];
  write_group_entry(call, entry, r0, rows != nullptr ? rows[g] : int(offsets[g + 1] - r0));
}

}  // namespace fusekit::cuda_moe::sm90::detail

namespace fusekit::cuda_moe::sm90 {

// Every entry of every call in `to_write`, shared by `threads` threads of one CTA (this one is
// `thread`). offsets [groups + 1] and rows [groups] (null: the offsets' differences) are the
// values each call's group_offsets and group_rows hold once the writing kernel is done, read here
// from wherever the kernel has them (shared memory in the count + scan).
__device__ inline void write_group_arrays(const GroupArraysToWrite& to_write, const std::int32_t* offsets,
                                          const std::int32_t* rows, int thread, int threads) {
  for (int c = 0; c < to_write.count; ++c) {
    const detail::GroupedGemmLaunch& call = to_write.calls[c];
    const int groups = call.args.groups;
    for (int entry = thread; entry < groups * call.args.k_splits; entry += threads) {
      detail::write_group_entry_from(call, entry, offsets, rows);
    }
  }
}

}  // namespace fusekit::cuda_moe::sm90

#endif  // FUSEKIT_WITH_CUTLASS
