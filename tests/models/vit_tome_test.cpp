// SPDX-License-Identifier: MIT
// effattn::models ViT encoder with ToMe (models/vit_tome.hpp): the block
// against the official facebookresearch/ToMe outputs (golden tome_block_*),
// r = 0 as a plain block, token counts and source maps of the encoder, the
// metric step, bit-identical results for every Executor (the dense layers are
// nn::linear), Executor(1) running the whole pass on the calling thread, and
// bad input (throws before x or the state change), including the defects
// fuzzing found (issue 10).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <effattn/models/vit_tome.hpp>
#include <effattn/tome/tome.hpp>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/golden.hpp"
#include "support/levels.hpp"
#include "support/testing.hpp"
#include "support/threads.hpp"

namespace models = effattn::models;
namespace tome = effattn::tome;
using effattn::index_t;
using effattn::nn::Matrix;

namespace {

/// An Executor whose hook runs every parallel step it is handed on `parts`
/// std::threads (last range started first) and counts the steps in `calls`.
/// Steps below effattn's serial cut-off never reach the hook, so a count > 0
/// shows that a step really took the parallel path.
effattn::Executor counting_executor(std::atomic<int>& calls, int parts = 3) {
  effattn::Executor ex;
  ex.parallel_for = [&calls, parts](index_t n, const std::function<void(index_t, index_t)>& body) {
    ++calls;
    std::vector<std::thread> threads;
    for (int i = parts - 1; i >= 0; --i) {
      const index_t b = n * i / parts, e = n * (i + 1) / parts;
      if (b < e) threads.emplace_back(body, b, e);
    }
    for (auto& t : threads) t.join();
  };
  return ex;
}

Matrix input(index_t rows, index_t width, unsigned seed) {
  auto v = testing_util::random_vector(static_cast<size_t>(rows * width), seed);
  return Eigen::Map<Matrix>(v.data(), rows, width);
}

}  // namespace

TEST(ViTTome, BlockWithRZeroIsAPlainBlockAndEncoderCountsTokens) {
  std::mt19937 rng(3);
  auto enc = models::ViTEncoder::random(rng, 4, 48, 4, 96);
  const index_t B = 2, N = 29;
  const Matrix x0 = input(B * N, 48, 5);
  models::ViTWorkspace ws;
  models::ToMeBlockOptions opt;
  // r = 0 through ToMe equals the reference-backend block without ToMe.
  Matrix a = x0, b = x0;
  models::ToMeState s1, s2;
  s1.reset(B, N);
  s2.reset(B, N);
  models::tome_block_forward(enc.blocks[0], a, s1, 0, opt, ws);
  auto ref_opt = opt;
  ref_opt.attention_backend = effattn::Backend::reference;
  models::tome_block_forward(enc.blocks[0], b, s2, 0, ref_opt, ws);
  EXPECT_LT((a - b).cwiseAbs().maxCoeff(), 1e-4f);
  // Encoder: tokens after each block follow the official caps; tracing the
  // sources gives every original token a valid row.
  for (index_t r : {0, 3, 20}) {
    Matrix x = x0;
    models::ToMeState st;
    st.trace_source = true;
    std::vector<index_t> counts;
    enc.forward(x, B, tome::schedule_constant(4, r), st, opt, ws, {}, &counts);
    EXPECT_EQ(counts, tome::tokens_after_layers(N, tome::schedule_constant(4, r), 1)) << "r=" << r;
    EXPECT_EQ(x.rows(), B * counts.back());
    EXPECT_EQ(static_cast<index_t>(st.source_map.size()), B * N);
    double total = 0;
    for (float s : st.size) total += s;
    if (r > 0) {
      EXPECT_NEAR(total, B * N, 1e-3);
    }
    for (index_t v : st.source_map) EXPECT_TRUE(v >= 0 && v < counts.back());
    for (index_t bb = 0; bb < B; ++bb) EXPECT_EQ(st.source_map[bb * N], 0);  // class token stays row 0
  }
  // Bad input to the block: wrong row count, negative r.
  Matrix bad(B * N + 1, 48);
  models::ToMeState st;
  st.reset(B, N);
  EXPECT_THROW(models::tome_block_forward(enc.blocks[0], bad, st, 2, opt, ws), effattn::shape_error);
  Matrix ok = x0;
  EXPECT_THROW(models::tome_block_forward(enc.blocks[0], ok, st, -1, opt, ws), effattn::parameter_error);
  EXPECT_EQ((ok - x0).cwiseAbs().maxCoeff(), 0.0f);
}

