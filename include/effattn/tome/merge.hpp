// SPDX-License-Identifier: MIT
// effattn::tome: applying a merge plan: merge (mean / sum / amax), size-weighted
// merging, source tracking, restoring the original order, unmerge.
//
// Semantics of facebookresearch/ToMe `tome/merge.py` (golden README §1, items
// 7-10). Every output row g of a plan is a *group*: its anchor token (an
// unmerged A token or a B token) plus the sources merged into it. The official
// merge is PyTorch `scatter_reduce(..., include_self=True)` into the B token, so
//   sum:  anchor + sum(sources)
//   mean: (anchor + sum(sources)) / (1 + #sources)    (the destination counts once)
//   amax: elementwise max over the group
// and an unmerged token is its own group. Sums run in a fixed order (anchor,
// then the sources in decision order), so results do not depend on threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../attention/options.hpp"
#include "../core/view.hpp"
#include "matching.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace tome {

/// Reduction of a group: see the file comment.
enum class MergeMode { mean, sum, amax };

namespace detail {

constexpr index_t kRowChunk = 32;

/// The plan's own consistency (its table sizes, in checked arithmetic).
inline void check_plan(const MergePlan& p, const char* op) {
  bool ok = p.batch >= 0 && p.tokens >= 0 && p.r >= 0 && p.r <= p.tokens;
  if (ok) {
    const auto sizes = p.table_sizes(op);
    ok = static_cast<index_t>(p.row_of.size()) == sizes.first &&
         static_cast<index_t>(p.group_tok.size()) == sizes.first &&
         static_cast<index_t>(p.group_ptr.size()) == sizes.second;
  }
  // Every index the kernels follow stays in range (a hand-edited plan must not
  // make them read or write out of bounds): O(batch * tokens), next to the
  // O(batch * tokens * C) of any use.
  if (ok && p.tokens > 0 && p.batch > 0) {
    const index_t nout = p.out_tokens(), total = static_cast<index_t>(p.group_tok.size());
    ok = p.group_ptr.front() == 0 && p.group_ptr.back() == total;
    for (size_t i = 0; ok && i + 1 < p.group_ptr.size(); ++i)
      ok = p.group_ptr[i] < p.group_ptr[i + 1];  // every group has its anchor
    for (size_t i = 0; ok && i < p.group_tok.size(); ++i) ok = p.group_tok[i] >= 0 && p.group_tok[i] < p.tokens;
    for (size_t i = 0; ok && i < p.row_of.size(); ++i) ok = p.row_of[i] >= 0 && p.row_of[i] < nout;
    for (index_t b = 0; ok && b < p.batch; ++b)  // batch b's groups stay in its own slice
      ok = p.group_ptr[static_cast<size_t>(b * nout)] == b * p.tokens;
  }
  if (!ok)
    EFFATTN_THROW(parameter_error(concat(op, ": plan is not finalized or inconsistent (batch=", p.batch,
                                         ", tokens=", p.tokens, ", r=", p.r, ")")));
}

/// x must be [plan.batch, plan.tokens, C] (C from x).
template <class T>
void check_tokens(const MergePlan& p, const View<T, 3>& x, const char* op, const char* name, bool writable) {
  effattn::detail::check_view(x, op, name, writable);
  effattn::detail::check_shape(x, op, name, "[plan.batch,plan.tokens,C]", {p.batch, p.tokens, x.dim(2)});
}

template <class T>
void check_out(const View<T, 3>& out, index_t B, index_t N, index_t C, const char* op, const char* name) {
  effattn::detail::check_view(out, op, name, true);
  effattn::detail::check_shape(out, op, name, "[B,N',C]", {B, N, C});
}

/// Runs body(b, g0, g1) over chunks of output rows of every batch; `width`
/// (elements per row) decides whether threads pay off. No rows (B == 0 or
/// rows == 0): nothing runs, whatever the other extent.
template <class Body>
void for_rows(const Executor& ex, index_t B, index_t rows, index_t width, Body&& body) {
  if (B <= 0 || rows <= 0) return;
  const index_t nch = (rows + kRowChunk - 1) / kRowChunk;
  const index_t items = effattn::detail::checked_mul(B, nch, "tome", "row chunks");
  effattn::detail::parallel_items(effattn::detail::executor_for(ex, double(B) * rows * width), items, [] { return 0; },
                                  [&](index_t item, int&) {
                                    const index_t b = item / nch, g0 = (item % nch) * kRowChunk;
                                    body(b, g0, std::min(rows, g0 + kRowChunk));
                                  });
}

/// merge() after its checks: out[b, g] = the mode's reduction of group g.
/// Nothing to write (out empty): returns without forming any element address.
template <class T>
void merge_rows(const MergePlan& plan, const ConstView<T, 3>& x, const View<T, 3>& out, MergeMode mode,
                const Executor& ex) {
  if (out.empty()) return;
  const index_t C = x.dim(2);
  const index_t xs = x.stride(2), os = out.stride(2);
  for_rows(ex, plan.batch, plan.out_tokens(), C, [&](index_t b, index_t g0, index_t g1) {
    for (index_t g = g0; g < g1; ++g) {
      const index_t* m0 = plan.group_begin(b, g);
      const index_t* m1 = plan.group_end(b, g);
      const index_t cnt = m1 - m0;
      if (xs == 1 && os == 1) {  // contiguous rows: unit-stride loops the compiler vectorises
        T* o = &out(b, g, 0);
        const T* a0 = &x(b, m0[0], 0);
        for (index_t c = 0; c < C; ++c) o[c] = a0[c];
        for (const index_t* t = m0 + 1; t < m1; ++t) {
          const T* a = &x(b, *t, 0);
          if (mode == MergeMode::amax)
            for (index_t c = 0; c < C; ++c) o[c] = std::max(o[c], a[c]);
          else
            for (index_t c = 0; c < C; ++c) o[c] += a[c];
        }
        if (mode == MergeMode::mean && cnt > 1)
          for (index_t c = 0; c < C; ++c) o[c] /= static_cast<T>(cnt);
        continue;
      }
      for (index_t c = 0; c < C; ++c) {
        T acc = x(b, m0[0], c);
        if (mode == MergeMode::amax) {
          for (const index_t* t = m0 + 1; t < m1; ++t) acc = std::max(acc, x(b, *t, c));
        } else {
          for (const index_t* t = m0 + 1; t < m1; ++t) acc += x(b, *t, c);
          if (mode == MergeMode::mean) acc /= static_cast<T>(cnt);
        }
        out(b, g, c) = acc;
      }
    }
  });
}

}  // namespace detail

