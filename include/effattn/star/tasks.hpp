// SPDX-License-Identifier: MIT
// effattn::star: the synthetic tasks that rank STAR candidates by quality
// (issue 15, item 2). No LibTorch here: a task is token sequences with
// targets, produced by a seeded generator; star/torch/train.hpp trains on
// them, and the effattn inference path scores on them (score() below).
//
// The tasks (semantics and decisions in docs/star.md, "Tasks"):
// - MQAR, multi-query associative recall, as the Zoology benchmark (Arora,
//   Eyuboglu et al. 2023) generates it: num_kv_pairs key-value pairs (keys
//   from [1, vocab/2), values from [vocab/2, vocab), each distinct within a
//   sequence) fill the first 2 * num_kv_pairs tokens; every key is queried
//   once afterwards, at an even offset of the rest of the sequence whose gap
//   is drawn by a power law (small gaps likely); the target at a query's
//   position is its value; every other position is noise and not scored.
// - Selective copying (Gu and Dao, Mamba, 2023): num_tokens data tokens at
//   random positions of a blank (or noise) region, then num_tokens copy
//   markers; at the i-th marker the target is the i-th data token.
// Random numbers: std::mt19937_64 with nsga2.hpp's own mappings, one engine
// per sequence seeded SplitMix64(seed, row): the same (batch, seed) gives the
// same tokens on every standard library (MQAR's power law also calls std::pow),
// and a batch's first rows do not depend on its size.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "model.hpp"
#include "nsga2.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

/// One batch of a next-token task: `batch` sequences of `length` tokens,
/// row-major. targets[b * length + t] is the token the model must predict
/// after reading tokens[b * length + 0 .. t] (its logits row t), or -1 where
/// that position is not scored (the loss and the accuracy skip it).
struct TaskBatch {
  index_t batch = 0;
  index_t length = 0;
  std::vector<index_t> tokens;   ///< [batch * length], ids in [0, vocab)
  std::vector<index_t> targets;  ///< [batch * length], ids in [0, vocab) or -1
};

/// A seeded batch generator: the same (batch, seed) always gives the same
/// batch. Training draws seeds from its own seed; validation uses a fixed,
/// disjoint seed range.
using TaskSampler = std::function<TaskBatch(index_t batch, std::uint64_t seed)>;

// ------------------------------------------------------------------ MQAR

/// Multi-query associative recall (Zoology's `multiquery_ar`). Token 0 is
/// never a key or a value; keys are [1, vocab/2), values [vocab/2, vocab).
struct MqarConfig {
  index_t vocab = 8192;        ///< Zoology's default; >= 2 * num_kv_pairs + 2 so both ranges hold the pairs
  index_t length = 64;         ///< tokens per sequence; >= 4 * num_kv_pairs (Zoology's bound)
  index_t num_kv_pairs = 4;    ///< pairs, each key queried once
  double power_a = 0.01;       ///< gap law p(g) ~ (g + 1)^(a - 1), g = 0, 1, ...; in (0, 1], 1 = uniform (Zoology's 0.01)
  bool random_non_queries = true;  ///< noise positions: uniform in [0, vocab) (Zoology), else token 0
};

/// Selective copying: 0 is the blank, 1 the copy marker, [2, 2 + noise_vocab)
/// noise tokens, [2 + noise_vocab, vocab) the data tokens.
struct SelectiveCopyConfig {
  index_t vocab = 16;          ///< >= 3 + noise_vocab (at least one data token)
  index_t length = 64;         ///< region (length - num_tokens) + num_tokens markers; >= 2 * num_tokens
  index_t num_tokens = 8;      ///< data tokens to copy, >= 1
  index_t noise_vocab = 0;     ///< 0: the region's other positions are blank; else uniform noise tokens
};

