// FUSEKIT_PRINT_CONFIG=1 (read once per process): every distinct choice line the `cuda` MoE
// backend makes (forward path, Hopper GEMM tiles) is printed once to stderr as
// "[fusekit] <line>", so an engine can see what runs for its shapes without a profiler.
#pragma once

#include <string>

namespace fusekit::cuda_moe {

bool print_config_enabled();
// Prints `line` the first time it is seen (thread-safe); nothing unless enabled.
void print_config_once(const std::string& line);

}  // namespace fusekit::cuda_moe
