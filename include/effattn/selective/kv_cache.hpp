// SPDX-License-Identifier: MIT
// effattn::selective: decoding with selective attention and a pruned KV cache.
//
// One SelectiveKVCache holds one layer's keys and values for B sequences, at
// most `budget` tokens each, plus the running F of every cached token (the sum
// of the selection rows of all queries so far, float64). A decoding step for
// the token at position t:
//
//   1. if the cache holds `budget` tokens, evict the cached token with the
//      largest F (never position 0; ties: the oldest position goes first);
//   2. store the new token's k, v with F = 0 (nobody has masked it yet);
//   3. attend: out_h = softmax(scale * q_h k^T - F) v over the cached tokens
//      (the engine's row path with split-KV, through effattn::attention);
//   4. add the token's own selection row: F[j] += ReLU(scale * <q_s, k_j>) for
//      every cached j except position 0 and itself.
//
// Memory is O(budget) per sequence and head whatever the number of steps.
// Without pruning (budget >= number of tokens) the steps reproduce
// selective_attention() on the whole sequence; with pruning they equal dense
// selective attention where query t also gets -inf on exactly the tokens
// evicted up to step t (tests/selective check both).
//
// With selection groups (SelectiveOptions::group_selection_heads) every group
// keeps its own F, and a token's eviction score is the smallest of its group
// F's: a token is dropped only as far as every group has masked it.
#pragma once

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "../attention/engine.hpp"
#include "prefill.hpp"
#include "selection.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace selective {
namespace detail {

/// Score policy of the cache: adds bias[(b * G + h / hpg) * ld + j] = -F.
template <class S>
struct GroupKeyBias {
  const S* bias;
  index_t ng, hpg, ld;
  static constexpr bool active = true;
  struct Bound {
    const S* p;
    void apply(index_t, index_t j0, index_t j1, S* s, index_t st) const {
      for (index_t j = j0; j < j1; ++j) s[(j - j0) * st] += p[j];
    }
    double score(index_t, index_t j) const { return p[j]; }
  };
  void check(const char*, index_t, index_t, index_t, index_t) const {}
  Bound bind(index_t b, index_t h) const { return Bound{bias + (b * ng + h / hpg) * ld}; }
};

}  // namespace detail

/// One layer's pruned KV cache for selective-attention decoding (see the file
/// comment for the algorithm). T is float or double.
template <class T = float>
class SelectiveKVCache {
 public:
  /// The accumulation type (float for float, double for double).
  using S = acc_t<T>;

  /// batch B, query heads H, key/value heads Hkv (H a multiple of Hkv), head
  /// dims D and Dv, `budget` = most tokens kept per sequence (>= 2: the first
  /// token and the current one). opt.attention.scale (0: 1/sqrt(D)), its
  /// backend and the selection head(s) are checked here; the tile sizes
  /// opt.attention.block_q / block_k only affect (and are checked by) prefill().
  SelectiveKVCache(index_t batch, index_t heads, index_t kv_heads, index_t head_dim, index_t value_dim,
                   index_t budget, SelectiveOptions opt = {})
      : B_(batch), H_(heads), Hkv_(kv_heads), D_(head_dim), Dv_(value_dim), budget_(budget), opt_(std::move(opt)) {
    const char* op = "SelectiveKVCache";
    effattn::detail::require(B_ >= 1, op, "batch", "must be >= 1, got ", B_);
    effattn::detail::require(H_ >= 1, op, "heads", "must be >= 1, got ", H_);
    effattn::detail::require(Hkv_ >= 1 && H_ % Hkv_ == 0, op, "kv_heads", "must be >= 1 and divide heads=", H_, ", got ", Hkv_);
    effattn::detail::require(D_ >= 1, op, "head_dim", "must be >= 1, got ", D_);
    effattn::detail::require(Dv_ >= 1, op, "value_dim", "must be >= 1, got ", Dv_);
    effattn::detail::require(budget_ >= 2, op, "budget", "must be >= 2 (the first token and the current one), got ", budget_);
    const double scale_opt = opt_.attention.scale;
    effattn::detail::require(std::isfinite(scale_opt) && scale_opt >= 0, op, "scale",
                             "must be finite and > 0 (or 0 for 1/sqrt(D)), got ", scale_opt);
    effattn::detail::require(opt_.attention.backend == Backend::tiled || opt_.attention.backend == Backend::reference,
                             op, "backend", "is unknown: ", static_cast<int>(opt_.attention.backend));
    sel_ = detail::selection_heads(opt_, H_, op);
    ng_ = static_cast<index_t>(sel_.size());
    scale_ = scale_opt == 0 ? 1.0 / std::sqrt(static_cast<double>(D_)) : scale_opt;
    // The storage of one slot across the batch must fit the index type in
    // bytes (each growth checks its own size again, see check_capacity()).
    {
      namespace ed = effattn::detail;
      const index_t kv = ed::checked_add(
          ed::checked_product(op, "key bytes per slot B * Hkv * D", B_, Hkv_, D_, index_t(sizeof(T))),
          ed::checked_product(op, "value bytes per slot B * Hkv * Dv", B_, Hkv_, Dv_, index_t(sizeof(T))), op,
          "bytes per slot");
      const index_t per_b = ed::checked_add(ed::checked_mul(ng_, index_t(sizeof(double) + sizeof(S)), op, "F bytes per slot"),
                                            index_t(sizeof(index_t)), op, "bytes per slot");
      slot_bytes_ = ed::checked_add(kv, ed::checked_product(op, "F, bias and position bytes per slot", B_, per_b), op,
                                    "bytes per slot");
      ed::checked_product(op, "bookkeeping bytes B * sizeof(vector)", B_, index_t(sizeof(std::vector<index_t>)));
    }
    evicted_.resize(static_cast<size_t>(B_));
    qsel_.resize(static_cast<size_t>(D_));
  }

