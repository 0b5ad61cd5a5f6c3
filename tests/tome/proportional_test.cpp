// SPDX-License-Identifier: MIT
// tome::proportional_attention in float and double against the float64
// oracle (attention_reference with log(size) as a functor score), its
// optional log-sum-exp (attention's lse with KeyBiasScore{log size}, bit for
// bit in float), masks, absent sizes, and bad input (throws, writes nothing).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <effattn/tome/tome.hpp>
#include <random>
#include <vector>

#include "support/testing.hpp"

namespace tome = effattn::tome;
using effattn::index_t;
using effattn::make_view;

namespace {

struct Shape {
  index_t B, H, Hkv, Nq, Nk, D, Dv;
};

template <class T>
struct Data {
  Shape s;
  std::vector<T> q, k, v, size;
  explicit Data(const Shape& sh, unsigned seed) : s(sh) {
    auto cast = [](const std::vector<float>& x) { return std::vector<T>(x.begin(), x.end()); };
    q = cast(testing_util::random_vector(static_cast<size_t>(s.B * s.H * s.Nq * s.D), seed));
    k = cast(testing_util::random_vector(static_cast<size_t>(s.B * s.Hkv * s.Nk * s.D), seed + 1));
    v = cast(testing_util::random_vector(static_cast<size_t>(s.B * s.Hkv * s.Nk * s.Dv), seed + 2));
    size.resize(static_cast<size_t>(s.B * s.Nk));
    std::mt19937 g(seed + 3);
    for (auto& z : size) z = static_cast<T>(1 + g() % 9);
  }
  effattn::ConstView<T, 4> qv() const { return make_view<const T>(q.data(), s.B, s.H, s.Nq, s.D); }
  effattn::ConstView<T, 4> kv() const { return make_view<const T>(k.data(), s.B, s.Hkv, s.Nk, s.D); }
  effattn::ConstView<T, 4> vv() const { return make_view<const T>(v.data(), s.B, s.Hkv, s.Nk, s.Dv); }
  effattn::ConstView<T, 2> sizev() const { return make_view<const T>(size.data(), s.B, s.Nk); }
  size_t out_size() const { return static_cast<size_t>(s.B * s.H * s.Nq * s.Dv); }
  size_t lse_size() const { return static_cast<size_t>(s.B * s.H * s.Nq); }
  effattn::View<T, 4> out(std::vector<T>& o) const { return make_view(o.data(), s.B, s.H, s.Nq, s.Dv); }
  template <class L>
  effattn::View<L, 3> lse(std::vector<L>& l) const {
    return make_view(l.data(), s.B, s.H, s.Nq);
  }
};

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {{1, 1, 1, 1, 1, 8, 8},     {2, 3, 3, 37, 37, 16, 16}, {1, 4, 2, 113, 113, 64, 32},
                                       {2, 2, 1, 3, 150, 40, 40}, {1, 2, 2, 90, 700, 24, 8}};
  return s;
}

template <class A>
bool bit_equal(const A& a, const A& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0;
}

/// The oracle: attention_reference (float64 inside) with + log(size[b, j]).
template <class T, class Mask>
void oracle(const Data<T>& d, const Mask& mask, std::vector<T>& out, std::vector<T>& lse) {
  auto bias = effattn::make_functor_score(
      [&](index_t b, index_t, index_t, index_t j) { return std::log(static_cast<double>(d.size[b * d.s.Nk + j])); });
  effattn::attention_reference<T>(d.qv(), d.kv(), d.vv(), d.out(out), mask, bias, {}, d.lse(lse));
}

}  // namespace

