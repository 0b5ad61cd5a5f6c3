// SPDX-License-Identifier: MIT
// effattn Transfusion: DDPM helpers for the image spans of a sequence.
//
// Transfusion trains the image patches with the DDPM epsilon-prediction loss
// under the cosine schedule of Nichol & Dhariwal (2021) with T = 1000 steps:
//
//   f(t)      = cos^2( (t/T + s) / (1 + s) * pi/2 ),  s = 0.008
//   beta_t    = min(1 - f(t)/f(t-1), 0.999)           t = 1..T
//   alpha_t   = 1 - beta_t,  abar_t = prod_{u<=t} alpha_u,  abar_0 = 1
//   x_t       = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps    (t = 0 is the clean image)
//
// abar is the product of the *clipped* betas, so that noising and the reverse
// step use one consistent chain (as improved-diffusion does). Each image of a
// sequence has its own timestep. When an image comes before its caption the
// paper limits the noise to t <= 500 for a fraction (20%) of such pairs, so
// that the caption is learnt from a recognisable image.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "../attention/options.hpp"
#include "../core/error.hpp"
#include "../core/view.hpp"
#include "layout.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace transfusion {

/// The cosine noise schedule, tabulated for t = 0..T.
struct CosineSchedule {
  index_t T = 1000;
  double s = 0.008;
  double max_beta = 0.999;
  std::vector<double> beta;       ///< [T+1], beta[0] = 0
  std::vector<double> alpha_bar;  ///< [T+1], alpha_bar[0] = 1

  /// The most steps a schedule tabulates (2^20; the paper uses 1000).
  static constexpr index_t max_steps = index_t(1) << 20;

  /// Throws parameter_error unless 1 <= T <= max_steps, s > 0 and 0 < max_beta < 1.
  explicit CosineSchedule(index_t steps = 1000, double offset = 0.008, double beta_cap = 0.999)
      : T(steps), s(offset), max_beta(beta_cap) {
    const char* op = "transfusion::CosineSchedule";
    effattn::detail::require(T >= 1 && T <= max_steps, op, "T", "must be in [1, max_steps=", max_steps, "], got ", T);
    effattn::detail::require(std::isfinite(s) && s > 0, op, "s", "must be finite and > 0, got ", s);
    effattn::detail::require(max_beta > 0 && max_beta < 1, op, "max_beta", "must be in (0, 1), got ", max_beta);
    const double pi = 3.14159265358979323846;
    auto f = [&](double t) {
      const double c = std::cos((t / static_cast<double>(T) + s) / (1.0 + s) * pi / 2.0);
      return c * c;
    };
    beta.assign(static_cast<size_t>(T + 1), 0.0);
    alpha_bar.assign(static_cast<size_t>(T + 1), 1.0);
    for (index_t t = 1; t <= T; ++t) {
      beta[static_cast<size_t>(t)] = std::min(1.0 - f(static_cast<double>(t)) / f(static_cast<double>(t - 1)), max_beta);
      alpha_bar[static_cast<size_t>(t)] = alpha_bar[static_cast<size_t>(t - 1)] * (1.0 - beta[static_cast<size_t>(t)]);
    }
  }
  double abar(index_t t) const { return alpha_bar[static_cast<size_t>(checked(t, 0))]; }
  double beta_at(index_t t) const { return beta[static_cast<size_t>(checked(t, 1))]; }

 private:
  index_t checked(index_t t, index_t lo) const {
    effattn::detail::require(t >= lo && t <= T, "transfusion::CosineSchedule", "t", "must be in [", lo, ", ", T, "], got ", t);
    // The members are public: a T edited without its tables is caught here.
    effattn::detail::require(static_cast<size_t>(t) < beta.size() && static_cast<size_t>(t) < alpha_bar.size(),
            "transfusion::CosineSchedule", "T", "=", T, " does not match its tables (", beta.size(), " betas, ",
            alpha_bar.size(), " alpha_bars)");
    return t;
  }
};

/// The paper's noise cap: min(t, cap) when the image precedes its caption,
/// t otherwise.
inline index_t cap_timestep(index_t t, bool image_precedes_caption, index_t cap = 500) {
  return image_precedes_caption ? std::min(t, cap) : t;
}

/// Draws a training timestep for every image of `layout`: uniform in
/// [1, T]; for an image that precedes its caption (Layout::image_precedes_caption),
/// with probability `cap_probability` uniform in [1, cap] instead (the noise is
/// limited without piling mass onto t = cap). The RNG stream is not part of
/// the contract. Throws parameter_error for cap outside [1, T] or a probability
/// outside [0, 1].
inline std::vector<index_t> sample_timesteps(const Layout& layout, const CosineSchedule& sched, std::mt19937_64& rng,
                                             double cap_probability = 0.2, index_t cap = 500) {
  const char* op = "transfusion::sample_timesteps";
  effattn::detail::require(cap >= 1 && cap <= sched.T, op, "cap", "must be in [1, T=", sched.T, "], got ", cap);
  effattn::detail::require(cap_probability >= 0 && cap_probability <= 1, op, "cap_probability", "must be in [0, 1], got ", cap_probability);
  detail::check_layout(layout, op);
  std::vector<index_t> t(static_cast<size_t>(layout.num_images()));
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  for (index_t k = 0; k < layout.num_images(); ++k) {
    const bool capped = layout.image_precedes_caption(k) && coin(rng) < cap_probability;
    std::uniform_int_distribution<index_t> draw(1, capped ? cap : sched.T);
    t[static_cast<size_t>(k)] = draw(rng);
  }
  return t;
}

