// Argument checks shared by every entry point. Each returns an error whose text names the
// argument, what was expected and what was given; these texts are asserted by tests in
// tests/api, so change them deliberately.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "fusekit/status.h"
#include "fusekit/tensor.h"

namespace fusekit {

// "bf16, fp16 or fp32"
std::string dtype_list(std::initializer_list<DType> allowed);
// "[T, 5120]" with kAnyDim shown as its name; used in messages.
std::string shape_string(const TensorView& t);

constexpr std::int64_t kAnyDim = -1;

Status expect_present(const TensorView& t, const char* name);
Status expect_dtype(const TensorView& t, const char* name, std::initializer_list<DType> allowed);
Status expect_rank(const TensorView& t, const char* name, int rank);
// Each expected dim is either a size or kAnyDim. `expected_text` is how the message spells
// the expectation, e.g. "[T, (Hq + 2*Hkv)*D] = [T, 5120]".
Status expect_shape(const TensorView& t, const char* name, std::initializer_list<std::int64_t> dims,
                    const std::string& expected_text);
Status expect_contiguous(const TensorView& t, const char* name);
Status expect_contiguous_rows(const TensorView& t, const char* name);
Status expect_aligned(const TensorView& t, const char* name, std::size_t bytes);
// Checks the declared device of the view and, for CUDA views, that the pointer really is
// device-accessible memory on that device (a host pointer labelled cuda is an error).
Status expect_device(const TensorView& t, const char* name, DeviceType device, int device_id);

// Byte range [first, last) that a view can touch.
struct ByteRange {
  std::uintptr_t begin = 0;
  std::uintptr_t end = 0;
};
ByteRange byte_range(const TensorView& t);
bool ranges_overlap(const ByteRange& a, const ByteRange& b);

}  // namespace fusekit
