// SPDX-License-Identifier: MIT
// libFuzzer target: ToMe's public entry points (effattn::tome), and the ViT
// encoder with ToMe (effattn::models, models/vit_tome.hpp).
//
// The first byte picks the entry point:
//   0-2  bipartite_soft_matching / _threshold / _random2d (MatchOptions, a
//        Grid2d that may hold huge w, h, sx, sy, rand_idx absent / drawn /
//        given), then one of merge (mean/sum/amax), merge_wavg, merge_source,
//        merge_source_map, unmerge, restore_order applied with the plan;
//   3    proportional_attention (NoMask / CausalMask, sizes absent or given);
//   4    parse_r (both forms), schedule_constant, tokens_after_layers,
//        ratio_to_r, with huge and invalid arguments;
//   5    empty tensors with a huge extent ([2^62, 0, C], [0, 2^62, C], ...):
//        the library must return at once or reject;
//   6    huge grids alone (random2d_draw, random2d_partition, matching);
//   7    a bad view (negative extent or stride, null data, an offset that
//        overflows, an overlapping or aliasing output): must be rejected;
//   8    bipartite_soft_matching_partition with fuzzed (sometimes broken)
//        token lists, then the merge family as for 0-2;
//   9    a tiny models::tome_block_forward / models::ViTEncoder (invariants,
//        thread bit-identity, x unchanged when a call is rejected).
// Shapes are small (or 0, or huge only where rejection is required or next to
// a zero extent), strides contiguous / permuted / padded / broadcast (inputs),
// the thread count -1, 0, 1 or 2, values sometimes non-finite. Every accepted
// call is checked against an obvious float64 reference written here (or the
// official semantics: merge = mean over each group, ...), runs bit-identically
// with Executor(1) and Executor(2), and writes only the elements its output
// views address; a rejected call leaves every output byte untouched.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <effattn/models/vit_tome.hpp>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fuzz_support.hpp"

using namespace effattn;
using fuzz::FuzzInput;
using fuzz::Guarded;
using fuzz::fuzz_check;
using fuzz::fuzz_fail;

