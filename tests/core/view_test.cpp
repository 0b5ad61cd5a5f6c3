// SPDX-License-Identifier: MIT
#include <gtest/gtest.h>

#include <effattn/effattn.hpp>
#include <vector>

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

TEST(Interop, EigenRowMajorAndColMajor) {
  Eigen::Tensor<float, 4, Eigen::RowMajor> r(2, 3, 5, 8);
  Eigen::Tensor<float, 4> c(2, 3, 5, 8);  // ColMajor
  r.setRandom();
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 3; ++b)
      for (int n = 0; n < 5; ++n)
        for (int e = 0; e < 8; ++e) c(a, b, n, e) = r(a, b, n, e);
  Eigen::Tensor<float, 4, Eigen::RowMajor> o1(2, 3, 5, 8);
  Eigen::Tensor<float, 4> o2(2, 3, 5, 8);
  flash_attention<float>(cview(r), cview(r), cview(r), view(o1));
  flash_attention<float>(cview(c), cview(c), cview(c), view(o2));  // strided views, same math
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 3; ++b)
      for (int n = 0; n < 5; ++n)
        for (int e = 0; e < 8; ++e) EXPECT_NEAR(o1(a, b, n, e), o2(a, b, n, e), 1e-5);
  auto m = as_tensor_map(view(o1));
  EXPECT_EQ(m.dimension(2), 5);
  EXPECT_EQ(&m(1, 2, 4, 7), &o1(1, 2, 4, 7));
}

TEST(Executor, SerialInsideParallelRegionAndHook) {
  std::vector<int> hits(100, 0);
  Executor ex;
  ex.num_threads = 2;
  detail::parallel_items(ex, 100, [] { return 0; }, [&](index_t i, int&) { hits[i]++; });
  for (int h : hits) EXPECT_EQ(h, 1);
  Executor hook;
  int calls = 0;
  hook.parallel_for = [&](index_t n, const std::function<void(index_t, index_t)>& body) {
    ++calls;
    body(0, n / 2);
    body(n / 2, n);
  };
  detail::parallel_items(hook, 100, [] { return 0; }, [&](index_t i, int&) { hits[i]++; });
  EXPECT_EQ(calls, 1);
  for (int h : hits) EXPECT_EQ(h, 2);
}
