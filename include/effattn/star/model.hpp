// SPDX-License-Identifier: MIT
// effattn::star: a STAR genome compiled to a runnable language model for CPU
// inference (issue 14, items 2 and 4).
//
//   h_0   = E[token]                                   embedding E [vocab, d]
//   h_i+1 = h_i + LIV_i(RMSNorm_i(h_i))                one pre-norm residual block per slot
//   out   = RMSNorm_final(h_S);  logits = out E^T      tied output head (the same buffer as E)
//
// RMSNorm(x) = x / sqrt(mean(x^2) + eps) * w (statistics in double, per row,
// so a step equals the prefill bit for bit), w initialised to 1.
//
// Sharing is applied for real, as genome.hpp defines it and genome_cost counts
// it (docs/star.md, "Compiled model"):
// - Featurizer sharing: each slot's featurizer weights are held in "units"
//   (std::shared_ptr<Unit>); the slots of one featurizer-sharing group point
//   to the same unit object, so a weight exists once in memory, is counted
//   once, saved once, and changing it changes every layer that uses it. The
//   units follow the cost model's featurizer features: attention q, k, v (each
//   with SA-2's conv taps); recurrence "xz" (in_proj: x and z, always shared
//   together) and "aBC" (x_proj and dt_proj: a, B, C, always shared together);
//   convolution "BC" (the B and gate rows of in_proj) and "x" (its u rows);
//   memoryless gate (w1) and up (w3). Strategy partial shares attention k, v;
//   recurrence aBC; convolution BC; memoryless gate (genome.hpp's rule).
// - Feature-group sharing (attention only): a follower slot holds neither the
//   weights nor the cache of the shared features; kv: it attends to the K/V
//   cache of the group's first slot with its own queries; qk: it uses that
//   slot's queries (of this call) and K cache, with its own V and V cache.
// Every LIV runs through its operator's code (liv_*.hpp): Recurrence and
// SwiGLU through prefill_with (the featurizers passed in), the convolutions
// through prefill_from (the featurizer outputs passed in); attention is run
// here (it needs the cross-layer K/V) on the same pieces as SoftmaxAttention
// (nn::linear, detail::causal_depthwise_conv, detail::apply_rope, the engine).
//
// Weights are random from a seed (each slot half from SplitMix64(seed, slot),
// drawn by its operator's constructor, so a slot's weights equal the operator's
// built with that seed) or loaded from the file format documented in
// docs/star.md (save / load here). Every computation runs on the caller's
// Executor in fixed work items: results are bit-identical for any thread count.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <istream>
#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "genome.hpp"
#include "liv_operators.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

/// A model file that cannot be loaded: cannot be opened, is not one, has a
/// version we do not read, is truncated, or does not match the genome and
/// dims it declares. A std::invalid_argument like every effattn input error.
class model_file_error : public invalid_argument {
 public:
  using invalid_argument::invalid_argument;
};

/// The dimensions of a compiled model (the cost model's CostDims plus what
/// only the runnable model needs). 0 picks the operators' defaults.
struct ModelConfig {
  index_t vocab = 256;            ///< embedding rows (tied head), >= 1
  index_t width = 64;             ///< d; a multiple of heads with an even head dim (RoPE)
  index_t heads = 4;              ///< H query heads (SA-3 needs H % 4 == 0, SA-4 H % 2 == 0)
  index_t short_conv = 3;         ///< taps of SA-2's and GConv-1's depthwise convolutions, >= 2
  index_t ffn_hidden = 0;         ///< GMemless hidden; 0: ceil(8d/3 / 8) * 8
  index_t rec_dt_rank = 0;        ///< Rec-*: dt rank; 0: ceil(d / 16)
  index_t longconv_hidden = 16;   ///< GConv-2 filter MLP width
  index_t longconv_bands = 4;     ///< GConv-2 positional-feature bands
  index_t longconv_l_max = 2048;  ///< GConv-2: the length its positional features are scaled to
  float norm_eps = 1e-6f;         ///< RMSNorm epsilon, finite and > 0

  /// The cost model's dims for a context of `context` tokens (float32 cache).
  CostDims cost_dims(index_t context) const {
    CostDims c;
    c.width = width;
    c.heads = heads;
    c.context = context;
    c.ffn_hidden = ffn_hidden;
    c.short_conv = short_conv;
    c.rec_dt_rank = rec_dt_rank;
    c.longconv_hidden = longconv_hidden;
    c.longconv_bands = longconv_bands;
    c.vocab = vocab;
    c.cache_element_bytes = 4;
    return c;
  }
};

/// The cache / recurrent state of a compiled model (one per sequence).
class ModelState {
 public:
  /// The state of one LIV (a differential slot has two). Only the members of
  /// its family are used; a feature-sharing follower leaves the shared
  /// features' caches empty.
  struct Half {
    Matrix k, v;                    ///< attention: [capacity, Hkv*hd]; rows < length hold the cache
    Matrix q_tail, k_tail, v_tail;  ///< SA-2: the last L-1 pre-conv q, k, v rows
    Recurrence::State rec;
    ShortConv::State sconv;
    LongConv::State lconv;
  };
  struct Slot {
    std::array<Half, 2> half;
  };

  std::vector<Slot> slots;
  index_t length = 0;  ///< tokens consumed