// ToMeBlockOptions::compute = Precision::bfloat16 at every level the host
// supports. At Isa::avx512_bf16 the block's attention runs the bfloat16
// kernel: its output x_attn = x + proj(attention) differs from the float
// run, within the bound of q, k and v rounded to bfloat16 (unit roundoff
// u = 2^-8) and the probabilities' rounding, as in
// tests/attention/bf16_test.cpp: a logit moves by at most eps = 2u scale
// max_ij sum_d |q_id k_jd|, so an output by (e^(2 eps) - 1) max|v| + 2u max|v|;
// the projection row i scales that by sum_c |proj_ic|. Below that level the
// option computes in float: bit-identical to the default. The encoder with
// the option is bit-identical for 1 and 2 threads, differs from float at
// avx512_bf16 and stays within a few bfloat16 units of it.
TEST(ViTTome, Bf16ComputeOptionAtEveryLevel) {
  std::mt19937 rng(11);
  const index_t B = 2, N = 65, C = 64, H = 4, hd = C / H;
  auto enc = models::ViTEncoder::random(rng, 3, C, H, 128);
  const Matrix x0 = input(B * N, C, 21);
  models::ToMeBlockOptions fo, bo;
  bo.compute = effattn::Precision::bfloat16;
  bool ran_bf16 = false;
  for (const effattn::Isa level : testing_util::isa_levels(true)) {
    testing_util::ScopedIsa scoped(level);
    SCOPED_TRACE(effattn::to_string(level));
    const bool native = level == effattn::Isa::avx512_bf16;
    ran_bf16 = ran_bf16 || native;
    // One block, r = 0: the bound on x_attn.
    models::ViTWorkspace ws;
    models::ToMeBlockTrace tf, tb;
    Matrix xf = x0, xb = x0;
    models::ToMeState sf, sb;
    sf.reset(B, N);
    sb.reset(B, N);
    models::tome_block_forward(enc.blocks[0], xf, sf, 0, fo, ws, effattn::Executor{1}, &tf);
    models::tome_block_forward(enc.blocks[0], xb, sb, 0, bo, ws, effattn::Executor{1}, &tb);
    // ws.qkv: the block's q, k, v (before the attention, the same in both runs).
    const Matrix& qkv = ws.qkv;
    double vmax = 0, qk = 0;
    for (index_t r = 0; r < B * N; ++r)
      for (index_t c = 0; c < C; ++c) vmax = std::max(vmax, static_cast<double>(std::abs(qkv(r, 2 * C + c))));
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < N; ++i)
          for (index_t j = 0; j < N; ++j) {
            double a = 0;
            for (index_t d = 0; d < hd; ++d)
              a += std::abs(static_cast<double>(qkv(b * N + i, h * hd + d)) * qkv(b * N + j, C + h * hd + d));
            qk = std::max(qk, a);
          }
    const double u = 1.0 / 256, scale = 1.0 / std::sqrt(static_cast<double>(hd));
    const double attn_tol = std::expm1(2 * 2 * u * scale * qk) * vmax + 2 * u * vmax + 1e-5 * vmax;
    double worst = 0;
    bool differ = false;
    for (index_t i = 0; i < C; ++i) {
      const double tol = 1.25 * attn_tol * enc.blocks[0].proj.weight.row(i).cwiseAbs().cast<double>().sum() + 1e-5;
      for (index_t r = 0; r < B * N; ++r) {
        const double d = std::abs(static_cast<double>(tb.x_attn(r, i)) - tf.x_attn(r, i));
        ASSERT_LE(d, tol) << "row " << r << " channel " << i;
        worst = std::max(worst, d / tol);
        differ = differ || d > 0;
      }
    }
    if (native) {
      EXPECT_TRUE(differ) << "the bfloat16 kernel did not run";
      EXPECT_GT(worst, 1e-4) << "the bound is far from what bfloat16 does";
    } else {
      EXPECT_FALSE(differ) << "below avx512_bf16 the option computes in float";
    }
    // The encoder: r = 0 (no merge decision can flip) for the closeness,
    // r = 8 for the thread bit-identity.
    Matrix ef = x0, eb = x0;
    models::ToMeState st;
    enc.forward(ef, B, {0, 0, 0}, st, fo, ws);
    enc.forward(eb, B, {0, 0, 0}, st, bo, ws);
    const double dmax = (eb - ef).cwiseAbs().maxCoeff(), omax = ef.cwiseAbs().maxCoeff();
    if (native) {
      EXPECT_GT(dmax, 0.0);
      EXPECT_LE(dmax, 8 * u * omax) << "3 blocks, each within a bfloat16 unit or so";
    } else {
      EXPECT_EQ(dmax, 0.0);
    }
    Matrix e1 = x0, e2 = x0;
    models::ToMeState s1, s2;
    enc.forward(e1, B, {8, 8, 8}, s1, bo, ws, effattn::Executor{1});
    enc.forward(e2, B, {8, 8, 8}, s2, bo, ws, effattn::Executor{2});
    ASSERT_EQ(e1.rows(), e2.rows());
    EXPECT_EQ(0, std::memcmp(e1.data(), e2.data(), sizeof(float) * static_cast<size_t>(e1.size())));
  }
  if (!ran_bf16) GTEST_LOG_(INFO) << "no AVX512-BF16 on this CPU: the option computed in float only";
  // Bad value.
  models::ToMeBlockOptions bad;
  bad.compute = static_cast<effattn::Precision>(5);
  Matrix x = x0;
  models::ToMeState st;
  models::ViTWorkspace ws;
  EXPECT_THROW(enc.forward(x, B, {}, st, bad, ws), effattn::parameter_error);
  EXPECT_TRUE((x.array() == x0.array()).all());
}

