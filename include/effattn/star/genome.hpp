// SPDX-License-Identifier: MIT
// effattn::star: the STAR backbone genome (Thomas et al., "STAR: Synthesis of
// Tailored Architectures", ICLR 2025, arXiv 2411.17800): LIV classes, the
// five-integer-per-slot backbone genome, validation, a deterministic repair,
// the two baselines, and the analytic parameter / cache cost model.
//
// Every semantic decision (gene ranges, what each sharing strategy shares,
// which family may share what, the cost formulas) is written down in
// docs/star.md; the comments here restate the rules the code implements.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

/// The LIV classes (the paper's numbering, 1-based). 10-17 are the
/// differential variants of 1-8: y = LIV_a(x) - LIV_b(x), two complete LIVs.
enum class LivClass : int {
  SA1 = 1,        ///< softmax attention (MHA)
  SA2 = 2,        ///< softmax attention, q/k/v featurizer followed by a depthwise short conv
  SA3 = 3,        ///< softmax attention, K/V shared by 4 query heads (GQA, H/4 K/V heads)
  SA4 = 4,        ///< softmax attention, K/V shared by 2 query heads (GQA, H/2 K/V heads)
  Rec1 = 5,       ///< input-varying diagonal recurrence, state expansion 16
  Rec2 = 6,       ///< input-varying diagonal recurrence, state expansion 2
  GConv1 = 7,     ///< gated short convolution (LFM2)
  GConv2 = 8,     ///< gated long convolution, implicit kernel (Hyena-like)
  GMemless = 9,   ///< SwiGLU
  DiffSA1 = 10,
  DiffSA2 = 11,
  DiffSA3 = 12,
  DiffSA4 = 13,
  DiffRec1 = 14,
  DiffRec2 = 15,
  DiffGConv1 = 16,
  DiffGConv2 = 17,
};

constexpr int kNumLivClasses = 17;
/// Genes per slot: class, featurizer-sharing group, featurizer-sharing
/// strategy, feature-group-sharing group, feature-group-sharing strategy.
constexpr int kGenesPerSlot = 5;
/// The paper's backbone depth.
constexpr int kDefaultSlots = 24;

/// The operator family of a class: what it may share.
enum class LivFamily { attention, recurrence, convolution, memoryless };

/// Featurizer-sharing strategy (gene 3; 1-based like every gene).
enum class FeaturizerSharing : int {
  none = 1,     ///< private featurizer weights (the group gene is ignored)
  all = 2,      ///< every featurizer weight shared with the group
  partial = 3,  ///< only the family's "selection" featurizers (docs/star.md): attention K,V;
                ///< recurrence a,B,C; convolution B,C (gates); memoryless gate
};
/// Feature-group-sharing strategy (gene 5). Only the attention family has
/// computed features worth sharing across layers (its K/V cache).
enum class FeatureSharing : int {
  none = 1,  ///< the slot computes all its own features
  kv = 2,    ///< K and V come from the group's first slot (cross-layer KV sharing)
  qk = 3,    ///< Q and K come from the group's first slot (shared attention scores; V own)
};
constexpr int kNumFeaturizerStrategies = 3;
constexpr int kNumFeatureStrategies = 3;

inline bool is_differential(LivClass c) { return static_cast<int>(c) >= 10; }
/// The base class (1-9) of a class: 10-17 map to 1-8.
inline LivClass base_class(LivClass c) {
  const int v = static_cast<int>(c);
  return v >= 10 ? static_cast<LivClass>(v - 9) : c;
}
inline LivFamily family(LivClass c) {
  switch (base_class(c)) {
    case LivClass::SA1: case LivClass::SA2: case LivClass::SA3: case LivClass::SA4: return LivFamily::attention;
    case LivClass::Rec1: case LivClass::Rec2: return LivFamily::recurrence;
    case LivClass::GConv1: case LivClass::GConv2: return LivFamily::convolution;
    default: return LivFamily::memoryless;
  }
}
inline const char* class_name(LivClass c) {
  static const char* const names[] = {"?",       "SA-1",      "SA-2",      "SA-3",      "SA-4",     "Rec-1",
                                      "Rec-2",   "GConv-1",   "GConv-2",   "GMemless",  "Diff-SA-1", "Diff-SA-2",
                                      "Diff-SA-3", "Diff-SA-4", "Diff-Rec-1", "Diff-Rec-2", "Diff-GConv-1",
                                      "Diff-GConv-2"};
  const int v = static_cast<int>(c);
  return v >= 1 && v <= kNumLivClasses ? names[v] : names[0];
}

