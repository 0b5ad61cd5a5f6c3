// SPDX-License-Identifier: MIT
// star::Model, a genome compiled to a language model: against a float64
// reference of the whole model built from the same weights (every family,
// featurizer and feature-group sharing, differential classes, an odd shape),
// chained steps against the prefill, bit-identical threads, sharing that
// really shares, the analytic costs against the model's own buffers, every
// class and both baselines, the file format, and the input checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <effattn/star/model.hpp>

#include "star/liv_reference.hpp"
#include "support/testing.hpp"

namespace star = effattn::star;
using effattn::index_t;
using star::LivClass;
using star::Matrix;
using star_testing::DMat;

namespace {

star::SlotGenes genes(LivClass c, std::int64_t fs_group = 1, int fs = 1, std::int64_t fg_group = 1, int fg = 1) {
  return star::SlotGenes{static_cast<int>(c), fs_group, fs, fg_group, fg};
}

/// Every family, both sharing kinds with every strategy, differential classes.
star::Genome mixed_genome() {
  using L = LivClass;
  std::vector<star::SlotGenes> s = {
      genes(L::SA1, 1, 1, 1, 2),       // 0 kv leader
      genes(L::GMemless, 2, 2),        // 1 featurizers shared (all) with 3
      genes(L::SA1, 1, 1, 1, 2),       // 2 kv follower of 0
      genes(L::GMemless, 2, 2),        // 3
      genes(L::SA2, 4, 3, 3, 3),       // 4 qk leader, partial featurizer group 4
      genes(L::SA2, 4, 3, 3, 3),       // 5 qk follower of 4; shares v's featurizer with 4
      genes(L::Rec1, 5, 3),            // 6 partial (aBC) with 15
      genes(L::Rec2),                  // 7
      genes(L::GConv1, 6, 3),          // 8 partial (BC) with 9
      genes(L::GConv1, 6, 3),          // 9
      genes(L::GConv2),                // 10
      genes(L::DiffSA3, 7, 2, 7, 2),   // 11 kv leader; featurizers (all) shared with 12
      genes(L::DiffSA3, 7, 2, 7, 2),   // 12 kv follower: only q from its group
      genes(L::DiffRec2),              // 13
      genes(L::DiffGConv1, 8, 2),      // 14
      genes(L::Rec1, 5, 3),            // 15
      genes(L::SA4, 9, 2),             // 16
      genes(L::DiffGConv2),            // 17
  };
  star::Genome g(s);
  g.validate();
  return g;
}

star::ModelConfig small_config(index_t width = 24, index_t heads = 4, index_t vocab = 29) {
  star::ModelConfig c;
  c.vocab = vocab;
  c.width = width;
  c.heads = heads;
  c.longconv_l_max = 64;
  return c;
}

std::vector<index_t> tokens_of(index_t n, index_t vocab, unsigned seed) {
  std::vector<index_t> t(static_cast<size_t>(n));
  std::uint64_t z = seed;
  for (auto& v : t) {
    z = z * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<index_t>((z >> 33) % static_cast<std::uint64_t>(vocab));
  }
  return t;
}

double max_diff(const Matrix& a, const Matrix& b) { return double((a - b).cwiseAbs().maxCoeff()); }

// ------------------------------------------------------------ float64 reference

DMat rms_d(const DMat& x, const star::Vector& w, double eps) {
  DMat y(x.rows, x.cols);
  for (index_t r = 0; r < x.rows; ++r) {
    double ss = 0;
    for (index_t c = 0; c < x.cols; ++c) ss += x(r, c) * x(r, c);
    const double inv = 1.0 / std::sqrt(ss / double(x.cols) + eps);
    for (index_t c = 0; c < x.cols; ++c) y(r, c) = x(r, c) * inv * double(w[c]);
  }
  return y;
}

Matrix vstack(const Matrix& a, const Matrix& b) {
  Matrix m(a.rows() + b.rows(), a.cols());
  m.topRows(a.rows()) = a;
  m.bottomRows(b.rows()) = b;
  return m;
}

/// Causal softmax attention in double, query head h on K/V head h / G.
DMat attention_d(const DMat& q, const DMat& k, const DMat& v, index_t H, index_t hd) {
  const index_t N = q.rows, Hkv = k.cols / hd, G = H / Hkv;
  DMat o(N, H * hd);
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<double> p(static_cast<size_t>(N));
  for (index_t h = 0; h < H; ++h)
    for (index_t i = 0; i < N; ++i) {
      double m = -INFINITY, l = 0;
      for (index_t j = 0; j <= i; ++j) {
        double d = 0;
        for (index_t e = 0; e < hd; ++e) d += q(i, h * hd + e) * k(j, (h / G) * hd + e);
        p[size_t(j)] = d * scale;
        m = std::fmax(m, p[size_t(j)]);
      }
      for (index_t j = 0; j <= i; ++j) l += (p[size_t(j)] = std::exp(p[size_t(j)] - m));
      for (index_t e = 0; e < hd; ++e) {
        double acc = 0;
        for (index_t j = 0; j <= i; ++j) acc += p[size_t(j)] * v(j, (h / G) * hd + e);
        o(i, h * hd + e) = acc / l;
      }
    }
  return o;
}

/// The whole model in double from its weights, written from the definitions
/// (genome.hpp's sharing rules re-derived here from the genome, not read from
/// the model's structure: a follower takes the leader's q/k/v, the shared
/// featurizer weights are looked up by group).
DMat model_reference(const star::Model& m, const std::vector<index_t>& tokens) {
  using namespace star_testing;
  const auto& cfg = m.config();
  const index_t N = index_t(tokens.size()), d = cfg.width, H = cfg.heads, hd = d / H;
  const star::Genome& g = m.genome();
  DMat h(N, d);
  for (index_t t = 0; t < N; ++t)
    for (index_t c = 0; c < d; ++c) h(t, c) = m.embedding().weight(tokens[size_t(t)], c);
  std::map<std::int64_t, index_t> fg_first;
  std::map<std::pair<index_t, int>, std::array<DMat, 3>> qkv;  // (slot, half) -> q, k, v
  for (index_t i = 0; i < m.slots(); ++i) {
    const auto& s = m.slot(i);
    const auto& gs = g[i];
    index_t leader = -1;
    if (gs.fg_strategy != 1) {
      auto it = fg_first.find(gs.fg_group);
      if (it == fg_first.end()) fg_first.emplace(gs.fg_group, i);
      else leader = it->second;
    }
    const DMat xn = rms_d(h, s.norm, cfg.norm_eps);
    DMat y(N, d);
    for (int half = 0; half < s.halves; ++half) {
      const auto& hw = s.half[size_t(half)];
      DMat yh;
      switch (star::family(hw.base)) {
        case star::LivFamily::attention: {
          std::array<DMat, 3> f;
          for (int u = 0; u < 3; ++u) {
            const bool from_leader =
                leader >= 0 && ((gs.fg_strategy == 2 && u >= 1) || (gs.fg_strategy == 3 && u <= 1));
            if (from_leader) {
              f[size_t(u)] = qkv.at({leader, half})[size_t(u)];
              continue;
            }
            DMat a = linear_d(hw.unit[size_t(u)]->w, xn);
            if (hw.unit[size_t(u)]->taps.size()) a = causal_conv_d(a, hw.unit[size_t(u)]->taps);
            if (u < 2) rope_d(a, hd, 10000.0);
            f[size_t(u)] = a;
          }
          qkv[{i, half}] = f;
          yh = linear_d(hw.wo, attention_d(f[0], f[1], f[2], H, hd));
          break;
        }
        case star::LivFamily::recurrence: {
          star::Recurrence op = *hw.rec;
          op.in_proj = hw.unit[0]->w;
          op.x_proj = hw.unit[1]->w;
          op.dt_proj = hw.unit[1]->w2;
          yh = reference_d(op, xn);
          break;
        }
        case star::LivFamily::convolution: {
          const Matrix in = vstack(hw.unit[0]->w.weight, hw.unit[1]->w.weight);
          if (hw.sconv) {
            star::ShortConv op = *hw.sconv;
            op.in_proj.weight = in;
            yh = reference_d(op, xn);
          } else {
            star::LongConv op = *hw.lconv;
            op.in_proj.weight = in;
            yh = reference_d(op, xn, cfg.longconv_bands, cfg.longconv_l_max);
          }
          break;
        }
        default: {
          star::SwiGLU op = *hw.mlp;
          op.w1 = hw.unit[0]->w;
          op.w3 = hw.unit[1]->w;
          yh = reference_d(op, xn);
          break;
        }
      }
      for (size_t e = 0; e < y.v.size(); ++e) y.v[e] += half == 0 ? yh.v[e] : -yh.v[e];
    }
    for (size_t e = 0; e < h.v.size(); ++e) h.v[e] += y.v[e];
  }
  return linear_d(m.embedding(), rms_d(h, m.final_norm(), cfg.norm_eps));
}

Matrix chain_steps(const star::Model& m, const std::vector<index_t>& tokens, const effattn::Executor& ex = {}) {
  auto st = m.make_state();
  Matrix out(index_t(tokens.size()), m.vocab());
  for (size_t t = 0; t < tokens.size(); ++t) out.row(index_t(t)) = m.step(tokens[t], st, ex).row(0);
  EXPECT_EQ(st.length, index_t(tokens.size()));
  return out;
}

void expect_costs_match(const star::Model& m, index_t context) {
  const auto cost = star::genome_cost(m.genome(), m.config().cost_dims(context));
  EXPECT_EQ(m.param_count(), cost.params);
  EXPECT_EQ(m.cache_bytes(context), cost.cache_bytes);
  // The buffers a prefill of `context` tokens really holds (reserved exactly).
  auto st = m.make_state(context);
  (void)m.prefill(tokens_of(context, m.vocab(), 3), st);
  EXPECT_EQ(st.bytes(), cost.cache_bytes);
}

}  // namespace

