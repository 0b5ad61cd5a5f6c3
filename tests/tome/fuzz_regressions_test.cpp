// SPDX-License-Identifier: MIT
// ToMe: regression tests for the defects found by fuzzing (issue 10, and the
// findings of tests/fuzz/fuzz_tome.cpp). Each test is named after its defect.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <effattn/tome/tome.hpp>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "support/testing.hpp"

namespace tome = effattn::tome;
using effattn::ConstView;
using effattn::index_t;
using effattn::make_view;
using effattn::View;

namespace {

constexpr index_t kHuge = index_t(1) << 62;
constexpr index_t kMax = std::numeric_limits<index_t>::max();
const float kSentinel = 12345.0f;

bool all_equal(const std::vector<float>& v, float x) {
  for (float y : v)
    if (y != x) return false;
  return true;
}

template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "no exception";
}

bool has(const std::string& msg, const std::string& part) { return msg.find(part) != std::string::npos; }

/// A view with unit strides: make_view's contiguous strides would overflow
/// for an empty shape such as [0, 2^62, 4] (see the report on core/view.hpp).
template <class T, class... E>
View<T, sizeof...(E)> unit_strided(T* p, E... extents) {
  typename View<T, sizeof...(E)>::extents_type ones;
  ones.fill(1);
  return View<T, sizeof...(E)>(p, {static_cast<index_t>(extents)...}, ones);
}

}  // namespace

// Defect 1: w * h wrapped (w = 2^62 + 1, h = 4 gives 4), passed the N check
// and random2d_partition wrote past its buffer.
TEST(TomeFuzzRegressions, Random2dGridAreaOverflowThrows) {
  const tome::Grid2d g{testing_util::opaque(kHuge + 1), 4, 1, 1};
  auto metric = testing_util::random_vector(1 * 4 * 3, 1);
  const auto mv = make_view<const float>(metric.data(), 1, 4, 3);
  const std::string msg = message_of<effattn::shape_error>([&] { tome::bipartite_soft_matching_random2d(mv, g, 1); });
  EXPECT_TRUE(has(msg, "tome::bipartite_soft_matching_random2d: tokens w * h") && has(msg, "overflows")) << msg;
  std::vector<index_t> a = {7}, b = {8};
  EXPECT_THROW(tome::random2d_partition(g, {}, a, b), effattn::shape_error);
  EXPECT_EQ(a, std::vector<index_t>{7});  // outputs untouched
  EXPECT_EQ(b, std::vector<index_t>{8});
  EXPECT_THROW(tome::random2d_draw(g, 1), effattn::shape_error);
  // Every wrapping product of the grid throws, also when it wraps to a small
  // positive value or to 0.
  for (const tome::Grid2d& bad : {tome::Grid2d{kHuge, 4, 2, 2}, tome::Grid2d{index_t(1) << 32, index_t(1) << 32, 1, 1},
                                  tome::Grid2d{kMax, kMax, 3, 3}, tome::Grid2d{kMax, 2, kMax, 1}})
    EXPECT_THROW(tome::random2d_draw(bad, 7), effattn::shape_error) << bad.w << "x" << bad.h;
  EXPECT_THROW((tome::Grid2d{kMax, kMax, 1, 1}.num_dst()), effattn::shape_error);
}

// Defect 1: sx * sy overflowed to 0 in random2d_draw, then x % 0.
TEST(TomeFuzzRegressions, Random2dDrawCellSizeOverflowThrows) {
  const index_t e = index_t(1) << 32;
  const std::string msg = message_of<effattn::shape_error>([&] { tome::random2d_draw(tome::Grid2d{e, e, e, e}, 3); });
  EXPECT_TRUE(has(msg, "tome::random2d_draw:") && has(msg, "overflows")) << msg;
  EXPECT_EQ(tome::random2d_draw(tome::Grid2d{3, 2, 3, 2}, 3).size(), 1u);  // sx * sy = w * h is fine
  EXPECT_EQ((tome::Grid2d{4, 4, 0, 2}.cells_x()), 0);                         // no division by a zero stride
}