TEST(ViTTome, KeyMetricIsTheHeadMeanOfTheKeysTheBlockMatchesOn) {
  // Against a plain loop over a [rows, 3C] qkv matrix.
  const index_t rows = 7, H = 3, hd = 5, C = H * hd;
  const Matrix qkv = input(rows, 3 * C, 21);
  std::vector<float> metric(3, -1.0f);
  models::key_metric(qkv, H, metric);
  ASSERT_EQ(metric.size(), static_cast<size_t>(rows * hd));
  for (index_t t = 0; t < rows; ++t)
    for (index_t d = 0; d < hd; ++d) {
      double s = 0;
      for (index_t h = 0; h < H; ++h) s += qkv(t, C + h * hd + d);
      EXPECT_NEAR(metric[static_cast<size_t>(t * hd + d)], s / H, 1e-6) << t << "," << d;
    }
  // The block's traced metric is key_metric of its own qkv projection.
  std::mt19937 rng(22);
  auto enc = models::ViTEncoder::random(rng, 1, 24, 4, 40);
  const index_t B = 2, N = 11;
  Matrix x = input(B * N, 24, 23);
  Matrix h, q;
  const auto& blk = enc.blocks[0];
  effattn::nn::layer_norm(x, blk.norm1_weight, blk.norm1_bias, blk.eps, h);
  effattn::nn::linear(blk.qkv, h, q);
  std::vector<float> want;
  models::key_metric(q, blk.heads, want);
  models::ToMeState st;
  st.reset(B, N);
  models::ViTWorkspace ws;
  models::ToMeBlockTrace tr;
  models::tome_block_forward(blk, x, st, 3, {}, ws, {}, &tr);
  EXPECT_EQ(tr.metric, want);
  // Bad input: the metric is not written.
  std::vector<float> keep = {1.0f, 2.0f};
  EXPECT_THROW(models::key_metric(Matrix(4, 10), 1, keep), effattn::shape_error);
  EXPECT_THROW(models::key_metric(Matrix(4, 0), 1, keep), effattn::shape_error);
  EXPECT_THROW(models::key_metric(qkv, 4, keep), effattn::parameter_error);
  EXPECT_THROW(models::key_metric(qkv, 0, keep), effattn::parameter_error);
  EXPECT_EQ(keep, (std::vector<float>{1.0f, 2.0f}));
}

