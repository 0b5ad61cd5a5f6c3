// SPDX-License-Identifier: MIT
// effattn Transfusion: block-causal attention over a mixed text / image
// sequence, on the engine's per-query key-limit mask.
//
//     allowed(i, j) = j <= i  OR  (i and j are patches of the same image)
//
// BOI and EOI are ordinary causal tokens *outside* the bidirectional block:
// BOI cannot see its image, EOI sees all of it (the image lies before it).
// For every query the allowed keys form a prefix [0, limit(i)) with
//
//     limit(i) = end of i's image   for a patch,
//                i + 1              otherwise,
//
// and limit is non-decreasing in i. So the mask is exactly the engine's
// KeyLimitMask: a key tile at or past the largest limit of a query tile is
// never visited, tiles wholly below the smallest limit run without
// per-element tests, and only the tiles on the "staircase" pay for masking.
#pragma once

#include <cstdint>
#include <vector>

#include "../attention/engine.hpp"
#include "layout.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace transfusion {

/// The per-query key limits of a batch, [B, N] row-major, owning its storage.
/// `mask()` is the engine policy; keep this object alive while it is used.
///
/// Padding: a query at i >= valid_length(b) gets limit = valid_length(b) (it
/// sees every valid token and no padding, so its output is finite but
/// meaningless: ignore it). No valid query ever sees a padding key, and no
/// key tile past the longest valid limit of a query tile is visited.
struct KeyLimits {
  index_t B = 0, N = 0;
  std::vector<index_t> data;  ///< [B, N]

  index_t operator()(index_t b, index_t i) const { return data[static_cast<size_t>(b * N + i)]; }
  ConstView<index_t, 2> view() const { return make_view(data.data(), B, N); }
  KeyLimitMask mask() const { return KeyLimitMask{view()}; }
};

namespace detail {
/// One row of key limits: L's own, then padding up to N (see KeyLimits).
/// L is checked (check_layout) and no longer than N.
inline void fill_key_limits(const Layout& L, index_t N, index_t* row) {
  for (index_t i = 0; i < L.length(); ++i) row[i] = L.key_limit(i);
  for (index_t i = L.length(); i < N; ++i) row[i] = L.length();
}

/// The dense mask [B, N, N] of given limits: mask[b][i][j] = j < limit(b, i).
/// B * N * N, checked before the limits or the mask are allocated.
inline index_t dense_mask_size(index_t B, index_t N, const char* op) {
  const index_t n = ::effattn::detail::checked_product(op, "B * N * N", B, N, N);
  effattn::detail::require(static_cast<std::uint64_t>(n) <= std::vector<std::uint8_t>().max_size(), op, "B * N * N", "= ", n,
          " is more than a vector can hold");
  return n;
}

inline std::vector<std::uint8_t> dense_mask(const KeyLimits& lim, const char* op) {
  const index_t N = lim.N;
  std::vector<std::uint8_t> m(static_cast<size_t>(dense_mask_size(lim.B, N, op)), 0);
  for (index_t b = 0; b < lim.B; ++b)
    for (index_t i = 0; i < N; ++i) {
      std::uint8_t* row = m.data() + (b * N + i) * N;
      for (index_t j = 0; j < lim(b, i); ++j) row[j] = 1;
    }
  return m;
}

inline KeyLimits batch_limits(const BatchLayout& batch, const char* op) {
  effattn::detail::require(batch.N >= 0 && batch.N <= max_sequence_length, op, "batch.N", "must be in [0, max_sequence_length=",
          max_sequence_length, "], got ", batch.N);
  for (size_t b = 0; b < batch.items.size(); ++b) {
    check_layout(batch.items[b], op, "batch.items", b);
    effattn::detail::require(batch.items[b].length() <= batch.N, op, "batch.items", "[", b, "] has ", batch.items[b].length(),
            " tokens, more than batch.N=", batch.N);
  }
  KeyLimits r;
  r.B = batch.batch();
  r.N = batch.N;
  r.data.resize(static_cast<size_t>(::effattn::detail::checked_mul(r.B, r.N, op, "B * N")));
  for (index_t b = 0; b < r.B; ++b)
    if (r.N > 0) fill_key_limits(batch.items[static_cast<size_t>(b)], r.N, r.data.data() + b * r.N);
  return r;
}

inline KeyLimits layout_limits(const Layout& layout, const char* op) {
  check_layout(layout, op);
  KeyLimits r;
  r.B = 1;
  r.N = layout.length();
  r.data.resize(static_cast<size_t>(r.N));
  if (r.N > 0) fill_key_limits(layout, r.N, r.data.data());
  return r;
}
}  // namespace detail

/// Key limits of a padded batch (see KeyLimits for padding). Throws
/// parameter_error for an inconsistent layout (detail::check_layout), a
/// layout longer than batch.N, or batch.N outside [0, max_sequence_length].
inline KeyLimits block_causal_limits(const BatchLayout& batch) {
  return detail::batch_limits(batch, "transfusion::block_causal_limits");
}

/// Key limits of one sequence (B = 1, N = its length).
inline KeyLimits block_causal_limits(const Layout& layout) {
  return detail::layout_limits(layout, "transfusion::block_causal_limits");
}

