// SPDX-License-Identifier: MIT
// effattn::star: NSGA-II (Deb, Pratap, Agarwal, Meyarivan, IEEE TEVC 2002) over
// STAR genomes (genome.hpp), as STAR runs it (arXiv 2411.17800): fast
// non-dominated sort, crowding distance, binary tournament on (rank, crowding),
// 2-point crossover on the flattened genome, per-gene mutation, repair,
// elitist survival. Every objective is minimised. Deterministic for a seed on
// every standard library: the random numbers are std::mt19937_64 mapped by
// our own code (std::uniform_int_distribution is implementation-defined).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "genome.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

/// One objective vector per point; every vector has the same length >= 1.
using ObjectiveMatrix = std::vector<std::vector<double>>;

namespace detail {
inline void check_objectives(const ObjectiveMatrix& F, const char* op) {
  if (F.empty()) return;
  const size_t m = F[0].size();
  if (m == 0) EFFATTN_THROW(shape_error(::effattn::detail::concat(op, ": objectives of point 0 are empty")));
  for (size_t i = 0; i < F.size(); ++i) {
    if (F[i].size() != m)
      EFFATTN_THROW(shape_error(::effattn::detail::concat(op, ": point ", i, " has ", F[i].size(),
                                                         " objectives, point 0 has ", m)));
    for (size_t k = 0; k < m; ++k)
      if (std::isnan(F[i][k]))
        EFFATTN_THROW(parameter_error(::effattn::detail::concat(op, ": objective ", k, " of point ", i, " is NaN")));
  }
}
}  // namespace detail

/// a Pareto-dominates b (minimisation): a <= b in every objective and a < b in one.
inline bool dominates(const std::vector<double>& a, const std::vector<double>& b) {
  bool strictly = false;
  for (size_t k = 0; k < a.size(); ++k) {
    if (a[k] > b[k]) return false;
    if (a[k] < b[k]) strictly = true;
  }
  return strictly;
}

/// Deb's fast non-dominated sort: the fronts (front 0 = non-dominated), each
/// listing point indices in increasing order. Equal points are in the same
/// front. +-inf are ordinary values; NaN is a parameter_error.
inline std::vector<std::vector<size_t>> non_dominated_fronts(const ObjectiveMatrix& F) {
  detail::check_objectives(F, "star::non_dominated_sort");
  const size_t n = F.size();
  std::vector<std::vector<size_t>> dominated(n);
  std::vector<size_t> count(n, 0);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) {
      if (dominates(F[i], F[j])) dominated[i].push_back(j), ++count[j];
      else if (dominates(F[j], F[i])) dominated[j].push_back(i), ++count[i];
    }
  std::vector<std::vector<size_t>> fronts;
  std::vector<size_t> cur;
  for (size_t i = 0; i < n; ++i)
    if (count[i] == 0) cur.push_back(i);
  while (!cur.empty()) {
    std::vector<size_t> next;
    for (size_t i : cur)
      for (size_t j : dominated[i])
        if (--count[j] == 0) next.push_back(j);
    std::sort(next.begin(), next.end());
    fronts.push_back(std::move(cur));
    cur = std::move(next);
  }
  return fronts;
}

/// The rank (0-based front index) of every point.
inline std::vector<int> non_dominated_sort(const ObjectiveMatrix& F) {
  const auto fronts = non_dominated_fronts(F);
  std::vector<int> rank(F.size(), 0);
  for (size_t r = 0; r < fronts.size(); ++r)
    for (size_t i : fronts[r]) rank[i] = static_cast<int>(r);
  return rank;
}

