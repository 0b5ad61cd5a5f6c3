// SPDX-License-Identifier: MIT
// effattn: mask and score policies for the attention engine and the oracle.
//
// Every operator computes, per batch b and query head h,
//
//     out[i] = sum_j softmax_j( scale * <q_i, k_j> + score(b, h, i, j) ) v_j
//              over the keys j with allowed(b, h, i, j).
//
// A *mask policy* says which (i, j) are allowed; a *score policy* adds a bias to
// a logit. Both are cheap value types. The engine calls `bind(b, h)` once per
// (batch, head) work item and then uses the bound object:
//
//   Bound mask:
//     BlockKind classify(i0, i1, j0, j1)  rows [i0,i1) x keys [j0,j1): empty
//                                          blocks are skipped, full blocks pay
//                                          no per-element test
//     index_t key_end(i0, i1)              no row of [i0,i1) allows a key >= this
//     void apply(i, j0, j1, S* s, stride) sets s[(j-j0)*stride] = -inf where (i,j)
//                                          is not allowed (partial blocks only)
//     bool allowed(i, j)                   the predicate itself (oracle, tests)
//   Bound score (when `active` is true):
//     void apply(i, j0, j1, S* s, stride) s[(j-j0)*stride] += score(i, j)
//     double score(i, j)                   the same, one element (oracle)
//
// Optionally, a bound mask or score may also provide
//     void apply_tile(i0, i1, j0, j1, S* st, ld)   the same for a whole block,
//                                          st[(j-j0)*ld + (i-i0)] (the engine's
//                                          key-major score tile)
// which the engine prefers when present (it vectorises across queries).
//
// Policies validate their own parameters against the call's shapes in
// `check(op, B, H, Nq, Nk)` and throw effattn::invalid_argument on a mismatch.
// User policies follow the same interface.
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "../core/error.hpp"
#include "../core/view.hpp"

EFFATTN_NAMESPACE_BEGIN

namespace detail {
/// True when a bound policy P provides apply_tile for scalar S.
template <class P, class S, class = void>
struct has_apply_tile : std::false_type {};
template <class P, class S>
struct has_apply_tile<P, S,
                      std::void_t<decltype(std::declval<const P&>().apply_tile(index_t{}, index_t{}, index_t{},
                                                                                index_t{}, static_cast<S*>(nullptr),
                                                                                index_t{}))>> : std::true_type {};
}  // namespace detail

enum class BlockKind { empty, partial, full };

// ---------------------------------------------------------------- masks

/// Every key is allowed.
struct NoMask {
  struct Bound {
    index_t nk;
    BlockKind classify(index_t, index_t, index_t, index_t) const { return BlockKind::full; }
    index_t key_end(index_t, index_t) const { return nk; }
    template <class S>
    void apply(index_t, index_t, index_t, S*, index_t) const {}
    bool allowed(index_t, index_t) const { return true; }
  };
  void check(const char*, index_t, index_t, index_t, index_t) const {}
  Bound bind(index_t, index_t, index_t /*nq*/, index_t nk) const { return {nk}; }
};

/// Prefix masks: query i may see the keys j < end(i), with end non-decreasing
/// in i. Causal, offset-causal and per-query key limits are all of this form,
/// which is what makes their block classification exact and cheap.
namespace detail {
template <class Derived>
struct PrefixBound {
  BlockKind classify(index_t i0, index_t i1, index_t j0, index_t j1) const {
    const auto& d = static_cast<const Derived&>(*this);
    index_t lo = d.end_min(i0, i1), hi = d.end_max(i0, i1);
    if (j0 >= hi) return BlockKind::empty;
    if (j1 <= lo) return BlockKind::full;
    return BlockKind::partial;
  }
  index_t key_end(index_t i0, index_t i1) const { return static_cast<const Derived&>(*this).end_max(i0, i1); }
  template <class S>
  void apply(index_t i, index_t j0, index_t j1, S* s, index_t st) const {
    index_t e = static_cast<const Derived&>(*this).end(i);
    const S ninf = -std::numeric_limits<S>::infinity();
    for (index_t j = e > j0 ? e : j0; j < j1; ++j) s[(j - j0) * st] = ninf;
  }
  bool allowed(index_t i, index_t j) const { return j < static_cast<const Derived&>(*this).end(i); }
  /// Key j is masked for the queries i with end(i) <= j, a prefix of the block
  /// because end is non-decreasing: one contiguous fill per key row.
  template <class S>
  void apply_tile(index_t i0, index_t i1, index_t j0, index_t j1, S* st, index_t ld) const {
    const auto& d = static_cast<const Derived&>(*this);
    const S ninf = -std::numeric_limits<S>::infinity();
    index_t i = i0;
    for (index_t j = j0; j < j1; ++j) {
      while (i < i1 && d.end(i) <= j) ++i;  // first query that sees key j
      S* row = st + (j - j0) * ld;
      for (index_t c = 0; c < i - i0; ++c) row[c] = ninf;
    }
  }
};
inline index_t clamp_index(index_t x, index_t lo, index_t hi) { return x < lo ? lo : (x > hi ? hi : x); }
}  // namespace detail

