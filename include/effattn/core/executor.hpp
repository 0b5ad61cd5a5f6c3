// SPDX-License-Identifier: MIT
// effattn: who runs the parallel loops. Threads belong to the caller.
#pragma once

#include <exception>
#include <functional>
#include <mutex>
#include <optional>

#include "config.hpp"
#include "error.hpp"

#if defined(_OPENMP)
#  include <omp.h>
#endif

EFFATTN_NAMESPACE_BEGIN

/// How a call may use threads. effattn never changes the global OpenMP thread
/// count; it only asks for `num_threads` threads for the one call.
///
/// - `num_threads = 0`: OpenMP's default (omp_get_max_threads()); 1: serial.
/// - `parallel_for`: if set, effattn hands its work items to this hook instead of
///   OpenMP, so a host with its own thread pool drives the kernels. The hook must
///   call `body(begin, end)` for disjoint ranges covering [0, n) (in any order, on
///   any threads) and return when all are done.
///
/// Results never depend on the number of threads or on the hook: every work item
/// is computed the same way wherever it runs (bit-identical output).
/// Inside an enclosing parallel region effattn runs serially.
struct Executor {
  Executor() = default;
  /// At most `threads` threads for a call (0: OpenMP's default).
  explicit Executor(int threads) : num_threads(threads) {}

  int num_threads = 0;
  std::function<void(index_t n, const std::function<void(index_t begin, index_t end)>& body)> parallel_for;
};

namespace detail {

/// Work (multiply-adds, exponentials, copies) below which a step runs on the
/// calling thread. Measured on a 2-core AVX-512 host: a decode step of 1e6
/// multiply-adds (8 heads x 1024 keys x 128) takes 66 us on one thread and
/// 32 us on two, while a fork/join of an OpenMP team (or a hand-off to a host
/// pool) costs a few microseconds on a quiet machine and far more on a busy
/// one, where a barrier waits for a descheduled thread; below ~2e5 (about
/// 13 us of work) threads no longer pay.
constexpr double kSerialWorkBelow = 2e5;

/// The one small-work rule of effattn, used by the attention engine, the
/// dense layers, the normalisations and every method's own loops: the
/// executor for a step of `work` element operations is `ex` itself, or the
/// calling thread alone (Executor(1), no host pool hook) when the step is
/// below kSerialWorkBelow. Results never depend on it: every effattn kernel is
/// bit-identical for any thread count.
inline Executor executor_for(const Executor& ex, double work) {
  // An invalid executor is passed on unchanged, never hidden behind a serial
  // one: it is rejected whatever the size of the step (check_executor).
  if (work < kSerialWorkBelow && ex.num_threads >= 0) return Executor(1);
  return ex;
}

/// The one executor rule, checked by every public entry point before it reads
/// or writes anything: num_threads >= 0 (0 = OpenMP's default).
inline void check_executor(const Executor& ex, const char* op) {
  if (ex.num_threads < 0)
    EFFATTN_THROW(parameter_error(concat(op, ": executor num_threads must be >= 0, got ", ex.num_threads)));
}

inline int resolve_threads(const Executor& ex, index_t work_items) {
  int t = 1;
#if defined(_OPENMP)
  if (omp_in_parallel()) return 1;
  t = ex.num_threads > 0 ? ex.num_threads : omp_get_max_threads();
#else
  (void)ex;
#endif
  if (work_items < t) t = static_cast<int>(work_items > 0 ? work_items : 1);
  return t < 1 ? 1 : t;
}

/// How parallel_items hands out its items.
enum class ItemOrder {
  any,        ///< any order, on any thread (a host pool hook may be used)
  monotonic,  ///< each thread takes items in increasing order, and item k is
              ///< handed out only after every item < k: an item may wait for
              ///< smaller ones (a pipeline) without deadlock. No host hook.
};

/// Runs body(item, scratch) for every item in [0, n). `make_scratch()` is called
/// once per thread (or once per range handed to a user hook). Exceptions thrown
/// by the body are caught on the worker and the first is rethrown here.
///
/// With ItemOrder::monotonic the OpenMP loop is `schedule(monotonic: dynamic, 1)`
/// (OpenMP 4.5; OpenMP 5 makes plain `dynamic` nonmonotonic, and a work-stealing
/// runtime such as LLVM's libomp may then hand item k+1 out before item k), or
/// `schedule(static, 1)` with an older OpenMP, which is also safe: each thread
/// runs its items in increasing order, so the smallest unfinished item never
/// waits for a larger one. A monotonic loop ignores ex.parallel_for (a host
/// pool gives no order guarantee): the caller must use ItemOrder::any there.
template <ItemOrder kOrder = ItemOrder::any, class MakeScratch, class Body>
void parallel_items(const Executor& ex, index_t n, MakeScratch&& make_scratch, Body&& body) {
  if (n <= 0) return;
  check_executor(ex, "Executor");
  if (kOrder == ItemOrder::any && ex.parallel_for) {
    std::exception_ptr err;
    std::mutex mu;
    ex.parallel_for(n, [&](index_t begin, index_t end) {
      try {
        auto scratch = make_scratch();
        for (index_t i = begin; i < end; ++i) body(i, scratch);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!err) err = std::current_exception();
      }
    });
    if (err) std::rethrow_exception(err);
    return;
  }
  const int threads = resolve_threads(ex, n);
  if (threads <= 1) {
    auto scratch = make_scratch();
    for (index_t i = 0; i < n; ++i) body(i, scratch);
    return;
  }
#if defined(_OPENMP)
  std::exception_ptr err;
#  pragma omp parallel num_threads(threads)
  {
    // Every thread must reach the worksharing loop, so a failed scratch
    // allocation only makes this thread skip its items.
    using Scratch = decltype(make_scratch());
    std::optional<Scratch> scratch;
    try {
      scratch.emplace(make_scratch());
    } catch (...) {
#  pragma omp critical(effattn_error)
      if (!err) err = std::current_exception();
    }
    auto run = [&](index_t i) {
      if (!scratch) return;
      try {
        body(i, *scratch);
      } catch (...) {
#  pragma omp critical(effattn_error)
        if (!err) err = std::current_exception();
      }
    };
    if (kOrder == ItemOrder::any) {
#  pragma omp for schedule(dynamic, 1)
      for (index_t i = 0; i < n; ++i) run(i);
    } else {
#  if _OPENMP >= 201511
#    pragma omp for schedule(monotonic : dynamic, 1)
      for (index_t i = 0; i < n; ++i) run(i);
#  else
#    pragma omp for schedule(static, 1)
      for (index_t i = 0; i < n; ++i) run(i);
#  endif
    }
  }
  if (err) std::rethrow_exception(err);
#endif
}

}  // namespace detail
EFFATTN_NAMESPACE_END
