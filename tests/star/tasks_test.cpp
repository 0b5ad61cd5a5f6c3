// SPDX-License-Identifier: MIT
// star tasks: the MQAR and selective-copying generators (determinism for a
// seed, structure of every row, the power-law placement, config checks) and
// score() through effattn's inference path against a hand-made model whose
// loss and accuracy are known in closed form.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include <effattn/star/tasks.hpp>

#include "support/testing.hpp"

namespace star = effattn::star;
using effattn::index_t;
using effattn::parameter_error;
using effattn::shape_error;
using testing_util::expect_throw_with;

namespace {

/// Checks one MQAR row against the task's definition; returns its query positions.
std::vector<index_t> check_mqar_row(const star::MqarConfig& c, const star::TaskBatch& tb, index_t b) {
  const index_t L = c.length, n = c.num_kv_pairs, half = c.vocab / 2;
  const index_t* tok = tb.tokens.data() + b * L;
  const index_t* tgt = tb.targets.data() + b * L;
  std::set<index_t> keys, values;
  for (index_t i = 0; i < n; ++i) {
    EXPECT_GE(tok[2 * i], 1);
    EXPECT_LT(tok[2 * i], half);
    EXPECT_GE(tok[2 * i + 1], half);
    EXPECT_LT(tok[2 * i + 1], c.vocab);
    keys.insert(tok[2 * i]);
    values.insert(tok[2 * i + 1]);
  }
  EXPECT_EQ(index_t(keys.size()), n) << "keys of a row are distinct";
  EXPECT_EQ(index_t(values.size()), n) << "values of a row are distinct";
  std::vector<index_t> queries;
  std::set<index_t> queried;
  for (index_t t = 0; t < L; ++t) {
    EXPECT_GE(tok[t], 0);
    EXPECT_LT(tok[t], c.vocab);
    if (tgt[t] < 0) {
      EXPECT_EQ(tgt[t], -1);
      if (!c.random_non_queries && t >= 2 * n) {
        EXPECT_EQ(tok[t], 0) << "position " << t;
      }
      continue;
    }
    queries.push_back(t);
    EXPECT_GE(t, 2 * n);
    EXPECT_EQ((t - 2 * n) % 2, 0) << "queries sit at even offsets after the pairs";
    // the query key appears earlier, in the pairs, followed by the target value
    index_t found = -1;
    for (index_t i = 0; i < n; ++i)
      if (tok[2 * i] == tok[t]) found = i;
    if (found < 0) {
      ADD_FAILURE() << "query at " << t << " is no key";
      continue;
    }
    EXPECT_EQ(tgt[t], tok[2 * found + 1]);
    queried.insert(found);
  }
  EXPECT_EQ(index_t(queries.size()), n) << "every key is queried once";
  EXPECT_EQ(index_t(queried.size()), n);
  return queries;
}

star::Model identity_model(index_t vocab, float c) {
  // One GMemless slot whose down projection is zero: the residual passes the
  // embedding through, and the tied head gives logits[t] = RMSNorm(E[tok]) E^T.
  star::ModelConfig cfg;
  cfg.vocab = vocab;
  cfg.width = vocab;
  cfg.heads = vocab / 2;
  star::Model m(star::Genome::uniform(1, star::LivClass::GMemless), cfg, 3);
  m.edit_weights([&](const std::string& name, float* p, index_t r, index_t cols) {
    if (name == "embed.weight") {
      for (index_t i = 0; i < r; ++i)
        for (index_t j = 0; j < cols; ++j) p[i * cols + j] = i == j ? c : 0.0f;
    } else if (name.find("down") != std::string::npos) {
      for (index_t i = 0; i < r * cols; ++i) p[i] = 0.0f;
    }
  });
  return m;
}

}  // namespace

