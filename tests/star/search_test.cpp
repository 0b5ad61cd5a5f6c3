// SPDX-License-Identifier: MIT
// star search driver: a search with a cheap synthetic quality is
// deterministic; it writes one checkpoint per generation and front.json;
// a search interrupted by a failing evaluation and resumed ends exactly where
// an uninterrupted one does (and may be extended); a repeated candidate is
// not measured again; corrupt checkpoints and changed options are rejected
// with clear errors; progress is reported.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include <effattn/star/search.hpp>

#include "support/testing.hpp"

namespace star = effattn::star;
namespace fs = std::filesystem;
using effattn::index_t;
using star::Objective;
using testing_util::expect_throw_with;

namespace {

/// A fresh, empty directory under the temp dir (removed by the destructor).
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("effattn_search_test_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

/// Deterministic, cheap, and it prefers attention: a stand-in for a trained accuracy.
double synthetic_quality(const star::Genome& g) {
  double q = 0;
  for (index_t i = 0; i < g.slots(); ++i) {
    const auto f = star::family(g.liv_class(i));
    q += f == star::LivFamily::attention ? 1.0 : f == star::LivFamily::recurrence ? 0.6 : 0.2;
    q += 0.01 * double(g[i].cls % 5) + 0.001 * double(g[i].fs_strategy);
  }
  return q / double(g.slots());
}

star::SearchOptions small_options() {
  star::SearchOptions so;
  so.population = 6;
  so.generations = 3;
  so.slots = 5;
  so.seed = 3;
  so.objectives = {Objective::quality, Objective::cache_bytes};
  so.measure.model.vocab = 32;
  so.measure.model.width = 16;
  so.measure.model.heads = 4;
  so.measure.model.longconv_l_max = 64;
  so.measure.context = 64;
  so.measure.prefill_tokens = 8;
  so.measure.decode_context = 8;
  so.measure.decode_tokens = 2;
  so.measure.repeats = 1;
  so.measure_front = false;
  so.tag = "synthetic";
  return so;
}

star::QualityFn counting_quality(int* calls, int fail_at = -1) {
  return [calls, fail_at](const star::Model& m, const star::Genome& g) {
    EXPECT_EQ(m.genome(), g);
    if (fail_at >= 0 && *calls == fail_at) throw std::runtime_error("interrupted");
    ++*calls;
    return synthetic_quality(g);
  };
}

std::string read_file(const fs::path& p) {
  std::ifstream is(p, std::ios::binary);
  std::stringstream ss;
  ss << is.rdbuf();
  return ss.str();
}

void expect_same_population(const star::Nsga2Population& a, const star::Nsga2Population& b) {
  ASSERT_EQ(a.genomes.size(), b.genomes.size());
  for (size_t i = 0; i < a.genomes.size(); ++i) {
    EXPECT_EQ(a.genomes[i], b.genomes[i]) << "member " << i;
    EXPECT_EQ(a.objectives[i], b.objectives[i]) << "member " << i;
  }
  EXPECT_EQ(a.rank, b.rank);
}

}  // namespace

TEST(StarSearch, IsDeterministicAndSeededWithTheBaselines) {
  int c1 = 0, c2 = 0, c3 = 0;
  const auto so = small_options();
  const auto a = star::search(so, counting_quality(&c1));
  const auto b = star::search(so, counting_quality(&c2));
  expect_same_population(a.population, b.population);
  EXPECT_EQ(a.evaluations, 6 + 3 * 6);
  EXPECT_EQ(a.generation, 3);
  EXPECT_EQ(c1, c2);
  EXPECT_EQ(index_t(c1), a.measured) << "one quality call per distinct genome";
  EXPECT_LE(a.measured, a.evaluations);
  EXPECT_TRUE(a.front_path.empty());
  EXPECT_EQ(a.resumed_from, -1);
  auto other = so;
  other.seed = 4;
  const auto c = star::search(other, counting_quality(&c3));
  EXPECT_NE(a.population.genomes, c.population.genomes);
  // The baselines are measured, and the front is non-dominated and distinct.
  ASSERT_EQ(a.baselines.size(), 2u);
  EXPECT_EQ(a.baselines[0].name, "Transformer++");
  EXPECT_EQ(a.baselines[0].genome, star::transformer_pp(5));
  EXPECT_EQ(a.baselines[1].genome, star::striped_hybrid(5));
  EXPECT_DOUBLE_EQ(a.baselines[0].measurement.quality, synthetic_quality(star::transformer_pp(5)));
  ASSERT_FALSE(a.front.empty());
  for (const auto& e : a.front) {
    EXPECT_DOUBLE_EQ(e.measurement.quality, synthetic_quality(e.genome));
    for (size_t i = 0; i < a.population.genomes.size(); ++i)
      EXPECT_FALSE(star::dominates(a.population.objectives[i], star::objective_vector(e.measurement, so.objectives)));
  }
}

TEST(StarSearch, ARepeatedCandidateIsNotMeasuredAgain) {
  // Without crossover and mutation every child is a copy of a parent.
  auto so = small_options();
  so.crossover_rate = 0;
  so.mutation_rate = 0;
  int calls = 0;
  const auto r = star::search(so, counting_quality(&calls));
  EXPECT_EQ(r.evaluations, 24);
  EXPECT_EQ(calls, 6);
  EXPECT_EQ(r.measured, 6);
}

TEST(StarSearch, WritesACheckpointPerGenerationAndTheFront) {
  TempDir dir("files");
  auto so = small_options();
  so.checkpoint_dir = dir.str();
  so.measure_front = true;
  so.quality_name = "synthetic accuracy";
  std::vector<star::SearchProgress> seen;
  so.progress = [&](const star::SearchProgress& p) { seen.push_back(p); };
  int calls = 0;
  const auto r = star::search(so, counting_quality(&calls));
  for (int g = 0; g <= 3; ++g) {
    const fs::path p = dir.path / star::detail::checkpoint_name(g);
    ASSERT_TRUE(fs::exists(p)) << p;
    const auto j = nlohmann::json::parse(read_file(p));
    EXPECT_EQ(j.at("format"), "effattn-star-search-checkpoint/1");
    EXPECT_EQ(j.at("generation"), g);
    EXPECT_EQ(j.at("population").size(), 6u);
    EXPECT_EQ(j.at("options").at("population"), 6);
    EXPECT_EQ(j.at("options").at("objectives"), nlohmann::json({"quality", "cache_bytes"}));
    EXPECT_TRUE(j.at("rng").is_string());
    EXPECT_GE(j.at("measurements").size(), 6u);
  }
  EXPECT_FALSE(fs::exists(dir.path / "gen_0004.json"));
  EXPECT_FALSE(fs::exists(dir.path / "gen_0003.json.tmp"));
  ASSERT_EQ(r.front_path, (dir.path / "front.json").string());
  const auto f = nlohmann::json::parse(read_file(r.front_path));
  EXPECT_EQ(f.at("format"), "effattn-star-front/1");
  EXPECT_EQ(f.at("quality_name"), "synthetic accuracy");
  ASSERT_EQ(f.at("front").size(), r.front.size());
  ASSERT_EQ(f.at("baselines").size(), 2u);
  EXPECT_EQ(f.at("baselines")[0].at("name"), "Transformer++");
  EXPECT_EQ(f.at("baselines")[1].at("genome"), star::genome_string(star::striped_hybrid(5)));
  for (const auto& e : f.at("front")) {
    EXPECT_GT(e.at("params").get<double>(), 0);
    EXPECT_GT(e.at("cache_bytes").get<double>(), 0);
    EXPECT_GT(e.at("decode_ms").get<double>(), 0) << "measured for the front";
    EXPECT_GT(e.at("prefill_ms").get<double>(), 0);
    EXPECT_TRUE(e.at("quality").is_number());
  }
  // Progress: every candidate, then each generation once it is checkpointed.
  std::vector<index_t> done;
  for (const auto& p : seen)
    if (p.generation_done) done.push_back(p.generation);
  EXPECT_EQ(done, (std::vector<index_t>{0, 1, 2, 3}));
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().measured, r.measured);
  EXPECT_EQ(seen.front().evaluated, 1);
  EXPECT_EQ(seen.front().batch, 6);
  EXPECT_DOUBLE_EQ(seen.back().best_quality, [&] {
    double best = -1;
    for (const auto& kv : r.population.objectives) best = std::max(best, -kv[0]);
    return best;
  }()) << "the best quality measured survives (mu + lambda)";
}

