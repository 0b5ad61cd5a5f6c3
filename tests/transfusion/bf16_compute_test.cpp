// SPDX-License-Identifier: MIT
// Transfusion's block-causal attention (causal text, bidirectional images) on
// the bfloat16 kernel (AttentionOptions::compute = Precision::bfloat16).
#include <gtest/gtest.h>

#include <effattn/effattn.hpp>
#include <vector>

#include "support/bf16_compute.hpp"
#include "support/testing.hpp"

using namespace effattn;

TEST(TransfusionBf16, BlockCausalAttentionRunsInBfloat16) {
  const index_t B = 1, H = 4, N = 300, D = 64;
  // Text, then an image of 100 patches, then text.
  std::vector<index_t> limit(static_cast<size_t>(N));
  for (index_t i = 0; i < N; ++i) limit[static_cast<size_t>(i)] = (i >= 50 && i < 150) ? 150 : i + 1;
  const auto q = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 71);
  const auto k = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 72);
  const auto v = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 73);
  testing_util::check_bf16_compute(
      [&](const AttentionOptions& o, std::vector<float>& out) {
        transfusion::block_causal_attention<float>(make_view<const float>(q.data(), B, H, N, D),
                                                   make_view<const float>(k.data(), B, H, N, D),
                                                   make_view<const float>(v.data(), B, H, N, D),
                                                   make_view(out.data(), B, H, N, D),
                                                   make_view<const index_t>(limit.data(), B, N), o);
      },
      static_cast<size_t>(B * H * N * D));
}