  /// Bytes of every cache and state buffer as allocated (K/V at their
  /// capacity), not counting GConv-2's filter tables (a function of the
  /// weights that the state keeps so decoding never re-evaluates the MLP;
  /// filter_bytes()). With make_state(T) and T tokens consumed this equals
  /// Model::cache_bytes(T) and genome_cost's cache_bytes.
  index_t bytes() const {
    index_t n = 0;
    for (const auto& s : slots)
      for (const auto& h : s.half)
        n += h.k.size() + h.v.size() + h.q_tail.size() + h.k_tail.size() + h.v_tail.size() + h.rec.h.size() +
             h.sconv.tail.size() + h.lconv.inputs.size();
    return n * index_t(sizeof(float));
  }
  /// Bytes of GConv-2's filter tables.
  index_t filter_bytes() const {
    index_t n = 0;
    for (const auto& s : slots)
      for (const auto& h : s.half) n += h.lconv.filter.size();
    return n * index_t(sizeof(float));
  }

 private:
  friend class Model;
  std::uint64_t fingerprint_ = 0;  ///< the model it belongs to (its genome and dims)
};

class Model {
 public:
  /// A featurizer's weights, possibly shared by several slots (see the top of
  /// this file for which weights each family's units hold).
  struct Unit {
    nn::Linear w;   ///< the projection (the recurrence's aBC unit: x_proj)
    nn::Linear w2;  ///< the recurrence's aBC unit: dt_proj (with its bias); else empty
    Matrix taps;    ///< SA-2: the depthwise conv taps of this feature [features, L]; else empty
  };
  /// One LIV of a base class (1-9): a differential slot has two.
  struct Half {
    LivClass base = LivClass::SA1;
    /// Featurizer units (attention q, k, v; recurrence xz, aBC; convolution BC,
    /// x; memoryless gate, up). nullptr: not held (a feature-sharing follower's
    /// shared features, or a family's unused third unit).
    /// Const, like the operators below: the structure (which buffers exist,
    /// their shapes, who shares them) is fixed once compiled; weight values
    /// are edited through Model::edit_weights.
    std::array<std::shared_ptr<const Unit>, 3> unit;
    nn::Linear wo;                              ///< attention's output projection
    std::unique_ptr<const Recurrence> rec;      ///< Rec-*: A_log, D, out_proj (its featurizers are in unit)
    std::unique_ptr<const ShortConv> sconv;     ///< GConv-1: taps and out_proj (in_proj is in unit)
    std::unique_ptr<const LongConv> lconv;      ///< GConv-2: filter MLP, D, out_proj (in_proj is in unit)
    std::unique_ptr<const SwiGLU> mlp;          ///< GMemless: w2 (w1, w3 are in unit)
  };
  struct Slot {
    LivClass cls = LivClass::SA1;
    Vector norm;                  ///< the pre-norm RMSNorm weight [d]
    std::array<Half, 2> half;     ///< [0] only, or a and b of a differential class
    int halves = 1;
    index_t fg_leader = -1;       ///< feature-group sharing: the slot whose features this one uses; -1: own
    FeatureSharing fg = FeatureSharing::none;
  };

  /// Compiles a genome with weights random from `seed`. Throws parameter_error
  /// for an invalid genome (Genome::validate's message), an empty one, or bad
  /// dims (naming star::Model and the parameter).
  Model(const Genome& genome, const ModelConfig& cfg, std::uint64_t seed = 0) : genome_(genome), cfg_(cfg) {
    build(seed);
  }
  /// The constructor's checks alone (nothing is allocated): throws what
  /// Model(genome, cfg) would throw for them.
  static void check(const Genome& genome, const ModelConfig& cfg) { check_config(genome, cfg); }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  Model(Model&&) = default;
  Model& operator=(Model&&) = default;

  const Genome& genome() const { return genome_; }
  const ModelConfig& config() const { return cfg_; }
  index_t width() const { return cfg_.width; }
  index_t vocab() const { return cfg_.vocab; }
  index_t slots() const { return static_cast<index_t>(slots_.size()); }
  const Slot& slot(index_t i) const { return slots_.at(static_cast<size_t>(i)); }
  const nn::Linear& embedding() const { return embed_; }  ///< [vocab, d]; also the output head
  const Vector& final_norm() const { return final_norm_; }

