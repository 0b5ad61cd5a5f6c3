// SPDX-License-Identifier: MIT
// effattn::star: the STAR search driver (issue 15, item 3): NSGA-II
// (nsga2.hpp) over quality and efficiency objectives (objectives.hpp),
// seeded with the two baselines, with one JSON checkpoint per generation,
// exact resume, progress reports and the final Pareto front as front.json.
//
// This is the one effattn header that needs a third-party library besides
// Eigen: nlohmann-json (Debian's nlohmann-json3-dev; CMake
// find_package(nlohmann_json 3) and link nlohmann_json::nlohmann_json) for
// the checkpoint and front files. It is not included by star.hpp.
//
// Decisions (docs/star.md, "The search driver"):
// - Every distinct genome is measured once (a cache keyed by its genes):
//   a candidate that NSGA-II proposes again takes its earlier measurement.
//   The cache is part of the checkpoint, so a resumed run sees the same
//   figures as an uninterrupted one, timings included.
// - Checkpoint gen_<NNNN>.json after the initial population (generation 0)
//   and after every generation, written to a temporary file and renamed:
//   a file that exists is complete. It holds the options (and their
//   fingerprint), the population (genomes and objective vectors), every
//   measurement so far, the NSGA-II engine's state (mt19937_64 as text), the
//   evaluation count and a checksum of the rest. Non-finite numbers are the
//   strings "inf", "-inf", "nan" (JSON has none).
// - Resume continues from the latest file at or below options.generations:
//   NSGA-II is deterministic for a seed, so the final population equals an
//   uninterrupted run's (tested). Any option that changes the run must
//   match (a parameter_error naming the first that differs); `generations`
//   may differ (a resumed search can run longer). Without `resume`, a
//   directory that already holds checkpoints is refused rather than
//   overwritten.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "genome.hpp"
#include "model.hpp"
#include "nsga2.hpp"
#include "objectives.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

/// A checkpoint file that cannot be used: not JSON, a field missing or of
/// the wrong type, a failed checksum, inconsistent contents, or options
/// other than the resumed search's. The message names the file and the field.
class checkpoint_error : public parameter_error {
 public:
  using parameter_error::parameter_error;
};

/// What search() reports while it runs: after every measured candidate
/// (generation_done false) and after each generation's checkpoint (true).
struct SearchProgress {
  index_t generation = 0;       ///< the generation being evaluated or just done (0: the initial population)
  index_t generations = 0;      ///< options.generations
  index_t evaluated = 0;        ///< candidates of this generation's batch done so far
  index_t batch = 0;            ///< candidates in this generation's batch
  index_t measured = 0;         ///< distinct genomes measured so far (all sessions)
  double best_quality = std::numeric_limits<double>::quiet_NaN();  ///< best quality measured so far (NaN without quality)
  double elapsed_s = 0;         ///< since this search() call started
  bool generation_done = false;
  index_t resumed_from = -1;    ///< the generation this call resumed from, or -1
};
using SearchProgressFn = std::function<void(const SearchProgress&)>;

/// The quality of a compiled candidate (to maximise), e.g. a validation
/// accuracy after training: objectives.hpp's callback.
using QualityFn = std::function<double(const Model&, const Genome&)>;

struct SearchOptions {
  index_t population = 16;   ///< NSGA-II population (the paper's 16)
  index_t generations = 18;  ///< generations after the initial one (the paper's 18)
  index_t slots = 12;        ///< genome depth
  std::uint64_t seed = 0;    ///< NSGA-II's engine
  double crossover_rate = 0.9;
  double mutation_rate = 0.1;
  Survival survival = Survival::mu_plus_lambda;
  index_t elites = 2;        ///< for Survival::elites
  /// What NSGA-II minimises (Objective::quality is -quality), in order, e.g.
  /// {quality, cache_bytes} or {quality, decode_ms}; no repeats.
  std::vector<Objective> objectives = {Objective::quality, Objective::cache_bytes};
  /// How candidates are compiled and measured (dims, weight seed, context,
  /// timings, executor); its `objectives` and `quality` are set by search().
  ObjectiveOptions measure;
  std::string checkpoint_dir;  ///< gen_<NNNN>.json and front.json go here; empty: no files
  bool resume = false;         ///< continue from the latest checkpoint in checkpoint_dir
  /// Describes the quality callback (task, training budget, ...): part of the
  /// options a resume must match, since the callback itself cannot be compared.
  std::string tag;
  std::string quality_name = "quality";  ///< what quality is, for front.json and the report (e.g. "MQAR accuracy")
  /// Measure prefill_ms and decode_ms of the final front and the baselines for
  /// front.json (when not already objectives).
  bool measure_front = true;
  SearchProgressFn progress;   ///< optional
};

