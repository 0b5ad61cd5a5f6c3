// SPDX-License-Identifier: MIT
// libFuzzer target: selective attention's public entry points.
//
//  - selective_attention (tiled prefill) on random small shapes, GQA ratios,
//    strides (contiguous, [B,N,H,D], padded, broadcast inputs), selection
//    heads and groups (valid or not), tile sizes, scale and thread counts
//    (-1, 0, 1, 2); accepted calls must match selective_attention_reference
//    (float64: out, lse, and f_next against the reference's S and F) and be
//    bit-identical for 1 and 2 threads; rejected calls throw
//    effattn::invalid_argument and leave every output byte untouched;
//  - SelectiveKVCache: an optional prefill, then steps with budgets (pruning
//    or not), bad executors and bad shapes on purpose (the cache must be
//    unchanged after a throw); every output is checked against the dense
//    reference with exactly the evicted tokens masked, two caches run with
//    1 and 2 threads bit-identically;
//  - selective_memory_profile against the reference F, and huge extents
//    (overflowing cache sizes, huge N next to H = 0).
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "fuzz_support.hpp"

using namespace effattn;
using fuzz::FuzzInput;
using fuzz::Guarded;
using fuzz::Layout4;
using fuzz::data_or_null;
using fuzz::key_value;
using fuzz::make_layout;
using fuzz::small_value;
using fuzz::value_value;

