// SPDX-License-Identifier: MIT
// effattn::tome: bipartite soft matching (ToMe, Bolya et al., ICLR 2023) and
// the reusable merge plan it returns.
//
// Semantics follow facebookresearch/ToMe `tome/merge.py`
// (`bipartite_soft_matching`), pinned down by tests/data/golden/README.md §1:
//
//   1. r_eff = min(r, (N - protected) / 2) (silent cap); r_eff <= 0 is the identity.
//   2. m = metric / ||metric||_2 per token (no epsilon; see "zero-norm rows").
//   3. A = even tokens 0, 2, 4, ... ; B = odd tokens 1, 3, 5, ...
//   4. scores = A_m B_m^T; class token (token 0 = A[0]) row is -inf (never a
//      source), distillation token (token 1 = B[0]) column is -inf (never a
//      destination).
//   5. node_max, node_idx = max over B per A token.
//   6. edges = A positions by node_max descending; src = first r_eff, unm = the
//      rest in score order (re-sorted ascending only with a class token);
//      dst_idx[k] = node_idx[src_idx[k]].
//
// Decisions this port documents (the official code leaves them open):
//   * Ties. node_idx is the *first* (lowest B position) maximum; the edge order
//     is a *stable* descending sort, so equal node_max keep ascending A order.
//     Both are independent of the thread count.
//   * Zero-norm metric rows. The official code divides by zero and produces
//     NaN, which then poisons the sort. Here a token whose metric has norm 0
//     is normalised to the zero vector: its cosine similarity to every token is
//     0 (neither similar nor dissimilar), so it sorts like any token of best
//     similarity 0. Non-finite metric values are rejected (parameter_error).
//   * Distillation token without class token: the official output puts an
//     arbitrary unmerged token first (golden README, ambiguity 3); it is
//     rejected here.
//
// The scores are computed block by block (256 A tokens against all of B) with an
// Eigen tensor contraction (a cache-blocked GEMM on the caller's thread; the
// parallelism over batch x blocks is effattn's own, so the results do not depend
// on the thread count). Memory is O(256 * N) per thread: no N/2 x N/2 buffer.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include <unsupported/Eigen/CXX11/Tensor>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/view.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace tome {

/// A merge decision over `batch` sequences of `tokens` tokens, reusable for any
/// tensor [batch, tokens, C] over the same tokens (features, sizes, sources).
///
/// The tokens are split into an A set (possible sources) and a B set
/// (destinations); `a_tok` / `b_tok` give their token indices (shared by the
/// batch). Per batch b, `src_idx[b, k]` (positions in A, in decision order) is
/// merged into B position `dst_idx[b, k]`, and `unm_idx[b, :]` are the A
/// positions that stay. Output rows (`out_tokens() = tokens - r`):
///   plain layout:    [A[unm_idx[0..]], B[0], B[1], ...]
///   distill layout:  [A[unm_idx[0]], B[0], A[unm_idx[1..]], B[1..]]  (ToMe with
///                    a distillation token: class token first, distillation second)
/// A plan with r == 0 is the identity (rows = tokens, in order), as in the
/// official `do_nothing`.
///
/// Derived tables (built by finalize()):
///   row_of[b, t]       the output row that token t goes into,
///   group_ptr[b * out_tokens + g .. + 1], group_tok: the members of output row
///                      g of batch b (offsets into group_tok, which holds batch
///                      b's members at [b * tokens, (b + 1) * tokens)): its
///                      anchor (the unmerged A token or the B token) first, then
///                      the sources merged into it in decision order.
/// Every table is O(batch * tokens): a plan over no tokens (tokens == 0) or no
/// sequences (batch == 0) is O(1) whatever the other extent. A plan with
/// batch == 0 holds no partition (a_tok, b_tok empty), only r and the shapes.
struct MergePlan {
  index_t batch = 0;   ///< B
  index_t tokens = 0;  ///< N (tokens in)
  index_t r = 0;       ///< effective number of merged tokens
  bool distill_layout = false;