/// A genome with everything measured for it.
struct SearchEntry {
  std::string name;  ///< the baselines' names; empty for front members
  Genome genome;
  Measurement measurement;
};

struct SearchResult {
  Nsga2Population population;        ///< the final population
  std::vector<SearchEntry> front;    ///< its distinct non-dominated genomes, in population order
  std::vector<SearchEntry> baselines;  ///< Transformer++ and the striped hybrid at `slots`
  index_t generation = 0;            ///< generations done (options.generations)
  index_t evaluations = 0;           ///< NSGA-II's count (every candidate proposed)
  index_t measured = 0;              ///< distinct genomes measured (the cache)
  index_t resumed_from = -1;         ///< the checkpoint generation this call started from, or -1
  std::string front_path;            ///< front.json, or empty without checkpoint_dir
};

/// Objective names: objective_name's, and "quality" for Objective::quality.
inline Objective parse_objective(const std::string& s) {
  for (Objective o : {Objective::params, Objective::cache_bytes, Objective::prefill_ms, Objective::decode_ms,
                      Objective::peak_bytes, Objective::quality})
    if (s == objective_name(o) || (o == Objective::quality && s == "quality")) return o;
  EFFATTN_THROW(parameter_error(::effattn::detail::concat(
      "star::parse_objective: objective '", s,
      "' is none of quality, params, cache_bytes, prefill_ms, decode_ms, peak_bytes")));
}
inline std::string objective_key(Objective o) { return o == Objective::quality ? "quality" : objective_name(o); }

/// A genome, compactly: each slot's class, then /f<group><a|p> when it shares
/// featurizers (all, partial) and /g<group><kv|qk> when it shares features.
inline std::string genome_string(const Genome& g) {
  std::string s;
  for (index_t i = 0; i < g.slots(); ++i) {
    const auto& x = g[i];
    if (i) s += ' ';
    s += class_name(g.liv_class(i));
    if (x.fs_strategy != 1) s += "/f" + std::to_string(x.fs_group) + (x.fs_strategy == 2 ? "a" : "p");
    if (x.fg_strategy != 1) s += "/g" + std::to_string(x.fg_group) + (x.fg_strategy == 2 ? "kv" : "qk");
  }
  return s;
}

