// SPDX-License-Identifier: MIT
// effattn::tome: ToMe for diffusion (Bolya & Hoffman, "Token Merging for Fast
// Stable Diffusion", CVPRW 2023; dbolya/tomesd `tomesd/merge.py`
// `bipartite_soft_matching_random2d`, golden README §2).
//
// Tokens lie on a w x h grid in raster order (token t = row * w + col). The
// top-left (h / sy) * sy x (w / sx) * sx region is cut into sy x sx cells; each
// cell has exactly one destination, at offset k = rand_idx[i, j] in [0, sy*sx)
// (row k / sx, column k % sx inside the cell). Every other token, including the
// remainder rows and columns outside the region, is a source. r is capped at the
// number of sources, N - num_dst (so the merged fraction is at most
// 1 - 1 / (sx * sy) on a divisible grid). Cosine matching between sources and
// destinations, then the same greedy step as ToMe, with the unmerged sources in
// score order; merge = [unmerged sources..., destinations...] with mean
// merging (the destination counts once), unmerge copies each group's row back.
//
// Partition order: the official code lists sources and destinations with an
// unstable argsort whose order depends on the torch build. This port uses the
// canonical ascending order (sources and destinations each in ascending token
// order); bipartite_soft_matching_partition() takes any other order.
//
// The destination choice: top-left (deterministic), an explicit rand_idx (to
// reproduce a given draw, e.g. the official torch.randint output), or a seeded
// draw of this library (random2d_draw; its stream is effattn's own, not torch's).
// One draw is shared by the whole batch, as in the official code.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/view.hpp"
#include "matching.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace tome {

/// The grid of ToMe for diffusion.
struct Grid2d {
  index_t w = 0;   ///< width in tokens
  index_t h = 0;   ///< height in tokens
  index_t sx = 2;  ///< cell width (stride in x), 1 <= sx <= w
  index_t sy = 2;  ///< cell height (stride in y), 1 <= sy <= h
  /// Cells per row / column (0 for a stride < 1: such a grid is rejected).
  index_t cells_x() const { return sx > 0 ? w / sx : 0; }
  index_t cells_y() const { return sy > 0 ? h / sy : 0; }
  /// Cells (= destinations); throws shape_error when the count overflows.
  index_t num_dst() const {
    return effattn::detail::checked_mul(cells_x(), cells_y(), "tome::Grid2d::num_dst", "cells (w/sx) * (h/sy)");
  }
};