  index_t batch() const { return B_; }
  index_t budget() const { return budget_; }
  /// Tokens currently cached per sequence (the same for every sequence).
  index_t size() const { return n_; }
  /// Tokens seen so far: the position the next step() gets.
  index_t tokens_seen() const { return seen_; }
  /// Number of selection groups (1 unless group_selection_heads is set).
  index_t groups() const { return ng_; }
  /// Bytes of key/value storage currently allocated (grows with the cached
  /// tokens up to `budget`, then stays).
  size_t kv_bytes() const { return (k_.size() + v_.size()) * sizeof(T); }
  /// Bytes of the cache's storage (K, V, F, bias, positions).
  size_t total_bytes() const {
    return kv_bytes() + f_.size() * sizeof(double) + bias_.size() * sizeof(S) + pos_.size() * sizeof(index_t);
  }
  /// Positions of the tokens cached for sequence b, in slot order.
  std::vector<index_t> positions(index_t b) const {
    check_b(b, "positions");
    return std::vector<index_t>(pos_.begin() + b * cap_, pos_.begin() + b * cap_ + n_);
  }
  /// Running F of cached slot `slot` of sequence b and group g (sum of the
  /// selection rows of every query so far).
  double f(index_t b, index_t slot, index_t g = 0) const {
    check_b(b, "f");
    effattn::detail::require(slot >= 0 && slot < n_, "SelectiveKVCache::f", "slot", "must be in [0, ", n_, "), got ", slot);
    effattn::detail::require(g >= 0 && g < ng_, "SelectiveKVCache::f", "g", "must be in [0, ", ng_, "), got ", g);
    return f_[static_cast<size_t>((b * ng_ + g) * cap_ + slot)];
  }
  /// Positions evicted from sequence b by the last prefill() or step().
  const std::vector<index_t>& last_evicted(index_t b) const {
    check_b(b, "last_evicted");
    return evicted_[static_cast<size_t>(b)];
  }
  /// Forgets everything (keeps the allocation).
  void reset() {
    n_ = 0;
    seen_ = 0;
    for (auto& e : evicted_) e.clear();
  }