namespace detail {
using json = nlohmann::json;

inline std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}
inline std::string hex64(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}
/// JSON has no infinities or NaN: they are written as strings.
inline json jnum(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}
inline double jdouble(const json& j, const std::string& what) {
  if (j.is_number()) return j.get<double>();
  if (j.is_string()) {
    const auto s = j.get<std::string>();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
  }
  EFFATTN_THROW(checkpoint_error(::effattn::detail::concat(what, " must be a number (or \"inf\", \"-inf\", \"nan\"), got ",
                                                          j.dump())));
}
inline json measurement_json(const Genome& g, const Measurement& m) {
  return json{{"genes", g.encode()},
              {"genome", genome_string(g)},
              {"params", m.params},
              {"cache_bytes", m.cache_bytes},
              {"prefill_ms", jnum(m.prefill_ms)},
              {"decode_ms", jnum(m.decode_ms)},
              {"peak_bytes", jnum(m.peak_bytes)},
              {"quality", jnum(m.quality)}};
}
inline Genome genome_from_json(const json& j, index_t slots, const std::string& what) {
  if (!j.is_array() || static_cast<index_t>(j.size()) != slots * kGenesPerSlot)
    EFFATTN_THROW(checkpoint_error(::effattn::detail::concat(what, " must be an array of ", slots * kGenesPerSlot,
                                                            " integers (", slots, " slots)")));
  std::vector<std::int64_t> flat;
  for (const auto& x : j) {
    if (!x.is_number_integer())
      EFFATTN_THROW(checkpoint_error(::effattn::detail::concat(what, " holds ", x.dump(), ", not an integer")));
    flat.push_back(x.get<std::int64_t>());
  }
  Genome g = Genome::decode(flat, slots);
  try {
    g.validate();
  } catch (const parameter_error& e) {
    EFFATTN_THROW(checkpoint_error(::effattn::detail::concat(what, " is no valid genome: ", e.what())));
  }
  return g;
}
inline Measurement measurement_from_json(const json& j, const std::string& what) {
  Measurement m;
  if (!j.at("params").is_number_integer() || !j.at("cache_bytes").is_number_integer())
    EFFATTN_THROW(checkpoint_error(::effattn::detail::concat(what, ": params and cache_bytes must be integers")));
  m.params = j.at("params").get<std::int64_t>();
  m.cache_bytes = j.at("cache_bytes").get<std::int64_t>();
  m.prefill_ms = jdouble(j.at("prefill_ms"), what + ".prefill_ms");
  m.decode_ms = jdouble(j.at("decode_ms"), what + ".decode_ms");
  m.peak_bytes = jdouble(j.at("peak_bytes"), what + ".peak_bytes");
  m.quality = jdouble(j.at("quality"), what + ".quality");
  return m;
}

/// The options a resumed search must share with the one that wrote the
/// checkpoint (not generations, threads, files or callbacks).
inline json search_options_json(const SearchOptions& so) {
  const ObjectiveOptions& o = so.measure;
  const ModelConfig& c = o.model;
  json objectives = json::array();
  for (Objective x : so.objectives) objectives.push_back(objective_key(x));
  return json{{"slots", so.slots},
              {"population", so.population},
              {"seed", so.seed},
              {"crossover_rate", so.crossover_rate},
              {"mutation_rate", so.mutation_rate},
              {"survival", so.survival == Survival::elites ? "elites" : "mu_plus_lambda"},
              {"elites", so.survival == Survival::elites ? so.elites : 0},
              {"objectives", objectives},
              {"tag", so.tag},
              {"model",
               {{"vocab", c.vocab},
                {"width", c.width},
                {"heads", c.heads},
                {"short_conv", c.short_conv},
                {"ffn_hidden", c.ffn_hidden},
                {"rec_dt_rank", c.rec_dt_rank},
                {"longconv_hidden", c.longconv_hidden},
                {"longconv_bands", c.longconv_bands},
                {"longconv_l_max", c.longconv_l_max},
                {"norm_eps", double(c.norm_eps)}}},
              {"measure",
               {{"weight_seed", o.seed},
                {"context", o.context},
                {"prefill_tokens", o.prefill_tokens},
                {"decode_context", o.decode_context},
                {"decode_tokens", o.decode_tokens},
                {"repeats", o.repeats}}}};
}

inline void write_json_atomically(const std::filesystem::path& path, const json& j, const char* op) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream os(tmp, std::ios::binary | std::ios::trunc);
    os << j.dump(1) << '\n';
    os.flush();
    if (!os)
      EFFATTN_THROW(parameter_error(::effattn::detail::concat(op, ": checkpoint_dir: cannot write ", tmp.string())));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    EFFATTN_THROW(parameter_error(::effattn::detail::concat(op, ": checkpoint_dir: cannot rename ", tmp.string(),
                                                           " to ", path.string(), ": ", ec.message())));
}