/// Crowding distance of the points `front` of F (one value per entry of front,
/// in its order), Deb 2002: per objective, sort the front by value (ties in
/// the order of `front`, a stable sort); the first and last get +inf, an
/// interior point adds (f[next] - f[prev]) / (f_max - f_min). Decisions
/// (the same as pymoo's calc_crowding_distance, docs/star.md):
/// - an objective whose range over the front is 0 or not finite adds nothing
///   to any point (not even +inf to its ends: with every value tied the ends
///   are arbitrary);
/// - a front of 1 or 2 points gets +inf everywhere;
/// - duplicates are not merged: equal points are sorted in front order, so a
///   copy of an end point is interior.
/// pymoo divides the sum by the number of objectives; we do not (Deb), which
/// orders every front the same way.
inline std::vector<double> crowding_distance(const ObjectiveMatrix& F, const std::vector<size_t>& front) {
  detail::check_objectives(F, "star::crowding_distance");
  const size_t n = front.size();
  for (size_t i : front)
    if (i >= F.size())
      EFFATTN_THROW(parameter_error(::effattn::detail::concat("star::crowding_distance: front index ", i,
                                                             " is out of range [0, ", F.size(), ")")));
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> cd(n, 0.0);
  if (n <= 2) {
    std::fill(cd.begin(), cd.end(), inf);
    return cd;
  }
  const size_t m = F[front[0]].size();
  std::vector<size_t> order(n);
  for (size_t k = 0; k < m; ++k) {
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return F[front[a]][k] < F[front[b]][k]; });
    const double lo = F[front[order.front()]][k], hi = F[front[order.back()]][k];
    const double range = hi - lo;
    if (!(range > 0) || !std::isfinite(range)) continue;
    cd[order.front()] = inf;
    cd[order.back()] = inf;
    for (size_t r = 1; r + 1 < n; ++r) {
      // as pymoo: distance to the previous plus distance to the next, each normalised
      const double prev = F[front[order[r - 1]]][k], cur = F[front[order[r]]][k], next = F[front[order[r + 1]]][k];
      cd[order[r]] += (cur - prev) / range + (next - cur) / range;
    }
  }
  return cd;
}

/// Hypervolume of a 2-objective point set (minimisation) against the
/// reference point ref: the area dominated by the points and bounded by ref.
/// Points not strictly better than ref in both objectives add nothing.
inline double hypervolume_2d(const ObjectiveMatrix& F, const std::vector<double>& ref) {
  detail::check_objectives(F, "star::hypervolume_2d");
  ::effattn::detail::require(ref.size() == 2, "star::hypervolume_2d", "ref", "must have 2 objectives, got ",
                             ref.size());
  std::vector<std::pair<double, double>> p;
  for (const auto& f : F) {
    ::effattn::detail::require(f.size() == 2, "star::hypervolume_2d", "points", "must have 2 objectives, got ",
                               f.size());
    if (f[0] < ref[0] && f[1] < ref[1]) p.emplace_back(f[0], f[1]);
  }
  std::sort(p.begin(), p.end());
  double hv = 0, best_y = ref[1];
  for (const auto& q : p)
    if (q.second < best_y) {
      hv += (ref[0] - q.first) * (best_y - q.second);
      best_y = q.second;
    }
  return hv;
}

// ------------------------------------------------------------------ random

namespace detail {
/// Uniform integer in [0, n) from a 64-bit engine by rejection (exact, the
/// same sequence on every standard library). n >= 1.
inline std::uint64_t uniform_below(std::mt19937_64& rng, std::uint64_t n) {
  const std::uint64_t rem = (0 - n) % n;  // 2^64 mod n
  std::uint64_t x = rng();
  while (x < rem) x = rng();  // reject the first 2^64 mod n values: the rest is a multiple of n
  return x % n;
}
/// Uniform integer in [lo, hi].
inline std::int64_t uniform_int(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {
  const std::uint64_t span = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(lo) + 1;
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(lo) + uniform_below(rng, span));
}
/// Uniform double in [0, 1) with 53 random bits.
inline double uniform_01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }
}  // namespace detail

// ------------------------------------------------------------------ search

/// How the next population is chosen.
enum class Survival {
  /// (mu + lambda): parents and offspring together, by rank then crowding
  /// (Deb 2002). The best points always survive.
  mu_plus_lambda,
  /// Generational with elites: the `elites` best parents (rank, then
  /// crowding) survive unchanged and population - elites offspring fill the rest.
  elites,
};

