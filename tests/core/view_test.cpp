// SPDX-License-Identifier: MIT
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <effattn/effattn.hpp>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#  include <omp.h>
#endif

#include "support/testing.hpp"

using namespace effattn;

TEST(View, ContiguousStridesAndIndexing) {
  std::vector<float> d(2 * 3 * 4);
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<float>(i);
  auto v = make_view(d.data(), 2, 3, 4);
  EXPECT_EQ(v.stride(0), 12);
  EXPECT_EQ(v.stride(1), 4);
  EXPECT_EQ(v.stride(2), 1);
  EXPECT_EQ(v(1, 2, 3), 23.f);
  EXPECT_TRUE(v.is_contiguous());
  ConstView<float, 3> c = v;  // writable converts to read-only
  EXPECT_EQ(c(0, 1, 2), 6.f);
  View<float, 3> t(d.data(), {4, 3, 2}, {1, 4, 12});  // a transposed view
  EXPECT_EQ(t(3, 2, 1), 23.f);
  EXPECT_FALSE(t.is_contiguous());
}

TEST(View, SizeOneDimsAndZeroExtent) {
  std::vector<float> d(5);
  View<float, 3> v(d.data(), {1, 5, 1}, {999, 1, 777});  // strides of size-1 dims do not matter
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_NO_THROW(detail::check_view(v, "op", "v", true));
  View<float, 2> e(nullptr, {0, 3});
  EXPECT_TRUE(e.empty());
  EXPECT_NO_THROW(detail::check_view(e, "op", "e", true));  // empty views may be null
}

TEST(View, OverflowIsRejected) {
  float x = 0;
  View<const float, 2> v(&x, {index_t(1) << 40, index_t(1) << 40});
  EXPECT_THROW(detail::check_view(v, "op", "v", false), shape_error);
}

namespace {

/// The oracle: softmax(q k^T / sqrt(D)) v in double, by obvious loops over
/// the Eigen tensors' own operator() (no view, no stride arithmetic).
template <class Q, class K, class V>
std::vector<double> eigen_attention_oracle(const Q& q, const K& k, const V& v) {
  const int B = static_cast<int>(q.dimension(0)), H = static_cast<int>(q.dimension(1));
  const int Nq = static_cast<int>(q.dimension(2)), D = static_cast<int>(q.dimension(3));
  const int Nk = static_cast<int>(k.dimension(2)), Dv = static_cast<int>(v.dimension(3));
  std::vector<double> out(static_cast<size_t>(B * H * Nq * Dv)), s(static_cast<size_t>(Nk));
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < Nq; ++i) {
        double m = -INFINITY, l = 0;
        for (int j = 0; j < Nk; ++j) {
          double x = 0;
          for (int e = 0; e < D; ++e) x += double(q(b, h, i, e)) * double(k(b, h, j, e));
          s[j] = x / std::sqrt(double(D));
          m = std::max(m, s[j]);
        }
        for (int j = 0; j < Nk; ++j) l += std::exp(s[j] - m);
        for (int e = 0; e < Dv; ++e) {
          double o = 0;
          for (int j = 0; j < Nk; ++j) o += std::exp(s[j] - m) / l * double(v(b, h, j, e));
          out[static_cast<size_t>(((b * H + h) * Nq + i) * Dv + e)] = o;
        }
      }
  return out;
}

}  // namespace

TEST(Interop, EigenRowMajorAndColMajor) {
  // q, k, v differ (so a swapped argument shows); each exists in both storage
  // orders with the same logical elements.
  const int B = 2, H = 3, Nq = 5, Nk = 7, D = 8;
  Eigen::Tensor<float, 4, Eigen::RowMajor> qr(B, H, Nq, D), kr(B, H, Nk, D), vr(B, H, Nk, D);
  Eigen::Tensor<float, 4> qc(B, H, Nq, D), kc(B, H, Nk, D), vc(B, H, Nk, D);  // ColMajor
  qr.setRandom();
  kr.setRandom();
  vr.setRandom();
  for (int a = 0; a < B; ++a)
    for (int b = 0; b < H; ++b)
      for (int e = 0; e < D; ++e) {
        for (int n = 0; n < Nq; ++n) qc(a, b, n, e) = qr(a, b, n, e);
        for (int n = 0; n < Nk; ++n) {
          kc(a, b, n, e) = kr(a, b, n, e);
          vc(a, b, n, e) = vr(a, b, n, e);
        }
      }
  Eigen::Tensor<float, 4, Eigen::RowMajor> o1(B, H, Nq, D);
  Eigen::Tensor<float, 4> o2(B, H, Nq, D);
  o1.setConstant(NAN);
  o2.setConstant(NAN);
  flash_attention<float>(cview(qr), cview(kr), cview(vr), view(o1));
  flash_attention<float>(cview(qc), cview(kc), cview(vc), view(o2));  // strided views, same math
  // Both against the oracle computed from the row-major tensors' operator()
  // (the column-major ones hold the same elements), read back through each
  // output tensor's own operator().
  const auto want = eigen_attention_oracle(qr, kr, vr);
  int bad1 = 0, bad2 = 0;
  for (int a = 0; a < B; ++a)
    for (int b = 0; b < H; ++b)
      for (int n = 0; n < Nq; ++n)
        for (int e = 0; e < D; ++e) {
          const double w = want[static_cast<size_t>(((a * H + b) * Nq + n) * D + e)];
          if (!(std::fabs(o1(a, b, n, e) - w) <= 1e-5 + 1e-5 * std::fabs(w))) ++bad1;
          if (!(std::fabs(o2(a, b, n, e) - w) <= 1e-5 + 1e-5 * std::fabs(w))) ++bad2;
        }
  EXPECT_EQ(bad1, 0) << "row-major output differs from the oracle";
  EXPECT_EQ(bad2, 0) << "column-major output differs from the oracle";
  auto m = as_tensor_map(view(o1));
  EXPECT_EQ(m.dimension(2), 5);
  EXPECT_EQ(&m(1, 2, 4, 7), &o1(1, 2, 4, 7));
}

