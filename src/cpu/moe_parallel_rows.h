// Runs fn(row) for rows [0, rows) on a few host threads when the work is large enough to pay
// for them (the oracle on full-size layers in `fusekit verify moe`), else inline. Rows are
// independent and each is computed the same way whichever thread takes it, so results do not
// depend on the thread count. Never throws: if threads cannot be started the caller's thread
// does the rest.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace fusekit::cpu {

template <typename Fn>
void parallel_rows(std::int64_t rows, double macs_per_row, Fn fn) {
  constexpr double kMinMacsForThreads = 1 << 24;
  constexpr std::int64_t kMaxThreads = 32;
  std::int64_t threads = std::min<std::int64_t>(static_cast<std::int64_t>(std::thread::hardware_concurrency()), kMaxThreads);
  threads = std::min(threads, rows);
  if (threads <= 1 || static_cast<double>(rows) * macs_per_row < kMinMacsForThreads) {
    for (std::int64_t r = 0; r < rows; ++r) fn(r);
    return;
  }
  std::atomic<std::int64_t> next{0};
  auto worker = [&]() {
    for (std::int64_t r = next.fetch_add(1); r < rows; r = next.fetch_add(1)) fn(r);
  };
  std::vector<std::thread> pool;
  try {
    pool.reserve(static_cast<std::size_t>(threads - 1));
    for (std::int64_t i = 0; i + 1 < threads; ++i) pool.emplace_back(worker);
  } catch (...) {
    // Fewer helpers (or none): the rows still all get done below.
  }
  worker();
  for (std::thread& th : pool) th.join();
}

}  // namespace fusekit::cpu
