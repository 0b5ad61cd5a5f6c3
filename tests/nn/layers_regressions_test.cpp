// SPDX-License-Identifier: MIT
// Regressions found by fuzzing effattn::nn and interop/eigen.hpp (issue 10):
// the executor checked first and under the layer's own name (on a small and
// a big input), every check before the output is written, empty inputs that
// neither loop over a huge extent nor offset a null pointer, and shape
// products checked for overflow. Plus the layers against obvious float64 loops.
#include <gtest/gtest.h>

#include <cmath>
#include <effattn/interop/eigen.hpp>
#include <effattn/nn/layers.hpp>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "support/nn_testing.hpp"
#include "support/testing.hpp"

namespace nn = effattn::nn;
using effattn::index_t;

namespace {

using testing_util::same;
using testing_util::random_matrix;

using testing_util::expect_throw_with;




nn::Vector random_vec(index_t n, unsigned seed, float mean = 0) {
  const auto v = testing_util::random_vector(static_cast<size_t>(n), seed, 0.1f);
  nn::Vector x(n);
  for (index_t i = 0; i < n; ++i) x[i] = mean + v[static_cast<size_t>(i)];
  return x;
}

// Sizes: empty, small, and big enough that executor_for keeps the executor
// (above its serial cut-off), where the negative count used to surface as a
// generic "Executor: ..." error, or (no rows) not at all.
const index_t kRows[] = {0, 3, 4096};
constexpr index_t kCols = 1024;

TEST(NnFuzzRegressions, LayerNormChecksExecutorFirst) {
  for (index_t R : kRows) {
    const nn::Matrix x = random_matrix(R, kCols, 1);
    nn::Matrix y = nn::Matrix::Constant(2, 2, 5.0f);
    const nn::Matrix y0 = y;
    const nn::Vector w = random_vec(kCols, 2, 1), b = random_vec(kCols, 3);
    expect_throw_with<effattn::parameter_error>([&] { nn::layer_norm(x, w, b, 1e-5f, y, effattn::Executor(-1)); },
                                                "nn::layer_norm: executor num_threads");
    // First: also with a wrong weight shape and a bad eps.
    expect_throw_with<effattn::parameter_error>(
        [&] { nn::layer_norm(x, random_vec(3, 1), b, -1.0f, y, effattn::Executor(-3)); }, "nn::layer_norm: executor");
    EXPECT_TRUE(same(y, y0)) << "rows " << R;
  }
}

TEST(NnFuzzRegressions, GeluChecksExecutorFirst) {
  for (index_t R : kRows) {
    nn::Matrix x = random_matrix(R, kCols, 4);
    const nn::Matrix x0 = x;
    expect_throw_with<effattn::parameter_error>([&] { nn::gelu_erf(x, effattn::Executor(-1)); },
                                                "nn::gelu_erf: executor num_threads");
    EXPECT_TRUE(same(x, x0)) << "rows " << R;
  }
}

TEST(NnFuzzRegressions, MlpChecksExecutorFirst) {
  std::mt19937 rng(5);
  const nn::Mlp mlp = nn::Mlp::random(64, 128, rng);
  for (index_t R : {index_t(0), index_t(3), index_t(1024)}) {
    const nn::Matrix x = random_matrix(R, 64, 6);
    nn::Matrix y = nn::Matrix::Constant(1, 1, 5.0f);
    expect_throw_with<effattn::parameter_error>([&] { mlp.forward(x, y, effattn::Executor(-1)); },
                                                "nn::Mlp::forward: executor num_threads");
    // First: also with a wrong input width.
    expect_throw_with<effattn::parameter_error>([&] { mlp.forward(random_matrix(R, 7, 1), y, effattn::Executor(-1)); },
                                                "nn::Mlp::forward: executor");
    EXPECT_EQ(y.size(), 1);
    EXPECT_EQ(y(0, 0), 5.0f);
  }
}

TEST(NnFuzzRegressions, MlpShapesCheckedBeforeWriting) {
  std::mt19937 rng(7);
  nn::Mlp mlp = nn::Mlp::random(8, 16, rng);
  mlp.fc2 = nn::Linear::random(15, 8, rng);  // fc1 gives 16 outputs
  nn::Matrix y = nn::Matrix::Constant(1, 1, 5.0f);
  expect_throw_with<effattn::shape_error>([&] { mlp.forward(random_matrix(3, 8, 1), y); }, "fc2");
  EXPECT_EQ(y.size(), 1);
  EXPECT_EQ(y(0, 0), 5.0f);
}

TEST(NnFuzzRegressions, LayerNormEmptyRowsDoNotLoop) {
  // 2^40 rows of 0 columns: nothing to normalise. It used to schedule 2^36
  // empty chunks.
  const index_t big = index_t(1) << 40;
  const nn::Matrix x(big, 0);
  nn::Matrix y;
  nn::layer_norm(x, nn::Vector(0), nn::Vector(0), 1e-5f, y, effattn::Executor(2));
  EXPECT_EQ(y.rows(), big);
  EXPECT_EQ(y.cols(), 0);
  nn::Matrix e(0, 8);
  nn::layer_norm(e, random_vec(8, 1), random_vec(8, 2), 1e-5f, e);  // in place, no rows
  EXPECT_EQ(e.rows(), 0);
}

TEST(NnFuzzRegressions, LinearOutputSizeOverflowThrows) {
  // x [2^62, 0] is a valid empty input; y [2^62, 4] overflows: shape_error,
  // not Eigen's bad_alloc.
  nn::Linear l;
  l.weight.resize(4, 0);
  const nn::Matrix x(index_t(1) << 62, 0);
  nn::Matrix y = nn::Matrix::Constant(1, 1, 5.0f);
  // Linear::forward is nn::linear, which names itself.
  expect_throw_with<effattn::shape_error>([&] { l.forward(x, y); }, "nn::linear: y size rows * out");
  EXPECT_EQ(y(0, 0), 5.0f);
  std::mt19937 rng(1);
  expect_throw_with<effattn::shape_error>([&] { nn::Linear::random(index_t(1) << 32, index_t(1) << 32, rng); },
                                          "in * out");
  nn::Matrix m;
  expect_throw_with<effattn::shape_error>([&] { nn::merge_heads(nullptr, index_t(1) << 32, index_t(1) << 32, 4, m); },
                                          "N * H * hd");
  std::vector<float> none;
  nn::merge_heads(none.data(), 2, 0, 4, m);  // empty source, null pointer
  EXPECT_EQ(m.rows(), 0);
  EXPECT_EQ(m.cols(), 8);
}

TEST(NnFuzzRegressions, LayersMatchFloat64Loops) {
  std::mt19937 rng(9);
  const index_t R = 37, in = 19, out = 23;
  const nn::Linear l = nn::Linear::random(in, out, rng);
  for (index_t rows : {index_t(0), index_t(1), index_t(4), R}) {
    const nn::Matrix x = random_matrix(rows, in, 10 + static_cast<unsigned>(rows));
    nn::Matrix y;
    l.forward(x, y);
    ASSERT_EQ(y.rows(), rows);
    for (index_t r = 0; r < rows; ++r)
      for (index_t o = 0; o < out; ++o) {
        double s = l.bias[o];
        for (index_t i = 0; i < in; ++i) s += static_cast<double>(x(r, i)) * l.weight(o, i);
        EXPECT_NEAR(y(r, o), s, 1e-5 + 1e-5 * std::fabs(s));
      }
  }
  const nn::Matrix x = random_matrix(R, in, 11);
  const nn::Vector w = random_vec(in, 12, 1), b = random_vec(in, 13);
  nn::Matrix y1, y2;
  nn::layer_norm(x, w, b, 1e-5f, y1, effattn::Executor(1));
  nn::layer_norm(x, w, b, 1e-5f, y2, effattn::Executor(2));
  EXPECT_TRUE(same(y1, y2));
  for (index_t r = 0; r < R; ++r) {
    double mean = 0, var = 0;
    for (index_t c = 0; c < in; ++c) mean += x(r, c);
    mean /= in;
    for (index_t c = 0; c < in; ++c) var += (x(r, c) - mean) * (x(r, c) - mean);
    var /= in;
    for (index_t c = 0; c < in; ++c) {
      const double want = (x(r, c) - mean) / std::sqrt(var + 1e-5) * w[c] + b[c];
      EXPECT_NEAR(y1(r, c), want, 1e-5 + 1e-5 * std::fabs(want));
    }
  }
}

// ---------------------------------------------------------------- interop

TEST(NnFuzzRegressions, EigenViewOfHugeEmptyTensorMapHasNoOverflow) {
  // A TensorMap may claim any extents; the packed strides of [0, 2^62, 2^62]
  // overflowed (signed overflow). An empty tensor addresses nothing: it is a
  // valid empty view.
  const index_t big = index_t(1) << 62;
  Eigen::TensorMap<Eigen::Tensor<float, 3, Eigen::RowMajor>> t(nullptr, 0, big, big);
  const auto v = effattn::view(t);
  EXPECT_TRUE(v.empty());
  EXPECT_NO_THROW(effattn::detail::check_view(v, "test", "v", true));
  Eigen::TensorMap<Eigen::Tensor<float, 3, Eigen::ColMajor>> c(nullptr, big, big, 0);
  EXPECT_TRUE(effattn::view(c).empty());
  // A non-empty one that overflows is a shape_error.
  float one = 0;
  Eigen::TensorMap<Eigen::Tensor<float, 3, Eigen::RowMajor>> bad(&one, 2, big, big);
  expect_throw_with<effattn::shape_error>([&] { (void)effattn::view(bad); }, "effattn::view");
  // Packed strides of an ordinary tensor, either order (0 extents count as 1).
  Eigen::Tensor<float, 3, Eigen::RowMajor> r(2, 0, 3);
  EXPECT_EQ(effattn::view(r).strides(), (std::array<index_t, 3>{3, 3, 1}));
  Eigen::Tensor<float, 3, Eigen::ColMajor> cm(2, 3, 4);
  EXPECT_EQ(effattn::view(cm).strides(), (std::array<index_t, 3>{1, 2, 6}));
}

TEST(NnFuzzRegressions, AsTensorMapChecksTheViewAndTakesEmptyViews) {
  const index_t big = index_t(1) << 62;
  // Empty, null data, strides that a contiguity test would overflow on.
  const effattn::View<float, 3> e(nullptr, {0, big, big}, {0, 0, 0});
  auto m = effattn::as_tensor_map(e);
  EXPECT_EQ(m.size(), 0);
  // Null data with elements, and a negative extent: shape_error, not a map.
  expect_throw_with<effattn::shape_error>([] { (void)effattn::as_tensor_map(effattn::View<float, 2>(nullptr, {2, 3})); },
                                          "null pointer");
  float x[6] = {};
  expect_throw_with<effattn::shape_error>(
      [&] { (void)effattn::as_tensor_map(effattn::View<float, 2>(x, {-1, 3}, {3, 1})); }, "negative extent");
  expect_throw_with<effattn::shape_error>(
      [&] { (void)effattn::as_tensor_map(effattn::View<float, 2>(x, {3, 2}, {1, 3})); }, "contiguous");
  auto ok = effattn::as_tensor_map(effattn::make_view(x, 2, 3));
  EXPECT_EQ(ok.dimension(1), 3);
}

}  // namespace