TEST(StarSearch, ResumeAfterAnInterruptionEqualsAnUninterruptedRun) {
  TempDir a_dir("whole"), b_dir("interrupted");
  auto so = small_options();
  so.generations = 4;
  so.checkpoint_dir = a_dir.str();
  int calls_a = 0;
  const auto whole = star::search(so, counting_quality(&calls_a));

  so.checkpoint_dir = b_dir.str();
  int calls_b = 0;
  const int fail_at = calls_a - 3;  // inside the last generations
  EXPECT_THROW(star::search(so, counting_quality(&calls_b, fail_at)), std::runtime_error);
  const auto gens = star::detail::checkpoint_generations(b_dir.path);
  ASSERT_FALSE(gens.empty());
  EXPECT_LT(gens.back(), 4) << "the interrupted generation left no checkpoint";

  so.resume = true;
  int calls_resumed = 0;
  const auto resumed = star::search(so, counting_quality(&calls_resumed));
  EXPECT_EQ(resumed.resumed_from, gens.back());
  expect_same_population(resumed.population, whole.population);
  EXPECT_EQ(resumed.evaluations, whole.evaluations);
  EXPECT_EQ(resumed.measured, whole.measured);
  EXPECT_LT(calls_resumed, calls_a) << "the measurements of the checkpoint are not repeated";
  // The last checkpoints are the same file, byte for byte.
  EXPECT_EQ(read_file(b_dir.path / "gen_0004.json"), read_file(a_dir.path / "gen_0004.json"));

  // Resuming a finished search measures nothing and gives the same result.
  int calls_again = 0;
  const auto again = star::search(so, counting_quality(&calls_again));
  EXPECT_EQ(calls_again, 0);
  EXPECT_EQ(again.resumed_from, 4);
  expect_same_population(again.population, whole.population);
}

