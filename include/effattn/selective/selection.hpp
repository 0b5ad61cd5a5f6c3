// SPDX-License-Identifier: MIT
// effattn::selective: selective attention (Leviathan, Kalman, Matias 2024,
// arXiv 2410.02703): options, argument checks, the dense float64 reference and
// the memory measure.
//
// Per batch element, with C_h = scale * q_h k_h^T the causal logits of head h:
//
//   S      = ReLU(C_s)            s = the selection head (head 0 by default);
//                                 above the diagonal C_s = -inf, so S = 0 there
//   S[:,0] = 0                    nobody masks the first token (<BOS>)
//   S[i,i] = 0                    no token masks itself
//   F[i,j] = sum_{i' < i} S[i',j] the sum runs over earlier QUERIES (rows)
//   out_h  = softmax(C_h - F) v_h for every head h, the selection head included
//
// Consequences used throughout: F[i,j] = 0 for j = 0 and for j >= i - 1, and
// F[i,j] never decreases as i grows. This is the variant of the paper's
// listing pinned down by tests/data/golden/README.md section 4.
//
// Selection groups (optional extension): `group_selection_heads = {s_0, ...,
// s_{G-1}}` splits the H query heads into G contiguous groups of H/G heads;
// group g subtracts the F built from head s_g. Empty (the default) means one
// group whose selection head is `selection_head`.
#pragma once

#include <cmath>
#include <initializer_list>
#include <limits>
#include <type_traits>
#include <vector>

#include "../attention/options.hpp"
#include "../attention/policies.hpp"
#include "../attention/reference.hpp"
#include "../core/error.hpp"
#include "../core/view.hpp"

EFFATTN_NAMESPACE_BEGIN