TEST(ViTTome, EncoderIsBitIdenticalForEveryExecutor) {
  // A whole encoder pass on Executor(1), (2), (3) and a pool hook:
  // bit-identical outputs and sizes. The small encoder stays below the
  // serial cut-off (everything serial); the width-256 one over 197 tokens is
  // above it for the dense layers (nn::linear) and the attention, so their
  // parallel path is exercised.
  struct EncCase {
    index_t depth, width, heads, mlp, B, N;
    std::vector<index_t> schedule;
  };
  std::mt19937 rng(9);
  for (const auto& e : std::vector<EncCase>{{3, 64, 4, 128, 3, 41, {6, 5, 4}}, {2, 256, 4, 1024, 4, 197, {16, 8}}}) {
    auto enc = models::ViTEncoder::random(rng, e.depth, e.width, e.heads, e.mlp);
    const Matrix xin = input(e.B * e.N, e.width, 10);
    std::atomic<int> calls{0};
    std::vector<Matrix> outs;
    std::vector<std::vector<float>> sizes;
    std::vector<std::vector<index_t>> sources;
    for (const auto& ex : {effattn::Executor{1}, effattn::Executor{2}, effattn::Executor{3}, counting_executor(calls)}) {
      Matrix x = xin;
      models::ToMeState st;
      st.trace_source = true;
      models::ViTWorkspace ws;
      enc.forward(x, e.B, e.schedule, st, {}, ws, ex);
      outs.push_back(x);
      sizes.push_back(st.size);
      sources.push_back(st.source_map);
    }
    if (e.width >= 256) {
      EXPECT_GT(calls.load(), 0) << "the encoder never took the parallel path";
    }
    for (size_t i = 1; i < outs.size(); ++i) {
      EXPECT_TRUE(outs[i] == outs[0]) << "width " << e.width << ", run " << i;
      EXPECT_EQ(sizes[i], sizes[0]) << "width " << e.width << ", run " << i;
      EXPECT_EQ(sources[i], sources[0]) << "width " << e.width << ", run " << i;
    }
  }
}

// Executor(1) runs the whole encoder (dense layers, attention, norms, GELU,
// matching, merging) on the calling thread: in a fresh process that asks
// OpenMP for 2 threads by default, the thread count does not grow; the same
// pass on Executor(2) starts OpenMP's team (so the check can fail).
namespace {

void encoder_on(int threads) {
  std::mt19937 rng(31);
  const auto enc = models::ViTEncoder::random(rng, 2, 256, 4, 1024);
  const index_t B = 2, N = 197;
  Matrix x = input(B * N, 256, 32);
  models::ToMeState st;
  models::ViTWorkspace ws;
  testing_util::report_thread_growth(
      [&] { enc.forward(x, B, {16, 8}, st, {}, ws, effattn::Executor(threads)); });
}

}  // namespace

TEST(ViTTomeDeathTest, ExecutorOneRunsTheEncoderOnOneThread) {
#if !defined(_OPENMP)
  GTEST_SKIP() << "built without OpenMP: everything is serial";
#else
  if (testing_util::process_threads() < 1) GTEST_SKIP() << "cannot count threads (no /proc/self/task)";
  testing_util::threadsafe_death_tests();
  EXPECT_EXIT(encoder_on(1), ::testing::ExitedWithCode(0), "threads: same");
  EXPECT_EXIT(encoder_on(2), ::testing::ExitedWithCode(0), "threads: grew");
#endif
}

// ---------------------------------------------------------------- golden