/// out = merge(x): x [B, N, C] -> out [B, N - r, C] (any strides; out must not
/// overlap x). mode: mean (default; the destination counts itself once), sum,
/// amax. Throws shape_error when x does not match the plan's [B, N] or out is
/// not [B, N - r, C], parameter_error for a negative executor thread count or
/// an unknown mode, before writing anything.
template <class T>
void merge(const MergePlan& plan, effattn::detail::identity_t<ConstView<T, 3>> x, View<T, 3> out,
           MergeMode mode = MergeMode::mean, const Executor& ex = {}) {
  const char* op = "tome::merge";
  effattn::detail::check_executor(ex, op);
  detail::check_plan(plan, op);
  detail::check_tokens(plan, x, op, "x", false);
  detail::check_out(out, plan.batch, plan.out_tokens(), x.dim(2), op, "out");
  effattn::detail::check_no_alias(out, "out", x, "x", op);
  effattn::detail::require(mode == MergeMode::mean || mode == MergeMode::sum || mode == MergeMode::amax, op, "mode",
          "must be mean, sum or amax");
  detail::merge_rows<T>(plan, x, out, mode, ex);
}

/// Size-weighted merge (official `merge_wavg`): x' = merge(x * size, sum) /
/// merge(size, sum), size' = merge(size, sum).
///   x [B, N, C], size [B, N] (a [B, N, 1] tensor viewed as rank 2) or an
///   absent view ({}) for all ones (the official `size=None`), x_out
///   [B, N - r, C], size_out [B, N - r]. Sizes must be finite and > 0
///   (parameter_error). C may be 0 (then only size_out is written).
template <class T>
void merge_wavg(const MergePlan& plan, effattn::detail::identity_t<ConstView<T, 3>> x,
                effattn::detail::identity_t<ConstView<T, 2>> size, View<T, 3> x_out, View<T, 2> size_out,
                const Executor& ex = {}) {
  const char* op = "tome::merge_wavg";
  effattn::detail::check_executor(ex, op);
  detail::check_plan(plan, op);
  detail::check_tokens(plan, x, op, "x", false);
  const index_t B = plan.batch, N = plan.tokens, C = x.dim(2), nout = plan.out_tokens();
  const bool has_size = !detail::is_absent(size);
  if (has_size) {
    effattn::detail::check_view(size, op, "size", false);
    effattn::detail::check_shape(size, op, "size", "[B,N]", {B, N});
    if (!size.empty())
      for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < N; ++t)
          effattn::detail::require(std::isfinite(size(b, t)) && size(b, t) > T(0), op, "size", "must be finite and > 0, got ",
                  size(b, t), " at [", b, ",", t, "]");
  }
  detail::check_out(x_out, B, nout, C, op, "x_out");
  effattn::detail::check_view(size_out, op, "size_out", true);
  effattn::detail::check_shape(size_out, op, "size_out", "[B,N']", {B, nout});
  effattn::detail::check_no_alias(x_out, "x_out", x, "x", op);
  effattn::detail::check_no_alias(size_out, "size_out", x, "x", op);
  effattn::detail::check_no_alias(size_out, "size_out", x_out, "x_out", op);
  if (has_size) {
    effattn::detail::check_no_alias(x_out, "x_out", size, "size", op);
    effattn::detail::check_no_alias(size_out, "size_out", size, "size", op);
  }
  if (size_out.empty()) return;  // no rows (x_out is then empty too)
  auto sz = [&](index_t b, index_t t) { return has_size ? size(b, t) : T(1); };
  const bool unit = C > 0 && x.stride(2) == 1 && x_out.stride(2) == 1;
  detail::for_rows(ex, B, nout, C, [&](index_t b, index_t g0, index_t g1) {
    for (index_t g = g0; g < g1; ++g) {
      const index_t* m0 = plan.group_begin(b, g);
      const index_t* m1 = plan.group_end(b, g);
      T s = sz(b, m0[0]);
      for (const index_t* t = m0 + 1; t < m1; ++t) s += sz(b, *t);
      if (unit) {  // contiguous rows
        T* o = &x_out(b, g, 0);
        const T* a0 = &x(b, m0[0], 0);
        const T w0 = sz(b, m0[0]);
        for (index_t c = 0; c < C; ++c) o[c] = a0[c] * w0;
        for (const index_t* t = m0 + 1; t < m1; ++t) {
          const T* a = &x(b, *t, 0);
          const T w = sz(b, *t);
          for (index_t c = 0; c < C; ++c) o[c] += a[c] * w;
        }
        for (index_t c = 0; c < C; ++c) o[c] /= s;
        size_out(b, g) = s;
        continue;
      }
      for (index_t c = 0; c < C; ++c) {
        T acc = x(b, m0[0], c) * sz(b, m0[0]);
        for (const index_t* t = m0 + 1; t < m1; ++t) acc += x(b, *t, c) * sz(b, *t);
        x_out(b, g, c) = acc / s;
      }
      size_out(b, g) = s;
    }
  });
}