inline std::string checkpoint_name(index_t generation) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "gen_%04lld.json", static_cast<long long>(generation));
  return buf;
}
/// The generations of the checkpoint files in dir (gen_<digits>.json), increasing.
inline std::vector<index_t> checkpoint_generations(const std::filesystem::path& dir) {
  std::vector<index_t> gens;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return gens;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.size() < 13 || n.compare(0, 4, "gen_") != 0 || n.compare(n.size() - 5, 5, ".json") != 0) continue;
    const std::string digits = n.substr(4, n.size() - 9);
    if (digits.size() < 4 || digits.size() > 12 ||
        !std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
      continue;
    gens.push_back(static_cast<index_t>(std::stoll(digits)));
  }
  std::sort(gens.begin(), gens.end());
  return gens;
}

using MeasurementCache = std::map<std::vector<std::int64_t>, Measurement>;

inline json checkpoint_json(const json& options, const Nsga2State& st, const MeasurementCache& cache) {
  json pop = json::array();
  for (size_t i = 0; i < st.population.genomes.size(); ++i) {
    json obj = json::array();
    for (double v : st.population.objectives[i]) obj.push_back(jnum(v));
    pop.push_back(json{{"genes", st.population.genomes[i].encode()},
                       {"genome", genome_string(st.population.genomes[i])},
                       {"objectives", obj},
                       {"rank", st.population.rank[i]}});
  }
  json meas = json::array();
  for (const auto& kv : cache) {
    const index_t slots = static_cast<index_t>(kv.first.size()) / kGenesPerSlot;
    meas.push_back(measurement_json(Genome::decode(kv.first, slots), kv.second));
  }
  json j{{"format", "effattn-star-search-checkpoint/1"},
         {"options", options},
         {"fingerprint", hex64(fnv1a(options.dump()))},
         {"generation", st.generation},
         {"evaluations", st.evaluations},
         {"rng", rng_state(st.rng)},
         {"population", pop},
         {"measurements", meas}};
  j["checksum"] = hex64(fnv1a(j.dump()));
  return j;
}