TEST(StarModel, MatchesFloat64ReferenceOnAnOddShape) {
  const star::Model m(mixed_genome(), small_config(), 11);
  for (index_t N : {1, 11}) {
    SCOPED_TRACE("N=" + std::to_string(N));
    const auto tokens = tokens_of(N, m.vocab(), 7);
    auto pre = m.prefill(tokens);
    ASSERT_EQ(pre.first.rows(), N);
    ASSERT_EQ(pre.first.cols(), m.vocab());
    EXPECT_TRUE(star_testing::near(pre.first, model_reference(m, tokens), 1e-4, 1e-4));
    EXPECT_EQ(pre.second.length, N);
  }
}

TEST(StarModel, ChainedStepsEqualPrefill) {
  const star::Model m(mixed_genome(), small_config(), 12);
  const auto tokens = tokens_of(13, m.vocab(), 8);
  const Matrix pre = m.prefill(tokens).first;
  EXPECT_TRUE(star_testing::near_f(chain_steps(m, tokens), pre, 1e-5, 1e-5));
  // No tokens: no logits, the state unchanged.
  auto empty = m.prefill(std::vector<index_t>{});
  EXPECT_EQ(empty.first.rows(), 0);
  EXPECT_EQ(empty.first.cols(), m.vocab());
  EXPECT_EQ(empty.second.length, 0);
  // A prefill continued from a state equals one prefill of the whole.
  auto st = m.make_state();
  const std::vector<index_t> a(tokens.begin(), tokens.begin() + 5), b(tokens.begin() + 5, tokens.end());
  const Matrix la = m.prefill(a, st), lb = m.prefill(b, st);
  EXPECT_TRUE(star_testing::near_f(la, pre.topRows(5), 1e-5, 1e-5));
  EXPECT_TRUE(star_testing::near_f(lb, pre.bottomRows(8), 1e-5, 1e-5));
}