namespace selective {

/// Options of selective attention (prefill, reference and the pruned cache).
struct SelectiveOptions {
  /// The attention options of every head: `scale` (0 means 1/sqrt(head_dim);
  /// the selection logits use it too), `backend` (Backend::reference runs the
  /// dense float64 oracle, O(N^2) memory: for tests) and the tile sizes
  /// `block_q` / `block_k` of the tiled prefill (0: the engine's defaults;
  /// block_q is rounded up to the query quantum). The pruned cache's decoding
  /// steps use the scale and the backend only.
  AttentionOptions attention;
  /// The head whose ReLU'd logits build F (must be in [0, H)).
  index_t selection_head = 0;
  /// Optional: one selection head per contiguous group of query heads (the
  /// number of entries must divide H). Overrides `selection_head` when set.
  std::vector<index_t> group_selection_heads;
};

namespace detail {

/// The selection head of every group, checked against H.
inline std::vector<index_t> selection_heads(const SelectiveOptions& opt, index_t H, const char* op) {
  using effattn::detail::concat;
  std::vector<index_t> sel = opt.group_selection_heads;
  if (sel.empty()) sel.push_back(opt.selection_head);
  const index_t ng = static_cast<index_t>(sel.size());
  if (H > 0 && H % ng != 0)
    EFFATTN_THROW(parameter_error(concat(op, ": group_selection_heads has ", ng,
                                         " entries, which must divide the number of query heads H=", H)));
  for (index_t g = 0; g < ng; ++g)
    if (sel[g] < 0 || (H > 0 && sel[g] >= H))
      EFFATTN_THROW(parameter_error(concat(op, ": selection head ", sel[g],
                                           opt.group_selection_heads.empty() ? "" : " (group_selection_heads)",
                                           " out of range: must be in [0, H=", H, ")")));
  return sel;
}

/// Checks a self-attention problem for selective attention: the attention
/// shapes and options (via check_attention_args), Nq == Nk and the selection heads.
template <class T, class L>
effattn::detail::AttnDims check_selective_args(const char* op, const ConstView<T, 4>& q, const ConstView<T, 4>& k,
                                               const ConstView<T, 4>& v, const View<T, 4>& out, const View<L, 3>& lse,
                                               const SelectiveOptions& opt, index_t tile_quantum,
                                               std::vector<index_t>& sel) {
  using effattn::detail::concat;
  using effattn::detail::shape_str;
  const auto d = effattn::detail::check_attention_args(op, q, k, v, out, lse, opt.attention, tile_quantum);
  if (d.Nq != d.Nk)
    EFFATTN_THROW(shape_error(concat(op, ": selective attention is self-attention: q ", shape_str(q.shape()),
                                     " and k ", shape_str(k.shape()), " must have the same number of tokens N")));
  sel = selection_heads(opt, d.H, op);
  return d;
}

/// The dense float64 computation of selective attention on checked
/// arguments: materialises S and F (B x G x N x N), runs the reference
/// attention with -F as the score, and writes the optional S, F [B,G,N,N]
/// and f_next [B,G,N] = F's next row (pass {} to skip any of them).
template <class T>
void selective_dense(const effattn::detail::AttnDims& d, const std::vector<index_t>& sel, const ConstView<T, 4>& q,
                     const ConstView<T, 4>& k, const ConstView<T, 4>& v, const View<T, 4>& out,
                     const SelectiveOptions& opt, const View<acc_t<T>, 3>& lse, View<double, 4> S,
                     View<double, 4> F, View<double, 3> f_next, const char* op) {
  const index_t ng = static_cast<index_t>(sel.size()), N = d.Nq, G = d.Hkv > 0 ? d.H / d.Hkv : 1;
  const index_t hpg = d.H > 0 ? d.H / ng : 1;
  if (d.B == 0 || d.H == 0 || N == 0) {  // (no product: it could overflow)
    // No query head (or no token, or no sequence): there is no selection head
    // to read, so S = F = 0, and out and lse are empty. S, F and f_next, when
    // given, are real outputs (B * G * N (* N) elements of caller memory).
    for (View<double, 4>* x : {&S, &F})
      if (x->data() != nullptr && !x->empty())
        for (index_t b = 0; b < d.B; ++b)
          for (index_t g = 0; g < ng; ++g)
            for (index_t i = 0; i < N; ++i)
              for (index_t j = 0; j < N; ++j) (*x)(b, g, i, j) = 0.0;
    if (f_next.data() != nullptr)
      for (index_t b = 0; b < d.B; ++b)
        for (index_t g = 0; g < ng; ++g)
          for (index_t j = 0; j < N; ++j) f_next(b, g, j) = 0.0;
    return;
  }

  // Dense S and F in double, [B][G][N][N].
  const size_t nn = static_cast<size_t>(effattn::detail::checked_mul(N, N, op, "dense F N * N"));
  std::vector<double> Sd(
      static_cast<size_t>(effattn::detail::checked_product(op, "dense S and F B * G * N * N", d.B, ng, N, N)), 0.0),
      Fd(Sd.size(), 0.0);
  for (index_t b = 0; b < d.B; ++b)
    for (index_t g = 0; g < ng; ++g) {
      double* s = Sd.data() + static_cast<size_t>(b * ng + g) * nn;
      double* f = Fd.data() + static_cast<size_t>(b * ng + g) * nn;
      const index_t hs = sel[g], hk = hs / G;
      for (index_t i = 0; i < N; ++i)
        for (index_t j = 1; j < i; ++j) {  // j = 0 (BOS), j = i (self), j > i (causal) stay 0
          double c = 0;
          for (index_t e = 0; e < d.D; ++e) c += static_cast<double>(q(b, hs, i, e)) * static_cast<double>(k(b, hk, j, e));
          c *= d.scale;
          s[i * N + j] = c > 0 ? c : 0.0;
        }
      for (index_t i = 1; i < N; ++i)
        for (index_t j = 0; j < N; ++j) f[i * N + j] = f[(i - 1) * N + j] + s[(i - 1) * N + j];
    }

  auto score = make_functor_score([&](index_t b, index_t h, index_t i, index_t j) -> double {
    return -Fd[static_cast<size_t>(b * ng + h / hpg) * nn + static_cast<size_t>(i * N + j)];
  });
  AttentionOptions ao = opt.attention;
  ao.backend = Backend::reference;
  attention_reference<T>(q, k, v, out, CausalMask{}, score, ao, lse);
  for (index_t b = 0; b < d.B; ++b)
    for (index_t g = 0; g < ng; ++g) {
      const size_t base = static_cast<size_t>(b * ng + g) * nn;
      for (index_t i = 0; i < N; ++i)
        for (index_t j = 0; j < N; ++j) {
          const size_t o = base + static_cast<size_t>(i * N + j);
          if (S.data()) S(b, g, i, j) = Sd[o];
          if (F.data()) F(b, g, i, j) = Fd[o];
        }
      if (f_next.data())
        for (index_t j = 0; j < N; ++j) {
          const size_t o = base + static_cast<size_t>((N - 1) * N + j);
          f_next(b, g, j) = Fd[o] + Sd[o];
        }
    }
}

}  // namespace detail

/// Dense reference of selective attention: obvious loops, float64 throughout.
/// Materialises S and F (N x N per batch element and group): for tests only.
///
///   q [B,H,N,D], k [B,Hkv,N,D], v [B,Hkv,N,Dv], out [B,H,N,Dv] (H a multiple
///   of Hkv; the selection head s reads k head s / (H/Hkv)),
///   lse [B,H,N] optional: log-sum-exp of the final logits (scaled, causal, - F),
///   S [B,G,N,N] optional: the selection matrix after the constraints (before the shift),
///   F [B,G,N,N] optional: F[b,g,i,j] = sum_{i'<i} S[b,g,i',j],
/// with G the number of selection groups (1 unless group_selection_heads is set).
/// Pass {} for an output you do not want. N = 1 and N = 0 are allowed.
/// opt.attention.backend is checked but not used (this is the oracle), and
/// the tile sizes only checked.
/// Throws shape_error / parameter_error before writing anything.
template <class T>
void selective_attention_reference(effattn::detail::identity_t<ConstView<T, 4>> q,
                                   effattn::detail::identity_t<ConstView<T, 4>> k,
                                   effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out,
                                   const SelectiveOptions& opt = {},
                                   effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}, View<double, 4> S = {},
                                   View<double, 4> F = {}) {
  const char* op = "selective_attention_reference";
  std::vector<index_t> sel;
  const auto d = detail::check_selective_args(op, q, k, v, out, lse, opt, 1, sel);
  const index_t ng = static_cast<index_t>(sel.size()), N = d.Nq;
  auto check_nn = [&](const View<double, 4>& x, const char* name) {
    if (x.data() == nullptr) return;
    effattn::detail::check_view(x, op, name, true);
    effattn::detail::check_shape(x, op, name, "[B,G,N,N]", {d.B, ng, N, N});
    effattn::detail::check_no_alias(x, name, q, "q", op);
    effattn::detail::check_no_alias(x, name, k, "k", op);
    effattn::detail::check_no_alias(x, name, v, "v", op);
    effattn::detail::check_no_alias(x, name, out, "out", op);
    if (lse.data()) effattn::detail::check_no_alias(x, name, lse, "lse", op);
  };
  check_nn(S, "S");
  check_nn(F, "F");
  if (S.data() && F.data()) effattn::detail::check_no_alias(S, "S", F, "F", op);
  detail::selective_dense<T>(d, sel, q, k, v, out, opt, lse, S, F, {}, op);
}

