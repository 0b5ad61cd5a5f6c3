// SPDX-License-Identifier: MIT
// effattn: tiled selective-attention prefill on the attention engine's tile
// kernels. Never materialises N x N.
//
// F[i, :] depends on every earlier query, so the query tiles of one batch
// element run in order, carrying F as a running per-key vector (float64):
//
//   for each query tile [i0, i1):
//     A. (batch x group x fixed 256-key chunks of [0, i1)) the selection
//        head's logits for the tile's rows, chunk x Bq (a GEMM on the engine's
//        micro-kernel), ReLU and the rules; then per key j, walking down the
//        tile's rows: F_tile[j][c] = Frun[j]; Frun[j] += S[i0+c][j] (float64).
//        F_tile is key-major like the engine's score tile St[key][query].
//     B. (batch x heads) every head's tile through detail::attend_tile with
//        the causal mask and a score policy whose apply_tile() subtracts
//        F_tile block by block (contiguous vector rows), then finalize_tile.
//
// All items of all tiles form one parallel loop in dependency order (A(t),
// B(t), A(t+1), ...; two F_tile buffers), so there is no barrier per tile.
// Work items and their arithmetic never depend on the thread count, so the
// results are bit-identical for any number of threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <memory>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#include "../attention/engine.hpp"
#include "selection.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace detail {

/// Keys per work item of phase A (fixed: results must not depend on threads).
constexpr index_t kSelectiveKeyChunk = 256;

/// Score policy of the tiled prefill. The current tile's F rows are stored
/// key-major like the engine's score tile, f[j * ld + (i - i0)] = F[i, j]
/// (ld = block_q), so apply_tile() (the engine's block hook) is one contiguous
/// vector subtraction per key row. Its only user, detail::attend_tile, calls
/// apply_tile() when a bound score has one, so there is no per-row apply().
/// F[i, j] = 0 for j = 0 and j >= i - 1, so nothing else is touched.
template <class S>
struct SelectiveTileScore {
  static constexpr bool active = true;
  struct Bound {
    const S* f;
    index_t i0, ld;
    void apply_tile(index_t ti0, index_t ti1, index_t j0, index_t j1, S* EFFATTN_RESTRICT st, index_t ldst) const {
      const index_t nq = ti1 - ti0, c_off = ti0 - i0;
      for (index_t j = j0 > 1 ? j0 : 1; j < j1; ++j) {
        // F[i, j] != 0 only for i >= j + 2.
        const index_t cs = std::max<index_t>(0, j + 2 - ti0);
        if (cs >= nq) break;
        S* EFFATTN_RESTRICT row = st + (j - j0) * ldst;
        const S* EFFATTN_RESTRICT fr = f + j * ld + c_off;
        for (index_t c = cs; c < nq; ++c) row[c] -= fr[c];
      }
    }
  };
};

/// Per-thread scratch of phase A.
template <class S>
struct SelectionScratch {
  AlignedBuffer<S> qt, s;  // packed, scaled queries Qt[d][c]; selection logits Sel[jj][c]
  SelectionScratch(index_t bq, index_t D) : qt(D * bq), s(bq * kSelectiveKeyChunk) {}
};