TEST(StarModel, BitIdenticalForOneAndTwoThreads) {
  // Large enough that the work items run on both threads.
  const star::Model m(mixed_genome(), small_config(96, 4, 300), 13);
  const auto tokens = tokens_of(70, m.vocab(), 9);
  auto s1 = m.make_state(), s2 = m.make_state();
  const Matrix a = m.prefill(tokens, s1, effattn::Executor(1));
  const Matrix b = m.prefill(tokens, s2, effattn::Executor(2));
  EXPECT_TRUE(testing_util::same(a, b));
  const Matrix c = m.step(5, s1, effattn::Executor(1));
  const Matrix d = m.step(5, s2, effattn::Executor(2));
  EXPECT_TRUE(testing_util::same(c, d));
}

TEST(StarModel, FeaturizerSharingSharesTheBuffers) {
  using L = LivClass;
  // Slots 0 and 2: SwiGLU sharing everything; 1 and 3: SA-1 sharing K and V (partial).
  const star::Genome shared({genes(L::GMemless, 1, 2), genes(L::SA1, 2, 3), genes(L::GMemless, 1, 2),
                             genes(L::SA1, 2, 3)});
  star::Genome apart = shared;
  for (index_t i = 0; i < apart.slots(); ++i) apart[i].fs_strategy = 1;
  const auto cfg = small_config(16, 2, 10);
  star::Model m(shared, cfg, 3);
  const star::Model p(apart, cfg, 3);
  // One object: gate and up of the SwiGLUs; k and v (not q) of the attention slots.
  EXPECT_EQ(m.slot(0).half[0].unit[0], m.slot(2).half[0].unit[0]);
  EXPECT_EQ(m.slot(0).half[0].unit[1], m.slot(2).half[0].unit[1]);
  EXPECT_NE(m.slot(1).half[0].unit[0], m.slot(3).half[0].unit[0]);
  EXPECT_EQ(m.slot(1).half[0].unit[1], m.slot(3).half[0].unit[1]);
  EXPECT_EQ(m.slot(1).half[0].unit[2], m.slot(3).half[0].unit[2]);
  // Counted once: the difference is exactly the second copies.
  const index_t d = 16, f = 48;  // ceil(8 * 16 / 3 / 8) * 8
  EXPECT_EQ(p.param_count() - m.param_count(), 2 * d * f + 2 * d * d);
  EXPECT_EQ(m.param_count(), star::genome_cost(shared, cfg.cost_dims(0)).params);
  EXPECT_EQ(p.param_count(), star::genome_cost(apart, cfg.cost_dims(0)).params);
  // Changing the shared weight through slot 2 changes slot 0's (one buffer)
  // and so both layers' outputs.
  const auto tokens = tokens_of(6, 10, 4);
  const Matrix before = m.prefill(tokens).first;
  auto add_one = [&](const std::string& tensor) {
    int found = 0;
    m.edit_weights([&](const std::string& name, float* p, index_t, index_t) {
      if (name == tensor) p[0] += 1.0f, ++found;
    });
    EXPECT_EQ(found, 1) << tensor;
  };
  // The shared gate is listed once, under its first slot; slot 2 has no copy.
  std::vector<std::string> names;
  m.for_each_weight([&](const std::string& n, const float*, index_t, index_t) { names.push_back(n); });
  EXPECT_EQ(std::count(names.begin(), names.end(), "slot0.gate.weight"), 1);
  EXPECT_EQ(std::count(names.begin(), names.end(), "slot2.gate.weight"), 0);
  EXPECT_EQ(std::count(names.begin(), names.end(), "slot2.down.weight"), 1);
  const float w0 = m.slot(2).half[0].unit[0]->w.weight(0, 0);
  add_one("slot0.gate.weight");
  EXPECT_EQ(m.slot(2).half[0].unit[0]->w.weight(0, 0), w0 + 1.0f);  // slot 2 reads the same buffer
  const Matrix after = m.prefill(tokens).first;
  EXPECT_GT(max_diff(before, after), 0.0);
  // Only the weights are shared, not the computation: moving slot 2's own
  // down projection still changes the output.
  add_one("slot2.down.weight");
  EXPECT_GT(max_diff(after, m.prefill(tokens).first), 0.0);
}

