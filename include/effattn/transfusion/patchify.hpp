// SPDX-License-Identifier: MIT
// effattn Transfusion: cutting an image latent into patch tokens and back.
//
// A latent of H x W x C (channels last, row-major) with patch size p becomes
// M = (H/p)(W/p) tokens of p*p*C values:
//
//     token  r * (W/p) + c          (patch grid row r, column c; raster order)
//     value  (dy * p + dx) * C + ch  (pixel (r*p + dy, c*p + dx), channel ch)
//
// i.e. "(h p1) (w p2) c -> (h w) (p1 p2 c)". unpatchify is the exact inverse
// (pure copies, so the round trip is bit-exact).
#pragma once

#include <array>

#include "../attention/options.hpp"
#include "../core/error.hpp"
#include "../core/view.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace transfusion {

namespace detail {
inline void check_patch_size(const char* op, index_t H, index_t W, index_t p) {
  effattn::detail::require(p >= 1, op, "p", "(patch size) must be >= 1, got ", p);
  effattn::detail::require(H >= 0 && W >= 0, op, "H, W", "must be >= 0, got H=", H, " W=", W);
  effattn::detail::require(H % p == 0, op, "p", "(patch size) must divide the latent height H=", H, ", got p=", p, " (H % p = ", H % p, ")");
  effattn::detail::require(W % p == 0, op, "p", "(patch size) must divide the latent width W=", W, ", got p=", p, " (W % p = ", W % p, ")");
}

/// The token shape [(H/p)*(W/p), p*p*C] of a latent [H, W, C], checked (an
/// empty latent accepts any p that divides its sizes, so p*p*C can overflow).
inline std::array<index_t, 2> token_shape(const char* op, index_t H, index_t W, index_t C, index_t p) {
  check_patch_size(op, H, W, p);
  return {::effattn::detail::checked_mul(H / p, W / p, op, "(H/p) * (W/p)"),
          ::effattn::detail::checked_product(op, "p * p * C", p, p, C)};
}
}  // namespace detail

/// Number of patch tokens of an H x W latent with patch size p (checked:
/// parameter_error for a bad p or a negative size, shape_error on overflow).
inline index_t num_patches(index_t H, index_t W, index_t p) {
  const char* op = "transfusion::num_patches";
  detail::check_patch_size(op, H, W, p);
  return ::effattn::detail::checked_mul(H / p, W / p, op, "(H/p) * (W/p)");
}

/// latent [H, W, C] -> tokens (call as patchify<float>(...)), [(H/p)(W/p), p*p*C] (layout above).
/// Throws parameter_error when p < 1 or p does not divide H or W, and
/// shape_error for a wrong `tokens` shape, overlapping memory or a token
/// width p*p*C that overflows the index type (an empty latent accepts any p
/// dividing its sizes), all before writing. An empty latent copies nothing.
template <class T>
void patchify(::effattn::detail::identity_t<ConstView<T, 3>> latent, index_t p,
              ::effattn::detail::identity_t<View<T, 2>> tokens) {
  const char* op = "transfusion::patchify";
  ::effattn::detail::check_view(latent, op, "latent", false);
  ::effattn::detail::check_view(tokens, op, "tokens", true);
  const index_t H = latent.dim(0), W = latent.dim(1), C = latent.dim(2);
  const auto shape = detail::token_shape(op, H, W, C, p);
  ::effattn::detail::check_shape(tokens, op, "tokens", "[(H/p)*(W/p),p*p*C]", {shape[0], shape[1]});
  ::effattn::detail::check_no_alias(tokens, "tokens", latent, "latent", op);
  if (latent.empty()) return;  // nothing to copy (and no pointer to offset)
  const index_t gw = W / p, M = shape[0];
  for (index_t t = 0; t < M; ++t) {
    const index_t r = t / gw, c = t % gw;
    for (index_t dy = 0; dy < p; ++dy)
      for (index_t dx = 0; dx < p; ++dx)
        for (index_t ch = 0; ch < C; ++ch) tokens(t, (dy * p + dx) * C + ch) = latent(r * p + dy, c * p + dx, ch);
  }
}

/// tokens [(H/p)(W/p), p*p*C] -> latent [H, W, C], the exact inverse of
/// patchify. H, W, C are taken from `latent`. Same errors as patchify.
template <class T>
void unpatchify(::effattn::detail::identity_t<ConstView<T, 2>> tokens, index_t p,
                ::effattn::detail::identity_t<View<T, 3>> latent) {
  const char* op = "transfusion::unpatchify";
  ::effattn::detail::check_view(tokens, op, "tokens", false);
  ::effattn::detail::check_view(latent, op, "latent", true);
  const index_t H = latent.dim(0), W = latent.dim(1), C = latent.dim(2);
  const auto shape = detail::token_shape(op, H, W, C, p);
  ::effattn::detail::check_shape(tokens, op, "tokens", "[(H/p)*(W/p),p*p*C]", {shape[0], shape[1]});
  ::effattn::detail::check_no_alias(latent, "latent", tokens, "tokens", op);
  if (latent.empty()) return;  // nothing to copy (and no pointer to offset)
  const index_t gw = W / p, M = shape[0];
  for (index_t t = 0; t < M; ++t) {
    const index_t r = t / gw, c = t % gw;
    for (index_t dy = 0; dy < p; ++dy)
      for (index_t dx = 0; dx < p; ++dx)
        for (index_t ch = 0; ch < C; ++ch) latent(r * p + dy, c * p + dx, ch) = tokens(t, (dy * p + dx) * C + ch);
  }
}

}  // namespace transfusion
EFFATTN_NAMESPACE_END
