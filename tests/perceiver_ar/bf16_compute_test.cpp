// SPDX-License-Identifier: MIT
// Perceiver AR's cross-attention (float and bfloat16 context K/V, with and
// without valid lengths) and latent self-attention on the bfloat16 kernel
// (AttentionOptions::compute = Precision::bfloat16).
#include <gtest/gtest.h>

#include <effattn/effattn.hpp>
#include <vector>

#include "support/bf16_compute.hpp"
#include "support/testing.hpp"

using namespace effattn;

TEST(PerceiverArBf16, CrossAndLatentAttentionRunInBfloat16) {
  const index_t B = 2, H = 4, N = 700, M = 130, D = 64;
  const auto q = testing_util::random_vector(static_cast<size_t>(B * H * M * D), 51);
  const auto k = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 52);
  const auto v = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 53);
  std::vector<bfloat16> kb(k.size()), vb(v.size());
  convert(k.data(), kb.data(), static_cast<index_t>(k.size()));
  convert(v.data(), vb.data(), static_cast<index_t>(v.size()));
  const std::vector<index_t> valid = {N, 455};
  const size_t n = static_cast<size_t>(B * H * M * D);
  const auto Q = make_view<const float>(q.data(), B, H, M, D);
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(variant);
    testing_util::check_bf16_compute(
        [&](const AttentionOptions& o, std::vector<float>& out) {
          const auto O = make_view(out.data(), B, H, M, D);
          if (variant == 0)
            perceiver_ar::cross_attention<float>(Q, make_view<const float>(k.data(), B, H, N, D),
                                                 make_view<const float>(v.data(), B, H, N, D), O,
                                                 make_view<const index_t>(valid.data(), B), o);
          else if (variant == 1)
            perceiver_ar::cross_attention<float>(Q, make_view<const bfloat16>(kb.data(), B, H, N, D),
                                                 make_view<const bfloat16>(vb.data(), B, H, N, D), O, {}, o);
          else
            perceiver_ar::latent_attention<float>(Q, make_view<const float>(k.data(), B, H, M, D),
                                                  make_view<const float>(v.data(), B, H, M, D), O, {}, o);
        },
        n);
  }
}
