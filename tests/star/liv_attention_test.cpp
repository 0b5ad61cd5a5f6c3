// SPDX-License-Identifier: MIT
// star::SoftmaxAttention (SA-1..SA-4 on the effattn engine): against the
// float64 reference on odd shapes (C not a multiple of 16, odd head counts,
// grouped-query K/V, SA-2's short conv, RoPE on and off), chained steps through
// the K/V cache and split prefills against the forward, the cache growing past
// its reserved capacity, bit-identical for Executor(1) and Executor(2),
// counts, and input checks.
#include <gtest/gtest.h>

#include <effattn/star/liv_attention.hpp>

#include "liv_reference.hpp"
#include "liv_testing.hpp"

namespace star = effattn::star;
using effattn::index_t;
using namespace star_testing;

namespace {

struct Case {
  const char* name;
  star::AttentionConfig cfg;
};

TEST(StarAttention, MatchesReferenceOnOddShapes) {
  const Case cases[] = {
      {"SA-1 C=40 H=4", star::AttentionConfig::sa1(40, 4)},
      {"SA-1 C=30 H=3", star::AttentionConfig::sa1(30, 3)},
      {"SA-1 C=1 H=1 no rope", {1, 1, 0, 0, 0, false, 1e4}},
      {"SA-2 C=36 H=3", star::AttentionConfig::sa2(36, 3)},
      {"SA-2 C=20 H=2 L=4", {20, 2, 2, 0, 4, true, 1e4}},
      {"SA-3 C=40 H=4", star::AttentionConfig::sa3(40, 4)},
      {"SA-3 C=24 H=8 hd=6", {24, 8, 2, 6, 0, true, 1e4}},
      {"SA-4 C=44 H=2", star::AttentionConfig::sa4(44, 2)},
      {"SA-4 C=36 H=6 hd=5 no rope", {36, 6, 3, 5, 0, false, 1e4}},
  };
  for (const auto& c : cases) {
    const star::SoftmaxAttention op(c.cfg, 77);
    for (index_t N : {1, 7, 33, 300}) check_operator(op, N, unsigned(N + 5), Ref{}, 2e-5, c.name);
  }
}

TEST(StarAttention, CacheGrowsPastItsReservation) {
  const star::SoftmaxAttention op(star::AttentionConfig::sa3(40, 4), 3);
  const Matrix x = testing_util::random_matrix(50, 40, 1);
  Matrix want;
  op.forward(x, want);
  auto s = op.make_state(4);
  EXPECT_EQ(s.capacity(), 4);
  Matrix row, out, got(50, 40);
  for (index_t t = 0; t < 50; ++t) {
    row = x.row(t);
    op.step(row, s, out);
    got.row(t) = out.row(0);
  }
  EXPECT_EQ(s.length, 50);
  EXPECT_EQ(s.capacity(), 64);  // 4 -> 8 -> 16 -> 32 -> 64
  EXPECT_TRUE(near_f(got, want, 1e-5, 1e-5));
}

TEST(StarAttention, ShapesAndCounts) {
  const index_t C = 40;
  const star::SoftmaxAttention sa1(star::AttentionConfig::sa1(C, 4), 1), sa2(star::AttentionConfig::sa2(C, 4), 1),
      sa3(star::AttentionConfig::sa3(C, 4), 1), sa4(star::AttentionConfig::sa4(C, 4), 1);
  EXPECT_EQ(sa3.kv_heads(), 1);
  EXPECT_EQ(sa4.kv_heads(), 2);
  EXPECT_EQ(sa1.head_dim(), 10);
  EXPECT_EQ(sa1.param_count(), 4 * C * C);
  EXPECT_EQ(sa2.param_count(), 4 * C * C + 3 * C * 3);
  EXPECT_EQ(sa3.param_count(), 2 * C * C + 2 * 10 * C);
  EXPECT_EQ(sa4.param_count(), 2 * C * C + 2 * 20 * C);
  EXPECT_EQ(sa1.cache_bytes(1000), 2 * 1000 * C * 4);
  EXPECT_EQ(sa2.cache_bytes(1000), (2 * 1000 * C + 2 * 3 * C) * 4);
  EXPECT_EQ(sa3.cache_bytes(1000), 2 * 1000 * 10 * 4);
  EXPECT_EQ(sa4.cache_bytes(1000), 2 * 1000 * 20 * 4);
  // cache_bytes matches the state's valid rows (and SA-2's tails).
  auto s = sa2.make_state();
  Matrix y;
  sa2.prefill(testing_util::random_matrix(13, C, 2), s, y);
  EXPECT_EQ(sa2.cache_bytes(13),
            index_t(sizeof(float)) * (2 * s.length * s.k.cols() + s.q_tail.size() + s.k_tail.size() + s.v_tail.size()));
}

TEST(StarAttention, BitIdenticalForAnyThreadCount) {
  for (const auto& cfg : {star::AttentionConfig::sa1(96, 6), star::AttentionConfig::sa2(96, 6),
                          star::AttentionConfig::sa3(96, 8)}) {
    const star::SoftmaxAttention op(cfg, 5);
    ASSERT_GT(300.0 * 300 * 96, effattn::detail::kSerialWorkBelow);
    check_bit_identical(op, 300, 9);
  }
}

TEST(StarAttention, Errors) {
  const star::SoftmaxAttention op(star::AttentionConfig::sa2(12, 2), 1);
  check_errors(op, "star::SoftmaxAttention");
  auto other = star::SoftmaxAttention(star::AttentionConfig::sa1(12, 2), 1).make_state();
  Matrix x = testing_util::random_matrix(1, 12, 3), y;
  testing_util::expect_throw_with<effattn::shape_error>([&] { op.step(x, other, y); }, "state q_tail must be [2,12]");
  using effattn::parameter_error;
  testing_util::expect_throw_with<parameter_error>([] { star::AttentionConfig::sa3(12, 6); },
                                                   "sa3 needs heads to be a positive multiple of 4");
  testing_util::expect_throw_with<parameter_error>([] { star::SoftmaxAttention({12, 4, 3, 0, 0, true, 1e4}, 1); },
                                                   "kv_heads must divide heads=4");
  testing_util::expect_throw_with<parameter_error>([] { star::SoftmaxAttention({10, 4, 0, 0, 0, true, 1e4}, 1); },
                                                   "heads must divide width=10");
  testing_util::expect_throw_with<parameter_error>([] { star::SoftmaxAttention({9, 3, 0, 0, 0, true, 1e4}, 1); },
                                                   "head_dim must be even with rope, got 3");
  testing_util::expect_throw_with<parameter_error>([] { star::SoftmaxAttention({8, 2, 0, 0, 1, true, 1e4}, 1); },
                                                   "short_conv must be 0 (none) or a kernel > 1");
}

}  // namespace