namespace {

effattn::nn::Vector vec(const golden::Case& c, const std::string& n) {
  auto v = c.array(n).as_float();
  return Eigen::Map<effattn::nn::Vector>(v.data(), static_cast<Eigen::Index>(v.size()));
}

effattn::nn::Linear lin(const golden::Case& c, const std::string& n) {
  auto a = c.array(n + "_weight");
  auto w = a.as_float();
  effattn::nn::Linear l;
  l.weight = Eigen::Map<Matrix>(w.data(), a.dim(0), a.dim(1));
  l.bias = vec(c, n + "_bias");
  return l;
}

std::vector<index_t> to_index(const std::vector<std::int64_t>& v) { return std::vector<index_t>(v.begin(), v.end()); }

void expect_indices(const golden::Case& c, const std::string& name, const std::vector<index_t>& got) {
  if (!c.has(name)) return;
  auto want = to_index(c.array(name).as_int());
  EXPECT_EQ(got, want) << c.name << ": " << name;
}

void expect_floats(const golden::Case& c, const std::string& name, const std::vector<float>& got) {
  ASSERT_TRUE(c.has(name)) << c.name << " lacks " << name;
  auto want = c.array(name).as_float();
  testing_util::expect_close(got, want, c.atol, c.rtol, c.name + ": " + name);
}

/// Dense 0/1 arrays compare exactly.
void expect_exact(const golden::Case& c, const std::string& name, const std::vector<float>& got) {
  auto want = c.array(name).as_float();
  ASSERT_EQ(got.size(), want.size()) << c.name << ": " << name;
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << c.name << ": " << name << " index " << i;
}

}  // namespace

TEST(ViTTomeGolden, CasesExist) { EXPECT_EQ(golden::cases("tome_block_").size(), 2u); }

// One block of the official timm patch: attention (proportional or not),
// metric, matching, merge_wavg, source tracing, MLP.
TEST(ViTTomeGolden, Block) {
  for (const auto& name : golden::cases("tome_block_")) {
    golden::Case c(name);
    const auto& P = c.params["params"];
    const index_t B = P["B"], N = P["N"], C = P["C"], r = P["r"];
    models::ViTBlock blk;
    blk.norm1_weight = vec(c, "norm1_weight");
    blk.norm1_bias = vec(c, "norm1_bias");
    blk.norm2_weight = vec(c, "norm2_weight");
    blk.norm2_bias = vec(c, "norm2_bias");
    blk.qkv = lin(c, "qkv");
    blk.proj = lin(c, "proj");
    blk.fc1 = lin(c, "fc1");
    blk.fc2 = lin(c, "fc2");
    blk.heads = P["heads"];
    blk.eps = static_cast<float>(P["layernorm_eps"].get<double>());
    auto xin = c.array("x").as_float();
    auto size = c.array("size").as_float();
    auto src_a = c.array("source_in");
    auto source_in = src_a.as_float();
    const index_t N0 = src_a.dim(2);
    for (auto backend : {effattn::Backend::tiled, effattn::Backend::reference}) {
      for (int threads : {1, 2}) {
        Matrix x = Eigen::Map<Matrix>(xin.data(), B * N, C);
        models::ToMeState st;
        st.reset(B, N);
        if (P["size_given"].get<bool>()) st.size = size;
        models::ToMeBlockOptions opt;
        opt.prop_attn = P["prop_attn"];
        opt.match.class_token = P["class_token"];
        opt.match.distill_token = P["distill_token"];
        opt.attention_backend = backend;
        models::ViTWorkspace ws;
        models::ToMeBlockTrace tr;
        models::tome_block_forward(blk, x, st, r, opt, ws, effattn::Executor{threads}, &tr);
        ASSERT_EQ(tr.plan.r, static_cast<index_t>(P["r_effective"]));
        const index_t Np = N - tr.plan.r;
        ASSERT_EQ(st.tokens, Np);
        expect_floats(c, "x_attn", std::vector<float>(tr.x_attn.data(), tr.x_attn.data() + tr.x_attn.size()));
        expect_floats(c, "metric", tr.metric);
        expect_indices(c, "unm_idx", tr.plan.unm_idx);
        expect_indices(c, "src_idx", tr.plan.src_idx);
        expect_indices(c, "dst_idx", tr.plan.dst_idx);
        expect_floats(c, "x_merged", tr.x_merged);
        expect_floats(c, "size_out", st.size);
        expect_floats(c, "x_out", std::vector<float>(x.data(), x.data() + x.size()));
        std::vector<float> so(static_cast<size_t>(B * Np * N0));
        tome::merge_source<float>(tr.plan, effattn::make_view<const float>(source_in.data(), B, N, N0),
                                  effattn::make_view(so.data(), B, Np, N0));
        expect_exact(c, "source_out", so);
      }
    }
  }
}

// ---------------------------------------------------------------- fuzz regressions (issue 10)

