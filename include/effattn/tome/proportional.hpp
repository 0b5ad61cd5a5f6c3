// SPDX-License-Identifier: MIT
// effattn::tome: proportional attention (ToMe, eq. 1 of the paper; official
// `ToMeAttention.forward`): softmax(q k^T * scale + log(size)[key]) v, so that a
// merged token that stands for s original tokens weighs as s keys would.
//
// It runs on the tiled engine with a per-key score policy (KeyBiasScore; in
// double a twin with a double bias): the only extra memory is the [B, Nk]
// vector log(size). No N x N buffer. float and double, as effattn::attention.
#pragma once

#include <cmath>
#include <type_traits>
#include <vector>

#include "../attention/engine.hpp"
#include "../core/error.hpp"
#include "../core/view.hpp"
#include "matching.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace tome {

/// log_size[b, j] = log(size[b, j]), T float or double. size [B, N] (a
/// [B, N, 1] tensor viewed as rank 2) must be finite and > 0
/// (parameter_error); log_size [B, N]. In place (log_size over size's memory)
/// only with size's own strides.
template <class T>
void log_size(effattn::detail::identity_t<ConstView<T, 2>> size, View<T, 2> out) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "tome::log_size supports float and double");
  const char* op = "tome::log_size";
  effattn::detail::check_view(size, op, "size", false);
  effattn::detail::check_view(out, op, "log_size", true);
  effattn::detail::check_shape(out, op, "log_size", "[B,N]", {size.dim(0), size.dim(1)});
  if (size.empty()) return;  // nothing to check or write, whatever the other extent
  for (index_t b = 0; b < size.dim(0); ++b)
    for (index_t j = 0; j < size.dim(1); ++j)
      effattn::detail::require(std::isfinite(size(b, j)) && size(b, j) > T(0), op, "size", "must be finite and > 0, got ",
                               size(b, j), " at [", b, ",", j, "]");
  if (out.data() != size.data())
    effattn::detail::check_no_alias(out, "log_size", size, "size", op);
  else if (out.strides() != size.strides())
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": in-place log_size must have size's strides")));
  for (index_t b = 0; b < size.dim(0); ++b)
    for (index_t j = 0; j < size.dim(1); ++j) out(b, j) = std::log(size(b, j));
}

/// Proportional attention with any mask policy, T float or double (as
/// effattn::attention):
///   out[b,h,i] = sum_j softmax_j(scale <q_i, k_j> + log size[b, j]) v_j.
/// q [B,H,Nq,D], k [B,Hkv,Nk,D], v [B,Hkv,Nk,Dv], out [B,H,Nq,Dv] (as
/// effattn::attention), size [B, Nk] token sizes (> 0), or an absent view
/// ({}) for plain attention (the official size=None). lse [B,H,Nq] optional
/// (pass {} to skip): the log-sum-exp of the biased logits, as attention's
/// with KeyBiasScore{log size}. Throws before writing anything (a negative
/// executor thread count first of all).
template <class T, class Mask = NoMask>
void proportional_attention(effattn::detail::identity_t<ConstView<T, 4>> q,
                            effattn::detail::identity_t<ConstView<T, 4>> k,
                            effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out,
                            effattn::detail::identity_t<ConstView<T, 2>> size, const Mask& mask = {},
                            const AttentionOptions& opt = {}, const Executor& ex = {},
                            effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "tome::proportional_attention supports float and double");
  const char* op = "tome::proportional_attention";
  effattn::detail::check_executor(ex, op);
  if (detail::is_absent(size)) {
    attention<T>(q, k, v, out, mask, NoScore{}, opt, ex, lse);
    return;
  }
  effattn::detail::check_view(size, op, "size", false);
  effattn::detail::check_view(k, op, "k", false);
  effattn::detail::check_shape(size, op, "size", "[B,Nk]", {k.dim(0), k.dim(2)});
  // size passed check_view, so its element count fits; an empty size gives an
  // empty (null) lg whose pointer the score never offsets.
  std::vector<T> lg(static_cast<size_t>(size.size()));
  log_size<T>(size, make_view(lg.data(), size.dim(0), size.dim(1)));
  const ConstView<T, 2> lgv = make_view<const T>(lg.data(), size.dim(0), size.dim(1));
  if constexpr (std::is_same<T, float>::value)
    attention<T>(q, k, v, out, mask, KeyBiasScore{lgv}, opt, ex, lse);
  else
    attention<T>(q, k, v, out, mask, KeyBiasScoreT<double>{lgv}, opt, ex, lse);
}

}  // namespace tome
EFFATTN_NAMESPACE_END