/// Reads and checks a checkpoint: the state and the measurement cache.
inline void load_checkpoint(const std::filesystem::path& path, index_t expect_generation, const json& options,
                            const SearchOptions& so, Nsga2State& st, MeasurementCache& cache) {
  const std::string file = path.string();
  auto fail = [&](const std::string& what) {
    EFFATTN_THROW(checkpoint_error(::effattn::detail::concat("star::search: checkpoint ", file, ": ", what)));
  };
  json j;
  {
    std::ifstream is(path, std::ios::binary);
    if (!is) fail("cannot be opened");
    try {
      j = json::parse(is);
    } catch (const json::exception& e) {
      fail(::effattn::detail::concat("is not valid JSON (", e.what(), "); delete it to resume from the one before"));
    }
  }
  try {
    if (!j.is_object()) fail("is not a JSON object");
    if (!j.contains("format") || j["format"] != "effattn-star-search-checkpoint/1")
      fail("format is not effattn-star-search-checkpoint/1");
    if (!j.contains("checksum") || !j["checksum"].is_string()) fail("has no checksum");
    const std::string sum = j["checksum"].get<std::string>();
    json body = j;
    body.erase("checksum");
    if (hex64(fnv1a(body.dump())) != sum)
      fail("checksum " + sum + " does not match its contents (" + hex64(fnv1a(body.dump())) +
           "): the file was changed or damaged");
    const json& stored = j.at("options");
    if (j.at("fingerprint") != hex64(fnv1a(stored.dump()))) fail("fingerprint does not match its options");
    if (stored != options) {
      const json patch = json::diff(stored, options);
      std::string key = "?";
      std::string had = "(absent)", now = "(absent)";
      if (!patch.empty()) {
        key = patch[0].at("path").get<std::string>();
        const json::json_pointer ptr(key);
        if (stored.contains(ptr)) had = stored.at(ptr).dump();
        if (options.contains(ptr)) now = options.at(ptr).dump();
      }
      fail(::effattn::detail::concat("was written with options ", key, " = ", had, ", these options have ", now,
                                     ": a resumed search must use the options it started with (only generations "
                                     "may change)"));
    }
    if (!j.at("generation").is_number_integer() || j["generation"].get<index_t>() != expect_generation)
      fail(::effattn::detail::concat("generation is ", j.at("generation").dump(), ", its name says ",
                                     expect_generation));
    st.generation = expect_generation;
    if (!j.at("evaluations").is_number_integer()) fail("evaluations is not an integer");
    st.evaluations = j["evaluations"].get<index_t>();
    try {
      st.rng = rng_from_state(j.at("rng").get<std::string>());
    } catch (const parameter_error&) {
      fail("rng is not a std::mt19937_64 state");
    }
    cache.clear();
    const json& meas = j.at("measurements");
    if (!meas.is_array()) fail("measurements is not an array");
    for (size_t i = 0; i < meas.size(); ++i) {
      const std::string what = ::effattn::detail::concat("star::search: checkpoint ", file, ": measurements[", i, "]");
      const Genome g = genome_from_json(meas[i].at("genes"), so.slots, what + ".genes");
      if (!cache.emplace(g.encode(), measurement_from_json(meas[i], what)).second) fail("a genome is measured twice");
    }
    const json& pop = j.at("population");
    if (!pop.is_array() || static_cast<index_t>(pop.size()) != so.population)
      fail(::effattn::detail::concat("population must hold ", so.population, " members"));
    std::vector<Genome> genomes;
    ObjectiveMatrix F;
    for (size_t i = 0; i < pop.size(); ++i) {
      const std::string what = ::effattn::detail::concat("star::search: checkpoint ", file, ": population[", i, "]");
      genomes.push_back(genome_from_json(pop[i].at("genes"), so.slots, what + ".genes"));
      const json& o = pop[i].at("objectives");
      if (!o.is_array() || o.size() != so.objectives.size())
        fail(::effattn::detail::concat("population[", i, "].objectives must hold ", so.objectives.size(), " values"));
      std::vector<double> v;
      for (size_t k = 0; k < o.size(); ++k) v.push_back(jdouble(o[k], what + ".objectives"));
      auto it = cache.find(genomes.back().encode());
      if (it == cache.end()) fail(::effattn::detail::concat("population[", i, "] has no measurement"));
      const auto want = objective_vector(it->second, so.objectives);
      for (size_t k = 0; k < v.size(); ++k)
        if (!(v[k] == want[k] || (std::isnan(v[k]) && std::isnan(want[k]))))
          fail(::effattn::detail::concat("population[", i, "].objectives[", k, "] = ", v[k],
                                         " differs from its measurement's ", want[k]));
      F.push_back(std::move(v));
    }
    if (st.evaluations < so.population) fail("evaluations is below the population");
    st.population = ranked_population(std::move(genomes), std::move(F));
  } catch (const checkpoint_error&) {
    throw;
  } catch (const json::exception& e) {
    fail(::effattn::detail::concat("a field is missing or of the wrong type (", e.what(), ")"));
  } catch (const invalid_argument& e) {
    fail(e.what());
  }
}

inline double best_quality(const MeasurementCache& cache) {
  double best = std::numeric_limits<double>::quiet_NaN();
  for (const auto& kv : cache)
    if (!std::isnan(kv.second.quality) && !(kv.second.quality <= best)) best = kv.second.quality;
  return best;
}
}  // namespace detail

/// The two baselines at `slots`: Transformer++ and the striped hybrid
/// (genome.hpp's, which take any depth: their patterns cut at `slots`).
inline std::vector<SearchEntry> search_baselines(index_t slots) {
  return {{"Transformer++", transformer_pp(slots), {}}, {"striped hybrid", striped_hybrid(slots), {}}};
}

