// SPDX-License-Identifier: MIT
// Test support for the STAR LIV operators: float64 helpers for the reference
// implementations (tests/star/liv_reference.hpp) and the checks every operator
// passes (forward against its reference, chained steps and split prefills
// against the forward, bit-identical for Executor(1) and Executor(2)).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include <effattn/star/liv.hpp>

#include "support/nn_testing.hpp"
#include "support/testing.hpp"
#include "support/threads.hpp"

namespace star_testing {

using effattn::index_t;
using effattn::star::Matrix;

/// A row-major float64 matrix for the references.
struct DMat {
  index_t rows = 0, cols = 0;
  std::vector<double> v;
  DMat() = default;
  DMat(index_t r, index_t c) : rows(r), cols(c), v(static_cast<size_t>(r * c), 0.0) {}
  double& operator()(index_t r, index_t c) { return v[static_cast<size_t>(r * cols + c)]; }
  double operator()(index_t r, index_t c) const { return v[static_cast<size_t>(r * cols + c)]; }
};

inline DMat to_d(const Matrix& m) {
  DMat d(m.rows(), m.cols());
  for (index_t r = 0; r < m.rows(); ++r)
    for (index_t c = 0; c < m.cols(); ++c) d(r, c) = m(r, c);
  return d;
}

/// y = x W^T + b in float64 (W [out, in] float, b [out] or empty).
inline DMat linear_d(const effattn::nn::Linear& l, const DMat& x) {
  DMat y(x.rows, l.weight.rows());
  for (index_t r = 0; r < x.rows; ++r)
    for (index_t o = 0; o < l.weight.rows(); ++o) {
      double s = l.bias.size() ? double(l.bias[o]) : 0.0;
      for (index_t i = 0; i < x.cols; ++i) s += double(l.weight(o, i)) * x(r, i);
      y(r, o) = s;
    }
  return y;
}

inline double silu_d(double x) { return x / (1.0 + std::exp(-x)); }
inline double softplus_d(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

/// max |got - want| <= atol + rtol * max |want| (a scale-aware bound: the
/// float operators sum long dot products).
inline ::testing::AssertionResult near(const Matrix& got, const DMat& want, double atol, double rtol) {
  if (got.rows() != want.rows || got.cols() != want.cols)
    return ::testing::AssertionFailure() << "shape [" << got.rows() << "," << got.cols() << "] != [" << want.rows
                                         << "," << want.cols << "]";
  double scale = 0, err = 0;
  index_t at = -1;
  for (index_t r = 0; r < want.rows; ++r)
    for (index_t c = 0; c < want.cols; ++c) {
      scale = std::fmax(scale, std::fabs(want(r, c)));
      const double e = std::fabs(double(got(r, c)) - want(r, c));
      if (!(e <= err)) {
        err = e;
        at = r * want.cols + c;
      }
    }
  if (err <= atol + rtol * scale) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max error " << err << " at flat index " << at << " > " << atol << " + "
                                       << rtol << " * " << scale;
}

inline ::testing::AssertionResult near_f(const Matrix& got, const Matrix& want, double atol, double rtol) {
  return near(got, to_d(want), atol, rtol);
}

/// Chains step over x's rows from a fresh state.
template <class Op>
Matrix chain_steps(const Op& op, const Matrix& x, const effattn::Executor& ex = {}) {
  auto s = op.make_state(x.rows());
  Matrix y(x.rows(), x.cols()), row, out;
  for (index_t t = 0; t < x.rows(); ++t) {
    row = x.row(t);
    op.step(row, s, out, ex);
    y.row(t) = out.row(0);
  }
  EXPECT_EQ(s.length, x.rows());
  return y;
}

/// Prefills x in two parts [0, cut) and [cut, N) through one state.
template <class Op>
Matrix split_prefill(const Op& op, const Matrix& x, index_t cut, const effattn::Executor& ex = {}) {
  auto s = op.make_state();
  Matrix a = x.topRows(cut), b = x.bottomRows(x.rows() - cut), ya, yb;
  op.prefill(a, s, ya, ex);
  op.prefill(b, s, yb, ex);
  EXPECT_EQ(s.length, x.rows());
  Matrix y(x.rows(), x.cols());
  y.topRows(cut) = ya;
  y.bottomRows(x.rows() - cut) = yb;
  return y;
}

/// The checks every operator passes on one shape: forward against the float64
/// reference `ref(op, x)`, chained steps and a split prefill against forward.
template <class Op, class Ref>
void check_operator(const Op& op, index_t N, unsigned seed, Ref&& ref, double tol, const std::string& what) {
  SCOPED_TRACE(what + " N=" + std::to_string(N));
  {
    // An empty sequence: y [0, C], the state unchanged.
    Matrix e(0, op.width()), ye;
    op.forward(e, ye);
    EXPECT_EQ(ye.rows(), 0);
    EXPECT_EQ(ye.cols(), op.width());
    auto s = op.make_state();
    op.prefill(e, s, ye);
    EXPECT_EQ(s.length, 0);
  }
  const Matrix x = testing_util::random_matrix(N, op.width(), seed);
  Matrix y;
  op.forward(x, y);
  ASSERT_EQ(y.rows(), N);
  ASSERT_EQ(y.cols(), op.width());
  EXPECT_TRUE(near(y, ref(op, x), tol, tol)) << "forward vs float64 reference";
  EXPECT_TRUE(near_f(chain_steps(op, x), y, 1e-5, 1e-5)) << "chained steps vs forward";
  if (N > 1) {
    EXPECT_TRUE(near_f(split_prefill(op, x, N / 3 + 1, effattn::Executor(1)), y, 1e-5, 1e-5))
        << "split prefill vs forward";
  }
}

/// forward and step are bit-identical for Executor(1), Executor(2) and a host
/// pool hook (which must get work: the size is above the small-work cut-off).
template <class Op>
void check_bit_identical(const Op& op, index_t N, unsigned seed) {
  const Matrix x = testing_util::random_matrix(N, op.width(), seed);
  Matrix y1, y2, y3;
  op.forward(x, y1, effattn::Executor(1));
  op.forward(x, y2, effattn::Executor(2));
  EXPECT_TRUE(testing_util::same(y1, y2)) << "forward, Executor(1) vs Executor(2)";
  int calls = 0;
  op.forward(x, y3, testing_util::pool_executor(3, &calls));
  EXPECT_TRUE(testing_util::same(y1, y3)) << "forward, Executor(1) vs a host pool";
  EXPECT_GT(calls, 0) << "the host pool got no work";
  auto s1 = op.make_state(), s2 = op.make_state();
  Matrix p1, p2, r1, r2;
  op.prefill(x, s1, p1, effattn::Executor(1));
  op.prefill(x, s2, p2, effattn::Executor(2));
  EXPECT_TRUE(testing_util::same(p1, y1)) << "prefill vs forward";
  EXPECT_TRUE(testing_util::same(p2, y1)) << "prefill vs forward";
  const Matrix x1 = testing_util::random_matrix(1, op.width(), seed + 1);
  op.step(x1, s1, r1, effattn::Executor(1));
  op.step(x1, s2, r2, effattn::Executor(2));
  EXPECT_TRUE(testing_util::same(r1, r2)) << "step, Executor(1) vs Executor(2)";
}

/// The input checks every operator makes.
template <class Op>
void check_errors(const Op& op, const std::string& name) {
  const index_t C = op.width();
  Matrix bad = testing_util::random_matrix(3, C + 1, 1), y;
  testing_util::expect_throw_with<effattn::shape_error>([&] { op.forward(bad, y); },
                                                        name + "::forward: x must be [N,C]=[3," + std::to_string(C));
  Matrix x = testing_util::random_matrix(2, C, 2);
  auto s = op.make_state();
  testing_util::expect_throw_with<effattn::shape_error>([&] { op.step(x, s, y); },
                                                        name + "::step: x must be one token [1,C]");
  testing_util::expect_throw_with<effattn::shape_error>([&] { op.forward(x, x); }, "y must not be x");
  testing_util::expect_throw_with<effattn::parameter_error>([&] { op.forward(x, y, effattn::Executor(-1)); },
                                                            "num_threads must be >= 0");
  EXPECT_EQ(s.length, 0);
  testing_util::expect_throw_with<effattn::parameter_error>([&] { (void)op.cache_bytes(-1); },
                                                            "context must be >= 0");
}

}  // namespace star_testing
