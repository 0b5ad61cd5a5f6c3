// SPDX-License-Identifier: MIT
// Float64 references of the STAR LIV operators: the obvious loops over each
// operator's own (float) weights, in double, from a fresh state. They share
// nothing with the operators' code but the weights.
#pragma once

#include <cmath>
#include <vector>

#include <effattn/star/liv_conv.hpp>
#include <effattn/star/liv_mlp.hpp>
#include <effattn/star/liv_recurrence.hpp>

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

/// Recurrence (Mamba-like selective scan), token by token; the final state
/// h [C, E] in *h_out when given.
inline DMat reference(const effattn::star::Recurrence& op, const Matrix& xf, DMat* h_out = nullptr) {
  const index_t N = xf.rows(), C = op.width(), E = op.expansion(), R = op.dt_rank();
  const DMat p = linear_d(op.in_proj, to_d(xf));
  DMat u(N, C);
  for (index_t t = 0; t < N; ++t)
    for (index_t c = 0; c < C; ++c) u(t, c) = silu_d(p(t, c));
  const DMat q = linear_d(op.x_proj, u);
  DMat d(N, R);
  for (index_t t = 0; t < N; ++t)
    for (index_t r = 0; r < R; ++r) d(t, r) = q(t, r);
  const DMat dtl = linear_d(op.dt_proj, d);
  DMat h(C, E), yc(N, C);
  for (index_t t = 0; t < N; ++t)
    for (index_t c = 0; c < C; ++c) {
      const double dt = softplus_d(dtl(t, c));
      double acc = 0;
      for (index_t s = 0; s < E; ++s) {
        const double a = std::exp(-dt * std::exp(double(op.A_log(c, s))));
        const double b = dt * q(t, R + s);
        h(c, s) = a * h(c, s) + b * u(t, c);
        acc += q(t, R + E + s) * h(c, s);
      }
      yc(t, c) = (acc + double(op.D[c]) * u(t, c)) * silu_d(p(t, C + c));
    }
  if (h_out) *h_out = h;
  return linear_d(op.out_proj, yc);
}

}  // namespace star_testing