// Defect 2: merge with C = 0 over a null data pointer bound a reference
// through it; every entry point takes empty views (possibly null) without
// forming an element address, and still writes what is not empty.
TEST(TomeFuzzRegressions, EmptyViewsOverNullPointersAreNeverOffset) {
  const index_t B = 2, N = 9, C = 3;
  auto metric = testing_util::random_vector(B * N * C, 2);
  auto plan = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, C), 3);
  const index_t Np = plan.out_tokens();
  float* null = nullptr;
  const float* cnull = nullptr;
  // merge / merge_source / unmerge / restore_order with C = 0: nothing to write.
  tome::merge<float>(plan, make_view(cnull, B, N, 0), make_view(null, B, Np, 0));
  tome::merge<float>(plan, make_view(cnull, B, N, 0), make_view(null, B, Np, 0), tome::MergeMode::amax);
  tome::merge_source<float>(plan, make_view(cnull, B, N, 0), make_view(null, B, Np, 0));
  tome::unmerge<float>(plan, make_view(cnull, B, Np, 0), make_view(null, B, N, 0));
  std::vector<index_t> map(B * N, 0);
  tome::restore_order<float>(make_view<const index_t>(map.data(), B, N), make_view(cnull, B, Np, 0),
                             make_view(null, B, N, 0));
  // merge_wavg with C = 0 still writes the sizes.
  std::vector<float> size(B * N, 2.0f), size_out(B * Np, kSentinel);
  tome::merge_wavg<float>(plan, make_view(cnull, B, N, 0), make_view<const float>(size.data(), B, N),
                          make_view(null, B, Np, 0), make_view(size_out.data(), B, Np));
  for (index_t b = 0; b < B; ++b)
    for (index_t g = 0; g < Np; ++g)
      EXPECT_EQ(size_out[b * Np + g], 2.0f * (plan.group_end(b, g) - plan.group_begin(b, g)));
  // A present but empty size view (null pointer) over a plan with no tokens.
  auto plan0 = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, 0, C), 3);
  EXPECT_EQ(plan0.out_tokens(), 0);
  tome::merge_wavg<float>(plan0, make_view(cnull, B, 0, 4), make_view(cnull, B, 0), make_view(null, B, 0, 4),
                          make_view(null, B, 0));
  const index_t* inull = nullptr;
  index_t* onull = nullptr;
  tome::merge_source_map(plan0, make_view(inull, B, 0), make_view(onull, B, 0));
  tome::merge_source_map(plan0, {}, make_view(onull, B, 0));
  tome::merge_source<float>(plan0, {}, make_view(null, B, 0, 0));
  tome::log_size(make_view(cnull, B, 0), make_view(null, B, 0));
  // In place over a null, empty map: no stride comparison of empty views.
  tome::merge_source_map(plan0, ConstView<index_t, 2>(inull, {B, 0}, {5, 1}), View<index_t, 2>(onull, {B, 0}, {1, 1}));
  // Proportional attention with Nk = 0 keys and an empty size view.
  std::vector<float> q(1 * 2 * 3 * 4, 0.5f), out(1 * 2 * 3 * 4, kSentinel);
  tome::proportional_attention(make_view<const float>(q.data(), 1, 2, 3, 4), make_view(cnull, 1, 2, 0, 4),
                               make_view(cnull, 1, 2, 0, 4), make_view(out.data(), 1, 2, 3, 4), make_view(cnull, 1, 0));
  EXPECT_TRUE(all_equal(out, 0.0f));  // no allowed key: 0, never NaN
  // A present optional view with a null pointer but a non-empty shape is an
  // error, not "absent".
  std::vector<float> x(B * N * 2, 1.0f), xo(B * Np * 2, kSentinel), so(B * Np, kSentinel);
  EXPECT_THROW(tome::merge_wavg<float>(plan, make_view<const float>(x.data(), B, N, 2), make_view(cnull, B, N),
                                       make_view(xo.data(), B, Np, 2), make_view(so.data(), B, Np)),
               effattn::shape_error);
  EXPECT_TRUE(all_equal(xo, kSentinel));
  EXPECT_TRUE(all_equal(so, kSentinel));
}