struct Nsga2Options {
  index_t population = 16;        ///< mu = lambda (the paper's 16)
  index_t generations = 18;       ///< generations after the initial one (the paper's 18)
  double crossover_rate = 0.9;    ///< probability a pair of parents is recombined (2-point), else copied
  double mutation_rate = 0.1;     ///< per-gene probability of a new value uniform in the gene's range
  Survival survival = Survival::mu_plus_lambda;
  index_t elites = 2;             ///< for Survival::elites, in [0, population)
  std::uint64_t seed = 0;
};

/// One scored population, with rank and crowding within it.
struct Nsga2Population {
  std::vector<Genome> genomes;
  ObjectiveMatrix objectives;
  std::vector<int> rank;
  std::vector<double> crowding;
  /// Indices of the non-dominated members (rank 0), increasing.
  std::vector<size_t> front() const {
    std::vector<size_t> f;
    for (size_t i = 0; i < rank.size(); ++i)
      if (rank[i] == 0) f.push_back(i);
    return f;
  }
};

struct Nsga2Result {
  Nsga2Population population;  ///< the final population
  index_t evaluations = 0;     ///< genomes evaluated (initial + every offspring)
};

/// Scores a batch of genomes: one objective vector per genome, in order, every
/// vector of the same length (all minimised). Called once per generation with
/// all its new members, so it may evaluate them in parallel.
using Nsga2Evaluate = std::function<ObjectiveMatrix(const std::vector<Genome>&)>;
/// A batch evaluator from a per-genome one: the genomes of a batch are scored
/// on the executor's threads (OpenMP, or its host-pool hook), each by one
/// call of `one`, results in batch order. `one` must be safe to call
/// concurrently; its first exception is rethrown. Executor(1): in order, serially.
inline Nsga2Evaluate parallel_evaluator(std::function<std::vector<double>(const Genome&)> one,
                                        const Executor& ex = {}) {
  ::effattn::detail::require(static_cast<bool>(one), "star::parallel_evaluator", "one", "must be set");
  ::effattn::detail::check_executor(ex, "star::parallel_evaluator");
  return [one = std::move(one), ex](const std::vector<Genome>& batch) {
    ObjectiveMatrix F(batch.size());
    ::effattn::detail::parallel_items(
        ex, static_cast<index_t>(batch.size()), [] { return 0; },
        [&](index_t i, int&) { F[static_cast<size_t>(i)] = one(batch[static_cast<size_t>(i)]); });
    return F;
  };
}

/// Called after the initial population (generation 0) and after each generation.
using Nsga2Observer = std::function<void(index_t generation, const Nsga2Population&)>;

namespace detail {
inline void rank_and_crowd(Nsga2Population& p) {
  const auto fronts = non_dominated_fronts(p.objectives);
  p.rank.assign(p.genomes.size(), 0);
  p.crowding.assign(p.genomes.size(), 0.0);
  for (size_t r = 0; r < fronts.size(); ++r) {
    const auto cd = crowding_distance(p.objectives, fronts[r]);
    for (size_t j = 0; j < fronts[r].size(); ++j) {
      p.rank[fronts[r][j]] = static_cast<int>(r);
      p.crowding[fronts[r][j]] = cd[j];
    }
  }
}
/// The indices of the `keep` best of p by rank, then crowding (larger first),
/// then index; crowding is computed within each front of p.
inline std::vector<size_t> best_indices(const Nsga2Population& p, size_t keep) {
  std::vector<size_t> idx(p.genomes.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    if (p.rank[a] != p.rank[b]) return p.rank[a] < p.rank[b];
    return p.crowding[a] > p.crowding[b];
  });
  idx.resize(std::min(keep, idx.size()));
  return idx;
}
inline Nsga2Population subset(const Nsga2Population& p, const std::vector<size_t>& idx) {
  Nsga2Population s;
  for (size_t i : idx) {
    s.genomes.push_back(p.genomes[i]);
    s.objectives.push_back(p.objectives[i]);
  }
  rank_and_crowd(s);
  return s;
}
inline ObjectiveMatrix evaluate_checked(const Nsga2Evaluate& eval, const std::vector<Genome>& batch,
                                        size_t& n_obj) {
  const char* op = "star::nsga2";
  ObjectiveMatrix F = eval(batch);
  if (F.size() != batch.size())
    EFFATTN_THROW(shape_error(::effattn::detail::concat(op, ": evaluate returned ", F.size(),
                                                       " objective vectors for ", batch.size(), " genomes")));
  check_objectives(F, op);
  if (!F.empty()) {
    if (n_obj == 0) n_obj = F[0].size();
    if (F[0].size() != n_obj)
      EFFATTN_THROW(shape_error(::effattn::detail::concat(op, ": evaluate returned ", F[0].size(),
                                                         " objectives, earlier calls ", n_obj)));
  }
  return F;
}
}  // namespace detail