namespace detail {
/// `batch` rows of `length` tokens 0 with nothing scored (targets -1).
inline TaskBatch blank_batch(index_t batch, index_t length) {
  TaskBatch tb;
  tb.batch = batch;
  tb.length = length;
  tb.tokens.assign(static_cast<size_t>(batch * length), 0);
  tb.targets.assign(static_cast<size_t>(batch * length), -1);
  return tb;
}
inline void check_mqar(const MqarConfig& c, const char* op) {
  using ::effattn::detail::require;
  require(c.num_kv_pairs >= 1, op, "num_kv_pairs", "must be >= 1, got ", c.num_kv_pairs);
  require(c.length >= 1 && c.length / 4 >= c.num_kv_pairs, op, "length",
          "must be >= 4 * num_kv_pairs = ", 4 * c.num_kv_pairs,
          " (the pairs, then a query region with an even slot per key), got ", c.length);
  require(c.vocab >= 4 && c.vocab / 2 - 1 >= c.num_kv_pairs, op, "vocab", "must give num_kv_pairs = ",
          c.num_kv_pairs, " distinct keys in [1, vocab/2) and values in [vocab/2, vocab), i.e. be >= ",
          2 * c.num_kv_pairs + 2, ", got ", c.vocab);
  require(c.power_a > 0 && c.power_a <= 1, op, "power_a", "must be in (0, 1], got ", c.power_a);
}
inline void check_copy(const SelectiveCopyConfig& c, const char* op) {
  using ::effattn::detail::require;
  require(c.num_tokens >= 1, op, "num_tokens", "must be >= 1, got ", c.num_tokens);
  require(c.length >= 2 && c.length / 2 >= c.num_tokens, op, "length",
          "must be >= 2 * num_tokens = ", 2 * c.num_tokens, " (a region holding the tokens, then the markers), got ",
          c.length);
  require(c.noise_vocab >= 0, op, "noise_vocab", "must be >= 0, got ", c.noise_vocab);
  require(c.noise_vocab <= std::numeric_limits<index_t>::max() - 3 && c.vocab >= 3 + c.noise_vocab, op, "vocab",
          "must be >= 3 + noise_vocab = ", c.noise_vocab + 3,
          " (blank 0, marker 1, the noise tokens and at least one data token), got ", c.vocab);
}
inline void check_batch_size(index_t batch, index_t length, const char* op) {
  ::effattn::detail::require(batch >= 1, op, "batch", "must be >= 1, got ", batch);
  (void)::effattn::detail::checked_mul(batch, length, op, "batch * length");
}
/// n distinct integers of [lo, hi) (n <= hi - lo) in draw order, by rejection.
inline std::vector<index_t> distinct_uniform(std::mt19937_64& rng, index_t n, index_t lo, index_t hi) {
  std::vector<index_t> out;
  out.reserve(static_cast<size_t>(n));
  while (static_cast<index_t>(out.size()) < n) {
    const index_t v = static_cast<index_t>(uniform_int(rng, lo, hi - 1));
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
  }
  return out;
}
}  // namespace detail

/// A sampler of MQAR batches (validated here: parameter_error naming
/// star::mqar and the field). Row b of a batch: positions 2i, 2i + 1 hold
/// key i and value i (i < num_kv_pairs); with space = (length - 2 num_kv_pairs) / 2,
/// each key i is queried at 2 num_kv_pairs + 2 g_i, the gaps g_i distinct in
/// [0, space) drawn one after another with probability ~ (g + 1)^(power_a - 1)
/// among those left (numpy's choice without replacement, as Zoology); that
/// position's target is value i; the other positions are noise, unscored.
inline TaskSampler mqar(const MqarConfig& cfg) {
  detail::check_mqar(cfg, "star::mqar");
  return [cfg](index_t batch, std::uint64_t seed) {
    const char* op = "star::mqar";
    detail::check_batch_size(batch, cfg.length, op);
    const index_t L = cfg.length, n = cfg.num_kv_pairs, half = cfg.vocab / 2;
    const index_t space = (L - 2 * n) / 2;
    std::vector<double> weight(static_cast<size_t>(space));
    for (index_t g = 0; g < space; ++g) weight[size_t(g)] = std::pow(double(g + 1), cfg.power_a - 1.0);
    TaskBatch tb = detail::blank_batch(batch, L);
    for (index_t b = 0; b < batch; ++b) {
      std::mt19937_64 rng(detail::derive_seed(seed, static_cast<std::uint64_t>(b)));
      index_t* tok = tb.tokens.data() + b * L;
      index_t* tgt = tb.targets.data() + b * L;
      const auto keys = detail::distinct_uniform(rng, n, 1, half);
      const auto values = detail::distinct_uniform(rng, n, half, cfg.vocab);
      for (index_t i = 0; i < n; ++i) {
        tok[2 * i] = keys[size_t(i)];
        tok[2 * i + 1] = values[size_t(i)];
      }
      std::vector<double> w = weight;  // the gaps left, by weight (0 once drawn)
      std::vector<bool> query(static_cast<size_t>(L), false);
      for (index_t i = 0; i < n; ++i) {
        double total = 0;
        for (double x : w) total += x;
        const double u = detail::uniform_01(rng) * total;
        index_t g = 0, last = -1;
        double acc = 0;
        for (; g < space; ++g) {
          if (w[size_t(g)] <= 0) continue;
          last = g;
          acc += w[size_t(g)];
          if (u < acc) break;
        }
        if (g == space) g = last;  // u at the top of the rounding: the last gap left
        w[size_t(g)] = 0;
        const index_t pos = 2 * n + 2 * g;
        tok[pos] = keys[size_t(i)];
        tgt[pos] = values[size_t(i)];
        query[size_t(pos)] = true;
      }
      for (index_t t = 2 * n; t < L; ++t)
        if (!query[size_t(t)])
          tok[t] = cfg.random_non_queries ? static_cast<index_t>(detail::uniform_below(rng, std::uint64_t(cfg.vocab)))
                                          : 0;
    }
    return tb;
  };
}