TEST(TomeProportional, DoubleMatchesOracle) {
  for (const Shape& s : shapes()) {
    SCOPED_TRACE(testing::Message() << "B=" << s.B << " H=" << s.H << " Hkv=" << s.Hkv << " Nq=" << s.Nq << " Nk=" << s.Nk);
    const Data<double> d(s, 11);
    for (int causal = 0; causal < 2; ++causal) {
      std::vector<double> out(d.out_size()), lse(d.lse_size()), ref(d.out_size()), lref(d.lse_size());
      if (causal) {
        tome::proportional_attention(d.qv(), d.kv(), d.vv(), d.out(out), d.sizev(), effattn::CausalMask{}, {},
                                     effattn::Executor(2), d.lse(lse));
        oracle(d, effattn::CausalMask{}, ref, lref);
      } else {
        tome::proportional_attention(d.qv(), d.kv(), d.vv(), d.out(out), d.sizev(), effattn::NoMask{}, {},
                                     effattn::Executor(2), d.lse(lse));
        oracle(d, effattn::NoMask{}, ref, lref);
      }
      testing_util::expect_close(out, ref, 1e-11, 1e-11, "double out");
      testing_util::expect_close(lse, lref, 1e-11, 1e-11, "double lse");
    }
  }
}

TEST(TomeProportional, FloatMatchesOracleWithLse) {
  for (const Shape& s : shapes()) {
    const Data<float> d(s, 21);
    std::vector<float> out(d.out_size()), lse(d.lse_size()), ref(d.out_size()), lref(d.lse_size());
    tome::proportional_attention(d.qv(), d.kv(), d.vv(), d.out(out), d.sizev(), effattn::NoMask{}, {}, {}, d.lse(lse));
    oracle(d, effattn::NoMask{}, ref, lref);
    testing_util::expect_close(out, ref, 2e-5, 2e-5, "float out");
    testing_util::expect_close(lse, lref, 2e-5, 2e-5, "float lse");
  }
}

// The lse is attention's with KeyBiasScore{log size}: the same call on the
// engine, so the same bits (out too), for any thread count and with a mask.
TEST(TomeProportional, LseEqualsAttentionWithKeyBias) {
  for (const Shape& s : shapes()) {
    const Data<float> d(s, 31);
    std::vector<float> lg(d.size.size());
    tome::log_size(d.sizev(), make_view(lg.data(), s.B, s.Nk));
    const effattn::KeyBiasScore bias{make_view<const float>(lg.data(), s.B, s.Nk)};
    effattn::AttentionOptions opt;
    opt.block_k = 32;
    for (int threads : {1, 2}) {
      std::vector<float> out(d.out_size()), lse(d.lse_size()), aout(d.out_size()), alse(d.lse_size());
      tome::proportional_attention(d.qv(), d.kv(), d.vv(), d.out(out), d.sizev(), effattn::CausalMask{}, opt,
                                   effattn::Executor(threads), d.lse(lse));
      effattn::attention<float>(d.qv(), d.kv(), d.vv(), d.out(aout), effattn::CausalMask{}, bias, opt,
                                effattn::Executor(threads), d.lse(alse));
      EXPECT_TRUE(bit_equal(lse, alse)) << "lse, threads " << threads;
      EXPECT_TRUE(bit_equal(out, aout)) << "out, threads " << threads;
    }
    // Sizes absent: plain attention, lse included.
    std::vector<float> out(d.out_size()), lse(d.lse_size()), aout(d.out_size()), alse(d.lse_size());
    tome::proportional_attention(d.qv(), d.kv(), d.vv(), d.out(out), {}, effattn::NoMask{}, {}, {}, d.lse(lse));
    effattn::attention<float>(d.qv(), d.kv(), d.vv(), d.out(aout), effattn::NoMask{}, effattn::NoScore{}, {}, {},
                              d.lse(alse));
    EXPECT_TRUE(bit_equal(lse, alse) && bit_equal(out, aout)) << "absent sizes";
  }
  // In double too (against attention<double> with the same log sizes as a
  // functor: the engine adds them in double either way).
  const Data<double> d(shapes()[2], 41);
  std::vector<double> out(d.out_size()), lse(d.lse_size()), aout(d.out_size()), alse(d.lse_size());
  tome::proportional_attention(d.qv(), d.kv(), d.vv(), d.out(out), d.sizev(), effattn::NoMask{}, {}, {}, d.lse(lse));
  auto bias = effattn::make_functor_score(
      [&](index_t b, index_t, index_t, index_t j) { return std::log(d.size[static_cast<size_t>(b * d.s.Nk + j)]); });
  effattn::attention<double>(d.qv(), d.kv(), d.vv(), d.out(aout), effattn::NoMask{}, bias, {}, {}, d.lse(alse));
  EXPECT_TRUE(bit_equal(lse, alse) && bit_equal(out, aout)) << "double";
}

