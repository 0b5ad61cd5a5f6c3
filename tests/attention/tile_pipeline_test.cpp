// SPDX-License-Identifier: MIT
// Tests of the engine's ordered tile pipeline (attention/detail/tile_pipeline.hpp):
// its three ordering guarantees, observed from inside the callbacks on 1, 2
// and 3 OpenMP threads and on a host pool; results bit-identical to
// effattn::attention with the same score; prologue-less tiles; errors (the
// first exception reaches the caller, nothing hangs).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <effattn/attention/detail/tile_pipeline.hpp>
#include <effattn/effattn.hpp>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/testing.hpp"

using namespace effattn;

namespace {

/// A host pool for Executor::parallel_for: one std::thread per range, started
/// in reverse order.
Executor pool_executor(int parts) {
  Executor ex;
  ex.parallel_for = [parts](index_t n, const std::function<void(index_t, index_t)>& body) {
    const index_t chunk = std::max<index_t>(1, (n + parts - 1) / parts);
    std::vector<index_t> starts;
    for (index_t b = 0; b < n; b += chunk) starts.push_back(b);
    std::vector<std::thread> ts;
    for (auto it = starts.rbegin(); it != starts.rend(); ++it) {
      const index_t b = *it;
      ts.emplace_back([&body, b, chunk, n] { body(b, std::min(n, b + chunk)); });
    }
    for (auto& t : ts) t.join();
  };
  return ex;
}

/// Serial, OpenMP with 2 to 4 threads (more threads than B x H items lets a
/// missing wait show), and a host pool.
std::vector<Executor> executors() { return {Executor(1), Executor(2), Executor(3), Executor(4), pool_executor(3)}; }

/// The score of query tile t on key j (float, so that the pipeline's and the
/// engine's additions are the same operation).
// The product is exact, so the bits do not depend on whether the compiler fuses
// the multiply-add: a functor score is inlined into the engine's kernels and
// compiled for their instruction-set level (FMA), the prologue is not.
float tile_bias(index_t t, index_t j) { return 0.0625f * static_cast<float>((t * 7 + j) % 13) - 0.375f; }

/// A per-tile score read from a caller buffer.
struct BufferScore {
  const float* bias;  // [Nk]
  void apply_tile(index_t i0, index_t i1, index_t j0, index_t j1, float* st, index_t ld) const {
    for (index_t j = j0; j < j1; ++j)
      for (index_t c = 0; c < i1 - i0; ++c) st[(j - j0) * ld + c] += bias[j];
  }
  double score(index_t, index_t j) const { return bias[j]; }
};

/// Stages that check the pipeline's guarantees from inside and compute a
/// tile-dependent score in their prologue:
///  - tile t has 1 + t % 2 prologue items (tile 0 none); each writes its
///    share of the bias row of tile t into buffer t % 2 (so a violated double
///    buffer changes the result: the contract protects a buffer from tile t-2
///    to tile t, so every tile after the first has a prologue);
///  - a prologue item of tile t checks that tile t-1's prologue has finished
///    (guarantee 2) and that tile t-2's rows of `out` already hold their final
///    values (guarantee 3: its attention items have finished);
///  - score(t, b, h), called when an attention item starts, checks that tile
///    t's prologue has finished (guarantee 1).
struct CheckingStages {
  using PrologueScratch = int;
  index_t nk, bq, B, H, Dv;
  std::vector<float>* buffers;                 // [2][nk]
  std::atomic<index_t>* pro_finished;          // per tile
  const std::vector<float>* want;              // the final out, [B,H,Nq,Dv]
  const float* out;                            // the out being written
  std::atomic<int>* violations;
  index_t throw_prologue_tile = -1, throw_score_tile = -1;