TEST(Executor, SerialInsideParallelRegionAndHook) {
  // Outside any parallel region Executor(2) covers every item once.
  std::vector<int> hits(100, 0);
  Executor ex;
  ex.num_threads = 2;
  detail::parallel_items(ex, 100, [] { return 0; }, [&](index_t i, int&) { hits[i]++; });
  for (int h : hits) EXPECT_EQ(h, 1);

  // A host hook: its ranges run on std::threads it starts, and the library's
  // body runs on those threads, once per range (one scratch per range).
  Executor hook;
  int calls = 0;
  index_t hook_n = -1;
  std::mutex mu;
  std::vector<std::pair<index_t, index_t>> ranges;
  std::set<std::thread::id> pool_threads, body_threads;
  hook.parallel_for = [&](index_t n, const std::function<void(index_t, index_t)>& body) {
    ++calls;
    hook_n = n;
    std::thread a([&] { body(0, n / 2); }), b([&] { body(n / 2, n); });
    {
      std::lock_guard<std::mutex> lock(mu);
      pool_threads.insert(a.get_id());
      pool_threads.insert(b.get_id());
      ranges.emplace_back(0, n / 2);
      ranges.emplace_back(n / 2, n);
    }
    a.join();
    b.join();
  };
  int scratches = 0;
  detail::parallel_items(
      hook, 100,
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return ++scratches;
      },
      [&](index_t i, int&) {
        std::lock_guard<std::mutex> lock(mu);
        body_threads.insert(std::this_thread::get_id());
        hits[i]++;
      });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(hook_n, 100);
  EXPECT_EQ(scratches, 2) << "one scratch per range";
  EXPECT_EQ(ranges.size(), 2u);
  EXPECT_EQ(pool_threads.size(), 2u);
  EXPECT_EQ(body_threads, pool_threads) << "the body must run on the hook's threads";
  EXPECT_EQ(body_threads.count(std::this_thread::get_id()), 0u);
  for (int h : hits) EXPECT_EQ(h, 2);

#if !defined(_OPENMP)
  GTEST_SKIP() << "no OpenMP: no enclosing parallel region to test";
#else
  // Inside an enclosing parallel region Executor(2) runs serially: every item
  // on the thread of the team that called it. Nested parallelism is enabled
  // for the test, so a library that did not check would really fork here.
  const int saved_levels = omp_get_max_active_levels();
  omp_set_max_active_levels(2);
  const index_t n = 64;
  struct Seen {
    int team = 0, omp_thread = -1;
    bool in_parallel = false;
    std::thread::id caller;
    std::vector<std::thread::id> item_thread;
    std::vector<int> item_omp, count;
  };
  std::vector<Seen> seen(2);
  for (Seen& s : seen) {
    s.item_thread.resize(static_cast<size_t>(n));
    s.item_omp.assign(static_cast<size_t>(n), -1);
    s.count.assign(static_cast<size_t>(n), 0);
  }
#  pragma omp parallel num_threads(2)
  {
    const int t = omp_get_thread_num();
    Seen& s = seen[static_cast<size_t>(t)];
    s.team = omp_get_num_threads();
    s.omp_thread = t;
    s.in_parallel = omp_in_parallel() != 0;
    s.caller = std::this_thread::get_id();
    detail::parallel_items(Executor(2), n, [] { return 0; }, [&](index_t i, int&) {
      s.item_thread[static_cast<size_t>(i)] = std::this_thread::get_id();
      s.item_omp[static_cast<size_t>(i)] = omp_get_thread_num();
      ++s.count[static_cast<size_t>(i)];  // only this team thread writes s
    });
  }
  omp_set_max_active_levels(saved_levels);
  if (seen[0].team < 2) GTEST_SKIP() << "the OpenMP runtime gave a team of " << seen[0].team << " thread(s)";
  for (int t = 0; t < 2; ++t) {
    const Seen& s = seen[static_cast<size_t>(t)];
    EXPECT_TRUE(s.in_parallel);
    EXPECT_EQ(s.omp_thread, t);
    int not_once = 0, other_thread = 0, other_omp_thread = 0;
    for (index_t i = 0; i < n; ++i) {
      not_once += s.count[static_cast<size_t>(i)] != 1;
      other_thread += s.item_thread[static_cast<size_t>(i)] != s.caller;
      other_omp_thread += s.item_omp[static_cast<size_t>(i)] != t;
    }
    EXPECT_EQ(not_once, 0) << "team thread " << t << ": items not run exactly once";
    EXPECT_EQ(other_thread, 0) << "team thread " << t << ": items run on another thread than the caller";
    EXPECT_EQ(other_omp_thread, 0) << "team thread " << t << ": items run with another omp_get_thread_num()";
  }
  EXPECT_NE(seen[0].caller, seen[1].caller);
#endif
}