  /// Processes a prompt of P tokens on an empty cache: exact (unpruned)
  /// selective attention over the prompt (the tiled prefill), then keeps the
  /// first token and the budget-1 prompt tokens with the smallest F (the
  /// P - budget others are evicted: largest F first, ties oldest first).
  /// q [B,H,P,D], k [B,Hkv,P,D], v [B,Hkv,P,Dv], out [B,H,P,Dv], optional
  /// lse [B,H,P]. Temporary memory O(P) per sequence. Throws if the cache is
  /// not empty or on bad shapes, before writing anything.
  void prefill(effattn::detail::identity_t<ConstView<T, 4>> q, effattn::detail::identity_t<ConstView<T, 4>> k,
               effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out, const Executor& ex = {},
               effattn::detail::identity_t<View<S, 3>> lse = {}) {
    const char* op = "SelectiveKVCache::prefill";
    effattn::detail::check_executor(ex, op);
    check_inputs(op, q, k, v, out, lse, q.dim(2));
    {  // the prefill's own options (tile sizes), checked before anything is written
      std::vector<index_t> sel;
      detail::check_selective_args(op, q, k, v, out, lse, opt_, effattn::detail::attention_query_tile_quantum(), sel);
    }
    effattn::detail::require(seen_ == 0, op, "cache", "must be empty (tokens_seen()=", seen_, "); use step() to continue");
    const index_t P = q.dim(2);
    if (P == 0) return;  // an empty prompt changes nothing
    const index_t keep = std::min(P, budget_);
    check_capacity(keep, op);
    std::vector<double> fn(static_cast<size_t>(effattn::detail::checked_product(op, "F rows B * G * P", B_, ng_, P)));
    Storage grown;
    if (keep > cap_) grown = grow(keep);  // allocated before anything is written; taken after
    selective_attention<T>(q, k, v, out, opt_, ex, lse, View<double, 3>(fn.data(), {B_, ng_, P}));
    if (keep > cap_) commit(grown);
    for (auto& e : evicted_) e.clear();
    std::vector<index_t> order(static_cast<size_t>(P));
    for (index_t b = 0; b < B_; ++b) {
      // Keep position 0, then the smallest eviction scores (ties: newest kept).
      std::iota(order.begin(), order.end(), index_t(0));
      auto score = [&](index_t j) { return evict_score(fn.data() + b * ng_ * P, P, j); };
      std::stable_sort(order.begin() + 1, order.end(), [&](index_t x, index_t y) {
        const double sx = score(x), sy = score(y);
        return sx != sy ? sx > sy : x < y;  // eviction order: largest F first, then oldest
      });
      // order[1 .. P-keep] are evicted; the kept ones are stored by position.
      std::vector<index_t> kept(order.begin() + (P - keep) + 1, order.end());
      kept.push_back(0);
      std::sort(kept.begin(), kept.end());
      for (index_t e = 1; e <= P - keep; ++e) evicted_[static_cast<size_t>(b)].push_back(order[e]);
      for (index_t s = 0; s < keep; ++s) {
        const index_t j = kept[static_cast<size_t>(s)];
        store_token(b, s, j, k, v, j);
        for (index_t g = 0; g < ng_; ++g) set_f(b, g, s, fn[static_cast<size_t>((b * ng_ + g) * P + j)]);
      }
    }
    n_ = keep;
    seen_ = P;
  }

  /// One decoding step for the next token (position tokens_seen()):
  /// q [B,H,1,D], k [B,Hkv,1,D], v [B,Hkv,1,Dv], out [B,H,1,Dv], optional
  /// lse [B,H,1]. Evicts one token per sequence first when the cache is full.
  /// Throws on bad shapes before changing the cache or writing anything.
  void step(effattn::detail::identity_t<ConstView<T, 4>> q, effattn::detail::identity_t<ConstView<T, 4>> k,
            effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out, const Executor& ex = {},
            effattn::detail::identity_t<View<S, 3>> lse = {}) {
    const char* op = "SelectiveKVCache::step";
    effattn::detail::check_executor(ex, op);
    check_inputs(op, q, k, v, out, lse, 1);
    const index_t t = seen_;
    index_t slot_all = n_;
    if (n_ == budget_) {
      slot_all = -1;  // evict: per-sequence slot
    } else {
      check_capacity(n_ + 1, op);
      if (n_ + 1 > cap_) {
        Storage grown = grow(n_ + 1);  // may throw bad_alloc: the cache is still unchanged
        commit(grown);
      }
    }
    // Nothing below throws: the state changes from here on.
    for (auto& e : evicted_) e.clear();
    for (index_t b = 0; b < B_; ++b) {
      index_t slot = slot_all;
      if (slot < 0) {
        slot = victim(b);
        evicted_[static_cast<size_t>(b)].push_back(pos_[static_cast<size_t>(b * cap_ + slot)]);
      }
      store_token(b, slot, t, k, v, 0);
      for (index_t g = 0; g < ng_; ++g) set_f(b, g, slot, 0.0);
    }
    if (slot_all >= 0) ++n_;
    ++seen_;

    // Attention over the cached tokens (slot order: attention does not care).
    const ConstView<T, 4> kc(k_.data(), {B_, Hkv_, n_, D_}, {Hkv_ * cap_ * D_, cap_ * D_, D_, 1});
    const ConstView<T, 4> vc(v_.data(), {B_, Hkv_, n_, Dv_}, {Hkv_ * cap_ * Dv_, cap_ * Dv_, Dv_, 1});
    AttentionOptions ao;  // the tile sizes are prefill's: a decoding step runs the engine's decode path
    ao.scale = scale_;
    ao.backend = opt_.attention.backend;
    // (The engine runs a decode step this small on the calling thread.)
    attention<T>(q, kc, vc, out, NoMask{}, detail::GroupKeyBias<S>{bias_.data(), ng_, H_ / ng_, cap_}, ao, ex, lse);

    // The token's own selection row, into F: the selection head's query row,
    // scaled once (as the prefill does), against every cached key row.
    const index_t G = H_ / Hkv_;
    const S sc = static_cast<S>(scale_);
    S* qs = qsel_.data();
    for (index_t b = 0; b < B_; ++b)
      for (index_t g = 0; g < ng_; ++g) {
        const index_t hs = sel_[static_cast<size_t>(g)], hk = hs / G;
        for (index_t e = 0; e < D_; ++e) qs[e] = static_cast<S>(q(b, hs, 0, e)) * sc;
        for (index_t s = 0; s < n_; ++s) {
          const index_t j = pos_[static_cast<size_t>(b * cap_ + s)];
          if (j == 0 || j == t) continue;
          const T* kr = k_.data() + ((b * Hkv_ + hk) * cap_ + s) * D_;
          S x = 0;
          for (index_t e = 0; e < D_; ++e) x += qs[e] * static_cast<S>(kr[e]);
          if (x > S(0)) set_f(b, g, s, f_[static_cast<size_t>((b * ng_ + g) * cap_ + s)] + static_cast<double>(x));
        }
      }
  }