// Defect 3: an empty metric with a huge batch looped ~2^62 times (and its
// plan would have needed 2^62 table entries); every loop over an empty
// tensor's other extents returns at once.
TEST(TomeFuzzRegressions, EmptyTensorsWithHugeExtentsReturnAtOnce) {
  const float* cnull = nullptr;
  float* null = nullptr;
  std::vector<float> four(4, 1.0f);
  // [2^62, 0, 4]: the identity over no tokens, O(1) tables.
  auto p = tome::bipartite_soft_matching(make_view(cnull, kHuge, 0, 4), 5);
  EXPECT_EQ(p.batch, kHuge);
  EXPECT_EQ(p.out_tokens(), 0);
  EXPECT_LE(p.row_of.size() + p.group_ptr.size() + p.group_tok.size(), 1u);
  auto pt = tome::bipartite_soft_matching_threshold(make_view(cnull, kHuge, 0, 4), 0.5f, 5);
  EXPECT_EQ(pt.out_tokens(), 0);
  // [2^62, 5, 0]: no channels is an error (C >= 1), found before any loop.
  EXPECT_THROW(tome::bipartite_soft_matching(make_view(cnull, kHuge, 5, 0), 1), effattn::shape_error);
  // [0, 2^62, 4]: no sequences; r is capped and the plan holds no partition.
  auto pb = tome::bipartite_soft_matching(unit_strided(cnull, 0, kHuge, 4), 7, {true, true});
  EXPECT_EQ(pb.r, 7);
  EXPECT_EQ(pb.out_tokens(), kHuge - 7);
  EXPECT_TRUE(pb.a_tok.empty() && pb.b_tok.empty());
  auto pr = tome::bipartite_soft_matching_random2d(unit_strided(cnull, 0, kHuge, 4), tome::Grid2d{index_t(1) << 31, index_t(1) << 31, 2, 2}, kMax);
  EXPECT_EQ(pr.r, kHuge - kHuge / 4);  // capped at the sources
  // The plans apply to their empty tensors.
  tome::merge<float>(p, make_view(cnull, kHuge, 0, 4), make_view(null, kHuge, 0, 4));
  tome::merge_wavg<float>(p, make_view(cnull, kHuge, 0, 4), make_view(cnull, kHuge, 0), make_view(null, kHuge, 0, 4),
                          make_view(null, kHuge, 0));
  tome::unmerge<float>(p, make_view(cnull, kHuge, 0, 4), make_view(null, kHuge, 0, 4));
  tome::merge_source<float>(p, {}, make_view(null, kHuge, 0, 0));
  tome::merge_source_map(p, make_view<const index_t>(nullptr, kHuge, 0), make_view<index_t>(nullptr, kHuge, 0));
  tome::merge<float>(pb, unit_strided(cnull, 0, kHuge, 4), unit_strided(null, 0, kHuge - 7, 4));
  tome::unmerge<float>(pb, unit_strided(cnull, 0, kHuge - 7, 4), unit_strided(null, 0, kHuge, 4));
  tome::restore_order<float>(make_view<const index_t>(nullptr, kHuge, 0), make_view(cnull, kHuge, 0, 3),
                             make_view(null, kHuge, 0, 3));
  tome::log_size(make_view(cnull, kHuge, 0), make_view(null, kHuge, 0));
  EXPECT_EQ(tome::MergePlan::identity(kHuge, 0).group_ptr.size(), 1u);
  EXPECT_EQ(tome::MergePlan::identity(0, kMax).group_ptr.size(), 1u);
  // Schedules: a count that cannot be allocated is a parameter error, and a
  // huge token count never converts out of range.
  EXPECT_THROW(tome::schedule_constant(kHuge, 1), effattn::parameter_error);
  EXPECT_THROW(tome::parse_r(kHuge, std::vector<index_t>{1}), effattn::parameter_error);
  EXPECT_THROW(tome::parse_r(kHuge, 1, 0.0), effattn::parameter_error);
  EXPECT_THROW(tome::parse_r(12, kHuge, -1.0), effattn::parameter_error);  // 2 r overflowed
  EXPECT_EQ(tome::parse_r(3, index_t(1) << 53, 1.0), (std::vector<index_t>{0, index_t(1) << 53, index_t(1) << 54}));
  EXPECT_EQ(tome::ratio_to_r(kMax, 1.0), kMax);
  EXPECT_EQ(tome::ratio_to_r(kMax, 0.0), 0);
}