/// The paper's memory measure for one query: with n tokens in its context and
/// f_row[j] = F[i, j] for those n tokens (j < n),
///
///     M = n - sum_j min(f_row[j], tau) / tau,
///
/// the number of context tokens the query still needs (a token with F >= tau
/// counts as dropped, a partly masked one fractionally). This is the paper's
/// M_i = i - sum_j min(F[i,j], tau)/tau with 1-based positions: for the
/// 0-based query i, n = i + 1. Taking the maximum over the queries of a
/// sequence gives a KV budget for it. tau must be finite and > 0 (the paper
/// uses 1); f_row must be finite.
inline double selective_memory_requirement(ConstView<double, 1> f_row, double tau = 1.0) {
  const char* op = "selective_memory_requirement";
  effattn::detail::check_view(f_row, op, "f_row", false);
  effattn::detail::require(std::isfinite(tau) && tau > 0, op, "tau", "must be finite and > 0, got ", tau);
  double masked = 0;
  for (index_t j = 0; j < f_row.dim(0); ++j) {
    const double f = f_row(j);
    effattn::detail::require(std::isfinite(f), op, "f_row", "must be finite, got f_row[", j, "]=", f);
    masked += (f < tau ? (f > 0 ? f : 0.0) : tau) / tau;
  }
  return static_cast<double>(f_row.dim(0)) - masked;
}