/// The five genes of one slot (values as given; a Genome may be invalid until
/// validate() / repair()).
struct SlotGenes {
  std::int64_t cls = 1;           ///< LivClass, [1, 17]
  std::int64_t fs_group = 1;      ///< featurizer-sharing group, [1, slots]
  std::int64_t fs_strategy = 1;   ///< FeaturizerSharing, [1, 3]
  std::int64_t fg_group = 1;      ///< feature-group-sharing group, [1, slots]
  std::int64_t fg_strategy = 1;   ///< FeatureSharing, [1, 3]; != 1 only for the attention family

  std::int64_t& gene(int g) {
    return g == 0 ? cls : g == 1 ? fs_group : g == 2 ? fs_strategy : g == 3 ? fg_group : fg_strategy;
  }
  std::int64_t gene(int g) const { return const_cast<SlotGenes*>(this)->gene(g); }
  bool operator==(const SlotGenes& o) const {
    return cls == o.cls && fs_group == o.fs_group && fs_strategy == o.fs_strategy && fg_group == o.fg_group &&
           fg_strategy == o.fg_strategy;
  }
  bool operator!=(const SlotGenes& o) const { return !(*this == o); }
};

inline const char* gene_name(int g) {
  static const char* const names[] = {"class", "featurizer-sharing group", "featurizer-sharing strategy",
                                      "feature-group-sharing group", "feature-group-sharing strategy"};
  return g >= 0 && g < kGenesPerSlot ? names[g] : "?";
}

/// The inclusive range [lo, hi] of gene g in a genome of `slots` slots. The
/// range is the same for every slot and every class (so mutation can draw
/// from it); the family-dependent rules are checked by validate().
inline std::pair<std::int64_t, std::int64_t> gene_range(int g, index_t slots) {
  switch (g) {
    case 0: return {1, kNumLivClasses};
    case 1: case 3: return {1, static_cast<std::int64_t>(slots)};
    case 2: return {1, kNumFeaturizerStrategies};
    default: return {1, kNumFeatureStrategies};
  }
}

namespace detail {
/// v mapped into [lo, hi] by wrapping (v - lo) modulo the range size; exact
/// for every int64 v (no overflow).
inline std::int64_t wrap_into(std::int64_t v, std::int64_t lo, std::int64_t hi) {
  if (v >= lo && v <= hi) return v;
  const std::int64_t n = hi - lo + 1;  // >= 1, small
  std::int64_t r = v % n;              // in (-n, n)
  std::int64_t l = lo % n;
  std::int64_t k = (r - l) % n;        // no overflow: |r|, |l| < n
  if (k < 0) k += n;
  return lo + k;
}
}  // namespace detail

/// A backbone genome: one SlotGenes per LIV slot, in depth order. Each slot is
/// a pre-norm residual block x + LIV(RMSNorm(x)).
class Genome {
 public:
  Genome() = default;
  explicit Genome(std::vector<SlotGenes> slots) : slots_(std::move(slots)) {}
  /// `slots` slots of SA-1 with no sharing.
  static Genome uniform(index_t slots, LivClass c = LivClass::SA1) {
    ::effattn::detail::require(slots >= 1, "star::Genome", "slots", "must be >= 1, got ", slots);
    std::vector<SlotGenes> s(static_cast<size_t>(slots));
    for (size_t i = 0; i < s.size(); ++i) {
      s[i].cls = static_cast<int>(c);
      s[i].fs_group = s[i].fg_group = static_cast<std::int64_t>(i) + 1;
    }
    return Genome(std::move(s));
  }

  index_t slots() const { return static_cast<index_t>(slots_.size()); }
  const std::vector<SlotGenes>& genes() const { return slots_; }
  SlotGenes& operator[](index_t i) { return slots_[static_cast<size_t>(i)]; }
  const SlotGenes& operator[](index_t i) const { return slots_[static_cast<size_t>(i)]; }
  LivClass liv_class(index_t i) const { return static_cast<LivClass>((*this)[i].cls); }
  bool operator==(const Genome& o) const { return slots_ == o.slots_; }
  bool operator!=(const Genome& o) const { return !(*this == o); }