/// Phase A for one (batch, group, key chunk [c0, c1)) of query tile [i0, i1):
/// writes the tile's F rows for keys [c0, c1) and advances Frun[c0:c1] by the
/// tile's S rows (float64). Query i masks keys 1 <= j < i.
template <class T, class S>
void selection_chunk(const Problem<T>& p, index_t b, index_t hs, index_t i0, index_t i1, index_t c0, index_t c1,
                     index_t bq, double* EFFATTN_RESTRICT frun, S* ftile, index_t ldf, SelectionScratch<S>& w) {
  constexpr int Q = Blocking<S>::Q;
  const index_t D = p.D, hk = hs / p.G, nq = i1 - i0, kcn = c1 - c0;
  const T* kb = p.k + b * p.ks[0] + hk * p.ks[1];
  S* sb = w.s.data();
  {
    // Sel[jj][c] = <k[c0 + jj], scale * q[i0 + c]>, as the engine's St tile.
    const index_t nqp = round_up(nq, Q);
    S* qt = w.qt.data();
    pack_query_tile(p, b, hs, i0, nq, bq, qt);
    tile_gemm<S, false>(kcn, nqp, kb + c0 * p.ks[2], p.ks[2], p.ks[3], qt, bq, D, sb, bq);
    // S = ReLU(Sel), branch-free and vectorised, with ReLU(NaN) = 0 as in the
    // reference and the cache (a NaN logit, e.g. 0 * inf, masks nothing);
    // then zero what the rules exclude: key 0, and the keys j >= i (diagonal
    // and above) of each row.
    for (index_t jj = 0; jj < kcn; ++jj) {
      S* EFFATTN_RESTRICT sr = sb + jj * bq;
      for (index_t c = 0; c < nq; ++c) sr[c] = sr[c] > S(0) ? sr[c] : S(0);
      const index_t j = c0 + jj;
      const index_t cz = j == 0 ? nq : std::min(nq, std::max<index_t>(0, j - i0 + 1));  // rows c < cz: i <= j
      for (index_t c = 0; c < cz; ++c) sr[c] = S(0);
    }
    // Walk down the rows: F_tile[j][c] = Frun[j] + sum_{c' < c} S[c'][j], four
    // keys at once (independent float64 chains).
    index_t jj = 0;
    for (; jj + 4 <= kcn; jj += 4) {
      double* EFFATTN_RESTRICT fa = frun + c0 + jj;
      double a0 = fa[0], a1 = fa[1], a2 = fa[2], a3 = fa[3];
      S* EFFATTN_RESTRICT f0 = ftile + (c0 + jj) * ldf;
      const S* EFFATTN_RESTRICT s0 = sb + jj * bq;
      for (index_t c = 0; c < nq; ++c) {
        f0[c] = static_cast<S>(a0);
        f0[ldf + c] = static_cast<S>(a1);
        f0[2 * ldf + c] = static_cast<S>(a2);
        f0[3 * ldf + c] = static_cast<S>(a3);
        a0 += static_cast<double>(s0[c]);
        a1 += static_cast<double>(s0[bq + c]);
        a2 += static_cast<double>(s0[2 * bq + c]);
        a3 += static_cast<double>(s0[3 * bq + c]);
      }
      fa[0] = a0;
      fa[1] = a1;
      fa[2] = a2;
      fa[3] = a3;
    }
    for (; jj < kcn; ++jj) {
      double a = frun[c0 + jj];
      S* EFFATTN_RESTRICT fr = ftile + (c0 + jj) * ldf;
      const S* EFFATTN_RESTRICT sr = sb + jj * bq;
      for (index_t c = 0; c < nq; ++c) {
        fr[c] = static_cast<S>(a);
        a += static_cast<double>(sr[c]);
      }
      frun[c0 + jj] = a;
    }
  }
}

}  // namespace detail