TEST(StarModel, FeatureGroupSharingDropsWeightsAndCache) {
  using L = LivClass;
  const auto cfg = small_config(16, 4, 10);
  for (int strategy : {2, 3}) {
    SCOPED_TRACE(strategy == 2 ? "kv" : "qk");
    const star::Genome g({genes(L::SA3, 1, 1, 1, strategy), genes(L::GMemless), genes(L::SA3, 1, 1, 1, strategy)});
    const star::Model m(g, cfg, 1);
    const auto& follower = m.slot(2).half[0];
    EXPECT_EQ(m.slot(2).fg_leader, 0);
    EXPECT_EQ(follower.unit[0] == nullptr, strategy == 3);  // q
    EXPECT_EQ(follower.unit[1], nullptr);                   // k
    EXPECT_EQ(follower.unit[2] == nullptr, strategy == 2);  // v
    for (index_t T : {0, 9}) expect_costs_match(m, T);
    // The follower's cache: none (kv) or V only (qk): 4 heads / 4 = 1 K/V head of 4.
    const index_t own = strategy == 2 ? 0 : 9 * 4 * 4;
    EXPECT_EQ(m.cache_bytes(9), 2 * 9 * 4 * 4 + own);
  }
}

TEST(StarModel, EveryClassCompilesRunsAndCostsMatch) {
  const auto cfg = small_config(16, 4, 21);
  for (int c = 1; c <= star::kNumLivClasses; ++c) {
    SCOPED_TRACE(star::class_name(static_cast<LivClass>(c)));
    const star::Model m(star::Genome::uniform(2, static_cast<LivClass>(c)), cfg, std::uint64_t(c));
    const auto tokens = tokens_of(5, cfg.vocab, unsigned(c));
    const Matrix pre = m.prefill(tokens).first;
    EXPECT_TRUE(pre.allFinite());
    EXPECT_TRUE(star_testing::near_f(chain_steps(m, tokens), pre, 1e-5, 1e-5));
    EXPECT_TRUE(star_testing::near(pre, model_reference(m, tokens), 1e-4, 1e-4));
    for (index_t T : {0, 1, 7}) expect_costs_match(m, T);
  }
}