// Defect 4: a negative executor thread count is rejected by the block and the
// encoder first, and nothing changes.
TEST(ViTTomeFuzzRegressions, NegativeExecutorRejected) {
  const effattn::Executor bad(-1);
  std::mt19937 rng(5);
  auto enc = models::ViTEncoder::random(rng, 2, 16, 2, 32);
  const index_t B = 2, N = 9;
  const Matrix x0 = input(B * N, 16, 6);
  Matrix x = x0;
  models::ToMeState st;
  st.reset(B, N);
  models::ViTWorkspace ws;
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] { models::tome_block_forward(enc.blocks[0], x, st, 2, {}, ws, bad); },
      "models::tome_block_forward: executor num_threads must be >= 0, got -1");
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] { enc.forward(x, B, {2, 2}, st, {}, ws, bad); },
      "models::ViTEncoder::forward: executor num_threads must be >= 0, got -1");
  EXPECT_TRUE(x == x0);
  EXPECT_EQ(st.tokens, N);
}

// Defect 5: every check happens before the first write to an output.
TEST(ViTTomeFuzzRegressions, ThrowingCallsLeaveXAndTheStateUntouched) {
  // The encoder checks every block and its final norm before the first block
  // changes x or the state.
  std::mt19937 rng(7);
  auto enc = models::ViTEncoder::random(rng, 3, 16, 2, 32);
  const index_t B = 2, N = 9;
  const Matrix x0 = input(B * N, 16, 8);
  models::ViTWorkspace ws;
  auto bad_last = enc;
  bad_last.blocks[2].heads = 3;  // does not divide the width
  auto bad_norm = enc;
  bad_norm.norm_bias.resize(15);
  auto bad_width = enc;
  bad_width.blocks[1] = models::ViTBlock::random(32, 2, 32, rng);
  for (const auto* e : {&bad_last, &bad_norm, &bad_width}) {
    Matrix x = x0;
    models::ToMeState st;
    st.reset(5, 1);
    EXPECT_THROW(e->forward(x, B, {2, 2, 2}, st, {}, ws), effattn::invalid_argument);
    EXPECT_TRUE(x == x0);
    EXPECT_EQ(st.batch, 5);
  }
  // A block whose state carries a size <= 0 or a source map row out of range
  // throws before the attention step changes x.
  for (int which = 0; which < 2; ++which) {
    Matrix x = x0;
    models::ToMeState st;
    st.reset(B, N, which == 1);
    if (which == 0) {
      st.size.assign(B * N, 1.0f);
      st.size[4] = 0.0f;
    } else {
      st.source_map[3] = N;
    }
    EXPECT_THROW(models::tome_block_forward(enc.blocks[0], x, st, 2, {}, ws), effattn::parameter_error);
    EXPECT_TRUE(x == x0);
  }
  // A distillation token without a class token, and an unknown backend.
  for (int which = 0; which < 2; ++which) {
    Matrix x = x0;
    models::ToMeState st;
    st.reset(B, N);
    models::ToMeBlockOptions opt;
    if (which == 0) {
      opt.match = {false, true};
    } else {
      opt.attention_backend = static_cast<effattn::Backend>(99);
    }
    EXPECT_THROW(models::tome_block_forward(enc.blocks[0], x, st, 2, opt, ws), effattn::parameter_error);
    EXPECT_THROW(enc.forward(x, B, {2}, st, opt, ws), effattn::parameter_error);
    EXPECT_TRUE(x == x0);
  }
  // Bad arguments to the constructors and the state.
  EXPECT_THROW(models::ViTBlock::random(10, 3, 8, rng), effattn::parameter_error);
  EXPECT_THROW(models::ViTBlock::random(12, 3, 0, rng), effattn::parameter_error);
  EXPECT_THROW(models::ViTEncoder::random(rng, -1, 16, 2, 32), effattn::parameter_error);
  EXPECT_THROW(models::ViTEncoder::random(rng, 0, -16, 2, 32), effattn::parameter_error);
  EXPECT_THROW(models::ViTEncoder::random(rng, 0, 16, 2, 0), effattn::parameter_error);
  EXPECT_EQ(models::ViTEncoder::random(rng, 0, 16, 2, 32).norm_weight.size(), 16);
  models::ToMeState st;
  EXPECT_THROW(st.reset(-1, 3), effattn::parameter_error);
}
