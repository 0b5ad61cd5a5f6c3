// SPDX-License-Identifier: MIT
// ToMe's proportional attention (log-size bias) on the bfloat16 kernel
// (AttentionOptions::compute = Precision::bfloat16).
#include <gtest/gtest.h>

#include <effattn/effattn.hpp>
#include <vector>

#include "support/bf16_compute.hpp"
#include "support/testing.hpp"

using namespace effattn;

TEST(ToMeBf16, ProportionalAttentionRunsInBfloat16) {
  const index_t B = 2, H = 3, N = 197, D = 64;
  const auto q = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 61);
  const auto k = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 62);
  const auto v = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 63);
  std::vector<float> size(static_cast<size_t>(B * N));
  for (size_t i = 0; i < size.size(); ++i) size[i] = 1.0f + static_cast<float>(i % 5);
  testing_util::check_bf16_compute(
      [&](const AttentionOptions& o, std::vector<float>& out) {
        tome::proportional_attention<float>(make_view<const float>(q.data(), B, H, N, D),
                                            make_view<const float>(k.data(), B, H, N, D),
                                            make_view<const float>(v.data(), B, H, N, D),
                                            make_view(out.data(), B, H, N, D),
                                            make_view<const float>(size.data(), B, N), NoMask{}, o);
      },
      static_cast<size_t>(B * H * N * D));
}