// Defect 4: Executor(-1) was accepted for a small problem (executor_for
// swapped in a serial executor) and rejected for a big one. Every entry point
// that takes an Executor now rejects it first, whatever the size, and writes
// nothing.
TEST(TomeFuzzRegressions, NegativeExecutorRejectedForSmallAndBigInputs) {
  const effattn::Executor bad(-1);
  // {N, C metric, Cx features}: small, and above executor_for's cut-off for
  // the matching (B * N/2 * N/2 * C >= 4e6) and for the merges (B * N * Cx >= 4e6).
  for (const auto& shape : std::vector<std::array<index_t, 3>>{{12, 4, 3}, {577, 64, 8192}}) {
    const index_t B = 1, N = shape[0], C = shape[1], Cx = shape[2];  // (no structured bindings: lambdas capture them)
    auto metric = testing_util::random_vector(B * N * C, 3);
    const auto mv = make_view<const float>(metric.data(), B, N, C);
    auto expect_bad = [&](const char* op, auto&& f) {
      const std::string msg = message_of<effattn::parameter_error>(f);
      EXPECT_TRUE(has(msg, std::string(op) + ": executor num_threads must be >= 0, got -1")) << "N=" << N << ": " << msg;
    };
    expect_bad("tome::bipartite_soft_matching", [&] { tome::bipartite_soft_matching(mv, N / 4, {}, bad); });
    expect_bad("tome::bipartite_soft_matching", [&] { tome::bipartite_soft_matching(mv, 0, {}, bad); });
    expect_bad("tome::bipartite_soft_matching_threshold",
               [&] { tome::bipartite_soft_matching_threshold(mv, 0.1f, N / 4, {}, bad); });
    std::vector<index_t> a, b;
    for (index_t t = 0; t < N; ++t) (t % 3 ? a : b).push_back(t);
    expect_bad("tome::bipartite_soft_matching_partition",
               [&] { tome::bipartite_soft_matching_partition(mv, a, b, N / 4, false, bad); });
    if (N == 12)
      expect_bad("tome::bipartite_soft_matching_random2d",
                 [&] { tome::bipartite_soft_matching_random2d(mv, tome::Grid2d{4, 3, 2, 1}, 3, {}, bad); });
    // The merges, with a valid plan.
    auto plan = tome::bipartite_soft_matching(mv, N / 4);
    const index_t Np = plan.out_tokens();
    auto x = testing_util::random_vector(B * N * Cx, 4);
    std::vector<float> size(B * N, 1.0f), out(B * Np * Cx, kSentinel), so(B * Np, kSentinel),
        un(B * N * Cx, kSentinel), src(B * Np * N, kSentinel);
    const auto xv = make_view<const float>(x.data(), B, N, Cx);
    expect_bad("tome::merge", [&] { tome::merge<float>(plan, xv, make_view(out.data(), B, Np, Cx), tome::MergeMode::mean, bad); });
    expect_bad("tome::merge_wavg", [&] {
      tome::merge_wavg<float>(plan, xv, make_view<const float>(size.data(), B, N), make_view(out.data(), B, Np, Cx),
                              make_view(so.data(), B, Np), bad);
    });
    expect_bad("tome::merge_source", [&] { tome::merge_source<float>(plan, {}, make_view(src.data(), B, Np, N), bad); });
    expect_bad("tome::unmerge", [&] {
      tome::unmerge<float>(plan, make_view<const float>(x.data(), B, Np, Cx), make_view(un.data(), B, N, Cx), bad);
    });
    std::vector<index_t> map(B * N, 0);
    expect_bad("tome::restore_order", [&] {
      tome::restore_order<float>(make_view<const index_t>(map.data(), B, N), make_view<const float>(x.data(), B, Np, Cx),
                                 make_view(un.data(), B, N, Cx), bad);
    });
    EXPECT_TRUE(all_equal(out, kSentinel) && all_equal(so, kSentinel) && all_equal(un, kSentinel) &&
                all_equal(src, kSentinel));
    // Proportional attention (with and without sizes).
    std::vector<float> ao(B * 2 * N * 4, kSentinel);
    const auto qv = make_view<const float>(x.data(), B, 2, N, 4);
    expect_bad("tome::proportional_attention", [&] {
      tome::proportional_attention(qv, qv, qv, make_view(ao.data(), B, 2, N, 4), make_view<const float>(size.data(), B, N),
                                   effattn::NoMask{}, {}, bad);
    });
    expect_bad("tome::proportional_attention", [&] {
      tome::proportional_attention(qv, qv, qv, make_view(ao.data(), B, 2, N, 4), {}, effattn::NoMask{}, {}, bad);
    });
    EXPECT_TRUE(all_equal(ao, kSentinel));
  }
}

