// SPDX-License-Identifier: MIT
// The second translation unit of the ODR test (see odr_a_test.cpp). On x86-64
// with GCC or Clang it is built with -mavx2 -mfma -mf16c (tests/CMakeLists.txt),
// so it carries only the avx2 and avx512 levels, in namespaces of its own.
#include <effattn/effattn.hpp>

#include <vector>

int effattn_odr_b() { return static_cast<int>(effattn::detail::attention_query_tile_quantum()); }
int effattn_odr_b_level() { return static_cast<int>(effattn::detail::tu_level(effattn::active_isa())); }
void effattn_odr_b_run(const std::vector<float>& x, std::vector<float>& out, effattn::index_t N, effattn::index_t D) {
  auto X = effattn::make_view<const float>(x.data(), 1, 2, N, D);
  effattn::attention<float>(X, X, X, effattn::make_view(out.data(), 1, 2, N, D), effattn::CausalMask{});
}
