// SPDX-License-Identifier: MIT
// effattn internal: the engine's ordered tile pipeline. A method whose query
// tiles depend on each other (selective attention carries F from one query
// tile to the next) supplies a per-tile prologue and a score; the engine runs
// the tiles in order, schedules every work item and runs the attention itself.
//
// Contract of run_tile_pipeline(p, mask, opt, ex, stages, op):
//
//   The query tiles are [t * bq, min(Nq, (t + 1) * bq)), t = 0 .. count-1,
//   with {bq, bk, count} = pipeline_tiles(p.Nq, opt, level) (the tiled
//   engine's own rule: block_q rounded up to the level's query quantum, 0 for
//   the defaults). `level` is the instruction-set level of the whole call
//   (core/isa.hpp; read it once with active_isa() and pass the same level to
//   pipeline_tiles and run_tile_pipeline; the overloads without it read it). Each
//   tile t has
//     - P(t) = stages.prologue_items(tile) prologue items (P(t) >= 0), run as
//       stages.prologue(tile, item, scratch), item in [0, P(t));
//     - B x H attention items, one per (b, h) (item = b * H + h): the engine
//       binds the mask (mask.bind(b, h, Nq, Nk)), asks the caller for the bound
//       score, stages.score(tile, b, h), and runs detail::attend_tile over all
//       Nk keys and detail::finalize_tile (out and lse of the tile's rows).
//   Guarantees (the dependencies a caller may rely on):
//     1. every prologue item of tile t finishes before any attention item of
//        tile t starts;
//     2. every prologue item of tile t-1 finishes before any prologue item of
//        tile t starts (a prologue may read and advance state the previous
//        tile's prologue left, e.g. a running sum);
//     3. every attention item of tile t-2 finishes before any prologue item of
//        tile t starts: a caller may keep two buffers, indexed t % 2, that the
//        prologue of t writes and the attention items of t read;
//   and nothing else: the items of one phase of one tile run concurrently, in
//   any order, and the attention items of tile t may run alongside the
//   prologue of tile t+1. Callbacks are called concurrently from several
//   threads; they must not throw except to report an error.
//   The bound score is a score policy's Bound (apply_tile and/or apply, see
//   policies.hpp); NoScore::Bound adds nothing and costs nothing.
//
//   Stages (duck-typed; `op` names the operator in error messages):
//     using PrologueScratch = ...;   // per-thread scratch of prologue items (movable)
//     index_t prologue_items(const QueryTile&) const;
//     PrologueScratch make_prologue_scratch() const;
//     void prologue(const QueryTile&, index_t item, PrologueScratch&) const;
//     <bound score> score(const QueryTile&, index_t b, index_t h) const;
//
// Scheduling. With OpenMP (or serially) all items of all tiles form one loop
// in dependency order, prologue(0), attention(0), prologue(1), ..., handed out
// by the core's detail::parallel_items<ItemOrder::monotonic> (OpenMP
// `schedule(monotonic: dynamic, 1)`): an item waits (spinning, then yielding)
// only for items with smaller indices, which are already handed out, so the
// loop always progresses and there is no barrier per tile. A host pool hook
// (Executor::parallel_for) gives no order, so no item may wait for another:
// there each phase of each tile is one plain parallel loop (a barrier per
// phase). Work items and their arithmetic never depend on the thread count or
// the pool, so results are bit-identical for any of them.
//
// Errors: an item that throws counts as finished and stops every item that
// waits for anything from then on (those return without running, so nothing
// runs on the state a failed item left); items that need not wait may still
// run. The first exception is rethrown to the caller once the loop has ended
// (by parallel_items); with a host pool, once the failing phase has ended.
// Scratch is allocated on an item's first use, so a failed allocation is that
// item's error.
#pragma once

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "../engine.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace detail {
inline namespace EFFATTN_TU_NS {

/// One query tile of a pipeline: index t and its queries [i0, i1).
struct QueryTile {
  index_t t, i0, i1;
};

/// The tiles of a pipeline over Nq queries: query tile bq and key block bk
/// (the tiled engine's rule for opt.block_q / opt.block_k), and their count.
struct PipelineTiles {
  index_t bq, bk, count;
  QueryTile tile(index_t t, index_t nq) const { return QueryTile{t, t * bq, std::min(nq, (t + 1) * bq)}; }
};

inline PipelineTiles pipeline_tiles(index_t Nq, const AttentionOptions& opt, Isa level) {
  PipelineTiles r;
  r.bq = query_tile(opt.block_q, level);
  r.bk = opt.block_k > 0 ? opt.block_k : kDefaultBlockK;
  r.count = ceil_div(Nq, r.bq);
  return r;
}
inline PipelineTiles pipeline_tiles(index_t Nq, const AttentionOptions& opt) {
  return pipeline_tiles(Nq, opt, active_isa());
}

/// Runs the query tiles of a checked problem in order, each with the caller's
/// prologue and score (see the contract at the top of this file). `p` must
/// come from make_problem (checked shapes, B, H, Nq >= 1 or nothing to do).
///
/// The attention items run on `pa`, which is `p` or, with
/// Precision::bfloat16 at Isa::avx512_bf16, its bfloat16 problem (the
/// prologue's own data stays the caller's).
template <class T, class KV, class KA, class Mask, class Stages>
void run_tile_pipeline_on(const Problem<T, KV>& p, const Problem<T, KA>& pa, const Mask& mask,
                          const AttentionOptions& opt, const Executor& ex, const Stages& stages, const char* op,
                          Isa level) {
  using S = acc_t<T>;
  using PScratch = typename Stages::PrologueScratch;
  const PipelineTiles tiles = pipeline_tiles(p.Nq, opt, level);
  const index_t nqt = tiles.count, bq = tiles.bq, bk = tiles.bk, BH = p.B * p.H;
  constexpr bool kWiden = !std::is_same<KA, S>::value;
  const bool dot = pa.dot_bf16;
  if (nqt == 0) return;

  std::vector<index_t> npro(static_cast<size_t>(nqt));
  for (index_t t = 0; t < nqt; ++t) {
    npro[static_cast<size_t>(t)] = stages.prologue_items(tiles.tile(t, p.Nq));
    EFFATTN_ASSERT(npro[static_cast<size_t>(t)] >= 0, "run_tile_pipeline: negative prologue item count");
  }

  // Attention item (t, b * H + h).
  auto attend = [&](const QueryTile& tile, index_t item, TileScratch<S>& w) {
    const index_t b = item / p.H, h = item % p.H;
    const auto bm = mask.bind(b, h, p.Nq, p.Nk);
    const auto bs = stages.score(tile, b, h);
    constexpr bool kScore = !std::is_same<std::decay_t<decltype(bs)>, NoScore::Bound>::value;
    EFFATTN_WITH_LEVEL(level, (lvl::attend_tile_item<T, S, decltype(bm), decltype(bs), kScore>(
                                  pa, b, h, tile.i0, tile.i1, bq, bk, bm, bs, w)));
  };

  if (ex.parallel_for) {
    // A host pool may run its ranges in any order, so no item may wait for
    // another: one plain parallel loop per phase of each tile.
    for (index_t t = 0; t < nqt; ++t) {
      const QueryTile tile = tiles.tile(t, p.Nq);
      parallel_items(
          ex, npro[static_cast<size_t>(t)], [&] { return stages.make_prologue_scratch(); },
          [&](index_t item, PScratch& w) { stages.prologue(tile, item, w); });
      parallel_items(
          ex, BH, [&] { return TileScratch<S>(bq, bk, p.D, p.Dv, kWiden, dot); },
          [&](index_t item, TileScratch<S>& w) { attend(tile, item, w); });
    }
    return;
  }

  // One loop over all items in dependency order: P(0) prologue items of tile
  // 0, its B x H attention items, then tile 1, ... first[t] is the first item
  // of tile t.
  std::vector<index_t> first(static_cast<size_t>(nqt + 1), 0);
  for (index_t t = 0; t < nqt; ++t)
    first[static_cast<size_t>(t + 1)] =
        checked_add(first[static_cast<size_t>(t)], checked_add(npro[static_cast<size_t>(t)], BH, op, "work items"), op,
                    "work items");
  // Finished items per tile and phase (an item that failed counts too).
  std::unique_ptr<std::atomic<index_t>[]> pro_done(new std::atomic<index_t>[static_cast<size_t>(nqt)]),
      att_done(new std::atomic<index_t>[static_cast<size_t>(nqt)]);
  for (index_t t = 0; t < nqt; ++t) {
    pro_done[t].store(0, std::memory_order_relaxed);
    att_done[t].store(0, std::memory_order_relaxed);
  }
  std::atomic<bool> failed{false};
  // Waits until `counter` reaches `target`; false once any item has failed
  // (the waiter then gives up: the loop ends and the first error is
  // rethrown). `failed` is read after the counter: a failed item sets it
  // before its count is released, so a count completed by a failed item is
  // never taken for success.
  auto wait_for = [&](const std::atomic<index_t>& counter, index_t target) {
    for (int spin = 0;; ++spin) {
      const bool reached = counter.load(std::memory_order_acquire) >= target;
      if (failed.load(std::memory_order_relaxed)) return false;
      if (reached) return true;
      if (spin > 64) std::this_thread::yield();
    }
  };
  // Per-thread scratch, allocated on first use: constructing it cannot throw,
  // so every thread reaches the loop and takes its items (a thread that
  // skipped items would leave their waiters waiting).
  struct Scratch {
    std::optional<PScratch> pro;
    std::optional<TileScratch<S>> att;
  };
  parallel_items<ItemOrder::monotonic>(ex, first[static_cast<size_t>(nqt)], [] { return Scratch{}; },
                                       [&](index_t item, Scratch& w) {
    const index_t t = static_cast<index_t>(std::upper_bound(first.begin(), first.end(), item) - first.begin()) - 1;
    const index_t local = item - first[static_cast<size_t>(t)], na = npro[static_cast<size_t>(t)];
    const QueryTile tile = tiles.tile(t, p.Nq);
    std::atomic<index_t>& done = local < na ? pro_done[t] : att_done[t];
    struct Done {  // counts the item as finished even if it throws, and then stops the waiters
      std::atomic<index_t>& c;
      std::atomic<bool>& f;
      bool ok = false;
      ~Done() {
        if (!ok) f.store(true, std::memory_order_relaxed);
        c.fetch_add(1, std::memory_order_release);
      }
    } guard{done, failed};
    if (local < na) {
      if (t >= 1 && !wait_for(pro_done[t - 1], npro[static_cast<size_t>(t - 1)])) return;  // guarantee 2
      if (t >= 2 && !wait_for(att_done[t - 2], BH)) return;                                 // guarantee 3
      if (!w.pro) w.pro.emplace(stages.make_prologue_scratch());
      stages.prologue(tile, local, *w.pro);
    } else {
      if (!wait_for(pro_done[t], na)) return;  // guarantee 1
      if (!w.att) w.att.emplace(bq, bk, p.D, p.Dv, kWiden, dot);
      attend(tile, local - na, *w.att);
    }
    guard.ok = true;
  });
  // parallel_items has rethrown the first error; an item that only gave up
  // waiting always follows one that threw.
  if (failed.load()) throw std::runtime_error(concat(op, ": a work item failed"));
}

template <class T, class KV, class Mask, class Stages>
void run_tile_pipeline(const Problem<T, KV>& p, const Mask& mask, const AttentionOptions& opt, const Executor& ex_in,
                       const Stages& stages, const char* op, Isa level) {
  // The core's one small-work rule, judged on the attention work (the
  // prologue is the caller's and is not counted): a small problem runs on
  // the calling thread, same bits.
  const Executor ex = executor_for(ex_in, attention_work(p));
#if EFFATTN_DISPATCH_BF16
  if constexpr (std::is_same<T, float>::value && !std::is_same<KV, std::int8_t>::value)
    if (opt.compute == Precision::bfloat16 && static_cast<int>(level) >= static_cast<int>(Isa::avx512_bf16)) {
      std::vector<bfloat16> kc, vc;
      const Problem<float, bfloat16> pb = bf16_problem(p, kc, vc, ex);
      run_tile_pipeline_on(p, pb, mask, opt, ex, stages, op, level);
      return;
    }
#endif
  run_tile_pipeline_on(p, p, mask, opt, ex, stages, op, level);
}

/// The same at the active level (read once).
template <class T, class KV, class Mask, class Stages>
void run_tile_pipeline(const Problem<T, KV>& p, const Mask& mask, const AttentionOptions& opt, const Executor& ex,
                       const Stages& stages, const char* op) {
  run_tile_pipeline(p, mask, opt, ex, stages, op, active_isa());
}

}  // namespace EFFATTN_TU_NS
}  // namespace detail
EFFATTN_NAMESPACE_END
