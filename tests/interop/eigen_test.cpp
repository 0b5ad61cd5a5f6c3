// SPDX-License-Identifier: MIT
// effattn/interop/eigen.hpp: view() / cview() of Eigen tensors and tensor maps
// in both storage orders (shapes, strides, element addresses, writes), empty
// tensors, as_tensor_map, and attention run on Eigen tensors end to end.
// (Overflowing extents of TensorMaps: tests/nn/layers_regressions_test.cpp.)
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <effattn/effattn.hpp>
#include <effattn/interop/eigen.hpp>
#include <type_traits>
#include <vector>

#include "support/testing.hpp"

using namespace effattn;

namespace {

/// Every element of the view is the tensor's own element (same address),
/// read through Eigen's operator(); rank 3.
template <class V, class T>
void expect_same_elements3(const V& v, T& t) {
  ASSERT_EQ(v.dim(0), t.dimension(0));
  ASSERT_EQ(v.dim(1), t.dimension(1));
  ASSERT_EQ(v.dim(2), t.dimension(2));
  int bad = 0;
  for (index_t a = 0; a < v.dim(0); ++a)
    for (index_t b = 0; b < v.dim(1); ++b)
      for (index_t c = 0; c < v.dim(2); ++c)
        if (&v(a, b, c) != &t(a, b, c)) ++bad;
  EXPECT_EQ(bad, 0) << "elements whose address differs from the tensor's";
}

/// Fills a tensor with distinct values from its logical index, through operator().
template <class T>
void fill_by_index3(T& t) {
  for (Eigen::Index a = 0; a < t.dimension(0); ++a)
    for (Eigen::Index b = 0; b < t.dimension(1); ++b)
      for (Eigen::Index c = 0; c < t.dimension(2); ++c) t(a, b, c) = static_cast<float>(100 * a + 10 * b + c);
}

}  // namespace

TEST(InteropView, RowMajorTensor) {
  Eigen::Tensor<float, 3, Eigen::RowMajor> t(2, 3, 4);
  fill_by_index3(t);
  auto v = view(t);
  static_assert(std::is_same<decltype(v), View<float, 3>>::value, "a writable view of a Tensor");
  EXPECT_EQ(v.data(), t.data());
  EXPECT_EQ(v.shape(), (std::array<index_t, 3>{2, 3, 4}));
  EXPECT_EQ(v.strides(), (std::array<index_t, 3>{12, 4, 1}));
  EXPECT_TRUE(v.is_contiguous());
  expect_same_elements3(v, t);
  EXPECT_EQ(v(1, 2, 3), 123.f);
  v(1, 0, 2) = -5.f;  // writes land in the tensor
  EXPECT_EQ(t(1, 0, 2), -5.f);
}

TEST(InteropView, ColMajorTensor) {
  Eigen::Tensor<float, 3> t(2, 3, 4);  // ColMajor: the first index is the fastest
  fill_by_index3(t);
  auto v = view(t);
  EXPECT_EQ(v.data(), t.data());
  EXPECT_EQ(v.shape(), (std::array<index_t, 3>{2, 3, 4}));
  EXPECT_EQ(v.strides(), (std::array<index_t, 3>{1, 2, 6}));
  EXPECT_FALSE(v.is_contiguous());  // contiguous means packed row-major
  expect_same_elements3(v, t);
  EXPECT_EQ(v(1, 2, 3), 123.f);
  v(0, 2, 1) = -7.f;
  EXPECT_EQ(t(0, 2, 1), -7.f);
}