 private:
  void check_b(index_t b, const char* what) const {
    if (b < 0 || b >= B_)
      EFFATTN_THROW(parameter_error(effattn::detail::concat("SelectiveKVCache::", what, ": b must be in [0, ", B_, "), got ", b)));
  }

  /// The cache's own shapes first (so that a wrong k or v is named as such),
  /// then the generic attention checks: views, out [B,H,N,Dv] and lse [B,H,N]
  /// against q and v, no output sharing memory with anything else.
  template <class L>
  void check_inputs(const char* op, const ConstView<T, 4>& q, const ConstView<T, 4>& k, const ConstView<T, 4>& v,
                    const View<T, 4>& out, const View<L, 3>& lse, index_t n) const {
    effattn::detail::check_shape(q, op, "q", "[B,H,N,D]", {B_, H_, n, D_});
    effattn::detail::check_shape(k, op, "k", "[B,Hkv,N,D]", {B_, Hkv_, n, D_});
    effattn::detail::check_shape(v, op, "v", "[B,Hkv,N,Dv]", {B_, Hkv_, n, Dv_});
    AttentionOptions ao;  // scale_ is valid; the tile sizes are prefill's (checked there)
    ao.scale = scale_;
    effattn::detail::check_attention_args(op, q, k, v, out, lse, ao, 1);
  }

  /// Eviction score of token j from F rows fr[g * stride + j]: the smallest F
  /// over the groups.
  double evict_score(const double* fr, index_t stride, index_t j) const {
    double s = fr[j];
    for (index_t g = 1; g < ng_; ++g) s = std::min(s, fr[g * stride + j]);
    return s;
  }

  /// The slot to evict in sequence b: the largest eviction score, never
  /// position 0, ties broken toward the oldest position.
  index_t victim(index_t b) const {
    index_t best = -1;
    double bs = -std::numeric_limits<double>::infinity();
    index_t bp = 0;
    for (index_t s = 0; s < n_; ++s) {
      const index_t j = pos_[static_cast<size_t>(b * cap_ + s)];
      if (j == 0) continue;
      const double sc = evict_score(f_.data() + b * ng_ * cap_ + s, cap_, 0);
      if (best < 0 || sc > bs || (sc == bs && j < bp)) {
        best = s;
        bs = sc;
        bp = j;
      }
    }
    return best;
  }

  void set_f(index_t b, index_t g, index_t s, double x) {
    f_[static_cast<size_t>((b * ng_ + g) * cap_ + s)] = x;
    bias_[static_cast<size_t>((b * ng_ + g) * cap_ + s)] = static_cast<S>(-x);
  }