  std::vector<index_t> a_tok, b_tok;  ///< [num_a], [num_b] token indices (empty when identity)
  std::vector<index_t> unm_idx;       ///< [batch, num_a - r]
  std::vector<index_t> src_idx;       ///< [batch, r]
  std::vector<index_t> dst_idx;       ///< [batch, r] positions in B
  std::vector<float> node_max;        ///< [batch, num_a] best similarity (-inf for a protected token)
  std::vector<index_t> node_idx;      ///< [batch, num_a] its B position

  std::vector<index_t> row_of;     ///< [batch, tokens]
  std::vector<index_t> group_ptr;  ///< [batch * out_tokens + 1], offsets into group_tok
  std::vector<index_t> group_tok;  ///< [batch, tokens]

  index_t num_a() const { return static_cast<index_t>(a_tok.size()); }
  index_t num_b() const { return static_cast<index_t>(b_tok.size()); }
  index_t num_unmerged() const { return num_a() - r; }
  index_t out_tokens() const { return tokens - r; }
  bool is_identity() const { return r == 0; }

  /// The identity plan (r == 0, no partition) over `batch` sequences of
  /// `tokens` tokens, finalized: the official `do_nothing`.
  /// Throws for batch < 0 or tokens < 0.
  static MergePlan identity(index_t batch, index_t tokens) {
    effattn::detail::require(batch >= 0 && tokens >= 0, "tome::MergePlan::identity", "batch/tokens", "must be >= 0, got batch=", batch,
            " tokens=", tokens);
    MergePlan p;
    p.batch = batch;
    p.tokens = tokens;
    p.finalize();
    return p;
  }

  /// Output row of the k-th unmerged A token / of B position j.
  index_t unm_row(index_t k) const {
    if (!distill_layout) return k;
    return k == 0 ? 0 : k + 1;
  }
  index_t dst_row(index_t j) const {
    if (!distill_layout) return num_unmerged() + j;
    return j == 0 ? 1 : num_unmerged() + j;
  }

  /// Members of output row g of batch b: [begin, end) pointers into group_tok.
  const index_t* group_begin(index_t b, index_t g) const {
    return group_tok.data() + group_ptr[static_cast<size_t>(b * out_tokens() + g)];
  }
  const index_t* group_end(index_t b, index_t g) const {
    return group_tok.data() + group_ptr[static_cast<size_t>(b * out_tokens() + g + 1)];
  }

  /// The sizes of the derived tables, checked: {batch * tokens, batch *
  /// out_tokens + 1}. Throws shape_error when they overflow the index type.
  std::pair<index_t, index_t> table_sizes(const char* op) const {
    const index_t bt = effattn::detail::checked_mul(batch, tokens, op, "plan batch * tokens");
    const index_t bo = effattn::detail::checked_mul(batch, out_tokens(), op, "plan batch * out_tokens");
    return {bt, effattn::detail::checked_add(bo, index_t(1), op, "plan batch * out_tokens + 1")};
  }