/// A run between generations (nsga2_start / nsga2_step): everything the next
/// generation depends on, so a run can stop after any generation and go on
/// later (star/search.hpp checkpoints it) with exactly the same result.
struct Nsga2State {
  index_t generation = 0;      ///< generations done after the initial population (0: just the initial one)
  Nsga2Population population;  ///< ranked and crowded
  index_t evaluations = 0;     ///< genomes evaluated so far
  std::mt19937_64 rng;         ///< the engine after that generation
};

/// The engine's state as text (the standard's operator<< format, the same on
/// every standard library), and back. A malformed text is a parameter_error.
inline std::string rng_state(const std::mt19937_64& rng) {
  std::ostringstream os;
  os << rng;
  return os.str();
}
inline std::mt19937_64 rng_from_state(const std::string& text) {
  std::istringstream is(text);
  std::mt19937_64 rng;
  is >> rng;
  std::string rest;
  if (is.fail() || (is >> rest, !rest.empty()))
    EFFATTN_THROW(parameter_error(::effattn::detail::concat(
        "star::rng_from_state: text is not a std::mt19937_64 state (312 words and an index)")));
  return rng;
}

/// A population of genomes with their objective vectors, ranked (front) and
/// crowded as nsga2 keeps it. Objective vectors are checked as evaluate's are.
inline Nsga2Population ranked_population(std::vector<Genome> genomes, ObjectiveMatrix objectives) {
  const char* op = "star::ranked_population";
  if (genomes.size() != objectives.size())
    EFFATTN_THROW(shape_error(::effattn::detail::concat(op, ": ", genomes.size(), " genomes but ", objectives.size(),
                                                       " objective vectors")));
  detail::check_objectives(objectives, op);
  Nsga2Population p;
  p.genomes = std::move(genomes);
  p.objectives = std::move(objectives);
  detail::rank_and_crowd(p);
  return p;
}

namespace detail {
inline void check_nsga2(index_t slots, const Nsga2Evaluate& evaluate, const Nsga2Options& opt, const char* op) {
  using ::effattn::detail::require;
  require(slots >= 1, op, "slots", "must be >= 1, got ", slots);
  require(opt.population >= 2, op, "population", "must be >= 2, got ", opt.population);
  require(opt.generations >= 0, op, "generations", "must be >= 0, got ", opt.generations);
  require(opt.crossover_rate >= 0 && opt.crossover_rate <= 1, op, "crossover_rate", "must be in [0, 1], got ",
          opt.crossover_rate);
  require(opt.mutation_rate >= 0 && opt.mutation_rate <= 1, op, "mutation_rate", "must be in [0, 1], got ",
          opt.mutation_rate);
  require(opt.survival == Survival::mu_plus_lambda || (opt.elites >= 0 && opt.elites < opt.population), op,
          "elites", "must be in [0, population) = [0, ", opt.population, "), got ", opt.elites);
  require(static_cast<bool>(evaluate), op, "evaluate", "must be set");
}
}  // namespace detail

