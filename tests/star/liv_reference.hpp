// SPDX-License-Identifier: MIT
// Float64 references of the STAR LIV operators: the obvious loops over each
// operator's own (float) weights, in double, from a fresh state. They share
// nothing with the operators' code but the weights.
#pragma once

#include <cmath>
#include <vector>

#include <effattn/star/liv_mlp.hpp>

#include "liv_testing.hpp"

namespace star_testing {

/// SwiGLU: W2 (silu(W1 x) * W3 x).
inline DMat reference(const effattn::star::SwiGLU& op, const Matrix& xf) {
  const DMat x = to_d(xf);
  DMat g = linear_d(op.w1, x);
  const DMat u = linear_d(op.w3, x);
  for (size_t i = 0; i < g.v.size(); ++i) g.v[i] = silu_d(g.v[i]) * u.v[i];
  return linear_d(op.w2, g);
}

}  // namespace star_testing
