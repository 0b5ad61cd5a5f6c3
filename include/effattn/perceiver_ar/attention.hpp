// SPDX-License-Identifier: MIT
// effattn::perceiver_ar: the two attention operators of Perceiver AR.
//
//  - cross_attention: M latent queries (the last M real positions) attend
//    causally into all N inputs: O(N * M) work instead of O(N^2);
//  - latent_attention: causal self-attention among the M latents, with the
//    official processor mask (diagonal always allowed): O(M^2) per layer.
//
// Both run on the tiled engine (attention/engine.hpp) with prefix-mask
// policies, so masked blocks are skipped and full blocks pay no mask test.
// See masks.hpp for the positions and masks, and docs/perceiver_ar.md.
#pragma once

#include <vector>

#include "../attention/engine.hpp"
#include "masks.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace perceiver_ar {

namespace detail {

template <class T, class KV>
void check_common(const char* op, const ConstView<T, 4>& q, const ConstView<KV, 4>& k, const ConstView<KV, 4>& v) {
  effattn::detail::check_view(q, op, "q", false);
  effattn::detail::check_view(k, op, "k", false);
  effattn::detail::check_view(v, op, "v", false);
  if (k.dim(2) != v.dim(2))
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": k and v must have the same number of positions, got k ",
                                                      effattn::detail::shape_str(k.shape()), " and v ",
                                                      effattn::detail::shape_str(v.shape()))));
}

/// Every check of cross_attention (the engine's included), before anything is
/// allocated or written.
template <class T, class KV>
void check_cross(const char* op, const ConstView<T, 4>& q, const ConstView<KV, 4>& k, const ConstView<KV, 4>& v,
                 const View<T, 4>& out, const ConstView<index_t, 1>& valid_length, const AttentionOptions& opt,
                 const View<acc_t<T>, 3>& lse, index_t tile_quantum) {
  check_common(op, q, k, v);
  const index_t M = q.dim(2), N = k.dim(2);
  effattn::detail::require(M >= 1, op, "M", "(q.dim(2), the number of latents) must be >= 1, got q ",
          effattn::detail::shape_str(q.shape()));
  effattn::detail::require(M <= N, op, "M", "(q.dim(2), the number of latents) must be <= N=k.dim(2)=", N, ", got q ",
          effattn::detail::shape_str(q.shape()), " k ", effattn::detail::shape_str(k.shape()));
  effattn::detail::check_attention_args(op, q, k, v, out, lse, opt, tile_quantum);
  // The key limits are [B, M] (even when no head makes the output empty).
  effattn::detail::checked_mul(q.dim(0), M, op, "key limits B * M");
  check_valid_length(valid_length, q.dim(0), N, op);
}

/// Every check of latent_attention (the engine's included).
template <class T>
void check_latent(const char* op, const ConstView<T, 4>& q, const ConstView<T, 4>& k, const ConstView<T, 4>& v,
                  const View<T, 4>& out, const ConstView<index_t, 1>& valid_length, const AttentionOptions& opt,
                  const View<acc_t<T>, 3>& lse, index_t tile_quantum) {
  check_common(op, q, k, v);
  const index_t M = q.dim(2);
  effattn::detail::require(M >= 1, op, "M", "(q.dim(2), the number of latents) must be >= 1, got q ",
          effattn::detail::shape_str(q.shape()));
  if (k.dim(2) != M)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": k must hold the same M=", M,
                                                      " latents as q, got q ", effattn::detail::shape_str(q.shape()),
                                                      " k ", effattn::detail::shape_str(k.shape()))));
  effattn::detail::check_attention_args(op, q, k, v, out, lse, opt, tile_quantum);
  // The latents are [B, M] (even when no head makes the output empty).
  effattn::detail::checked_mul(q.dim(0), M, op, "latents B * M");
  check_valid_length(valid_length, q.dim(0), -1, op);  // any L >= M makes every latent valid
}

/// True when the output has no element (B, H or M is 0): nothing to compute,
/// nothing to allocate (B or M may then be huge).
template <class T>
bool no_output(const View<T, 4>& out) {
  return out.empty();
}