TEST(StarSearch, ResumeMayRunMoreGenerations) {
  TempDir a_dir("long"), b_dir("extended");
  auto so = small_options();
  so.generations = 4;
  so.checkpoint_dir = a_dir.str();
  int c = 0;
  const auto whole = star::search(so, counting_quality(&c));
  so.checkpoint_dir = b_dir.str();
  so.generations = 2;
  (void)star::search(so, counting_quality(&c));
  so.generations = 4;
  so.resume = true;
  const auto extended = star::search(so, counting_quality(&c));
  EXPECT_EQ(extended.resumed_from, 2);
  expect_same_population(extended.population, whole.population);
  // A shorter rerun resumes from its own last generation's file.
  so.generations = 3;
  const auto shorter = star::search(so, counting_quality(&c));
  EXPECT_EQ(shorter.resumed_from, 3);
  EXPECT_EQ(shorter.generation, 3);
}

TEST(StarSearch, CorruptCheckpointsAreRejected) {
  TempDir dir("corrupt");
  auto so = small_options();
  so.generations = 1;
  so.checkpoint_dir = dir.str();
  int c = 0;
  (void)star::search(so, counting_quality(&c));
  so.resume = true;
  const fs::path last = dir.path / "gen_0001.json";
  const std::string good = read_file(last);
  auto write = [&](const std::string& text) { std::ofstream(last, std::ios::binary | std::ios::trunc) << text; };

  write(good.substr(0, good.size() / 2));
  expect_throw_with<star::checkpoint_error>([&] { (void)star::search(so, counting_quality(&c)); },
                                            "gen_0001.json: is not valid JSON");
  // One changed figure: the checksum no longer matches.
  auto j = nlohmann::json::parse(good);
  j["population"][0]["objectives"][1] = 12345;
  write(j.dump(1));
  expect_throw_with<star::checkpoint_error>([&] { (void)star::search(so, counting_quality(&c)); },
                                            "does not match its contents");
  // Consistent checksum, inconsistent contents.
  auto reseal = [&](nlohmann::json x) {
    x.erase("checksum");
    x["checksum"] = star::detail::hex64(star::detail::fnv1a(x.dump()));
    write(x.dump(1));
  };
  j = nlohmann::json::parse(good);
  j["population"][0]["objectives"][1] = 12345;
  reseal(j);
  expect_throw_with<star::checkpoint_error>([&] { (void)star::search(so, counting_quality(&c)); },
                                            "population[0].objectives[1] = 12345 differs from its measurement's");
  j = nlohmann::json::parse(good);
  j.erase("rng");
  reseal(j);
  expect_throw_with<star::checkpoint_error>([&] { (void)star::search(so, counting_quality(&c)); },
                                            "a field is missing or of the wrong type");
  j = nlohmann::json::parse(good);
  j["rng"] = "1 2 3";
  reseal(j);
  expect_throw_with<star::checkpoint_error>([&] { (void)star::search(so, counting_quality(&c)); },
                                            "rng is not a std::mt19937_64 state");
  j = nlohmann::json::parse(good);
  j["population"][2]["genes"][0] = 99;
  reseal(j);
  expect_throw_with<star::checkpoint_error>([&] { (void)star::search(so, counting_quality(&c)); },
                                            "population[2].genes is no valid genome");
  j = nlohmann::json::parse(good);
  j["population"].erase(0);
  reseal(j);
  expect_throw_with<star::checkpoint_error>([&] { (void)star::search(so, counting_quality(&c)); },
                                            "population must hold 6 members");
  // Restored, it resumes.
  write(good);
  EXPECT_EQ(star::search(so, counting_quality(&c)).resumed_from, 1);
}