/// x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps for one image's tokens.
/// Shapes: x0, eps, xt [M, D] (any strides; xt may alias neither input).
/// t in [0, T] (t = 0 copies x0).
template <class T>
void add_noise(const CosineSchedule& sched, ::effattn::detail::identity_t<ConstView<T, 2>> x0,
               ::effattn::detail::identity_t<ConstView<T, 2>> eps, index_t t,
               ::effattn::detail::identity_t<View<T, 2>> xt) {
  const char* op = "transfusion::add_noise";
  ::effattn::detail::check_view(x0, op, "x0", false);
  ::effattn::detail::check_view(eps, op, "eps", false);
  ::effattn::detail::check_view(xt, op, "xt", true);
  ::effattn::detail::check_shape(eps, op, "eps", "[M,D]", {x0.dim(0), x0.dim(1)});
  ::effattn::detail::check_shape(xt, op, "xt", "[M,D]", {x0.dim(0), x0.dim(1)});
  ::effattn::detail::check_no_alias(xt, "xt", x0, "x0", op);
  ::effattn::detail::check_no_alias(xt, "xt", eps, "eps", op);
  effattn::detail::require(t >= 0 && t <= sched.T, op, "t", "must be in [0, T=", sched.T, "], got ", t);
  if (x0.empty()) return;  // [M, 0] or [0, D]: nothing to write, however large the other extent
  const double a = std::sqrt(sched.abar(t)), b = std::sqrt(1.0 - sched.abar(t));
  for (index_t m = 0; m < x0.dim(0); ++m)
    for (index_t d = 0; d < x0.dim(1); ++d)
      xt(m, d) = static_cast<T>(a * static_cast<double>(x0(m, d)) + b * static_cast<double>(eps(m, d)));
}

/// Noises every image of a sequence with its own timestep. `x0`, `eps`, `xt`
/// are [P, D]: the patch tokens of all images of `layout` stacked in sequence
/// order (P = layout.num_patches()); `timesteps` has one entry per image, each
/// in [0, T]. Throws before writing on any mismatch.
template <class T>
void add_noise_per_image(const CosineSchedule& sched, const Layout& layout,
                         ::effattn::detail::identity_t<ConstView<T, 2>> x0,
                         ::effattn::detail::identity_t<ConstView<T, 2>> eps, const std::vector<index_t>& timesteps,
                         ::effattn::detail::identity_t<View<T, 2>> xt) {
  const char* op = "transfusion::add_noise_per_image";
  detail::check_layout(layout, op);
  ::effattn::detail::check_view(x0, op, "x0", false);
  ::effattn::detail::check_shape(x0, op, "x0", "[P,D]", {layout.num_patches(), x0.dim(1)});
  effattn::detail::require(static_cast<index_t>(timesteps.size()) == layout.num_images(), op, "timesteps",
          "must have one entry per image (", layout.num_images(), "), got ", timesteps.size());
  for (size_t k = 0; k < timesteps.size(); ++k)
    effattn::detail::require(timesteps[k] >= 0 && timesteps[k] <= sched.T, op, "timesteps", "[", k, "]=", timesteps[k],
            " must be in [0, T=", sched.T, "]");
  ::effattn::detail::check_view(eps, op, "eps", false);
  ::effattn::detail::check_view(xt, op, "xt", true);
  ::effattn::detail::check_shape(eps, op, "eps", "[P,D]", {x0.dim(0), x0.dim(1)});
  ::effattn::detail::check_shape(xt, op, "xt", "[P,D]", {x0.dim(0), x0.dim(1)});
  ::effattn::detail::check_no_alias(xt, "xt", x0, "x0", op);
  ::effattn::detail::check_no_alias(xt, "xt", eps, "eps", op);
  // Empty (P = 0 or D = 0): nothing to write, and no pointer to offset (an
  // empty view's data may be null).
  if (x0.empty()) return;
  index_t row = 0;
  for (index_t k = 0; k < layout.num_images(); ++k) {
    const index_t M = layout.images[static_cast<size_t>(k)].length, D = x0.dim(1);
    auto sub = [&](auto v) {
      using V = decltype(v);
      return V(v.data() + row * v.stride(0), {M, D}, v.strides());
    };
    add_noise<T>(sched, sub(x0), sub(eps), timesteps[static_cast<size_t>(k)], sub(xt));
    row += M;
  }
}

/// Variance of the reverse step.
enum class DdpmVariance {
  posterior,  ///< sigma_t^2 = (1 - abar_{t-1}) / (1 - abar_t) beta_t  ("fixed small")
  beta,       ///< sigma_t^2 = beta_t for t > 1, 0 at t = 1            ("fixed large")
};

