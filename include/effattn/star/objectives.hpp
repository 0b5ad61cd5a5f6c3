// SPDX-License-Identifier: MIT
// effattn::star: the objectives of a STAR search (issue 14, item 4).
//
// Analytic (from the genome, genome_cost): parameters and cache bytes after a
// context. Measured on this machine, on the compiled model (model.hpp) with
// weights random from a seed (the cost of a candidate does not depend on its
// weights): prefill time at a given length, decode time per token at a given
// context, and peak extra memory. Quality through a user callback (part 2
// trains and scores; here it is any function of the compiled model).
//
// STAR optimises cache size and parameter count as proxies; Liquid's LFM2
// report found they did not transfer to on-device latency and memory, which
// is why the measured objectives exist: a search can minimise what the
// user's CPU actually spends.
//
// Decisions:
// - Times are the minimum over `repeats` runs (the least disturbed one), in
//   milliseconds of std::chrono::steady_clock, after one untimed warm-up run.
// - Decode time per token: prefill `decode_context` tokens (untimed), then the
//   mean time of `decode_tokens` steps from a copy of that state, minimum over
//   repeats.
// - Peak extra memory: the peak of a MemoryProbe around one prefill of
//   `prefill_tokens` from a fresh state (make_state(prefill_tokens)) plus
//   `decode_tokens` steps, minus the level before it. The default probe reads
//   Linux's peak resident set (VmHWM in /proc/self/status after resetting it
//   through /proc/self/clear_refs): real pages touched, at page granularity,
//   process-wide (so measure with nothing else running); memory the
//   allocator already holds and reuses is not seen (it is resident already).
//   A program that interposes malloc (benchmarks/support/memory.cpp) can pass
//   its exact heap counter instead. Without a working probe the objective is
//   not available (parameter_error when it is asked for).
// - Quality is maximised by the user's callback; its objective is -quality
//   (every NSGA-II objective is minimised).
// - Candidates whose objectives need timing are evaluated one after another
//   (timing them concurrently would measure the contention); each measurement
//   runs on `executor`. Analytic-only objective sets are evaluated in
//   parallel on it (nsga2.hpp's parallel_evaluator).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "genome.hpp"
#include "model.hpp"
#include "nsga2.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

/// What a search may minimise.
enum class Objective {
  params,       ///< weights (analytic, genome_cost)
  cache_bytes,  ///< cache / state bytes after `context` tokens (analytic, genome_cost)
  prefill_ms,   ///< measured prefill time of `prefill_tokens` tokens
  decode_ms,    ///< measured decode time per token at `decode_context`
  peak_bytes,   ///< measured peak extra memory of a prefill + decode
  quality,      ///< -quality(model, genome), the user's callback
};

inline const char* objective_name(Objective o) {
  switch (o) {
    case Objective::params: return "params";
    case Objective::cache_bytes: return "cache_bytes";
    case Objective::prefill_ms: return "prefill_ms";
    case Objective::decode_ms: return "decode_ms";
    case Objective::peak_bytes: return "peak_bytes";
    default: return "-quality";
  }
}

/// A memory probe: reset() starts a measurement, peak() returns the peak
/// bytes above the level at reset() (or < 0 when it cannot measure).
struct MemoryProbe {
  std::function<void()> reset;
  std::function<long long()> peak;
  explicit operator bool() const { return reset && peak; }
};

namespace detail {
/// A field "<key>: <n> kB" of /proc/self/status, in bytes; -1 without it.
inline long long proc_status_kb(const char* key) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long long v = -1;
  const size_t n = std::strlen(key);
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, key, n) == 0 && line[n] == ':') {
      v = std::strtoll(line + n + 1, nullptr, 10) * 1024;
      break;
    }
  std::fclose(f);
  return v;
}
/// Resets VmHWM to the current RSS (Linux >= 4.0); false when it cannot.
inline bool reset_peak_rss() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}
}  // namespace detail

/// The default probe: Linux's peak resident set, reset through
/// /proc/self/clear_refs. Its peak() is < 0 where that is not possible.
inline MemoryProbe rss_probe() {
  auto base = std::make_shared<long long>(-1);
  MemoryProbe p;
  p.reset = [base] { *base = detail::reset_peak_rss() ? detail::proc_status_kb("VmRSS") : -1; };
  p.peak = [base]() -> long long {
    if (*base < 0) return -1;
    const long long hwm = detail::proc_status_kb("VmHWM");
    return hwm < 0 ? -1 : std::max(0LL, hwm - *base);
  };
  return p;
}