/// The memory measure of every query of a sequence, M[b,i] (i 0-based, n = i+1
/// tokens in context), computed by streaming F one row at a time: O(N) memory
/// per batch element, O(N^2 D) time. q [B,H,N,D], k [B,Hkv,N,D], m [B,N].
/// With selection groups a token counts as dropped only as far as every group
/// masks it (F_eff = min over groups), the rule the pruned cache evicts by.
/// Of opt.attention only the scale is used (and checked).
template <class T>
void selective_memory_profile(effattn::detail::identity_t<ConstView<T, 4>> q,
                              effattn::detail::identity_t<ConstView<T, 4>> k, View<double, 2> m,
                              const SelectiveOptions& opt = {}, double tau = 1.0) {
  using effattn::detail::concat;
  using effattn::detail::shape_str;
  const char* op = "selective_memory_profile";
  effattn::detail::check_view(q, op, "q", false);
  effattn::detail::check_view(k, op, "k", false);
  effattn::detail::check_view(m, op, "m", true);
  const index_t B = q.dim(0), H = q.dim(1), N = q.dim(2), D = q.dim(3), Hkv = k.dim(1);
  if (D < 1) EFFATTN_THROW(shape_error(concat(op, ": q must have head_dim D >= 1, got q ", shape_str(q.shape()))));
  // As in attention: k may have no head only when q has none.
  if ((Hkv < 1 && H > 0) || (Hkv > 0 && H % Hkv != 0))
    EFFATTN_THROW(shape_error(concat(op, ": k heads Hkv must divide q heads H; q ", shape_str(q.shape()), ", k ",
                                     shape_str(k.shape()))));
  effattn::detail::check_shape(k, op, "k", "[B,Hkv,N,D]", {B, Hkv, N, D});
  effattn::detail::check_shape(m, op, "m", "[B,N]", {B, N});
  effattn::detail::check_no_alias(m, "m", q, "q", op);
  effattn::detail::check_no_alias(m, "m", k, "k", op);
  const double scale_opt = opt.attention.scale;
  effattn::detail::require(std::isfinite(scale_opt) && scale_opt >= 0, op, "scale",
                           "must be finite and > 0 (or 0 for 1/sqrt(D)), got ", scale_opt);
  effattn::detail::require(std::isfinite(tau) && tau > 0, op, "tau", "must be finite and > 0, got ", tau);
  const std::vector<index_t> sel = detail::selection_heads(opt, H, op);
  const index_t ng = static_cast<index_t>(sel.size()), G = Hkv > 0 ? H / Hkv : 1;
  const double scale = scale_opt == 0 ? 1.0 / std::sqrt(static_cast<double>(D)) : scale_opt;
  if (B == 0 || N == 0) return;  // m is empty (B or N may then be huge: nothing is allocated)
  if (H == 0) {
    // No query head, so no selection head: F = 0 and every query needs its
    // whole context.
    for (index_t b = 0; b < B; ++b)
      for (index_t i = 0; i < N; ++i) m(b, i) = static_cast<double>(i + 1);
    return;
  }
  std::vector<double> f(static_cast<size_t>(effattn::detail::checked_mul(ng, N, op, "F rows G * N")));
  for (index_t b = 0; b < B; ++b) {
    std::fill(f.begin(), f.end(), 0.0);
    for (index_t i = 0; i < N; ++i) {
      // Row i of F is the sum of the S rows of queries < i.
      double masked = 0;
      for (index_t j = 0; j <= i; ++j) {
        double fe = f[j];
        for (index_t g = 1; g < ng; ++g) fe = std::min(fe, f[g * N + j]);
        masked += (fe < tau ? (fe > 0 ? fe : 0.0) : tau) / tau;
      }
      m(b, i) = static_cast<double>(i + 1) - masked;
      for (index_t g = 0; g < ng; ++g) {
        const index_t hs = sel[g], hk = hs / G;
        for (index_t j = 1; j < i; ++j) {
          double c = 0;
          for (index_t e = 0; e < D; ++e) c += static_cast<double>(q(b, hs, i, e)) * static_cast<double>(k(b, hk, j, e));
          c *= scale;
          if (c > 0) f[g * N + j] += c;
        }
      }
    }
  }
}

}  // namespace selective

// ------------------------------------------------ deprecated effattn:: names
// Selective attention lived in namespace effattn until 0.1; these forwarders
// keep old code compiling for one release. (The options' scale, block_q and
// block_k are now SelectiveOptions::attention.scale, .block_q and .block_k.)
// The options parameter is a template parameter so that a call found both
// here and, through the options' namespace, in effattn::selective (argument-
// dependent lookup) resolves to the effattn::selective function instead of
// being ambiguous.

using SelectiveOptions [[deprecated("use effattn::selective::SelectiveOptions")]] = selective::SelectiveOptions;

template <class T, class O = selective::SelectiveOptions,
          std::enable_if_t<std::is_same<O, selective::SelectiveOptions>::value, int> = 0>
[[deprecated("use effattn::selective::selective_attention_reference")]] void selective_attention_reference(
    detail::identity_t<ConstView<T, 4>> q, detail::identity_t<ConstView<T, 4>> k, detail::identity_t<ConstView<T, 4>> v,
    View<T, 4> out, const O& opt = {}, detail::identity_t<View<acc_t<T>, 3>> lse = {}, View<double, 4> S = {},
    View<double, 4> F = {}) {
  selective::selective_attention_reference<T>(q, k, v, out, opt, lse, S, F);
}

[[deprecated("use effattn::selective::selective_memory_requirement")]] inline double selective_memory_requirement(
    ConstView<double, 1> f_row, double tau = 1.0) {
  return selective::selective_memory_requirement(f_row, tau);
}

template <class T, class O = selective::SelectiveOptions,
          std::enable_if_t<std::is_same<O, selective::SelectiveOptions>::value, int> = 0>
[[deprecated("use effattn::selective::selective_memory_profile")]] void selective_memory_profile(
    detail::identity_t<ConstView<T, 4>> q, detail::identity_t<ConstView<T, 4>> k, View<double, 2> m, const O& opt = {},
    double tau = 1.0) {
  selective::selective_memory_profile<T>(q, k, m, opt, tau);
}

EFFATTN_NAMESPACE_END