/// Source tracking, dense (official `merge_source`): source' = merge(source, amax).
///   source [B, N, N0] 0/1 (row g marks the original tokens in group g) or an
///   absent view ({}) for the identity eye(N) (then N0 = N); out [B, N - r, N0].
/// This is [N, N0] per sequence; merge_source_map() is the compact O(N0) form.
template <class T>
void merge_source(const MergePlan& plan, effattn::detail::identity_t<ConstView<T, 3>> source, View<T, 3> out,
                  const Executor& ex = {}) {
  const char* op = "tome::merge_source";
  effattn::detail::check_executor(ex, op);
  detail::check_plan(plan, op);
  const index_t B = plan.batch, nout = plan.out_tokens();
  if (!detail::is_absent(source)) {
    detail::check_tokens(plan, source, op, "source", false);
    detail::check_out(out, B, nout, source.dim(2), op, "out");
    effattn::detail::check_no_alias(out, "out", source, "source", op);
    detail::merge_rows<T>(plan, source, out, MergeMode::amax, ex);  // checked above, with this op's names
    return;
  }
  detail::check_out(out, B, nout, plan.tokens, op, "out");
  if (out.empty()) return;
  detail::for_rows(ex, B, nout, plan.tokens, [&](index_t b, index_t g0, index_t g1) {
    for (index_t g = g0; g < g1; ++g) {
      for (index_t c = 0; c < plan.tokens; ++c) out(b, g, c) = T(0);
      for (const index_t* t = plan.group_begin(b, g); t < plan.group_end(b, g); ++t) out(b, g, *t) = T(1);
    }
  });
}