/// Selective attention, tiled prefill (see selection.hpp for the definition):
///
///   out_h = softmax(scale * q_h k_h^T - F, causal) v_h   for every head h.
///
/// Shapes (row-major indexing, any element strides; outputs must not overlap
/// each other or the inputs): q [B,H,N,D], k [B,Hkv,N,D], v [B,Hkv,N,Dv],
/// out [B,H,N,Dv]; H a multiple of Hkv (grouped-query attention: the selection
/// head s reads k head s / (H/Hkv)).
/// Optional outputs (pass {} to skip):
///   lse [B,H,N]      log-sum-exp of the final logits;
///   f_next [B,G,N]   F's next row, f_next[b,g,j] = sum over ALL N queries of
///                    S[b,g,i,j], i.e. the F that query N would subtract: what
///                    decoding continues from (G = number of selection groups).
///
/// Memory: per batch element and group one F row (N doubles) and the F rows of
/// one query tile (block_q x N), plus the engine's per-thread tiles; never
/// N x N. F is accumulated in float64 and rounded to the input type only when
/// it is subtracted. Query tiles of a batch element run in order; inside a tile
/// the work is parallel over batch x heads (and batch x groups x key chunks for
/// the selection logits). Results are bit-identical for any thread count.
/// Throws shape_error / parameter_error (std::invalid_argument) on bad shapes,
/// a selection head outside [0, H), bad scale or tile sizes, before writing.
template <class T>
void selective_attention(detail::identity_t<ConstView<T, 4>> q, detail::identity_t<ConstView<T, 4>> k,
                         detail::identity_t<ConstView<T, 4>> v, View<T, 4> out, const SelectiveOptions& opt = {},
                         const Executor& ex = {}, detail::identity_t<View<acc_t<T>, 3>> lse = {},
                         View<double, 3> f_next = {}) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "effattn::selective_attention supports float and double");
  using S = acc_t<T>;
  const char* op = "selective_attention";
  detail::check_executor(ex, op);
  std::vector<index_t> sel;
  const auto d = detail::check_selective_args(op, q, k, v, out, lse, opt, effattn::detail::attention_query_tile_quantum(), sel);
  const index_t ng = static_cast<index_t>(sel.size()), N = d.Nq;
  if (f_next.data() != nullptr) {
    detail::check_view(f_next, op, "f_next", true);
    detail::check_shape(f_next, op, "f_next", "[B,G,N]", {d.B, ng, N});
    detail::check_no_alias(f_next, "f_next", q, "q", op);
    detail::check_no_alias(f_next, "f_next", k, "k", op);
    detail::check_no_alias(f_next, "f_next", v, "v", op);
    detail::check_no_alias(f_next, "f_next", out, "out", op);
    if (lse.data()) detail::check_no_alias(f_next, "f_next", lse, "lse", op);
  }
  if (d.B == 0 || d.H == 0 || N == 0) {  // (no product: it could overflow)
    if (f_next.data() != nullptr)
      for (index_t b = 0; b < d.B; ++b)
        for (index_t g = 0; g < ng; ++g)
          for (index_t j = 0; j < N; ++j) f_next(b, g, j) = 0.0;
    return;
  }

  const auto p = detail::make_problem<T>(q, k, v, out, lse, d);
  const index_t bq = detail::query_tile(opt.block_q);
  const index_t bk = opt.block_k > 0 ? opt.block_k : detail::kDefaultBlockK;
  const index_t nqt = detail::ceil_div(N, bq), hpg = d.H / ng, BG = d.B * ng;
  const index_t ldf =
      detail::checked_add(N, detail::kSelectiveKeyChunk - 1, op, "F row length") / detail::kSelectiveKeyChunk *
      detail::kSelectiveKeyChunk;

  // F tiles are key-major: [ldf keys][bq rows].
  const index_t ftile_ld = bq;
  const index_t tile_elems = detail::checked_product(op, "F tile elements B * G * block_q * N", BG, bq, ldf);
  detail::checked_mul(tile_elems, index_t(2 * sizeof(S)), op, "F tile bytes");
  std::vector<double> frun(static_cast<size_t>(BG * ldf), 0.0);  // running F per (b, g), F[i0, :]
  // Two F-tile buffers: tile t uses buffer t % 2, so the selection of tile t+1
  // can run while the heads of tile t are still reading theirs.
  detail::AlignedBuffer<S> ftile(2 * tile_elems);

  auto nchunks = [&](index_t t) { return detail::ceil_div(std::min(N, (t + 1) * bq), detail::kSelectiveKeyChunk); };
  auto run_a = [&](index_t t, index_t item, detail::SelectionScratch<S>& w) {
    const index_t i0 = t * bq, i1 = std::min(N, i0 + bq), nch = nchunks(t);
    const index_t c = item % nch, bg = item / nch, b = bg / ng, g = bg % ng;
    const index_t c0 = c * detail::kSelectiveKeyChunk, c1 = std::min(i1, c0 + detail::kSelectiveKeyChunk);
    detail::selection_chunk<T, S>(p, b, sel[g], i0, i1, c0, c1, bq, frun.data() + bg * ldf,
                                  ftile.data() + (t % 2) * tile_elems + bg * bq * ldf, ftile_ld, w);
  };
  auto run_b = [&](index_t t, index_t item, detail::TileScratch<S>& w) {
    const index_t i0 = t * bq, i1 = std::min(N, i0 + bq);
    const index_t b = item / d.H, h = item % d.H, bg = b * ng + h / hpg;
    const auto bm = CausalMask{}.bind(b, h, N, N);
    typename detail::SelectiveTileScore<S>::Bound bs{ftile.data() + (t % 2) * tile_elems + bg * bq * ldf, i0,
                                                       ftile_ld};
    detail::attend_tile<T, S, decltype(bm), decltype(bs), true>(p, b, h, i0, i1, 0, N, bq, bk, bm, bs, w);
    detail::finalize_tile(p, b, h, i0, i1, w);
  };

  if (ex.parallel_for) {
    // A user hook may run ranges in any order, so no item may wait for
    // another: two plain parallel loops per query tile.
    for (index_t t = 0; t < nqt; ++t) {
      detail::parallel_items(
          ex, BG * nchunks(t), [&] { return detail::SelectionScratch<S>(bq, d.D); },
          [&](index_t item, detail::SelectionScratch<S>& w) { run_a(t, item, w); });
      detail::parallel_items(
          ex, d.B * d.H, [&] { return detail::TileScratch<S>(bq, bk, d.D, d.Dv); },
          [&](index_t item, detail::TileScratch<S>& w) { run_b(t, item, w); });
    }
  } else {
    // One parallel loop over all tiles, items in dependency order:
    //   A(t, *) chunks of tile t, then B(t, *) heads of tile t, then A(t+1, *) ...
    // A(t) waits for A(t-1) (Frun) and for B(t-2) (its F buffer); B(t) waits for
    // A(t). Every item waits only for items with smaller indices, which the
    // core's monotonic driver has already handed out (or a serial loop has
    // finished), so the loop always progresses; no per-tile barrier.
    std::vector<index_t> first(static_cast<size_t>(nqt + 1), 0);  // first item of tile t
    for (index_t t = 0; t < nqt; ++t) first[t + 1] = first[t] + BG * nchunks(t) + d.B * d.H;
    std::unique_ptr<std::atomic<index_t>[]> a_done(new std::atomic<index_t>[nqt]), b_done(new std::atomic<index_t>[nqt]);
    for (index_t t = 0; t < nqt; ++t) {
      a_done[t].store(0, std::memory_order_relaxed);
      b_done[t].store(0, std::memory_order_relaxed);
    }
    std::atomic<bool> failed{false};
    auto wait_for = [&](const std::atomic<index_t>& counter, index_t target) {
      for (int spin = 0; counter.load(std::memory_order_acquire) < target; ++spin) {
        if (failed.load(std::memory_order_relaxed)) return false;
        if (spin > 64) std::this_thread::yield();
      }
      return true;
    };
    struct Scratch {  // allocated on first use, so a failed allocation is an item error, not a skipped thread
      std::unique_ptr<detail::SelectionScratch<S>> a;
      std::unique_ptr<detail::TileScratch<S>> b;
    };
    detail::parallel_items<detail::ItemOrder::monotonic>(ex, first[nqt], [] { return Scratch{}; }, [&](index_t item, Scratch& w) {
      const index_t t = static_cast<index_t>(std::upper_bound(first.begin(), first.end(), item) - first.begin()) - 1;
      const index_t local = item - first[t], na = BG * nchunks(t);
      std::atomic<index_t>& done = local < na ? a_done[t] : b_done[t];
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
        if (t >= 1 && !wait_for(a_done[t - 1], BG * nchunks(t - 1))) return;
        if (t >= 2 && !wait_for(b_done[t - 2], d.B * d.H)) return;
        if (!w.a) w.a.reset(new detail::SelectionScratch<S>(bq, d.D));
        run_a(t, local, *w.a);
      } else {
        if (!wait_for(a_done[t], na)) return;
        if (!w.b) w.b.reset(new detail::TileScratch<S>(bq, bk, d.D, d.Dv));
        run_b(t, local - na, *w.b);
      }
      guard.ok = true;
    });
    if (failed.load()) EFFATTN_THROW(std::runtime_error("selective_attention: a work item failed"));
  }
  if (f_next.data() != nullptr)
    for (index_t b = 0; b < d.B; ++b)
      for (index_t g = 0; g < ng; ++g)
        for (index_t j = 0; j < N; ++j) f_next(b, g, j) = frun[static_cast<size_t>((b * ng + g) * ldf + j)];
}

EFFATTN_NAMESPACE_END
