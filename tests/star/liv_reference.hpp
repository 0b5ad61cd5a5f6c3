// SPDX-License-Identifier: MIT
// Float64 references of the STAR LIV operators: the obvious loops over each
// operator's own (float) weights, in double, from a fresh state. They share
// nothing with the operators' code but the weights.
#pragma once

#include <cmath>
#include <vector>

#include <effattn/star/liv_attention.hpp>
#include <effattn/star/liv_conv.hpp>
#include <effattn/star/liv_differential.hpp>
#include <effattn/star/liv_longconv.hpp>
#include <effattn/star/liv_mlp.hpp>
#include <effattn/star/liv_recurrence.hpp>

#include "liv_testing.hpp"

namespace star_testing {

/// SwiGLU: W2 (silu(W1 x) * W3 x).
inline DMat reference_d(const effattn::star::SwiGLU& op, const DMat& x) {
  DMat g = linear_d(op.w1, x);
  const DMat u = linear_d(op.w3, x);
  for (size_t i = 0; i < g.v.size(); ++i) g.v[i] = silu_d(g.v[i]) * u.v[i];
  return linear_d(op.w2, g);
}

/// ShortConv (LFM2): out_proj(Cg * conv(B * u)), tap k on input t - (L-1) + k.
inline DMat reference_d(const effattn::star::ShortConv& op, const DMat& x) {
  const index_t N = x.rows, C = op.width(), L = op.kernel();
  const DMat p = linear_d(op.in_proj, x);
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
inline DMat reference_d(const effattn::star::Recurrence& op, const DMat& x, DMat* h_out = nullptr) {
  const index_t N = x.rows, C = op.width(), E = op.expansion(), R = op.dt_rank();
  const DMat p = linear_d(op.in_proj, x);
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

/// Causal depthwise conv of x [N, D] with w [D, L] (tap k on input t-(L-1)+k, zeros before 0).
inline DMat causal_conv_d(const DMat& x, const Matrix& w) {
  DMat y(x.rows, x.cols);
  const index_t L = w.cols();
  for (index_t t = 0; t < x.rows; ++t)
    for (index_t d = 0; d < x.cols; ++d)
      for (index_t k = 0; k < L; ++k)
        if (t - (L - 1) + k >= 0) y(t, d) += double(w(d, k)) * x(t - (L - 1) + k, d);
  return y;
}

/// Rotate-half RoPE on the heads of m [N, nh*hd] at positions 0..N-1.
inline void rope_d(DMat& m, index_t hd, double theta) {
  const index_t half = hd / 2;
  for (index_t t = 0; t < m.rows; ++t)
    for (index_t h = 0; h < m.cols / hd; ++h)
      for (index_t i = 0; i < half; ++i) {
        const double ang = double(t) * std::pow(theta, -2.0 * double(i) / double(hd));
        const double c = std::cos(ang), s = std::sin(ang);
        const double x1 = m(t, h * hd + i), x2 = m(t, h * hd + i + half);
        m(t, h * hd + i) = x1 * c - x2 * s;
        m(t, h * hd + i + half) = x2 * c + x1 * s;
      }
}

/// SoftmaxAttention (SA-1..4): projections, SA-2's conv, RoPE, causal softmax
/// attention with query head h on K/V head h / (H / Hkv), output projection.
inline DMat reference_d(const effattn::star::SoftmaxAttention& op, const DMat& x, double theta = 10000.0) {
  DMat q = linear_d(op.wq, x), k = linear_d(op.wk, x), v = linear_d(op.wv, x);
  if (op.short_conv() > 0) {
    q = causal_conv_d(q, op.q_conv);
    k = causal_conv_d(k, op.k_conv);
    v = causal_conv_d(v, op.v_conv);
  }
  const index_t N = x.rows, H = op.heads(), G = op.heads() / op.kv_heads(), hd = op.head_dim();
  if (op.rope()) {
    rope_d(q, hd, theta);
    rope_d(k, hd, theta);
  }
  DMat o(N, H * hd);
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<double> p(static_cast<size_t>(N));
  for (index_t h = 0; h < H; ++h) {
    const index_t g = h / G;
    for (index_t i = 0; i < N; ++i) {
      double m = -INFINITY, l = 0;
      for (index_t j = 0; j <= i; ++j) {
        double d = 0;
        for (index_t e = 0; e < hd; ++e) d += q(i, h * hd + e) * k(j, g * hd + e);
        p[size_t(j)] = d * scale;
        m = std::fmax(m, p[size_t(j)]);
      }
      for (index_t j = 0; j <= i; ++j) l += (p[size_t(j)] = std::exp(p[size_t(j)] - m));
      for (index_t e = 0; e < hd; ++e) {
        double acc = 0;
        for (index_t j = 0; j <= i; ++j) acc += p[size_t(j)] * v(j, g * hd + e);
        o(i, h * hd + e) = acc / l;
      }
    }
  }
  return linear_d(op.wo, o);
}

/// LongConv's implicit filter h [n, C] for lags 0..n-1, in double.
inline DMat filter_d(const effattn::star::LongConv& op, index_t n, index_t bands, index_t l_max) {
  const index_t C = op.width(), hid = op.f2.in_features();
  DMat h(n, C);
  const double pi = 3.14159265358979323846;
  for (index_t j = 0; j < n; ++j) {
    const double tn = double(j) / double(l_max - 1), w = 2 * pi * double(j) / double(l_max);
    std::vector<double> f{tn}, a(static_cast<size_t>(hid)), b(static_cast<size_t>(hid));
    for (index_t k = 0; k < bands; ++k) f.push_back(std::cos((1e-4 + (bands - 1 - 1e-4) * k / double(bands - 1 > 0 ? bands - 1 : 1)) * w));
    for (index_t k = 0; k < bands; ++k) f.push_back(-std::sin((1e-4 + (bands - 1 - 1e-4) * k / double(bands - 1 > 0 ? bands - 1 : 1)) * w));
    for (index_t i = 0; i < hid; ++i) {
      double acc = op.f1.bias[i];
      for (size_t e = 0; e < f.size(); ++e) acc += double(op.f1.weight(i, index_t(e))) * f[e];
      a[size_t(i)] = std::sin(double(op.s1[i]) * acc);
    }
    for (index_t i = 0; i < hid; ++i) {
      double acc = op.f2.bias[i];
      for (index_t e = 0; e < hid; ++e) acc += double(op.f2.weight(i, e)) * a[size_t(e)];
      b[size_t(i)] = std::sin(double(op.s2[i]) * acc);
    }
    for (index_t c = 0; c < C; ++c) {
      double acc = 0;
      for (index_t e = 0; e < hid; ++e) acc += double(op.f3.weight(c, e)) * b[size_t(e)];
      h(j, c) = acc * std::exp(-tn * double(op.decay[c]));
    }
  }
  return h;
}

/// LongConv (Hyena-like): out_proj(Cg * (h * Bx + D Bx)), the direct causal sum.
inline DMat reference_d(const effattn::star::LongConv& op, const DMat& x, index_t bands = 4, index_t l_max = 2048) {
  const index_t N = x.rows, C = op.width();
  const DMat p = linear_d(op.in_proj, x);
  const DMat h = filter_d(op, N, bands, l_max);
  DMat z(N, C);
  for (index_t t = 0; t < N; ++t)
    for (index_t c = 0; c < C; ++c) {
      double acc = double(op.D[c]) * p(t, c) * p(t, 2 * C + c);
      for (index_t j = 0; j <= t; ++j) acc += h(j, c) * p(t - j, c) * p(t - j, 2 * C + c);
      z(t, c) = p(t, C + c) * acc;
    }
  return linear_d(op.out_proj, z);
}

// The same references on float inputs (the operator tests' entry points).
inline DMat reference(const effattn::star::SwiGLU& op, const Matrix& x) { return reference_d(op, to_d(x)); }
inline DMat reference(const effattn::star::ShortConv& op, const Matrix& x) { return reference_d(op, to_d(x)); }
inline DMat reference(const effattn::star::Recurrence& op, const Matrix& x, DMat* h_out = nullptr) {
  return reference_d(op, to_d(x), h_out);
}
inline DMat reference(const effattn::star::SoftmaxAttention& op, const Matrix& x, double theta = 10000.0) {
  return reference_d(op, to_d(x), theta);
}
inline DMat reference(const effattn::star::LongConv& op, const Matrix& x, index_t bands = 4, index_t l_max = 2048) {
  return reference_d(op, to_d(x), bands, l_max);
}

/// Differential: reference(a) - reference(b).
template <class Op>
DMat reference(const effattn::star::Differential<Op>& op, const Matrix& x) {
  DMat y = reference(op.a, x);
  const DMat yb = reference(op.b, x);
  for (size_t i = 0; i < y.v.size(); ++i) y.v[i] -= yb.v[i];
  return y;
}

/// The float64 reference of any operator, as a callable for the shared checks.
struct Ref {
  template <class Op>
  DMat operator()(const Op& op, const Matrix& x) const { return reference(op, x); }
};

}  // namespace star_testing