/// The dense boolean mask [B, N, N] (1 = may attend), for users who need one
/// (e.g. to feed another attention implementation). mask[b][i][j] = j <
/// limit(b, i): the block-causal rule on valid tokens; padding keys are never
/// allowed and padding queries see every valid key. O(B N^2) memory.
inline std::vector<std::uint8_t> block_causal_dense_mask(const BatchLayout& batch) {
  const char* op = "transfusion::block_causal_dense_mask";
  effattn::detail::require(batch.N >= 0, op, "batch.N", "must be >= 0, got ", batch.N);
  detail::dense_mask_size(batch.batch(), batch.N, op);
  return detail::dense_mask(detail::batch_limits(batch, op), op);
}

/// The dense mask [N, N] of one sequence.
inline std::vector<std::uint8_t> block_causal_dense_mask(const Layout& layout) {
  const char* op = "transfusion::block_causal_dense_mask";
  detail::check_layout(layout, op);
  detail::dense_mask_size(1, layout.length(), op);
  return detail::dense_mask(detail::layout_limits(layout, op), op);
}

namespace detail {
template <class T>
void check_block_causal_args(const char* op, const ConstView<T, 4>& q, const ConstView<T, 4>& k,
                             const ConstView<index_t, 2>& limit) {
  ::effattn::detail::check_view(q, op, "q", false);
  ::effattn::detail::check_view(k, op, "k", false);
  ::effattn::detail::check_view(limit, op, "limit", false);
  if (q.dim(2) != k.dim(2))
    EFFATTN_THROW(shape_error(::effattn::detail::concat(
        op, ": block-causal attention is self-attention: q [B,H,N,D] and k [B,Hkv,N,D] need the same N, got q ",
        ::effattn::detail::shape_str(q.shape()), " and k ", ::effattn::detail::shape_str(k.shape()))));
  ::effattn::detail::check_shape(limit, op, "limit", "[B,N]", {q.dim(0), q.dim(2)});
}
}  // namespace detail

/// Block-causal self-attention on the tiled engine:
///
///   out[b,h,i,:] = sum_{j < limit[b,i]} softmax_j(scale <q_i, k_j>) v_j
///
/// Shapes: q [B,H,N,D], k [B,Hkv,N,D], v [B,Hkv,N,Dv], out [B,H,N,Dv], lse
/// [B,H,N] optional (pass {} to skip); limit [B,N] from block_causal_limits()
/// (any non-decreasing limits in [0, N] are accepted: the engine checks).
/// GQA when H is a multiple of Hkv. Key tiles at or past the largest limit of
/// a query tile are skipped without being visited. Results are bit-identical
/// for any thread count. Throws shape_error / parameter_error before writing;
/// the executor is checked first (parameter_error for num_threads < 0).
template <class T>
void block_causal_attention(::effattn::detail::identity_t<ConstView<T, 4>> q,
                            ::effattn::detail::identity_t<ConstView<T, 4>> k,
                            ::effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out,
                            ConstView<index_t, 2> limit, const AttentionOptions& opt = {}, const Executor& ex = {},
                            ::effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  const char* op = "transfusion::block_causal_attention";
  ::effattn::detail::check_executor(ex, op);
  detail::check_block_causal_args(op, q, k, limit);
  attention<T>(q, k, v, out, KeyLimitMask{limit}, NoScore{}, opt, ex, lse);
}

/// Same, with the limits of a KeyLimits object.
template <class T>
void block_causal_attention(::effattn::detail::identity_t<ConstView<T, 4>> q,
                            ::effattn::detail::identity_t<ConstView<T, 4>> k,
                            ::effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out, const KeyLimits& limits,
                            const AttentionOptions& opt = {}, const Executor& ex = {},
                            ::effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  const char* op = "transfusion::block_causal_attention";
  ::effattn::detail::check_executor(ex, op);
  effattn::detail::require(limits.B >= 0 && limits.N >= 0, op, "limits", "must have B, N >= 0, got B=", limits.B, " N=", limits.N);
  effattn::detail::require(limits.data.size() == static_cast<size_t>(::effattn::detail::checked_mul(limits.B, limits.N, op, "limits B * N")),
          op, "limits", "must hold B * N = ", limits.B, " * ", limits.N, " entries, got ", limits.data.size());
  block_causal_attention<T>(q, k, v, out, limits.view(), opt, ex, lse);
}

/// The dense float64 oracle of block_causal_attention (same contract).
template <class T>
void block_causal_attention_reference(::effattn::detail::identity_t<ConstView<T, 4>> q,
                                      ::effattn::detail::identity_t<ConstView<T, 4>> k,
                                      ::effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out,
                                      ConstView<index_t, 2> limit, const AttentionOptions& opt = {},
                                      ::effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  detail::check_block_causal_args("transfusion::block_causal_attention_reference", q, k, limit);
  attention_reference<T>(q, k, v, out, KeyLimitMask{limit}, NoScore{}, opt, lse);
}

}  // namespace transfusion
EFFATTN_NAMESPACE_END