TEST(StarModel, BaselinesCompileAndRun) {
  const auto cfg = small_config(32, 4, 50);
  for (const star::Genome& g : {star::transformer_pp(6), star::striped_hybrid(8), star::transformer_pp()}) {
    const star::Model m(g, cfg, 2);
    const auto tokens = tokens_of(9, cfg.vocab, 2);
    auto pre = m.prefill(tokens);
    EXPECT_TRUE(pre.first.allFinite());
    const Matrix next = m.step(3, pre.second);
    EXPECT_EQ(next.rows(), 1);
    EXPECT_TRUE(next.allFinite());
    expect_costs_match(m, 12);
  }
  // Transformer++ (24 slots): 12 SA-1 + 12 SwiGLU blocks, no sharing.
  const star::Model t(star::transformer_pp(), cfg, 0);
  const index_t d = 32, f = 88;  // ceil(8 * 32 / 3 / 8) * 8
  EXPECT_EQ(t.param_count(), 12 * (4 * d * d) + 12 * (3 * d * f) + 24 * d + 50 * d + d);
  EXPECT_EQ(t.cache_bytes(100), 12 * 2 * 100 * d * 4);
}

TEST(StarModel, WeightsAreDeterministicFromTheSeed) {
  const auto cfg = small_config();
  const star::Model a(mixed_genome(), cfg, 5), b(mixed_genome(), cfg, 5), c(mixed_genome(), cfg, 6);
  const auto tokens = tokens_of(4, cfg.vocab, 1);
  EXPECT_TRUE(testing_util::same(a.prefill(tokens).first, b.prefill(tokens).first));
  EXPECT_FALSE(testing_util::same(a.prefill(tokens).first, c.prefill(tokens).first));
  // A slot's weights are those of its operator built with the slot's seed.
  const star::Model r(star::Genome::uniform(1, LivClass::Rec2), cfg, 5);
  const star::Recurrence op(star::RecurrenceConfig{cfg.width, 2, 0, 256}, star::detail::derive_seed(5, 1));
  EXPECT_TRUE(testing_util::same(r.slot(0).half[0].unit[0]->w.weight, op.in_proj.weight));
  EXPECT_TRUE(testing_util::same(r.slot(0).half[0].rec->out_proj.weight, op.out_proj.weight));
}

// ------------------------------------------------------------------ the file

TEST(StarModel, FileRoundTrip) {
  const star::Model m(mixed_genome(), small_config(), 21);
  std::stringstream ss;
  m.save(ss);
  const std::string bytes = ss.str();
  EXPECT_EQ(bytes.substr(0, 6), "EFSTAR");
  std::istringstream in(bytes);
  const star::Model l = star::Model::load(in);
  EXPECT_EQ(l.genome(), m.genome());
  EXPECT_EQ(l.param_count(), m.param_count());
  const auto tokens = tokens_of(7, m.vocab(), 3);
  EXPECT_TRUE(testing_util::same(l.prefill(tokens).first, m.prefill(tokens).first));
  // Sharing survives the round trip (one buffer), and the file holds it once.
  EXPECT_EQ(l.slot(1).half[0].unit[0], l.slot(3).half[0].unit[0]);
  std::stringstream again;
  l.save(again);
  EXPECT_EQ(again.str(), bytes);
  // Through a file on disk.
  const std::string path = ::testing::TempDir() + "star_model_test.bin";
  m.save(path);
  EXPECT_TRUE(testing_util::same(star::Model::load(path).prefill(tokens).first, m.prefill(tokens).first));
  std::remove(path.c_str());
}