TEST(InteropView, TensorMapsInBothOrders) {
  std::vector<float> buf(5 * 2 * 3);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);
  Eigen::TensorMap<Eigen::Tensor<float, 3, Eigen::RowMajor>> r(buf.data(), 5, 2, 3);
  Eigen::TensorMap<Eigen::Tensor<float, 3>> c(buf.data(), 5, 2, 3);
  auto vr = view(r), vc = view(c);
  EXPECT_EQ(vr.data(), buf.data());
  EXPECT_EQ(vc.data(), buf.data());
  EXPECT_EQ(vr.strides(), (std::array<index_t, 3>{6, 3, 1}));
  EXPECT_EQ(vc.strides(), (std::array<index_t, 3>{1, 5, 10}));
  expect_same_elements3(vr, r);
  expect_same_elements3(vc, c);
  // The same memory read two ways: element (a, b, c) is buf[6a + 3b + c] or buf[a + 5b + 10c].
  EXPECT_EQ(vr(4, 1, 2), buf[4 * 6 + 1 * 3 + 2]);
  EXPECT_EQ(vc(4, 1, 2), buf[4 + 1 * 5 + 2 * 10]);
  // A map of const data gives a read-only view.
  Eigen::TensorMap<const Eigen::Tensor<float, 3, Eigen::RowMajor>> cr(buf.data(), 5, 2, 3);
  auto vcr = view(cr);
  static_assert(std::is_same<decltype(vcr), View<const float, 3>>::value, "a const map gives a const view");
  EXPECT_EQ(vcr.strides(), vr.strides());
  EXPECT_EQ(&vcr(3, 0, 1), &buf[3 * 6 + 1]);
}

TEST(InteropView, CviewIsReadOnlyAndSharesMemory) {
  Eigen::Tensor<float, 3, Eigen::RowMajor> r(3, 2, 2);
  Eigen::Tensor<float, 3> c(3, 2, 2);
  fill_by_index3(r);
  fill_by_index3(c);
  const auto& rc = r;
  auto vr = cview(rc);
  auto vc = cview(c);
  static_assert(std::is_same<decltype(vr), ConstView<float, 3>>::value, "cview gives a ConstView");
  static_assert(std::is_same<decltype(vc), ConstView<float, 3>>::value, "cview gives a ConstView");
  EXPECT_EQ(vr.strides(), view(r).strides());
  EXPECT_EQ(vc.strides(), view(c).strides());
  expect_same_elements3(vr, r);
  expect_same_elements3(vc, c);
  r(2, 1, 0) = 42.f;  // a view, not a copy
  EXPECT_EQ(vr(2, 1, 0), 42.f);
}

TEST(InteropView, EmptyTensors) {
  // An extent of 0 counts as 1 in the packed strides of either order, as in
  // View's contiguous constructor; the view is empty and valid.
  Eigen::Tensor<float, 3, Eigen::RowMajor> r(2, 0, 3);
  Eigen::Tensor<float, 3> c(2, 0, 3);
  const auto vr = view(r), vc = view(c);
  EXPECT_TRUE(vr.empty());
  EXPECT_TRUE(vc.empty());
  EXPECT_EQ(vr.size(), 0);
  EXPECT_EQ(vr.shape(), (std::array<index_t, 3>{2, 0, 3}));
  EXPECT_EQ(vr.strides(), (std::array<index_t, 3>{3, 3, 1}));
  EXPECT_EQ(vr.strides(), (View<float, 3>(nullptr, {2, 0, 3}).strides()));
  EXPECT_EQ(vc.strides(), (std::array<index_t, 3>{1, 2, 2}));
  EXPECT_NO_THROW(detail::check_view(vr, "test", "vr", true));
  EXPECT_NO_THROW(detail::check_view(vc, "test", "vc", true));
  // An empty map over no memory at all.
  Eigen::TensorMap<Eigen::Tensor<float, 2, Eigen::RowMajor>> m(nullptr, 0, 4);
  EXPECT_TRUE(view(m).empty());
  EXPECT_NO_THROW(detail::check_view(view(m), "test", "m", true));
  // Attention over an empty batch, and over zero keys, on Eigen tensors.
  Eigen::Tensor<float, 4, Eigen::RowMajor> q0(0, 2, 3, 8), o0(0, 2, 3, 8);
  EXPECT_NO_THROW(flash_attention<float>(cview(q0), cview(q0), cview(q0), view(o0)));
  Eigen::Tensor<float, 4, Eigen::RowMajor> q(1, 2, 3, 8), kv(1, 2, 0, 8), o(1, 2, 3, 8);
  q.setRandom();
  o.setConstant(5.f);
  flash_attention<float>(cview(q), cview(kv), cview(kv), view(o));
  for (Eigen::Index i = 0; i < o.size(); ++i) EXPECT_EQ(o.data()[i], 0.f) << "no key: output 0";
}

