// SPDX-License-Identifier: MIT
// A separate project that uses effattn: causal attention on a tiny problem,
// checked against the reference oracle. Built by tests/package/run.cmake.
#include <cmath>
#include <cstdio>
#include <effattn/effattn.hpp>
#include <vector>

// The version the build system reports (find_package's effattnConfigVersion.cmake,
// the project() of add_subdirectory/FetchContent, or pkg-config --modversion) must
// be the one in the header: config.hpp is the version's single source.
#ifdef EFFATTN_CONSUMER_EXPECT_MAJOR
static_assert(EFFATTN_VERSION_MAJOR == EFFATTN_CONSUMER_EXPECT_MAJOR &&
                  EFFATTN_VERSION_MINOR == EFFATTN_CONSUMER_EXPECT_MINOR &&
                  EFFATTN_VERSION_PATCH == EFFATTN_CONSUMER_EXPECT_PATCH,
              "the packaged effattn version differs from EFFATTN_VERSION_* in effattn/core/config.hpp");
#endif

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
