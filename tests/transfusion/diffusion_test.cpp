// SPDX-License-Identifier: MIT
// Transfusion diffusion helpers: cosine schedule, per-image noising, the
// t <= 500 cap, the DDPM epsilon-prediction step.
#include <gtest/gtest.h>

#include <cmath>
#include <effattn/transfusion/transfusion.hpp>
#include <random>
#include <vector>

#include "support/testing.hpp"

namespace tf = effattn::transfusion;
using effattn::index_t;

namespace {

const double kPi = 3.14159265358979323846;

double f_cos(double t, double T, double s) {
  const double c = std::cos((t / T + s) / (1 + s) * kPi / 2);
  return c * c;
}

TEST(TransfusionDiffusion, CosineSchedule) {
  const tf::CosineSchedule sc;
  ASSERT_EQ(sc.T, 1000);
  EXPECT_EQ(sc.abar(0), 1.0);
  for (index_t t = 1; t <= 1000; ++t) {
    EXPECT_LT(sc.abar(t), sc.abar(t - 1));
    EXPECT_GT(sc.beta_at(t), 0.0);
    EXPECT_LE(sc.beta_at(t), 0.999);
  }
  // Away from the clipped end, abar_t = f(t) / f(0) (the betas telescope).
  for (index_t t : {1, 10, 250, 500, 900, 990})
    EXPECT_NEAR(sc.abar(t), f_cos(t, 1000, 0.008) / f_cos(0, 1000, 0.008), 1e-12) << t;
  // The last beta is clipped at 0.999.
  EXPECT_EQ(sc.beta_at(1000), 0.999);
  EXPECT_NEAR(sc.abar(500), 0.4938, 1e-3);
  EXPECT_THROW(sc.abar(1001), effattn::parameter_error);
  EXPECT_THROW(sc.beta_at(0), effattn::parameter_error);
  EXPECT_THROW(tf::CosineSchedule(0), effattn::parameter_error);
  EXPECT_THROW(tf::CosineSchedule(10, -1.0), effattn::parameter_error);
}

TEST(TransfusionDiffusion, NoisePerImage) {
  const tf::CosineSchedule sc;
  const auto L = tf::make_layout({tf::Segment::text(2), tf::Segment::image(2, 2), tf::Segment::text(1),
                                  tf::Segment::image(1, 3)});
  const index_t P = L.num_patches(), D = 5;
  ASSERT_EQ(P, 7);
  const auto x0 = testing_util::random_vector(P * D, 1), eps = testing_util::random_vector(P * D, 2);
  std::vector<float> xt(P * D);
  const std::vector<index_t> ts = {700, 0};
  tf::add_noise_per_image<float>(sc, L, effattn::make_view(x0.data(), P, D), effattn::make_view(eps.data(), P, D), ts,
                                 effattn::make_view(xt.data(), P, D));
  for (index_t r = 0; r < P; ++r) {
    const index_t t = r < 4 ? 700 : 0;
    const double a = std::sqrt(sc.abar(t)), b = std::sqrt(1 - sc.abar(t));
    for (index_t d = 0; d < D; ++d) EXPECT_NEAR(xt[r * D + d], a * x0[r * D + d] + b * eps[r * D + d], 1e-6);
  }
  // t = 0 is the clean image.
  for (index_t e = 4 * D; e < P * D; ++e) EXPECT_EQ(xt[e], x0[e]);
  EXPECT_THROW(tf::add_noise_per_image<float>(sc, L, effattn::make_view(x0.data(), P, D),
                                              effattn::make_view(eps.data(), P, D), {700},
                                              effattn::make_view(xt.data(), P, D)),
               effattn::parameter_error);
  EXPECT_THROW(tf::add_noise_per_image<float>(sc, L, effattn::make_view(x0.data(), P, D),
                                              effattn::make_view(eps.data(), P, D), {700, 1001},
                                              effattn::make_view(xt.data(), P, D)),
               effattn::parameter_error);
  EXPECT_THROW(tf::add_noise_per_image<float>(sc, L, effattn::make_view(x0.data(), P - 1, D),
                                              effattn::make_view(eps.data(), P - 1, D), ts,
                                              effattn::make_view(xt.data(), P - 1, D)),
               effattn::shape_error);
}

TEST(TransfusionDiffusion, CaptionCap) {
  EXPECT_EQ(tf::cap_timestep(800, true), 500);
  EXPECT_EQ(tf::cap_timestep(300, true), 300);
  EXPECT_EQ(tf::cap_timestep(800, false), 800);
  const tf::CosineSchedule sc;
  // Image 0 precedes its caption, image 1 follows one.
  const auto L = tf::make_layout({tf::Segment::image(2, 2), tf::Segment::text(4), tf::Segment::image(1, 2)});
  ASSERT_TRUE(L.image_precedes_caption(0));
  ASSERT_FALSE(L.image_precedes_caption(1));
  std::mt19937_64 rng(3);
  index_t max0 = 0, max1 = 0;
  for (int i = 0; i < 2000; ++i) {
    const auto t = tf::sample_timesteps(L, sc, rng, 1.0);
    ASSERT_EQ(t.size(), 2u);
    EXPECT_GE(t[0], 1);
    EXPECT_LE(t[0], 500);
    EXPECT_GE(t[1], 1);
    EXPECT_LE(t[1], 1000);
    max0 = std::max(max0, t[0]);
    max1 = std::max(max1, t[1]);
  }
  EXPECT_GT(max1, 900);
  // With the paper's 20%, some draws of image 0 exceed 500 and about 20% are capped.
  int above = 0;
  for (int i = 0; i < 4000; ++i) above += tf::sample_timesteps(L, sc, rng)[0] > 500;
  EXPECT_NEAR(above / 4000.0, 0.8 * 0.5, 0.05);
  EXPECT_THROW(tf::sample_timesteps(L, sc, rng, 1.5), effattn::parameter_error);
  EXPECT_THROW(tf::sample_timesteps(L, sc, rng, 0.2, 0), effattn::parameter_error);
}

TEST(TransfusionDiffusion, DdpmStepIsThePosteriorMean) {
  // With the true noise as the prediction, the mean of the step is the
  // Gaussian posterior mean q(x_{t-1} | x_t, x_0):
  //   mu = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t
  const tf::CosineSchedule sc;
  const index_t M = 6, D = 4;
  const auto x0 = testing_util::random_vector(M * D, 4), eps = testing_util::random_vector(M * D, 5),
             z = testing_util::random_vector(M * D, 6);
  for (index_t t : {1, 2, 37, 500, 999}) {
    std::vector<float> xt(M * D), mean(M * D), noisy(M * D), noisy_beta(M * D), x0h(M * D);
    tf::add_noise<float>(sc, effattn::make_view(x0.data(), M, D), effattn::make_view(eps.data(), M, D), t,
                         effattn::make_view(xt.data(), M, D));
    tf::ddpm_step<float>(sc, effattn::make_view(xt.data(), M, D), effattn::make_view(eps.data(), M, D), t, {},
                         effattn::make_view(mean.data(), M, D));
    tf::ddpm_step<float>(sc, effattn::make_view(xt.data(), M, D), effattn::make_view(eps.data(), M, D), t,
                         effattn::make_view(z.data(), M, D), effattn::make_view(noisy.data(), M, D));
    tf::ddpm_step<float>(sc, effattn::make_view(xt.data(), M, D), effattn::make_view(eps.data(), M, D), t,
                         effattn::make_view(z.data(), M, D), effattn::make_view(noisy_beta.data(), M, D),
                         tf::DdpmVariance::beta);
    tf::predict_x0<float>(sc, effattn::make_view(xt.data(), M, D), effattn::make_view(eps.data(), M, D), t,
                          effattn::make_view(x0h.data(), M, D));
    const double ab = sc.abar(t), abp = sc.abar(t - 1), beta = sc.beta_at(t), alpha = 1 - beta;
    const double sig_post = std::sqrt((1 - abp) / (1 - ab) * beta), sig_beta = t > 1 ? std::sqrt(beta) : 0.0;
    for (index_t e = 0; e < M * D; ++e) {
      const double mu = std::sqrt(abp) * beta / (1 - ab) * x0[e] + std::sqrt(alpha) * (1 - abp) / (1 - ab) * xt[e];
      const double tol = 2e-5 * (1 + std::fabs(mu)) * (t > 900 ? 50 : 1);  // 1/sqrt(alpha_t) amplifies rounding near T
      EXPECT_NEAR(mean[e], mu, tol) << "t=" << t;
      EXPECT_NEAR(noisy[e], mu + sig_post * z[e], tol) << "t=" << t;
      EXPECT_NEAR(noisy_beta[e], mu + sig_beta * z[e], tol) << "t=" << t;
      EXPECT_NEAR(x0h[e], x0[e], t > 900 ? 1e-2 : 1e-4) << "t=" << t;
    }
    if (t == 1) {
      EXPECT_EQ(noisy, mean) << "no noise is added at t = 1";
    }
  }
  std::vector<float> a(M * D), b(M * D);
  EXPECT_THROW(tf::ddpm_step<float>(sc, effattn::make_view(a.data(), M, D), effattn::make_view(a.data(), M, D), 0, {},
                                    effattn::make_view(b.data(), M, D)),
               effattn::parameter_error);
  EXPECT_THROW(tf::ddpm_step<float>(sc, effattn::make_view(a.data(), M, D), effattn::make_view(a.data(), M, D), 5, {},
                                    effattn::make_view(a.data(), M, D)),
               effattn::shape_error);
  EXPECT_THROW(tf::ddpm_step<float>(sc, effattn::make_view(a.data(), M, D), effattn::make_view(a.data(), M - 1, D), 5,
                                    {}, effattn::make_view(b.data(), M, D)),
               effattn::shape_error);
}

}  // namespace