TEST(InteropAsTensorMap, OfAContiguousView) {
  std::vector<float> buf(2 * 3 * 4);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);
  const auto v = make_view(buf.data(), 2, 3, 4);
  auto m = as_tensor_map(v);
  static_assert(static_cast<int>(decltype(m)::Layout) == Eigen::RowMajor, "as_tensor_map is RowMajor");
  EXPECT_EQ(m.data(), buf.data());
  EXPECT_EQ(m.dimension(0), 2);
  EXPECT_EQ(m.dimension(1), 3);
  EXPECT_EQ(m.dimension(2), 4);
  expect_same_elements3(v, m);
  // Round trip: view(as_tensor_map(v)) is v.
  const auto back = view(m);
  EXPECT_EQ(back.data(), v.data());
  EXPECT_EQ(back.shape(), v.shape());
  EXPECT_EQ(back.strides(), v.strides());
  // Of a read-only view: a map of const elements.
  const ConstView<float, 3> cv = v;
  auto cm = as_tensor_map(cv);
  EXPECT_EQ(&cm(1, 2, 3), &buf[23]);
  // Of a view of an Eigen RowMajor tensor: the same memory again.
  Eigen::Tensor<float, 3, Eigen::RowMajor> t(2, 2, 2);
  auto tm = as_tensor_map(view(t));
  EXPECT_EQ(&tm(1, 1, 0), &t(1, 1, 0));
}

TEST(InteropAsTensorMap, RejectsNonContiguousTakesEmpty) {
  Eigen::Tensor<float, 3> c(2, 3, 4);  // ColMajor: strided as a row-major view
  EXPECT_THROW((void)as_tensor_map(view(c)), shape_error);
  std::vector<float> buf(24);
  const View<float, 2> every_other(buf.data(), {3, 4}, {8, 2});
  EXPECT_THROW((void)as_tensor_map(every_other), shape_error);
  // An empty view maps to an empty tensor, whatever its strides.
  Eigen::Tensor<float, 3> e(2, 0, 4);
  auto m = as_tensor_map(view(e));
  EXPECT_EQ(m.size(), 0);
  EXPECT_EQ(m.dimension(0), 2);
  EXPECT_EQ(m.dimension(1), 0);
}

