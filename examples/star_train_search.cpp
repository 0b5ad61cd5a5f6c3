// SPDX-License-Identifier: MIT
// STAR part 2: the search over quality and efficiency (issue 15).
//
//   star_train_search [--population 8] [--generations 5] [--paper] [--slots 4] [--width 64] [--heads 4]
//                     [--vocab 32] [--steps 700] [--batch 32] [--objectives quality,cache_bytes]
//                     [--checkpoint results/star_search] [--resume] [--seed 0] [--threads 1]
//                     [--context 256] [--decode 8] [--repeats 2] [--quiet]
//
// NSGA-II (star/search.hpp) over the candidates' quality on MQAR and an
// efficiency objective (cache bytes or measured decode time), seeded with
// Transformer++ and the striped hybrid; one checkpoint per generation in
// --checkpoint (rerun with --resume after an interruption), and front.json
// there at the end, which benchmarks/report.py turns into a table and plots.
// The command line, progress and tables are examples/support/star_search_cli.hpp;
// this file only supplies the quality.
//
// The task: MQAR (star::mqar) with 4 key-value pairs in 32 tokens over a
// vocabulary of --vocab (32: keys 1..15, values 16..31).
//
// Quality:
// - with LibTorch (EFFATTN_HAVE_TORCH): each candidate is trained by its
//   LibTorch twin (star/torch/train.hpp: AdamW, warmup + cosine, --steps
//   batches of --batch sequences, seeded by --seed, --threads threads), and
//   its weights are then scored by effattn's inference path on two fixed
//   validation batches (accuracy on the recalled values): train with
//   LibTorch, serve with effattn. At the end the most accurate front member
//   is trained again (the same seed gives the same weights), saved with
//   star::Model::save, loaded back and scored again by effattn, next to the
//   twin's own accuracy on the same batches: the two must agree.
// - without it: an UNTRAINED PROXY, -(validation loss) of the candidate's
//   seeded random weights. It ranks nothing meaningful: it exists so that
//   the search, its checkpoints and the report can be run and checked
//   without LibTorch. Its front.json says so in quality_name.
//
// The default (8 x 5, 4 slots, 700 steps) takes about 10 minutes on 2 cores
// (one training at a time on one thread: docs/star.md, "The search on MQAR").
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>

#include <effattn/star/search.hpp>
#include <effattn/star/tasks.hpp>

#include "support/star_search_cli.hpp"

#if defined(EFFATTN_HAVE_TORCH) && EFFATTN_HAVE_TORCH
#include <effattn/star/torch/train.hpp>
#endif

namespace star = effattn::star;
using effattn::index_t;

namespace {

constexpr std::uint64_t kValidationSeed = 1'000'003;  // the untrained proxy's batch (training draws its own seeds)
constexpr index_t kValidationBatch = 64;
constexpr index_t kValidationBatches = 2;  // trained: 2 batches of --batch, star::twin::validation_batch_seed(0, 1)

star::MqarConfig task(const star_cli::Args& a) {
  star::MqarConfig c;
  c.vocab = a.vocab;
  c.length = 32;
  c.num_kv_pairs = 4;
  if (c.vocab / 2 - 1 < c.num_kv_pairs) c.num_kv_pairs = std::max<index_t>(1, c.vocab / 2 - 1);
  if (c.length / 4 < c.num_kv_pairs) c.length = 4 * c.num_kv_pairs;
  return c;
}

std::string describe(const star::MqarConfig& c) {
  return "mqar vocab=" + std::to_string(c.vocab) + " length=" + std::to_string(c.length) +
         " pairs=" + std::to_string(c.num_kv_pairs) + " power_a=" + std::to_string(c.power_a);
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
    const star::ModelConfig mc = star_cli::options(a).measure.model;
    star::twin::TrainOptions topts;
    topts.steps = a.steps;
    topts.batch = a.batch;
    topts.seed = a.seed;
    topts.threads = a.threads;
    topts.val_batches = kValidationBatches;
    (void)val;
    q.name = "MQAR accuracy (trained with LibTorch, scored by effattn)";
    q.tag = describe(cfg) + " trained steps=" + std::to_string(a.steps) + " batch=" + std::to_string(a.batch) +
            " lr=" + std::to_string(topts.lr) + " val=" + std::to_string(kValidationBatches) + "x" +
            std::to_string(a.batch);
    // Trains a fresh model of genome g (weights from the run's seed) and
    // returns it with the twin's own result.
    auto trained = [=](const star::Genome& g) {
      star::Model model(g, mc, a.seed);
      const star::twin::TrainResult r = star::twin::train(model, sampler, sampler, topts);
      return std::make_pair(std::move(model), r);
    };
    q.fn = [=](const star::Model&, const star::Genome& g) {
      const auto mr = trained(g);
      return star::twin::evaluate_accuracy(mr.first, sampler, kValidationBatches, a.batch, ex);
    };
    const std::string dir = a.checkpoint;
    q.after = [=](const star::SearchResult& res) {
      if (res.front.empty()) return;
      // The most accurate front member (the cheaper cache on a tie).
      const star::SearchEntry* best = &res.front.front();
      for (const auto& e : res.front)
        if (e.measurement.quality > best->measurement.quality ||
            (e.measurement.quality == best->measurement.quality &&
             e.measurement.cache_bytes < best->measurement.cache_bytes))
          best = &e;
      const auto mr = trained(best->genome);
      const std::string path = (dir.empty() ? std::string(".") : dir) + "/best_model.star";
      mr.first.save(path);
      const star::Model served = star::Model::load(path);
      const double acc = star::twin::evaluate_accuracy(served, sampler, kValidationBatches, a.batch, ex);
      std::printf("\nbest front member %s: trained again (%lld steps, %.1f s), saved to %s, loaded and served by "
                  "effattn: accuracy %.4f; LibTorch twin on the same batches: %.4f; in the search: %.4f%s\n",
                  star::genome_string(best->genome).c_str(), (long long)mr.second.steps, mr.second.seconds,
                  path.c_str(), acc, mr.second.val_accuracy, best->measurement.quality,
                  acc == mr.second.val_accuracy && acc == best->measurement.quality ? " (equal)" : " (DIFFERENT)");
      if (acc != mr.second.val_accuracy || acc != best->measurement.quality)
        throw std::runtime_error("the served model's accuracy differs from LibTorch's or the search's");
    };
#else
    q.name = "UNTRAINED PROXY: -(MQAR validation loss) of random weights";
    q.tag = describe(cfg) + " untrained-proxy";
    q.fn = [val, ex](const star::Model& model, const star::Genome&) { return -star::score(model, val, ex).loss; };
#endif
    return q;
  });
}