/// The element views of a key/value operand: the view itself, or the codes of
/// int8 keys/values (whose scales the engine checks).
template <class KV>
const ConstView<KV, 4>& kv_elements(const ConstView<KV, 4>& k) {
  return k;
}
inline const View<const std::int8_t, 4>& kv_elements(const QuantizedKV& k) { return k.data; }

/// KOp: ConstView<KV, 4> (KV = T or 16-bit) or QuantizedKV.
template <class T, class KOp>
void cross_attention_impl(const ConstView<T, 4>& q, const KOp& k, const KOp& v, const View<T, 4>& out,
                          const ConstView<index_t, 1>& valid_length, const AttentionOptions& opt, const Executor& ex,
                          const View<acc_t<T>, 3>& lse) {
  const char* op = "perceiver_ar::cross_attention";
  effattn::detail::check_executor(ex, op);
  check_cross(op, q, kv_elements(k), kv_elements(v), out, valid_length, opt, lse,
              effattn::detail::attention_query_tile_quantum());
  if constexpr (std::is_same<KOp, QuantizedKV>::value) {
    const index_t kb = k.data.dim(0), kh = k.data.dim(1), kn = k.data.dim(2);
    effattn::detail::check_view(k.scale, op, "k.scale", false);
    effattn::detail::check_view(v.scale, op, "v.scale", false);
    effattn::detail::check_shape(k.scale, op, "k.scale", "[B,Hkv,N]", {kb, kh, kn});
    effattn::detail::check_shape(v.scale, op, "v.scale", "[B,Hkv,N]", {kb, kh, kn});
  }
  if (no_output(out)) return;
  const index_t B = q.dim(0), M = q.dim(2), N = kv_elements(k).dim(2);
  bool all_full = true;
  if (has_valid_length(valid_length))
    for (index_t b = 0; b < B; ++b) all_full = all_full && valid_length(b) == N;
  if (all_full) {
    attention<T>(q, k, v, out, CausalMask{}, NoScore{}, opt, ex, lse);
    return;
  }
  // B * M limits: no more than the output's B * H * M * Dv elements.
  std::vector<index_t> lim(static_cast<size_t>(B * M));  // B * M checked by check_cross
  cross_key_limits(valid_length, N, make_view(lim.data(), B, M));
  attention<T>(q, k, v, out, KeyLimitMask{make_view<const index_t>(lim.data(), B, M)}, NoScore{}, opt, ex, lse);
}

template <class T, class KV>
void cross_attention_reference_impl(const ConstView<T, 4>& q, const ConstView<KV, 4>& k, const ConstView<KV, 4>& v,
                                    const View<T, 4>& out, const ConstView<index_t, 1>& valid_length,
                                    const AttentionOptions& opt, const View<acc_t<T>, 3>& lse) {
  const char* op = "perceiver_ar::cross_attention_reference";
  check_cross(op, q, k, v, out, valid_length, opt, lse, 1);
  if (no_output(out)) return;
  const index_t B = q.dim(0), M = q.dim(2), N = k.dim(2);
  effattn::detail::checked_product(op, "dense masks B * M * N", B, M, N);
  std::vector<std::vector<std::uint8_t>> masks(static_cast<size_t>(B));
  for (index_t b = 0; b < B; ++b)
    masks[b] = encoder_mask_reference(has_valid_length(valid_length) ? valid_length(b) : N, N, M);
  auto pred = [&masks, N](index_t b, index_t, index_t i, index_t j) { return masks[b][i * N + j] != 0; };
  attention_reference<T>(q, k, v, out, make_predicate_mask(pred), NoScore{}, opt, lse);
}

template <class KA, class VA>
using enable_half_kv_t = std::enable_if_t<is_half_storage<KA>::value &&
                                              std::is_same<std::remove_const_t<KA>, std::remove_const_t<VA>>::value,
                                          int>;

}  // namespace detail