  /// The flat integer vector: slot-major, 5 genes per slot in gene order.
  std::vector<std::int64_t> encode() const {
    std::vector<std::int64_t> v;
    v.reserve(slots_.size() * kGenesPerSlot);
    for (const auto& s : slots_)
      for (int g = 0; g < kGenesPerSlot; ++g) v.push_back(s.gene(g));
    return v;
  }
  /// The inverse of encode(). Only the length is checked (a multiple of 5,
  /// and `slots * 5` when slots > 0): the values may be anything, so that
  /// repair() can run on any integer vector; call validate() for the rules.
  static Genome decode(const std::vector<std::int64_t>& flat, index_t slots = 0) {
    const char* op = "star::Genome::decode";
    if (slots < 0) EFFATTN_THROW(parameter_error(::effattn::detail::concat(op, ": slots must be >= 0, got ", slots)));
    const index_t n = static_cast<index_t>(flat.size());
    if (n == 0 || n % kGenesPerSlot != 0 || (slots > 0 && n != slots * kGenesPerSlot))
      EFFATTN_THROW(shape_error(::effattn::detail::concat(
          op, ": flat genome must hold ", kGenesPerSlot, " genes per slot",
          slots > 0 ? ::effattn::detail::concat(" for ", slots, " slots (", slots * kGenesPerSlot, ")") : std::string(),
          ", got ", n, " values")));
    std::vector<SlotGenes> s(static_cast<size_t>(n / kGenesPerSlot));
    for (size_t i = 0; i < s.size(); ++i)
      for (int g = 0; g < kGenesPerSlot; ++g) s[i].gene(g) = flat[i * kGenesPerSlot + static_cast<size_t>(g)];
    return Genome(std::move(s));
  }

  /// Throws parameter_error naming the first slot (0-based) and gene that
  /// breaks a rule (docs/star.md, "Validity"):
  ///  1. every gene in gene_range();
  ///  2. feature-group sharing (gene 5 != none) only in the attention family;
  ///  3. the slots of one featurizer-sharing group that share (gene 3 != none)
  ///     have the same class and the same strategy as the group's first such slot;
  ///  4. likewise for feature-group sharing (genes 4, 5).
  void validate() const {
    std::string why;
    if (!check(&why)) EFFATTN_THROW(parameter_error(why));
  }
  bool is_valid() const { return check(nullptr); }

  /// Makes the genome valid, deterministically, changing only what breaks a
  /// rule (a valid genome is unchanged; repair is idempotent):
  ///  1. a gene out of range is wrapped into it: lo + ((v - lo) mod size);
  ///  2. a non-attention slot's feature-group strategy becomes none;
  ///  3. in slot order, a sharing slot whose class or strategy differs from its
  ///     group's first sharing slot stops sharing (strategy none), for the
  ///     featurizer and then the feature-group genes.
  /// Returns whether anything changed. An empty genome is left empty.
  bool repair() {
    const index_t n = slots();
    bool changed = false;
    for (auto& s : slots_)
      for (int g = 0; g < kGenesPerSlot; ++g) {
        const auto r = gene_range(g, n);
        const std::int64_t w = detail::wrap_into(s.gene(g), r.first, r.second);
        if (w != s.gene(g)) s.gene(g) = w, changed = true;
      }
    for (auto& s : slots_)
      if (family(static_cast<LivClass>(s.cls)) != LivFamily::attention && s.fg_strategy != 1)
        s.fg_strategy = 1, changed = true;
    for (int pass = 0; pass < 2; ++pass) {
      const int gg = pass == 0 ? 1 : 3, gs = gg + 1;
      std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>> leader;  // group -> (class, strategy)
      for (auto& s : slots_) {
        if (s.gene(gs) == 1) continue;
        auto it = leader.find(s.gene(gg));
        if (it == leader.end()) {
          leader.emplace(s.gene(gg), std::make_pair(s.cls, s.gene(gs)));
        } else if (it->second.first != s.cls || it->second.second != s.gene(gs)) {
          s.gene(gs) = 1;
          changed = true;
        }
      }
    }
    return changed;
  }
  /// A repaired copy.
  Genome repaired() const {
    Genome g = *this;
    g.repair();
    return g;
  }

