// SPDX-License-Identifier: MIT
// effattn: the materialised baseline. Computes every score of an (b, h) slice
// with an Eigen GEMM, applies the mask and bias, takes a vectorised row
// softmax and multiplies with V by a second GEMM. It allocates Nq x Nk per
// thread: it exists to measure the tiled engine against the strongest
// straightforward implementation, not for production use.
#pragma once

#include <Eigen/Core>
#include <limits>

#include "../core/executor.hpp"
#include "options.hpp"
#include "policies.hpp"

EFFATTN_NAMESPACE_BEGIN

/// Same contract as attention() (shapes, GQA, masks, scores, lse, fully
/// masked rows give 0), computed by materialising the Nq x Nk score matrix of
/// one (b, h) at a time per thread.
template <class T, class Mask = NoMask, class Score = NoScore>
void attention_materialized(detail::identity_t<ConstView<T, 4>> q, detail::identity_t<ConstView<T, 4>> k,
                            detail::identity_t<ConstView<T, 4>> v, View<T, 4> out, const Mask& mask = {},
                            const Score& score = {}, const AttentionOptions& opt = {}, const Executor& ex = {},
                            detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  const char* op = "attention_materialized";
  detail::check_executor(ex, op);
  const auto d = detail::check_attention_args(op, q, k, v, out, lse, opt, 1);
  mask.check(op, d.B, d.H, d.Nq, d.Nk);
  score.check(op, d.B, d.H, d.Nq, d.Nk);
  // The score matrix of one (b, h) is Nq x Nk per thread: its size must be
  // representable before anything is allocated.
  (void)detail::checked_mul(d.Nq, d.Nk, op, "score matrix Nq * Nk");
  if (d.B == 0 || d.H == 0 || d.Nq == 0) return;  // (no product: it could overflow)
  if (d.Nk == 0) {  // no key at all: every query is fully masked
    for (index_t b = 0; b < d.B; ++b)
      for (index_t h = 0; h < d.H; ++h)
        for (index_t i = 0; i < d.Nq; ++i) {
          for (index_t e = 0; e < d.Dv; ++e) out(b, h, i, e) = T(0);
          if (d.has_lse) lse(b, h, i) = -std::numeric_limits<acc_t<T>>::infinity();
        }
    return;
  }
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using CMap = Eigen::Map<const Mat, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  using OMap = Eigen::Map<Mat, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  using Stride = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;
  const index_t G = d.Hkv > 0 ? d.H / d.Hkv : 1;
  const T ninf = -std::numeric_limits<T>::infinity();
  const double work = static_cast<double>(d.B) * static_cast<double>(d.H) * static_cast<double>(d.Nq) *
                      static_cast<double>(d.Nk) * static_cast<double>(d.D + d.Dv);
  detail::parallel_items(detail::executor_for(ex, work), d.B * d.H, [&] { return Mat(d.Nq, d.Nk); }, [&](index_t bh, Mat& s) {
    const index_t b = bh / d.H, h = bh % d.H, hk = h / G;
    CMap Q(q.data() + b * q.stride(0) + h * q.stride(1), d.Nq, d.D, Stride(q.stride(2), q.stride(3)));
    CMap K(k.data() + b * k.stride(0) + hk * k.stride(1), d.Nk, d.D, Stride(k.stride(2), k.stride(3)));
    CMap V(v.data() + b * v.stride(0) + hk * v.stride(1), d.Nk, d.Dv, Stride(v.stride(2), v.stride(3)));
    OMap O(out.data() + b * out.stride(0) + h * out.stride(1), d.Nq, d.Dv, Stride(out.stride(2), out.stride(3)));
    // The scale goes on the left factor so that Eigen folds it into its GEMM.
    s.noalias() = (static_cast<T>(d.scale) * Q) * K.transpose();
    const auto bm = mask.bind(b, h, d.Nq, d.Nk);
    const auto bs = score.bind(b, h);
    for (index_t i = 0; i < d.Nq; ++i) {
      T* row = s.data() + i * d.Nk;
      // Score, then mask (which overwrites a NaN score of a masked key).
      if (Score::active) bs.apply(i, 0, d.Nk, row, 1);
      bm.apply(i, 0, d.Nk, row, 1);
      auto r = s.row(i).array();
      const T mx = d.Nk > 0 ? r.maxCoeff() : ninf;
      T sum = 0;
      if (mx == ninf) {
        r.setZero();
      } else {
        // Eigen's vectorised exp clamps its argument, so exp(-inf) is a tiny
        // positive number, not 0: a masked key must weigh exactly 0.
        r = (r == ninf).select(T(0), (r - mx).exp());
        sum = r.sum();
        r /= sum;
      }
      if (d.has_lse) lse(b, h, i) = sum > 0 ? static_cast<acc_t<T>>(mx + std::log(sum)) : -std::numeric_limits<acc_t<T>>::infinity();
    }
    // A masked key has probability exactly 0, but 0 * inf = NaN inside the
    // GEMM: when V holds a non-finite value, skip the zero probabilities.
    if (V.allFinite()) {
      O.noalias() = s * V;
    } else {
      for (index_t i = 0; i < d.Nq; ++i)
        for (index_t e = 0; e < d.Dv; ++e) {
          T acc = 0;
          for (index_t j = 0; j < d.Nk; ++j)
            if (s(i, j) != T(0)) acc += s(i, j) * V(j, e);
          O(i, e) = acc;
        }
    }
  });
}

EFFATTN_NAMESPACE_END