namespace detail {
/// Checks a grid, with every product of its extents in checked arithmetic
/// (before anything is allocated or indexed): w * h tokens, sx * sy offsets
/// per cell, (w/sx) * (h/sy) cells. Returns w * h.
inline index_t check_grid(const Grid2d& g, const char* op) {
  effattn::detail::require(g.w >= 1 && g.h >= 1, op, "w/h", "must be >= 1, got w=", g.w, " h=", g.h);
  effattn::detail::require(g.sx >= 1 && g.sy >= 1, op, "sx/sy", "strides must be >= 1, got sx=", g.sx, " sy=", g.sy);
  effattn::detail::require(g.sx <= g.w && g.sy <= g.h, op, "sx/sy", "strides must not exceed the grid (sx <= w, sy <= h), got sx=",
          g.sx, " sy=", g.sy, " for w=", g.w, " h=", g.h);
  const index_t n = effattn::detail::checked_mul(g.w, g.h, op, "tokens w * h");
  effattn::detail::checked_mul(g.sx, g.sy, op, "cell size sx * sy");
  effattn::detail::checked_mul(g.cells_x(), g.cells_y(), op, "cells (w/sx) * (h/sy)");
  return n;
}

/// rand_idx [h/sy, w/sx] with values in [0, sx*sy); an absent view ({}) is
/// the top-left choice. Returns whether it is present.
inline bool check_rand_idx(const Grid2d& g, const ConstView<index_t, 2>& rand_idx, const char* op) {
  if (is_absent(rand_idx)) return false;
  const index_t cy = g.cells_y(), cx = g.cells_x(), k = g.sx * g.sy;  // checked by check_grid
  effattn::detail::check_view(rand_idx, op, "rand_idx", false);
  effattn::detail::check_shape(rand_idx, op, "rand_idx", "[h/sy,w/sx]", {cy, cx});
  for (index_t i = 0; i < cy; ++i)
    for (index_t j = 0; j < cx; ++j)
      effattn::detail::require(rand_idx(i, j) >= 0 && rand_idx(i, j) < k, op, "rand_idx", "values must be in [0, sx*sy=", k,
              "), got ", rand_idx(i, j), " at [", i, ",", j, "]");
  return true;
}

/// The canonical partition of a checked grid and rand_idx.
inline void partition_unchecked(const Grid2d& g, const ConstView<index_t, 2>& rand_idx, bool has_rand, index_t n,
                                std::vector<index_t>& a_tok, std::vector<index_t>& b_tok) {
  const index_t cy = g.cells_y(), cx = g.cells_x();
  std::vector<char> is_dst(static_cast<size_t>(n), 0);
  for (index_t i = 0; i < cy; ++i)
    for (index_t j = 0; j < cx; ++j) {
      const index_t o = has_rand ? rand_idx(i, j) : 0;
      is_dst[static_cast<size_t>((i * g.sy + o / g.sx) * g.w + (j * g.sx + o % g.sx))] = 1;
    }
  a_tok.clear();
  b_tok.clear();
  a_tok.reserve(static_cast<size_t>(n - cy * cx));
  b_tok.reserve(static_cast<size_t>(cy * cx));
  for (index_t t = 0; t < n; ++t) (is_dst[static_cast<size_t>(t)] ? b_tok : a_tok).push_back(t);
}

/// SplitMix64: a small, well-mixed, portable generator (its output does not
/// depend on the platform's <random> implementation).
inline std::uint64_t splitmix64(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace detail

/// A seeded draw of destination offsets: [cells_y * cells_x] row-major, each
/// uniform in [0, sx * sy) (rejection sampling, no modulo bias). Same seed, same
/// draw on every platform. Throws for an invalid grid (see check_grid).
inline std::vector<index_t> random2d_draw(const Grid2d& g, std::uint64_t seed) {
  const char* op = "tome::random2d_draw";
  detail::check_grid(g, op);
  const std::uint64_t k = static_cast<std::uint64_t>(g.sx * g.sy);  // >= 1, checked
  const std::uint64_t limit = ~std::uint64_t(0) - (~std::uint64_t(0) % k);
  std::vector<index_t> out(static_cast<size_t>(g.num_dst()));
  std::uint64_t s = seed;
  for (auto& v : out) {
    std::uint64_t x;
    do x = detail::splitmix64(s);
    while (x >= limit);
    v = static_cast<index_t>(x % k);
  }
  return out;
}

/// The canonical partition: sources (a_tok) and destinations (b_tok), each in
/// ascending token order. rand_idx [cells_y, cells_x] with values in
/// [0, sx*sy), or an absent view ({}) for the top-left choice (no_rand).
/// Everything is checked before a_tok and b_tok are touched.
inline void random2d_partition(const Grid2d& g, ConstView<index_t, 2> rand_idx, std::vector<index_t>& a_tok,
                               std::vector<index_t>& b_tok) {
  const char* op = "tome::random2d_partition";
  const index_t n = detail::check_grid(g, op);
  const bool has_rand = detail::check_rand_idx(g, rand_idx, op);
  detail::partition_unchecked(g, rand_idx, has_rand, n, a_tok, b_tok);
}

/// ToMe for diffusion's matching (official `bipartite_soft_matching_random2d`
/// with the canonical partition order).
///   metric [B, N, C] with N = w * h (the hidden states in tomesd);
///   r >= 0 tokens to remove (tomesd uses r = int(N * ratio)), capped at the
///   number of sources; r == 0 is the identity;
///   rand_idx [h/sy, w/sx]: the destination offset of every cell, shared by the
///   batch; an absent view ({}) means the top-left token (official
///   no_rand=True).
/// Apply the plan with merge(plan, x, out, MergeMode::mean) before attention
/// and unmerge(plan, y, out) after it. With B == 0 the plan holds no partition.
/// Throws shape_error when w * h != N (or a grid product overflows),
/// parameter_error for a negative executor thread count, r < 0, strides < 1 or
/// larger than the grid, rand_idx values out of range, non-finite metric.
inline MergePlan bipartite_soft_matching_random2d(ConstView<float, 3> metric, const Grid2d& g, index_t r,
                                                  ConstView<index_t, 2> rand_idx = {}, const Executor& ex = {}) {
  const char* op = "tome::bipartite_soft_matching_random2d";
  effattn::detail::check_executor(ex, op);
  effattn::detail::require(r >= 0, op, "r", "must be >= 0, got ", r);
  const index_t n = detail::check_grid(g, op);
  effattn::detail::check_view(metric, op, "metric", false);
  if (metric.dim(1) != n)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": metric must be [B,N,C] with N = w*h = ", g.w, "*", g.h,
                                                      " = ", n, ", got ",
                                                      effattn::detail::shape_str(metric.shape()))));
  const bool has_rand = detail::check_rand_idx(g, rand_idx, op);
  detail::check_metric(metric, op);
  const index_t B = metric.dim(0), num_dst = g.num_dst();
  const index_t r_eff = std::min(r, n - num_dst);
  if (r_eff <= 0) return MergePlan::identity(B, n);
  if (B == 0) return detail::empty_batch_plan(n, r_eff, false);
  std::vector<index_t> a, b;
  detail::partition_unchecked(g, rand_idx, has_rand, n, a, b);
  return detail::match_partition(metric, a, b, r_eff, false, ex);
}

/// r for a merge ratio as tomesd's patch computes it: int(N * ratio), ratio in
/// [0, 1]. (The matching then caps it at the number of sources.)
inline index_t ratio_to_r(index_t tokens, double ratio) {
  effattn::detail::require(tokens >= 0, "tome::ratio_to_r", "tokens", "must be >= 0, got ", tokens);
  effattn::detail::require(ratio >= 0.0 && ratio <= 1.0, "tome::ratio_to_r", "ratio", "must be in [0, 1], got ", ratio);
  // double(tokens) rounds up to 2^63 near the top of the index type: the
  // product is at most tokens, and never converted from out of range.
  const double v = static_cast<double>(tokens) * ratio;
  return v >= static_cast<double>(tokens) ? tokens : static_cast<index_t>(v);
}

}  // namespace tome
EFFATTN_NAMESPACE_END