/// Query i sees key j iff j <= i + offset (offset may be negative). With
/// offset = Nk - Nq this is "bottom-right aligned" causal attention: the last
/// query sees every key (the convention of FlashAttention >= 2.1, of decoding
/// with a KV cache, and of Perceiver AR's latents).
struct OffsetCausalMask {
  index_t offset = 0;
  struct Bound : detail::PrefixBound<Bound> {
    index_t offset, nk;
    // i >= 0, so only a large positive offset can overflow i + offset + 1;
    // any offset >= nk lets every query see every key.
    index_t end(index_t i) const { return offset >= nk ? nk : detail::clamp_index(i + offset + 1, 0, nk); }
    index_t end_min(index_t i0, index_t) const { return end(i0); }
    index_t end_max(index_t, index_t i1) const { return end(i1 - 1); }
  };
  void check(const char*, index_t, index_t, index_t, index_t) const {}
  Bound bind(index_t, index_t, index_t, index_t nk) const {
    Bound b;
    b.offset = offset;
    b.nk = nk;
    return b;
  }
};

/// Causal attention, bottom-right aligned: j <= i + (Nk - Nq). For Nq == Nk the
/// usual lower triangle.
struct CausalMask {
  using Bound = OffsetCausalMask::Bound;
  void check(const char*, index_t, index_t, index_t, index_t) const {}
  Bound bind(index_t b, index_t h, index_t nq, index_t nk) const { return OffsetCausalMask{nk - nq}.bind(b, h, nq, nk); }
};

/// Query i of batch b sees the keys j < limit(b, i). `limit` is [B, Nq]; each
/// row must be non-decreasing in i and within [0, Nk] (checked). Transfusion's
/// block-causal mask is this: limit(i) = end of i's image for a patch, i + 1
/// otherwise.
struct KeyLimitMask {
  ConstView<index_t, 2> limit;
  struct Bound : detail::PrefixBound<Bound> {
    const index_t* lim;
    index_t stride;
    index_t end(index_t i) const { return lim[i * stride]; }
    index_t end_min(index_t i0, index_t) const { return end(i0); }
    index_t end_max(index_t, index_t i1) const { return end(i1 - 1); }
  };
  void check(const char* op, index_t B, index_t, index_t nq, index_t nk) const {
    detail::check_view(limit, op, "limit", false);
    detail::check_shape(limit, op, "limit", "[B,Nq]", {B, nq});
    for (index_t b = 0; b < B; ++b)
      for (index_t i = 0; i < nq; ++i) {
        index_t e = limit(b, i);
        if (e < 0 || e > nk)
          EFFATTN_THROW(parameter_error(detail::concat(op, ": limit[", b, ",", i, "]=", e, " must be in [0, Nk=", nk, "]")));
        if (i > 0 && e < limit(b, i - 1))
          EFFATTN_THROW(parameter_error(detail::concat(op, ": limit must be non-decreasing along queries, but limit[", b,
                                                       ",", i, "]=", e, " < limit[", b, ",", i - 1, "]=",
                                                       limit(b, i - 1))));
      }
  }
  Bound bind(index_t b, index_t, index_t, index_t) const {
    Bound r;
    r.lim = limit.empty() ? limit.data() : limit.data() + b * limit.stride(0);  // no offset from an empty view's pointer
    r.stride = limit.stride(1);
    return r;
  }
};

/// Any predicate allowed(b, h, i, j). Every block is treated as partial (the
/// engine cannot know the structure), so prefer a prefix mask when one fits.
template <class Pred>
struct PredicateMask {
  Pred pred;
  struct Bound {
    const Pred* pred;
    index_t b, h, nk;
    BlockKind classify(index_t, index_t, index_t, index_t) const { return BlockKind::partial; }
    index_t key_end(index_t, index_t) const { return nk; }
    template <class S>
    void apply(index_t i, index_t j0, index_t j1, S* s, index_t st) const {
      const S ninf = -std::numeric_limits<S>::infinity();
      for (index_t j = j0; j < j1; ++j)
        if (!(*pred)(b, h, i, j)) s[(j - j0) * st] = ninf;
    }
    bool allowed(index_t i, index_t j) const { return (*pred)(b, h, i, j); }
  };
  void check(const char*, index_t, index_t, index_t, index_t) const {}
  Bound bind(index_t b, index_t h, index_t, index_t nk) const { return Bound{&pred, b, h, nk}; }
};
template <class Pred>
PredicateMask<Pred> make_predicate_mask(Pred p) {
  return PredicateMask<Pred>{std::move(p)};
}