/// Compact source tracking: map [B, N0] gives, for every original token, the
/// row of the current tokens that holds it (the column-wise argmax of the dense
/// source matrix). map_in [B, N0] with values in [0, N), or an absent view
/// ({}) for the identity (N0 = N); map_out [B, N0] gets plan.row_of[map_in].
/// map_out may be map_in (in place, with the same strides).
inline void merge_source_map(const MergePlan& plan, ConstView<index_t, 2> map_in, View<index_t, 2> map_out) {
  const char* op = "tome::merge_source_map";
  detail::check_plan(plan, op);
  const index_t B = plan.batch, N = plan.tokens;
  const bool has_in = !detail::is_absent(map_in);
  index_t N0 = N;
  if (has_in) {
    effattn::detail::check_view(map_in, op, "map_in", false);
    effattn::detail::check_shape(map_in, op, "map_in", "[plan.batch,N0]", {B, map_in.dim(1)});
    N0 = map_in.dim(1);
    if (!map_in.empty())
      for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < N0; ++t)
          effattn::detail::require(map_in(b, t) >= 0 && map_in(b, t) < N, op, "map_in", "values must be rows in [0, N=", N,
                  "), got ", map_in(b, t), " at [", b, ",", t, "]");
  }
  effattn::detail::check_view(map_out, op, "map_out", true);
  effattn::detail::check_shape(map_out, op, "map_out", "[B,N0]", {B, N0});
  if (map_out.empty()) return;  // nothing to write (map_in, if present, is empty too)
  const bool in_place = has_in && map_in.data() == map_out.data();
  if (has_in && !in_place) effattn::detail::check_no_alias(map_out, "map_out", map_in, "map_in", op);
  if (in_place && map_in.strides() != map_out.strides())
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": in-place map_out must have map_in's strides")));
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < N0; ++t)
      map_out(b, t) = plan.row_of[static_cast<size_t>(b * N + (has_in ? map_in(b, t) : t))];
}

/// Restores the original token order: out[b, t] = y[b, map[b, t]] for every
/// original token t (each original token receives the value of the merged
/// token that holds it). map [B, N0] from merge_source_map, y [B, N', C],
/// out [B, N0, C].
template <class T>
void restore_order(ConstView<index_t, 2> map, effattn::detail::identity_t<ConstView<T, 3>> y, View<T, 3> out,
                   const Executor& ex = {}) {
  const char* op = "tome::restore_order";
  effattn::detail::check_executor(ex, op);
  effattn::detail::check_view(map, op, "map", false);
  effattn::detail::check_view(y, op, "y", false);
  const index_t B = y.dim(0), Np = y.dim(1), C = y.dim(2);
  effattn::detail::check_shape(map, op, "map", "[y.dim(0),N0]", {B, map.dim(1)});
  const index_t N0 = map.dim(1);
  if (!map.empty())
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < N0; ++t)
        effattn::detail::require(map(b, t) >= 0 && map(b, t) < Np, op, "map", "values must be rows of y in [0, ", Np, "), got ",
                map(b, t), " at [", b, ",", t, "]");
  detail::check_out(out, B, N0, C, op, "out");
  effattn::detail::check_no_alias(out, "out", y, "y", op);
  effattn::detail::check_no_alias(out, "out", map, "map", op);
  if (out.empty()) return;
  detail::for_rows(ex, B, N0, C, [&](index_t b, index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t)
      for (index_t c = 0; c < C; ++c) out(b, t, c) = y(b, map(b, t), c);
  });
}

/// Unmerge (official `unmerge`): y [B, N - r, C] -> out [B, N, C] with
/// out[b, t] = y[b, row_of[b, t]]: every original position of this plan gets
/// the value of the group it was merged into. For the distill layout this is
/// the exact inverse of merge()'s layout (the official unmerge assumes the
/// plain layout there; golden README, ambiguity 4).
template <class T>
void unmerge(const MergePlan& plan, effattn::detail::identity_t<ConstView<T, 3>> y, View<T, 3> out,
             const Executor& ex = {}) {
  const char* op = "tome::unmerge";
  effattn::detail::check_executor(ex, op);
  detail::check_plan(plan, op);
  effattn::detail::check_view(y, op, "y", false);
  effattn::detail::check_shape(y, op, "y", "[B,N',C]", {plan.batch, plan.out_tokens(), y.dim(2)});
  detail::check_out(out, plan.batch, plan.tokens, y.dim(2), op, "out");
  effattn::detail::check_no_alias(out, "out", y, "y", op);
  if (out.empty()) return;
  const index_t C = y.dim(2), N = plan.tokens;
  const bool unit = y.stride(2) == 1 && out.stride(2) == 1;
  detail::for_rows(ex, plan.batch, N, C, [&](index_t b, index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      const index_t g = plan.row_of[static_cast<size_t>(b * N + t)];
      if (unit) {
        const T* src = &y(b, g, 0);
        T* dst = &out(b, t, 0);
        for (index_t c = 0; c < C; ++c) dst[c] = src[c];
        continue;
      }
      for (index_t c = 0; c < C; ++c) out(b, t, c) = y(b, g, c);
    }
  });
}

}  // namespace tome
EFFATTN_NAMESPACE_END