/// Causally masked cross-attention from M latents into N inputs.
///
///   out[b,h,m,:] = sum_{j <= p_m} softmax_j(scale <q[b,h,m], k[b,h/G,j]>) v[b,h/G,j]
///
/// with p_m = max(L_b - M + m, -1) the position of latent m (masks.hpp).
///
/// Shapes (row-major indexing, any element strides):
///   q   [B, H, M, D]    queries of the M latents (M = q.dim(2), chosen per
///                       call, 1 <= M <= N; it may differ from training)
///   k   [B, Hkv, N, D]  keys of all N inputs (the latent positions included)
///   v   [B, Hkv, N, Dv] values
///   out [B, H, M, Dv]
///   valid_length [B]    optional: the number of real (non-padding) inputs of
///                       each sequence, 0 <= L_b <= N, padding on the right.
///                       Absent (default) means every L_b = N, and the mask is
///                       bottom-right causal (latent m sees j <= N - M + m).
///   lse [B, H, M]       optional log-sum-exp of the allowed scaled logits.
/// H must be a multiple of Hkv (grouped-query attention).
///
/// Invalid latents (m < M - L_b, position -1) see no input: their output is 0
/// and their lse -inf, never NaN. (The official JAX code masks with -1e30, so
/// such a row averages every value uniformly; it is excluded from the loss
/// there and its value is meaningless either way.) A fully padded sequence
/// (L_b = 0) makes every latent of b invalid.
///
/// Keys and values may also be stored in 16 bits (float16 / bfloat16, with
/// float q and out; see the second overload and core/half.hpp): half the
/// memory and, when decoding, about half the time; or as int8 codes with a
/// float scale per row (the third overload, core/quant.hpp).
///
/// Work: the allowed pairs only, sum_m (p_m + 1) <= M * N per (b, h); memory:
/// the engine's per-thread tiles plus B * M limits (none when the output is
/// empty), never M x N. Throws shape_error / parameter_error (a negative
/// executor thread count first) before allocating or writing anything.
template <class T>
void cross_attention(effattn::detail::identity_t<ConstView<T, 4>> q, effattn::detail::identity_t<ConstView<T, 4>> k,
                     effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out,
                     ConstView<index_t, 1> valid_length = {}, const AttentionOptions& opt = {},
                     const Executor& ex = {}, effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  detail::cross_attention_impl<T>(q, k, v, out, valid_length, opt, ex, lse);
}

/// cross_attention with keys and values in 16-bit storage (float16 or
/// bfloat16), float queries and outputs. Same contract.
template <class T, class KA, class VA, detail::enable_half_kv_t<KA, VA> = 0>
void cross_attention(effattn::detail::identity_t<ConstView<T, 4>> q, const View<KA, 4>& k, const View<VA, 4>& v,
                     View<T, 4> out, ConstView<index_t, 1> valid_length = {}, const AttentionOptions& opt = {},
                     const Executor& ex = {}, effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  using KV = std::remove_const_t<KA>;
  detail::cross_attention_impl<T>(q, ConstView<KV, 4>(k), ConstView<KV, 4>(v), out, valid_length, opt, ex, lse);
}

/// cross_attention with int8 keys and values, one float scale per (batch,
/// head, token) row (core/quant.hpp), float queries and outputs: attention
/// over the dequantized values scale * code, as the engine's int8 overload
/// computes it (the decode rows fold the scales in; nothing is dequantized
/// into a copy). k.scale and v.scale must be [B,Hkv,N]. Same contract.
template <class T>
void cross_attention(effattn::detail::identity_t<ConstView<T, 4>> q, const QuantizedKV& k, const QuantizedKV& v,
                     View<T, 4> out, ConstView<index_t, 1> valid_length = {}, const AttentionOptions& opt = {},
                     const Executor& ex = {}, effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  detail::cross_attention_impl<T>(q, k, v, out, valid_length, opt, ex, lse);
}

/// The dense oracle of cross_attention: builds the official encoder mask
/// literally (encoder_mask_reference) and runs attention_reference (float64
/// accumulation). Same shapes and contract; allocates M x N per batch element.
template <class T>
void cross_attention_reference(effattn::detail::identity_t<ConstView<T, 4>> q,
                               effattn::detail::identity_t<ConstView<T, 4>> k,
                               effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out,
                               ConstView<index_t, 1> valid_length = {}, const AttentionOptions& opt = {},
                               effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  detail::cross_attention_reference_impl<T, T>(q, k, v, out, valid_length, opt, lse);
}

