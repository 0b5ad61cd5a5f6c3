// SPDX-License-Identifier: MIT
// star objectives: the analytic parameters and cache bytes against counting
// the compiled model's buffers; the measured objectives' plumbing (times and
// memory are positive and finite, never compared with a number); the quality
// callback; the NSGA-II evaluator end to end; the option checks.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include <effattn/star/objectives.hpp>

#include "support/testing.hpp"

namespace star = effattn::star;
using effattn::index_t;
using star::LivClass;
using star::Objective;

namespace {

star::ObjectiveOptions small_options() {
  star::ObjectiveOptions o;
  o.model.vocab = 40;
  o.model.width = 16;
  o.model.heads = 4;
  o.model.longconv_l_max = 64;
  o.context = 33;
  o.prefill_tokens = 12;
  o.decode_context = 9;
  o.decode_tokens = 3;
  o.repeats = 1;
  return o;
}

std::vector<star::Genome> genomes() {
  star::Genome shared({{1, 1, 1, 1, 2}, {9, 2, 2, 1, 1}, {1, 1, 1, 1, 2}, {9, 2, 2, 1, 1}, {5, 5, 3, 1, 1},
                       {5, 5, 3, 1, 1}, {8, 1, 1, 1, 1}, {12, 8, 2, 8, 3}, {12, 8, 2, 8, 3}});
  shared.validate();
  return {star::transformer_pp(6), star::striped_hybrid(8), shared, star::Genome::uniform(3, LivClass::DiffGConv2)};
}

}  // namespace

TEST(StarObjectives, AnalyticCostsEqualTheCompiledModelsBuffers) {
  auto o = small_options();
  o.objectives = {Objective::params, Objective::cache_bytes};
  for (const auto& g : genomes()) {
    SCOPED_TRACE(testing::PrintToString(g.encode()));
    const star::Measurement m = star::measure(g, o);
    // Count what the compiled model really holds: its weight buffers (each
    // once), and its cache/state buffers after a prefill of `context` tokens.
    const star::Model model(g, o.model, 1);
    std::int64_t weights = 0;
    model.for_each_weight([&](const std::string&, const float*, index_t r, index_t c) { weights += r * c; });
    auto st = model.make_state(o.context);
    (void)model.prefill(star::detail::probe_tokens(o.context, o.model.vocab), st);
    EXPECT_EQ(m.params, weights);
    EXPECT_EQ(m.cache_bytes, st.bytes());
    EXPECT_TRUE(std::isnan(m.prefill_ms));  // not asked for
    EXPECT_EQ(star::objective_vector(m, o.objectives), (std::vector<double>{double(weights), double(st.bytes())}));
  }
}

TEST(StarObjectives, MeasuredObjectivesArePositiveAndFinite) {
  auto o = small_options();
  int calls = 0;
  o.quality = [&](const star::Model& model, const star::Genome& g) {
    ++calls;
    EXPECT_EQ(model.genome(), g);
    return 0.25 * double(g.slots());
  };
  o.objectives = {Objective::prefill_ms, Objective::decode_ms, Objective::peak_bytes, Objective::quality,
                  Objective::params};
  {
    // The default probe needs /proc/self/clear_refs (Linux >= 4.0); elsewhere a stand-in.
    auto probe = star::rss_probe();
    probe.reset();
    if (probe.peak() < 0) {
      o.memory.reset = [] {};
      o.memory.peak = [] { return 0LL; };
    }
  }
  const auto g = star::striped_hybrid(4);
  const star::Measurement m = star::measure(g, o);
  EXPECT_TRUE(std::isfinite(m.prefill_ms) && m.prefill_ms > 0);
  EXPECT_TRUE(std::isfinite(m.decode_ms) && m.decode_ms > 0);
  EXPECT_TRUE(std::isfinite(m.peak_bytes) && m.peak_bytes >= 0);  // the RSS probe may see no new page
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(m.quality, 1.0);
  const auto v = star::objective_vector(m, o.objectives);
  ASSERT_EQ(v.size(), 5u);
  EXPECT_EQ(v[3], -1.0);  // quality is maximised: its objective is -quality
  EXPECT_EQ(v[4], double(m.params));
  // A probe of the caller's (e.g. a malloc counter) is what peak_bytes reports.
  int resets = 0;
  o.memory.reset = [&] { ++resets; };
  o.memory.peak = [] { return 4096LL; };
  o.objectives = {Objective::peak_bytes};
  EXPECT_EQ(star::measure(g, o).peak_bytes, 4096.0);
  EXPECT_GE(resets, 1);
}