TEST(StarModel, CorruptOrTruncatedFilesAreRejected) {
  const star::Model m(star::Genome({genes(LivClass::SA3), genes(LivClass::GMemless)}), small_config(8, 4, 5), 2);
  std::stringstream ss;
  m.save(ss);
  const std::string good = ss.str();
  auto load = [](const std::string& b) {
    std::istringstream in(b);
    return star::Model::load(in);
  };
  auto expect_error = [&](const std::string& b, const std::string& needle) {
    testing_util::expect_throw_with<star::model_file_error>([&] { (void)load(b); }, needle);
  };
  // Every truncation.
  for (size_t n = 0; n < good.size(); ++n) {
    SCOPED_TRACE("truncated to " + std::to_string(n));
    expect_error(good.substr(0, n), n == 0 ? "magic: truncated file" : "truncated file");
  }
  std::string b = good;
  b[0] = 'X';
  expect_error(b, "not an effattn STAR model file");
  b = good;
  b[8] = 2;
  expect_error(b, "version: this reader reads version 1, the file has 2");
  b = good;
  b[16] = 99;  // the low byte of slot 0's class
  expect_error(b, "genome: star::Genome::validate: slot 0 gene 1 (class) must be in [1, 17], got 99");
  b = good;
  b[16] = 4;  // SA-4 instead of SA-3: a valid genome whose tensors have other shapes
  expect_error(b, "tensor 'slot0.k.weight': shape [2,8] != [4,8]");
  b = good;
  const size_t dims = 16 + 2 * 5 * 8;
  b[dims + 16] = 3;  // heads 4 -> 3: width 8 is no multiple
  expect_error(b, "dims: star::Model: heads must be >= 1 and divide width=8, got 3");
  b = good;
  b[dims + 2] = 1;  // vocab 5 -> 5 + 2^16: more weights than the file holds, refused before allocating them
  expect_error(b, "truncated file: the genome and dims need 525088 float32 weights");
  b = good + "x";
  expect_error(b, "trailing bytes after the last tensor");
  b = good;
  const float nan = std::nanf("");
  std::memcpy(&b[b.size() - 4], &nan, 4);
  expect_error(b, "tensor 'final_norm': value 7 is not finite");
  b = good;
  const size_t name = good.find("embed.weight");
  ASSERT_NE(name, std::string::npos);
  b[name] = 'E';
  expect_error(b, "tensor: expected 'embed.weight', got 'Embed.weight'");
  testing_util::expect_throw_with<star::model_file_error>([] { (void)star::Model::load("/nonexistent/x.bin"); },
                                                          "cannot open '/nonexistent/x.bin'");
  // Each is a std::invalid_argument.
  EXPECT_THROW((void)load(good.substr(0, 10)), std::invalid_argument);
}

// ------------------------------------------------------------------ errors

