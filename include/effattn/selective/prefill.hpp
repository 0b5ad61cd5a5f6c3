// SPDX-License-Identifier: MIT
// effattn::selective: tiled selective-attention prefill on the attention
// engine's ordered tile pipeline (attention/detail/tile_pipeline.hpp). Never
// materialises N x N.
//
// F[i, :] depends on every earlier query, so the query tiles of one batch
// element run in order, carrying F as a running per-key vector (float64):
//
//   for each query tile [i0, i1):
//     prologue (batch x group x fixed 256-key chunks of [0, i1)): the
//        selection head's logits for the tile's rows, chunk x Bq (a GEMM on
//        the engine's micro-kernel), ReLU and the rules; then per key j,
//        walking down the tile's rows: F_tile[j][c] = Frun[j];
//        Frun[j] += S[i0+c][j] (float64). F_tile is key-major like the
//        engine's score tile St[key][query]. (selection_chunk)
//     attention (batch x heads, run by the engine): every head's tile with the
//        causal mask and a score whose apply_tile() subtracts F_tile block by
//        block (contiguous vector rows). (SelectiveTileScore)
//
// The pipeline guarantees what this needs: a tile's prologue runs after the
// previous tile's (Frun), its heads after its prologue, and the prologue of
// tile t after the heads of tile t-2, so two F_tile buffers (t % 2) suffice.
// Work items and their arithmetic never depend on the thread count, so the
// results are bit-identical for any number of threads or any host pool.
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../attention/detail/tile_pipeline.hpp"
#include "../attention/engine.hpp"
#include "selection.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace selective {
namespace detail {
inline namespace EFFATTN_TU_NS {

/// Keys per prologue item (fixed: results must not depend on threads).
constexpr index_t kSelectiveKeyChunk = 256;

/// Score of the tiled prefill's heads. The current tile's F rows are stored
/// key-major like the engine's score tile, f[j * ld + (i - i0)] = F[i, j]
/// (ld = block_q), so apply_tile() (the engine's block hook) is one contiguous
/// vector subtraction per key row. Its only user, effattn::detail::attend_tile,
/// calls apply_tile() when a bound score has one, so there is no per-row apply().
/// F[i, j] = 0 for j = 0 and j >= i - 1, so nothing else is touched.
template <class S>
struct SelectiveTileScore {
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

/// Per-thread scratch of the prologue.
template <class S>
struct SelectionScratch {
  effattn::detail::AlignedBuffer<S> qt, s;  // packed, scaled queries Qt[d][c]; selection logits Sel[jj][c]
  SelectionScratch(index_t bq, index_t D) : qt(D * bq), s(bq * kSelectiveKeyChunk) {}
};

/// The prologue item for one (batch, group, key chunk [c0, c1)) of query tile [i0, i1):
/// writes the tile's F rows for keys [c0, c1) and advances Frun[c0:c1] by the
/// tile's S rows (float64). Query i masks keys 1 <= j < i.
template <class T, class S>
void selection_chunk(const effattn::detail::Problem<T>& p, index_t b, index_t hs, index_t i0, index_t i1, index_t c0, index_t c1,
                     index_t bq, double* EFFATTN_RESTRICT frun, S* ftile, index_t ldf, SelectionScratch<S>& w, Isa level) {
  const index_t nq = i1 - i0, kcn = c1 - c0;
  S* sb = w.s.data();
  {
    // Sel[jj][c] = <k[c0 + jj], scale * q[i0 + c]>, as the engine's St tile,
    // by the engine's kernels at the call's level.
    EFFATTN_WITH_LEVEL(level, lvl::score_tile<T, S>(p, b, hs, i0, i1, c0, kcn, bq, w.qt.data(), sb));
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

/// The prefill's stages for effattn::detail::run_tile_pipeline: the
/// selection step of each query tile as its prologue (one item per batch x
/// group x key chunk of [0, i1)), and SelectiveTileScore over the tile's F
/// buffer as the score of its heads.
template <class T>
struct PrefillStages {
  using S = acc_t<T>;
  using PrologueScratch = SelectionScratch<S>;
  const effattn::detail::Problem<T>* p;
  const index_t* sel;     // selection head of each group
  index_t ng, hpg, bq;    // groups, heads per group, query tile
  index_t ldf;            // F row length (N rounded up to the key chunk)
  index_t tile_elems;     // elements of one F-tile buffer: B * G * bq * ldf
  double* frun;           // [B][G][ldf] running F
  S* ftile;               // two F-tile buffers, [2][B][G][ldf keys][bq rows]
  Isa level;              // the call's instruction-set level

  S* buffer(index_t t, index_t bg) const { return ftile + (t % 2) * tile_elems + bg * bq * ldf; }
  static index_t nchunks(const effattn::detail::QueryTile& tile) {
    return effattn::detail::ceil_div(tile.i1, kSelectiveKeyChunk);
  }

  index_t prologue_items(const effattn::detail::QueryTile& tile) const { return p->B * ng * nchunks(tile); }
  PrologueScratch make_prologue_scratch() const { return PrologueScratch(bq, p->D); }
  void prologue(const effattn::detail::QueryTile& tile, index_t item, PrologueScratch& w) const {
    const index_t nch = nchunks(tile);
    const index_t c = item % nch, bg = item / nch, b = bg / ng, g = bg % ng;
    const index_t c0 = c * kSelectiveKeyChunk, c1 = std::min(tile.i1, c0 + kSelectiveKeyChunk);
    selection_chunk<T, S>(*p, b, sel[g], tile.i0, tile.i1, c0, c1, bq, frun + bg * ldf, buffer(tile.t, bg), bq, w,
                          level);
  }
  typename SelectiveTileScore<S>::Bound score(const effattn::detail::QueryTile& tile, index_t b, index_t h) const {
    return {buffer(tile.t, b * ng + h / hpg), tile.i0, bq};
  }
};

}  // namespace EFFATTN_TU_NS
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
/// one query tile (block_q x N, two buffers), plus the engine's per-thread
/// tiles; never N x N. F is accumulated in float64 and rounded to the input
/// type only when it is subtracted. Query tiles run in order; inside a tile the
/// work is parallel over batch x heads (and batch x groups x key chunks for the
/// selection logits). Results are bit-identical for any thread count.
/// opt.attention.backend = Backend::reference runs the dense float64 oracle
/// instead (selective_attention_reference: O(N^2) memory, for tests).
/// Throws shape_error / parameter_error (std::invalid_argument) on bad shapes,
/// a selection head outside [0, H), bad scale, backend or tile sizes, before
/// writing.
template <class T>
void selective_attention(effattn::detail::identity_t<ConstView<T, 4>> q, effattn::detail::identity_t<ConstView<T, 4>> k,
                         effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out,
                         const SelectiveOptions& opt = {}, const Executor& ex = {},
                         effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}, View<double, 3> f_next = {}) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "effattn::selective::selective_attention supports float and double");
  namespace ed = effattn::detail;
  using S = acc_t<T>;
  const char* op = "selective_attention";
  ed::check_executor(ex, op);
  const Isa level = active_isa();  // once per call
  std::vector<index_t> sel;
  const auto d =
      detail::check_selective_args(op, q, k, v, out, lse, opt, ed::attention_query_tile_quantum(level), sel);
  const index_t ng = static_cast<index_t>(sel.size()), N = d.Nq;
  if (f_next.data() != nullptr) {
    ed::check_view(f_next, op, "f_next", true);
    ed::check_shape(f_next, op, "f_next", "[B,G,N]", {d.B, ng, N});
    ed::check_no_alias(f_next, "f_next", q, "q", op);
    ed::check_no_alias(f_next, "f_next", k, "k", op);
    ed::check_no_alias(f_next, "f_next", v, "v", op);
    ed::check_no_alias(f_next, "f_next", out, "out", op);
    if (lse.data()) ed::check_no_alias(f_next, "f_next", lse, "lse", op);
  }
  if (opt.attention.backend == Backend::reference || d.B == 0 || d.H == 0 || N == 0) {
    // The oracle (which also writes f_next = 0 when there is no query head,
    // token or sequence, without forming any product that could overflow).
    detail::selective_dense<T>(d, sel, q, k, v, out, opt, lse, {}, {}, f_next, op);
    return;
  }

  const auto p = ed::make_problem<T>(q, k, v, out, lse, d);
  const ed::PipelineTiles tiles = ed::pipeline_tiles(N, opt.attention, level);
  const index_t bq = tiles.bq, BG = d.B * ng;
  const index_t ldf = ed::checked_add(N, detail::kSelectiveKeyChunk - 1, op, "F row length") /
                      detail::kSelectiveKeyChunk * detail::kSelectiveKeyChunk;
  // F tiles are key-major: [ldf keys][bq rows] per (b, g).
  const index_t tile_elems = ed::checked_product(op, "F tile elements B * G * block_q * N", BG, bq, ldf);
  ed::checked_mul(tile_elems, index_t(2 * sizeof(S)), op, "F tile bytes");
  std::vector<double> frun(static_cast<size_t>(BG * ldf), 0.0);  // running F per (b, g), F[i0, :]
  // Two F-tile buffers: tile t uses buffer t % 2, so the selection of tile t+1
  // can run while the heads of tile t are still reading theirs.
  ed::AlignedBuffer<S> ftile(2 * tile_elems);

  const detail::PrefillStages<T> stages{&p, sel.data(), ng, d.H / ng, bq, ldf, tile_elems, frun.data(), ftile.data(),
                                        level};
  ed::run_tile_pipeline(p, CausalMask{}, opt.attention, ex, stages, op, level);
  if (f_next.data() != nullptr)
    for (index_t b = 0; b < d.B; ++b)
      for (index_t g = 0; g < ng; ++g)
        for (index_t j = 0; j < N; ++j) f_next(b, g, j) = frun[static_cast<size_t>((b * ng + g) * ldf + j)];
}

}  // namespace selective

// ------------------------------------------------ deprecated effattn:: name
// (see selection.hpp)

template <class T, class O = selective::SelectiveOptions,
          std::enable_if_t<std::is_same<O, selective::SelectiveOptions>::value, int> = 0>
[[deprecated("use effattn::selective::selective_attention")]] void selective_attention(
    detail::identity_t<ConstView<T, 4>> q, detail::identity_t<ConstView<T, 4>> k, detail::identity_t<ConstView<T, 4>> v,
    View<T, 4> out, const O& opt = {}, const Executor& ex = {}, detail::identity_t<View<acc_t<T>, 3>> lse = {},
    View<double, 3> f_next = {}) {
  selective::selective_attention<T>(q, k, v, out, opt, ex, lse, f_next);
}

EFFATTN_NAMESPACE_END