  /// A fresh state; `reserve` tokens of K/V (and GConv-2 input) cache are
  /// allocated up front (the caches grow by doubling past it).
  ModelState make_state(index_t reserve = 0) const {
    const char* op = "star::Model::make_state";
    effattn::detail::require(reserve >= 0, op, "reserve", "must be >= 0, got ", reserve);
    ModelState st;
    st.fingerprint_ = fingerprint_;
    st.slots.resize(slots_.size());
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      for (int h = 0; h < s.halves; ++h) {
        const Half& hw = s.half[size_t(h)];
        ModelState::Half& hs = st.slots[i].half[size_t(h)];
        switch (family(hw.base)) {
          case LivFamily::attention: {
            const index_t kd = kv_dim(hw.base), qd = cfg_.width, t = cfg_.short_conv - 1;
            const bool conv = hw.base == LivClass::SA2;
            effattn::detail::checked_mul(reserve, kd, op, "reserve * Hkv * head_dim");
            if (hw.unit[1]) hs.k.resize(reserve, kd);
            if (hw.unit[2]) hs.v.resize(reserve, kd);
            if (conv && hw.unit[0]) hs.q_tail = Matrix::Zero(t, qd);
            if (conv && hw.unit[1]) hs.k_tail = Matrix::Zero(t, kd);
            if (conv && hw.unit[2]) hs.v_tail = Matrix::Zero(t, kd);
            break;
          }
          case LivFamily::recurrence: hs.rec = hw.rec->make_state(); break;
          case LivFamily::convolution:
            if (hw.sconv) hs.sconv = hw.sconv->make_state();
            else hs.lconv = hw.lconv->make_state(reserve);
            break;
          default: break;
        }
      }
    }
    return st;
  }

  /// Runs `tokens` (ids in [0, vocab)) through the model, continuing `state`
  /// (from make_state), and returns the logits [N, vocab]. N = 0 is allowed.
  Matrix prefill(const std::vector<index_t>& tokens, ModelState& state, const Executor& ex = {}) const {
    return run("star::Model::prefill", tokens, state, ex);
  }
  /// One token after `state`: the logits [1, vocab]. Equals the matching row of
  /// a prefill up to nn::linear's summation order for one row vs many.
  Matrix step(index_t token, ModelState& state, const Executor& ex = {}) const {
    return run("star::Model::step", std::vector<index_t>{token}, state, ex);
  }
  /// prefill from a fresh state: the logits and the state after the tokens.
  std::pair<Matrix, ModelState> prefill(const std::vector<index_t>& tokens, const Executor& ex = {}) const {
    ModelState st = make_state(static_cast<index_t>(tokens.size()));
    Matrix logits = prefill(tokens, st, ex);
    return {std::move(logits), std::move(st)};
  }

  /// Every weight the model holds, each buffer once (a shared unit is visited
  /// at its first slot): fn(name, data, rows, cols) in the fixed order the
  /// file format uses (docs/star.md). Vectors are [1, n].
  template <class Fn>
  void for_each_weight(Fn&& fn) const {
    const_cast<Model*>(this)->visit([&](const std::string& n, float* p, index_t r, index_t c) {
      fn(n, static_cast<const float*>(p), r, c);
    });
  }
  /// Every weight buffer once, writable: fn(name, data, rows, cols) in the
  /// same order. Values only: the shapes and the sharing are fixed (a write
  /// to a shared buffer is seen by every slot that shares it).
  template <class Fn>
  void edit_weights(Fn&& fn) {
    visit(std::forward<Fn>(fn));
  }
  /// The number of weights (floats), each buffer counted once: equals
  /// genome_cost(genome, config().cost_dims(0)).params.
  index_t param_count() const {
    index_t n = 0;
    for_each_weight([&](const std::string&, const float*, index_t r, index_t c) { n += r * c; });
    return n;
  }
  /// Cache / state bytes after `context` tokens, from the buffers each slot
  /// holds (K/V rows, SA-2 tails, recurrent and conv states, GConv-2 inputs;
  /// not GConv-2's filter table): equals ModelState::bytes() of make_state(T)
  /// after T tokens and genome_cost's cache_bytes.
  index_t cache_bytes(index_t context) const {
    detail::check_context("star::Model::cache_bytes", context);
    index_t n = 0;
    const index_t d = cfg_.width, t = cfg_.short_conv - 1;
    for (const Slot& s : slots_)
      for (int h = 0; h < s.halves; ++h) {
        const Half& hw = s.half[size_t(h)];
        switch (family(hw.base)) {
          case LivFamily::attention: {
            const index_t kd = kv_dim(hw.base);
            const bool conv = hw.base == LivClass::SA2;
            if (hw.unit[0] && conv) n += t * d;
            if (hw.unit[1]) n += context * kd + (conv ? t * kd : 0);
            if (hw.unit[2]) n += context * kd + (conv ? t * kd : 0);
            break;
          }
          case LivFamily::recurrence: n += hw.rec->width() * hw.rec->expansion(); break;
          case LivFamily::convolution:
            n += (hw.sconv ? hw.sconv->cache_bytes(context) : hw.lconv->cache_bytes(context)) / index_t(sizeof(float));
            break;
          default: break;
        }
      }
    return n * index_t(sizeof(float));
  }

  // ---------------------------------------------------------- the file format

  /// Writes the model (docs/star.md, "Model file"). Throws model_file_error
  /// when the stream fails.
  void save(std::ostream& os) const {
    const char* op = "star::Model::save";
    io::Writer w{os};
    os.write(kMagic, 8);
    w.u32(kVersion);
    const auto flat = genome_.encode();
    w.u32(static_cast<std::uint32_t>(genome_.slots()));
    for (std::int64_t v : flat) w.i64(v);
    for (index_t v : dims_vector()) w.i64(v);
    w.f32(cfg_.norm_eps);
    std::uint64_t count = 0;
    for_each_weight([&](const std::string&, const float*, index_t, index_t) { ++count; });
    w.u64(count);
    for_each_weight([&](const std::string& name, const float* p, index_t r, index_t c) {
      w.u32(static_cast<std::uint32_t>(name.size()));
      os.write(name.data(), static_cast<std::streamsize>(name.size()));
      w.u64(static_cast<std::uint64_t>(r));
      w.u64(static_cast<std::uint64_t>(c));
      for (index_t i = 0; i < r * c; ++i) w.f32(p[i]);
    });
    if (!os) EFFATTN_THROW(model_file_error(effattn::detail::concat(op, ": writing failed")));
  }
  void save(const std::string& path) const {
    std::ofstream f(path, std::ios::binary);
    if (!f) EFFATTN_THROW(model_file_error("star::Model::save: cannot open '" + path + "' for writing"));
    save(f);
  }

  /// Reads a model written by save(). Validates everything (magic, version,
  /// genome, dims, every tensor's name and shape in the fixed order, finite
  /// values, nothing after the last tensor) and throws model_file_error naming
  /// what is wrong and where (byte offset).
  static Model load(std::istream& is) {
    io::Reader r{is};
    char magic[8];
    r.bytes(magic, 8, "magic");
    if (std::memcmp(magic, kMagic, 8) != 0) r.fail("magic: not an effattn STAR model file (expected \"EFSTAR\\0\\0\")");
    const std::uint32_t version = r.u32("version");
    if (version != kVersion)
      r.fail(effattn::detail::concat("version: this reader reads version ", kVersion, ", the file has ", version));
    const std::uint32_t slots = r.u32("genome slots");
    if (slots < 1 || slots > 1000000) r.fail(effattn::detail::concat("genome slots: must be in [1, 1e6], got ", slots));
    std::vector<std::int64_t> flat(size_t(slots) * kGenesPerSlot);
    for (auto& v : flat) v = r.i64("genome");
    const Genome g = Genome::decode(flat, slots);
    std::string why;
    if (!g.is_valid()) {
      try {
        g.validate();
      } catch (const std::exception& e) {
        why = e.what();
      }
      r.fail("genome: " + why);
    }
    ModelConfig cfg;
    index_t* dims[] = {&cfg.vocab, &cfg.width, &cfg.heads, &cfg.short_conv, &cfg.ffn_hidden, &cfg.rec_dt_rank,
                       &cfg.longconv_hidden, &cfg.longconv_bands, &cfg.longconv_l_max};
    for (index_t* d : dims) {
      const std::int64_t v = r.i64("dims");
      if (v < 1 || v > (std::int64_t(1) << 31))
        r.fail(effattn::detail::concat("dims: a dimension out of [1, 2^31]: ", v));
      *d = static_cast<index_t>(v);
    }
    cfg.norm_eps = r.f32("norm_eps");
    // Before allocating anything the dims describe: a corrupt header must not
    // make us build a huge model. The weights alone need 4 * params bytes.
    std::int64_t params = 0;
    try {
      Model::check_config(g, cfg);
      params = genome_cost(g, cfg.cost_dims(0)).params;
    } catch (const std::invalid_argument& e) {
      r.fail(std::string("dims: ") + e.what());
    }
    const std::int64_t left = r.remaining();
    if (left >= 0 && params > left / 4)
      r.fail(effattn::detail::concat("truncated file: the genome and dims need ", params, " float32 weights (",
                                     params, " x 4 bytes), ", left, " bytes are left"));
    // The skeleton is built with seeded weights (which every tensor then
    // overwrites): one code path builds models, loaded or not.
    Model m(g, cfg, 0);
    std::uint64_t expected = 0;
    m.for_each_weight([&](const std::string&, const float*, index_t, index_t) { ++expected; });
    const std::uint64_t count = r.u64("tensor count");
    if (count != expected)
      r.fail(effattn::detail::concat("tensor count: the genome and dims give ", expected, " tensors, the file has ",
                                     count));
    m.visit([&](const std::string& name, float* p, index_t rows, index_t cols) {
      const std::uint32_t len = r.u32("tensor name length");
      if (len != name.size())
        r.fail(effattn::detail::concat("tensor '", name, "': name length ", len, " != ", name.size()));
      std::string got(len, '\0');
      r.bytes(&got[0], len, "tensor name");
      if (got != name) r.fail("tensor: expected '" + name + "', got '" + got + "'");
      const std::uint64_t fr = r.u64("tensor rows"), fc = r.u64("tensor cols");
      if (fr != std::uint64_t(rows) || fc != std::uint64_t(cols))
        r.fail(effattn::detail::concat("tensor '", name, "': shape [", fr, ",", fc, "] != [", rows, ",", cols,
                                       "] of the genome and dims"));
      for (index_t i = 0; i < rows * cols; ++i) {
        const float v = r.f32("tensor data");
        if (!std::isfinite(v)) r.fail(effattn::detail::concat("tensor '", name, "': value ", i, " is not finite"));
        p[i] = v;
      }
    });
    if (is.peek() != std::char_traits<char>::eof()) r.fail("trailing bytes after the last tensor");
    return m;
  }
  static Model load(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) EFFATTN_THROW(model_file_error("star::Model::load: cannot open '" + path + "'"));
    try {
      return load(f);
    } catch (const model_file_error& e) {
      EFFATTN_THROW(model_file_error(std::string(e.what()) + " (file '" + path + "')"));
    }
  }

 private:
  static constexpr char kMagic[9] = "EFSTAR\0\0";
  static constexpr std::uint32_t kVersion = 1;

  Genome genome_;
  ModelConfig cfg_;
  nn::Linear embed_;
  Vector final_norm_;
  std::vector<Slot> slots_;
  std::uint64_t fingerprint_ = 0;

  // Little-endian encoding, byte by byte, whatever the host's byte order.
  struct io {
    struct Writer {
      std::ostream& os;
      void put(std::uint64_t v, int n) {
        char b[8];
        for (int i = 0; i < n; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
        os.write(b, n);
      }
      void u32(std::uint32_t v) { put(v, 4); }
      void u64(std::uint64_t v) { put(v, 8); }
      void i64(std::int64_t v) { put(static_cast<std::uint64_t>(v), 8); }
      void f32(float f) {
        std::uint32_t v;
        std::memcpy(&v, &f, 4);
        put(v, 4);
      }
    };
    struct Reader {
      std::istream& is;
      std::uint64_t offset = 0;
      [[noreturn]] void fail(const std::string& what) const {
        EFFATTN_THROW(
            model_file_error(effattn::detail::concat("star::Model::load: ", what, " (at byte ", offset, ")")));
      }
      /// Bytes left in the stream, or -1 when it cannot tell (not seekable).
      std::int64_t remaining() {
        const auto here = is.tellg();
        if (here < 0) return -1;
        is.seekg(0, std::ios::end);
        const auto end = is.tellg();
        is.seekg(here);
        if (end < 0 || !is) {
          is.clear();
          is.seekg(here);
          return -1;
        }
        return static_cast<std::int64_t>(end - here);
      }
      void bytes(char* dst, std::uint64_t n, const char* what) {
        is.read(dst, static_cast<std::streamsize>(n));
        if (static_cast<std::uint64_t>(is.gcount()) != n)
          fail(effattn::detail::concat(what, ": truncated file (", n, " bytes expected, ", is.gcount(), " left)"));
        offset += n;
      }
      std::uint64_t get(int n, const char* what) {
        unsigned char b[8];
        bytes(reinterpret_cast<char*>(b), std::uint64_t(n), what);
        std::uint64_t v = 0;
        for (int i = 0; i < n; ++i) v |= std::uint64_t(b[i]) << (8 * i);
        return v;
      }
      std::uint32_t u32(const char* what) { return static_cast<std::uint32_t>(get(4, what)); }
      std::uint64_t u64(const char* what) { return get(8, what); }
      std::int64_t i64(const char* what) { return static_cast<std::int64_t>(get(8, what)); }
      float f32(const char* what) {
        const std::uint32_t v = static_cast<std::uint32_t>(get(4, what));
        float f;
        std::memcpy(&f, &v, 4);
        return f;
      }
    };
  };

  std::vector<index_t> dims_vector() const {
    // Resolved defaults, so the file states the shapes it holds.
    const CostDims cd = cfg_.cost_dims(0);
    return {cfg_.vocab, cfg_.width, cfg_.heads, cfg_.short_conv, detail::ffn_hidden(cd), rec_rank(),
            cfg_.longconv_hidden, cfg_.longconv_bands, cfg_.longconv_l_max};
  }
  index_t rec_rank() const { return cfg_.rec_dt_rank > 0 ? cfg_.rec_dt_rank : (cfg_.width + 15) / 16; }
  index_t kv_dim(LivClass base) const {
    const index_t g = base == LivClass::SA3 ? 4 : base == LivClass::SA4 ? 2 : 1;
    return cfg_.width / g;
  }

  /// The units a family uses and the ones that strategy "partial" shares.
  static int unit_count(LivFamily f) { return f == LivFamily::attention ? 3 : 2; }
  static bool partial_unit(LivFamily f, int u) {
    switch (f) {
      case LivFamily::attention: return u == 1 || u == 2;  // k, v
      case LivFamily::recurrence: return u == 1;           // aBC
      case LivFamily::convolution: return u == 0;          // BC
      default: return u == 0;                              // gate
    }
  }
  static const char* unit_name(LivFamily f, int u) {
    static const char* const att[] = {"q", "k", "v"}, *const rec[] = {"xz", "aBC", "?"},
                             *const conv[] = {"BC", "x", "?"}, *const mem[] = {"gate", "up", "?"};
    switch (f) {
      case LivFamily::attention: return att[u];
      case LivFamily::recurrence: return rec[u];
      case LivFamily::convolution: return conv[u];
      default: return mem[u];
    }
  }
  /// Feature-group sharing: whether unit u of a follower comes from the leader.
  static bool fg_unit(FeatureSharing s, int u) {
    if (s == FeatureSharing::kv) return u == 1 || u == 2;
    if (s == FeatureSharing::qk) return u == 0 || u == 1;
    return false;
  }

  static void check_config(const Genome& g, const ModelConfig& c) {
    const char* op = "star::Model";
    effattn::detail::require(g.slots() >= 1, op, "genome", "must have at least one slot, got 0");
    effattn::detail::require(c.vocab >= 1, op, "vocab", "must be >= 1, got ", c.vocab);
    effattn::detail::require(c.width >= 1, op, "width", "must be >= 1, got ", c.width);
    effattn::detail::require(c.heads >= 1 && c.width % c.heads == 0, op, "heads", "must be >= 1 and divide width=",
                             c.width, ", got ", c.heads);
    effattn::detail::require((c.width / c.heads) % 2 == 0, op, "width",
                             "/ heads (the head dim) must be even for RoPE, got width=", c.width, " heads=", c.heads);
    effattn::detail::require(c.short_conv >= 2, op, "short_conv", "must be >= 2, got ", c.short_conv);
    effattn::detail::require(c.longconv_l_max >= 2, op, "longconv_l_max", "must be >= 2, got ", c.longconv_l_max);
    effattn::detail::require(std::isfinite(c.norm_eps) && c.norm_eps > 0, op, "norm_eps",
                             "must be finite and > 0, got ", c.norm_eps);
    effattn::detail::checked_mul(c.vocab, c.width, op, "vocab * width");
    g.validate();
    // The cost model checks the rest (SA-3 / SA-4 head divisibility, ranges).
    for (index_t i = 0; i < g.slots(); ++i) (void)liv_components(g.liv_class(i), c.cost_dims(0));
  }

  void build(std::uint64_t seed) {
    check_config(genome_, cfg_);
    const index_t d = cfg_.width, n = genome_.slots();
    {
      std::mt19937_64 rng(detail::derive_seed(seed, 0));
      embed_ = nn::Linear::random(d, cfg_.vocab, rng, 0, false);  // U(-1/sqrt(d), 1/sqrt(d)), [vocab, d]
    }
    final_norm_ = Vector::Ones(d);
    slots_.clear();
    slots_.resize(static_cast<size_t>(n));
    std::map<std::int64_t, index_t> fg_first;                          // feature group -> first sharing slot
    std::map<std::tuple<std::int64_t, int, int>, std::shared_ptr<const Unit>> shared;  // (fs group, half, unit)
    for (index_t i = 0; i < n; ++i) {
      const SlotGenes& g = genome_[i];
      Slot& s = slots_[size_t(i)];
      s.cls = static_cast<LivClass>(g.cls);
      s.norm = Vector::Ones(d);
      s.halves = is_differential(s.cls) ? 2 : 1;
      if (g.fg_strategy != 1) {
        auto it = fg_first.find(g.fg_group);
        if (it == fg_first.end()) {
          fg_first.emplace(g.fg_group, i);
        } else {
          s.fg_leader = it->second;
          s.fg = static_cast<FeatureSharing>(g.fg_strategy);
        }
      }
      const LivFamily fam = family(s.cls);
      for (int h = 0; h < s.halves; ++h) {
        Half& hw = s.half[size_t(h)];
        hw.base = base_class(s.cls);
        std::array<Unit, 3> fresh;
        make_half(hw, fresh, detail::derive_seed(seed, std::uint64_t(1 + 2 * i + h)));
        for (int u = 0; u < unit_count(fam); ++u) {
          if (s.fg_leader >= 0 && fg_unit(s.fg, u)) continue;  // computed by the leader
          const bool fs_shared =
              g.fs_strategy == static_cast<int>(FeaturizerSharing::all) ||
              (g.fs_strategy == static_cast<int>(FeaturizerSharing::partial) && partial_unit(fam, u));
          if (fs_shared) {
            auto key = std::make_tuple(g.fs_group, h, u);
            auto it = shared.find(key);
            if (it != shared.end()) {
              hw.unit[size_t(u)] = it->second;
              continue;
            }
            hw.unit[size_t(u)] = std::make_shared<Unit>(std::move(fresh[size_t(u)]));
            shared.emplace(key, hw.unit[size_t(u)]);
          } else {
            hw.unit[size_t(u)] = std::make_shared<Unit>(std::move(fresh[size_t(u)]));
          }
        }
      }
    }
    fingerprint_ = fingerprint();
  }

  /// Builds one LIV of hw.base with its operator's constructor (so its weights
  /// are those of the operator with this seed), keeps the non-featurizer part
  /// in hw and hands the featurizer weights out as units.
  void make_half(Half& hw, std::array<Unit, 3>& units, std::uint64_t seed) const {
    const index_t d = cfg_.width, H = cfg_.heads;
    switch (hw.base) {
      case LivClass::SA1: case LivClass::SA2: case LivClass::SA3: case LivClass::SA4: {
        const index_t g = hw.base == LivClass::SA3 ? 4 : hw.base == LivClass::SA4 ? 2 : 1;
        const AttentionConfig ac{d, H, H / g, 0, hw.base == LivClass::SA2 ? cfg_.short_conv : 0, true, 10000.0};
        SoftmaxAttention op(ac, seed);
        units[0].w = std::move(op.wq);
        units[1].w = std::move(op.wk);
        units[2].w = std::move(op.wv);
        units[0].taps = std::move(op.q_conv);
        units[1].taps = std::move(op.k_conv);
        units[2].taps = std::move(op.v_conv);
        hw.wo = std::move(op.wo);
        break;
      }
      case LivClass::Rec1: case LivClass::Rec2: {
        RecurrenceConfig rc{d, hw.base == LivClass::Rec1 ? 16 : 2, rec_rank(), 512};
        auto op = std::make_unique<Recurrence>(rc, seed);
        units[0].w = std::move(op->in_proj);
        units[1].w = std::move(op->x_proj);
        units[1].w2 = std::move(op->dt_proj);
        op->in_proj = nn::Linear{};  // (a moved-from Eigen matrix is empty already; said for the reader)
        op->x_proj = nn::Linear{};
        op->dt_proj = nn::Linear{};
        hw.rec = std::move(op);
        break;
      }
      case LivClass::GConv1: case LivClass::GConv2: {
        nn::Linear in;
        if (hw.base == LivClass::GConv1) {
          auto op = std::make_unique<ShortConv>(ShortConvConfig{d, cfg_.short_conv, false}, seed);
          in = std::move(op->in_proj);
          op->in_proj = nn::Linear{};
          hw.sconv = std::move(op);
        } else {
          LongConvConfig lc;
          lc.width = d;
          lc.filter_hidden = cfg_.longconv_hidden;
          lc.bands = cfg_.longconv_bands;
          lc.l_max = cfg_.longconv_l_max;
          auto op = std::make_unique<LongConv>(lc, seed);
          in = std::move(op->in_proj);
          op->in_proj = nn::Linear{};
          hw.lconv = std::move(op);
        }
        units[0].w.weight = in.weight.topRows(2 * d);   // B, gate
        units[1].w.weight = in.weight.bottomRows(d);    // u
        break;
      }
      default: {
        auto op = std::make_unique<SwiGLU>(SwiGLUConfig{d, cfg_.ffn_hidden}, seed);
        units[0].w = std::move(op->w1);
        units[1].w = std::move(op->w3);
        op->w1 = nn::Linear{};
        op->w3 = nn::Linear{};
        hw.mlp = std::move(op);
        break;
      }
    }
  }

  std::uint64_t fingerprint() const {
    std::uint64_t h = 0x5354415221ull;
    for (std::int64_t v : genome_.encode()) h = detail::derive_seed(h, static_cast<std::uint64_t>(v));
    for (index_t v : dims_vector()) h = detail::derive_seed(h, static_cast<std::uint64_t>(v));
    return h;
  }

  /// Every weight buffer once, in the file's order: embedding, then per slot
  /// its norm and per half its units (in unit order, a shared unit at its
  /// first slot only) and its other weights, then the final norm.
  template <class Fn>
  void visit(Fn&& fn) {
    std::set<const void*> seen;
    auto lin = [&](const std::string& n, nn::Linear& l) {
      if (l.weight.size()) fn(n + ".weight", l.weight.data(), l.weight.rows(), l.weight.cols());
      if (l.bias.size()) fn(n + ".bias", l.bias.data(), index_t(1), l.bias.size());
    };
    auto vec = [&](const std::string& n, Vector& v) {
      if (v.size()) fn(n, v.data(), index_t(1), v.size());
    };
    auto mat = [&](const std::string& n, Matrix& m) {
      if (m.size()) fn(n, m.data(), m.rows(), m.cols());
    };
    lin("embed", embed_);
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      const std::string sp = "slot" + std::to_string(i);
      vec(sp + ".norm", s.norm);
      for (int h = 0; h < s.halves; ++h) {
        Half& hw = s.half[size_t(h)];
        const std::string p = sp + (s.halves == 2 ? (h == 0 ? ".a" : ".b") : "");
        const LivFamily fam = family(hw.base);
        for (int u = 0; u < 3; ++u) {
          // The const objects of a Half were created non-const (make_half,
          // build): writing their values through this cast is defined.
          Unit* un = const_cast<Unit*>(hw.unit[size_t(u)].get());
          if (!un || !seen.insert(un).second) continue;
          const std::string up = p + "." + unit_name(fam, u);
          lin(up, un->w);
          lin(up + ".dt", un->w2);
          mat(up + ".taps", un->taps);
        }
        lin(p + ".out", hw.wo);
        if (auto* op = const_cast<Recurrence*>(hw.rec.get())) {
          mat(p + ".A_log", op->A_log);
          vec(p + ".D", op->D);
          lin(p + ".out", op->out_proj);
        }
        if (auto* op = const_cast<ShortConv*>(hw.sconv.get())) {
          mat(p + ".conv", op->conv_weight);
          vec(p + ".conv_bias", op->conv_bias);
          lin(p + ".out", op->out_proj);
        }
        if (auto* op = const_cast<LongConv*>(hw.lconv.get())) {
          lin(p + ".filter1", op->f1);
          lin(p + ".filter2", op->f2);
          lin(p + ".filter3", op->f3);
          vec(p + ".s1", op->s1);
          vec(p + ".s2", op->s2);
          vec(p + ".D", op->D);
          lin(p + ".out", op->out_proj);
        }
        if (auto* op = const_cast<SwiGLU*>(hw.mlp.get())) lin(p + ".down", op->w2);
      }
    }
    vec("final_norm", final_norm_);
  }

  /// RMSNorm per row (statistics in double; fixed work items).
  void rms_norm(const Matrix& x, const Vector& w, Matrix& y, const Executor& ex) const {
    const index_t R = x.rows(), C = x.cols();
    y.resize(R, C);
    const double eps = cfg_.norm_eps;
    detail::parallel_chunks(ex, 4.0 * double(R) * double(C), R, 16, [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        const float* xr = x.data() + r * C;
        float* yr = y.data() + r * C;
        double ss = 0;
        for (index_t c = 0; c < C; ++c) ss += double(xr[c]) * double(xr[c]);
        const double inv = 1.0 / std::sqrt(ss / double(C) + eps);
        for (index_t c = 0; c < C; ++c) yr[c] = static_cast<float>(double(xr[c]) * inv) * w[c];
      }
    });
  }

  static void grow(Matrix& m, index_t rows) {
    if (rows > m.rows()) m.conservativeResize(std::max(rows, 2 * m.rows()), m.cols());
  }

  /// Attention of one half: q/k/v (own or the feature group leader's), SA-2's
  /// conv, RoPE, the K/V append, the engine, the output projection.
  void attend(const Half& hw, const Matrix& x, ModelState::Half& st, const ModelState::Half* lead,
              const Matrix* lead_q, Matrix* q_out, index_t L0, Matrix& y, const Executor& ex) const {
    const index_t N = x.rows(), H = cfg_.heads, hd = cfg_.width / H, qd = cfg_.width;
    const index_t kd = kv_dim(hw.base), Hkv = kd / hd, Nk = L0 + N;
    const Vector none;
    auto feature = [&](const Unit& u, Matrix& tail, index_t heads, Matrix& out) {
      nn::linear(u.w, x, out, ex);
      if (u.taps.size()) {
        Matrix t;
        detail::causal_depthwise_conv(out, u.taps, none, tail, t, ex);
        out.swap(t);
      }
      if (heads > 0) detail::apply_rope(out, heads, hd, L0, 10000.0, ex);
    };
    Matrix qown, kn, vn;
    const Matrix* q = lead_q;
    if (hw.unit[0]) {
      feature(*hw.unit[0], st.q_tail, H, qown);
      q = &qown;
      if (q_out) *q_out = qown;
    }
    const Matrix* K = lead ? &lead->k : nullptr;
    const Matrix* V = lead ? &lead->v : nullptr;
    if (hw.unit[1]) {
      feature(*hw.unit[1], st.k_tail, Hkv, kn);
      grow(st.k, Nk);
      if (N > 0) st.k.middleRows(L0, N) = kn;
      K = &st.k;
    }
    if (hw.unit[2]) {
      feature(*hw.unit[2], st.v_tail, 0, vn);
      grow(st.v, Nk);
      if (N > 0) st.v.middleRows(L0, N) = vn;
      V = &st.v;
    }
    Matrix o(N, qd);
    const ConstView<float, 4> Qv(q->data(), {1, H, N, hd}, {N * qd, hd, qd, 1});
    const ConstView<float, 4> Kv(K->data(), {1, Hkv, Nk, hd}, {K->rows() * kd, hd, kd, 1});
    const ConstView<float, 4> Vv(V->data(), {1, Hkv, Nk, hd}, {V->rows() * kd, hd, kd, 1});
    const View<float, 4> Ov(o.data(), {1, H, N, hd}, {N * qd, hd, qd, 1});
    effattn::attention<float>(Qv, Kv, Vv, Ov, CausalMask{}, NoScore{}, AttentionOptions{}, ex);
    nn::linear(hw.wo, o, y, ex);
  }

  void check_state(const char* op, const ModelState& st) const {
    if (st.fingerprint_ != fingerprint_ || st.slots.size() != slots_.size())
      EFFATTN_THROW(shape_error(effattn::detail::concat(
          op, ": state was made by another model (", st.slots.size(), " slots; this model has ", slots_.size(),
          " and another genome or dims): use this model's make_state()")));
    if (st.length < 0) EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": state length ", st.length, " < 0")));
    for (size_t i = 0; i < slots_.size(); ++i)
      for (int h = 0; h < slots_[i].halves; ++h) {
        const Half& hw = slots_[i].half[size_t(h)];
        const ModelState::Half& hs = st.slots[i].half[size_t(h)];
        if (family(hw.base) != LivFamily::attention) continue;  // the operators check their own states
        const index_t kd = kv_dim(hw.base), t = hw.base == LivClass::SA2 ? cfg_.short_conv - 1 : 0;
        auto need = [&](bool held, const Matrix& m, index_t cols, bool cache, const char* what) {
          const bool ok = held ? (m.cols() == cols && (cache ? m.rows() >= st.length : m.rows() == t))
                               : m.size() == 0;
          if (!ok)
            EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": state of slot ", i, " ", what, " is [", m.rows(),
                                                              ",", m.cols(), "], not this model's")));
        };
        need(bool(hw.unit[1]), hs.k, kd, true, "k");
        need(bool(hw.unit[2]), hs.v, kd, true, "v");
        need(t > 0 && hw.unit[0], hs.q_tail, cfg_.width, false, "q_tail");
        need(t > 0 && hw.unit[1], hs.k_tail, kd, false, "k_tail");
        need(t > 0 && hw.unit[2], hs.v_tail, kd, false, "v_tail");
      }
  }

  Matrix run(const char* op, const std::vector<index_t>& tokens, ModelState& st, const Executor& ex) const {
    effattn::detail::check_executor(ex, op);
    check_state(op, st);
    const index_t N = static_cast<index_t>(tokens.size()), d = cfg_.width;
    for (index_t t = 0; t < N; ++t) {
      const index_t id = tokens[size_t(t)];
      if (id < 0 || id >= cfg_.vocab)
        EFFATTN_THROW(parameter_error(effattn::detail::concat(op, ": token ", t, " (of ", N, ") must be in [0, vocab=",
                                                              cfg_.vocab, "), got ", id)));
    }
    const index_t L0 = st.length;
    Matrix h(N, d), xn, y, yb;
    for (index_t t = 0; t < N; ++t) h.row(t) = embed_.weight.row(tokens[size_t(t)]);
    // The queries of this call of each qk feature-group leader half, for its followers.
    std::vector<std::array<Matrix, 2>> q_shared(slots_.size());
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      rms_norm(h, s.norm, xn, ex);
      for (int hh = 0; hh < s.halves; ++hh) {
        const Half& hw = s.half[size_t(hh)];
        ModelState::Half& hs = st.slots[i].half[size_t(hh)];
        Matrix& out = hh == 0 ? y : yb;
        switch (family(hw.base)) {
          case LivFamily::attention: {
            const bool follower = s.fg_leader >= 0;
            const ModelState::Half* lead = follower ? &st.slots[size_t(s.fg_leader)].half[size_t(hh)] : nullptr;
            const Matrix* lq =
                follower && s.fg == FeatureSharing::qk ? &q_shared[size_t(s.fg_leader)][size_t(hh)] : nullptr;
            const bool qk_leader = !follower && genome_[index_t(i)].fg_strategy == static_cast<int>(FeatureSharing::qk);
            attend(hw, xn, hs, lead, lq, qk_leader ? &q_shared[i][size_t(hh)] : nullptr, L0, out, ex);
            break;
          }
          case LivFamily::recurrence:
            hw.rec->prefill_with(hw.unit[0]->w, hw.unit[1]->w, hw.unit[1]->w2, xn, hs.rec, out, ex);
            break;
          case LivFamily::convolution: {
            Matrix bc, u, p(N, 3 * d);
            nn::linear(hw.unit[0]->w, xn, bc, ex);
            nn::linear(hw.unit[1]->w, xn, u, ex);
            if (N > 0) {  // (an empty matrix has no data: Eigen's column blocks of it would offset a null pointer)
              p.leftCols(2 * d) = bc;
              p.rightCols(d) = u;
            }
            if (hw.sconv) hw.sconv->prefill_from(p, hs.sconv, out, ex);
            else hw.lconv->prefill_from(p, hs.lconv, out, ex);
            break;
          }
          default: {
            SwiGLU::State ms;
            hw.mlp->prefill_with(hw.unit[0]->w, hw.unit[1]->w, xn, ms, out, ex);
            break;
          }
        }
      }
      if (s.halves == 2) y -= yb;
      h += y;
    }
    rms_norm(h, final_norm_, xn, ex);
    Matrix logits;
    nn::linear(embed_, xn, logits, ex);  // tied head: out E^T
    st.length = L0 + N;
    return logits;
  }
};

}  // namespace star
EFFATTN_NAMESPACE_END
