// SPDX-License-Identifier: MIT
// The command line of a STAR search (examples/star_train_search.cpp): flags,
// the search options they give, progress lines and the final tables. A
// program supplies only the quality callback (and its description):
//
//   int main(int argc, char** argv) {
//     return star_cli::run(argc, argv, "my_search", [](const star_cli::Args& a) {
//       return star_cli::Quality{"MQAR accuracy", "mqar v=64 ...", my_quality_fn};
//     });
//   }
//
// Flags (defaults in Args): --population N --generations N --slots N --width N
// --heads N --vocab N --objectives quality,cache_bytes --checkpoint DIR
// --resume --seed N --threads N --paper (population 16, 18 generations, the
// paper's) --context N --decode N --repeats N --quiet; --steps N --batch N (the
// training budget of a quality that trains: star_train_search with LibTorch).
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <effattn/core/isa.hpp>
#include <effattn/star/search.hpp>

namespace star_cli {

namespace star = effattn::star;
using effattn::index_t;

struct Args {
  index_t population = 8, generations = 5, slots = 4, width = 64, heads = 4, vocab = 32;
  index_t context = 256, decode = 8;
  index_t steps = 700, batch = 32;  ///< a training quality's budget (star_train_search with LibTorch)
  int repeats = 2, threads = 1;
  std::uint64_t seed = 0;
  std::vector<star::Objective> objectives = {star::Objective::quality, star::Objective::cache_bytes};
  std::string checkpoint = "results/star_search";
  bool resume = false, quiet = false;
};

/// What a program plugs in: the quality callback, what it measures (for
/// front.json and the tables) and a tag describing it (task, budget), which
/// a resumed search must match.
struct Quality {
  std::string name;
  std::string tag;
  star::QualityFn fn;
  /// Optional: run after the front is printed (e.g. serve the best genome).
  std::function<void(const star::SearchResult&)> after;
};

[[noreturn]] inline void usage(const char* program, const std::string& why) {
  std::fprintf(stderr,
               "%s: %s\nusage: %s [--population N] [--generations N] [--paper] [--slots N] [--width N] [--heads N] "
               "[--vocab N] [--objectives quality,cache_bytes] [--checkpoint DIR] [--resume] [--seed N] "
               "[--threads N] [--context N] [--decode N] [--repeats N] [--steps N] [--batch N] [--quiet]\n"
               "  objectives: quality, params, cache_bytes, prefill_ms, decode_ms, peak_bytes\n",
               program, why.c_str(), program);
  std::exit(2);
}

inline Args parse(int argc, char** argv, const char* program) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--paper") {
      a.population = 16;
      a.generations = 18;
      continue;
    }
    if (k == "--resume") {
      a.resume = true;
      continue;
    }
    if (k == "--quiet") {
      a.quiet = true;
      continue;
    }
    if (i + 1 >= argc) usage(program, "missing value after " + k);
    const char* v = argv[++i];
    char* end = nullptr;
    const long long n = std::strtoll(v, &end, 10);
    const bool num = end && *end == '\0' && *v != '\0';
    auto need = [&](long long lo) {
      if (!num || n < lo) usage(program, k + " needs an integer >= " + std::to_string(lo) + ", got '" + v + "'");
      return n;
    };
    if (k == "--population") a.population = need(2);
    else if (k == "--generations") a.generations = need(0);
    else if (k == "--slots") a.slots = need(1);
    else if (k == "--width") a.width = need(2);
    else if (k == "--heads") a.heads = need(1);
    else if (k == "--vocab") a.vocab = need(1);
    else if (k == "--context") a.context = need(1);
    else if (k == "--decode") a.decode = need(1);
    else if (k == "--repeats") a.repeats = int(need(1));
    else if (k == "--threads") a.threads = int(need(1));
    else if (k == "--steps") a.steps = need(1);
    else if (k == "--batch") a.batch = need(1);
    else if (k == "--seed") a.seed = static_cast<std::uint64_t>(need(0));
    else if (k == "--checkpoint") a.checkpoint = v;
    else if (k == "--objectives") {
      a.objectives.clear();
      std::stringstream ss(v);
      std::string o;
      while (std::getline(ss, o, ',')) {
        try {
          a.objectives.push_back(star::parse_objective(o));
        } catch (const std::invalid_argument& e) {
          usage(program, e.what());
        }
      }
      if (a.objectives.empty()) usage(program, "--objectives needs at least one");
    } else {
      usage(program, "unknown flag " + k);
    }
  }
  return a;
}