/// A sampler of selective-copying batches (validated here: parameter_error
/// naming star::selective_copy and the field). Row b: num_tokens distinct
/// positions of the region [0, length - num_tokens), uniformly, hold data
/// tokens uniform in [2 + noise_vocab, vocab) (repeats allowed); the other
/// region positions are the blank 0 (or noise uniform in [2, 2 + noise_vocab));
/// then num_tokens markers (1). The target at marker i is the i-th data token
/// in order of position; nothing else is scored.
inline TaskSampler selective_copy(const SelectiveCopyConfig& cfg) {
  detail::check_copy(cfg, "star::selective_copy");
  return [cfg](index_t batch, std::uint64_t seed) {
    const char* op = "star::selective_copy";
    detail::check_batch_size(batch, cfg.length, op);
    const index_t L = cfg.length, n = cfg.num_tokens, R = L - n, data_lo = 2 + cfg.noise_vocab;
    TaskBatch tb = detail::blank_batch(batch, L);
    for (index_t b = 0; b < batch; ++b) {
      std::mt19937_64 rng(detail::derive_seed(seed, static_cast<std::uint64_t>(b)));
      index_t* tok = tb.tokens.data() + b * L;
      index_t* tgt = tb.targets.data() + b * L;
      auto pos = detail::distinct_uniform(rng, n, 0, R);
      std::sort(pos.begin(), pos.end());
      std::vector<bool> data(static_cast<size_t>(R), false);
      for (index_t i = 0; i < n; ++i) {
        const index_t v = static_cast<index_t>(detail::uniform_int(rng, data_lo, cfg.vocab - 1));
        tok[pos[size_t(i)]] = v;
        data[size_t(pos[size_t(i)])] = true;
        tok[R + i] = 1;
        tgt[R + i] = v;
      }
      if (cfg.noise_vocab > 0)
        for (index_t t = 0; t < R; ++t)
          if (!data[size_t(t)]) tok[t] = static_cast<index_t>(detail::uniform_int(rng, 2, data_lo - 1));
    }
    return tb;
  };
}

// ------------------------------------------------------------------ scoring

/// Mean cross-entropy (nats) and argmax accuracy over the scored positions.
struct TaskScore {
  double loss = std::numeric_limits<double>::quiet_NaN();
  double accuracy = std::numeric_limits<double>::quiet_NaN();
  index_t scored = 0;  ///< positions with a target
};

namespace detail {
/// Checks a batch against a vocabulary: sizes, token ids, target ids.
inline void check_task_batch(const TaskBatch& tb, index_t vocab, const char* op) {
  ::effattn::detail::require(tb.batch >= 1, op, "batch.batch", "must be >= 1, got ", tb.batch);
  ::effattn::detail::require(tb.length >= 1, op, "batch.length", "must be >= 1, got ", tb.length);
  const index_t n = ::effattn::detail::checked_mul(tb.batch, tb.length, op, "batch * length");
  if (static_cast<index_t>(tb.tokens.size()) != n || static_cast<index_t>(tb.targets.size()) != n)
    EFFATTN_THROW(shape_error(::effattn::detail::concat(
        op, ": batch.tokens and batch.targets must hold batch * length = [", tb.batch, ",", tb.length, "] = ", n,
        " ids, got ", tb.tokens.size(), " and ", tb.targets.size())));
  for (index_t i = 0; i < n; ++i) {
    const index_t t = tb.tokens[size_t(i)], y = tb.targets[size_t(i)];
    if (t < 0 || t >= vocab)
      EFFATTN_THROW(parameter_error(::effattn::detail::concat(op, ": batch.tokens[", i, "] (row ", i / tb.length,
                                                             ", position ", i % tb.length, ") must be in [0, vocab=",
                                                             vocab, "), got ", t)));
    if (y < -1 || y >= vocab)
      EFFATTN_THROW(parameter_error(::effattn::detail::concat(op, ": batch.targets[", i, "] (row ", i / tb.length,
                                                             ", position ", i % tb.length,
                                                             ") must be -1 or in [0, vocab=", vocab, "), got ", y)));
  }
}
/// Adds one logits row's float64 log-softmax loss at `target` and whether its
/// argmax (the first maximum) is the target.
inline void score_row(const float* row, index_t vocab, index_t target, double& loss, index_t& correct) {
  index_t arg = 0;
  double mx = row[0];
  for (index_t j = 1; j < vocab; ++j)
    if (double(row[j]) > mx) mx = row[j], arg = j;
  double sum = 0;
  for (index_t j = 0; j < vocab; ++j) sum += std::exp(double(row[j]) - mx);
  loss += mx + std::log(sum) - double(row[target]);
  correct += arg == target ? 1 : 0;
}
}  // namespace detail

