// SPDX-License-Identifier: MIT
// effattn: the dense reference oracle. Obvious loops, float64 accumulation.
// It is the definition every optimised path is tested against; it is simple
// enough to trust by reading, and slow (it is not meant for production).
#pragma once

#include <cmath>
#include <limits>
#include <vector>

#include "../core/half.hpp"
#include "options.hpp"
#include "policies.hpp"

EFFATTN_NAMESPACE_BEGIN

/// Dense attention with a mask predicate and a score functor:
///
///   out[b,h,i,:] = sum_j p_ij v[b,h/G,j,:],  p_ij = softmax over allowed j of
///                  scale * <q[b,h,i,:], k[b,h/G,j,:]> + score(b,h,i,j)
///
/// with G = H / Hkv (grouped-query attention). Shapes: q [B,H,Nq,D],
/// k [B,Hkv,Nk,D], v [B,Hkv,Nk,Dv], out [B,H,Nq,Dv], optional lse [B,H,Nq]
/// (natural log of the sum of exponentials of the allowed logits).
///
/// A fully masked row (no allowed key) gives out = 0 and lse = -inf, never NaN:
/// there is nothing to average, and 0 is what a caller summing partial results
/// with lse weights expects. A NaN logit of an allowed key makes its row NaN.
/// (The engine guarantees only the first: for a non-finite logit of an
/// allowed key its result is unspecified.)
///
/// Memory: one row of Nk doubles, never Nq x Nk.
///
/// Keys and values may be stored in 16 bits (float16 / bfloat16, with float
/// q and out): they are widened exactly, the rest is unchanged.
template <class T, class Mask = NoMask, class Score = NoScore, class KA, class VA,
          std::enable_if_t<std::is_same<std::remove_const_t<KA>, std::remove_const_t<VA>>::value &&
                               (std::is_same<std::remove_const_t<KA>, T>::value ||
                                (std::is_same<T, float>::value && is_half_storage<KA>::value)),
                           int> = 0>
void attention_reference(detail::identity_t<ConstView<T, 4>> q, const View<KA, 4>& k_, const View<VA, 4>& v_,
                         View<T, 4> out, const Mask& mask = {}, const Score& score = {},
                         const AttentionOptions& opt = {}, detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  using KV = std::remove_const_t<KA>;
  const ConstView<KV, 4> k(k_), v(v_);
  const char* op = "attention_reference";
  const auto d = detail::check_attention_args(op, q, k, v, out, lse, opt, 1);
  mask.check(op, d.B, d.H, d.Nq, d.Nk);
  score.check(op, d.B, d.H, d.Nq, d.Nk);
  const index_t G = d.Hkv > 0 ? d.H / d.Hkv : 1;
  std::vector<double> logit(static_cast<size_t>(d.Nk));
  std::vector<char> ok(static_cast<size_t>(d.Nk));
  std::vector<double> acc(static_cast<size_t>(d.Dv));
  for (index_t b = 0; b < d.B; ++b)
    for (index_t h = 0; h < d.H; ++h) {
      const index_t hk = h / G;
      const auto m = mask.bind(b, h, d.Nq, d.Nk);
      const auto sc = score.bind(b, h);
      for (index_t i = 0; i < d.Nq; ++i) {
        double mx = -std::numeric_limits<double>::infinity();
        for (index_t j = 0; j < d.Nk; ++j) {
          ok[j] = m.allowed(i, j);
          if (!ok[j]) continue;
          double s = 0;
          for (index_t e = 0; e < d.D; ++e) s += static_cast<double>(q(b, h, i, e)) * static_cast<double>(k(b, hk, j, e));
          s = s * d.scale + sc.score(i, j);
          logit[j] = s;
          // A NaN logit of an allowed key makes the row NaN (it is not a
          // masked key): keep it as the maximum so that it propagates.
          if (!std::isnan(mx) && (std::isnan(s) || s > mx)) mx = s;
        }
        for (auto& a : acc) a = 0;
        double sum = 0;
        if (mx != -std::numeric_limits<double>::infinity()) {
          for (index_t j = 0; j < d.Nk; ++j) {
            if (!ok[j]) continue;
            const double p = std::exp(logit[j] - mx);
            sum += p;
            for (index_t e = 0; e < d.Dv; ++e) acc[e] += p * static_cast<double>(v(b, hk, j, e));
          }
        }
        // No allowed key (or only -inf logits): out = 0, lse = -inf. Otherwise
        // sum >= 1 (the maximum contributes exp(0)), or NaN, which propagates.
        const bool none = mx == -std::numeric_limits<double>::infinity();
        for (index_t e = 0; e < d.Dv; ++e) out(b, h, i, e) = static_cast<T>(none ? 0.0 : acc[e] / sum);
        if (d.has_lse)
          lse(b, h, i) = static_cast<acc_t<T>>(none ? -std::numeric_limits<double>::infinity() : mx + std::log(sum));
      }
    }
}

EFFATTN_NAMESPACE_END