struct ObjectiveOptions {
  ModelConfig model;               ///< dims of every compiled candidate
  std::uint64_t seed = 0;          ///< its weights
  index_t context = 2048;          ///< cache_bytes: tokens held
  index_t prefill_tokens = 512;    ///< prefill_ms, peak_bytes: tokens of the prefill
  index_t decode_context = 512;    ///< decode_ms: tokens before the timed steps
  index_t decode_tokens = 16;      ///< decode_ms: timed steps (their mean); peak_bytes: steps after the prefill
  int repeats = 3;                 ///< timings: the minimum of this many runs (after one warm-up)
  Executor executor = Executor(1); ///< threads of each measurement (and of parallel analytic evaluation)
  MemoryProbe memory = rss_probe();///< peak_bytes' probe
  /// quality: a score to maximise (part 2 trains and evaluates); called with
  /// the compiled model (seeded weights) and its genome.
  std::function<double(const Model&, const Genome&)> quality;
  std::vector<Objective> objectives = {Objective::cache_bytes, Objective::decode_ms};
};

/// Everything measured for one genome. A field not asked for is NaN
/// (the measured ones) or still computed (the analytic ones, which are free).
struct Measurement {
  std::int64_t params = 0;       ///< genome_cost
  std::int64_t cache_bytes = 0;  ///< genome_cost at options.context
  double prefill_ms = std::numeric_limits<double>::quiet_NaN();
  double decode_ms = std::numeric_limits<double>::quiet_NaN();  ///< per token
  double peak_bytes = std::numeric_limits<double>::quiet_NaN();
  double quality = std::numeric_limits<double>::quiet_NaN();

  double value(Objective o) const {
    switch (o) {
      case Objective::params: return double(params);
      case Objective::cache_bytes: return double(cache_bytes);
      case Objective::prefill_ms: return prefill_ms;
      case Objective::decode_ms: return decode_ms;
      case Objective::peak_bytes: return peak_bytes;
      default: return -quality;
    }
  }
};

namespace detail {
inline bool needs(const ObjectiveOptions& o, Objective x) {
  for (Objective y : o.objectives)
    if (y == x) return true;
  return false;
}
inline bool needs_model(const ObjectiveOptions& o) {
  for (Objective y : o.objectives)
    if (y != Objective::params && y != Objective::cache_bytes) return true;
  return false;
}
/// Deterministic token ids in [0, vocab) for the measurements.
inline std::vector<index_t> probe_tokens(index_t n, index_t vocab) {
  std::vector<index_t> t(static_cast<size_t>(n));
  std::uint64_t z = 0x5EED;
  for (auto& v : t) v = static_cast<index_t>((z = derive_seed(z, 1)) % static_cast<std::uint64_t>(vocab));
  return t;
}
inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

inline void check_options(const ObjectiveOptions& o) {
  const char* op = "star::ObjectiveOptions";
  effattn::detail::require(!o.objectives.empty(), op, "objectives", "must not be empty");
  effattn::detail::require(o.context >= 0, op, "context", "must be >= 0, got ", o.context);
  effattn::detail::require(o.prefill_tokens >= 1, op, "prefill_tokens", "must be >= 1, got ", o.prefill_tokens);
  effattn::detail::require(o.decode_context >= 0, op, "decode_context", "must be >= 0, got ", o.decode_context);
  effattn::detail::require(o.decode_tokens >= 1, op, "decode_tokens", "must be >= 1, got ", o.decode_tokens);
  effattn::detail::require(o.repeats >= 1, op, "repeats", "must be >= 1, got ", o.repeats);
  effattn::detail::check_executor(o.executor, op);
  effattn::detail::require(!needs(o, Objective::quality) || static_cast<bool>(o.quality), op, "quality",
                           "must be set when Objective::quality is asked for");
  if (needs(o, Objective::peak_bytes)) {
    effattn::detail::require(static_cast<bool>(o.memory), op, "memory",
                             "must be a probe (reset and peak) when Objective::peak_bytes is asked for");
    o.memory.reset();
    effattn::detail::require(o.memory.peak() >= 0, op, "memory",
                             "probe cannot measure here (no /proc/self/clear_refs?); pass one that can, e.g. a "
                             "malloc-interposing counter");
  }
}
}  // namespace detail

