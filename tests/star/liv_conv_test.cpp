// SPDX-License-Identifier: MIT
// star::ShortConv (GConv-1, LFM2's gated short convolution): against the
// float64 reference on odd shapes and kernels, chained steps and split
// prefills against the forward, the tap order pinned (tap 0 multiplies the
// oldest input, as Hugging Face's Lfm2ShortConv and llama.cpp's ggml_ssm_conv),
// the state holding the last L-1 values of B*x, bit-identical for Executor(1)
// and Executor(2), counts and input checks.
#include <gtest/gtest.h>

#include <effattn/star/liv_conv.hpp>

#include "liv_reference.hpp"
#include "liv_testing.hpp"

namespace star = effattn::star;
using effattn::index_t;
using namespace star_testing;

namespace {

TEST(StarShortConv, MatchesReferenceOnOddShapes) {
  for (index_t C : {1, 5, 37})
    for (index_t L : {1, 3, 4}) {
      const star::ShortConv op({C, L, false}, 100 + C + L);
      for (index_t N : {1, 2, 7, 33, 300})
        check_operator(op, N, unsigned(N * 7 + C), Ref{}, 2e-5, "C=" + std::to_string(C) + " L=" + std::to_string(L));
    }
  const star::ShortConv biased({21, 3, true}, 4);
  for (index_t N : {1, 7, 33}) check_operator(biased, N, unsigned(N), Ref{}, 2e-5, "C=21 L=3 bias");
}

/// in_proj passes x through as u, B = Cg = 1 (biases), out_proj = identity:
/// y_t = sum_k w[k] x_{t-(L-1)+k}. With w = (1, 10, 100) an impulse at t = 0
/// gives y = (100, 10, 1, 0, ...): the current input meets the last tap, the
/// oldest the first.
star::ShortConv pass_through_conv() {
  star::ShortConv op({1, 3, true}, 1);
  op.in_proj.weight << 0, 0, 1;  // rows B, C, x of a [3, 1] weight
  op.in_proj.bias << 1, 1, 0;
  op.out_proj.weight << 1;
  op.out_proj.bias << 0;
  op.conv_weight << 1, 10, 100;
  op.conv_bias << 0;
  return op;
}

TEST(StarShortConv, TapZeroMultipliesTheOldestInput) {
  const auto op = pass_through_conv();
  Matrix x(5, 1), y;
  x << 1, 0, 0, 0, 2;
  op.forward(x, y);
  Matrix want(5, 1);
  want << 100, 10, 1, 0, 200;
  EXPECT_TRUE(testing_util::same(y, want)) << y.transpose();
  EXPECT_TRUE(testing_util::same(chain_steps(op, x), want));
  // The state is the last L-1 = 2 values of B*x, oldest first.
  auto s = op.make_state();
  Matrix x3(3, 1);
  x3 << 1, 2, 3;
  op.prefill(x3, s, y);
  ASSERT_EQ(s.tail.rows(), 2);
  EXPECT_EQ(s.tail(0, 0), 2.0f);
  EXPECT_EQ(s.tail(1, 0), 3.0f);
  Matrix x1(1, 1);
  x1 << 4;
  op.step(x1, s, y);
  EXPECT_EQ(y(0, 0), 1.0f * 2 + 10.0f * 3 + 100.0f * 4);
  EXPECT_EQ(s.length, 4);
}

TEST(StarShortConv, ShapesAndCounts) {
  const star::ShortConv op({37, 3, false}, 1);
  EXPECT_EQ(op.param_count(), 3 * 37 * 37 + 37 * 37 + 37 * 3);
  EXPECT_EQ(op.cache_bytes(0), 2 * 37 * 4);
  EXPECT_EQ(op.cache_bytes(65536), 2 * 37 * 4);
  const star::ShortConv biased({37, 4, true}, 1);
  EXPECT_EQ(biased.param_count(), 3 * 37 * 37 + 3 * 37 + 37 * 37 + 37 + 37 * 4 + 37);
  EXPECT_EQ(biased.cache_bytes(100), 3 * 37 * 4);
  const star::ShortConv one({5, 1, false}, 1);
  EXPECT_EQ(one.cache_bytes(10), 0);
}

TEST(StarShortConv, BitIdenticalForAnyThreadCount) {
  const star::ShortConv op({100, 3, false}, 5);
  // The conv and gate loops too: N * C * L = 1000 * 100 * 3 > kSerialWorkBelow.
  ASSERT_GT(1000.0 * 100 * 3, effattn::detail::kSerialWorkBelow);
  check_bit_identical(op, 1000, 9);
}

TEST(StarShortConv, Errors) {
  const star::ShortConv op({12, 3, false}, 1);
  check_errors(op, "star::ShortConv");
  auto other = star::ShortConv({13, 3, false}, 1).make_state();
  Matrix x = testing_util::random_matrix(1, 12, 3), y;
  testing_util::expect_throw_with<effattn::shape_error>([&] { op.step(x, other, y); }, "state tail must be [2,12]");
  testing_util::expect_throw_with<effattn::parameter_error>([] { star::ShortConv({4, 0, false}, 1); },
                                                            "kernel must be >= 1");
  testing_util::expect_throw_with<effattn::parameter_error>([] { star::ShortConv({0, 3, false}, 1); },
                                                            "width must be > 0");
}

}  // namespace
