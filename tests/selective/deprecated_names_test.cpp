// SPDX-License-Identifier: MIT
// The pre-0.2 spellings of selective attention in namespace effattn (now
// effattn::selective) still compile for one release, as deprecated aliases
// and forwarders, and give the bits of the new names. The deprecation
// warnings they raise are what this file exercises, so it silences them.
#include <gtest/gtest.h>

#include <cstring>
#include <effattn/effattn.hpp>
#include <effattn/selective/selective.hpp>
#include <type_traits>
#include <vector>

#include "support/testing.hpp"

#if defined(__GNUC__) || defined(__clang__)
#  pragma GCC diagnostic push
#  pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif

namespace {

using effattn::index_t;

template <class A>
bool bit_equal(const A& a, const A& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0;
}

static_assert(std::is_same<effattn::SelectiveOptions, effattn::selective::SelectiveOptions>::value,
              "effattn::SelectiveOptions is an alias");
static_assert(std::is_same<effattn::SelectiveKVCache<float>, effattn::selective::SelectiveKVCache<float>>::value &&
                  std::is_same<effattn::SelectiveKVCache<>, effattn::selective::SelectiveKVCache<float>>::value,
              "effattn::SelectiveKVCache is an alias");

TEST(SelectiveDeprecatedNames, OldSpellingsCompileAndForward) {
  const index_t B = 1, H = 2, N = 70, D = 8;
  const auto q = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 1);
  const auto k = testing_util::random_vector(q.size(), 2), v = testing_util::random_vector(q.size(), 3);
  const auto Q = effattn::make_view<const float>(q.data(), B, H, N, D);
  const auto K = effattn::make_view<const float>(k.data(), B, H, N, D);
  const auto V = effattn::make_view<const float>(v.data(), B, H, N, D);
  effattn::SelectiveOptions opt;  // the old name of the options
  opt.selection_head = 1;
  opt.attention.block_q = effattn::detail::attention_query_tile_quantum();
  std::vector<float> o_old(q.size()), o_new(q.size()), o_adl(q.size()), l_old(static_cast<size_t>(B * H * N)),
      l_new(l_old.size());
  std::vector<double> f_old(static_cast<size_t>(B * N)), f_new(f_old.size());

  // The prefill: qualified old name, new name, and unqualified with the old
  // options (found in both namespaces, by argument-dependent lookup too: the
  // new function is chosen, not an ambiguity).
  effattn::selective_attention<float>(Q, K, V, effattn::make_view(o_old.data(), B, H, N, D), opt, effattn::Executor{2},
                                      effattn::make_view(l_old.data(), B, H, N), effattn::make_view(f_old.data(), B, 1, N));
  effattn::selective::selective_attention<float>(Q, K, V, effattn::make_view(o_new.data(), B, H, N, D), opt,
                                                 effattn::Executor{2}, effattn::make_view(l_new.data(), B, H, N),
                                                 effattn::make_view(f_new.data(), B, 1, N));
  {
    using namespace effattn;
    selective_attention<float>(Q, K, V, make_view(o_adl.data(), B, H, N, D), opt);
    selective_attention<float>(Q, K, V, make_view(o_adl.data(), B, H, N, D));  // the old one alone
  }
  EXPECT_TRUE(bit_equal(o_old, o_new) && bit_equal(l_old, l_new) && bit_equal(f_old, f_new));

  // The reference.
  std::vector<float> r_old(q.size()), r_new(q.size());
  effattn::selective_attention_reference<float>(Q, K, V, effattn::make_view(r_old.data(), B, H, N, D), opt);
  effattn::selective::selective_attention_reference<float>(Q, K, V, effattn::make_view(r_new.data(), B, H, N, D), opt);
  EXPECT_TRUE(bit_equal(r_old, r_new));
  testing_util::expect_close(o_old, r_old, 2e-5, 2e-5, "old names: tiled vs reference");

  // The memory measure.
  std::vector<double> m_old(static_cast<size_t>(B * N)), m_new(m_old.size());
  effattn::selective_memory_profile<float>(Q, K, effattn::make_view(m_old.data(), B, N), opt);
  effattn::selective::selective_memory_profile<float>(Q, K, effattn::make_view(m_new.data(), B, N), opt);
  EXPECT_EQ(m_old, m_new);
  const double row[3] = {0.0, 0.5, 2.0};
  EXPECT_EQ(effattn::selective_memory_requirement(effattn::make_view(row, 3)),
            effattn::selective::selective_memory_requirement(effattn::make_view(row, 3)));

  // The cache.
  effattn::SelectiveKVCache<float> c_old(B, H, H, D, D, 10, opt);
  effattn::selective::SelectiveKVCache<float> c_new(B, H, H, D, D, 10, opt);
  std::vector<float> s_old(static_cast<size_t>(B * H * D)), s_new(s_old.size());
  for (index_t t = 0; t < N; ++t) {
    const effattn::ConstView<float, 4> qt(q.data() + t * D, {B, H, 1, D}, {H * N * D, N * D, D, 1}),
        kt(k.data() + t * D, {B, H, 1, D}, {H * N * D, N * D, D, 1}), vt(v.data() + t * D, {B, H, 1, D}, {H * N * D, N * D, D, 1});
    c_old.step(qt, kt, vt, effattn::make_view(s_old.data(), B, H, 1, D));
    c_new.step(qt, kt, vt, effattn::make_view(s_new.data(), B, H, 1, D));
    ASSERT_TRUE(bit_equal(s_old, s_new)) << "t=" << t;
  }
  EXPECT_EQ(c_old.positions(0), c_new.positions(0));
}

}  // namespace

#if defined(__GNUC__) || defined(__clang__)
#  pragma GCC diagnostic pop
#endif