 private:
  bool check(std::string* why) const {
    const char* op = "star::Genome::validate";
    auto fail = [&](index_t slot, int g, const std::string& what) {
      if (why)
        *why = ::effattn::detail::concat(op, ": slot ", slot, " gene ", g + 1, " (", gene_name(g), ") ", what);
      return false;
    };
    const index_t n = slots();
    if (n == 0) {
      if (why) *why = ::effattn::detail::concat(op, ": genome has no slots");
      return false;
    }
    for (index_t i = 0; i < n; ++i)
      for (int g = 0; g < kGenesPerSlot; ++g) {
        const auto r = gene_range(g, n);
        const std::int64_t v = (*this)[i].gene(g);
        if (v < r.first || v > r.second)
          return fail(i, g, ::effattn::detail::concat("must be in [", r.first, ", ", r.second, "], got ", v));
      }
    for (index_t i = 0; i < n; ++i) {
      const auto& s = (*this)[i];
      if (s.fg_strategy != 1 && family(static_cast<LivClass>(s.cls)) != LivFamily::attention)
        return fail(i, 4, ::effattn::detail::concat("must be 1 (none) for ", class_name(static_cast<LivClass>(s.cls)),
                                                   ": only the attention family shares computed features, got ",
                                                   s.fg_strategy));
    }
    for (int pass = 0; pass < 2; ++pass) {
      const int gg = pass == 0 ? 1 : 3, gs = gg + 1;
      std::map<std::int64_t, index_t> leader;  // group -> first sharing slot
      for (index_t i = 0; i < n; ++i) {
        const auto& s = (*this)[i];
        if (s.gene(gs) == 1) continue;
        auto it = leader.find(s.gene(gg));
        if (it == leader.end()) {
          leader.emplace(s.gene(gg), i);
          continue;
        }
        const auto& l = (*this)[it->second];
        if (l.cls != s.cls)
          return fail(i, 0, ::effattn::detail::concat(
                                "is ", class_name(static_cast<LivClass>(s.cls)), " but shares (", gene_name(gs), " ",
                                s.gene(gs), ") in group ", s.gene(gg), " whose first sharing slot ", it->second,
                                " is ", class_name(static_cast<LivClass>(l.cls)), ": a group shares one class"));
        if (l.gene(gs) != s.gene(gs))
          return fail(i, gs, ::effattn::detail::concat("is ", s.gene(gs), " in group ", s.gene(gg),
                                                      " whose first sharing slot ", it->second, " uses ",
                                                      l.gene(gs), ": a group shares one strategy"));
      }
    }
    return true;
  }

  std::vector<SlotGenes> slots_;
};

/// Transformer++: SA-1 and GMemless alternating (SA-1 first), no sharing.
inline Genome transformer_pp(index_t slots = kDefaultSlots) {
  Genome g = Genome::uniform(slots);
  for (index_t i = 0; i < slots; ++i) g[i].cls = static_cast<int>(i % 2 == 0 ? LivClass::SA1 : LivClass::GMemless);
  return g;
}
/// Striped hybrid: mixers alternating SA-1 and Rec-1, each followed by a
/// GMemless (SA-1, GMemless, Rec-1, GMemless, ...), no sharing. The 1:1
/// ratio of attention to recurrence is our decision (docs/star.md).
inline Genome striped_hybrid(index_t slots = kDefaultSlots) {
  Genome g = Genome::uniform(slots);
  static const LivClass pattern[] = {LivClass::SA1, LivClass::GMemless, LivClass::Rec1, LivClass::GMemless};
  for (index_t i = 0; i < slots; ++i) g[i].cls = static_cast<int>(pattern[i % 4]);
  return g;
}

// ------------------------------------------------------------------ costs

