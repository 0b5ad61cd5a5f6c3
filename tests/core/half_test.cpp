// SPDX-License-Identifier: MIT
// 16-bit storage types: exact widening, round-to-nearest-even narrowing,
// overflow, subnormals and NaN; the bulk conversion agrees with the scalar one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <effattn/core/half.hpp>
#include <limits>
#include <random>
#include <vector>

namespace {

using effattn::bfloat16;
using effattn::float16;

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// binary16 bits -> value, computed independently with ldexp.
double half_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 31) v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (e == 0) v = std::ldexp(m, -24);
  else v = std::ldexp(1024 + m, e - 25);
  return s ? -v : v;
}

TEST(Float16, WideningIsExactForEveryBitPattern) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = static_cast<float>(float16::from_bits(static_cast<std::uint16_t>(h)));
    const double want = half_value(static_cast<std::uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f)) << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), want) << "bits " << h;
    ASSERT_EQ(std::signbit(f), (h >> 15) != 0) << h;
    // Every half value survives the round trip.
    ASSERT_EQ(float16(f).bits, h) << "bits " << h;
  }
}

TEST(Float16, RoundsToNearestEvenAgainstAnExhaustiveNeighbourSearch) {
  // For random floats (all magnitudes in the half range and beyond), the
  // rounded value is a nearest half, ties go to the even mantissa.
  std::mt19937 g(7);
  std::uniform_int_distribution<std::uint32_t> u;
  std::vector<double> finite;  // every non-negative finite half value, ascending
  for (std::uint32_t h = 0; h < 0x7c00; ++h) finite.push_back(half_value(static_cast<std::uint16_t>(h)));
  for (int it = 0; it < 200000; ++it) {
    std::uint32_t x = u(g);
    // Bias toward the interesting exponents (subnormal to overflow).
    x = (x & 0x807fffffu) | ((100u + (x >> 23) % 45u) << 23);
    float f;
    std::memcpy(&f, &x, 4);
    const std::uint16_t got = float16(f).bits;
    const double a = std::fabs(static_cast<double>(f));
    if (a >= 65520.0) {  // beyond 65504 + half an ulp: inf
      ASSERT_EQ(got & 0x7fff, 0x7c00) << f;
      continue;
    }
    auto it_hi = std::lower_bound(finite.begin(), finite.end(), a);
    const size_t hi = static_cast<size_t>(it_hi - finite.begin());
    const size_t lo = hi == 0 ? 0 : hi - 1;
    size_t best;
    if (hi == finite.size()) best = lo;
    else if (finite[hi] == a) best = hi;
    else {
      const double dl = a - finite[lo], dh = finite[hi] - a;
      best = dl < dh ? lo : dh < dl ? hi : (lo % 2 == 0 ? lo : hi);
    }
    ASSERT_EQ(got & 0x7fff, best) << "f=" << f;
    ASSERT_EQ(got >> 15, bits(f) >> 31) << f;
  }
}

TEST(Float16, SpecialValues) {
  EXPECT_EQ(float16(65504.0f).bits, 0x7bff);
  EXPECT_EQ(float16(65519.0f).bits, 0x7bff);
  EXPECT_EQ(float16(65520.0f).bits, 0x7c00);
  EXPECT_EQ(float16(1e10f).bits, 0x7c00);
  EXPECT_EQ(float16(-std::numeric_limits<float>::infinity()).bits, 0xfc00);
  EXPECT_TRUE(std::isnan(static_cast<float>(float16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(float16(5.9604644775390625e-8f).bits, 0x0001);  // smallest subnormal
  EXPECT_EQ(float16(2.98023223876953125e-8f).bits, 0x0000); // half of it: tie to even (0)
  EXPECT_EQ(float16(2.98023259e-8f).bits, 0x0001);          // just above the tie
  EXPECT_EQ(float16(-0.0f).bits, 0x8000);
  EXPECT_EQ(float16(1.0f).bits, 0x3c00);
  EXPECT_EQ(float16(1.0f + 1.0f / 2048).bits, 0x3c00);      // tie: to even
  EXPECT_EQ(float16(1.0f + 3.0f / 2048).bits, 0x3c02);      // tie: to even (up)
}

TEST(Bfloat16, RoundTripAndRounding) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = static_cast<float>(bfloat16::from_bits(static_cast<std::uint16_t>(h)));
    ASSERT_EQ(bits(f), h << 16);
    if (!std::isnan(f)) {
      ASSERT_EQ(bfloat16(f).bits, h);
    }
  }
  EXPECT_EQ(bfloat16(1.0f).bits, 0x3f80);
  EXPECT_EQ(bfloat16(1.0f + 1.0f / 256).bits, 0x3f80);  // tie to even
  EXPECT_EQ(bfloat16(1.0f + 3.0f / 256).bits, 0x3f82);  // tie to even (up)
  EXPECT_EQ(bfloat16(std::numeric_limits<float>::max()).bits, 0x7f80);  // rounds to inf
  EXPECT_TRUE(std::isnan(static_cast<float>(bfloat16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload lives only in the low bits must not become inf.
  float nan_low;
  const std::uint32_t nl = 0x7f800001u;
  std::memcpy(&nan_low, &nl, 4);
  EXPECT_TRUE(std::isnan(static_cast<float>(bfloat16(nan_low))));
}

TEST(Storage, BulkConversionEqualsScalarConversion) {
  std::mt19937 g(3);
  std::normal_distribution<float> d(0.0f, 300.0f);
  for (std::ptrdiff_t n : {0, 1, 7, 8, 9, 33, 1000}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = d(g);
    if (n > 3) x[3] = 1e9f;  // overflow to inf in float16
    std::vector<float16> h(x.size());
    std::vector<bfloat16> b(x.size());
    effattn::convert(x.data(), h.data(), n);
    effattn::convert(x.data(), b.data(), n);
    std::vector<float> back(x.size());
    effattn::convert(h.data(), back.data(), n);
    for (std::ptrdiff_t i = 0; i < n; ++i) {
      ASSERT_EQ(h[i].bits, float16(x[i]).bits) << i;
      ASSERT_EQ(b[i].bits, bfloat16(x[i]).bits) << i;
      ASSERT_EQ(bits(back[i]), bits(static_cast<float>(h[i]))) << i;
    }
  }
  EXPECT_EQ(effattn::storage_bytes(effattn::Storage::float16), 2);
  EXPECT_STREQ(effattn::to_string(effattn::Storage::bfloat16), "bfloat16");
}

}  // namespace