  /// Copies token `src` of k, v (sequence b) into slot s, at position pos.
  void store_token(index_t b, index_t s, index_t pos, const ConstView<T, 4>& k, const ConstView<T, 4>& v, index_t src) {
    for (index_t h = 0; h < Hkv_; ++h) {
      T* kd = k_.data() + ((b * Hkv_ + h) * cap_ + s) * D_;
      T* vd = v_.data() + ((b * Hkv_ + h) * cap_ + s) * Dv_;
      for (index_t e = 0; e < D_; ++e) kd[e] = k(b, h, src, e);
      for (index_t e = 0; e < Dv_; ++e) vd[e] = v(b, h, src, e);
    }
    pos_[static_cast<size_t>(b * cap_ + s)] = pos;
  }

  /// The capacity grow(n) makes.
  index_t grown_capacity(index_t n) const {
    if (n <= cap_) return cap_;
    return std::min(budget_, std::max(n, cap_ > budget_ / 2 ? budget_ : 2 * cap_));
  }
  /// Throws shape_error when the storage for grow(n) overflows the index type.
  void check_capacity(index_t n, const char* op) const {
    effattn::detail::checked_mul(slot_bytes_, grown_capacity(n), op, "cache bytes per slot * slots");
  }

  /// The cache's storage at some capacity.
  struct Storage {
    index_t cap = 0;
    std::vector<T> k, v;
    std::vector<double> f;
    std::vector<S> bias;
    std::vector<index_t> pos;
  };

  /// New storage of capacity grown_capacity(n) (doubling, at most budget)
  /// holding copies of the cached tokens; the cache itself is not touched, so
  /// a failed allocation leaves it as it was. Call check_capacity(n) first.
  Storage grow(index_t n) const {
    Storage st;
    const index_t cap = st.cap = grown_capacity(n);
    st.k.resize(static_cast<size_t>(B_ * Hkv_ * cap * D_));
    st.v.resize(static_cast<size_t>(B_ * Hkv_ * cap * Dv_));
    st.f.resize(static_cast<size_t>(B_ * ng_ * cap));
    st.bias.resize(st.f.size());
    st.pos.resize(static_cast<size_t>(B_ * cap));
    for (index_t b = 0; b < B_; ++b) {
      for (index_t h = 0; h < Hkv_; ++h) {
        std::copy_n(k_.data() + (b * Hkv_ + h) * cap_ * D_, n_ * D_, st.k.data() + (b * Hkv_ + h) * cap * D_);
        std::copy_n(v_.data() + (b * Hkv_ + h) * cap_ * Dv_, n_ * Dv_, st.v.data() + (b * Hkv_ + h) * cap * Dv_);
      }
      for (index_t g = 0; g < ng_; ++g) {
        std::copy_n(f_.data() + (b * ng_ + g) * cap_, n_, st.f.data() + (b * ng_ + g) * cap);
        std::copy_n(bias_.data() + (b * ng_ + g) * cap_, n_, st.bias.data() + (b * ng_ + g) * cap);
      }
      std::copy_n(pos_.data() + b * cap_, n_, st.pos.data() + b * cap);
    }
    return st;
  }
  /// Takes storage made by grow() (never throws).
  void commit(Storage& st) noexcept {
    k_.swap(st.k);
    v_.swap(st.v);
    f_.swap(st.f);
    bias_.swap(st.bias);
    pos_.swap(st.pos);
    cap_ = st.cap;
  }

  index_t B_, H_, Hkv_, D_, Dv_, budget_;
  SelectiveOptions opt_;
  std::vector<index_t> sel_;
  index_t ng_ = 1;
  double scale_ = 1;
  index_t slot_bytes_ = 0;        // bytes of one slot across the batch (K, V, F, bias, position)
  index_t cap_ = 0, n_ = 0, seen_ = 0;
  std::vector<T> k_, v_;          // [B][Hkv][cap][D], [B][Hkv][cap][Dv]
  std::vector<double> f_;         // [B][G][cap] running F per slot
  std::vector<S> bias_;           // [B][G][cap] = -F, what the engine adds
  std::vector<index_t> pos_;      // [B][cap] token position of each slot
  std::vector<S> qsel_;           // [D] step(): the scaled query row of one selection head
  std::vector<std::vector<index_t>> evicted_;
};

}  // namespace selective

// ------------------------------------------------ deprecated effattn:: name
// (see selection.hpp)

template <class T = float>
using SelectiveKVCache [[deprecated("use effattn::selective::SelectiveKVCache")]] = selective::SelectiveKVCache<T>;

EFFATTN_NAMESPACE_END