// ---------------------------------------------------------------- scores

/// No bias.
struct NoScore {
  static constexpr bool active = false;
  struct Bound {
    template <class S>
    void apply(index_t, index_t, index_t, S*, index_t) const {}
    double score(index_t, index_t) const { return 0.0; }
  };
  void check(const char*, index_t, index_t, index_t, index_t) const {}
  Bound bind(index_t, index_t) const { return {}; }
};

/// A per-key additive bias, bias[b, j], shared by all heads and queries,
/// stored as Bias (float: KeyBiasScore; double: KeyBiasScoreT<double>, which
/// adds a double bias to double logits without rounding it to float).
/// ToMe's proportional attention uses bias = log(size).
template <class Bias>
struct KeyBiasScoreT {
  ConstView<Bias, 2> bias;
  static constexpr bool active = true;
  struct Bound {
    const Bias* p;
    index_t stride;
    template <class S>
    void apply(index_t, index_t j0, index_t j1, S* s, index_t st) const {
      for (index_t j = j0; j < j1; ++j) s[(j - j0) * st] += static_cast<S>(p[j * stride]);
    }
    double score(index_t, index_t j) const { return p[j * stride]; }
    /// One broadcast add per key row of the block.
    template <class S>
    void apply_tile(index_t i0, index_t i1, index_t j0, index_t j1, S* st, index_t ld) const {
      for (index_t j = j0; j < j1; ++j) {
        const S bj = static_cast<S>(p[j * stride]);
        S* row = st + (j - j0) * ld;
        for (index_t c = 0; c < i1 - i0; ++c) row[c] += bj;
      }
    }
  };
  void check(const char* op, index_t B, index_t, index_t, index_t nk) const {
    detail::check_view(bias, op, "bias", false);
    detail::check_shape(bias, op, "bias", "[B,Nk]", {B, nk});
  }
  Bound bind(index_t b, index_t) const {
    // No offset from an empty view's pointer (it may be null): with Nk = 0
    // the bound score is never read.
    return Bound{bias.empty() ? bias.data() : bias.data() + b * bias.stride(0), bias.stride(1)};
  }
};
using KeyBiasScore = KeyBiasScoreT<float>;

/// Any bias score(b, h, i, j), added in float.
template <class F>
struct FunctorScore {
  F f;
  static constexpr bool active = true;
  struct Bound {
    const F* f;
    index_t b, h;
    template <class S>
    void apply(index_t i, index_t j0, index_t j1, S* s, index_t st) const {
      for (index_t j = j0; j < j1; ++j) s[(j - j0) * st] += static_cast<S>((*f)(b, h, i, j));
    }
    double score(index_t i, index_t j) const { return static_cast<double>((*f)(b, h, i, j)); }
  };
  void check(const char*, index_t, index_t, index_t, index_t) const {}
  Bound bind(index_t b, index_t h) const { return Bound{&f, b, h}; }
};
template <class F>
FunctorScore<F> make_functor_score(F f) {
  return FunctorScore<F>{std::move(f)};
}

// ---------------------------------------------------------------- key windows

/// The keys of a call are the keys [key_begin, key_begin + Nk) of a sequence of
/// total_keys keys (one shard of a K/V sharded across processes, or one block
/// of a ring pass), and `mask` speaks in the sequence's positions: query i sees
/// local key j iff mask allows (i, key_begin + j) for a call with total_keys
/// keys. A bottom-right CausalMask thus stays causal against the whole
/// sequence, and the inner policy's block classification (empty blocks
/// skipped, full blocks unmasked) carries over shifted, so a shard the mask
/// empties for a query tile costs nothing. check() demands
/// 0 <= key_begin and key_begin + Nk <= total_keys and checks the inner policy
/// against total_keys.
template <class Mask>
struct KeyWindowMask {
  Mask mask;
  index_t key_begin = 0;
  index_t total_keys = 0;