TEST(StarTasks, MqarIsDeterministicForASeedAndSeedsDiffer) {
  star::MqarConfig c;
  c.vocab = 64;
  c.length = 32;
  c.num_kv_pairs = 6;
  const auto sample = star::mqar(c);
  const auto a = sample(5, 11), b = sample(5, 11), other = sample(5, 12);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.targets, b.targets);
  EXPECT_NE(a.tokens, other.tokens);
  EXPECT_EQ(a.batch, 5);
  EXPECT_EQ(a.length, 32);
  // A batch's first rows do not depend on its size; rows differ from each other.
  const auto two = sample(2, 11);
  EXPECT_EQ(two.tokens, std::vector<index_t>(a.tokens.begin(), a.tokens.begin() + 64));
  EXPECT_EQ(two.targets, std::vector<index_t>(a.targets.begin(), a.targets.begin() + 64));
  EXPECT_NE(std::vector<index_t>(a.tokens.begin(), a.tokens.begin() + 32),
            std::vector<index_t>(a.tokens.begin() + 32, a.tokens.begin() + 64));
}

TEST(StarTasks, MqarRowsFollowTheDefinition) {
  for (bool noise : {true, false})
    for (const auto& [V, L, n] : std::vector<std::tuple<index_t, index_t, index_t>>{
             {8192, 64, 4}, {64, 32, 8}, {20, 37, 9}, {6, 4, 1}, {256, 128, 16}}) {
      SCOPED_TRACE(testing::Message() << "vocab " << V << " length " << L << " pairs " << n << " noise " << noise);
      star::MqarConfig c;
      c.vocab = V;
      c.length = L;
      c.num_kv_pairs = n;
      c.random_non_queries = noise;
      const auto tb = star::mqar(c)(20, 7);
      ASSERT_EQ(tb.tokens.size(), size_t(20 * L));
      ASSERT_EQ(tb.targets.size(), size_t(20 * L));
      for (index_t b = 0; b < 20; ++b) check_mqar_row(c, tb, b);
    }
}

TEST(StarTasks, MqarQueryGapsFollowThePowerLaw) {
  // Zoology's a = 0.01 puts most queries close after the pairs; a = 1 is uniform.
  star::MqarConfig c;
  c.vocab = 512;
  c.length = 256;
  c.num_kv_pairs = 4;
  auto mean_gap = [&](double a) {
    c.power_a = a;
    const auto tb = star::mqar(c)(200, 1);
    double sum = 0;
    index_t k = 0;
    for (index_t b = 0; b < 200; ++b)
      for (index_t t : check_mqar_row(c, tb, b)) sum += double(t - 2 * c.num_kv_pairs) / 2, ++k;
    return sum / double(k);
  };
  const double skewed = mean_gap(0.01), uniform = mean_gap(1.0);
  const double space = (256 - 8) / 2;
  EXPECT_NEAR(uniform, (space - 1) / 2, 0.1 * space);  // the mean of a uniform gap in [0, space)
  EXPECT_LT(skewed, 0.6 * uniform);
}

TEST(StarTasks, SelectiveCopyRowsFollowTheDefinition) {
  for (index_t noise : {index_t(0), index_t(3)}) {
    star::SelectiveCopyConfig c;
    c.vocab = 12;
    c.length = 40;
    c.num_tokens = 6;
    c.noise_vocab = noise;
    const auto sample = star::selective_copy(c);
    const auto tb = sample(30, 5);
    EXPECT_EQ(tb.tokens, sample(30, 5).tokens);
    EXPECT_NE(tb.tokens, sample(30, 6).tokens);
    const index_t R = c.length - c.num_tokens, lo = 2 + noise;
    for (index_t b = 0; b < 30; ++b) {
      const index_t* tok = tb.tokens.data() + b * c.length;
      const index_t* tgt = tb.targets.data() + b * c.length;
      std::vector<index_t> data;
      for (index_t t = 0; t < R; ++t) {
        EXPECT_EQ(tgt[t], -1);
        if (tok[t] >= lo) {
          EXPECT_LT(tok[t], c.vocab);
          data.push_back(tok[t]);
        } else if (noise == 0) {
          EXPECT_EQ(tok[t], 0);
        } else {
          EXPECT_GE(tok[t], 2);
        }
      }
      ASSERT_EQ(index_t(data.size()), c.num_tokens);
      for (index_t i = 0; i < c.num_tokens; ++i) {
        EXPECT_EQ(tok[R + i], 1) << "copy marker";
        EXPECT_EQ(tgt[R + i], data[size_t(i)]) << "the data tokens, in order";
      }
    }
  }
}