TEST(InteropAttention, RoundTripThroughAttention) {
  // q RowMajor, k ColMajor, v a TensorMap over a std::vector; out ColMajor,
  // lse RowMajor; GQA and a causal mask. Against the float64 oracle run on
  // packed copies made through Eigen's own operator().
  const int B = 2, H = 4, Hkv = 2, Nq = 37, Nk = 53, D = 16, Dv = 24;
  Eigen::Tensor<float, 4, Eigen::RowMajor> q(B, H, Nq, D);
  Eigen::Tensor<float, 4> k(B, Hkv, Nk, D);
  std::vector<float> vbuf(static_cast<size_t>(B * Hkv * Nk * Dv));
  Eigen::TensorMap<Eigen::Tensor<float, 4, Eigen::RowMajor>> v(vbuf.data(), B, Hkv, Nk, Dv);
  q.setRandom();
  k.setRandom();
  auto vr = testing_util::random_vector(vbuf.size(), 3);
  std::copy(vr.begin(), vr.end(), vbuf.begin());
  Eigen::Tensor<float, 4> out(B, H, Nq, Dv);
  Eigen::Tensor<float, 3, Eigen::RowMajor> lse(B, H, Nq);
  out.setConstant(NAN);
  lse.setConstant(NAN);
  attention<float>(cview(q), cview(k), cview(v), view(out), CausalMask{}, NoScore{}, {}, Executor{2}, view(lse));

  // Packed row-major copies, element by element through operator().
  std::vector<float> qp(static_cast<size_t>(B * H * Nq * D)), kp(static_cast<size_t>(B * Hkv * Nk * D)),
      vp(vbuf.size()), ref(static_cast<size_t>(B * H * Nq * Dv)), lref(static_cast<size_t>(B * H * Nq));
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < Nq; ++i)
        for (int e = 0; e < D; ++e) qp[static_cast<size_t>(((b * H + h) * Nq + i) * D + e)] = q(b, h, i, e);
    for (int h = 0; h < Hkv; ++h)
      for (int j = 0; j < Nk; ++j) {
        for (int e = 0; e < D; ++e) kp[static_cast<size_t>(((b * Hkv + h) * Nk + j) * D + e)] = k(b, h, j, e);
        for (int e = 0; e < Dv; ++e) vp[static_cast<size_t>(((b * Hkv + h) * Nk + j) * Dv + e)] = v(b, h, j, e);
      }
  }
  attention_reference<float>(make_view<const float>(qp.data(), B, H, Nq, D),
                             make_view<const float>(kp.data(), B, Hkv, Nk, D),
                             make_view<const float>(vp.data(), B, Hkv, Nk, Dv), make_view(ref.data(), B, H, Nq, Dv),
                             CausalMask{}, NoScore{}, {}, make_view(lref.data(), B, H, Nq));
  int bad = 0, bad_lse = 0;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < Nq; ++i) {
        const double wl = lref[static_cast<size_t>((b * H + h) * Nq + i)];
        if (!(std::fabs(lse(b, h, i) - wl) <= 2e-5 + 2e-5 * std::fabs(wl))) ++bad_lse;
        for (int e = 0; e < Dv; ++e) {
          const double w = ref[static_cast<size_t>(((b * H + h) * Nq + i) * Dv + e)];
          if (!(std::fabs(out(b, h, i, e) - w) <= 2e-5 + 2e-4 * std::fabs(w))) ++bad;
        }
      }
  EXPECT_EQ(bad, 0) << "out (ColMajor) differs from the oracle";
  EXPECT_EQ(bad_lse, 0) << "lse differs from the oracle";

  // The output read back as a TensorMap of a packed copy feeds the next call
  // (as values): Eigen -> effattn -> Eigen -> effattn.
  Eigen::Tensor<float, 4, Eigen::RowMajor> out_r = out.swap_layout().shuffle(std::array<int, 4>{3, 2, 1, 0});
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < Nq; ++i)
        for (int e = 0; e < Dv; ++e) ASSERT_EQ(out_r(b, h, i, e), out(b, h, i, e));
  auto as_v = as_tensor_map(view(out_r));
  Eigen::Tensor<float, 4, Eigen::RowMajor> out2(B, H, Nq, Dv);
  flash_attention<float>(cview(q), cview(q), cview(as_v), view(out2));
  std::vector<float> ref2(static_cast<size_t>(B * H * Nq * Dv));
  attention_reference<float>(make_view<const float>(qp.data(), B, H, Nq, D),
                             make_view<const float>(qp.data(), B, H, Nq, D),
                             make_view<const float>(out_r.data(), B, H, Nq, Dv), make_view(ref2.data(), B, H, Nq, Dv));
  std::vector<float> got2(out2.data(), out2.data() + out2.size());
  EXPECT_TRUE(testing_util::close(got2, ref2, 2e-5, 2e-4)) << "second call on the mapped output";
}