/// The initial population of nsga2 (below): `initial` (each repaired), then
/// random genomes up to options.population, evaluated as one batch; ranked;
/// generation 0. options.generations is not used here.
inline Nsga2State nsga2_start(index_t slots, const Nsga2Evaluate& evaluate, const Nsga2Options& opt = {},
                              const std::vector<Genome>& initial = {}) {
  const char* op = "star::nsga2";
  using ::effattn::detail::require;
  detail::check_nsga2(slots, evaluate, opt, op);
  require(static_cast<index_t>(initial.size()) <= opt.population, op, "initial", "holds ", initial.size(),
          " genomes, more than the population ", opt.population);
  for (size_t i = 0; i < initial.size(); ++i)
    if (initial[i].slots() != slots)
      EFFATTN_THROW(shape_error(::effattn::detail::concat(op, ": initial genome ", i, " has ", initial[i].slots(),
                                                         " slots, expected ", slots)));
  Nsga2State st;
  st.rng.seed(opt.seed);
  const index_t genes = slots * kGenesPerSlot;
  std::vector<Genome> genomes;
  for (const auto& g : initial) genomes.push_back(g.repaired());
  while (static_cast<index_t>(genomes.size()) < opt.population) {
    std::vector<std::int64_t> flat(static_cast<size_t>(genes));
    for (index_t j = 0; j < genes; ++j) {
      const auto r = gene_range(static_cast<int>(j % kGenesPerSlot), slots);
      flat[static_cast<size_t>(j)] = detail::uniform_int(st.rng, r.first, r.second);
    }
    Genome g = Genome::decode(flat, slots);
    g.repair();
    genomes.push_back(std::move(g));
  }
  size_t n_obj = 0;
  ObjectiveMatrix F = detail::evaluate_checked(evaluate, genomes, n_obj);
  st.evaluations = static_cast<index_t>(genomes.size());
  st.population = ranked_population(std::move(genomes), std::move(F));
  return st;
}