namespace {

constexpr index_t kMaxIndex = std::numeric_limits<index_t>::max();
/// Above this magnitude a float sum or product of the terms may overflow
/// where the float64 reference does not: such elements are not compared.
constexpr double kFloatSafe = 1e37;

// ---------------------------------------------------------------- layouts --

/// A rank-R layout over a buffer of `span` elements the harness owns.
template <int R>
struct Lay {
  std::array<index_t, R> shape{}, strides{};
  index_t span = 0;
  bool empty() const {
    for (index_t e : shape)
      if (e == 0) return true;
    return false;
  }
  index_t off(const std::array<index_t, R>& i) const {
    index_t o = 0;
    for (int d = 0; d < R; ++d) o += i[d] * strides[d];
    return o;
  }
};

template <int R>
index_t span_of(const Lay<R>& L) {
  if (L.empty()) return 0;
  index_t last = 0;
  for (int d = 0; d < R; ++d) last += (L.shape[d] - 1) * L.strides[d];
  return last + 1;
}

/// Contiguous, permuted (the two outer dimensions swapped in memory), padded
/// rows, or (inputs only) a broadcast dimension with stride 0.
template <int R>
Lay<R> pick_layout(FuzzInput& in, const std::array<index_t, R>& shape, bool input) {
  Lay<R> L;
  L.shape = shape;
  const int kind = in.byte() % (input ? 4 : 3);
  std::array<int, R> order;  // memory order, outermost first
  for (int d = 0; d < R; ++d) order[d] = d;
  if (kind == 1 && R >= 2) std::swap(order[0], order[1]);
  const index_t pad = kind == 2 ? in.range(1, 2) : 0;
  index_t s = 1;
  for (int k = R - 1; k >= 0; --k) {
    const int d = order[k];
    L.strides[d] = s;
    s *= std::max<index_t>(shape[d], 1) + (k == R - 1 ? pad : 0);
  }
  if (kind == 3) L.strides[in.byte() % R] = 0;
  L.span = span_of(L);
  return L;
}

/// Unit strides: for an empty shape with a huge extent (make_view's
/// contiguous strides would overflow).
template <int R>
Lay<R> unit_layout(const std::array<index_t, R>& shape) {
  Lay<R> L;
  L.shape = shape;
  L.strides.fill(1);
  L.span = 0;
  for (index_t e : shape)
    if (e == 0) return L;
  L.span = span_of(L);
  return L;
}

template <int R, class F>
void for_each_index(const std::array<index_t, R>& shape, F&& f) {
  for (index_t e : shape)
    if (e == 0) return;
  std::array<index_t, R> i{};
  while (true) {
    f(i);
    int d = R - 1;
    while (d >= 0 && ++i[d] == shape[d]) i[d--] = 0;
    if (d < 0) return;
  }
}

// ---------------------------------------------------------------- values --

/// Finite, |x| <= 1e30: sums of a few never overflow a float.
float tame(FuzzInput& in) {
  const std::uint8_t kind = in.byte();
  if (kind < 240) return static_cast<float>(static_cast<std::int8_t>(in.byte())) / 32.0f;
  static const float special[] = {0.0f, -0.0f, 1e30f, -1e30f, 1e-30f, -1e-30f, 65504.0f, 3.0f};
  return special[kind % 8];
}

float maybe_wild(FuzzInput& in, bool wild) {
  if (!wild) return tame(in);
  const std::uint8_t kind = in.byte();
  if (kind < 224) return tame(in);
  static const float special[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                  -std::numeric_limits<float>::infinity(), 3.0e38f};
  return special[kind % 4];
}

/// A token size: mostly valid (finite, > 0), sometimes not.
float size_value(FuzzInput& in, bool bad_ok) {
  const std::uint8_t kind = in.byte();
  static const float good[] = {1.0f, 2.0f, 0.5f, 3.0f, 7.0f, 1.25f, 1e-3f, 64.0f};
  static const float bad[] = {0.0f, -1.0f, std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity()};
  if (bad_ok && kind >= 250) return bad[kind % 4];
  return good[kind % 8];
}

// ---------------------------------------------------------------- buffers --

/// True when pred holds for every element the layout addresses (padding and
/// broadcast copies in the buffer are not part of the tensor).
template <class T, int R, class P>
bool all_addressed(const Lay<R>& L, const std::vector<T>& buf, P&& pred) {
  bool ok = true;
  for_each_index<R>(L.shape, [&](const std::array<index_t, R>& i) { ok = ok && pred(buf[static_cast<size_t>(L.off(i))]); });
  return ok;
}

/// An input tensor in a plain buffer (an empty one may have a null pointer).
template <class T, int R>
struct In {
  Lay<R> L;
  std::vector<T> buf;
  bool null_if_empty = false;
  In() = default;
  In(const Lay<R>& l, bool null_empty) : L(l), buf(static_cast<size_t>(l.span)), null_if_empty(null_empty) {}
  const T* ptr() const {
    static const T dummy[1] = {};
    if (!buf.empty()) return buf.data();
    return null_if_empty ? nullptr : dummy;
  }
  ConstView<T, R> view() const { return ConstView<T, R>(ptr(), L.shape, L.strides); }
  T at(const std::array<index_t, R>& i) const { return buf[static_cast<size_t>(L.off(i))]; }
};

/// An output tensor in a Guarded buffer.
template <class T, int R>
struct Out {
  Lay<R> L;
  Guarded<T> g;
  bool null_if_empty;
  Out(const Lay<R>& l, bool null_empty) : L(l), g(static_cast<size_t>(l.span)), null_if_empty(null_empty) {}
  View<T, R> view() {
    T* p = (L.span == 0 && null_if_empty) ? nullptr : g.data();
    return View<T, R>(p, L.shape, L.strides);
  }
  T at(const std::array<index_t, R>& i) const { return g[static_cast<size_t>(L.off(i))]; }
  /// After an accepted call: guard zones intact, padding between the
  /// addressed elements untouched.
  void check_written(const char* what) const {
    fuzz_check(g.guards_intact(), std::string(what) + ": guard zone written");
    std::vector<char> addressed(static_cast<size_t>(L.span), 0);
    for_each_index<R>(L.shape, [&](const std::array<index_t, R>& i) { addressed[static_cast<size_t>(L.off(i))] = 1; });
    for (size_t k = 0; k < addressed.size(); ++k)
      if (!addressed[k] && !Guarded<T>::is_canary(g[k])) fuzz_fail(std::string(what) + ": wrote between elements");
  }
  void check_untouched(const char* what) const {
    fuzz_check(g.untouched(), std::string(what) + ": a rejected call wrote to an output");
  }
  void check_all_written(const char* what) const {
    for_each_index<R>(L.shape, [&](const std::array<index_t, R>& i) {
      if (Guarded<T>::is_canary(g[static_cast<size_t>(L.off(i))])) fuzz_fail(std::string(what) + ": element not written");
    });
  }
  bool same_bits(const Out& o) const {
    return L.span == 0 || std::memcmp(g.data(), o.g.data(), static_cast<size_t>(L.span) * sizeof(T)) == 0;
  }
};

/// The thread counts an accepted Executor(1) call is repeated with.
std::vector<int> other_threads(int threads) {
  std::vector<int> t = {2};
  if (threads == 0) t.push_back(0);
  return t;
}

int pick_threads(FuzzInput& in) {
  static const int options[] = {1, 2, 0, 1, 2, 1, 2, -1};
  return in.pick(options);
}

/// |got - want| within tol (relative to `scale`, the magnitude of the terms);
/// NaN reference: anything; infinite reference: equal.
void check_value(double got, double want, double scale, double rel, const std::string& what) {
  if (std::isnan(want)) return;
  if (std::isinf(want) || std::isinf(got)) {
    if (got != want) fuzz_fail(what + ": got " + std::to_string(got) + ", want " + std::to_string(want));
    return;
  }
  if (std::isnan(got)) fuzz_fail(what + ": NaN where the reference is " + std::to_string(want));
  if (std::fabs(got - want) > rel * scale + 1e-37)
    fuzz_fail(what + ": got " + std::to_string(got) + ", want " + std::to_string(want));
}

// ------------------------------------------------------ matching reference --

struct MetricRef {
  In<float, 3> m;
  index_t B = 0, N = 0, C = 0;
  bool finite = true;
  /// Cosine similarity of tokens t and u of batch b, in float64 (a zero row
  /// has cosine 0 with everything).
  double cosine(index_t b, index_t t, index_t u) const {
    double st = 0, su = 0, d = 0;
    for (index_t c = 0; c < C; ++c) {
      const double x = m.at({b, t, c}), y = m.at({b, u, c});
      st += x * x;
      su += y * y;
      d += x * y;
    }
    if (st == 0 || su == 0) return 0.0;
    return d / (std::sqrt(st) * std::sqrt(su));
  }
};

MetricRef make_metric(FuzzInput& in, index_t B, index_t N, index_t C) {
  MetricRef r;
  r.B = B;
  r.N = N;
  r.C = C;
  const bool wild = in.byte() < 24;
  const bool zero_rows = in.byte() < 32;
  r.m = In<float, 3>(pick_layout<3>(in, {B, N, C}, true), in.flag());
  for (auto& x : r.m.buf) {
    x = maybe_wild(in, wild);
    if (zero_rows && in.byte() < 64) x = 0.0f;
  }
  r.finite = all_addressed(r.m.L, r.m.buf, [](float x) { return std::isfinite(x); });
  // Ties: sometimes copy one token's row over others.
  return r;
}

/// The output groups of a plan by the official semantics: [b][row] = anchor
/// then the sources in decision order.
using Groups = std::vector<std::vector<std::vector<index_t>>>;

Groups reference_groups(const tome::MergePlan& p) {
  Groups G(static_cast<size_t>(p.batch));
  const index_t nout = p.out_tokens();
  for (index_t b = 0; b < p.batch; ++b) {
    auto& g = G[static_cast<size_t>(b)];
    g.assign(static_cast<size_t>(nout), {});
    if (p.r == 0) {
      for (index_t t = 0; t < p.tokens; ++t) g[static_cast<size_t>(t)] = {t};
      continue;
    }
    const index_t na = p.num_a(), nu = na - p.r;
    auto unm_row = [&](index_t k) { return !p.distill_layout ? k : (k == 0 ? 0 : k + 1); };
    auto dst_row = [&](index_t j) { return !p.distill_layout ? nu + j : (j == 0 ? 1 : nu + j); };
    for (index_t k = 0; k < nu; ++k) g[static_cast<size_t>(unm_row(k))] = {p.a_tok[p.unm_idx[b * nu + k]]};
    for (index_t j = 0; j < p.num_b(); ++j) g[static_cast<size_t>(dst_row(j))] = {p.b_tok[j]};
    for (index_t k = 0; k < p.r; ++k)
      g[static_cast<size_t>(dst_row(p.dst_idx[b * p.r + k]))].push_back(p.a_tok[p.src_idx[b * p.r + k]]);
  }
  return G;
}

/// Checks a merging plan against the float64 reference: the partition, the
/// scores, the greedy decision (stable order, protected tokens) and the
/// derived tables.
void check_plan(const tome::MergePlan& p, const MetricRef& M, const std::vector<index_t>& a_tok,
                const std::vector<index_t>& b_tok, index_t r_want, bool prot_a0, bool prot_b0, bool sort_unm,
                bool distill, const char* what) {
  const std::string w = what;
  fuzz_check(p.batch == M.B && p.tokens == M.N, w + ": plan shape");
  fuzz_check(p.r == r_want, w + ": r is " + std::to_string(p.r) + ", want " + std::to_string(r_want));
  fuzz_check(p.out_tokens() == M.N - r_want, w + ": out_tokens");
  if (p.r > 0 && p.batch > 0) {
    fuzz_check(p.a_tok == a_tok && p.b_tok == b_tok, w + ": partition");
    fuzz_check(p.distill_layout == distill, w + ": layout");
    const index_t na = p.num_a(), nb = p.num_b(), r = p.r, nu = na - r;
    fuzz_check(static_cast<index_t>(p.node_max.size()) == p.batch * na, w + ": node_max size");
    for (index_t b = 0; b < p.batch; ++b) {
      const float* nm = p.node_max.data() + b * na;
      const index_t* ni = p.node_idx.data() + b * na;
      for (index_t i = 0; i < na; ++i) {
        const index_t j0 = prot_b0 ? 1 : 0;
        if ((prot_a0 && i == 0) || j0 >= nb) {
          fuzz_check(std::isinf(nm[i]) && nm[i] < 0, w + ": protected token has a score");
          continue;
        }
        double best = -2;
        for (index_t j = j0; j < nb; ++j) best = std::max(best, M.cosine(b, a_tok[i], b_tok[j]));
        check_value(nm[i], best, 1.0, 2e-5, w + ": node_max");
        fuzz_check(ni[i] >= j0 && ni[i] < nb, w + ": node_idx out of range");
        check_value(M.cosine(b, a_tok[i], b_tok[ni[i]]), best, 1.0, 4e-5, w + ": node_idx is not a best match");
      }
      const index_t* src = p.src_idx.data() + b * r;
      const index_t* dst = p.dst_idx.data() + b * r;
      const index_t* unm = p.unm_idx.data() + b * nu;
      std::vector<char> seen(static_cast<size_t>(na), 0);
      for (index_t k = 0; k < na; ++k) {
        const index_t i = k < r ? src[k] : unm[k - r];
        fuzz_check(i >= 0 && i < na && !seen[static_cast<size_t>(i)], w + ": src/unm not a permutation of A");
        seen[static_cast<size_t>(i)] = 1;
      }
      // Stable descending order: x before y means nm[x] > nm[y], or equal and x < y.
      auto before = [&](index_t x, index_t y) { return nm[x] > nm[y] || (nm[x] == nm[y] && x < y); };
      for (index_t k = 0; k + 1 < r; ++k) fuzz_check(before(src[k], src[k + 1]), w + ": sources out of order");
      for (index_t k = 0; k < r; ++k) {
        fuzz_check(dst[k] == ni[src[k]], w + ": dst_idx != node_idx[src]");
        if (prot_a0) fuzz_check(src[k] != 0, w + ": the class token merged");
        if (prot_b0) fuzz_check(dst[k] != 0, w + ": merged into the distillation token");
        for (index_t u = 0; u < nu; ++u) fuzz_check(before(src[k], unm[u]), w + ": an unmerged token ranks higher");
      }
      for (index_t u = 0; u + 1 < nu; ++u)
        fuzz_check(sort_unm ? unm[u] < unm[u + 1] : before(unm[u], unm[u + 1]), w + ": unmerged order");
    }
  }
  // Derived tables against the official groups.
  const Groups G = reference_groups(p);
  const index_t nout = p.out_tokens();
  for (index_t b = 0; b < p.batch; ++b)
    for (index_t g = 0; g < nout; ++g) {
      const auto& want = G[static_cast<size_t>(b)][static_cast<size_t>(g)];
      const std::vector<index_t> got(p.group_begin(b, g), p.group_end(b, g));
      fuzz_check(got == want, w + ": group members");
      for (index_t t : want) fuzz_check(p.row_of[static_cast<size_t>(b * p.tokens + t)] == g, w + ": row_of");
    }
}

bool same_plan(const tome::MergePlan& a, const tome::MergePlan& b) {
  auto bits = [](const std::vector<float>& x, const std::vector<float>& y) {
    return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0);
  };
  return a.batch == b.batch && a.tokens == b.tokens && a.r == b.r && a.distill_layout == b.distill_layout &&
         a.a_tok == b.a_tok && a.b_tok == b.b_tok && a.unm_idx == b.unm_idx && a.src_idx == b.src_idx &&
         a.dst_idx == b.dst_idx && bits(a.node_max, b.node_max) && a.node_idx == b.node_idx && a.row_of == b.row_of &&
         a.group_ptr == b.group_ptr && a.group_tok == b.group_tok;
}

