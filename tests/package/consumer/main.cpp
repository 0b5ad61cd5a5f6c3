// SPDX-License-Identifier: MIT
// A separate project that uses effattn: causal attention on a tiny problem,
// checked against the reference oracle.
#include <cmath>
#include <cstdio>
#include <effattn/effattn.hpp>
#include <vector>

int main() {
  const long B = 1, H = 2, N = 37, D = 16;
  std::vector<float> q(B * H * N * D), k(q.size()), v(q.size()), out(q.size()), ref(q.size());
  for (size_t i = 0; i < q.size(); ++i) {
    q[i] = std::sin(0.37f * i);
    k[i] = std::cos(0.11f * i);
    v[i] = std::sin(0.05f * i + 1.0f);
  }
  auto Q = effattn::make_view<const float>(q.data(), B, H, N, D);
  auto K = effattn::make_view<const float>(k.data(), B, H, N, D);
  auto V = effattn::make_view<const float>(v.data(), B, H, N, D);
  effattn::FlashAttentionOptions opt;
  opt.causal = true;
  effattn::flash_attention<float>(Q, K, V, effattn::make_view(out.data(), B, H, N, D), opt);
  effattn::attention_reference<float>(Q, K, V, effattn::make_view(ref.data(), B, H, N, D), effattn::CausalMask{});
  double err = 0;
  for (size_t i = 0; i < out.size(); ++i) err = std::fmax(err, std::fabs(out[i] - ref[i]));
  std::printf("effattn consumer: max |tiled - reference| = %.3g\n", err);
  return err < 1e-5 ? 0 : 1;
}
