// SPDX-License-Identifier: MIT
// STAR: an efficiency-only architecture search measured on this CPU.
//
//   star_search [--population 16] [--generations 18] [--slots 12] [--width 64] [--heads 4]
//               [--vocab 256] [--prefill 256] [--context 256] [--decode 8] [--repeats 2]
//               [--threads 1] [--seed 0] [--objectives cache_bytes,decode_ms]
//
// NSGA-II (star/nsga2.hpp; the paper's population 16 and 18 generations by
// default) evolves backbone genomes of `slots` LIV slots. Every candidate is
// compiled to a model (star/model.hpp: embedding, pre-norm residual LIV
// blocks, tied head, random weights) and measured here (star/objectives.hpp):
// prefill time of `prefill` tokens, decode time per token after `context`
// tokens, next to its parameters and cache bytes at `context` (analytic,
// equal to the model's buffers). The initial population holds the two
// baselines, Transformer++ and the striped hybrid, and random genomes.
// After each generation it prints the population's Pareto front on the chosen
// objectives; at the end, the final front with every figure, and the
// baselines for comparison.
//
// There is no quality objective here (part 2 trains candidates), so the
// search is free to drop attention altogether: the front shows what each
// operator costs on this machine, not which architecture is good. Timings
// are on `threads` threads, one candidate at a time, the minimum of
// `repeats` runs; they are noisy at these small sizes, which is part of
// what the search must live with.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <effattn/core/isa.hpp>
#include <effattn/star/star.hpp>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace star = effattn::star;
using effattn::index_t;
using star::Objective;

namespace {

struct Args {
  index_t population = 16, generations = 18, slots = 12, width = 64, heads = 4, vocab = 256;
  index_t prefill = 256, context = 256, decode = 8;
  int repeats = 2, threads = 1;
  std::uint64_t seed = 0;
  std::vector<Objective> objectives = {Objective::cache_bytes, Objective::decode_ms};
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "star_search: %s\nusage: star_search [--population N] [--generations N] [--slots N] [--width N] "
               "[--heads N] [--vocab N] [--prefill N] [--context N] [--decode N] [--repeats N] [--threads N] "
               "[--seed N] [--objectives a,b,...]\n  objectives: params, cache_bytes, prefill_ms, decode_ms, "
               "peak_bytes\n",
               why);
  std::exit(2);
}

Objective parse_objective(const std::string& s) {
  for (Objective o : {Objective::params, Objective::cache_bytes, Objective::prefill_ms, Objective::decode_ms,
                      Objective::peak_bytes})
    if (s == star::objective_name(o)) return o;
  usage(("unknown objective '" + s + "'").c_str());
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + k).c_str());
    const char* v = argv[++i];
    char* end = nullptr;
    const long long n = std::strtoll(v, &end, 10);
    const bool num = end && *end == '\0';
    auto need = [&](long long lo) {
      if (!num || n < lo) usage((k + " needs an integer >= " + std::to_string(lo) + ", got '" + v + "'").c_str());
      return n;
    };
    if (k == "--population") a.population = need(2);
    else if (k == "--generations") a.generations = need(0);
    else if (k == "--slots") a.slots = need(1);
    else if (k == "--width") a.width = need(1);
    else if (k == "--heads") a.heads = need(1);
    else if (k == "--vocab") a.vocab = need(1);
    else if (k == "--prefill") a.prefill = need(1);
    else if (k == "--context") a.context = need(0);
    else if (k == "--decode") a.decode = need(1);
    else if (k == "--repeats") a.repeats = int(need(1));
    else if (k == "--threads") a.threads = int(need(1));
    else if (k == "--seed") a.seed = static_cast<std::uint64_t>(need(0));
    else if (k == "--objectives") {
      a.objectives.clear();
      std::stringstream ss(v);
      std::string o;
      while (std::getline(ss, o, ',')) a.objectives.push_back(parse_objective(o));
      if (a.objectives.empty()) usage("--objectives needs at least one");
    } else {
      usage(("unknown flag " + k).c_str());
    }
  }
  return a;
}

/// A genome, compactly: each slot's class, then /f<group><a|p> when it shares
/// featurizers (all, partial) and /g<group><kv|qk> when it shares features.
std::string describe(const star::Genome& g) {
  std::string s;
  for (index_t i = 0; i < g.slots(); ++i) {
    const auto& x = g[i];
    if (i) s += ' ';
    s += star::class_name(g.liv_class(i));
    if (x.fs_strategy != 1) s += "/f" + std::to_string(x.fs_group) + (x.fs_strategy == 2 ? "a" : "p");
    if (x.fg_strategy != 1) s += "/g" + std::to_string(x.fg_group) + (x.fg_strategy == 2 ? "kv" : "qk");
  }
  return s;
}