TEST(StarSearch, ChangedOptionsOnResumeAreRejected) {
  TempDir dir("options");
  auto so = small_options();
  so.generations = 1;
  so.checkpoint_dir = dir.str();
  int c = 0;
  (void)star::search(so, counting_quality(&c));
  // Without resume an earlier search is not overwritten.
  expect_throw_with<effattn::parameter_error>([&] { (void)star::search(so, counting_quality(&c)); },
                                              "already holds gen_0001.json of an earlier search: set resume");
  so.resume = true;
  auto changed = so;
  changed.population = 8;
  expect_throw_with<star::checkpoint_error>([&] { (void)star::search(changed, counting_quality(&c)); },
                                            "was written with options /population = 6, these options have 8");
  changed = so;
  changed.tag = "another task";
  expect_throw_with<star::checkpoint_error>([&] { (void)star::search(changed, counting_quality(&c)); },
                                            "options /tag = \"synthetic\", these options have \"another task\"");
  changed = so;
  changed.objectives = {Objective::quality, Objective::params};
  expect_throw_with<star::checkpoint_error>([&] { (void)star::search(changed, counting_quality(&c)); },
                                            "options /objectives/1");
  changed = so;
  changed.measure.model.width = 32;
  expect_throw_with<star::checkpoint_error>([&] { (void)star::search(changed, counting_quality(&c)); },
                                            "/model/width = 16, these options have 32");
  EXPECT_EQ(star::search(so, counting_quality(&c)).resumed_from, 1);
}

TEST(StarSearch, ChecksItsOptions) {
  int c = 0;
  auto so = small_options();
  expect_throw_with<effattn::parameter_error>([&] { (void)star::search(so); },
                                              "star::search: quality must be set when objectives has quality");
  auto bad = so;
  bad.objectives = {Objective::quality, Objective::quality};
  expect_throw_with<effattn::parameter_error>([&] { (void)star::search(bad, counting_quality(&c)); },
                                              "objectives lists quality twice");
  bad = so;
  bad.resume = true;
  expect_throw_with<effattn::parameter_error>([&] { (void)star::search(bad, counting_quality(&c)); },
                                              "resume needs a checkpoint_dir");
  bad = so;
  bad.population = 1;
  expect_throw_with<effattn::parameter_error>([&] { (void)star::search(bad, counting_quality(&c)); },
                                              "population must be >= 2");
  bad = so;
  bad.measure.model.heads = 2;  // SA-3 needs heads % 4 == 0
  EXPECT_THROW((void)star::search(bad, counting_quality(&c)), effattn::parameter_error);
  expect_throw_with<effattn::parameter_error>(
      [&] { (void)star::search(so, [](const star::Model&, const star::Genome&) { return std::nan(""); }); },
      "quality returned NaN for genome");
  // Without quality objectives no callback is needed.
  so.objectives = {Objective::params, Objective::cache_bytes};
  EXPECT_TRUE(std::isnan(star::search(so).baselines[1].measurement.quality)) << "quality not measured";
  EXPECT_EQ(star::parse_objective("quality"), Objective::quality);
  EXPECT_EQ(star::parse_objective("decode_ms"), Objective::decode_ms);
  expect_throw_with<effattn::parameter_error>([] { (void)star::parse_objective("speed"); },
                                              "objective 'speed' is none of");
}