// A query with no allowed key: out 0 and lse -inf, never NaN.
TEST(TomeProportional, NoAllowedKeyGivesZeroAndMinusInf) {
  const Shape s{1, 2, 2, 4, 0, 8, 8};
  const Data<double> d(s, 51);
  std::vector<double> out(d.out_size(), 7.0), lse(d.lse_size(), 7.0);
  tome::proportional_attention(d.qv(), d.kv(), d.vv(), d.out(out), d.sizev(), effattn::NoMask{}, {}, {}, d.lse(lse));
  for (double x : out) EXPECT_EQ(x, 0.0);
  for (double x : lse) EXPECT_EQ(x, -std::numeric_limits<double>::infinity());
}

// lse is checked as attention checks it, before anything is written; bad
// sizes too, in double as in float.
TEST(TomeProportional, BadLseAndSizesThrowBeforeWriting) {
  const Shape s{2, 2, 1, 20, 20, 8, 8};
  const Data<double> d(s, 61);
  std::vector<double> out(d.out_size(), 7.0), lse(2 * d.lse_size(), 7.0);
  const auto out0 = out, lse0 = lse;
  // Wrong lse shape, with sizes and without.
  testing_util::expect_throw_with<effattn::shape_error>(
      [&] {
        tome::proportional_attention(d.qv(), d.kv(), d.vv(), d.out(out), d.sizev(), effattn::NoMask{}, {}, {},
                                     make_view(lse.data(), s.B, s.H, s.Nq + 2));
      },
      "lse must be [B,H,Nq]");
  testing_util::expect_throw_with<effattn::shape_error>(
      [&] {
        tome::proportional_attention(d.qv(), d.kv(), d.vv(), d.out(out), {}, effattn::NoMask{}, {}, {},
                                     make_view(lse.data(), s.B + 1, s.H, s.Nq));
      },
      "lse must be [B,H,Nq]");
  // lse over out's memory.
  testing_util::expect_throw_with<effattn::shape_error>(
      [&] {
        tome::proportional_attention(d.qv(), d.kv(), d.vv(), d.out(out), d.sizev(), effattn::NoMask{}, {}, {},
                                     make_view(out.data(), s.B, s.H, s.Nq));
      },
      "lse must not share memory");
  // A size of 0 (double): parameter_error naming log_size.
  Data<double> bad = d;
  bad.size[3] = 0.0;
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] {
        tome::proportional_attention(bad.qv(), bad.kv(), bad.vv(), bad.out(out), bad.sizev(), effattn::NoMask{}, {}, {},
                                     d.lse(lse));
      },
      "size must be finite and > 0");
  EXPECT_EQ(out, out0);
  EXPECT_EQ(lse, lse0);
  // A negative thread count, first of all.
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] {
        tome::proportional_attention(d.qv(), d.kv(), d.vv(), d.out(out), d.sizev(), effattn::NoMask{}, {},
                                     effattn::Executor(-1), make_view(lse.data(), s.B, s.H, s.Nq + 2));
      },
      "tome::proportional_attention: executor num_threads");
}

TEST(TomeProportional, LogSizeDouble) {
  const std::vector<double> size = {1.0, 2.0, 0.5, 1e300};
  std::vector<double> lg(4);
  tome::log_size(make_view(size.data(), 2, 2), make_view(lg.data(), 2, 2));
  for (size_t i = 0; i < size.size(); ++i) EXPECT_EQ(lg[i], std::log(size[i]));
  std::vector<double> in_place = size;
  tome::log_size(make_view<const double>(in_place.data(), 2, 2), make_view(in_place.data(), 2, 2));
  EXPECT_EQ(in_place, lg);
}