namespace {


/// Selection options: the default head, another head, groups, or bad ones.
selective::SelectiveOptions make_options(FuzzInput& in, index_t H, bool& bad, bool* bad_tile = nullptr) {
  selective::SelectiveOptions opt;
  bad = false;
  const std::uint8_t sb = in.byte();
  opt.attention.scale = sb < 200 ? 0.0 : (sb < 240 ? 0.0625 * (sb - 199) : (sb < 248 ? -1.0 : std::nan("")));
  bad = bad || sb >= 240;
  const std::uint8_t hk = in.byte() % 8;
  if (hk < 4) {
    opt.selection_head = H > 0 ? in.range(0, H - 1) : 0;
  } else if (hk < 7) {
    const index_t G = in.range(1, std::max<index_t>(H, 1));
    if (H > 0 && H % G == 0) {
      for (index_t g = 0; g < G; ++g) opt.group_selection_heads.push_back(in.range(0, H - 1));
    }
  } else {
    opt.selection_head = in.flag() ? -1 : std::max<index_t>(H, 1);
    bad = opt.selection_head < 0 || H > 0;  // with no head (H = 0) no selection head is read
  }
  const index_t quantum = effattn::detail::attention_query_tile_quantum();
  const std::uint8_t qb = in.byte();
  // A block_q that is not a multiple of the quantum is rounded up (valid); 4097 is not.
  opt.attention.block_q = qb < 180 ? 0 : (qb < 245 ? quantum * in.range(1, 2) + (qb & 1) : 4097);
  const std::uint8_t kb = in.byte();
  opt.attention.block_k = kb < 170 ? 0 : (kb < 250 ? in.pick<index_t, 4>({1, 3, 16, 4096}) : 4097);
  if (bad_tile) *bad_tile = qb >= 245 || kb >= 250;
  return opt;
}

/// The dense reference's S and F as [B][G][N][N] doubles (G groups).
struct Dense {
  index_t B = 0, G = 0, N = 0;
  std::vector<double> S, F;
  double f(index_t b, index_t g, index_t i, index_t j) const {
    return F[static_cast<size_t>(((b * G + g) * N + i) * N + j)];
  }
  double s(index_t b, index_t g, index_t i, index_t j) const {
    return S[static_cast<size_t>(((b * G + g) * N + i) * N + j)];
  }
};

void check_close1(double got, double want, double tol, const char* what) {
  if (std::isnan(want)) return;
  if (std::isinf(want)) {
    fuzz::fuzz_check(got == want, what);
    return;
  }
  fuzz::fuzz_check(std::isfinite(got) && std::fabs(got - want) <= tol * (1 + std::fabs(want)), what);
}

// ---------------------------------------------------------------- prefill

void run_prefill(FuzzInput& in) {
  const index_t B = in.range(0, 2), Hkv = in.range(0, 2);
  index_t H = Hkv * in.range(1, 3);
  if (in.byte() < 8) H = in.range(0, 4);
  const index_t N = in.pick<index_t, 9>({1, 2, 3, 5, 9, 17, 33, 70, 0});
  const index_t D = in.pick<index_t, 5>({1, 4, 8, 3, 0});
  const index_t Dv = in.byte() < 200 ? (D > 0 ? D : 1) : in.range(1, 9);
  bool bad_opt = false, bad_tile = false;
  const selective::SelectiveOptions opt = make_options(in, H, bad_opt, &bad_tile);
  const int threads = in.pick<int, 6>({1, 2, 0, 2, 1, -1});
  const bool with_lse = in.flag(), with_f = in.flag(), wild = in.byte() < 30, misalign = in.flag();
  if (B * std::max<index_t>(H, 1) * N * std::max<index_t>(std::max(D, Dv), 1) > 6000) return;
  const Layout4 lq = make_layout(in, {B, H, N, D}, true);
  const Layout4 lk = make_layout(in, {B, Hkv, N, D}, true);
  const Layout4 lv = make_layout(in, {B, Hkv, N, Dv}, true);
  const Layout4 lo = make_layout(in, {B, H, N, Dv}, false);
  std::vector<float> q(static_cast<size_t>(lq.span)), k(static_cast<size_t>(lk.span)), v(static_cast<size_t>(lv.span));
  for (auto& x : q) x = small_value(in);
  // Non-finite keys or non-finite values, not both (a key whose logit is -inf
  // with an infinite value is an engine finding: 0 * inf).
  const bool wild_k = wild && in.flag();
  for (auto& x : k) x = key_value(in, wild_k);
  for (auto& x : v) x = value_value(in, wild && !wild_k);
  double vmax = 0;  // cancellation in the weighted sum of values scales with the largest |v|
  for (float x : v)
    if (std::isfinite(x)) vmax = std::max(vmax, std::fabs(static_cast<double>(x)));
  const index_t G = opt.group_selection_heads.empty() ? 1 : static_cast<index_t>(opt.group_selection_heads.size());

  const size_t on = static_cast<size_t>(lo.span), ln = static_cast<size_t>(B * H * N),
               fnn = static_cast<size_t>(B * G * N);
  Guarded<float> out1(on, misalign), out2(on, misalign), outr(on), lse1(ln), lse2(ln), lser(ln);
  Guarded<double> f1(fnn), f2(fnn);
  const ConstView<float, 4> Q(data_or_null(q), lq.shape, lq.strides), K(data_or_null(k), lk.shape, lk.strides),
      V(data_or_null(v), lv.shape, lv.strides);
  auto O = [&](Guarded<float>& g) { return View<float, 4>(on ? g.data() : nullptr, lo.shape, lo.strides); };
  auto L = [&](Guarded<float>& g) { return with_lse ? make_view(ln ? g.data() : nullptr, B, H, N) : View<float, 3>{}; };
  auto Fn = [&](Guarded<double>& g) { return with_f ? make_view(fnn ? g.data() : nullptr, B, G, N) : View<double, 3>{}; };
  auto call = [&](Guarded<float>& og, Guarded<float>& lg, Guarded<double>& fg, int t) {
    return fuzz::accepted([&] { selective::selective_attention<float>(Q, K, V, O(og), opt, Executor(t), L(lg), Fn(fg)); },
                          "selective_attention");
  };
  const bool ok1 = call(out1, lse1, f1, threads);
  const bool ok2 = call(out2, lse2, f2, threads < 0 ? threads : (threads == 1 ? 2 : 1));
  fuzz::fuzz_check(ok1 == ok2, "accepted with one thread count and rejected with another");
  fuzz::fuzz_check(out1.guards_intact() && out2.guards_intact() && lse1.guards_intact() && lse2.guards_intact() &&
                       f1.guards_intact() && f2.guards_intact(),
                   "a guard zone around an output changed");
  if (!ok1) {
    fuzz::fuzz_check(out1.untouched() && lse1.untouched() && f1.untouched() && out2.untouched(),
                     "a rejected call wrote to an output");
    return;
  }
  fuzz::fuzz_check(threads >= 0 && !bad_opt && !bad_tile, "bad input accepted");
  fuzz::check_bit_identical(out1.data(), out2.data(), on, "out");
  if (with_lse) fuzz::check_bit_identical(lse1.data(), lse2.data(), ln, "lse");
  if (with_f) fuzz::check_bit_identical(f1.data(), f2.data(), fnn, "f_next");

  // The dense oracle with S and F.
  Dense dn{B, G, N, std::vector<double>(static_cast<size_t>(B * G * N * N)), std::vector<double>(static_cast<size_t>(B * G * N * N))};
  selective::SelectiveOptions ro = opt;
  ro.attention.block_q = ro.attention.block_k = 0;
  const bool okr = fuzz::accepted(
      [&] {
        selective::selective_attention_reference<float>(Q, K, V, O(outr), ro, L(lser),
                                             View<double, 4>(data_or_null(dn.S), {B, G, N, N}),
                                             View<double, 4>(data_or_null(dn.F), {B, G, N, N}));
      },
      "selective_attention_reference");
  fuzz::fuzz_check(okr, "the reference rejected what selective_attention accepted");
  const double tol = 5e-4;
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h)
      for (index_t i = 0; i < N; ++i) {
        if (with_lse) {
          const size_t li = static_cast<size_t>((b * H + h) * N + i);
          check_close1(lse1[li], lser[li], tol, "lse differs from the reference");
        }
        for (index_t e = 0; e < Dv; ++e) {
          const size_t off = static_cast<size_t>(b * lo.strides[0] + h * lo.strides[1] + i * lo.strides[2] + e * lo.strides[3]);
          if (!std::isfinite(outr[off])) continue;
          const double want = outr[off], got = out1[off];
          if (!std::isfinite(got) || std::fabs(got - want) > tol * (1 + std::fabs(want)) + 1e-5 * vmax)
            fuzz::fuzz_fail("output differs from the reference: B=" + std::to_string(B) + " H=" + std::to_string(H) +
                            " Hkv=" + std::to_string(Hkv) + " N=" + std::to_string(N) + " D=" + std::to_string(D) +
                            " at " + std::to_string(off) + " got " + std::to_string(got) + " want " +
                            std::to_string(want));
        }
      }
  if (with_f)
    for (index_t b = 0; b < B; ++b)
      for (index_t g = 0; g < G; ++g)
        for (index_t j = 0; j < N; ++j) {
          // F's next row: F[N-1] + S[N-1] (zero without a head).
          const double want = H > 0 ? dn.f(b, g, N - 1, j) + dn.s(b, g, N - 1, j) : 0.0;
          const double got = f1[static_cast<size_t>((b * G + g) * N + j)];
          check_close1(got, want, 1e-4,
                       ("f_next differs from the reference: N=" + std::to_string(N) + " j=" + std::to_string(j) +
                        " got " + std::to_string(got) + " want " + std::to_string(want) + (wild ? " (wild)" : ""))
                           .c_str());
        }
}