// The table's columns: every candidate is measured on all of them, the search
// minimises the chosen subset.
const std::vector<Objective> kColumns = {Objective::params, Objective::cache_bytes, Objective::prefill_ms,
                                         Objective::decode_ms};

void print_row(const std::string& label, const std::vector<double>& c) {
  std::printf("  %10.0f %12.0f %11.3f %11.4f  %s\n", c[0], c[1], c[2], c[3], label.c_str());
}
void print_header() {
  std::printf("  %10s %12s %11s %11s  %s\n", "params", "cache_B", "prefill_ms", "decode_ms", "genome");
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  star::ObjectiveOptions o;
  o.model.vocab = a.vocab;
  o.model.width = a.width;
  o.model.heads = a.heads;
  o.context = a.context;
  o.prefill_tokens = a.prefill;
  o.decode_context = a.context;
  o.decode_tokens = a.decode;
  o.repeats = a.repeats;
  o.executor = effattn::Executor(a.threads);
  o.seed = a.seed;
  o.objectives = kColumns;
  for (Objective x : a.objectives)
    if (std::find(o.objectives.begin(), o.objectives.end(), x) == o.objectives.end()) o.objectives.push_back(x);

  std::printf("STAR efficiency search: %lld slots, d=%lld, %lld heads, vocab %lld; prefill %lld tokens, decode at "
              "context %lld; %d thread(s), ISA level %s\n",
              (long long)a.slots, (long long)a.width, (long long)a.heads, (long long)a.vocab, (long long)a.prefill,
              (long long)a.context, a.threads, effattn::to_string(effattn::active_isa()));
  std::printf("population %lld, %lld generations, seed %llu; minimising", (long long)a.population,
              (long long)a.generations, (unsigned long long)a.seed);
  for (Objective x : a.objectives) std::printf(" %s", star::objective_name(x));
  std::printf("\n");

  // Every candidate measured once on all columns (kept for the tables), the
  // search sees the chosen objectives in their order.
  std::map<std::vector<std::int64_t>, std::vector<double>> seen;
  star::Nsga2Evaluate all;
  try {
    all = star::objective_evaluator(o);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "star_search: %s\n", e.what());
    return 2;
  }
  std::vector<size_t> pick;
  for (Objective x : a.objectives)
    pick.push_back(size_t(std::find(o.objectives.begin(), o.objectives.end(), x) - o.objectives.begin()));
  auto evaluate = [&](const std::vector<star::Genome>& batch) {
    const star::ObjectiveMatrix F = all(batch);
    star::ObjectiveMatrix out;
    for (size_t i = 0; i < batch.size(); ++i) {
      seen[batch[i].encode()] = F[i];
      std::vector<double> v;
      for (size_t k : pick) v.push_back(F[i][k]);
      out.push_back(v);
    }
    return out;
  };

  const auto t0 = std::chrono::steady_clock::now();
  auto observe = [&](index_t gen, const star::Nsga2Population& p) {
    std::set<std::vector<std::int64_t>> shown;
    index_t n = 0;
    for (size_t i : p.front()) n += shown.insert(p.genomes[i].encode()).second ? 1 : 0;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("\ngeneration %lld (%.1f s): front of %lld distinct genome(s)\n", (long long)gen, s, (long long)n);
    print_header();
    shown.clear();
    for (size_t i : p.front())
      if (shown.insert(p.genomes[i].encode()).second) print_row(describe(p.genomes[i]), seen.at(p.genomes[i].encode()));
  };

  star::Nsga2Options no;
  no.population = a.population;
  no.generations = a.generations;
  no.seed = a.seed;
  const std::vector<star::Genome> baselines = {star::transformer_pp(a.slots), star::striped_hybrid(a.slots)};
  star::Nsga2Result r;
  try {
    r = star::nsga2(a.slots, evaluate, no, baselines, observe);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "star_search: %s\n", e.what());
    return 2;
  }

  std::printf("\nfinal Pareto front (%lld evaluations, %.1f s):\n", (long long)r.evaluations,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  print_header();
  std::set<std::vector<std::int64_t>> shown;
  for (size_t i : r.population.front())
    if (shown.insert(r.population.genomes[i].encode()).second)
      print_row(describe(r.population.genomes[i]), seen.at(r.population.genomes[i].encode()));
  std::printf("\nbaselines:\n");
  print_header();
  print_row("Transformer++: " + describe(baselines[0]), seen.at(baselines[0].encode()));
  print_row("striped hybrid: " + describe(baselines[1]), seen.at(baselines[1].encode()));
  return 0;
}