TEST(StarModel, OperatorEntryPointsForSharedFeaturizers) {
  // prefill_with / prefill_from with the operator's own featurizers equal prefill.
  const Matrix x = testing_util::random_matrix(9, 16, 4);
  Matrix want, got, p;
  {
    const star::Recurrence op(star::RecurrenceConfig::rec2(16), 1);
    auto s1 = op.make_state(), s2 = op.make_state();
    op.prefill(x, s1, want);
    op.prefill_with(op.in_proj, op.x_proj, op.dt_proj, x, s2, got);
    EXPECT_TRUE(testing_util::same(got, want));
    testing_util::expect_throw_with<effattn::shape_error>(
        [&] { op.prefill_with(op.x_proj, op.x_proj, op.dt_proj, x, s2, got); },
        "star::Recurrence::prefill_with: in_proj must be [32,16], got [5,16]");
  }
  {
    const star::SwiGLU op(star::SwiGLUConfig{16, 0}, 2);
    star::SwiGLU::State s;
    op.prefill(x, s, want);
    op.prefill_with(op.w1, op.w3, x, s, got);
    EXPECT_TRUE(testing_util::same(got, want));
    EXPECT_EQ(s.length, 18);
    testing_util::expect_throw_with<effattn::shape_error>(
        [&] { op.prefill_with(op.w2, op.w3, x, s, got); },
        "star::SwiGLU::prefill_with: gate must be [48,16], got [16,48]");
  }
  {
    const star::ShortConv op(star::ShortConvConfig{16, 3, false}, 3);
    auto s1 = op.make_state(), s2 = op.make_state();
    op.prefill(x, s1, want);
    effattn::nn::linear(op.in_proj, x, p);
    op.prefill_from(p, s2, got);
    EXPECT_TRUE(testing_util::same(got, want));
    testing_util::expect_throw_with<effattn::shape_error>(
        [&] { op.prefill_from(x, s2, got); }, "star::ShortConv::prefill_from: p must be [N,3C]=[9,48], got [9,16]");
  }
  {
    star::LongConvConfig cfg;
    cfg.width = 16;
    const star::LongConv op(cfg, 4);
    auto s1 = op.make_state(), s2 = op.make_state();
    op.prefill(x, s1, want);
    effattn::nn::linear(op.in_proj, x, p);
    op.prefill_from(p, s2, got);
    EXPECT_TRUE(testing_util::same(got, want));
    testing_util::expect_throw_with<effattn::shape_error>([&] { op.prefill_from(p, s2, p); },
                                                          "star::LongConv::prefill_from: y must not be p");
  }
}

TEST(StarModel, InvalidInputsThrowClearErrors) {
  using L = LivClass;
  const auto cfg = small_config(16, 4, 10);
  testing_util::expect_throw_with<effattn::parameter_error>([&] { star::Model(star::Genome(), cfg); },
                                                            "star::Model: genome must have at least one slot, got 0");
  star::Genome bad = star::Genome::uniform(2, L::GMemless);
  bad[1].fg_strategy = 2;
  testing_util::expect_throw_with<effattn::parameter_error>([&] { star::Model(bad, cfg); },
                                                            "slot 1 gene 5 (feature-group-sharing strategy)");
  auto with = [&](auto set) {
    star::ModelConfig c = cfg;
    set(c);
    return c;
  };
  const star::Genome sa3 = star::Genome::uniform(1, L::SA3);
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] { star::Model(sa3, with([](star::ModelConfig& c) { c.heads = 3; })); },
      "star::Model: heads must be >= 1 and divide width=16, got 3");
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] { star::Model(sa3, with([](star::ModelConfig& c) { c.heads = 2; })); },
      "heads must be a multiple of 4 for SA-3, got 2");
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] { star::Model(sa3, with([](star::ModelConfig& c) { c.heads = 16; })); },
      "(the head dim) must be even for RoPE");
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] { star::Model(sa3, with([](star::ModelConfig& c) { c.vocab = 0; })); }, "star::Model: vocab must be >= 1");
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] { star::Model(sa3, with([](star::ModelConfig& c) { c.short_conv = 1; })); },
      "star::Model: short_conv must be >= 2");

  const star::Model m(star::Genome({genes(L::SA1), genes(L::Rec2)}), cfg, 1);
  auto st = m.make_state();
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] { (void)m.prefill({1, 10, 2}, st); }, "star::Model::prefill: token 1 (of 3) must be in [0, vocab=10), got 10");
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] { (void)m.step(-1, st); }, "star::Model::step: token 0 (of 1) must be in [0, vocab=10), got -1");
  testing_util::expect_throw_with<effattn::parameter_error>([&] { (void)m.prefill({1}, st, effattn::Executor(-1)); },
                                                            "num_threads must be >= 0");
  EXPECT_EQ(st.length, 0);  // nothing ran
  const star::Model other(star::Genome({genes(L::SA1), genes(L::Rec1)}), cfg, 1);
  auto ost = other.make_state();
  testing_util::expect_throw_with<effattn::shape_error>([&] { (void)m.prefill({1}, ost); },
                                                        "star::Model::prefill: state was made by another model");
  testing_util::expect_throw_with<effattn::parameter_error>([&] { (void)m.cache_bytes(-1); },
                                                            "star::Model::cache_bytes: context must be >= 0");
  testing_util::expect_throw_with<effattn::parameter_error>([&] { (void)m.make_state(-2); },
                                                            "star::Model::make_state: reserve must be >= 0");
}