/// Runs (or resumes) a STAR search: NSGA-II over options.objectives with the
/// two baselines in the initial population; `quality` scores candidates when
/// Objective::quality is asked for (it may be empty otherwise). Checkpoints,
/// resume and front.json as described at the top of this file; progress
/// through options.progress. Throws parameter_error / shape_error for bad
/// options (naming star::search), checkpoint_error for a checkpoint it cannot
/// use, and whatever the quality callback throws (the last complete
/// generation's checkpoint stays on disk for a resume).
inline SearchResult search(const SearchOptions& so, const QualityFn& quality = {}) {
  const char* op = "star::search";
  namespace fs = std::filesystem;
  using ::effattn::detail::concat;
  using ::effattn::detail::require;
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  require(so.slots >= 1, op, "slots", "must be >= 1, got ", so.slots);
  require(!so.objectives.empty(), op, "objectives", "must not be empty");
  for (size_t i = 0; i < so.objectives.size(); ++i)
    for (size_t k = 0; k < i; ++k)
      require(so.objectives[i] != so.objectives[k], op, "objectives", "lists ", objective_key(so.objectives[i]),
              " twice");
  const bool wants_quality =
      std::find(so.objectives.begin(), so.objectives.end(), Objective::quality) != so.objectives.end();
  require(!wants_quality || static_cast<bool>(quality), op, "quality", "must be set when objectives has quality");
  require(!so.resume || !so.checkpoint_dir.empty(), op, "resume", "needs a checkpoint_dir");
  Nsga2Options no;
  no.population = so.population;
  no.generations = so.generations;
  no.seed = so.seed;
  no.crossover_rate = so.crossover_rate;
  no.mutation_rate = so.mutation_rate;
  no.survival = so.survival;
  no.elites = so.elites;
  ObjectiveOptions mo = so.measure;
  mo.objectives = so.objectives;
  mo.quality = quality;
  (void)objective_evaluator(mo);  // checks the measuring options and that the dims build every class

  detail::MeasurementCache cache;
  SearchProgress prog;
  prog.generations = so.generations;
  auto report = [&](bool done) {
    if (!so.progress) return;
    prog.measured = static_cast<index_t>(cache.size());
    prog.best_quality = detail::best_quality(cache);
    prog.elapsed_s = std::chrono::duration<double>(clock::now() - t0).count();
    prog.generation_done = done;
    so.progress(prog);
  };
  const Nsga2Evaluate evaluate = [&](const std::vector<Genome>& batch) {
    ObjectiveMatrix F;
    prog.batch = static_cast<index_t>(batch.size());
    prog.evaluated = 0;
    for (const Genome& g : batch) {
      auto key = g.encode();
      auto it = cache.find(key);
      if (it == cache.end()) {
        const Measurement m = measure(g, mo);
        if (wants_quality && std::isnan(m.quality))
          EFFATTN_THROW(parameter_error(concat(op, ": quality returned NaN for genome ", genome_string(g))));
        it = cache.emplace(std::move(key), m).first;
      }
      F.push_back(objective_vector(it->second, so.objectives));
      ++prog.evaluated;
      report(false);
    }
    return F;
  };

  detail::check_nsga2(so.slots, evaluate, no, op);  // before any file is touched
  const detail::json options = detail::search_options_json(so);
  const fs::path dir = so.checkpoint_dir;
  SearchResult res;
  Nsga2State st;
  bool loaded = false;
  if (!so.checkpoint_dir.empty()) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    require(fs::is_directory(dir, ec), op, "checkpoint_dir", "'", so.checkpoint_dir,
            "' is not a directory and cannot be created", ec ? ": " + ec.message() : std::string());
    const auto gens = detail::checkpoint_generations(dir);
    if (!gens.empty() && !so.resume)
      EFFATTN_THROW(parameter_error(concat(op, ": checkpoint_dir '", so.checkpoint_dir, "' already holds ",
                                           detail::checkpoint_name(gens.back()),
                                           " of an earlier search: set resume to continue it, or use an empty "
                                           "directory")));
    index_t from = -1;
    for (index_t g : gens)
      if (g <= so.generations) from = g;
    if (so.resume && !gens.empty() && from < 0)
      EFFATTN_THROW(parameter_error(concat(op, ": checkpoint_dir '", so.checkpoint_dir, "' holds no checkpoint at or "
                                           "before generation ", so.generations)));
    if (from >= 0) {
      detail::load_checkpoint(dir / detail::checkpoint_name(from), from, options, so, st, cache);
      loaded = true;
      res.resumed_from = from;
      prog.resumed_from = from;
    }
  }
  auto checkpoint = [&] {
    if (!so.checkpoint_dir.empty())
      detail::write_json_atomically(dir / detail::checkpoint_name(st.generation),
                                    detail::checkpoint_json(options, st, cache), op);
    prog.generation = st.generation;
    report(true);
  };
  if (!loaded) {
    std::vector<Genome> initial;
    for (const auto& b : search_baselines(so.slots)) initial.push_back(b.genome);
    if (static_cast<index_t>(initial.size()) > so.population) initial.resize(size_t(so.population));
    prog.generation = 0;
    st = nsga2_start(so.slots, evaluate, no, initial);
    checkpoint();
  }
  while (st.generation < so.generations) {
    prog.generation = st.generation + 1;
    nsga2_step(so.slots, evaluate, no, st);
    checkpoint();
  }

  // The result: the front's distinct genomes and the baselines, measured.
  res.population = st.population;
  res.generation = st.generation;
  res.evaluations = st.evaluations;
  res.measured = static_cast<index_t>(cache.size());
  ObjectiveOptions timing = mo;
  timing.objectives = {};
  for (Objective x : {Objective::prefill_ms, Objective::decode_ms})
    if (std::find(so.objectives.begin(), so.objectives.end(), x) == so.objectives.end()) timing.objectives.push_back(x);
  auto complete = [&](SearchEntry& e) {
    auto it = cache.find(e.genome.encode());
    e.measurement = it != cache.end() ? it->second : measure(e.genome, mo);
    if (so.measure_front && !timing.objectives.empty()) {
      const Measurement t = measure(e.genome, timing);
      if (std::isnan(e.measurement.prefill_ms)) e.measurement.prefill_ms = t.prefill_ms;
      if (std::isnan(e.measurement.decode_ms)) e.measurement.decode_ms = t.decode_ms;
    }
  };
  std::set<std::vector<std::int64_t>> seen;
  for (size_t i : st.population.front())
    if (seen.insert(st.population.genomes[i].encode()).second) {
      res.front.push_back({"", st.population.genomes[i], {}});
      complete(res.front.back());
    }
  res.baselines = search_baselines(so.slots);
  for (auto& b : res.baselines) complete(b);

  if (!so.checkpoint_dir.empty()) {
    detail::json objectives = detail::json::array();
    for (Objective x : so.objectives) objectives.push_back(objective_key(x));
    auto entry = [&](const SearchEntry& e) {
      detail::json j = detail::measurement_json(e.genome, e.measurement);
      if (!e.name.empty()) j["name"] = e.name;
      detail::json obj = detail::json::array();
      for (double v : objective_vector(e.measurement, so.objectives)) obj.push_back(detail::jnum(v));
      j["objectives"] = obj;
      return j;
    };
    detail::json front = detail::json::array(), base = detail::json::array();
    for (const auto& e : res.front) front.push_back(entry(e));
    for (const auto& e : res.baselines) base.push_back(entry(e));
    const detail::json out{{"format", "effattn-star-front/1"},
                           {"objectives", objectives},
                           {"quality_name", so.quality_name},
                           {"options", options},
                           {"generations", st.generation},
                           {"evaluations", st.evaluations},
                           {"measured", res.measured},
                           {"context", so.measure.context},
                           {"decode_context", so.measure.decode_context},
                           {"prefill_tokens", so.measure.prefill_tokens},
                           {"threads", so.measure.executor.num_threads},
                           {"front", front},
                           {"baselines", base}};
    const fs::path path = dir / "front.json";
    detail::write_json_atomically(path, out, op);
    res.front_path = path.string();
  }
  return res;
}

}  // namespace star
EFFATTN_NAMESPACE_END