  /// Builds row_of and the groups from a_tok, b_tok, unm_idx, src_idx, dst_idx
  /// (or the identity when r == 0). Throws parameter_error when those do not
  /// describe a valid decision (every token in A or B once, r <= |A|, indices
  /// in range), before changing anything.
  void finalize() {
    const char* op = "tome::MergePlan::finalize";
    effattn::detail::require(batch >= 0 && tokens >= 0 && r >= 0 && r <= tokens, op, "plan",
            "needs batch >= 0, tokens >= 0 and 0 <= r <= tokens, got batch=", batch, " tokens=", tokens, " r=", r);
    const auto sizes = table_sizes(op);
    if (r > 0 && batch > 0) check_decision(op);
    const index_t nout = out_tokens();
    row_of.assign(static_cast<size_t>(sizes.first), 0);
    group_ptr.assign(static_cast<size_t>(sizes.second), 0);
    group_tok.assign(static_cast<size_t>(sizes.first), 0);
    if (tokens == 0) return;  // no rows: nothing to fill, whatever the batch
    std::vector<index_t> fill;
    for (index_t b = 0; b < batch; ++b) {
      index_t* row = row_of.data() + b * tokens;
      index_t* ptr = group_ptr.data() + b * nout;  // ptr[0..nout], shared ends with the next batch
      const index_t base = b * tokens;
      if (r == 0) {
        for (index_t t = 0; t < tokens; ++t) {
          row[t] = t;
          ptr[t] = base + t;
          group_tok[static_cast<size_t>(base + t)] = t;
        }
        ptr[tokens] = base + tokens;
        continue;
      }
      const index_t* unm = unm_idx.data() + b * num_unmerged();
      const index_t* src = src_idx.data() + b * r;
      const index_t* dst = dst_idx.data() + b * r;
      std::vector<index_t> count(static_cast<size_t>(nout), 1);
      for (index_t k = 0; k < r; ++k) ++count[dst_row(dst[k])];
      ptr[0] = base;
      for (index_t g = 0; g < nout; ++g) ptr[g + 1] = ptr[g] + count[g];
      fill.assign(ptr, ptr + nout);
      index_t* mem = group_tok.data();
      for (index_t k = 0; k < num_unmerged(); ++k) {
        const index_t g = unm_row(k), t = a_tok[unm[k]];
        row[t] = g;
        mem[fill[g]++] = t;
      }
      for (index_t j = 0; j < num_b(); ++j) {
        const index_t g = dst_row(j), t = b_tok[j];
        row[t] = g;
        mem[fill[g]++] = t;
      }
      for (index_t k = 0; k < r; ++k) {
        const index_t g = dst_row(dst[k]), t = a_tok[src[k]];
        row[t] = g;
        mem[fill[g]++] = t;
      }
    }
  }

 private:
  /// The decision tables of a merging plan (r > 0, batch > 0) are consistent.
  void check_decision(const char* op) const {
    const index_t na = num_a(), nb = num_b();
    auto bad = [&](const char* what) {
      EFFATTN_THROW(parameter_error(effattn::detail::concat(op, ": plan ", what, " (batch=", batch, ", tokens=", tokens,
                                                            ", r=", r, ", |A|=", na, ", |B|=", nb, ")")));
    };
    if (na + nb != tokens || r > na || nb < 1) bad("a_tok and b_tok must cover the tokens, with r <= |A| and |B| >= 1");
    if (distill_layout && (na - r < 1 || nb < 1)) bad("distill layout needs an unmerged A token and a B token");
    std::vector<char> seen(static_cast<size_t>(tokens), 0);
    for (const auto* list : {&a_tok, &b_tok})
      for (index_t t : *list) {
        if (t < 0 || t >= tokens || seen[static_cast<size_t>(t)]) bad("a_tok/b_tok must list every token once");
        seen[static_cast<size_t>(t)] = 1;
      }
    const index_t nu = na - r;
    if (static_cast<index_t>(unm_idx.size()) / batch != nu || static_cast<index_t>(unm_idx.size()) % batch != 0 ||
        static_cast<index_t>(src_idx.size()) / batch != r || static_cast<index_t>(src_idx.size()) % batch != 0 ||
        static_cast<index_t>(dst_idx.size()) / batch != r || static_cast<index_t>(dst_idx.size()) % batch != 0)
      bad("unm_idx must be [batch, |A| - r], src_idx and dst_idx [batch, r]");
    std::vector<char> used(static_cast<size_t>(na));
    for (index_t b = 0; b < batch; ++b) {
      std::fill(used.begin(), used.end(), 0);
      for (index_t k = 0; k < nu + r; ++k) {
        const index_t i = k < nu ? unm_idx[static_cast<size_t>(b * nu + k)] : src_idx[static_cast<size_t>(b * r + k - nu)];
        if (i < 0 || i >= na || used[static_cast<size_t>(i)]) bad("unm_idx and src_idx must list every A position once");
        used[static_cast<size_t>(i)] = 1;
      }
      for (index_t k = 0; k < r; ++k) {
        const index_t j = dst_idx[static_cast<size_t>(b * r + k)];
        if (j < 0 || j >= nb) bad("dst_idx must be B positions");
      }
    }
  }
};

/// Options of ToMe's bipartite soft matching.
struct MatchOptions {
  bool class_token = false;    ///< token 0 is protected (never a source) and stays first
  bool distill_token = false;  ///< token 1 is protected (never a destination); needs class_token
};