  static index_t items(index_t t) { return t == 0 ? 0 : 1 + t % 2; }
  index_t prologue_items(const detail::QueryTile& tile) const { return items(tile.t); }
  int make_prologue_scratch() const { return 0; }
  void prologue(const detail::QueryTile& tile, index_t item, int&) const {
    const index_t t = tile.t;
    if (t == throw_prologue_tile && item == items(t) - 1) throw std::out_of_range("prologue failed on purpose");
    if (t >= 1 && pro_finished[t - 1].load() != items(t - 1)) ++*violations;
    if (t >= 2) {
      const index_t i0 = (t - 2) * bq, i1 = i0 + bq, nq = want->size() / static_cast<size_t>(B * H * Dv);
      for (index_t bh = 0; bh < B * H; ++bh)
        for (index_t i = i0; i < i1 && i < nq; ++i)
          if (std::memcmp(out + (bh * nq + i) * Dv, want->data() + (bh * nq + i) * Dv, Dv * sizeof(float)) != 0)
            ++*violations;
    }
    // Some work, so that a missing wait would let other items overtake this one.
    volatile double x = 0;
    for (int r = 0; r < 20000; ++r) x = x + 1e-9 * r;
    std::vector<float>& buf = buffers[t % 2];
    const index_t n = items(t);
    for (index_t j = item; j < nk; j += n) buf[static_cast<size_t>(j)] = tile_bias(t, j);
    pro_finished[t].fetch_add(1);
  }
  BufferScore score(const detail::QueryTile& tile, index_t, index_t) const {
    if (tile.t == throw_score_tile) throw std::length_error("score failed on purpose");
    if (pro_finished[tile.t].load() != items(tile.t)) ++*violations;
    // Tiles without a prologue item use the fixed bias of tile 0 (buffer 0,
    // written before the call by the test).
    return BufferScore{items(tile.t) == 0 ? buffers[2].data() : buffers[tile.t % 2].data()};
  }
};

struct Case {
  index_t B, H, Hkv, N, D, Dv, block_q, block_k;
};

class TilePipeline : public ::testing::TestWithParam<Case> {};

TEST_P(TilePipeline, GuaranteesHoldAndResultsEqualAttention) {
  const Case c = GetParam();
  const index_t quantum = detail::attention_query_tile_quantum();
  AttentionOptions opt;
  opt.block_q = c.block_q * quantum;
  opt.block_k = c.block_k;
  const auto tiles = detail::pipeline_tiles(c.N, opt);
  ASSERT_GE(tiles.count, 1);
  auto q = testing_util::random_vector(static_cast<size_t>(c.B * c.H * c.N * c.D), 1);
  auto k = testing_util::random_vector(static_cast<size_t>(c.B * c.Hkv * c.N * c.D), 2);
  auto v = testing_util::random_vector(static_cast<size_t>(c.B * c.Hkv * c.N * c.Dv), 3);
  const auto Q = make_view<const float>(q.data(), c.B, c.H, c.N, c.D);
  const auto K = make_view<const float>(k.data(), c.B, c.Hkv, c.N, c.D);
  const auto V = make_view<const float>(v.data(), c.B, c.Hkv, c.N, c.Dv);
  // The engine with the same score as a functor: tiles with a prologue add
  // tile_bias(t, j); tiles without one add tile_bias(0, j).
  const index_t bq = tiles.bq;
  auto functor = make_functor_score([&](index_t, index_t, index_t i, index_t j) {
    const index_t t = i / bq;
    return tile_bias(CheckingStages::items(t) == 0 ? 0 : t, j);
  });
  std::vector<float> want(static_cast<size_t>(c.B * c.H * c.N * c.Dv)), want_lse(static_cast<size_t>(c.B * c.H * c.N));
  attention<float>(Q, K, V, make_view(want.data(), c.B, c.H, c.N, c.Dv), CausalMask{}, functor, opt, Executor(1),
                   make_view(want_lse.data(), c.B, c.H, c.N));

  for (const Executor& ex : executors()) {
    SCOPED_TRACE(ex.parallel_for ? std::string("host pool") : "threads " + std::to_string(ex.num_threads));
    for (int rep = 0; rep < 3; ++rep) {
      std::vector<float> out(want.size(), 0.0f), lse(want_lse.size(), 0.0f);
      std::vector<float> buffers[3] = {std::vector<float>(static_cast<size_t>(c.N)), std::vector<float>(static_cast<size_t>(c.N)),
                                       std::vector<float>(static_cast<size_t>(c.N))};
      for (index_t j = 0; j < c.N; ++j) buffers[2][static_cast<size_t>(j)] = tile_bias(0, j);
      std::unique_ptr<std::atomic<index_t>[]> pro(new std::atomic<index_t>[static_cast<size_t>(tiles.count)]);
      for (index_t t = 0; t < tiles.count; ++t) pro[t].store(0);
      std::atomic<int> violations{0};
      const auto O = make_view(out.data(), c.B, c.H, c.N, c.Dv);
      const auto L = make_view(lse.data(), c.B, c.H, c.N);
      const auto d = detail::check_attention_args("test", Q, K, V, O, L, opt, quantum);
      const auto p = detail::make_problem<float>(Q, K, V, O, L, d);
      const CheckingStages stages{c.N, bq, c.B, c.H, c.Dv, buffers, pro.get(), &want, out.data(), &violations};
      detail::run_tile_pipeline(p, CausalMask{}, opt, ex, stages, "test");
      EXPECT_EQ(violations.load(), 0);
      for (index_t t = 0; t < tiles.count; ++t) EXPECT_EQ(pro[t].load(), CheckingStages::items(t));
      EXPECT_EQ(0, std::memcmp(out.data(), want.data(), out.size() * sizeof(float))) << "out differs from attention()";
      EXPECT_EQ(0, std::memcmp(lse.data(), want_lse.data(), lse.size() * sizeof(float))) << "lse differs";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, TilePipeline,
                         ::testing::Values(Case{1, 1, 1, 5, 8, 8, 1, 0},        // one tile
                                           Case{1, 1, 1, 500, 8, 8, 1, 0},      // one item per tile
                                           Case{1, 2, 1, 300, 16, 8, 1, 16},   // many tiles, GQA
                                           Case{2, 3, 3, 257, 24, 24, 2, 0},   // a partial last tile
                                           Case{3, 1, 1, 700, 8, 16, 1, 64}));

/// Stages without any prologue item and without a score: plain causal attention.
struct PlainStages {
  using PrologueScratch = int;
  index_t prologue_items(const detail::QueryTile&) const { return 0; }
  int make_prologue_scratch() const { return 0; }
  void prologue(const detail::QueryTile&, index_t, int&) const { ADD_FAILURE() << "no prologue item exists"; }
  NoScore::Bound score(const detail::QueryTile&, index_t, index_t) const { return {}; }
};

TEST(TilePipelineMore, NoPrologueAndNoScore) {
  const index_t B = 2, H = 2, N = 190, D = 16;
  auto q = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 4);
  const auto Q = make_view<const float>(q.data(), B, H, N, D);
  std::vector<float> want(q.size()), out(q.size());
  AttentionOptions opt;
  opt.block_q = detail::attention_query_tile_quantum();
  flash_attention<float>(Q, Q, Q, make_view(want.data(), B, H, N, D), {0, true}, Executor(1));
  for (const Executor& ex : executors()) {
    std::fill(out.begin(), out.end(), 0.0f);
    const auto O = make_view(out.data(), B, H, N, D);
    const auto d = detail::check_attention_args("test", Q, Q, Q, O, View<float, 3>{}, opt, 1);
    detail::run_tile_pipeline(detail::make_problem<float>(Q, Q, Q, O, View<float, 3>{}, d), CausalMask{}, opt, ex,
                              PlainStages{}, "test");
    EXPECT_EQ(0, std::memcmp(out.data(), want.data(), out.size() * sizeof(float)));
  }
}

// An item that throws counts as finished and stops the items that wait: the
// call returns (no hang) and rethrows the first error itself, whatever the
// executor, for a failing prologue item and for a failing attention item.
TEST(TilePipelineMore, FirstErrorIsRethrownAndNothingHangs) {
  const index_t B = 2, H = 2, N = 600, D = 8;
  const index_t quantum = detail::attention_query_tile_quantum();
  AttentionOptions opt;
  opt.block_q = quantum;
  const auto tiles = detail::pipeline_tiles(N, opt);
  ASSERT_GE(tiles.count, 5);
  auto q = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 5);
  const auto Q = make_view<const float>(q.data(), B, H, N, D);
  std::vector<float> out(q.size()), want(q.size(), 0.0f);
  for (index_t which : {0, 1}) {
    for (const Executor& ex : executors()) {
      SCOPED_TRACE(testing::Message() << (which ? "score" : "prologue") << " throws, "
                                      << (ex.parallel_for ? std::string("host pool")
                                                          : "threads " + std::to_string(ex.num_threads)));
      std::vector<float> buffers[3] = {std::vector<float>(N), std::vector<float>(N), std::vector<float>(N)};
      std::unique_ptr<std::atomic<index_t>[]> pro(new std::atomic<index_t>[static_cast<size_t>(tiles.count)]);
      for (index_t t = 0; t < tiles.count; ++t) pro[t].store(0);
      std::atomic<int> violations{0};
      const auto O = make_view(out.data(), B, H, N, D);
      const auto d = detail::check_attention_args("test", Q, Q, Q, O, View<float, 3>{}, opt, quantum);
      const auto p = detail::make_problem<float>(Q, Q, Q, O, View<float, 3>{}, d);
      // The checks of guarantee 3 compare against `want`, which is not the
      // result here: only the error matters.
      CheckingStages stages{N, tiles.bq, B, H, D, buffers, pro.get(), &want, out.data(), &violations};
      if (which == 0)
        stages.throw_prologue_tile = 2;
      else
        stages.throw_score_tile = 3;
      try {
        detail::run_tile_pipeline(p, CausalMask{}, opt, ex, stages, "test");
        ADD_FAILURE() << "no exception";
      } catch (const std::out_of_range& e) {
        EXPECT_EQ(which, 0);
        EXPECT_STREQ(e.what(), "prologue failed on purpose");
      } catch (const std::length_error& e) {
        EXPECT_EQ(which, 1);
        EXPECT_STREQ(e.what(), "score failed on purpose");
      } catch (const std::exception& e) {
        ADD_FAILURE() << "unexpected exception: " << e.what();
      }
      // No prologue of a tile after the failing one ran to completion (it
      // waits for the failed tile's prologue, directly or not).
      if (which == 0) {
        for (index_t t = 3; t < tiles.count; ++t) EXPECT_EQ(pro[t].load(), 0) << "tile " << t;
      }
    }
  }
}

}  // namespace