// ------------------------------------------------------ applying the plan --

/// Runs `call(ex, outs)` with the case's thread count: -1 must be rejected
/// with every output untouched; otherwise the Executor(1) result is checked
/// (`check`), and Executor(2) (and 0) must agree bit for bit. `make` builds a
/// fresh set of outputs. Returns whether the call was accepted.
template <class Outs, class Make, class Call, class Check, class Untouched, class Same>
bool run_checked(int threads, Make&& make, Call&& call, Check&& check, Untouched&& untouched, Same&& same,
                 const char* what) {
  Outs o1 = make();
  if (threads < 0) {
    fuzz_check(!fuzz::accepted([&] { call(Executor(-1), o1); }, what),
               std::string(what) + ": Executor(-1) accepted");
    untouched(o1);
    return false;
  }
  if (!fuzz::accepted([&] { call(Executor(1), o1); }, what)) {
    untouched(o1);
    return false;
  }
  check(o1);
  for (int t : other_threads(threads)) {
    Outs o2 = make();
    fuzz_check(fuzz::accepted([&] { call(Executor(t), o2); }, what),
               std::string(what) + ": accepted with 1 thread, rejected with " + std::to_string(t));
    fuzz_check(same(o1, o2), std::string(what) + ": 1 and " + std::to_string(t) + " threads differ");
  }
  return true;
}

double ref_reduce(const std::vector<double>& xs, tome::MergeMode mode) {
  double acc = xs[0];
  for (size_t i = 1; i < xs.size(); ++i) {
    if (mode == tome::MergeMode::amax)
      acc = (acc < xs[i]) ? xs[i] : acc;  // std::max's NaN behaviour
    else
      acc += xs[i];
  }
  if (mode == tome::MergeMode::mean && xs.size() > 1) acc /= static_cast<double>(xs.size());
  return acc;
}

