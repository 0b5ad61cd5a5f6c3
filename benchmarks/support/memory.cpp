// SPDX-License-Identifier: MIT
// Benchmark support: counts the bytes the program holds on the heap by
// interposing glibc's allocation functions, so that benchmarks can report the
// peak *extra* memory of an operator (including Eigen's and OpenMP's
// allocations), not an estimate.
#include <malloc.h>

#include <atomic>
#include <cerrno>
#include <cstddef>

#include "bench_support.hpp"

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
extern "C" {
void* __libc_malloc(size_t);
void __libc_free(void*);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
}

namespace {
std::atomic<long long> g_current{0};
std::atomic<long long> g_peak{0};

void account(long long delta) {
  const long long now = g_current.fetch_add(delta, std::memory_order_relaxed) + delta;
  long long p = g_peak.load(std::memory_order_relaxed);
  while (now > p && !g_peak.compare_exchange_weak(p, now, std::memory_order_relaxed)) {
  }
}
void* track(void* p) {
  if (p) account(static_cast<long long>(malloc_usable_size(p)));
  return p;
}
}  // namespace

extern "C" {
void* malloc(size_t n) { return track(__libc_malloc(n)); }
void free(void* p) {
  if (p) account(-static_cast<long long>(malloc_usable_size(p)));
  __libc_free(p);
}
void* calloc(size_t a, size_t b) { return track(__libc_calloc(a, b)); }
void* realloc(void* p, size_t n) {
  const long long before = p ? static_cast<long long>(malloc_usable_size(p)) : 0;
  void* q = __libc_realloc(p, n);
  if (q) {
    account(static_cast<long long>(malloc_usable_size(q)) - before);
  } else if (n == 0 && p) {
    account(-before);
  }
  return q;
}
void* memalign(size_t al, size_t n) { return track(__libc_memalign(al, n)); }
void* aligned_alloc(size_t al, size_t n) { return track(__libc_memalign(al, n)); }
int posix_memalign(void** out, size_t al, size_t n) {
  void* p = __libc_memalign(al, n);
  if (!p) return ENOMEM;
  *out = track(p);
  return 0;
}
}

namespace effattn_bench {
bool memory_tracking() { return true; }
void reset_peak() { g_peak.store(g_current.load()); }
long long peak_bytes() { return g_peak.load() - g_current.load(); }
long long current_bytes() { return g_current.load(); }
}  // namespace effattn_bench
#else
namespace effattn_bench {
bool memory_tracking() { return false; }
void reset_peak() {}
long long peak_bytes() { return -1; }
long long current_bytes() { return -1; }
}  // namespace effattn_bench
#endif
