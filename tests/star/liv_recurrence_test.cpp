// SPDX-License-Identifier: MIT
// star::Recurrence (Rec-1 / Rec-2, Mamba-like selective diagonal scan):
// against the float64 reference on odd shapes, expansions and chunk sizes
// (chunk boundaries inside the sequence), the state after a prefill against
// the reference's, chained steps and split prefills against the forward,
// 0 < a < 1, bit-identical for Executor(1) and Executor(2), counts and checks.
#include <gtest/gtest.h>

#include <effattn/star/liv_recurrence.hpp>

#include "liv_reference.hpp"
#include "liv_testing.hpp"

namespace star = effattn::star;
using effattn::index_t;
using namespace star_testing;

namespace {

TEST(StarRecurrence, MatchesReferenceOnOddShapes) {
  for (index_t C : {1, 5, 37})
    for (index_t E : {16, 2, 3})
      for (index_t chunk : {256, 7}) {
        const star::Recurrence op({C, E, 0, chunk}, 200 + C + E);
        for (index_t N : {1, 7, 33, 300})
          check_operator(op, N, unsigned(N * 3 + C), Ref{}, 2e-5,
                         "C=" + std::to_string(C) + " E=" + std::to_string(E) + " chunk=" + std::to_string(chunk));
      }
  const star::Recurrence wide_rank({21, 4, 5, 16}, 8);
  for (index_t N : {1, 7, 33}) check_operator(wide_rank, N, unsigned(N), Ref{}, 2e-5, "C=21 E=4 R=5");
}

TEST(StarRecurrence, StateAfterPrefillMatchesReference) {
  const star::Recurrence op({19, 16, 0, 10}, 3);
  const Matrix x = testing_util::random_matrix(45, 19, 4);
  auto s = op.make_state();
  Matrix y;
  op.prefill(x, s, y);
  DMat h;
  reference(op, x, &h);
  EXPECT_TRUE(near(s.h, h, 1e-5, 1e-5));
  EXPECT_EQ(s.length, 45);
}

TEST(StarRecurrence, DecayIsInsideTheUnitInterval) {
  const star::Recurrence op({37, 16, 0, 256}, 1);
  // a = exp(-softplus(.) * exp(A_log)) with A_log = log(s + 1) >= 0: in (0, 1).
  for (index_t c = 0; c < 37; ++c)
    for (index_t s = 0; s < 16; ++s) EXPECT_FLOAT_EQ(op.A_log(c, s), std::log(float(s + 1)));
  // dt_proj's bias is softplus^-1 of a dt in [1e-3, 0.1].
  for (index_t c = 0; c < 37; ++c) {
    const double dt = softplus_d(op.dt_proj.bias[c]);
    EXPECT_GE(dt, 1e-3 * (1 - 1e-4));
    EXPECT_LE(dt, 0.1 * (1 + 1e-4));
  }
}

TEST(StarRecurrence, FastExpIsWithinTwoUlps) {
  // The scan's decay exp (vectorisable, no library call).
  double worst = 0;
  for (int k = 0; k <= 200000; ++k) {
    const float x = -87.0f + 175.0f * float(k) / 200000.0f;
    const double want = std::exp(double(x));
    worst = std::fmax(worst, std::fabs(double(star::detail::exp_fast(x)) / want - 1.0));
  }
  EXPECT_LT(worst, 2.4e-7);
  EXPECT_EQ(star::detail::exp_fast(0.0f), 1.0f);
  EXPECT_GT(star::detail::exp_fast(-1000.0f), 0.0f);  // clamped: tiny, never 0 or NaN
  EXPECT_LT(star::detail::exp_fast(-1000.0f), 1e-37f);
  EXPECT_TRUE(std::isfinite(star::detail::exp_fast(1000.0f)));
}

TEST(StarRecurrence, FastSoftplusIsWithinFourUlps) {
  // dt = softplus(.) without libm calls (vectorisable): log1p on [0, 1] and
  // softplus over the range dt's logits take, against float64.
  double worst_log1p = 0, worst_softplus = 0;
  for (int k = 0; k <= 200000; ++k) {
    // t spans [0, 1] densely near 0 too (t = 2^-e for large e keeps its relative precision).
    const float t = k < 100000 ? std::ldexp(1.0f + float(k % 1000) / 1000.0f, -(k / 1000) - 1)
                               : float(k - 100000) / 100000.0f;
    const double want = std::log1p(double(t));
    if (want > 0) worst_log1p = std::fmax(worst_log1p, std::fabs(double(star::detail::log1p_unit(t)) / want - 1.0));
    const float x = -80.0f + 110.0f * float(k) / 200000.0f;
    const double sp = x > 20.0f ? double(x) : std::log1p(std::exp(double(x)));
    worst_softplus = std::fmax(worst_softplus, std::fabs(double(star::detail::softplus(x)) / sp - 1.0));
  }
  EXPECT_LT(worst_log1p, 2.4e-7);
  EXPECT_LT(worst_softplus, 2.4e-7);
  EXPECT_EQ(star::detail::log1p_unit(0.0f), 0.0f);
  EXPECT_EQ(star::detail::softplus(25.0f), 25.0f);  // torch's threshold: x itself
  EXPECT_GT(star::detail::softplus(-1000.0f), 0.0f);
  EXPECT_LT(star::detail::softplus(-1000.0f), 1e-37f);
}

TEST(StarRecurrence, ShapesAndCounts) {
  const auto cfg1 = star::RecurrenceConfig::rec1(37), cfg2 = star::RecurrenceConfig::rec2(37);
  EXPECT_EQ(cfg1.expansion, 16);
  EXPECT_EQ(cfg2.expansion, 2);
  const star::Recurrence r1(cfg1, 1), r2(cfg2, 1);
  EXPECT_EQ(r1.dt_rank(), 3);  // ceil(37 / 16)
  const index_t C = 37, R = 3;
  for (const auto* op : {&r1, &r2}) {
    const index_t E = op->expansion();
    EXPECT_EQ(op->param_count(), 2 * C * C + (R + 2 * E) * C + C * R + C + C * E + C + C * C);
    EXPECT_EQ(op->cache_bytes(1), C * E * 4);
    EXPECT_EQ(op->cache_bytes(65536), C * E * 4);
  }
}

TEST(StarRecurrence, BitIdenticalForAnyThreadCount) {
  // The scan: 300 * 100 * 16 * 6 > kSerialWorkBelow; the chunk of 128 puts
  // three chunks in the sequence.
  const star::Recurrence op({100, 16, 0, 128}, 5);
  ASSERT_GT(6.0 * 128 * 100 * 16, effattn::detail::kSerialWorkBelow);
  check_bit_identical(op, 300, 9);
}

TEST(StarRecurrence, Errors) {
  const star::Recurrence op({12, 2, 0, 64}, 1);
  check_errors(op, "star::Recurrence");
  auto other = star::Recurrence({12, 16, 0, 64}, 1).make_state();
  Matrix x = testing_util::random_matrix(1, 12, 3), y;
  testing_util::expect_throw_with<effattn::shape_error>([&] { op.step(x, other, y); }, "state h must be [12,2]");
  testing_util::expect_throw_with<effattn::parameter_error>([] { star::Recurrence({4, 0, 0, 64}, 1); },
                                                            "expansion must be > 0");
  testing_util::expect_throw_with<effattn::parameter_error>([] { star::Recurrence({4, 2, 0, 0}, 1); },
                                                            "chunk must be > 0");
  testing_util::expect_throw_with<effattn::parameter_error>([] { star::Recurrence({4, 2, -1, 8}, 1); },
                                                            "dt_rank must be >= 0");
}

}  // namespace
