// SPDX-License-Identifier: MIT
// star::Differential<Op> (STAR classes 10-17, y = LIV_a(x) - LIV_b(x)) over
// every operator class (GConv-2 included): against the float64 references, chained steps and
// split prefills against the forward, bit-identical for Executor(1) and
// Executor(2), counts (the sum of both operators), seeds, and input checks.
#include <gtest/gtest.h>

#include <effattn/star/liv_attention.hpp>
#include <effattn/star/liv_conv.hpp>
#include <effattn/star/liv_differential.hpp>
#include <effattn/star/liv_longconv.hpp>
#include <effattn/star/liv_mlp.hpp>
#include <effattn/star/liv_recurrence.hpp>

#include "liv_reference.hpp"
#include "liv_testing.hpp"

namespace star = effattn::star;
using effattn::index_t;
using namespace star_testing;

namespace {

template <class Op>
void check_differential(const typename Op::Config& cfg, const std::string& name) {
  const star::Differential<Op> op(cfg, 42);
  const Op plain(cfg, 42);
  EXPECT_EQ(op.width(), plain.width());
  EXPECT_EQ(op.param_count(), 2 * plain.param_count()) << name;
  EXPECT_EQ(op.cache_bytes(1000), 2 * plain.cache_bytes(1000)) << name;
  // a is the plain operator of the same seed; b differs.
  const Matrix x = testing_util::random_matrix(5, op.width(), 1);
  Matrix ya, yp, yb;
  op.a.forward(x, ya);
  plain.forward(x, yp);
  op.b.forward(x, yb);
  EXPECT_TRUE(testing_util::same(ya, yp)) << name;
  EXPECT_FALSE(testing_util::same(ya, yb)) << name;
  for (index_t N : {1, 7, 33, 300}) check_operator(op, N, unsigned(N + 3), Ref{}, 4e-5, name);
  check_errors(op, "star::Differential");
}

TEST(StarDifferential, EveryClassMatchesItsReference) {
  check_differential<star::SwiGLU>({37, 0}, "diff GMemless");
  check_differential<star::ShortConv>({37, 3, false}, "diff GConv-1");
  check_differential<star::Recurrence>(star::RecurrenceConfig::rec1(37), "diff Rec-1");
  check_differential<star::Recurrence>(star::RecurrenceConfig::rec2(37), "diff Rec-2");
  check_differential<star::LongConv>({37, 16, 4, 2048, star::ConvPath::automatic}, "diff GConv-2");
  check_differential<star::SoftmaxAttention>(star::AttentionConfig::sa1(40, 4), "diff SA-1");
  check_differential<star::SoftmaxAttention>(star::AttentionConfig::sa2(40, 4), "diff SA-2");
  check_differential<star::SoftmaxAttention>(star::AttentionConfig::sa3(40, 4), "diff SA-3");
  check_differential<star::SoftmaxAttention>(star::AttentionConfig::sa4(40, 4), "diff SA-4");
}

TEST(StarDifferential, BitIdenticalForAnyThreadCount) {
  check_bit_identical(star::Differential<star::Recurrence>(star::RecurrenceConfig::rec1(100), 1), 300, 2);
  check_bit_identical(star::Differential<star::SoftmaxAttention>(star::AttentionConfig::sa3(96, 8), 1), 300, 2);
}

TEST(StarDifferential, WidthsMustAgree) {
  testing_util::expect_throw_with<effattn::parameter_error>(
      [] { star::Differential<star::SwiGLU>(star::SwiGLU({4, 0}, 1), star::SwiGLU({5, 0}, 1)); },
      "b must have the width of a=4, got 5");
}

}  // namespace