/// One DDPM reverse step with an epsilon prediction:
///
///   x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) * eps_hat) / sqrt(alpha_t) + sigma_t z
///
/// Shapes: x_t, eps_hat, z, x_prev [M, D]. `z` is standard normal noise; pass
/// an absent view ({}: null data and an empty shape) for the mean only (a null
/// z with a non-empty shape is a shape_error). t in [1, T]. x_prev may not alias the
/// inputs. Throws shape_error / parameter_error before writing.
template <class T>
void ddpm_step(const CosineSchedule& sched, ::effattn::detail::identity_t<ConstView<T, 2>> x_t,
               ::effattn::detail::identity_t<ConstView<T, 2>> eps_hat, index_t t,
               ::effattn::detail::identity_t<ConstView<T, 2>> z, ::effattn::detail::identity_t<View<T, 2>> x_prev,
               DdpmVariance variance = DdpmVariance::posterior) {
  const char* op = "transfusion::ddpm_step";
  ::effattn::detail::check_view(x_t, op, "x_t", false);
  ::effattn::detail::check_view(eps_hat, op, "eps_hat", false);
  ::effattn::detail::check_view(x_prev, op, "x_prev", true);
  ::effattn::detail::check_shape(eps_hat, op, "eps_hat", "[M,D]", {x_t.dim(0), x_t.dim(1)});
  ::effattn::detail::check_shape(x_prev, op, "x_prev", "[M,D]", {x_t.dim(0), x_t.dim(1)});
  const bool noise = !(z.data() == nullptr && z.empty());
  if (noise) {
    ::effattn::detail::check_view(z, op, "z", false);
    ::effattn::detail::check_shape(z, op, "z", "[M,D]", {x_t.dim(0), x_t.dim(1)});
    ::effattn::detail::check_no_alias(x_prev, "x_prev", z, "z", op);
  }
  ::effattn::detail::check_no_alias(x_prev, "x_prev", x_t, "x_t", op);
  ::effattn::detail::check_no_alias(x_prev, "x_prev", eps_hat, "eps_hat", op);
  effattn::detail::require(t >= 1 && t <= sched.T, op, "t", "must be in [1, T=", sched.T, "], got ", t);
  effattn::detail::require(variance == DdpmVariance::posterior || variance == DdpmVariance::beta, op, "variance", "is unknown");
  if (x_t.empty()) return;  // nothing to write, however large the other extent
  const double beta = sched.beta_at(t), abar = sched.abar(t), abar_prev = sched.abar(t - 1);
  const double c_eps = beta / std::sqrt(1.0 - abar), inv_sqrt_alpha = 1.0 / std::sqrt(1.0 - beta);
  double var = variance == DdpmVariance::posterior ? (1.0 - abar_prev) / (1.0 - abar) * beta : (t > 1 ? beta : 0.0);
  const double sigma = std::sqrt(std::max(var, 0.0));
  for (index_t m = 0; m < x_t.dim(0); ++m)
    for (index_t d = 0; d < x_t.dim(1); ++d) {
      double x = (static_cast<double>(x_t(m, d)) - c_eps * static_cast<double>(eps_hat(m, d))) * inv_sqrt_alpha;
      if (noise) x += sigma * static_cast<double>(z(m, d));
      x_prev(m, d) = static_cast<T>(x);
    }
}

/// The clean-image estimate x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t).
/// Shapes: x_t, eps_hat, x0 [M, D]; t in [0, T].
template <class T>
void predict_x0(const CosineSchedule& sched, ::effattn::detail::identity_t<ConstView<T, 2>> x_t,
                ::effattn::detail::identity_t<ConstView<T, 2>> eps_hat, index_t t,
                ::effattn::detail::identity_t<View<T, 2>> x0) {
  const char* op = "transfusion::predict_x0";
  ::effattn::detail::check_view(x_t, op, "x_t", false);
  ::effattn::detail::check_view(eps_hat, op, "eps_hat", false);
  ::effattn::detail::check_view(x0, op, "x0", true);
  ::effattn::detail::check_shape(eps_hat, op, "eps_hat", "[M,D]", {x_t.dim(0), x_t.dim(1)});
  ::effattn::detail::check_shape(x0, op, "x0", "[M,D]", {x_t.dim(0), x_t.dim(1)});
  ::effattn::detail::check_no_alias(x0, "x0", x_t, "x_t", op);
  ::effattn::detail::check_no_alias(x0, "x0", eps_hat, "eps_hat", op);
  effattn::detail::require(t >= 0 && t <= sched.T, op, "t", "must be in [0, T=", sched.T, "], got ", t);
  if (x_t.empty()) return;  // nothing to write, however large the other extent
  const double a = std::sqrt(sched.abar(t)), b = std::sqrt(1.0 - sched.abar(t));
  for (index_t m = 0; m < x_t.dim(0); ++m)
    for (index_t d = 0; d < x_t.dim(1); ++d)
      x0(m, d) = static_cast<T>((static_cast<double>(x_t(m, d)) - b * static_cast<double>(eps_hat(m, d))) / a);
}

}  // namespace transfusion
EFFATTN_NAMESPACE_END