/// The oracle with 16-bit keys and values (widened exactly).
template <class T, class KA, class VA, detail::enable_half_kv_t<KA, VA> = 0>
void cross_attention_reference(effattn::detail::identity_t<ConstView<T, 4>> q, const View<KA, 4>& k,
                               const View<VA, 4>& v, View<T, 4> out, ConstView<index_t, 1> valid_length = {},
                               const AttentionOptions& opt = {},
                               effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  using KV = std::remove_const_t<KA>;
  detail::cross_attention_reference_impl<T, KV>(q, ConstView<KV, 4>(k), ConstView<KV, 4>(v), out, valid_length, opt,
                                                lse);
}

/// Causal self-attention among the M latents with the official processor
/// mask: a valid latent i sees the valid latents j <= i; an invalid latent
/// (i < M - L_b) sees only itself (the diagonal is always allowed, so no row is
/// ever empty).
///
/// Shapes: q [B, H, M, D], k [B, Hkv, M, D], v [B, Hkv, M, Dv], out [B, H, M, Dv],
/// optional lse [B, H, M]. valid_length [B] is optional, with the same meaning
/// as in cross_attention (values >= 0; a value >= M makes every latent valid);
/// absent means plain causal attention over the latents.
/// Throws shape_error / parameter_error before writing anything.
template <class T>
void latent_attention(effattn::detail::identity_t<ConstView<T, 4>> q, effattn::detail::identity_t<ConstView<T, 4>> k,
                      effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out,
                      ConstView<index_t, 1> valid_length = {}, const AttentionOptions& opt = {},
                      const Executor& ex = {}, effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  const char* op = "perceiver_ar::latent_attention";
  effattn::detail::check_executor(ex, op);
  detail::check_latent(op, q, k, v, out, valid_length, opt, lse, effattn::detail::attention_query_tile_quantum());
  if (detail::no_output(out)) return;
  const index_t B = q.dim(0), M = q.dim(2);
  // B invalid-latent counts, only with valid lengths (B <= the output's elements).
  std::vector<index_t> inv;
  bool any_invalid = false;
  if (detail::has_valid_length(valid_length)) {
    inv.assign(static_cast<size_t>(B), 0);
    for (index_t b = 0; b < B; ++b) {
      inv[b] = invalid_latents(valid_length(b), M);
      any_invalid = any_invalid || inv[b] > 0;
    }
  }
  if (!any_invalid) {
    attention<T>(q, k, v, out, CausalMask{}, NoScore{}, opt, ex, lse);
    return;
  }
  attention<T>(q, k, v, out, LatentCausalMask{make_view<const index_t>(inv.data(), B)}, NoScore{}, opt, ex, lse);
}

/// The dense oracle of latent_attention (processor_mask_reference +
/// attention_reference). Same shapes and contract.
template <class T>
void latent_attention_reference(effattn::detail::identity_t<ConstView<T, 4>> q,
                                effattn::detail::identity_t<ConstView<T, 4>> k,
                                effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out,
                                ConstView<index_t, 1> valid_length = {}, const AttentionOptions& opt = {},
                                effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  const char* op = "perceiver_ar::latent_attention_reference";
  detail::check_latent(op, q, k, v, out, valid_length, opt, lse, 1);
  if (detail::no_output(out)) return;
  const index_t B = q.dim(0), M = q.dim(2);
  effattn::detail::checked_product(op, "dense masks B * M * M", B, M, M);
  std::vector<std::vector<std::uint8_t>> masks(static_cast<size_t>(B));
  for (index_t b = 0; b < B; ++b)
    masks[b] = processor_mask_reference(detail::has_valid_length(valid_length) ? valid_length(b) : M, M);
  auto pred = [&masks, M](index_t b, index_t, index_t i, index_t j) { return masks[b][i * M + j] != 0; };
  attention_reference<T>(q, k, v, out, make_predicate_mask(pred), NoScore{}, opt, lse);
}

}  // namespace perceiver_ar
EFFATTN_NAMESPACE_END