/// The search options of the flags (measuring dims and contexts), without the quality.
inline star::SearchOptions options(const Args& a) {
  star::SearchOptions so;
  so.population = a.population;
  so.generations = a.generations;
  so.slots = a.slots;
  so.seed = a.seed;
  so.objectives = a.objectives;
  so.measure.model.vocab = a.vocab;
  so.measure.model.width = a.width;
  so.measure.model.heads = a.heads;
  so.measure.context = a.context;
  so.measure.prefill_tokens = a.context;
  so.measure.decode_context = a.context;
  so.measure.decode_tokens = a.decode;
  so.measure.repeats = a.repeats;
  so.measure.executor = effattn::Executor(a.threads);
  so.measure.seed = a.seed;
  so.checkpoint_dir = a.checkpoint;
  so.resume = a.resume;
  return so;
}

/// One line per progress report: per candidate (overwritten in place on a
/// terminal) and per generation.
inline star::SearchProgressFn printer(bool quiet) {
  return [quiet](const star::SearchProgress& p) {
    if (quiet && !p.generation_done) return;
    char q[32] = "-";
    if (p.best_quality == p.best_quality) std::snprintf(q, sizeof q, "%.4f", p.best_quality);
    if (p.generation_done)
      std::printf("generation %lld/%lld done: %lld genomes measured, best quality %s, %.1f s%s\n",
                  (long long)p.generation, (long long)p.generations, (long long)p.measured, q, p.elapsed_s,
                  p.resumed_from >= 0 ? " (resumed)" : "");
    else
      std::printf("  generation %lld: candidate %lld/%lld, %lld measured, best quality %s, %.1f s\n",
                  (long long)p.generation, (long long)p.evaluated, (long long)p.batch, (long long)p.measured, q,
                  p.elapsed_s);
    std::fflush(stdout);
  };
}

inline void print_entries(const char* title, const std::vector<star::SearchEntry>& es, const std::string& qname) {
  std::printf("\n%s\n  %10s %12s %11s %11s %10s  %s\n", title, "params", "cache_B", "prefill_ms", "decode_ms",
              "quality", "genome");
  for (const auto& e : es) {
    const auto& m = e.measurement;
    std::printf("  %10lld %12lld %11.3f %11.4f %10.4f  %s%s\n", (long long)m.params, (long long)m.cache_bytes,
                m.prefill_ms, m.decode_ms, m.quality, e.name.empty() ? "" : (e.name + ": ").c_str(),
                star::genome_string(e.genome).c_str());
  }
  std::printf("  (quality: %s)\n", qname.c_str());
}

/// Parses the flags, asks `make_quality` for the callback, runs the search
/// with progress, prints the front and the baselines. Returns the exit code:
/// 0, or 2 for bad flags, options or checkpoints (the message on stderr).
inline int run(int argc, char** argv, const char* program, const std::function<Quality(const Args&)>& make_quality) {
  const Args a = parse(argc, argv, program);
  star::SearchOptions so = options(a);
  Quality q;
  try {
    q = make_quality(a);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 2;
  }
  so.tag = q.tag;
  so.quality_name = q.name;
  so.progress = printer(a.quiet);
  std::printf("STAR search: %lld slots, d=%lld, %lld heads, vocab %lld; population %lld, %lld generations, seed %llu;"
              " %d thread(s), ISA level %s\nminimising",
              (long long)a.slots, (long long)a.width, (long long)a.heads, (long long)a.vocab, (long long)a.population,
              (long long)a.generations, (unsigned long long)a.seed, a.threads,
              effattn::to_string(effattn::active_isa()));
  for (auto o : a.objectives) std::printf(" %s", star::objective_name(o));
  std::printf("; quality = %s\ncheckpoints in %s%s\n", q.name.c_str(), a.checkpoint.c_str(),
              a.resume ? " (resuming)" : "");
  star::SearchResult r;
  try {
    r = star::search(so, q.fn);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 2;
  } catch (const std::exception& e) {
    // The quality callback failed (e.g. training): the generations done are checkpointed.
    std::fprintf(stderr, "%s: search stopped: %s\n%s", program, e.what(),
                 so.checkpoint_dir.empty() ? ""
                                           : ("the last complete generation is in " + so.checkpoint_dir +
                                              ": rerun with the same flags and --resume to continue\n")
                                                 .c_str());
    return 1;
  }
  std::printf("\n%lld generations, %lld candidates, %lld distinct genomes measured%s\n", (long long)r.generation,
              (long long)r.evaluations, (long long)r.measured,
              r.resumed_from >= 0 ? (" (resumed from generation " + std::to_string(r.resumed_from) + ")").c_str()
                                  : "");
  print_entries("final Pareto front:", r.front, q.name);
  print_entries("baselines:", r.baselines, q.name);
  if (!r.front_path.empty()) std::printf("\nwrote %s\n", r.front_path.c_str());
  if (q.after) {
    try {
      q.after(r);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", program, e.what());
      return 1;
    }
  }
  return 0;
}

}  // namespace star_cli