/// The shapes the cost model needs (docs/star.md, "Cost model").
struct CostDims {
  index_t width = 768;             ///< d, the model width
  index_t heads = 12;              ///< H query heads; d % H == 0 (SA-3 needs H % 4 == 0, SA-4 H % 2 == 0)
  index_t context = 2048;          ///< T, tokens held by the caches
  index_t ffn_hidden = 0;          ///< GMemless hidden f; 0: ceil(8d/3 / 8) * 8 (as liv_mlp.hpp)
  index_t short_conv = 3;          ///< taps of SA-2's and GConv-1's depthwise causal convolutions
  index_t rec_dt_rank = 0;         ///< Rec-*: rank R of the step-size projection; 0: ceil(d / 16) (Mamba's "auto")
  index_t longconv_hidden = 16;    ///< GConv-2: hidden width M of the filter MLP (liv_longconv.hpp's filter_hidden)
  index_t longconv_bands = 4;      ///< GConv-2: frequency bands b of its positional features (1 + 2b features)
  index_t vocab = 0;               ///< embedding rows (tied head); 0: no embedding counted
  index_t cache_element_bytes = 4; ///< bytes per cached element (4: float32, 2: float16/bfloat16)
};

/// One weight or cache block of a LIV: `feature` names what it computes
/// (q, k, v, x, a, B, C, gate, ...; prefixed "a." / "b." in the two halves of
/// a differential class).
struct CostComponent {
  std::string feature;
  bool featurizer = false;  ///< an input projection (or its short conv) that may be shared
  std::int64_t params = 0;
  std::int64_t cache_elements = 0;
};

struct SlotCost {
  std::int64_t params = 0;       ///< weights counted to this slot (shared ones to the first slot using them)
  std::int64_t cache_bytes = 0;  ///< cache/state bytes counted to this slot
};
struct GenomeCost {
  std::int64_t params = 0;       ///< all weights: slots + norms + embedding + final norm
  std::int64_t cache_bytes = 0;  ///< all caches and recurrent states after `context` tokens
  std::vector<SlotCost> slots;
};

namespace detail {
inline std::int64_t cmul(std::int64_t a, std::int64_t b) {
  return ::effattn::detail::checked_mul(a, b, "star::genome_cost", "cost");
}
inline std::int64_t cadd(std::int64_t a, std::int64_t b) {
  return ::effattn::detail::checked_add(a, b, "star::genome_cost", "cost");
}
inline index_t ffn_hidden(const CostDims& d) {
  if (d.ffn_hidden > 0) return d.ffn_hidden;
  const std::int64_t h = (cmul(8, d.width) + 2) / 3;  // ceil(8d/3)
  return (h + 7) / 8 * 8;
}
inline void check_dims(const CostDims& d) {
  const char* op = "star::genome_cost";
  ::effattn::detail::require(d.width >= 1, op, "width", "must be >= 1, got ", d.width);
  ::effattn::detail::require(d.heads >= 1, op, "heads", "must be >= 1, got ", d.heads);
  ::effattn::detail::require(d.width % d.heads == 0, op, "width", "must be a multiple of heads (", d.heads,
                             "), got ", d.width);
  ::effattn::detail::require(d.context >= 0, op, "context", "must be >= 0, got ", d.context);
  ::effattn::detail::require(d.ffn_hidden >= 0, op, "ffn_hidden", "must be >= 0, got ", d.ffn_hidden);
  ::effattn::detail::require(d.rec_dt_rank >= 0, op, "rec_dt_rank", "must be >= 0, got ", d.rec_dt_rank);
  ::effattn::detail::require(d.short_conv >= 1, op, "short_conv", "must be >= 1, got ", d.short_conv);
  ::effattn::detail::require(d.longconv_hidden >= 1, op, "longconv_hidden", "must be >= 1, got ", d.longconv_hidden);
  ::effattn::detail::require(d.longconv_bands >= 1, op, "longconv_bands", "must be >= 1, got ", d.longconv_bands);
  ::effattn::detail::require(d.vocab >= 0, op, "vocab", "must be >= 0, got ", d.vocab);
  ::effattn::detail::require(d.cache_element_bytes >= 1, op, "cache_element_bytes", "must be >= 1, got ",
                             d.cache_element_bytes);
}
}  // namespace detail

