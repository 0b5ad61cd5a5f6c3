// SPDX-License-Identifier: MIT
// star::SwiGLU (GMemless): against the float64 reference on odd shapes, chained
// steps and split prefills against the forward, bit-identical for Executor(1)
// and Executor(2) above the small-work cut-off, parameter count, input checks.
#include <gtest/gtest.h>

#include <effattn/star/liv_mlp.hpp>

#include "liv_reference.hpp"
#include "liv_testing.hpp"

namespace star = effattn::star;
using effattn::index_t;
using namespace star_testing;

namespace {

TEST(StarSwiGLU, MatchesReferenceOnOddShapes) {
  for (index_t C : {1, 5, 37}) {
    const star::SwiGLU op({C, 0}, 11 + C);
    for (index_t N : {1, 7, 33, 300}) check_operator(op, N, unsigned(N + C), Ref{}, 2e-5, "C=" + std::to_string(C));
  }
  const star::SwiGLU op({20, 45}, 3);
  for (index_t N : {1, 7, 33}) check_operator(op, N, unsigned(N), Ref{}, 2e-5, "C=20 H=45");
}

TEST(StarSwiGLU, ShapesAndCounts) {
  const star::SwiGLU op({37, 0}, 1);
  EXPECT_EQ(op.width(), 37);
  EXPECT_EQ(op.hidden(), 104);  // ceil(8 * 37 / 3 / 8) * 8 = ceil(98 / 8) * 8
  EXPECT_EQ(op.param_count(), 3 * 37 * 104);
  EXPECT_EQ(op.cache_bytes(0), 0);
  EXPECT_EQ(op.cache_bytes(1 << 20), 0);
  const star::SwiGLU same_seed({37, 0}, 1), other_seed({37, 0}, 2);
  EXPECT_TRUE(op.w1.weight == same_seed.w1.weight);
  EXPECT_FALSE(op.w1.weight == other_seed.w1.weight);
}

TEST(StarSwiGLU, BitIdenticalForAnyThreadCount) {
  const star::SwiGLU op({100, 264}, 5);  // 3 * 100 * 264 * 300 multiply-adds >> kSerialWorkBelow
  ASSERT_GT(3.0 * 100 * 264 * 300, effattn::detail::kSerialWorkBelow);
  check_bit_identical(op, 300, 9);
}

TEST(StarSwiGLU, Errors) {
  const star::SwiGLU op({12, 0}, 1);
  check_errors(op, "star::SwiGLU");
  testing_util::expect_throw_with<effattn::parameter_error>([] { star::SwiGLU({0, 0}, 1); }, "width must be > 0");
  testing_util::expect_throw_with<effattn::parameter_error>([] { star::SwiGLU({4, -1}, 1); }, "hidden must be >= 0");
}

}  // namespace
