// A consumer of the installed package: includes only public headers and calls the API.
#include <fusekit/fusekit.h>

#include <cstdio>

int main() {
  fusekit::TensorView t = fusekit::TensorView::contiguous(nullptr, fusekit::DType::kBF16, {0, 8});
  std::printf("fusekit %s: %s, numel %lld\n", fusekit::version(), t.describe().c_str(),
              static_cast<long long>(t.numel()));
  return t.numel() == 0 ? 0 : 1;
}