TEST(StarTasks, BadConfigsThrow) {
  auto mq = [](index_t V, index_t L, index_t n, double a = 0.01) {
    star::MqarConfig c;
    c.vocab = V;
    c.length = L;
    c.num_kv_pairs = n;
    c.power_a = a;
    return [c] { (void)star::mqar(c); };
  };
  EXPECT_NO_THROW(mq(10, 16, 4)());
  expect_throw_with<parameter_error>(mq(10, 15, 4), "star::mqar: length must be >= 4 * num_kv_pairs = 16");
  expect_throw_with<parameter_error>(mq(9, 16, 4), "star::mqar: vocab must give num_kv_pairs = 4 distinct keys");
  expect_throw_with<parameter_error>(mq(64, 16, 0), "star::mqar: num_kv_pairs must be >= 1, got 0");
  expect_throw_with<parameter_error>(mq(64, 16, 2, 0.0), "star::mqar: power_a must be in (0, 1], got 0");
  expect_throw_with<parameter_error>(mq(64, 16, 2, 1.5), "power_a");
  expect_throw_with<parameter_error>([] { (void)star::mqar(star::MqarConfig{})(0, 1); },
                                     "star::mqar: batch must be >= 1, got 0");
  auto cp = [](index_t V, index_t L, index_t n, index_t noise = 0) {
    star::SelectiveCopyConfig c;
    c.vocab = V;
    c.length = L;
    c.num_tokens = n;
    c.noise_vocab = noise;
    return [c] { (void)star::selective_copy(c); };
  };
  EXPECT_NO_THROW(cp(3, 8, 4)());
  expect_throw_with<parameter_error>(cp(16, 7, 4), "star::selective_copy: length must be >= 2 * num_tokens = 8");
  expect_throw_with<parameter_error>(cp(5, 8, 4, 3), "star::selective_copy: vocab must be >= 3 + noise_vocab = 6");
  expect_throw_with<parameter_error>(cp(16, 8, 0), "num_tokens must be >= 1");
  expect_throw_with<parameter_error>(cp(16, 8, 2, -1), "noise_vocab must be >= 0");
}

TEST(StarTasks, ScoreOfAHandMadeModelIsKnown) {
  // logits[t] = s * c at column tokens[t], 0 elsewhere, with s = c / sqrt(c^2 / d + eps)
  // (RMSNorm of c e_tok): predicting the current token has loss log(e^{sc} + V - 1) - sc,
  // any other log(e^{sc} + V - 1); the argmax is the current token.
  const index_t V = 8;
  const float c = 0.75f;
  const star::Model m = identity_model(V, c);
  star::TaskBatch tb;
  tb.batch = 2;
  tb.length = 5;
  tb.tokens = {1, 2, 3, 4, 5, 7, 6, 5, 4, 0};
  tb.targets = {1, -1, 4, -1, 5, 7, 0, -1, -1, 0};  // 4 correct (1, 5, 7, 0), 2 wrong (4 at 3, 0 at 6)
  const double s = double(c) / std::sqrt(double(c) * c / double(V) + 1e-6), z = s * c;
  const double lse = std::log(std::exp(z) + double(V - 1));
  const double want_loss = (4 * (lse - z) + 2 * lse) / 6;
  for (int threads : {1, 2}) {
    const star::TaskScore sc = star::score(m, tb, effattn::Executor(threads));
    EXPECT_EQ(sc.scored, 6);
    EXPECT_DOUBLE_EQ(sc.accuracy, 4.0 / 6.0);
    EXPECT_NEAR(sc.loss, want_loss, 1e-5 * want_loss);
  }
  // score_logits on the same logits gives the same figures
  std::vector<star::Matrix> logits;
  for (index_t b = 0; b < 2; ++b)
    logits.push_back(m.prefill(std::vector<index_t>(tb.tokens.begin() + 5 * b, tb.tokens.begin() + 5 * b + 5)).first);
  const star::TaskScore sl = star::score_logits(logits, tb);
  EXPECT_EQ(sl.scored, 6);
  EXPECT_DOUBLE_EQ(sl.accuracy, 4.0 / 6.0);
  EXPECT_DOUBLE_EQ(sl.loss, star::score(m, tb).loss);
}