/// Scores logits [length, vocab] of each row of `tb` (logits[b] for row b):
/// the mean of -log softmax(logits)[target] (float64) and the fraction of
/// scored positions whose argmax (the first maximum) is the target.
inline TaskScore score_logits(const std::vector<Matrix>& logits, const TaskBatch& tb) {
  const char* op = "star::score_logits";
  if (logits.empty() || logits[0].cols() < 1)
    EFFATTN_THROW(shape_error(::effattn::detail::concat(op, ": logits must hold one [length, vocab] matrix per row")));
  const index_t vocab = logits[0].cols();
  detail::check_task_batch(tb, vocab, op);
  if (static_cast<index_t>(logits.size()) != tb.batch)
    EFFATTN_THROW(shape_error(::effattn::detail::concat(op, ": logits holds ", logits.size(),
                                                       " matrices, batch.batch is ", tb.batch)));
  for (size_t b = 0; b < logits.size(); ++b)
    if (logits[b].rows() != tb.length || logits[b].cols() != vocab)
      EFFATTN_THROW(shape_error(::effattn::detail::concat(op, ": logits[", b, "] is [", logits[b].rows(), ",",
                                                         logits[b].cols(), "], expected [", tb.length, ",", vocab,
                                                         "]")));
  TaskScore s;
  double loss = 0;
  index_t correct = 0;
  for (index_t b = 0; b < tb.batch; ++b)
    for (index_t t = 0; t < tb.length; ++t) {
      const index_t y = tb.targets[size_t(b * tb.length + t)];
      if (y < 0) continue;
      detail::score_row(logits[size_t(b)].row(t).data(), vocab, y, loss, correct);
      ++s.scored;
    }
  if (s.scored == 0)
    EFFATTN_THROW(parameter_error(::effattn::detail::concat(op, ": batch.targets has no scored position (all -1)")));
  s.loss = loss / double(s.scored);
  s.accuracy = double(correct) / double(s.scored);
  return s;
}

/// Scores `model` on a batch through effattn's inference path: each row is
/// one Model::prefill from a fresh state (on `ex`), its logits scored as
/// score_logits does. Throws shape_error / parameter_error naming star::score
/// for a malformed batch, ids outside the model's vocab, or a batch without a
/// scored position.
inline TaskScore score(const Model& model, const TaskBatch& tb, const Executor& ex = {}) {
  const char* op = "star::score";
  detail::check_task_batch(tb, model.vocab(), op);
  ::effattn::detail::check_executor(ex, op);
  TaskScore s;
  double loss = 0;
  index_t correct = 0;
  for (index_t b = 0; b < tb.batch; ++b) {
    bool any = false;
    for (index_t t = 0; t < tb.length && !any; ++t) any = tb.targets[size_t(b * tb.length + t)] >= 0;
    if (!any) continue;  // nothing to score in this row: no need to run it
    const std::vector<index_t> row(tb.tokens.begin() + b * tb.length, tb.tokens.begin() + (b + 1) * tb.length);
    const Matrix logits = model.prefill(row, ex).first;
    for (index_t t = 0; t < tb.length; ++t) {
      const index_t y = tb.targets[size_t(b * tb.length + t)];
      if (y < 0) continue;
      detail::score_row(logits.row(t).data(), model.vocab(), y, loss, correct);
      ++s.scored;
    }
  }
  if (s.scored == 0)
    EFFATTN_THROW(parameter_error(::effattn::detail::concat(op, ": batch.targets has no scored position (all -1)")));
  s.loss = loss / double(s.scored);
  s.accuracy = double(correct) / double(s.scored);
  return s;
}

}  // namespace star
EFFATTN_NAMESPACE_END