TEST(StarObjectives, EvaluatorDrivesNsga2) {
  auto o = small_options();
  for (auto objectives : {std::vector<Objective>{Objective::cache_bytes, Objective::params},
                          std::vector<Objective>{Objective::cache_bytes, Objective::decode_ms}}) {
    o.objectives = objectives;
    std::vector<star::Genome> seen;
    auto eval = star::objective_evaluator(o, [&](const star::Genome& g, const star::Measurement& m) {
      seen.push_back(g);
      EXPECT_GT(m.params, 0);
    });
    star::Nsga2Options no;
    no.population = 4;
    no.generations = 1;
    no.seed = 3;
    const auto r = star::nsga2(4, eval, no, {star::transformer_pp(4), star::striped_hybrid(4)});
    EXPECT_EQ(r.evaluations, 8);
    EXPECT_EQ(seen.size(), 8u);
    ASSERT_EQ(r.population.objectives.size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
      const auto& f = r.population.objectives[i];
      ASSERT_EQ(f.size(), 2u);
      EXPECT_EQ(f[0], double(star::genome_cost(r.population.genomes[i], o.model.cost_dims(o.context)).cache_bytes));
      EXPECT_TRUE(std::isfinite(f[1]) && f[1] > 0);
    }
  }
  // Analytic objectives without a recorder: the parallel evaluator, same results for 1 and 2 threads.
  o.objectives = {Objective::cache_bytes, Objective::params};
  const auto batch = genomes();
  o.executor = effattn::Executor(1);
  const auto a = star::objective_evaluator(o)(batch);
  o.executor = effattn::Executor(2);
  EXPECT_EQ(star::objective_evaluator(o)(batch), a);
}

TEST(StarObjectives, OptionChecks) {
  auto o = small_options();
  o.objectives = {Objective::quality};
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] { (void)star::objective_evaluator(o); },
      "star::ObjectiveOptions: quality must be set when Objective::quality is asked for");
  o = small_options();
  o.objectives = {};
  testing_util::expect_throw_with<effattn::parameter_error>([&] { (void)star::measure(star::transformer_pp(2), o); },
                                                            "objectives must not be empty");
  o = small_options();
  o.repeats = 0;
  testing_util::expect_throw_with<effattn::parameter_error>([&] { (void)star::measure(star::transformer_pp(2), o); },
                                                            "repeats must be >= 1");
  o = small_options();
  o.objectives = {Objective::peak_bytes};
  o.memory = star::MemoryProbe{};
  testing_util::expect_throw_with<effattn::parameter_error>([&] { (void)star::measure(star::transformer_pp(2), o); },
                                                            "memory must be a probe");
  o.memory.reset = [] {};
  o.memory.peak = [] { return -1LL; };
  testing_util::expect_throw_with<effattn::parameter_error>([&] { (void)star::measure(star::transformer_pp(2), o); },
                                                            "probe cannot measure here");
  // Dims that cannot build every class fail when the evaluator is made, not mid-search.
  o = small_options();
  o.model.heads = 2;
  o.model.width = 16;
  testing_util::expect_throw_with<effattn::parameter_error>([&] { (void)star::objective_evaluator(o); },
                                                            "heads must be a multiple of 4 for SA-3, got 2");
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] { (void)star::measure(star::Genome(), small_options()); }, "star::Genome::validate: genome has no slots");
  o = small_options();
  o.model.width = 12;  // 4 heads of 3: RoPE needs an even head dim
  testing_util::expect_throw_with<effattn::parameter_error>([&] { (void)star::objective_evaluator(o); },
                                                            "(the head dim) must be even for RoPE");
}