/// Applies the plan with one of the merge functions, on fuzzed layouts.
void apply_plan(FuzzInput& in, const tome::MergePlan& p, int threads) {
  const index_t B = p.batch, N = p.tokens, Np = p.out_tokens();
  const index_t Cx = in.range(0, 5);
  const int which = in.byte() % 7;
  const bool null_empty = in.flag();
  const bool wild = in.byte() < 32;
  const Groups G = reference_groups(p);
  auto fill = [&](In<float, 3>& x) {
    for (auto& v : x.buf) v = maybe_wild(in, wild);
  };
  switch (which) {
    case 0:
    case 1: {  // merge (with an invalid mode sometimes, or an output aliasing x)
      In<float, 3> x(pick_layout<3>(in, {B, N, Cx}, true), null_empty);
      fill(x);
      const std::uint8_t mb = in.byte();
      const auto mode = static_cast<tome::MergeMode>(mb < 250 ? mb % 3 : 3);
      const Lay<3> lo = pick_layout<3>(in, {B, Np, Cx}, false);
      const bool alias = in.byte() < 8;
      if (alias && x.L.span >= lo.span && lo.span > 0 && !x.buf.empty()) {
        const auto before = x.buf;
        const bool ok = fuzz::accepted(
            [&] { tome::merge<float>(p, x.view(), View<float, 3>(x.buf.data(), lo.shape, lo.strides), mode); },
            "merge aliasing");
        fuzz_check(!ok && std::memcmp(before.data(), x.buf.data(), before.size() * sizeof(float)) == 0,
                   "merge: an output over its input was accepted or written");
        return;
      }
      using O = Out<float, 3>;
      run_checked<O>(
          threads, [&] { return O(lo, null_empty); },
          [&](const Executor& ex, O& o) { tome::merge<float>(p, x.view(), o.view(), mode, ex); },
          [&](const O& o) {
            fuzz_check(mode != static_cast<tome::MergeMode>(3), "merge: an unknown mode was accepted");
            o.check_written("merge");
            for_each_index<3>(lo.shape, [&](const std::array<index_t, 3>& i) {
              std::vector<double> xs;
              double scale = 0;
              for (index_t t : G[static_cast<size_t>(i[0])][static_cast<size_t>(i[1])]) {
                xs.push_back(x.at({i[0], t, i[2]}));
                scale += std::fabs(xs.back());
              }
              if (scale > kFloatSafe) return;  // float intermediates may overflow: no exact reference
              check_value(o.at(i), ref_reduce(xs, mode), scale, 4e-6, "merge value");
            });
          },
          [](const O& o) { o.check_untouched("merge"); }, [](const O& a, const O& b) { return a.same_bits(b); },
          "tome::merge");
      return;
    }
    case 2: {  // merge_wavg
      In<float, 3> x(pick_layout<3>(in, {B, N, Cx}, true), null_empty);
      fill(x);
      const int sk = in.byte() % 4;  // 0: absent, 1-2: present, 3: present with a wrong shape
      In<float, 2> s;
      bool sizes_ok = true;
      if (sk != 0) {
        const std::array<index_t, 2> ss = sk == 3 ? std::array<index_t, 2>{B, N + 1} : std::array<index_t, 2>{B, N};
        s = In<float, 2>(pick_layout<2>(in, ss, true), null_empty);
        for (auto& v : s.buf) v = size_value(in, true);
        sizes_ok = all_addressed(s.L, s.buf, [](float v) { return std::isfinite(v) && v > 0; });
      }
      const ConstView<float, 2> sv = sk == 0 ? ConstView<float, 2>() : s.view();
      auto sz = [&](index_t b, index_t t) { return sk == 0 ? 1.0 : static_cast<double>(s.at({b, t})); };
      const Lay<3> lo = pick_layout<3>(in, {B, Np, Cx}, false);
      const Lay<2> ls = pick_layout<2>(in, {B, Np}, false);
      struct O {
        Out<float, 3> x;
        Out<float, 2> s;
      };
      const bool ok = run_checked<O>(
          threads, [&] { return O{Out<float, 3>(lo, null_empty), Out<float, 2>(ls, null_empty)}; },
          [&](const Executor& ex, O& o) { tome::merge_wavg<float>(p, x.view(), sv, o.x.view(), o.s.view(), ex); },
          [&](const O& o) {
            fuzz_check(sk != 3 && sizes_ok, "merge_wavg: bad sizes accepted");
            o.x.check_written("merge_wavg x_out");
            o.s.check_written("merge_wavg size_out");
            o.s.check_all_written("merge_wavg size_out");
            for_each_index<2>(ls.shape, [&](const std::array<index_t, 2>& i) {
              double tot = 0;
              for (index_t t : G[static_cast<size_t>(i[0])][static_cast<size_t>(i[1])]) tot += sz(i[0], t);
              if (tot <= kFloatSafe) check_value(o.s.at(i), tot, tot, 4e-6, "merge_wavg size");
            });
            for_each_index<3>(lo.shape, [&](const std::array<index_t, 3>& i) {
              double num = 0, den = 0, scale = 0;
              for (index_t t : G[static_cast<size_t>(i[0])][static_cast<size_t>(i[1])]) {
                const double xv = x.at({i[0], t, i[2]}), w = sz(i[0], t);
                num += xv * w;
                den += w;
                scale += std::fabs(xv * w);
              }
              if (scale > kFloatSafe || den > kFloatSafe) return;  // float intermediates may overflow
              check_value(o.x.at(i), num / den, scale / den, 1e-5, "merge_wavg value");
            });
          },
          [](const O& o) {
            o.x.check_untouched("merge_wavg x_out");
            o.s.check_untouched("merge_wavg size_out");
          },
          [](const O& a, const O& b) { return a.x.same_bits(b.x) && a.s.same_bits(b.s); }, "tome::merge_wavg");
      if (threads >= 0 && sk != 3 && sizes_ok) fuzz_check(ok, "merge_wavg: a valid call was rejected");
      return;
    }
    case 3: {  // merge_source, dense: absent (eye) or a given source
      const bool given = in.flag();
      const index_t N0 = given ? in.range(0, 6) : N;
      In<float, 3> src;
      if (given) {
        src = In<float, 3>(pick_layout<3>(in, {B, N, N0}, true), null_empty);
        for (auto& v : src.buf) v = in.byte() < 128 ? 0.0f : (in.byte() < 240 ? 1.0f : tame(in));
      }
      const Lay<3> lo = pick_layout<3>(in, {B, Np, N0}, false);
      using O = Out<float, 3>;
      const bool ok = run_checked<O>(
          threads, [&] { return O(lo, null_empty); },
          [&](const Executor& ex, O& o) {
            tome::merge_source<float>(p, given ? src.view() : ConstView<float, 3>(), o.view(), ex);
          },
          [&](const O& o) {
            o.check_written("merge_source");
            o.check_all_written("merge_source");
            for_each_index<3>(lo.shape, [&](const std::array<index_t, 3>& i) {
              const auto& grp = G[static_cast<size_t>(i[0])][static_cast<size_t>(i[1])];
              double want;
              if (given) {
                std::vector<double> xs;
                for (index_t t : grp) xs.push_back(src.at({i[0], t, i[2]}));
                want = ref_reduce(xs, tome::MergeMode::amax);
              } else {
                want = std::find(grp.begin(), grp.end(), i[2]) != grp.end() ? 1.0 : 0.0;
              }
              check_value(o.at(i), want, 0.0, 0.0, "merge_source value");
            });
          },
          [](const O& o) { o.check_untouched("merge_source"); }, [](const O& a, const O& b) { return a.same_bits(b); },
          "tome::merge_source");
      if (threads >= 0) fuzz_check(ok, "merge_source: a valid call was rejected");
      return;
    }
    case 4: {  // merge_source_map: absent, given, or in place
      const int kind = in.byte() % 3;
      const index_t N0 = kind == 0 ? N : in.range(0, 6);
      const Lay<2> lm = pick_layout<2>(in, {B, N0}, kind == 1);
      bool in_range = true;
      std::vector<index_t> vals(static_cast<size_t>(lm.span));
      for (auto& v : vals) {
        const std::uint8_t k = in.byte();
        v = k < 250 ? (N > 0 ? in.range(0, N - 1) : 0) : (k % 2 ? -1 : N);
      }
      for_each_index<2>(lm.shape, [&](const std::array<index_t, 2>& i) {
        const index_t v = vals[static_cast<size_t>(lm.off(i))];
        if (v < 0 || v >= N) in_range = false;
      });
      // A null [0, 0] view is absent ({}): then N0 = N.
      const bool absent = kind == 0 || (vals.empty() && null_empty && B == 0 && N0 == 0);
      const bool valid = kind == 0 || (in_range && (!absent || N0 == N));
      if (kind == 2) {  // in place: map_out is map_in's memory
        Guarded<index_t> g(vals.size());
        std::copy(vals.begin(), vals.end(), g.data());
        index_t* ptr = (vals.empty() && null_empty) ? nullptr : g.data();
        const bool ok = fuzz::accepted(
            [&] {
              tome::merge_source_map(p, ConstView<index_t, 2>(ptr, lm.shape, lm.strides),
                                     View<index_t, 2>(ptr, lm.shape, lm.strides));
            },
            "tome::merge_source_map");
        fuzz_check(g.guards_intact(), "merge_source_map: guard zone written");
        fuzz_check(ok == valid, "merge_source_map (in place): accepted != valid");
        for_each_index<2>(lm.shape, [&](const std::array<index_t, 2>& i) {
          const size_t o = static_cast<size_t>(lm.off(i));
          if (!ok) {
            fuzz_check(g[o] == vals[o], "merge_source_map: a rejected call wrote");
          } else {
            fuzz_check(g[o] == p.row_of[static_cast<size_t>(i[0] * N + vals[o])], "merge_source_map value (in place)");
          }
        });
        return;
      }
      const Lay<2> lo = pick_layout<2>(in, {B, N0}, false);
      Out<index_t, 2> o(lo, null_empty);
      const bool ok = fuzz::accepted(
          [&] {
            static const index_t dummy[1] = {};
            const index_t* ptr = vals.empty() ? (null_empty ? nullptr : dummy) : vals.data();
            tome::merge_source_map(p, kind == 0 ? ConstView<index_t, 2>() : ConstView<index_t, 2>(ptr, lm.shape, lm.strides),
                                   o.view());
          },
          "tome::merge_source_map");
      if (!ok) {
        fuzz_check(!valid, "merge_source_map: a valid call was rejected");
        o.check_untouched("merge_source_map");
        return;
      }
      if (!valid)
        fuzz_fail("merge_source_map: an invalid call was accepted: kind " + std::to_string(kind) + " B " +
                  std::to_string(B) + " N " + std::to_string(N) + " N0 " + std::to_string(N0) + " in_range " +
                  std::to_string(in_range) + " absent " + std::to_string(absent));
      o.check_written("merge_source_map");
      for_each_index<2>(lo.shape, [&](const std::array<index_t, 2>& i) {
        const index_t t = kind == 0 ? i[1] : vals[static_cast<size_t>(lm.off(i))];
        // The row whose group holds t.
        index_t want = -1;
        const auto& grps = G[static_cast<size_t>(i[0])];
        for (size_t g = 0; g < grps.size(); ++g)
          if (std::find(grps[g].begin(), grps[g].end(), t) != grps[g].end()) want = static_cast<index_t>(g);
        fuzz_check(o.at(i) == want, "merge_source_map value");
      });
      return;
    }
    case 5: {  // unmerge
      In<float, 3> y(pick_layout<3>(in, {B, Np, Cx}, true), null_empty);
      fill(y);
      const Lay<3> lo = pick_layout<3>(in, {B, N, Cx}, false);
      using O = Out<float, 3>;
      const bool ok = run_checked<O>(
          threads, [&] { return O(lo, null_empty); },
          [&](const Executor& ex, O& o) { tome::unmerge<float>(p, y.view(), o.view(), ex); },
          [&](const O& o) {
            o.check_written("unmerge");
            std::vector<index_t> row(static_cast<size_t>(N));
            for_each_index<3>(lo.shape, [&](const std::array<index_t, 3>& i) {
              const auto& grps = G[static_cast<size_t>(i[0])];
              index_t g = -1;
              for (size_t k = 0; k < grps.size() && g < 0; ++k)
                if (std::find(grps[k].begin(), grps[k].end(), i[1]) != grps[k].end()) g = static_cast<index_t>(k);
              const float want = y.at({i[0], g, i[2]});
              fuzz_check(std::memcmp(&want, &o.g[static_cast<size_t>(lo.off(i))], sizeof(float)) == 0, "unmerge value");
            });
          },
          [](const O& o) { o.check_untouched("unmerge"); }, [](const O& a, const O& b) { return a.same_bits(b); },
          "tome::unmerge");
      if (threads >= 0) fuzz_check(ok, "unmerge: a valid call was rejected");
      return;
    }
    default: {  // restore_order with a map of rows of y
      const index_t N0 = in.range(0, 8);
      const Lay<2> lm = pick_layout<2>(in, {B, N0}, true);
      In<index_t, 2> map(lm, null_empty);
      bool in_range = true;
      for (auto& v : map.buf) {
        const std::uint8_t k = in.byte();
        v = k < 250 ? (Np > 0 ? in.range(0, Np - 1) : 0) : (k % 2 ? -1 : Np);
      }
      for_each_index<2>(lm.shape, [&](const std::array<index_t, 2>& i) {
        if (map.at(i) < 0 || map.at(i) >= Np) in_range = false;
      });
      In<float, 3> y(pick_layout<3>(in, {B, Np, Cx}, true), null_empty);
      fill(y);
      const Lay<3> lo = pick_layout<3>(in, {B, N0, Cx}, false);
      using O = Out<float, 3>;
      const bool ok = run_checked<O>(
          threads, [&] { return O(lo, null_empty); },
          [&](const Executor& ex, O& o) { tome::restore_order<float>(map.view(), y.view(), o.view(), ex); },
          [&](const O& o) {
            fuzz_check(in_range, "restore_order: rows out of range accepted");
            o.check_written("restore_order");
            for_each_index<3>(lo.shape, [&](const std::array<index_t, 3>& i) {
              const float want = y.at({i[0], map.at({i[0], i[1]}), i[2]});
              fuzz_check(std::memcmp(&want, &o.g[static_cast<size_t>(lo.off(i))], sizeof(float)) == 0,
                         "restore_order value");
            });
          },
          [](const O& o) { o.check_untouched("restore_order"); }, [](const O& a, const O& b) { return a.same_bits(b); },
          "tome::restore_order");
      if (threads >= 0 && in_range) fuzz_check(ok, "restore_order: a valid call was rejected");
      return;
    }
  }
}

// ---------------------------------------------------------- the matchings --

/// Runs a matching with Executor(1) and Executor(2) (same plan required) or
/// with Executor(-1) (must be rejected). Returns whether it was accepted.
bool run_matching(int threads, const std::function<tome::MergePlan(const Executor&)>& match, tome::MergePlan& plan,
                  const char* what) {
  if (threads < 0) {
    fuzz_check(!fuzz::accepted([&] { plan = match(Executor(-1)); }, what), std::string(what) + ": Executor(-1) accepted");
    return false;
  }
  if (!fuzz::accepted([&] { plan = match(Executor(1)); }, what)) return false;
  for (int t : other_threads(threads)) {
    tome::MergePlan p2;
    fuzz_check(fuzz::accepted([&] { p2 = match(Executor(t)); }, what), std::string(what) + ": rejected with 2 threads");
    fuzz_check(same_plan(plan, p2), std::string(what) + ": the plan depends on the thread count");
  }
  return true;
}