namespace detail {

using effattn::detail::concat;
using effattn::detail::shape_str;

/// Scores of one bipartite problem, before r is known: node_max / node_idx per
/// A position for every batch.
struct Scored {
  std::vector<float> node_max;
  std::vector<index_t> node_idx;
};

constexpr index_t kMatchBlock = 256;

/// An optional view is absent when it is default-constructed ({}): a null
/// pointer and every extent 0. Any other view is present and checked like
/// every input; a present view may be empty (some extent 0), and then its
/// pointer may be null and is never offset or dereferenced.
template <class T, int R>
bool is_absent(const View<T, R>& v) {
  if (v.data() != nullptr) return false;
  for (index_t e : v.shape())
    if (e != 0) return false;
  return true;
}

/// Checks metric values are finite (NaN would make the sort meaningless). An
/// empty metric has no values: no loop over its other (possibly huge) extents.
inline void check_metric_finite(const ConstView<float, 3>& metric, const char* op) {
  if (metric.empty()) return;
  for (index_t b = 0; b < metric.dim(0); ++b)
    for (index_t t = 0; t < metric.dim(1); ++t)
      for (index_t c = 0; c < metric.dim(2); ++c)
        if (!std::isfinite(metric(b, t, c)))
          EFFATTN_THROW(parameter_error(concat(op, ": metric must be finite, got ", metric(b, t, c), " at [", b, ",",
                                               t, ",", c, "]")));
}

/// Copies the rows `toks` of metric[b] into dst [n, C] (contiguous), normalised
/// to unit L2 norm (zero rows stay zero).
inline void gather_normalized(const ConstView<float, 3>& metric, index_t b, const index_t* toks, index_t n,
                              float* dst) {
  const index_t C = metric.dim(2), cs = metric.stride(2);
  for (index_t i = 0; i < n; ++i) {
    const float* src = &metric(b, toks[i], 0);
    float* row = dst + i * C;
    for (index_t c = 0; c < C; ++c) row[c] = src[c * cs];
    double ss = 0;
    for (index_t c = 0; c < C; ++c) ss += static_cast<double>(row[c]) * row[c];
    const double nrm = std::sqrt(ss);
    const float n32 = static_cast<float>(nrm);
    if (nrm > 0 && std::isfinite(n32)) {
      // Divide (as the official code) rather than multiply by the inverse, so
      // the normalised values are the correctly rounded quotients.
      for (index_t c = 0; c < C; ++c) row[c] /= n32;
    } else if (nrm > 0) {
      // A norm beyond FLT_MAX (finite values near it): divide in double, so
      // the row is still a unit vector (dividing by float(inf) would give 0).
      for (index_t c = 0; c < C; ++c) row[c] = static_cast<float>(row[c] / nrm);
    } else {
      for (index_t c = 0; c < C; ++c) row[c] = 0.0f;
    }
  }
}

/// node_max / node_idx for every batch: the best destination of each A token.
/// `protect_a0`: A position 0 is never a source (its node_max is -inf and
/// node_idx 0). `protect_b0`: B position 0 is never a destination.
inline Scored score_bipartite(const ConstView<float, 3>& metric, const std::vector<index_t>& a_tok,
                              const std::vector<index_t>& b_tok, bool protect_a0, bool protect_b0,
                              const Executor& ex) {
  const index_t B = metric.dim(0), C = metric.dim(2);
  const index_t na = static_cast<index_t>(a_tok.size()), nb = static_cast<index_t>(b_tok.size());
  Scored s;
  s.node_max.assign(static_cast<size_t>(B * na), -std::numeric_limits<float>::infinity());
  s.node_idx.assign(static_cast<size_t>(B * na), 0);
  if (B == 0 || na == 0 || nb == 0) return s;
  // The normalised B sets, once per call (O(N * C), serial: small next to the
  // O(N^2 * C) products below).
  std::vector<float> bn(static_cast<size_t>(B * nb * C));
  for (index_t b = 0; b < B; ++b) gather_normalized(metric, b, b_tok.data(), nb, bn.data() + b * nb * C);
  const index_t nblk = (na + kMatchBlock - 1) / kMatchBlock;
  const Executor run_ex = effattn::detail::executor_for(ex, double(B) * na * nb * C);
  struct Scratch {
    std::vector<float> a, s;
  };
  using TMapC = Eigen::TensorMap<Eigen::Tensor<const float, 2, Eigen::RowMajor>>;
  using TMap = Eigen::TensorMap<Eigen::Tensor<float, 2, Eigen::RowMajor>>;
  effattn::detail::parallel_items(
      run_ex, B * nblk,
      [&] {
        Scratch w;
        w.a.resize(static_cast<size_t>(kMatchBlock * C));
        w.s.resize(static_cast<size_t>(kMatchBlock * nb));
        return w;
      },
      [&](index_t item, Scratch& w) {
        const index_t b = item / nblk, i0 = (item % nblk) * kMatchBlock, i1 = std::min(na, i0 + kMatchBlock);
        const index_t m = i1 - i0;
        gather_normalized(metric, b, a_tok.data() + i0, m, w.a.data());
        TMapC A(w.a.data(), m, C), Bm(bn.data() + b * nb * C, nb, C);
        TMap S(w.s.data(), m, nb);
        const Eigen::array<Eigen::IndexPair<Eigen::Index>, 1> dims = {Eigen::IndexPair<Eigen::Index>(1, 1)};
        S = A.contract(Bm, dims);  // DefaultDevice: single-threaded, deterministic
        const index_t j0 = protect_b0 ? 1 : 0;
        for (index_t i = i0; i < i1; ++i) {
          float* out_max = &s.node_max[b * na + i];
          index_t* out_idx = &s.node_idx[b * na + i];
          if ((protect_a0 && i == 0) || j0 >= nb) {
            *out_max = -std::numeric_limits<float>::infinity();
            *out_idx = 0;
            continue;
          }
          const float* row = w.s.data() + (i - i0) * nb;
          float best = row[j0];
          index_t arg = j0;
          for (index_t j = j0 + 1; j < nb; ++j)
            if (row[j] > best) {  // strict: the first maximum wins
              best = row[j];
              arg = j;
            }
          *out_max = best;
          *out_idx = arg;
        }
      });
  return s;
}

/// Completes a plan from the scores: stable descending edge order, the first r
/// are sources, the rest unmerged (ascending A order when sort_unm).
inline void decide(MergePlan& p, Scored&& s, index_t r, bool sort_unm) {
  const index_t na = p.num_a();
  p.r = r;
  p.node_max = std::move(s.node_max);
  p.node_idx = std::move(s.node_idx);
  if (r <= 0) {
    p.r = 0;
    p.unm_idx.clear();
    p.src_idx.clear();
    p.dst_idx.clear();
    p.finalize();
    return;
  }
  p.unm_idx.resize(static_cast<size_t>(p.batch * (na - r)));
  p.src_idx.resize(static_cast<size_t>(p.batch * r));
  p.dst_idx.resize(static_cast<size_t>(p.batch * r));
  std::vector<index_t> order(static_cast<size_t>(na));
  for (index_t b = 0; b < p.batch; ++b) {
    const float* nm = p.node_max.data() + b * na;
    std::iota(order.begin(), order.end(), index_t(0));
    std::stable_sort(order.begin(), order.end(), [nm](index_t x, index_t y) { return nm[x] > nm[y]; });
    index_t* src = p.src_idx.data() + b * r;
    index_t* dst = p.dst_idx.data() + b * r;
    index_t* unm = p.unm_idx.data() + b * (na - r);
    for (index_t k = 0; k < r; ++k) {
      src[k] = order[k];
      dst[k] = p.node_idx[b * na + order[k]];
    }
    std::copy(order.begin() + r, order.end(), unm);
    if (sort_unm) std::sort(unm, unm + (na - r));
  }
  p.finalize();
}

inline void check_metric(const ConstView<float, 3>& metric, const char* op) {
  effattn::detail::check_view(metric, op, "metric", false);
  if (metric.dim(2) < 1)
    EFFATTN_THROW(shape_error(concat(op, ": metric must be [B,N,C] with C >= 1, got ", shape_str(metric.shape()))));
  check_metric_finite(metric, op);
}

/// A plan over no sequences (batch == 0): r tokens removed from each of the
/// (absent) sequences, no partition, O(1) whatever N.
inline MergePlan empty_batch_plan(index_t N, index_t r, bool distill_layout) {
  MergePlan p;
  p.batch = 0;
  p.tokens = N;
  p.r = r;
  p.distill_layout = distill_layout && r > 0;
  p.finalize();
  return p;
}

inline MergePlan tome_partition(index_t B, index_t N, const MatchOptions& opt) {
  MergePlan p;
  p.batch = B;
  p.tokens = N;
  p.distill_layout = opt.distill_token;
  p.a_tok.reserve(static_cast<size_t>((N + 1) / 2));
  p.b_tok.reserve(static_cast<size_t>(N / 2));
  for (index_t t = 0; t < N; t += 2) p.a_tok.push_back(t);
  for (index_t t = 1; t < N; t += 2) p.b_tok.push_back(t);
  return p;
}

inline void check_match_options(const MatchOptions& opt, const char* op) {
  effattn::detail::require(!opt.distill_token || opt.class_token, op, "distill_token",
          "requires class_token (the official output order is undefined without it)");
}

inline index_t tome_r_cap(index_t N, const MatchOptions& opt) {
  const index_t prot = (opt.class_token ? 1 : 0) + (opt.distill_token ? 1 : 0);
  return std::max<index_t>(0, (N - prot) / 2);
}

/// Matching over a checked partition (a_tok, b_tok cover [0, N) once; metric
/// checked; r >= 0).
inline MergePlan match_partition(ConstView<float, 3> metric, const std::vector<index_t>& a_tok,
                                 const std::vector<index_t>& b_tok, index_t r, bool sort_unm, const Executor& ex) {
  const index_t B = metric.dim(0), N = metric.dim(1);
  const index_t r_eff = b_tok.empty() ? 0 : std::min<index_t>(r, static_cast<index_t>(a_tok.size()));
  if (r_eff <= 0) return MergePlan::identity(B, N);
  if (B == 0) return empty_batch_plan(N, r_eff, false);
  MergePlan p;
  p.batch = B;
  p.tokens = N;
  p.a_tok = a_tok;
  p.b_tok = b_tok;
  auto s = score_bipartite(metric, p.a_tok, p.b_tok, false, false, ex);
  decide(p, std::move(s), r_eff, sort_unm);
  return p;
}

}  // namespace detail

