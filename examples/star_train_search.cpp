// SPDX-License-Identifier: MIT
// STAR part 2: the search over quality and efficiency (issue 15).
//
//   star_train_search [--population 8] [--generations 6] [--paper] [--slots 8] [--width 64] [--heads 4]
//                     [--vocab 64] [--objectives quality,cache_bytes] [--checkpoint results/star_search]
//                     [--resume] [--seed 0] [--threads 1] [--context 256] [--decode 8] [--repeats 2] [--quiet]
//
// NSGA-II (star/search.hpp) over the candidates' quality on MQAR and an
// efficiency objective (cache bytes or measured decode time), seeded with
// Transformer++ and the striped hybrid; one checkpoint per generation in
// --checkpoint (rerun with --resume after an interruption), and front.json
// there at the end, which benchmarks/report.py turns into a table and plots.
// The command line, progress and tables are examples/support/star_search_cli.hpp;
// this file only supplies the quality.
//
// Quality:
// - with LibTorch (EFFATTN_HAVE_TORCH): each candidate is trained on MQAR by
//   its LibTorch twin and scored by effattn's inference path on a fixed
//   validation batch (accuracy on the recalled values);
// - without it: an UNTRAINED PROXY, -(validation loss) of the candidate's
//   seeded random weights. It ranks nothing meaningful: it exists so that
//   the search, its checkpoints and the report can be run and checked
//   without LibTorch. Its front.json says so in quality_name.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

#include <effattn/star/search.hpp>
#include <effattn/star/tasks.hpp>

#include "support/star_search_cli.hpp"

#if defined(EFFATTN_HAVE_TORCH) && EFFATTN_HAVE_TORCH
#include <effattn/star/torch/train.hpp>
#endif

namespace star = effattn::star;
using effattn::index_t;

namespace {

constexpr std::uint64_t kValidationSeed = 1'000'003;  // disjoint from training's seeds (drawn from the run's seed)
constexpr index_t kValidationBatch = 64;

star::MqarConfig task(const star_cli::Args& a) {
  star::MqarConfig c;
  c.vocab = a.vocab;
  c.length = 64;
  c.num_kv_pairs = 8;
  if (c.vocab / 2 - 1 < c.num_kv_pairs) c.num_kv_pairs = std::max<index_t>(1, c.vocab / 2 - 1);
  return c;
}

std::string describe(const star::MqarConfig& c) {
  return "mqar vocab=" + std::to_string(c.vocab) + " length=" + std::to_string(c.length) +
         " pairs=" + std::to_string(c.num_kv_pairs) + " power_a=" + std::to_string(c.power_a) +
         " validation=" + std::to_string(kValidationBatch) + "@" + std::to_string(kValidationSeed);
}

}  // namespace

int main(int argc, char** argv) {
  return star_cli::run(argc, argv, "star_train_search", [](const star_cli::Args& a) {
    const star::MqarConfig cfg = task(a);
    const star::TaskSampler sampler = star::mqar(cfg);  // validates cfg (parameter_error)
    const star::TaskBatch val = sampler(kValidationBatch, kValidationSeed);
    const effattn::Executor ex(a.threads);
    star_cli::Quality q;
#if defined(EFFATTN_HAVE_TORCH) && EFFATTN_HAVE_TORCH
    // LEAD (merge): the training budget and options of star/torch/train.hpp.
    star::ModelConfig mc = star_cli::options(a).measure.model;
    const std::uint64_t seed = a.seed;
    star::twin::TrainOptions topts;
    q.name = "MQAR accuracy (trained)";
    q.tag = describe(cfg) + " trained";
    q.fn = [=](const star::Model&, const star::Genome& g) {
      star::Model model(g, mc, seed);
      (void)effattn::star::twin::train(model, sampler, sampler, topts);
      return star::score(model, val, ex).accuracy;
    };
#else
    q.name = "UNTRAINED PROXY: -(MQAR validation loss) of random weights";
    q.tag = describe(cfg) + " untrained-proxy";
    q.fn = [val, ex](const star::Model& model, const star::Genome&) { return -star::score(model, val, ex).loss; };
#endif
    return q;
  });
}