void fuzz_tome_matching(FuzzInput& in, int threads, bool threshold_variant) {
  const index_t B = in.range(0, 3), N = in.range(0, 24), C = in.range(0, 6);
  const std::uint8_t rb = in.byte();
  const index_t r = rb < 240 ? in.range(0, 14) : (rb < 248 ? -1 : in.huge());
  tome::MatchOptions opt;
  opt.class_token = in.flag();
  opt.distill_token = in.byte() < 64;
  const float thr = static_cast<float>(static_cast<std::int8_t>(in.byte())) / 100.0f;  // sometimes outside [-1, 1]
  const MetricRef M = make_metric(in, B, N, C);
  const bool valid = r >= 0 && C >= 1 && M.finite && (!opt.distill_token || opt.class_token) &&
                     (!threshold_variant || (thr >= -1.0f && thr <= 1.0f));
  tome::MergePlan plan;
  const char* what = threshold_variant ? "tome::bipartite_soft_matching_threshold" : "tome::bipartite_soft_matching";
  const bool ok = run_matching(
      threads,
      [&](const Executor& ex) {
        return threshold_variant ? tome::bipartite_soft_matching_threshold(M.m.view(), thr, r, opt, ex)
                                 : tome::bipartite_soft_matching(M.m.view(), r, opt, ex);
      },
      plan, what);
  if (threads < 0) return;
  fuzz_check(ok == valid, std::string(what) + (ok ? ": invalid input accepted" : ": valid input rejected"));
  if (!ok) return;
  const index_t prot = (opt.class_token ? 1 : 0) + (opt.distill_token ? 1 : 0);
  const index_t cap = std::min(r, std::max<index_t>(0, (N - prot) / 2));
  std::vector<index_t> a, b;
  for (index_t t = 0; t < N; ++t) (t % 2 ? b : a).push_back(t);
  index_t r_want = cap;
  if (threshold_variant) {
    if (B == 0) r_want = 0;
    // The count of qualifying tokens uses the plan's own scores (checked
    // against the reference in check_plan when the plan merges).
    const index_t na = static_cast<index_t>(a.size());
    if (B > 0 && cap > 0) {
      fuzz_check(static_cast<index_t>(plan.node_max.size()) == B * na, "threshold: node_max missing");
      for (index_t bb = 0; bb < B; ++bb) {
        index_t c = 0;
        for (index_t i = 0; i < na; ++i) c += plan.node_max[static_cast<size_t>(bb * na + i)] >= thr;
        r_want = std::min(r_want, c);
      }
    }
  }
  check_plan(plan, M, a, b, r_want, opt.class_token, opt.distill_token, opt.class_token,
             opt.distill_token && r_want > 0, what);
  if (B == 0 && r_want > 0) fuzz_check(plan.a_tok.empty() && plan.b_tok.empty(), "empty batch plan holds a partition");
  apply_plan(in, plan, pick_threads(in));
}

index_t grid_field(FuzzInput& in, index_t lo, index_t hi) { return in.byte() < 12 ? in.huge() : in.range(lo, hi); }

bool grid_ok(const tome::Grid2d& g, index_t* n) {
  if (g.w < 1 || g.h < 1 || g.sx < 1 || g.sy < 1 || g.sx > g.w || g.sy > g.h) return false;
  index_t t;
  if (__builtin_mul_overflow(g.w, g.h, &t)) return false;
  *n = t;
  return true;
}

/// The canonical partition, computed directly from the grid definition.
void reference_partition(const tome::Grid2d& g, const std::vector<index_t>* rand, std::vector<index_t>& a,
                         std::vector<index_t>& b) {
  const index_t cy = g.h / g.sy, cx = g.w / g.sx, n = g.w * g.h;
  std::vector<char> dst(static_cast<size_t>(n), 0);
  for (index_t i = 0; i < cy; ++i)
    for (index_t j = 0; j < cx; ++j) {
      const index_t o = rand ? (*rand)[static_cast<size_t>(i * cx + j)] : 0;
      dst[static_cast<size_t>((i * g.sy + o / g.sx) * g.w + j * g.sx + o % g.sx)] = 1;
    }
  a.clear();
  b.clear();
  for (index_t t = 0; t < n; ++t) (dst[static_cast<size_t>(t)] ? b : a).push_back(t);
}

void fuzz_random2d(FuzzInput& in, int threads) {
  tome::Grid2d g;
  g.w = grid_field(in, 1, 6);
  g.h = grid_field(in, 1, 6);
  g.sx = grid_field(in, 0, 3);
  g.sy = grid_field(in, 0, 3);
  index_t n = 0;
  const bool gok = grid_ok(g, &n);
  const bool small = gok && n <= 64;
  const index_t B = in.range(0, 3), C = in.range(0, 5);
  const bool mismatch = in.byte() < 16;
  const index_t N = small && !mismatch ? n : in.range(0, 24);
  const std::uint8_t rb = in.byte();
  const index_t r = rb < 240 ? in.range(0, 40) : (rb < 248 ? -1 : in.huge());
  // rand_idx: absent, drawn, fuzzed (possibly out of range) or a wrong shape.
  const int rk = in.byte() % 4;
  const std::uint64_t seed = in.u64();
  std::vector<index_t> rand;
  bool rand_ok = true;
  std::array<index_t, 2> rshape{0, 0};
  if (rk != 0 && small) {
    const index_t cy = g.h / g.sy, cx = g.w / g.sx, k = g.sx * g.sy;
    rshape = {cy, cx};
    if (rk == 1) {
      std::vector<index_t> d1, d2;
      fuzz_check(fuzz::accepted([&] { d1 = tome::random2d_draw(g, seed); }, "tome::random2d_draw"),
                 "random2d_draw: a valid grid was rejected");
      d2 = tome::random2d_draw(g, seed);
      fuzz_check(d1 == d2, "random2d_draw: not deterministic");
      fuzz_check(static_cast<index_t>(d1.size()) == cy * cx, "random2d_draw: size");
      for (index_t v : d1) fuzz_check(v >= 0 && v < k, "random2d_draw: value out of range");
      rand = d1;
    } else {
      rand.resize(static_cast<size_t>(cy * cx));
      for (auto& v : rand) {
        const std::uint8_t kb = in.byte();
        v = kb < 248 ? kb % k : (kb % 2 ? -1 : k);
        if (v < 0 || v >= k) rand_ok = false;
      }
      if (rk == 3) {
        rshape = {cy, cx + 1};
        rand.resize(static_cast<size_t>(cy * (cx + 1)), 0);
        rand_ok = false;
      }
    }
  } else if (rk != 0) {
    rand.assign(4, 0);  // a grid that is invalid or too big: any rand_idx
    rshape = {2, 2};
  }
  const ConstView<index_t, 2> rv =
      rk == 0 ? ConstView<index_t, 2>() : make_view<const index_t>(rand.data(), rshape[0], rshape[1]);
  // The partition alone (small grids, or grids that must be rejected).
  if (!gok || small) {
    std::vector<index_t> pa = {-5}, pb = {-6};
    const bool pok = fuzz::accepted([&] { tome::random2d_partition(g, rv, pa, pb); }, "tome::random2d_partition");
    fuzz_check(pok == (gok && rand_ok), "random2d_partition: accepted != valid");
    if (!pok) {
      fuzz_check(pa == std::vector<index_t>{-5} && pb == std::vector<index_t>{-6}, "random2d_partition: wrote on reject");
    } else {
      std::vector<index_t> ra, rb2;
      reference_partition(g, rk == 0 ? nullptr : &rand, ra, rb2);
      fuzz_check(pa == ra && pb == rb2, "random2d_partition: not the canonical partition");
    }
    if (!gok) {
      std::vector<index_t> d;
      fuzz_check(!fuzz::accepted([&] { d = tome::random2d_draw(g, seed); }, "tome::random2d_draw"),
                 "random2d_draw: an invalid grid was accepted");
    }
  }
  const MetricRef M = make_metric(in, B, N, C);
  const bool valid = gok && N == n && r >= 0 && C >= 1 && M.finite && rand_ok;
  tome::MergePlan plan;
  const char* what = "tome::bipartite_soft_matching_random2d";
  const bool ok = run_matching(
      threads, [&](const Executor& ex) { return tome::bipartite_soft_matching_random2d(M.m.view(), g, r, rv, ex); },
      plan, what);
  if (threads < 0) return;
  fuzz_check(ok == valid, std::string(what) + (ok ? ": invalid input accepted" : ": valid input rejected"));
  if (!ok) return;
  std::vector<index_t> a, b;
  reference_partition(g, rk == 0 ? nullptr : &rand, a, b);
  const index_t r_want = std::min<index_t>(r, static_cast<index_t>(a.size()));
  check_plan(plan, M, a, b, r_want, false, false, false, false, what);
  apply_plan(in, plan, pick_threads(in));
}

// ---------------------------------------------------- proportional attention --