// Defect 5: every check happens before the first write to an output.
TEST(TomeFuzzRegressions, ThrowingCallsLeaveOutputsUntouched) {
  // random2d_partition checks rand_idx before touching its output lists.
  std::vector<index_t> ri = {0, 9}, a = {1}, b = {2};
  EXPECT_THROW(tome::random2d_partition(tome::Grid2d{4, 2, 2, 2}, make_view<const index_t>(ri.data(), 1, 2), a, b),
               effattn::parameter_error);
  EXPECT_EQ(a, std::vector<index_t>{1});
  EXPECT_EQ(b, std::vector<index_t>{2});
  // In-place log sizes with other strides would read what they wrote.
  std::vector<float> s(6, 2.0f);
  EXPECT_THROW(tome::log_size(make_view<const float>(s.data(), 2, 3), View<float, 2>(s.data(), {2, 3}, {1, 2})),
               effattn::shape_error);
  EXPECT_TRUE(all_equal(s, 2.0f));
}

// A hand-edited or unfinalized plan can never make the kernels index out of
// bounds: check_plan follows every table, finalize checks the decision.
TEST(TomeFuzzRegressions, InconsistentPlansAreRejected) {
  const index_t B = 2, N = 10, C = 3;
  auto metric = testing_util::random_vector(B * N * C, 9);
  const auto plan = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, C), 3);
  const index_t Np = plan.out_tokens();
  std::vector<float> x(B * N * 2, 1.0f), out(B * Np * 2, kSentinel), un(B * N * 2, kSentinel);
  auto edits = std::vector<std::function<void(tome::MergePlan&)>>{
      [](tome::MergePlan& p) { p.group_tok[3] = 99; },  [](tome::MergePlan& p) { p.group_ptr[2] = p.group_ptr[1]; },
      [](tome::MergePlan& p) { p.row_of[5] = -1; },     [](tome::MergePlan& p) { p.group_ptr.back() += 1; },
      [](tome::MergePlan& p) { p.batch = kHuge; },     [](tome::MergePlan& p) { p.row_of.pop_back(); }};
  for (auto& edit : edits) {
    auto p = plan;
    edit(p);
    EXPECT_THROW(tome::merge<float>(p, make_view<const float>(x.data(), B, N, 2),
                                    make_view(out.data(), B, Np, 2)),
                 effattn::invalid_argument);
    EXPECT_THROW(tome::unmerge<float>(p, make_view<const float>(x.data(), B, Np, 2), make_view(un.data(), B, N, 2)),
                 effattn::invalid_argument);
  }
  EXPECT_TRUE(all_equal(out, kSentinel) && all_equal(un, kSentinel));
  // finalize() on a decision that does not describe a merge.
  for (int which = 0; which < 4; ++which) {
    auto p = plan;
    if (which == 0) p.src_idx[0] = p.unm_idx[0];  // an A position twice
    if (which == 1) p.dst_idx[1] = p.num_b();     // a B position out of range
    if (which == 2) p.a_tok[0] = p.b_tok[0];      // a token in A and B
    if (which == 3) p.r = N;                      // r > |A|
    const auto before = p.row_of;
    EXPECT_THROW(p.finalize(), effattn::parameter_error) << which;
    EXPECT_EQ(p.row_of, before);
  }
  EXPECT_THROW(tome::MergePlan::identity(-1, 3), effattn::parameter_error);
}

// Fuzz finding: a metric row whose L2 norm exceeds FLT_MAX (finite values
// near it) was divided by float(norm) = inf and became the zero vector
// (cosine 0 with everything) instead of a unit vector.
TEST(TomeFuzzRegressions, MetricRowNormBeyondFloatMaxIsStillAUnitVector) {
  // A = tokens 0, 2; B = tokens 1, 3. Token 0 = (3e38, 3e38) points along (1, 1).
  std::vector<float> m = {3e38f, 3e38f, 1.f, 1.f, 1.f, 0.f, 0.f, 1.f};
  auto p = tome::bipartite_soft_matching(make_view<const float>(m.data(), 1, 4, 2), 1);
  EXPECT_NEAR(p.node_max[0], 1.0f, 1e-6f);
  EXPECT_NEAR(p.node_max[1], std::sqrt(0.5f), 1e-6f);
  EXPECT_EQ(p.src_idx, std::vector<index_t>{0});
  EXPECT_EQ(p.dst_idx, std::vector<index_t>{0});
}
