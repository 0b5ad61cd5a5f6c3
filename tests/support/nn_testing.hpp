// SPDX-License-Identifier: MIT
// Test support for code on nn::Matrix (the models, the dense layers).
#pragma once

#include <algorithm>

#include <effattn/nn/layers.hpp>

#include "support/testing.hpp"

namespace testing_util {

/// Same shape and values (Eigen's == asserts on a shape mismatch).
inline bool same(const effattn::nn::Matrix& a, const effattn::nn::Matrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() && a == b;
}

/// r x c values from random_vector(r * c, seed), row by row.
inline effattn::nn::Matrix random_matrix(effattn::index_t r, effattn::index_t c, unsigned seed) {
  const auto v = random_vector(static_cast<size_t>(r * c), seed);
  effattn::nn::Matrix m(r, c);
  std::copy(v.begin(), v.end(), m.data());
  return m;
}

}  // namespace testing_util