void fuzz_proportional(FuzzInput& in, int threads) {
  const index_t B = in.range(0, 2), Hkv = in.range(0, 2), H = Hkv * in.range(1, 2) + (in.byte() < 8 ? 1 : 0);
  const index_t Nq = in.range(0, 5), Nk = in.range(0, 6), D = in.range(0, 4), Dv = in.range(0, 3);
  const bool causal = in.flag();
  const int sk = in.byte() % 4;  // 0 absent, 1-2 present, 3 wrong shape
  const std::uint8_t scb = in.byte();
  AttentionOptions opt;
  opt.scale = scb < 200 ? 0.0 : (scb < 240 ? 0.05 * (scb - 199) : (scb < 248 ? -1.0 : std::nan("")));
  const bool null_empty = in.flag();
  In<float, 4> q(pick_layout<4>(in, {B, H, Nq, D}, true), null_empty), k(pick_layout<4>(in, {B, Hkv, Nk, D}, true), null_empty),
      v(pick_layout<4>(in, {B, Hkv, Nk, Dv}, true), null_empty);
  for (auto* t : {&q, &k, &v})
    for (auto& x : t->buf) x = static_cast<float>(static_cast<std::int8_t>(in.byte())) / 48.0f;
  In<float, 2> s;
  bool sizes_ok = true;
  if (sk != 0) {
    s = In<float, 2>(pick_layout<2>(in, sk == 3 ? std::array<index_t, 2>{B, Nk + 1} : std::array<index_t, 2>{B, Nk}, true),
                     null_empty);
    for (auto& x : s.buf) x = size_value(in, true);
    sizes_ok = all_addressed(s.L, s.buf, [](float v) { return std::isfinite(v) && v > 0; });
  }
  const Lay<4> lo = pick_layout<4>(in, {B, H, Nq, Dv}, false);
  const bool valid = D >= 1 && Dv >= 1 && ((Hkv >= 1 && H % Hkv == 0) || (Hkv == 0 && H == 0)) && sk != 3 && sizes_ok && std::isfinite(opt.scale) &&
                     opt.scale >= 0;
  using O = Out<float, 4>;
  const bool ok = run_checked<O>(
      threads, [&] { return O(lo, null_empty); },
      [&](const Executor& ex, O& o) {
        const ConstView<float, 2> sv = sk == 0 ? ConstView<float, 2>() : s.view();
        if (causal)
          tome::proportional_attention(q.view(), k.view(), v.view(), o.view(), sv, CausalMask{}, opt, ex);
        else
          tome::proportional_attention(q.view(), k.view(), v.view(), o.view(), sv, NoMask{}, opt, ex);
      },
      [&](const O& o) {
        fuzz_check(sk != 3 && sizes_ok, "proportional_attention: bad sizes accepted");
        o.check_written("proportional_attention");
        const double scale = opt.scale == 0 ? 1.0 / std::sqrt(static_cast<double>(D)) : opt.scale;
        const index_t G = Hkv > 0 ? H / Hkv : 1;
        std::vector<double> logit(static_cast<size_t>(Nk));
        for_each_index<3>({B, H, Nq}, [&](const std::array<index_t, 3>& i) {
          const index_t b = i[0], h = i[1], qi = i[2], hk = h / G;
          double mx = -INFINITY;
          for (index_t j = 0; j < Nk; ++j) {
            const bool allowed = !causal || j <= qi + Nk - Nq;
            double d = 0;
            for (index_t c = 0; c < D; ++c) d += static_cast<double>(q.at({b, h, qi, c})) * k.at({b, hk, j, c});
            logit[static_cast<size_t>(j)] =
                allowed ? d * scale + (sk == 0 ? 0.0 : std::log(static_cast<double>(s.at({b, j})))) : -INFINITY;
            mx = std::max(mx, logit[static_cast<size_t>(j)]);
          }
          for (index_t c = 0; c < Dv; ++c) {
            double num = 0, den = 0;
            if (std::isfinite(mx))
              for (index_t j = 0; j < Nk; ++j) {
                const double e = std::exp(logit[static_cast<size_t>(j)] - mx);
                num += e * v.at({b, hk, j, c});
                den += e;
              }
            const double want = den > 0 ? num / den : 0.0;
            check_value(o.at({b, h, qi, c}), want, 1.0, 2e-5, "proportional_attention value");
          }
        });
      },
      [](const O& o) { o.check_untouched("proportional_attention"); },
      [](const O& a, const O& b) { return a.same_bits(b); }, "tome::proportional_attention");
  if (threads >= 0) fuzz_check(ok == valid, ok ? "proportional_attention: invalid input accepted"
                                               : "proportional_attention: valid input rejected");
}

// ---------------------------------------------------------------- schedules --

index_t sched_int(FuzzInput& in, index_t lo, index_t hi) {
  const std::uint8_t k = in.byte();
  if (k < 200) return in.range(lo, hi);
  if (k < 216) return in.huge();
  static const index_t edge[] = {-1, 0, 1, 2, tome::kMaxScheduleLayers, tome::kMaxScheduleLayers + 1,
                                 tome::kMaxScheduleR, tome::kMaxScheduleR + 1};
  return edge[k % 8];
}

void fuzz_schedules(FuzzInput& in) {
  const int which = in.byte() % 5;
  const index_t L = sched_int(in, 0, 40);
  // A schedule of 2^20 layers is valid; build it rarely (it is slow to check).
  if (L > 4096 && L <= tome::kMaxScheduleLayers && in.byte() < 240) return;
  switch (which) {
    case 0: {
      const index_t r = sched_int(in, 0, 300);
      const std::uint8_t ib = in.byte();
      const double inflect = ib < 240 ? (ib / 119.5 - 1.0) : (ib < 248 ? 1.5 : std::nan(""));
      std::vector<index_t> got;
      const bool ok = fuzz::accepted([&] { got = tome::parse_r(L, r, inflect); }, "tome::parse_r");
      const bool valid = L >= 2 && L <= tome::kMaxScheduleLayers && r >= 0 && r <= tome::kMaxScheduleR &&
                         std::isfinite(inflect) && inflect >= -1 && inflect <= 1;
      fuzz_check(ok == valid, "parse_r(r, inflect): accepted != valid");
      if (!ok) return;
      const index_t mn = static_cast<index_t>(static_cast<double>(r) * (1.0 - inflect)), mx = 2 * r - mn;
      const double step = static_cast<double>(mx - mn) / static_cast<double>(L - 1);
      fuzz_check(static_cast<index_t>(got.size()) == L, "parse_r: length");
      for (index_t i = 0; i < L; ++i)
        fuzz_check(got[static_cast<size_t>(i)] ==
                       static_cast<index_t>(static_cast<double>(mn) + step * static_cast<double>(i)),
                   "parse_r: value");
      return;
    }
    case 1: {
      std::vector<index_t> list(static_cast<size_t>(in.byte() % 6));
      bool lok = true;
      for (auto& x : list) {
        x = in.byte() < 240 ? in.range(0, 20) : -1;
        lok = lok && x >= 0;
      }
      std::vector<index_t> got;
      const bool ok = fuzz::accepted([&] { got = tome::parse_r(L, list); }, "tome::parse_r(list)");
      fuzz_check(ok == (lok && L >= 0 && L <= tome::kMaxScheduleLayers), "parse_r(list): accepted != valid");
      if (!ok) return;
      auto want = list;
      if (static_cast<index_t>(want.size()) < L) want.resize(static_cast<size_t>(L), 0);
      fuzz_check(got == want, "parse_r(list): value");
      return;
    }
    case 2: {
      const index_t r = sched_int(in, 0, 30);
      std::vector<index_t> got;
      const bool ok = fuzz::accepted([&] { got = tome::schedule_constant(L, r); }, "tome::schedule_constant");
      fuzz_check(ok == (L >= 0 && L <= tome::kMaxScheduleLayers && r >= 0), "schedule_constant: accepted != valid");
      if (ok) fuzz_check(got == std::vector<index_t>(static_cast<size_t>(L), r), "schedule_constant: value");
      return;
    }
    case 3: {
      const index_t tokens = sched_int(in, 0, 600);
      const index_t prot = in.range(0, 4) - 1;
      std::vector<index_t> sched(static_cast<size_t>(in.byte() % 8));
      bool sok = true;
      for (auto& x : sched) {
        x = in.byte() < 240 ? in.range(0, 100) : (in.flag() ? -1 : in.huge());
        sok = sok && x >= 0;
      }
      std::vector<index_t> got;
      const bool ok = fuzz::accepted([&] { got = tome::tokens_after_layers(tokens, sched, prot); },
                                     "tome::tokens_after_layers");
      fuzz_check(ok == (sok && tokens >= 0 && prot >= 0 && prot <= 2), "tokens_after_layers: accepted != valid");
      if (!ok) return;
      index_t n = tokens;
      std::vector<index_t> want;
      for (index_t r : sched) {
        n -= std::min(r, std::max<index_t>(0, (n - prot) / 2));
        want.push_back(n);
      }
      fuzz_check(got == want, "tokens_after_layers: value");
      return;
    }
    default: {
      const index_t tokens = sched_int(in, 0, 5000);
      const std::uint8_t rb = in.byte();
      const double ratio = rb < 240 ? rb / 239.0 : (rb < 244 ? -0.25 : (rb < 248 ? 1.5 : std::nan("")));
      index_t got = -7;
      const bool ok = fuzz::accepted([&] { got = tome::ratio_to_r(tokens, ratio); }, "tome::ratio_to_r");
      fuzz_check(ok == (tokens >= 0 && ratio >= 0 && ratio <= 1), "ratio_to_r: accepted != valid");
      if (!ok) return;
      fuzz_check(got >= 0 && got <= tokens, "ratio_to_r: out of [0, tokens]");
      if (tokens < (index_t(1) << 53))
        fuzz_check(got == static_cast<index_t>(static_cast<double>(tokens) * ratio), "ratio_to_r: value");
      return;
    }
  }
}

