// SPDX-License-Identifier: MIT
// Test support: random data, strided copies and tolerant comparisons that
// print the first failing index.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace testing_util {

inline std::vector<float> random_vector(size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

/// |got - want| <= atol + rtol * |want| elementwise; NaN never passes unless
/// both are NaN; infinities must match exactly.
template <class A, class B>
::testing::AssertionResult close(const A& got, const B& want, double atol, double rtol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    if (std::isnan(g) && std::isnan(w)) continue;
    if (std::isinf(w) || std::isinf(g)) {
      if (g == w) continue;
    } else if (std::fabs(g - w) <= atol + rtol * std::fabs(w)) {
      continue;
    }
    return ::testing::AssertionFailure() << "index " << i << ": got " << g << ", want " << w
                                         << ", tolerance " << atol + rtol * std::fabs(w);
  }
  return ::testing::AssertionSuccess();
}

template <class A, class B>
void expect_close(const A& got, const B& want, double atol, double rtol, const std::string& what) {
  EXPECT_TRUE(close(got, want, atol, rtol)) << what;
}

/// Max |a - b|.
template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::fmax(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

/// Runs f, which must throw E (an effattn error type) whose message contains
/// `needle`; any other outcome is a test failure.
template <class E, class F>
void expect_throw_with(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

/// The message of the std::invalid_argument (every effattn error) f throws,
/// or "(no exception)".
template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no exception)";
}

inline bool contains(const std::string& s, const char* frag) { return s.find(frag) != std::string::npos; }

/// x, hidden from the optimiser: a huge test extent must not be propagated as
/// a constant into loops that the library's checks make unreachable (GCC then
/// warns that they would overflow: -Waggressive-loop-optimizations).
template <class T>
T opaque(T x) {
  static volatile T v;
  v = x;
  return v;
}

}  // namespace testing_util