/// The weight and cache blocks of one LIV of class c (no norm, no sharing).
/// Formulas in docs/star.md ("Cost model"); d = width, H = heads.
inline std::vector<CostComponent> liv_components(LivClass c, const CostDims& dims) {
  using detail::cmul;
  detail::check_dims(dims);
  const char* op = "star::liv_components";
  const int cv = static_cast<int>(c);
  ::effattn::detail::require(cv >= 1 && cv <= kNumLivClasses, op, "class", "must be in [1, 17], got ", cv);
  const std::int64_t d = dims.width, T = dims.context, K = dims.short_conv;
  std::vector<CostComponent> out;
  auto add = [&](const char* f, bool feat, std::int64_t p, std::int64_t cache) {
    out.push_back(CostComponent{f, feat, p, cache});
  };
  const LivClass b = base_class(c);
  switch (b) {
    case LivClass::SA1: case LivClass::SA2: case LivClass::SA3: case LivClass::SA4: {
      const std::int64_t group = b == LivClass::SA3 ? 4 : b == LivClass::SA4 ? 2 : 1;
      ::effattn::detail::require(dims.heads % group == 0, op, "heads", "must be a multiple of ", group, " for ",
                                 class_name(c), ", got ", dims.heads);
      const std::int64_t dkv = d / group;  // (H / group) K/V heads of d / H channels
      const bool conv = b == LivClass::SA2;
      // q/k/v projections (+ SA-2's depthwise conv taps and its K-1 input rows of state)
      add("q", true, cmul(d, d) + (conv ? cmul(d, K) : 0), conv ? cmul(K - 1, d) : 0);
      add("k", true, cmul(d, dkv) + (conv ? cmul(dkv, K) : 0), cmul(T, dkv) + (conv ? cmul(K - 1, dkv) : 0));
      add("v", true, cmul(d, dkv) + (conv ? cmul(dkv, K) : 0), cmul(T, dkv) + (conv ? cmul(K - 1, dkv) : 0));
      add("out", false, cmul(d, d), 0);
      break;
    }
    case LivClass::Rec1: case LivClass::Rec2: {
      // Mamba-like selective scan as liv_recurrence.hpp builds it (E states
      // per channel, dt rank R): in_proj [2d, d] gives the scanned input u
      // and the output gate z; x_proj [R + 2E, d] gives dt's low-rank input
      // and B, C; dt_proj [d, R] + bias [d]; A_log [d, E] and D [d]; out [d, d].
      const std::int64_t E = b == LivClass::Rec1 ? 16 : 2;
      const std::int64_t R = dims.rec_dt_rank > 0 ? dims.rec_dt_rank : (d + 15) / 16;
      add("x", true, cmul(d, d), 0);                          // u
      add("z", true, cmul(d, d), 0);                          // output gate
      add("a", true, cmul(R, d) + cmul(d, R) + d, 0);         // dt: the input-dependent decay
      add("B", true, cmul(E, d), 0);                          // b_t in R^E
      add("C", true, cmul(E, d), 0);                          // c_t in R^E
      add("A", false, cmul(d, E) + d, 0);                     // A_log and D
      add("state", false, 0, cmul(d, E));                     // h: d x E
      add("out", false, cmul(d, d), 0);
      break;
    }
    case LivClass::GConv1: case LivClass::GConv2: {
      add("B", true, cmul(d, d), 0);
      add("C", true, cmul(d, d), 0);
      add("x", true, cmul(d, d), 0);
      if (b == LivClass::GConv1) {
        add("conv", false, cmul(d, K), cmul(K - 1, d));  // depthwise taps; state: last K-1 rows of B*x
      } else {
        // liv_longconv.hpp: filter MLP [M, 1+2b] + bias, [M, M] + bias, [d, M];
        // Sin frequencies s1, s2 [M]; the skip D [d]. Decode keeps every past
        // B*x row (T x d); the filter table it also keeps is a function of the
        // weights, not counted as cache (its filter_bytes()).
        const std::int64_t M = dims.longconv_hidden, feats = 1 + cmul(2, dims.longconv_bands);
        add("conv", false, cmul(M, feats) + M + cmul(M, M) + M + cmul(d, M) + 2 * M + d, cmul(T, d));
      }
      add("out", false, cmul(d, d), 0);
      break;
    }
    default: {
      const std::int64_t f = detail::ffn_hidden(dims);
      add("gate", true, cmul(d, f), 0);
      add("up", true, cmul(d, f), 0);
      add("down", false, cmul(f, d), 0);
      break;
    }
  }
  if (is_differential(c)) {
    std::vector<CostComponent> two;
    for (const char* half : {"a.", "b."})
      for (auto comp : out) {
        comp.feature = std::string(half) + comp.feature;
        two.push_back(comp);
      }
    out = std::move(two);
  }
  return out;
}

