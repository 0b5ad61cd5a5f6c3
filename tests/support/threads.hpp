// SPDX-License-Identifier: MIT
// Test support: does a call start threads? The threads of the process are
// counted (Linux: the entries of /proc/self/task) before and after the call,
// in a death-test child, so that threads earlier tests left behind (OpenMP
// keeps its team alive) never count. Use as
//
//   testing_util::threadsafe_death_tests();
//   EXPECT_EXIT(testing_util::report_thread_growth(f), ::testing::ExitedWithCode(0), "threads: same");
//
// The child asks OpenMP for 2 threads by default (omp_set_num_threads(2)), so
// a call that uses OpenMP's default, or Eigen's own OpenMP threading, grows
// the count even on a one-core machine.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#if defined(_OPENMP)
#  include <omp.h>
#endif

namespace testing_util {

/// The number of threads of this process, or -1 where /proc/self/task cannot be read.
inline int process_threads() {
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/self/task", ec);
  if (ec) return -1;
  int n = 0;
  for (const std::filesystem::directory_iterator end; it != end; it.increment(ec)) {
    if (ec) return -1;
    ++n;
  }
  return n;
}

/// Death tests re-execute the test binary (a fresh process: no OpenMP team
/// from an earlier test, and no fork of a multithreaded process).
inline void threadsafe_death_tests() {
#if defined(GTEST_FLAG_SET)
  GTEST_FLAG_SET(death_test_style, "threadsafe");
#else
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
#endif
}

/// In a death-test child: sets OpenMP's default to 2 threads, runs f and
/// writes "threads: same (a -> b)" or "threads: grew (a -> b)" to stderr,
/// then exits with status 0.
template <class F>
[[noreturn]] void report_thread_growth(F&& f) {
#if defined(_OPENMP)
  omp_set_num_threads(2);
#endif
  const int before = process_threads();
  f();
  const int after = process_threads();
  std::fprintf(stderr, "threads: %s (%d -> %d)\n", after > before ? "grew" : "same", before, after);
  std::fflush(stderr);
  std::_Exit(0);
}

}  // namespace testing_util

#include <algorithm>
#include <functional>
#include <thread>
#include <vector>

#include <effattn/core/executor.hpp>

namespace testing_util {

/// A toy host pool for Executor::parallel_for: each call runs `threads`
/// std::threads over contiguous ranges and joins them. `calls`, when given,
/// counts the calls (so a test can check the pool actually got the work).
inline effattn::Executor pool_executor(int threads = 3, int* calls = nullptr) {
  effattn::Executor pool;
  pool.parallel_for = [threads, calls](effattn::index_t n,
                                       const std::function<void(effattn::index_t, effattn::index_t)>& body) {
    if (calls) ++*calls;
    std::vector<std::thread> ts;
    const effattn::index_t chunk = (n + threads - 1) / threads;
    for (effattn::index_t b = 0; b < n; b += chunk) ts.emplace_back(body, b, std::min(n, b + chunk));
    for (auto& t : ts) t.join();
  };
  return pool;
}

}  // namespace testing_util