  using Inner = decltype(std::declval<const Mask&>().bind(index_t{}, index_t{}, index_t{}, index_t{}));
  struct Bound {
    Inner inner;
    index_t k0, nk;
    BlockKind classify(index_t i0, index_t i1, index_t j0, index_t j1) const {
      return inner.classify(i0, i1, j0 + k0, j1 + k0);
    }
    index_t key_end(index_t i0, index_t i1) const { return detail::clamp_index(inner.key_end(i0, i1) - k0, 0, nk); }
    template <class S>
    void apply(index_t i, index_t j0, index_t j1, S* s, index_t st) const {
      inner.apply(i, j0 + k0, j1 + k0, s, st);  // writes s[(j - j0) * st]: offsets are window-relative
    }
    bool allowed(index_t i, index_t j) const { return inner.allowed(i, j + k0); }
    template <class S, class B = Inner, std::enable_if_t<detail::has_apply_tile<B, S>::value, int> = 0>
    void apply_tile(index_t i0, index_t i1, index_t j0, index_t j1, S* st, index_t ld) const {
      inner.apply_tile(i0, i1, j0 + k0, j1 + k0, st, ld);
    }
  };
  void check(const char* op, index_t B, index_t H, index_t nq, index_t nk) const {
    if (key_begin < 0 || total_keys < 0 || nk > total_keys || key_begin > total_keys - nk)
      EFFATTN_THROW(parameter_error(detail::concat(op, ": key window [", key_begin, ", ", key_begin, " + Nk=", nk,
                                                   ") must lie within [0, total_keys=", total_keys, ")")));
    mask.check(op, B, H, nq, total_keys);
  }
  Bound bind(index_t b, index_t h, index_t nq, index_t nk) const {
    return Bound{mask.bind(b, h, nq, total_keys), key_begin, nk};
  }
};
template <class Mask>
KeyWindowMask<Mask> make_key_window_mask(Mask mask, index_t key_begin, index_t total_keys) {
  return KeyWindowMask<Mask>{std::move(mask), key_begin, total_keys};
}

/// The score policy of a key window (see KeyWindowMask): `score` speaks in
/// the sequence's key positions (a KeyBiasScore's bias is [B, total_keys]).
template <class Score>
struct KeyWindowScore {
  Score score;
  index_t key_begin = 0;
  index_t total_keys = 0;
  static constexpr bool active = Score::active;

  using Inner = decltype(std::declval<const Score&>().bind(index_t{}, index_t{}));
  struct Bound {
    Inner inner;
    index_t k0;
    template <class S>
    void apply(index_t i, index_t j0, index_t j1, S* s, index_t st) const {
      inner.apply(i, j0 + k0, j1 + k0, s, st);
    }
    double score(index_t i, index_t j) const { return inner.score(i, j + k0); }
    template <class S, class B = Inner, std::enable_if_t<detail::has_apply_tile<B, S>::value, int> = 0>
    void apply_tile(index_t i0, index_t i1, index_t j0, index_t j1, S* st, index_t ld) const {
      inner.apply_tile(i0, i1, j0 + k0, j1 + k0, st, ld);
    }
  };
  void check(const char* op, index_t B, index_t H, index_t nq, index_t nk) const {
    if (key_begin < 0 || total_keys < 0 || nk > total_keys || key_begin > total_keys - nk)
      EFFATTN_THROW(parameter_error(detail::concat(op, ": key window [", key_begin, ", ", key_begin, " + Nk=", nk,
                                                   ") must lie within [0, total_keys=", total_keys, ")")));
    score.check(op, B, H, nq, total_keys);
  }
  Bound bind(index_t b, index_t h) const { return Bound{score.bind(b, h), key_begin}; }
};
template <class Score>
KeyWindowScore<Score> make_key_window_score(Score score, index_t key_begin, index_t total_keys) {
  return KeyWindowScore<Score>{std::move(score), key_begin, total_keys};
}

/// True when M has a mask policy's interface: check(op, B, H, Nq, Nk) and
/// bind(b, h, Nq, Nk) returning a bound mask with classify, key_end, allowed.
template <class M, class = void>
struct is_mask_policy : std::false_type {};
template <class M>
struct is_mask_policy<
    M, std::void_t<decltype(std::declval<const M&>().check("", index_t{}, index_t{}, index_t{}, index_t{})),
                   decltype(std::declval<const M&>().bind(index_t{}, index_t{}, index_t{}, index_t{}).classify(
                       index_t{}, index_t{}, index_t{}, index_t{})),
                   decltype(std::declval<const M&>().bind(index_t{}, index_t{}, index_t{}, index_t{}).key_end(index_t{},
                                                                                                               index_t{})),
                   decltype(std::declval<const M&>().bind(index_t{}, index_t{}, index_t{}, index_t{}).allowed(index_t{},
                                                                                                               index_t{}))>>
    : std::true_type {};

/// True when S has a score policy's interface: a constexpr bool `active`,
/// check(op, B, H, Nq, Nk) and bind(b, h) returning a bound score with score(i, j).
template <class S, class = void>
struct is_score_policy : std::false_type {};
template <class S>
struct is_score_policy<
    S, std::void_t<decltype(bool{S::active}),
                   decltype(std::declval<const S&>().check("", index_t{}, index_t{}, index_t{}, index_t{})),
                   decltype(std::declval<const S&>().bind(index_t{}, index_t{}).score(index_t{}, index_t{}))>>
    : std::true_type {};

EFFATTN_NAMESPACE_END