// ------------------------------------------------- huge extents, empty data --

/// Empty tensors with a huge extent: every entry point returns at once (or
/// rejects) and never touches memory.
void fuzz_huge_empty(FuzzInput& in, int threads) {
  const index_t H = in.huge() & kMaxIndex;  // a non-negative huge value (min() maps to 0)
  const index_t small = in.range(1, 5);
  std::array<index_t, 3> shape;
  switch (in.byte() % 5) {
    case 0: shape = {H, 0, small}; break;
    case 1: shape = {0, H, small}; break;
    case 2: shape = {H, small, 0}; break;  // C == 0: rejected
    case 3: shape = {0, H, 0}; break;
    default: shape = {H, 0, 0}; break;
  }
  const index_t r = in.byte() < 200 ? in.range(0, 9) : in.huge();
  const int variant = in.byte() % 3;
  tome::MatchOptions opt{in.flag(), false};
  static const float dummy[4] = {};
  const ConstView<float, 3> metric(in.flag() ? nullptr : dummy, shape, {1, 1, 1});
  tome::Grid2d g{1, 1, 1, 1};
  if (variant == 2) {
    // A grid with w * h = N where possible, otherwise anything huge.
    g = tome::Grid2d{shape[1] > 0 ? shape[1] : H, 1, 1, 1};
    if (in.flag()) g.sx = g.sy = in.huge();
  }
  tome::MergePlan plan;
  const bool ok = run_matching(
      threads,
      [&](const Executor& ex) {
        if (variant == 0) return tome::bipartite_soft_matching(metric, r, opt, ex);
        if (variant == 1) return tome::bipartite_soft_matching_threshold(metric, 0.25f, r, opt, ex);
        return tome::bipartite_soft_matching_random2d(metric, g, r, {}, ex);
      },
      plan, "huge empty matching");
  if (threads < 0) return;
  const bool valid_shape = shape[2] >= 1 && r >= 0 &&
                           (variant != 2 || (g.w >= 1 && g.sx >= 1 && g.sy >= 1 && g.sx <= g.w && g.sy <= g.h &&
                                             g.w * g.h == shape[1]));
  fuzz_check(ok == valid_shape, ok ? "huge empty: invalid input accepted" : "huge empty: valid input rejected");
  if (!ok) return;
  fuzz_check(plan.batch == shape[0] && plan.tokens == shape[1], "huge empty: plan shape");
  fuzz_check(plan.row_of.size() + plan.group_tok.size() + plan.group_ptr.size() <= 1 && plan.a_tok.empty(),
             "huge empty: plan tables are not O(1)");
  // Apply it to empty tensors of the right shapes.
  const index_t B = plan.batch, N = plan.tokens, Np = plan.out_tokens(), Cx = in.range(0, 3);
  Guarded<float> o(0);
  Guarded<index_t> om(0);
  float* op = in.flag() ? nullptr : o.data();
  const float* ip = nullptr;
  auto v3 = [&](float* p, index_t a, index_t b, index_t c) { return View<float, 3>(p, {a, b, c}, {1, 1, 1}); };
  auto c3 = [&](const float* p, index_t a, index_t b, index_t c) { return ConstView<float, 3>(p, {a, b, c}, {1, 1, 1}); };
  auto must_return = [&](const std::function<void()>& f, const char* what) {
    fuzz::accepted(f, what);  // accepted or rejected, but fast and without touching memory
    fuzz_check(o.guards_intact() && om.guards_intact(), std::string(what) + ": wrote outside an empty output");
  };
  const Executor ex(threads == 0 ? 2 : threads);
  must_return([&] { tome::merge<float>(plan, c3(ip, B, N, Cx), v3(op, B, Np, Cx), tome::MergeMode::mean, ex); }, "merge");
  must_return(
      [&] {
        tome::merge_wavg<float>(plan, c3(ip, B, N, Cx), ConstView<float, 2>(ip, {B, N}, {1, 1}), v3(op, B, Np, Cx),
                                View<float, 2>(op, {B, Np}, {1, 1}), ex);
      },
      "merge_wavg");
  must_return([&] { tome::unmerge<float>(plan, c3(ip, B, Np, Cx), v3(op, B, N, Cx), ex); }, "unmerge");
  must_return([&] { tome::merge_source<float>(plan, {}, v3(op, B, Np, N), ex); }, "merge_source");
  must_return(
      [&] {
        tome::merge_source_map(plan, ConstView<index_t, 2>(nullptr, {B, 0}, {1, 1}), View<index_t, 2>(om.data(), {B, 0}, {1, 1}));
      },
      "merge_source_map");
  must_return([&] { tome::log_size(ConstView<float, 2>(ip, {B, 0}, {1, 1}), View<float, 2>(op, {B, 0}, {1, 1})); }, "log_size");
}

/// Huge grids and draws: an overflowing product must be rejected.
void fuzz_huge_grid(FuzzInput& in) {
  tome::Grid2d g{in.huge(), in.range(1, 8), in.range(1, 4), in.range(1, 4)};
  if (in.flag()) std::swap(g.w, g.h);
  if (in.flag()) g.sx = in.huge();
  if (in.flag()) g.sy = in.huge();
  if (in.flag()) g.w = g.h = index_t(1) << in.range(31, 40);
  index_t n = 0;
  const bool gok = grid_ok(g, &n);
  if (!gok) {
    std::vector<index_t> a{1}, b{2}, d;
    fuzz_check(!fuzz::accepted([&] { d = tome::random2d_draw(g, 5); }, "random2d_draw"), "huge grid: draw accepted");
    fuzz_check(!fuzz::accepted([&] { tome::random2d_partition(g, {}, a, b); }, "random2d_partition"),
               "huge grid: partition accepted");
    fuzz_check(a == std::vector<index_t>{1} && b == std::vector<index_t>{2}, "huge grid: partition wrote on reject");
  }
  // The matching: a small metric never matches a huge grid.
  std::vector<float> m(2 * 8 * 3, 0.5f);
  const bool ok = fuzz::accepted(
      [&] { tome::bipartite_soft_matching_random2d(make_view<const float>(m.data(), 2, 8, 3), g, 3); }, "random2d");
  fuzz_check(!ok || (gok && n == 8), "huge grid: a mismatching metric was accepted");
}

// ----------------------------------------------------------------- bad views --

/// One broken view per call, each broken so that the library must reject it
/// before reading or writing through it.
void fuzz_bad_views(FuzzInput& in, int threads) {
  const index_t B = in.range(1, 2), N = in.range(2, 9), C = in.range(1, 4);
  std::vector<float> mbuf(static_cast<size_t>(B * N * C));
  for (auto& x : mbuf) x = tame(in);
  const auto mv = make_view<const float>(mbuf.data(), B, N, C);
  const tome::MergePlan plan = tome::bipartite_soft_matching(mv, in.range(0, N / 2));
  const index_t Np = plan.out_tokens();
  std::vector<float> xbuf(static_cast<size_t>(B * N * 3), 1.0f);
  const auto xv = make_view<const float>(xbuf.data(), B, N, 3);
  Guarded<float> out(static_cast<size_t>(B * N * 3));
  const View<float, 3> ov(out.data(), {B, Np, 3}, {Np * 3, 3, 1});
  const int what = in.byte() % 6;
  const int target = in.byte() % 3;  // 0: the metric, 1: merge's x, 2: merge's out
  static const index_t kWrap[] = {index_t(1) << 62, (index_t(1) << 62) + 1, kMaxIndex - 1, kMaxIndex};
  auto broken = [&](auto v) {
    using V = decltype(v);
    auto shape = v.shape();
    auto strides = v.strides();
    switch (what) {
      case 0: shape[in.byte() % 3] = -1 - in.range(0, 3); break;  // negative extent
      case 1: strides[in.byte() % 3] = -1 - in.range(0, 3); break;  // negative stride
      case 2: return V(nullptr, shape, strides);                     // null data, non-empty shape
      case 3: strides[2] = in.pick(kWrap); break;                    // wraps the address (a dim of extent >= 2)
      case 4: shape[2] = in.pick(kWrap); break;                      // the element count or the address wraps
      default: shape[2] = target == 0 ? 0 : shape[2] + 1; break;     // C == 0 (metric) / a shape mismatch
    }
    if (what == 3 && shape[2] < 2) strides[1] = in.pick(kWrap);      // N >= 2, Np >= 1: pick a dim > 1
    return V(v.data(), shape, strides);
  };
  // An output over its own input (x's memory): must be rejected too.
  const bool alias = target == 2 && in.byte() < 32;
  Guarded<float> xg(xbuf.size());
  std::copy(xbuf.begin(), xbuf.end(), xg.data());
  const ConstView<float, 3> xgv(xg.data(), xv.shape(), xv.strides());
  const bool ok = fuzz::accepted(
      [&] {
        const Executor ex(threads < 0 ? 1 : threads);
        if (target == 0) tome::bipartite_soft_matching(broken(mv), 2, {}, ex);
        if (target == 1) tome::merge<float>(plan, broken(xv), ov, tome::MergeMode::mean, ex);
        if (target == 2 && alias) tome::merge<float>(plan, xgv, View<float, 3>(xg.data(), ov.shape(), ov.strides()));
        if (target == 2 && !alias) tome::merge<float>(plan, xv, broken(ov), tome::MergeMode::mean, ex);
      },
      "bad view");
  fuzz_check(!ok, "a bad view was accepted");
  fuzz_check(out.untouched(), "bad view: a rejected call wrote");
  fuzz_check(std::equal(xbuf.begin(), xbuf.end(), xg.data()) && xg.guards_intact(), "bad view: the input changed");
}

