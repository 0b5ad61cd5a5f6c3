// SPDX-License-Identifier: MIT
// Test support: a method's attention with AttentionOptions::compute =
// Precision::bfloat16 (tests/attention/bf16_test.cpp checks the kernel itself
// against the oracle with a bound derived from bfloat16's precision).
#pragma once

#include <effattn/effattn.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "levels.hpp"

namespace testing_util {

/// run(opt, out) computes a method's float output with the options given.
/// At every level: with compute = bfloat16 the result stays within
/// `rel` x max|float result| of the float one (an 8-bit significand in q, k,
/// v and p moves a softmax average by a few 2^-8 of the values' range); at
/// Isa::avx512_bf16 it differs from it (the bfloat16 kernel ran), below that
/// level it is bit-identical (float arithmetic).
template <class Run>
void check_bf16_compute(Run&& run, size_t n, double rel = 0.05) {
  for (const effattn::Isa level : isa_levels(true)) {
    ScopedIsa scoped(level);
    SCOPED_TRACE(effattn::to_string(level));
    std::vector<float> plain(n), bf(n);
    effattn::AttentionOptions o32, o16;
    o16.compute = effattn::Precision::bfloat16;
    run(o32, plain);
    run(o16, bf);
    double vmax = 0, worst = 0;
    size_t differ = 0;
    for (size_t i = 0; i < n; ++i) {
      vmax = std::max(vmax, std::abs(static_cast<double>(plain[i])));
      worst = std::max(worst, std::abs(static_cast<double>(bf[i]) - plain[i]));
      differ += bf[i] != plain[i];
    }
    EXPECT_GT(vmax, 0.0);
    EXPECT_LE(worst, rel * vmax);
    if (level == effattn::Isa::avx512_bf16) {
      EXPECT_GT(differ, n / 10) << "the bfloat16 kernel did not run";
    } else {
      EXPECT_EQ(differ, 0u);
    }
  }
}

}  // namespace testing_util