// ---------------------------------------------------------------- the cache

struct Snapshot {
  index_t size, seen;
  size_t kv, total;
  std::vector<std::vector<index_t>> pos, ev;
  std::vector<double> f;
  bool operator==(const Snapshot& o) const {
    return size == o.size && seen == o.seen && kv == o.kv && total == o.total && pos == o.pos && ev == o.ev && f == o.f;
  }
};
Snapshot snapshot(const selective::SelectiveKVCache<float>& c) {
  Snapshot s{c.size(), c.tokens_seen(), c.kv_bytes(), c.total_bytes(), {}, {}, {}};
  for (index_t b = 0; b < c.batch(); ++b) {
    s.pos.push_back(c.positions(b));
    s.ev.push_back(c.last_evicted(b));
    for (index_t slot = 0; slot < c.size(); ++slot)
      for (index_t g = 0; g < c.groups(); ++g) s.f.push_back(c.f(b, slot, g));
  }
  return s;
}

void run_cache(FuzzInput& in) {
  const index_t B = in.range(1, 2), Hkv = in.range(1, 2), H = Hkv * in.range(1, 2);
  const index_t D = in.pick<index_t, 3>({1, 4, 8}), Dv = in.pick<index_t, 3>({1, 4, 5});
  const index_t T = in.range(1, 12);
  index_t budget = in.range(2, 7);
  const std::uint8_t bb = in.byte();
  if (bb < 8) budget = in.range(-1, 1);  // rejected
  bool bad_opt = false;
  selective::SelectiveOptions opt = make_options(in, H, bad_opt);
  // Contiguous [B,H,T,D] token data; step t reads a strided slice.
  std::vector<float> q(static_cast<size_t>(B * H * T * D)), k(static_cast<size_t>(B * Hkv * T * D)),
      v(static_cast<size_t>(B * Hkv * T * Dv));
  for (auto& x : q) x = small_value(in);
  for (auto& x : k) x = small_value(in);
  for (auto& x : v) x = small_value(in);
  auto view = [&](std::vector<float>& x, index_t h, index_t d, index_t t0, index_t n) {
    return ConstView<float, 4>(x.data() + t0 * d, {B, h, n, d}, {h * T * d, T * d, d, 1});
  };

  const bool ctor_ok = fuzz::accepted([&] { selective::SelectiveKVCache<float> c(B, H, Hkv, D, Dv, budget, opt); },
                                      "SelectiveKVCache");
  if (!ctor_ok) return;
  fuzz::fuzz_check(budget >= 2, "a budget < 2 was accepted");
  // The constructor checks the scale and the heads; the tile sizes are prefill's.
  fuzz::fuzz_check(!(bad_opt && (opt.attention.scale < 0 || std::isnan(opt.attention.scale) || opt.selection_head < 0 ||
                                 opt.selection_head >= H)),
                   "the cache accepted bad options");
  selective::SelectiveKVCache<float> c1(B, H, Hkv, D, Dv, budget, opt), c2(B, H, Hkv, D, Dv, budget, opt);
  const index_t G = c1.groups();

  // The dense reference over all T tokens: S and F (F of a cached token is the
  // dense F, whatever was evicted).
  selective::SelectiveOptions ro = opt;
  ro.attention.block_q = ro.attention.block_k = 0;
  Dense dn{B, G, T, std::vector<double>(static_cast<size_t>(B * G * T * T)), std::vector<double>(static_cast<size_t>(B * G * T * T))};
  std::vector<float> outd(static_cast<size_t>(B * H * T * Dv));
  selective::selective_attention_reference<float>(view(q, H, D, 0, T), view(k, Hkv, D, 0, T), view(v, Hkv, Dv, 0, T),
                                       make_view(outd.data(), B, H, T, Dv), ro, {}, make_view(dn.S.data(), B, G, T, T),
                                       make_view(dn.F.data(), B, G, T, T));
  const double scale = opt.attention.scale == 0 ? 1.0 / std::sqrt(static_cast<double>(D)) : opt.attention.scale;
  std::vector<std::set<index_t>> evicted(static_cast<size_t>(B));
  /// out[b,h,:] of query t over the tokens not evicted (dense formula).
  auto expect_query = [&](const float* got, index_t ld_h, index_t ld_b, index_t t,
                          const std::vector<std::set<index_t>>& ev, const char* what) {
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < H; ++h) {
        const index_t hk = h / (H / Hkv), g = h / (H / G);
        double mx = -std::numeric_limits<double>::infinity();
        std::vector<double> lg(static_cast<size_t>(t + 1));
        for (index_t j = 0; j <= t; ++j) {
          if (ev[static_cast<size_t>(b)].count(j)) continue;
          double s = 0;
          for (index_t e = 0; e < D; ++e)
            s += static_cast<double>(q[static_cast<size_t>(((b * H + h) * T + t) * D + e)]) *
                 static_cast<double>(k[static_cast<size_t>(((b * Hkv + hk) * T + j) * D + e)]);
          lg[static_cast<size_t>(j)] = s * scale - dn.f(b, g, t, j);
          mx = std::max(mx, lg[static_cast<size_t>(j)]);
        }
        for (index_t e = 0; e < Dv; ++e) {
          double num = 0, den = 0;
          for (index_t j = 0; j <= t; ++j) {
            if (ev[static_cast<size_t>(b)].count(j)) continue;
            const double p = std::exp(lg[static_cast<size_t>(j)] - mx);
            den += p;
            num += p * static_cast<double>(v[static_cast<size_t>(((b * Hkv + hk) * T + j) * Dv + e)]);
          }
          check_close1(got[b * ld_b + h * ld_h + e], num / den, 5e-4, what);
        }
      }
  };

  index_t t0 = 0;
  if (in.byte() < 100) {  // a prompt first
    const index_t P = in.range(0, T);
    std::vector<float> o1(static_cast<size_t>(B * H * P * Dv)), o2(o1.size());
    const int th = in.pick<int, 4>({1, 2, 0, -1});
    const bool ok1 = fuzz::accepted([&] {
      c1.prefill(view(q, H, D, 0, P), view(k, Hkv, D, 0, P), view(v, Hkv, Dv, 0, P),
                 View<float, 4>(data_or_null(o1), {B, H, P, Dv}), Executor(th));
    }, "SelectiveKVCache::prefill");
    const bool ok2 = fuzz::accepted([&] {
      c2.prefill(view(q, H, D, 0, P), view(k, Hkv, D, 0, P), view(v, Hkv, Dv, 0, P),
                 View<float, 4>(data_or_null(o2), {B, H, P, Dv}), Executor(th == 1 ? 2 : (th == 2 ? 1 : th)));
    }, "SelectiveKVCache::prefill");
    fuzz::fuzz_check(ok1 == ok2, "prefill: accepted with one thread count and rejected with another");
    if (!ok1) {
      fuzz::fuzz_check(c1.tokens_seen() == 0 && c1.size() == 0 && c1.kv_bytes() == 0, "a rejected prefill changed the cache");
      if (th >= 0) return;  // bad tile options: every prefill fails alike
    } else {
      fuzz::fuzz_check(th >= 0, "prefill: a negative thread count was accepted");
      fuzz::check_bit_identical(o1.data(), o2.data(), o1.size(), "prefill out");
      fuzz::fuzz_check(snapshot(c1) == snapshot(c2), "prefill: caches differ between thread counts");
      for (index_t b = 0; b < B; ++b)
        for (index_t p : c1.last_evicted(b)) evicted[static_cast<size_t>(b)].insert(p);
      const std::vector<std::set<index_t>> none(static_cast<size_t>(B));
      for (index_t t = 0; t < P; ++t)  // the prompt is exact (no pruning inside it)
        expect_query(o1.data() + t * Dv, P * Dv, H * P * Dv, t, none, "prefill differs from the dense reference");
      t0 = P;
    }
  }
  for (index_t t = t0; t < T; ++t) {
    Guarded<float> o1(static_cast<size_t>(B * H * Dv)), o2(o1.size());
    const int th = in.pick<int, 5>({1, 2, 0, 1, -1});
    const bool bad_shape = in.byte() < 12;
    const Snapshot before = snapshot(c1);
    auto out = [&](Guarded<float>& g) { return make_view(g.data(), B, H, 1, bad_shape ? Dv + 1 : Dv); };
    Guarded<float> big1(static_cast<size_t>(B * H * (Dv + 1))), big2(big1.size());
    const bool ok1 = fuzz::accepted([&] {
      c1.step(view(q, H, D, t, 1), view(k, Hkv, D, t, 1), view(v, Hkv, Dv, t, 1), out(bad_shape ? big1 : o1), Executor(th));
    }, "SelectiveKVCache::step");
    if (!ok1) {
      fuzz::fuzz_check(snapshot(c1) == before, "a rejected step changed the cache");
      fuzz::fuzz_check(o1.untouched() && big1.untouched(), "a rejected step wrote its output");
      // Try again with good arguments (the next good step must still be exact).
      c1.step(view(q, H, D, t, 1), view(k, Hkv, D, t, 1), view(v, Hkv, Dv, t, 1), make_view(o1.data(), B, H, 1, Dv),
              Executor(1));
    } else {
      fuzz::fuzz_check(th >= 0 && !bad_shape, "step: bad input accepted");
    }
    c2.step(view(q, H, D, t, 1), view(k, Hkv, D, t, 1), view(v, Hkv, Dv, t, 1), make_view(o2.data(), B, H, 1, Dv),
            Executor(th == 2 ? 1 : 2));
    fuzz::fuzz_check(o1.guards_intact() && o2.guards_intact(), "a guard zone around a step output changed");
    fuzz::check_bit_identical(o1.data(), o2.data(), o1.size(), "step out");
    fuzz::fuzz_check(snapshot(c1) == snapshot(c2), "step: caches differ between thread counts");
    fuzz::fuzz_check(c1.size() <= budget, "the cache holds more than its budget");
    for (index_t b = 0; b < B; ++b) {
      for (index_t p : c1.last_evicted(b)) {
        fuzz::fuzz_check(p != 0, "position 0 was evicted");
        evicted[static_cast<size_t>(b)].insert(p);
      }
    }
    expect_query(o1.data(), Dv, H * Dv, t, evicted, "step differs from the dense reference with evictions");
  }
}