/// Measures one genome (validated; compiled when a measured objective or
/// quality is asked for). Throws what the genome, the dims or the options
/// violate (parameter_error / shape_error).
inline Measurement measure(const Genome& g, const ObjectiveOptions& o) {
  using clock = std::chrono::steady_clock;
  detail::check_options(o);
  Measurement m;
  const GenomeCost cost = genome_cost(g, o.model.cost_dims(o.context));
  m.params = cost.params;
  m.cache_bytes = cost.cache_bytes;
  if (!detail::needs_model(o)) return m;
  const Model model(g, o.model, o.seed);
  const Executor& ex = o.executor;
  if (detail::needs(o, Objective::prefill_ms)) {
    const auto tokens = detail::probe_tokens(o.prefill_tokens, o.model.vocab);
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r <= o.repeats; ++r) {  // r = 0: warm-up
      ModelState st = model.make_state(o.prefill_tokens);
      const auto t0 = clock::now();
      (void)model.prefill(tokens, st, ex);
      const double t = detail::ms_since(t0);
      if (r > 0) best = std::min(best, t);
    }
    m.prefill_ms = best;
  }
  if (detail::needs(o, Objective::decode_ms)) {
    const auto tokens = detail::probe_tokens(o.decode_context + o.decode_tokens, o.model.vocab);
    ModelState base = model.make_state(o.decode_context + o.decode_tokens);
    (void)model.prefill(std::vector<index_t>(tokens.begin(), tokens.begin() + o.decode_context), base, ex);
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r <= o.repeats; ++r) {
      ModelState st = base;
      const auto t0 = clock::now();
      for (index_t t = 0; t < o.decode_tokens; ++t) (void)model.step(tokens[size_t(o.decode_context + t)], st, ex);
      const double per = detail::ms_since(t0) / double(o.decode_tokens);
      if (r > 0) best = std::min(best, per);
    }
    m.decode_ms = best;
  }
  if (detail::needs(o, Objective::peak_bytes)) {
    const auto tokens = detail::probe_tokens(o.prefill_tokens + o.decode_tokens, o.model.vocab);
    o.memory.reset();
    {
      ModelState st = model.make_state(o.prefill_tokens);
      (void)model.prefill(std::vector<index_t>(tokens.begin(), tokens.begin() + o.prefill_tokens), st, ex);
      for (index_t t = 0; t < o.decode_tokens; ++t) (void)model.step(tokens[size_t(o.prefill_tokens + t)], st, ex);
    }
    const long long p = o.memory.peak();
    m.peak_bytes = p < 0 ? std::numeric_limits<double>::infinity() : double(p);
  }
  if (detail::needs(o, Objective::quality)) m.quality = o.quality(model, g);
  return m;
}

/// The objective vector of the options' objectives (in their order).
inline std::vector<double> objective_vector(const Measurement& m, const std::vector<Objective>& objectives) {
  std::vector<double> v;
  v.reserve(objectives.size());
  for (Objective o : objectives) v.push_back(m.value(o));
  return v;
}

/// An NSGA-II batch evaluator (nsga2.hpp's Nsga2Evaluate) of the options'
/// objectives. With measured objectives (or a recorder) the batch runs one
/// genome after another (each measurement on options.executor); with
/// analytic ones only, on options.executor's threads. `record`, when given, receives every
/// measurement (genome, measurement) in batch order, e.g. for a report.
inline Nsga2Evaluate objective_evaluator(
    const ObjectiveOptions& o, std::function<void(const Genome&, const Measurement&)> record = nullptr) {
  detail::check_options(o);
  // A candidate whose class the dims cannot build (SA-3 needs heads % 4 == 0)
  // would fail mid-search: check every class once, here.
  for (int c = 1; c <= kNumLivClasses; ++c) (void)liv_components(static_cast<LivClass>(c), o.model.cost_dims(0));
  if (detail::needs_model(o)) Model::check(transformer_pp(1), o.model);  // vocab, head dim, ...
  if (!detail::needs_model(o) && !record)
    return parallel_evaluator([o](const Genome& g) { return objective_vector(measure(g, o), o.objectives); },
                              o.executor);
  return [o, record](const std::vector<Genome>& batch) {
    ObjectiveMatrix F;
    F.reserve(batch.size());
    for (const Genome& g : batch) {
      const Measurement m = measure(g, o);
      if (record) record(g, m);
      F.push_back(objective_vector(m, o.objectives));
    }
    return F;
  };
}

}  // namespace star
EFFATTN_NAMESPACE_END
