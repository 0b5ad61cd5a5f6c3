// SPDX-License-Identifier: MIT
// star::LongConv (GConv-2, Hyena-like gated long convolution with an implicit
// filter): the filter against its float64 formula, the operator against the
// float64 reference on odd shapes on both the direct and the FFT path, chained
// steps (direct, from the cached inputs) and split prefills against the
// forward, the path switch, bit-identical for Executor(1) and Executor(2) on
// both paths, counts and input checks.
#include <gtest/gtest.h>

#include <effattn/star/liv_longconv.hpp>

#include "liv_reference.hpp"
#include "liv_testing.hpp"

namespace star = effattn::star;
using effattn::index_t;
using namespace star_testing;

namespace {

TEST(StarLongConv, FilterMatchesItsFormula) {
  const star::LongConv op({13, 8, 3, 64}, 2);
  Matrix h;
  op.filter(0, 200, h);  // past l_max too
  EXPECT_TRUE(near(h, filter_d(op, 200, 3, 64), 1e-5, 1e-5));
  // Any range of lags has the same bits as the whole table.
  Matrix part;
  op.filter(37, 120, part, effattn::Executor(2));
  EXPECT_TRUE(testing_util::same(part, Matrix(h.middleRows(37, 83))));
}

TEST(StarLongConv, PathSwitch) {
  EXPECT_FALSE(star::LongConv::use_fft(0, 1));
  EXPECT_FALSE(star::LongConv::use_fft(100000, 1));  // a step is always direct
  EXPECT_FALSE(star::LongConv::use_fft(0, 33));
  EXPECT_FALSE(star::LongConv::use_fft(0, 512));  // measured: direct faster below ~768
  EXPECT_TRUE(star::LongConv::use_fft(0, 1024));
  EXPECT_TRUE(star::LongConv::use_fft(0, 4096));
  EXPECT_FALSE(star::LongConv::use_fft(4096, 8));  // a few tokens after a long history: direct
}

TEST(StarLongConv, MatchesReferenceOnOddShapes) {
  for (index_t C : {1, 5, 37}) {
    const star::LongConv op({C, 16, 4, 2048}, 300 + C);
    for (index_t N : {1, 7, 33, 300}) check_operator(op, N, unsigned(N + C), Ref{}, 2e-5, "C=" + std::to_string(C));
  }
}

TEST(StarLongConv, FftPathMatchesReference) {
  const star::LongConv op({7, 16, 4, 2048}, 5);
  index_t N = 1;
  while (!star::LongConv::use_fft(0, N)) N += 64;
  N += 37;  // an odd length past the switch
  ASSERT_TRUE(star::LongConv::use_fft(0, N));
  check_operator(op, N, 3, Ref{}, 5e-5, "FFT path N=" + std::to_string(N));
}

TEST(StarLongConv, ForcedPathsAgree) {
  for (auto path : {star::ConvPath::direct, star::ConvPath::fft}) {
    const star::LongConv op({11, 16, 4, 2048, path}, 6);
    for (index_t N : {1, 2, 7, 33, 300})
      check_operator(op, N, unsigned(N), Ref{}, 5e-5, path == star::ConvPath::fft ? "forced FFT" : "forced direct");
    // A prefill after a history: the FFT convolves the whole history.
    const Matrix x = testing_util::random_matrix(90, 11, 4);
    Matrix y;
    op.forward(x, y);
    EXPECT_TRUE(near_f(split_prefill(op, x, 61), y, 1e-5, 1e-5));
  }
}

TEST(StarLongConv, ShapesAndCounts) {
  const star::LongConv op({37, 16, 4, 2048}, 1);
  EXPECT_EQ(op.param_count(), 3 * 37 * 37 + 37 * 37 + (16 * 9 + 16) + (16 * 16 + 16) + 37 * 16 + 16 + 16 + 37);
  EXPECT_EQ(op.cache_bytes(1000), 1000 * 37 * 4);
  auto s = op.make_state();
  Matrix y;
  op.prefill(testing_util::random_matrix(21, 37, 2), s, y);
  EXPECT_EQ(s.length, 21);
  EXPECT_EQ(s.filter_rows, 21);
  EXPECT_GE(s.inputs.rows(), 21);
}

TEST(StarLongConv, BitIdenticalForAnyThreadCount) {
  const star::LongConv op({64, 16, 4, 2048}, 5);
  check_bit_identical(op, 300, 9);  // direct: 300 * 150 * 64 > kSerialWorkBelow
  index_t N = 1;
  while (!star::LongConv::use_fft(0, N)) N += 64;
  check_bit_identical(op, N, 10);  // FFT
}

TEST(StarLongConv, Errors) {
  const star::LongConv op({12, 8, 2, 128}, 1);
  check_errors(op, "star::LongConv");
  auto other = star::LongConv({13, 8, 2, 128}, 1).make_state();
  Matrix x = testing_util::random_matrix(1, 12, 3), y;
  testing_util::expect_throw_with<effattn::shape_error>([&] { op.step(x, other, y); }, "state inputs must be");
  testing_util::expect_throw_with<effattn::parameter_error>([] { star::LongConv({4, 8, 2, 1}, 1); },
                                                            "l_max must be > 1");
  testing_util::expect_throw_with<effattn::parameter_error>([] { star::LongConv({4, 0, 2, 8}, 1); },
                                                            "filter_hidden must be > 0");
}

}  // namespace
