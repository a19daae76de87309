#include "cuda/moe/print_config.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>

namespace fusekit::cuda_moe {

bool print_config_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("FUSEKIT_PRINT_CONFIG");
    return v != nullptr && v[0] != '\0' && v[0] != '0';
  }();
  return enabled;
}

void print_config_once(const std::string& line) {
  if (!print_config_enabled()) return;
  static std::mutex mu;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mu);
  if (seen.insert(line).second) std::fprintf(stderr, "[fusekit] %s\n", line.c_str());
}

}  // namespace fusekit::cuda_moe
