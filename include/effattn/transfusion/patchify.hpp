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

#include "../attention/options.hpp"
#include "../core/error.hpp"
#include "../core/view.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace transfusion {

namespace detail {
inline void check_patch_size(const char* op, index_t H, index_t W, index_t p) {
  require(p >= 1, op, "p", "(patch size) must be >= 1, got ", p);
  require(H % p == 0, op, "p", "(patch size) must divide the latent height H=", H, ", got p=", p, " (H % p = ", H % p, ")");
  require(W % p == 0, op, "p", "(patch size) must divide the latent width W=", W, ", got p=", p, " (W % p = ", W % p, ")");
}
}  // namespace detail

/// Number of patch tokens of an H x W latent with patch size p (checked).
inline index_t num_patches(index_t H, index_t W, index_t p) {
  detail::check_patch_size("transfusion::num_patches", H, W, p);
  return (H / p) * (W / p);
}

/// latent [H, W, C] -> tokens (call as patchify<float>(...)), [(H/p)(W/p), p*p*C] (layout above).
/// Throws parameter_error when p < 1 or p does not divide H or W, and
/// shape_error for a wrong `tokens` shape or overlapping memory.
template <class T>
void patchify(::effattn::detail::identity_t<ConstView<T, 3>> latent, index_t p,
              ::effattn::detail::identity_t<View<T, 2>> tokens) {
  const char* op = "transfusion::patchify";
  ::effattn::detail::check_view(latent, op, "latent", false);
  ::effattn::detail::check_view(tokens, op, "tokens", true);
  const index_t H = latent.dim(0), W = latent.dim(1), C = latent.dim(2);
  detail::check_patch_size(op, H, W, p);
  const index_t gw = W / p, M = (H / p) * gw;
  ::effattn::detail::check_shape(tokens, op, "tokens", "[(H/p)*(W/p),p*p*C]", {M, p * p * C});
  ::effattn::detail::check_no_alias(tokens, "tokens", latent, "latent", op);
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
  detail::check_patch_size(op, H, W, p);
  const index_t gw = W / p, M = (H / p) * gw;
  ::effattn::detail::check_shape(tokens, op, "tokens", "[(H/p)*(W/p),p*p*C]", {M, p * p * C});
  ::effattn::detail::check_no_alias(latent, "latent", tokens, "tokens", op);
  for (index_t t = 0; t < M; ++t) {
    const index_t r = t / gw, c = t % gw;
    for (index_t dy = 0; dy < p; ++dy)
      for (index_t dx = 0; dx < p; ++dx)
        for (index_t ch = 0; ch < C; ++ch) latent(r * p + dy, c * p + dx, ch) = tokens(t, (dy * p + dx) * C + ch);
  }
}

}  // namespace transfusion
EFFATTN_NAMESPACE_END