/// ToMe's bipartite soft matching (official `bipartite_soft_matching`).
///
/// metric [B, N, C] (any strides): one vector per token (in a ViT block, the
/// keys averaged over heads). r >= 0 tokens to remove per sequence; capped
/// silently at (N - protected) / 2. Returns the plan (r == 0: identity).
/// node_max / node_idx are filled whenever the cap leaves r > 0 (and B > 0).
///
/// Throws parameter_error for a negative executor thread count, r < 0, a
/// distillation token without a class token or non-finite metric values;
/// shape_error for a bad view.
inline MergePlan bipartite_soft_matching(ConstView<float, 3> metric, index_t r, const MatchOptions& opt = {},
                                         const Executor& ex = {}) {
  const char* op = "tome::bipartite_soft_matching";
  effattn::detail::check_executor(ex, op);
  effattn::detail::require(r >= 0, op, "r", "must be >= 0, got ", r);
  detail::check_match_options(opt, op);
  detail::check_metric(metric, op);
  const index_t B = metric.dim(0), N = metric.dim(1);
  const index_t r_eff = std::min(r, detail::tome_r_cap(N, opt));
  if (r_eff <= 0) return MergePlan::identity(B, N);
  if (B == 0) return detail::empty_batch_plan(N, r_eff, opt.distill_token);
  MergePlan p = detail::tome_partition(B, N, opt);
  auto s = detail::score_bipartite(metric, p.a_tok, p.b_tok, opt.class_token, opt.distill_token, ex);
  detail::decide(p, std::move(s), r_eff, opt.class_token);
  return p;
}