TEST(StarTasks, ScoreOfARandomModelOnMqarMatchesItsLogits) {
  star::MqarConfig c;
  c.vocab = 32;
  c.length = 24;
  c.num_kv_pairs = 3;
  const auto tb = star::mqar(c)(3, 2);
  star::ModelConfig mc;
  mc.vocab = 32;
  mc.width = 16;
  mc.heads = 4;
  const star::Model m(star::striped_hybrid(4), mc, 9);
  const star::TaskScore s = star::score(m, tb);
  EXPECT_EQ(s.scored, 9);
  // Independently: float64 log-softmax of each scored row of the model's logits.
  double loss = 0;
  index_t correct = 0;
  for (index_t b = 0; b < 3; ++b) {
    const auto logits =
        m.prefill(std::vector<index_t>(tb.tokens.begin() + b * 24, tb.tokens.begin() + (b + 1) * 24)).first;
    for (index_t t = 0; t < 24; ++t) {
      const index_t y = tb.targets[size_t(b * 24 + t)];
      if (y < 0) continue;
      double sum = 0;
      index_t best = 0;
      for (index_t j = 0; j < 32; ++j) {
        sum += std::exp(double(logits(t, j)));
        if (logits(t, j) > logits(t, best)) best = j;
      }
      loss += std::log(sum) - double(logits(t, y));
      correct += best == y;
    }
  }
  EXPECT_NEAR(s.loss, loss / 9, 1e-9);
  EXPECT_DOUBLE_EQ(s.accuracy, double(correct) / 9);
  EXPECT_GT(s.loss, 0);
}

TEST(StarTasks, ScoreChecksItsInputs) {
  const star::Model m = identity_model(8, 1.0f);
  star::TaskBatch tb;
  tb.batch = 1;
  tb.length = 3;
  tb.tokens = {1, 2, 3};
  tb.targets = {-1, 2, -1};
  EXPECT_NO_THROW(star::score(m, tb));
  auto with = [&](auto edit) {
    star::TaskBatch x = tb;
    edit(x);
    return [x, &m] { (void)star::score(m, x); };
  };
  expect_throw_with<shape_error>(with([](star::TaskBatch& x) { x.tokens.pop_back(); }),
                                 "star::score: batch.tokens and batch.targets must hold batch * length = [1,3] = 3");
  expect_throw_with<parameter_error>(with([](star::TaskBatch& x) { x.tokens[2] = 8; }),
                                     "star::score: batch.tokens[2] (row 0, position 2) must be in [0, vocab=8), got 8");
  expect_throw_with<parameter_error>(with([](star::TaskBatch& x) { x.targets[0] = -2; }),
                                     "batch.targets[0] (row 0, position 0) must be -1 or in [0, vocab=8)");
  expect_throw_with<parameter_error>(with([](star::TaskBatch& x) { x.targets = {-1, -1, -1}; }),
                                     "star::score: batch.targets has no scored position");
  expect_throw_with<parameter_error>(with([](star::TaskBatch& x) { x.batch = 0; }), "batch.batch must be >= 1");
  expect_throw_with<shape_error>([&] { (void)star::score_logits({star::Matrix::Zero(2, 8)}, tb); },
                                 "star::score_logits: logits[0] is [2,8], expected [3,8]");
}