/// One generation of nsga2 (below) on `st`: parents, offspring, one batch
/// evaluation, survival; st.generation + 1. `st` must be a state of the same
/// slots and options (population size, genome slots, objective counts are
/// checked: shape_error). If evaluate throws, `st` is unchanged.
inline void nsga2_step(index_t slots, const Nsga2Evaluate& evaluate, const Nsga2Options& opt, Nsga2State& st) {
  const char* op = "star::nsga2";
  detail::check_nsga2(slots, evaluate, opt, op);
  const Nsga2Population& pop = st.population;
  const size_t mu = static_cast<size_t>(opt.population);
  if (pop.genomes.size() != mu || pop.objectives.size() != mu || pop.rank.size() != mu || pop.crowding.size() != mu)
    EFFATTN_THROW(shape_error(::effattn::detail::concat(op, ": state population holds ", pop.genomes.size(),
                                                       " genomes, ", pop.objectives.size(), " objective vectors, ",
                                                       pop.rank.size(), " ranks and ", pop.crowding.size(),
                                                       " crowding distances; population is ", mu)));
  for (size_t i = 0; i < mu; ++i)
    if (pop.genomes[i].slots() != slots)
      EFFATTN_THROW(shape_error(::effattn::detail::concat(op, ": state genome ", i, " has ", pop.genomes[i].slots(),
                                                         " slots, expected ", slots)));
  detail::check_objectives(pop.objectives, op);
  size_t n_obj = pop.objectives[0].size();

  std::mt19937_64 rng = st.rng;  // committed only when the generation completes
  const index_t genes = slots * kGenesPerSlot;
  const size_t n_elite = opt.survival == Survival::elites ? static_cast<size_t>(opt.elites) : 0;
  const size_t lambda = mu - n_elite;
  auto tournament = [&]() -> size_t {
    const size_t a = static_cast<size_t>(detail::uniform_below(rng, mu));
    size_t b = static_cast<size_t>(detail::uniform_below(rng, mu - 1));
    if (b >= a) ++b;  // distinct from a
    if (pop.rank[a] != pop.rank[b]) return pop.rank[a] < pop.rank[b] ? a : b;
    if (pop.crowding[b] > pop.crowding[a]) return b;
    return a;
  };
  std::vector<Genome> children;
  while (children.size() < lambda) {
    auto p1 = pop.genomes[tournament()].encode();
    auto p2 = pop.genomes[tournament()].encode();
    if (genes >= 3 && detail::uniform_01(rng) < opt.crossover_rate) {
      // two distinct cut points in [1, genes - 1]: swap [c1, c2)
      std::int64_t c1 = detail::uniform_int(rng, 1, genes - 1);
      std::int64_t c2 = detail::uniform_int(rng, 1, genes - 2);
      if (c2 >= c1) ++c2;
      if (c1 > c2) std::swap(c1, c2);
      for (std::int64_t j = c1; j < c2; ++j) std::swap(p1[static_cast<size_t>(j)], p2[static_cast<size_t>(j)]);
    }
    for (auto* child : {&p1, &p2}) {
      for (index_t j = 0; j < genes; ++j)
        if (detail::uniform_01(rng) < opt.mutation_rate) {
          const auto r = gene_range(static_cast<int>(j % kGenesPerSlot), slots);
          (*child)[static_cast<size_t>(j)] = detail::uniform_int(rng, r.first, r.second);
        }
      Genome g = Genome::decode(*child, slots);
      g.repair();
      if (children.size() < lambda) children.push_back(std::move(g));
    }
  }
  const ObjectiveMatrix child_f = detail::evaluate_checked(evaluate, children, n_obj);

  Nsga2Population next;
  if (opt.survival == Survival::mu_plus_lambda) {
    Nsga2Population all = pop;
    for (size_t i = 0; i < children.size(); ++i) {
      all.genomes.push_back(children[i]);
      all.objectives.push_back(child_f[i]);
    }
    detail::rank_and_crowd(all);
    // Fill by whole fronts; the front that does not fit keeps its most
    // crowded-apart members (crowding within that front of all).
    next = detail::subset(all, detail::best_indices(all, mu));
  } else {
    Nsga2Population merged = detail::subset(pop, detail::best_indices(pop, n_elite));
    for (size_t i = 0; i < children.size(); ++i) {
      merged.genomes.push_back(children[i]);
      merged.objectives.push_back(child_f[i]);
    }
    detail::rank_and_crowd(merged);
    next = std::move(merged);
  }
  st.population = std::move(next);
  st.rng = rng;
  st.evaluations += static_cast<index_t>(children.size());
  st.generation += 1;
}

/// NSGA-II over genomes of `slots` slots. The initial population is `initial`
/// (each repaired; e.g. the baselines) followed by random genomes (each gene
/// uniform in its range, then repaired) up to options.population; `initial`
/// longer than the population is a parameter_error. Each generation:
/// binary tournaments (two distinct members drawn uniformly; lower rank wins,
/// then larger crowding, then the first drawn) pick parent pairs; with
/// probability crossover_rate a pair swaps the genes between two cut points
/// c1 < c2 drawn uniformly from [1, genes - 1] (2-point crossover on the
/// flattened genome; else the children are copies); every gene of each child
/// is redrawn uniformly in its range with probability mutation_rate; each
/// child is repaired; the offspring are evaluated as one batch; survival
/// follows options.survival. Deterministic for options.seed (and a
/// deterministic evaluate). The same as nsga2_start followed by
/// options.generations calls of nsga2_step.
inline Nsga2Result nsga2(index_t slots, const Nsga2Evaluate& evaluate, const Nsga2Options& opt = {},
                         const std::vector<Genome>& initial = {}, const Nsga2Observer& observe = {}) {
  Nsga2State st = nsga2_start(slots, evaluate, opt, initial);
  if (observe) observe(0, st.population);
  while (st.generation < opt.generations) {
    nsga2_step(slots, evaluate, opt, st);
    if (observe) observe(st.generation, st.population);
  }
  Nsga2Result res;
  res.population = std::move(st.population);
  res.evaluations = st.evaluations;
  return res;
}

}  // namespace star
EFFATTN_NAMESPACE_END
