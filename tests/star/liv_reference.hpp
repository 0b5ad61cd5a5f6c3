// SPDX-License-Identifier: MIT
// Float64 references of the STAR LIV operators: the obvious loops over each
// operator's own (float) weights, in double, from a fresh state. They share
// nothing with the operators' code but the weights.
#pragma once

#include <cmath>
#include <vector>

#include <effattn/star/liv_conv.hpp>
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

/// ShortConv (LFM2): out_proj(Cg * conv(B * u)), tap k on input t - (L-1) + k.
inline DMat reference(const effattn::star::ShortConv& op, const Matrix& xf) {
  const index_t N = xf.rows(), C = op.width(), L = op.kernel();
  const DMat p = linear_d(op.in_proj, to_d(xf));
  DMat z(N, C);
  for (index_t t = 0; t < N; ++t)
    for (index_t c = 0; c < C; ++c) {
      double acc = op.conv_bias.size() ? double(op.conv_bias[c]) : 0.0;
      for (index_t k = 0; k < L; ++k) {
        const index_t src = t - (L - 1) + k;
        if (src >= 0) acc += double(op.conv_weight(c, k)) * p(src, c) * p(src, 2 * C + c);
      }
      z(t, c) = p(t, C + c) * acc;
    }
  return linear_d(op.out_proj, z);
}

}  // namespace star_testing