// ---------------------------------------------------------------- memory profile

void run_profile(FuzzInput& in) {
  const index_t B = in.range(0, 2), Hkv = in.range(0, 2);
  index_t H = Hkv * in.range(1, 3);
  if (in.byte() < 16) H = in.range(0, 3);
  const index_t N = in.pick<index_t, 6>({0, 1, 2, 5, 9, 20});
  const index_t D = in.pick<index_t, 4>({1, 4, 8, 0});
  bool bad_opt = false;
  const selective::SelectiveOptions opt = make_options(in, H, bad_opt);
  const std::uint8_t tb = in.byte();
  const double tau = tb < 200 ? 1.0 : (tb < 230 ? 0.25 * (tb - 199) : (tb < 245 ? 0.0 : std::nan("")));
  const Layout4 lq = make_layout(in, {B, H, N, D}, true), lk = make_layout(in, {B, Hkv, N, D}, true);
  std::vector<float> q(static_cast<size_t>(lq.span)), k(static_cast<size_t>(lk.span));
  for (auto& x : q) x = small_value(in);
  for (auto& x : k) x = small_value(in);
  const ConstView<float, 4> Q(data_or_null(q), lq.shape, lq.strides), K(data_or_null(k), lk.shape, lk.strides);
  Guarded<double> m(static_cast<size_t>(B * N));
  const bool ok = fuzz::accepted(
      [&] { selective::selective_memory_profile<float>(Q, K, View<double, 2>(B * N != 0 ? m.data() : nullptr, {B, N}), opt, tau); },
      "selective_memory_profile");
  fuzz::fuzz_check(m.guards_intact(), "a guard zone around m changed");
  if (!ok) {
    fuzz::fuzz_check(m.untouched(), "a rejected profile wrote m");
    return;
  }
  fuzz::fuzz_check(!bad_opt && tau > 0, "bad options accepted");
  if (H == 0 || B * N == 0) {
    for (index_t b = 0; b < B; ++b)
      for (index_t i = 0; i < N; ++i) fuzz::fuzz_check(m[static_cast<size_t>(b * N + i)] == i + 1.0, "profile without heads");
    return;
  }
  // Against the reference F (a v and an out are needed for the call).
  const index_t G = opt.group_selection_heads.empty() ? 1 : static_cast<index_t>(opt.group_selection_heads.size());
  std::vector<float> v(static_cast<size_t>(B * Hkv * N)), out(static_cast<size_t>(B * H * N));
  std::vector<double> F(static_cast<size_t>(B * G * N * N));
  selective::SelectiveOptions ro = opt;
  ro.attention.block_q = ro.attention.block_k = 0;
  selective::selective_attention_reference<float>(Q, K, make_view<const float>(v.data(), B, Hkv, N, 1),
                                       make_view(out.data(), B, H, N, 1), ro, {}, {}, make_view(F.data(), B, G, N, N));
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < N; ++i) {
      double masked = 0;
      for (index_t j = 0; j <= i; ++j) {
        double fe = std::numeric_limits<double>::infinity();
        for (index_t g = 0; g < G; ++g) fe = std::min(fe, F[static_cast<size_t>(((b * G + g) * N + i) * N + j)]);
        masked += std::min(std::max(fe, 0.0), tau) / tau;
      }
      check_close1(m[static_cast<size_t>(b * N + i)], (i + 1.0) - masked, 1e-9, "profile differs from the reference F");
    }
}