/// The threshold variant (requested in dbolya/tomesd issue 40): instead of a
/// fixed r, merge every A token whose best cosine similarity is >= threshold,
/// at most max_r (and at most the official cap). All sequences of a batch must
/// keep the same token count, so r = the minimum over the batch of the number
/// of qualifying tokens: no token is merged below the threshold; in a batch
/// some sequences may leave qualifying tokens unmerged. threshold in [-1, 1]
/// (finite); max_r >= 0. Everything else as bipartite_soft_matching.
inline MergePlan bipartite_soft_matching_threshold(ConstView<float, 3> metric, float threshold, index_t max_r,
                                                   const MatchOptions& opt = {}, const Executor& ex = {}) {
  const char* op = "tome::bipartite_soft_matching_threshold";
  effattn::detail::check_executor(ex, op);
  effattn::detail::require(std::isfinite(threshold) && threshold >= -1.0f && threshold <= 1.0f, op, "threshold",
          "must be a cosine similarity in [-1, 1], got ", threshold);
  effattn::detail::require(max_r >= 0, op, "max_r", "must be >= 0, got ", max_r);
  detail::check_match_options(opt, op);
  detail::check_metric(metric, op);
  const index_t B = metric.dim(0), N = metric.dim(1);
  const index_t cap = std::min(max_r, detail::tome_r_cap(N, opt));
  if (cap <= 0 || B == 0) return MergePlan::identity(B, N);
  MergePlan p = detail::tome_partition(B, N, opt);
  auto s = detail::score_bipartite(metric, p.a_tok, p.b_tok, opt.class_token, opt.distill_token, ex);
  index_t r = cap;
  const index_t na = p.num_a();
  for (index_t b = 0; b < B; ++b) {
    index_t c = 0;
    for (index_t i = 0; i < na; ++i) c += s.node_max[b * na + i] >= threshold ? 1 : 0;
    r = std::min(r, c);
  }
  if (r <= 0) {
    MergePlan id = MergePlan::identity(B, N);
    id.node_max = std::move(s.node_max);
    id.node_idx = std::move(s.node_idx);
    return id;
  }
  detail::decide(p, std::move(s), r, opt.class_token);
  return p;
}