// ------------------------------------------------------ explicit partition --

void fuzz_partition(FuzzInput& in, int threads) {
  const index_t B = in.range(0, 3), N = in.range(0, 16), C = in.range(0, 4);
  const std::uint8_t rb = in.byte();
  const index_t r = rb < 240 ? in.range(0, 14) : (rb < 248 ? -1 : in.huge());
  const bool sort_unm = in.flag();
  std::vector<index_t> a, b;
  for (index_t t = 0; t < N; ++t) (in.flag() ? b : a).push_back(t);
  for (auto* l : {&a, &b})
    for (size_t i = 1; i < l->size(); ++i) std::swap((*l)[i], (*l)[in.byte() % (i + 1)]);  // any order
  bool lists_ok = true;
  const std::uint8_t corrupt = in.byte();
  if (corrupt >= 240) {
    lists_ok = false;
    auto& l = (corrupt % 2 || b.empty()) ? a : b;
    switch ((corrupt / 2) % 4) {
      case 0: l.push_back(N); break;                            // out of range
      case 1: l.push_back(-1); break;
      case 2: if (!l.empty()) l.push_back(l[0]); else l.push_back(0); break;  // twice (or extra)
      default: if (!l.empty()) l.pop_back(); else lists_ok = true; break;     // a token missing
    }
  }
  const MetricRef M = make_metric(in, B, N, C);
  const bool valid = lists_ok && r >= 0 && C >= 1 && M.finite;
  tome::MergePlan plan;
  const char* what = "tome::bipartite_soft_matching_partition";
  const bool ok = run_matching(
      threads, [&](const Executor& ex) { return tome::bipartite_soft_matching_partition(M.m.view(), a, b, r, sort_unm, ex); },
      plan, what);
  if (threads < 0) return;
  fuzz_check(ok == valid, std::string(what) + (ok ? ": invalid input accepted" : ": valid input rejected"));
  if (!ok) return;
  const index_t r_want = b.empty() ? 0 : std::min<index_t>(r, static_cast<index_t>(a.size()));
  check_plan(plan, M, a, b, r_want, false, false, sort_unm, false, what);
  apply_plan(in, plan, pick_threads(in));
}

// ------------------------------------------------------------ the ViT block --

/// A tiny ViT block / encoder: invariants (token counts as the official caps,
/// sizes adding up, source rows in range, finite output), bit identity over
/// thread counts, and nothing changed by a rejected call.
void fuzz_vit(FuzzInput& in, int threads) {
  const index_t heads = in.range(1, 2), hd = in.range(1, 3), C = heads * hd, hidden = in.range(1, 8);
  const index_t B = in.range(1, 2), N = in.range(1, 9), depth = in.range(1, 2);
  std::mt19937 rng(in.u16());
  auto enc = models::ViTEncoder::random(rng, depth, C, heads, hidden);
  models::ToMeBlockOptions opt;
  opt.prop_attn = in.flag();
  opt.match.class_token = in.flag();
  opt.match.distill_token = in.byte() < 16;
  const bool trace = in.flag();
  std::vector<index_t> schedule(static_cast<size_t>(depth));
  for (auto& r : schedule) r = in.byte() < 248 ? in.range(0, 5) : -1;
  const int bad = in.byte() % 16;  // 1: a zero size, 2: a source row out of range, 3: a wrong block width
  nn::Matrix x0(B * N, C);
  for (index_t i = 0; i < x0.size(); ++i) x0.data()[i] = static_cast<float>(static_cast<std::int8_t>(in.byte())) / 64.0f;
  if (bad == 3 && C > 1) enc.blocks.back() = models::ViTBlock::random(C + heads, heads, hidden, rng);
  const bool use_block = in.flag();
  const bool bad_width = bad == 3 && C > 1 && (!use_block || depth == 1);  // the block that runs is broken
  bool valid = !(opt.match.distill_token && !opt.match.class_token) && !bad_width;
  for (size_t i = 0; i < (use_block ? 1 : schedule.size()); ++i) valid = valid && schedule[i] >= 0;
  struct Res {
    nn::Matrix x;
    models::ToMeState st;
    std::vector<index_t> counts;
  };
  auto make_state = [&](models::ToMeState& st) {
    st.reset(B, N, trace);
    if (bad == 1) st.size.assign(static_cast<size_t>(B * N), 1.0f), st.size[0] = 0.0f;
    if (bad == 2 && trace) st.source_map[0] = N;
  };
  if (use_block) valid = valid && bad != 1 && !(bad == 2 && trace);
  auto run = [&](const Executor& ex, Res& res) {
    res.x = x0;
    make_state(res.st);
    models::ViTWorkspace ws;
    if (use_block)
      models::tome_block_forward(enc.blocks[0], res.x, res.st, schedule[0], opt, ws, ex);
    else
      enc.forward(res.x, B, schedule, res.st, opt, ws, ex, &res.counts);
  };
  Res r1;
  const char* what = use_block ? "models::tome_block_forward" : "models::ViTEncoder::forward";
  const bool ok = fuzz::accepted([&] { run(Executor(threads < 0 ? -1 : 1), r1); }, what);
  if (!ok) {
    fuzz_check(threads < 0 || !valid, std::string(what) + ": a valid call was rejected");
    fuzz_check(r1.x == x0, std::string(what) + ": a rejected call changed x");
    return;
  }
  if (!(threads >= 0 && valid))
    fuzz_fail(std::string(what) + ": an invalid call was accepted (threads " + std::to_string(threads) + ", bad " +
              std::to_string(bad) + ", trace " + std::to_string(trace) + ", r0 " + std::to_string(schedule[0]) +
              ", depth " + std::to_string(depth) + ", C " + std::to_string(C) + ", cls/dist " +
              std::to_string(opt.match.class_token) + std::to_string(opt.match.distill_token) + ")");
  // Invariants.
  const index_t prot = (opt.match.class_token ? 1 : 0) + (opt.match.distill_token ? 1 : 0);
  const std::vector<index_t> sched = use_block ? std::vector<index_t>{schedule[0]} : schedule;
  const auto want = tome::tokens_after_layers(N, sched, prot);
  const index_t Nf = want.back();
  fuzz_check(r1.st.tokens == Nf && r1.x.rows() == B * Nf && r1.x.cols() == C, std::string(what) + ": token count");
  if (!use_block) fuzz_check(r1.counts == want, std::string(what) + ": tokens after each block");
  fuzz_check(r1.x.allFinite(), std::string(what) + ": non-finite output");
  if (!r1.st.size.empty()) {
    for (index_t b = 0; b < B; ++b) {
      double tot = 0;
      for (index_t t = 0; t < Nf; ++t) tot += r1.st.size[static_cast<size_t>(b * Nf + t)];
      check_value(tot, static_cast<double>(N), N, 1e-5, std::string(what) + ": sizes do not add up");
    }
  }
  if (trace)
    for (index_t v : r1.st.source_map) fuzz_check(v >= 0 && v < Nf, std::string(what) + ": source row out of range");
  for (int t : other_threads(threads)) {
    Res r2;
    fuzz_check(fuzz::accepted([&] { run(Executor(t), r2); }, what), std::string(what) + ": rejected with 2 threads");
    fuzz_check(r1.x == r2.x && r1.st.size == r2.st.size && r1.st.source_map == r2.st.source_map,
               std::string(what) + ": 1 and 2 threads differ");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const int op = in.byte() % 10;
  const int threads = pick_threads(in);
  switch (op) {
    case 0: fuzz_tome_matching(in, threads, false); break;
    case 1: fuzz_tome_matching(in, threads, true); break;
    case 2: fuzz_random2d(in, threads); break;
    case 3: fuzz_proportional(in, threads); break;
    case 4: fuzz_schedules(in); break;
    case 5: fuzz_huge_empty(in, threads); break;
    case 6: fuzz_huge_grid(in); break;
    case 7: fuzz_bad_views(in, threads); break;
    case 8: fuzz_partition(in, threads); break;
    default: fuzz_vit(in, threads); break;
  }
  return 0;
}