// ---------------------------------------------------------------- huge sizes

void run_huge(FuzzInput& in) {
  const index_t huge = in.huge();
  const int which = in.byte() % 4;
  // A cache whose storage overflows the index type: rejected at construction.
  const index_t B = which == 0 ? huge : 1, D = which == 1 ? huge : 4, Dv = which == 2 ? huge : 4;
  const index_t budget = which == 3 ? huge : 2 + in.range(0, 3);
  // Only sizes the library must reject (a negative extent, or bytes per slot
  // that overflow); a representable but huge batch would be a real allocation.
  const __int128 bytes = static_cast<__int128>(B) * 2 * (static_cast<__int128>(D) + Dv) * 4;
  const bool overflow = bytes > std::numeric_limits<index_t>::max();
  const bool negative = B < 1 || D < 1 || Dv < 1;
  if (which == 3 || overflow || negative) {
    const bool ok = fuzz::accepted([&] { selective::SelectiveKVCache<float> c(B, 2, 2, D, Dv, budget); }, "SelectiveKVCache huge");
    if (which < 3) fuzz::fuzz_check(!ok, "a cache with an overflowing size was accepted");
  }
  // A huge N next to H = 0 or B = 0: nothing to compute, nothing allocated.
  const index_t N = in.byte() < 128 ? (index_t(1) << in.range(20, 40)) : huge;
  const bool zero_b = in.flag();
  const index_t Bq = zero_b ? 0 : 1, Hq = zero_b ? 1 : 0;
  const float one = 1.0f;
  const ConstView<float, 4> q(&one, {Bq, Hq, N, 2}, {0, 0, 0, 0});
  const ConstView<float, 4> k(&one, {Bq, Hq > 0 ? 1 : 0, N, 2}, {0, 0, 0, 0});
  Guarded<float> out(4);
  Guarded<double> m(4);
  const int th = in.pick<int, 3>({1, 2, -1});
  const View<float, 4> o(out.data(), {Bq, Hq, N, 2}, {0, 0, 0, 0});
  const bool ok1 = fuzz::accepted([&] { selective::selective_attention<float>(q, k, k, o, {}, Executor(th)); }, "selective_attention huge");
  if (ok1) fuzz::fuzz_check(th >= 0, "a negative thread count was accepted");
  fuzz::accepted([&] { selective::selective_attention_reference<float>(q, k, k, o); }, "selective_attention_reference huge");
  fuzz::accepted([&] { selective::selective_memory_profile<float>(q, k, View<double, 2>(m.data(), {Bq, zero_b ? N : 0}, {0, 0})); },
                 "selective_memory_profile huge");
  fuzz::fuzz_check(out.untouched() && m.untouched(), "an empty output was written");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const std::uint8_t mode = in.byte();
  if (mode < 120) run_prefill(in);
  else if (mode < 200) run_cache(in);
  else if (mode < 235) run_profile(in);
  else run_huge(in);
  return 0;
}