/// Bipartite soft matching over an explicit partition: a_tok (possible
/// sources) and b_tok (destinations) are disjoint token lists that together
/// cover [0, N) once; the output is [A[unm...], B[0..]] with unm in score
/// order (`sort_unm` re-sorts it ascending). r capped at |A|. This is the
/// engine behind ToMe for diffusion (diffusion.hpp) and lets a caller
/// reproduce any partition order (e.g. the torch build-dependent one).
inline MergePlan bipartite_soft_matching_partition(ConstView<float, 3> metric, const std::vector<index_t>& a_tok,
                                                   const std::vector<index_t>& b_tok, index_t r,
                                                   bool sort_unm = false, const Executor& ex = {}) {
  const char* op = "tome::bipartite_soft_matching_partition";
  effattn::detail::check_executor(ex, op);
  effattn::detail::require(r >= 0, op, "r", "must be >= 0, got ", r);
  detail::check_metric(metric, op);
  const index_t N = metric.dim(1);
  if (a_tok.size() + b_tok.size() != static_cast<size_t>(N))
    EFFATTN_THROW(shape_error(detail::concat(op, ": a_tok and b_tok must cover the N=", N, " tokens, got ",
                                             a_tok.size(), " + ", b_tok.size())));
  std::vector<char> seen(static_cast<size_t>(N), 0);
  for (const auto* list : {&a_tok, &b_tok})
    for (index_t t : *list) {
      effattn::detail::require(t >= 0 && t < N, op, "a_tok/b_tok", "token ", t, " out of range [0, ", N, ")");
      effattn::detail::require(!seen[t], op, "a_tok/b_tok", "token ", t, " listed twice");
      seen[t] = 1;
    }
  return detail::match_partition(metric, a_tok, b_tok, r, sort_unm, ex);
}

}  // namespace tome
EFFATTN_NAMESPACE_END