namespace detail {
/// The feature name without a differential half's "a." / "b." prefix.
inline std::string bare_feature(const std::string& f) {
  return f.size() > 2 && (f.compare(0, 2, "a.") == 0 || f.compare(0, 2, "b.") == 0) ? f.substr(2) : f;
}
inline bool partial_featurizer(LivFamily fam, const std::string& bare) {
  switch (fam) {
    case LivFamily::attention: return bare == "k" || bare == "v";
    case LivFamily::recurrence: return bare == "a" || bare == "B" || bare == "C";
    case LivFamily::convolution: return bare == "B" || bare == "C";
    default: return bare == "gate";
  }
}
inline bool group_feature(std::int64_t strategy, const std::string& bare) {
  if (strategy == static_cast<int>(FeatureSharing::kv)) return bare == "k" || bare == "v";
  if (strategy == static_cast<int>(FeatureSharing::qk)) return bare == "q" || bare == "k";
  return false;
}
}  // namespace detail

/// Analytic parameter count and cache bytes of a valid genome (it is
/// validated first) with sharing applied (docs/star.md, "Cost model"):
/// - a slot is RMSNorm (d weights, never shared) + its LIV's components;
/// - a featurizer component shared by featurizer sharing is counted once per
///   (group, feature): to the first slot of the group that uses it;
/// - a feature shared by feature-group sharing is computed and cached only by
///   the group's first sharing slot: the other members count neither its
///   weights nor its cache;
/// - total = slots + vocab * d (embedding, tied head) + d (final RMSNorm).
/// Overflow of a count throws shape_error.
inline GenomeCost genome_cost(const Genome& g, const CostDims& dims) {
  using detail::cadd;
  using detail::cmul;
  g.validate();
  detail::check_dims(dims);
  const index_t n = g.slots();
  GenomeCost cost;
  cost.slots.resize(static_cast<size_t>(n));
  std::map<std::int64_t, index_t> fg_leader;  // feature group -> first sharing slot
  std::map<std::tuple<std::int64_t, std::string>, bool> fs_counted;  // (featurizer group, feature)
  for (index_t i = 0; i < n; ++i) {
    const SlotGenes& s = g[i];
    const LivClass c = static_cast<LivClass>(s.cls);
    const LivFamily fam = family(c);
    bool fg_follower = false;
    if (s.fg_strategy != 1) {
      auto it = fg_leader.find(s.fg_group);
      if (it == fg_leader.end()) fg_leader.emplace(s.fg_group, i);
      else fg_follower = true;
    }
    SlotCost& sc = cost.slots[static_cast<size_t>(i)];
    sc.params = dims.width;  // pre-norm RMSNorm
    for (const auto& comp : liv_components(c, dims)) {
      const std::string bare = detail::bare_feature(comp.feature);
      if (fg_follower && detail::group_feature(s.fg_strategy, bare)) continue;  // computed by the leader
      std::int64_t p = comp.params;
      const bool shared = comp.featurizer &&
                          (s.fs_strategy == static_cast<int>(FeaturizerSharing::all) ||
                           (s.fs_strategy == static_cast<int>(FeaturizerSharing::partial) &&
                            detail::partial_featurizer(fam, bare)));
      if (shared) {
        auto key = std::make_tuple(s.fs_group, comp.feature);
        if (fs_counted.count(key)) p = 0;
        else fs_counted.emplace(key, true);
      }
      sc.params = cadd(sc.params, p);
      sc.cache_bytes = cadd(sc.cache_bytes, cmul(comp.cache_elements, dims.cache_element_bytes));
    }
    cost.params = cadd(cost.params, sc.params);
    cost.cache_bytes = cadd(cost.cache_bytes, sc.cache_bytes);
  }
  cost.params = cadd(cost.params, cadd(cmul(dims.vocab, dims.width), dims.width));
  return cost;
}

}  // namespace star
EFFATTN_NAMESPACE_END
