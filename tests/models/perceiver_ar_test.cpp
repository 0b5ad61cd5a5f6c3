// SPDX-License-Identifier: MIT
// The Perceiver AR model (effattn::models::PerceiverArModel) and its cached
// decoder: caching equals the uncached forward pass (a port of the official
// test_caching_context_exceeds_latents semantics), the half-latents
// recompute policy, padding, the causal baseline, bit-identical results for
// any executor on shapes where the dense layers and the attention really run
// threaded, and argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <effattn/models/perceiver_ar.hpp>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "support/testing.hpp"
#include "support/threads.hpp"

namespace {

using effattn::index_t;
using effattn::models::PerceiverArConfig;
using effattn::models::PerceiverArDecoder;
using effattn::models::PerceiverArModel;
using effattn::nn::Matrix;

PerceiverArModel small_model(index_t layers, unsigned seed, index_t width = 32, index_t heads = 2,
                      effattn::Storage kv = effattn::Storage::float32) {
  PerceiverArConfig cfg;
  cfg.context_kv = kv;
  cfg.vocab = 23;
  cfg.width = width;
  cfg.heads = heads;
  cfg.layers = layers;
  cfg.mlp_hidden = 2 * width;
  return PerceiverArModel::random(cfg, seed);
}

std::vector<std::int32_t> random_tokens(index_t B, index_t N, index_t vocab, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<std::int32_t> d(0, static_cast<std::int32_t>(vocab - 1));
  std::vector<std::int32_t> t(static_cast<size_t>(B * N));
  for (auto& x : t) x = d(g);
  return t;
}

std::vector<float> row(const Matrix& m, index_t r) { return std::vector<float>(m.row(r).data(), m.row(r).data() + m.cols()); }

// Official test_caching_context_exceeds_latents: max_context_length = 7,
// z_index_dim in {1, 2, 3, 7}, 2 or 3 self-attention layers, batch 2. The
// uncached model sees all 7 tokens with z latents; the cached one is fed the
// first 7 - z + 1 tokens with one latent, then one token per call. Logits of
// call i equal those of uncached latent i within 1e-5.
// Every context storage. The uncached forward rounds its keys/values to the
// same storage, so the equality carries over to 16-bit caches, up to one
// thing: a key computed by the uncached pass (a GEMM over many rows) and by
// the decoder (one row) can differ in the last float bit, and when that
// straddles a 16-bit rounding boundary the stored values differ by one
// 16-bit step. That moves the logits by ~1e-5 with bfloat16 (7-bit mantissa)
// and less with float16; float32 storage has no such step and keeps the
// official 1e-5. int8 storage (one code step is the row's max|x| / 127)
// shares the bfloat16 tolerance.
class PerceiverArDecoderStorage : public ::testing::TestWithParam<effattn::Storage> {
 protected:
  static double tol() {
    switch (GetParam()) {
      case effattn::Storage::float16: return 3e-5;
      case effattn::Storage::bfloat16:
      case effattn::Storage::int8: return 1e-4;
      default: return 1e-5;
    }
  }
};

TEST_P(PerceiverArDecoderStorage, CachingContextExceedsLatents) {
  const index_t N = 7, B = 2;
  for (index_t layers : {2, 3})
    for (index_t z : {1, 2, 3, 7}) {
      SCOPED_TRACE(testing::Message() << "layers " << layers << " z " << z);
      const PerceiverArModel model = small_model(layers, 42 + static_cast<unsigned>(layers), 32, 2, GetParam());
      const auto tok = random_tokens(B, N, model.config.vocab, 7 + static_cast<unsigned>(z));
      Matrix uncached;
      model.forward(effattn::make_view<const std::int32_t>(tok.data(), B, N), {}, z, uncached);
      ASSERT_EQ(uncached.rows(), B * z);
      const index_t max_lat = z % 2 ? z + 1 : z;
      PerceiverArDecoder dec(model, B, N + max_lat, max_lat < 2 ? 2 : max_lat);
      index_t start = 0;
      for (index_t i = 0; i < z; ++i) {
        const index_t end = N - z + i + 1;
        std::vector<std::int32_t> chunk;
        for (index_t b = 0; b < B; ++b)
          for (index_t j = start; j < end; ++j) chunk.push_back(tok[b * N + j]);
        Matrix logits;
        dec.append(effattn::make_view<const std::int32_t>(chunk.data(), B, end - start), logits);
        ASSERT_EQ(logits.rows(), B);
        for (index_t b = 0; b < B; ++b)
          testing_util::expect_close(row(logits, b), row(uncached, b * z + i), tol(), 0, "call " + std::to_string(i));
        start = end;
      }
      EXPECT_EQ(dec.recomputes(), 0);
      EXPECT_EQ(dec.cached_latents(), z);
    }
}

// The same on a larger shape with several heads, fed token by token from one token on.
TEST_P(PerceiverArDecoderStorage, TokenByTokenEqualsUncached) {
  const index_t B = 2, N = 61, M = 24;
  const PerceiverArModel model = small_model(3, 5, 64, 4, GetParam());
  const auto tok = random_tokens(B, N, model.config.vocab, 99);
  Matrix uncached;
  model.forward(effattn::make_view<const std::int32_t>(tok.data(), B, N), {}, M, uncached);
  PerceiverArDecoder dec(model, B, 100, 24);
  // Prefill N - M + 1 tokens, then one per call.
  std::vector<std::int32_t> pre;
  for (index_t b = 0; b < B; ++b)
    for (index_t j = 0; j < N - M + 1; ++j) pre.push_back(tok[b * N + j]);
  Matrix logits;
  dec.append(effattn::make_view<const std::int32_t>(pre.data(), B, N - M + 1), logits);
  for (index_t b = 0; b < B; ++b) testing_util::expect_close(row(logits, b), row(uncached, b * M), tol(), 0, "prefill");
  for (index_t j = N - M + 1; j < N; ++j) {
    std::vector<std::int32_t> one{tok[j], tok[N + j]};
    dec.append(effattn::make_view<const std::int32_t>(one.data(), B, 1), logits);
    const index_t m = j - (N - M);
    for (index_t b = 0; b < B; ++b)
      testing_util::expect_close(row(logits, b), row(uncached, b * M + m), tol(), 0, "token " + std::to_string(j));
  }
}

// Fixed-size memory: when the latent caches are full, the decoder recomputes
// the window with max_latents / 2 latents (the official policy) and goes on.
// Every call equals an uncached forward over the current window with the
// cached number of latents; the memory never grows.
TEST_P(PerceiverArDecoderStorage, HalfLatentsRecomputePolicy) {
  const index_t B = 2, max_ctx = 40, max_lat = 8, steps = 70;
  const PerceiverArModel model = small_model(2, 11, 32, 2, GetParam());
  const auto tok = random_tokens(B, 20 + steps, model.config.vocab, 123);
  const index_t total = 20 + steps;
  PerceiverArDecoder dec(model, B, max_ctx, max_lat);
  index_t fed = 0, last_recomputes = 0;
  auto feed = [&](index_t n) {
    std::vector<std::int32_t> chunk;
    for (index_t b = 0; b < B; ++b)
      for (index_t j = fed; j < fed + n; ++j) chunk.push_back(tok[b * total + j]);
    Matrix logits;
    const index_t lat_before = dec.cached_latents();
    dec.append(effattn::make_view<const std::int32_t>(chunk.data(), B, n), logits);
    fed += n;
    ASSERT_EQ(dec.length(), fed);
    ASSERT_LE(dec.window_length(), max_ctx);
    ASSERT_LE(dec.cached_latents(), max_lat);
    if (lat_before == max_lat) {
      // A recompute happened, with half the latents.
      EXPECT_EQ(dec.recomputes(), last_recomputes + 1);
      EXPECT_EQ(dec.cached_latents(), max_lat / 2);
      EXPECT_EQ(dec.window_length(), std::min(fed, max_ctx - max_lat / 2));
      last_recomputes = dec.recomputes();
    }
    // Uncached reference over the window with the cached number of latents.
    const index_t s = dec.window_start(), w = dec.window_length(), M = dec.cached_latents();
    std::vector<std::int32_t> win;
    for (index_t b = 0; b < B; ++b)
      for (index_t j = s; j < s + w; ++j) win.push_back(tok[b * total + j]);
    Matrix ref;
    model.forward(effattn::make_view<const std::int32_t>(win.data(), B, w), {}, M, ref, s);
    for (index_t b = 0; b < B; ++b)
      testing_util::expect_close(row(logits, b), row(ref, b * M + M - 1), tol(), 0,
                                 "after " + std::to_string(fed) + " tokens");
  };
  feed(20);
  for (index_t i = 0; i < steps; ++i) feed(1);
  // The first call caches 1 latent and steps 1..7 fill the caches to 8; step 8
  // recomputes with 4, and every 5th step after it (4 cached steps + 1
  // recompute): steps 8, 13, ..., 68.
  EXPECT_EQ(dec.recomputes(), 1 + (steps - 8) / 5);
  EXPECT_GT(dec.window_start(), 0);  // the window slid
}

INSTANTIATE_TEST_SUITE_P(Storage, PerceiverArDecoderStorage,
                         ::testing::Values(effattn::Storage::float32, effattn::Storage::float16,
                                           effattn::Storage::bfloat16, effattn::Storage::int8),
                         [](const ::testing::TestParamInfo<effattn::Storage>& i) { return effattn::to_string(i.param); });

/// Three executors that must give the same bits: 1 thread, 2 OpenMP threads,
/// and a host pool hook (3 std::threads per call).
std::vector<effattn::Executor> three_executors() {
  const effattn::Executor pool = testing_util::pool_executor(3);
  return {effattn::Executor{1}, effattn::Executor{2}, pool};
}

/// True when a step of `work` element operations runs on the executor it is
/// given (not on the calling thread alone) under the core's small-work rule:
/// the tests below check their shapes with it, so that they still exercise
/// threads if the cut-off moves.
bool runs_threaded(double work) { return effattn::detail::executor_for(effattn::Executor{2}, work).num_threads == 2; }

// Cached decoding with a prefill of 4280 tokens, 20 single-token steps and a
// recompute in the middle: the prefill's key/value projections (1024-row
// chunks, several output tiles) and each step's attention over the ~4300-token
// window (and the recompute's cross-attention) are above the serial cut-off,
// so 1 thread, 2 OpenMP threads and a host pool really differ in how the work
// is split; they must give the same bits. (A step's dense layers on 4 rows, at
// most 0.6e6 multiply-adds, run threaded only with a cut-off below that.)
TEST(PerceiverArDecoder, BitIdenticalForOneAndTwoThreads) {
  const index_t B = 4, N = 4300, pre = 4280, W = 128, H = 4;
  PerceiverArConfig cfg;
  cfg.vocab = 1100;
  cfg.width = W;
  cfg.heads = H;
  cfg.layers = 2;
  cfg.mlp_hidden = 1024;
  const PerceiverArModel model = PerceiverArModel::random(cfg, 3);
  ASSERT_TRUE(runs_threaded(1024.0 * W * W)) << "prefill key/value projection";
  ASSERT_TRUE(runs_threaded(double(B) * H * pre * W * 2 / H)) << "a decode step's cross-attention";
  const auto tok = random_tokens(B, N, model.config.vocab, 5);
  const auto exs = three_executors();
  std::vector<PerceiverArDecoder> decs;
  for (int i = 0; i < 3; ++i) decs.emplace_back(model, B, 4400, 16);
  auto feed = [&](index_t j0, index_t n) {
    std::vector<std::int32_t> chunk;
    for (index_t b = 0; b < B; ++b)
      for (index_t j = j0; j < j0 + n; ++j) chunk.push_back(tok[b * N + j]);
    Matrix l[3];
    for (int i = 0; i < 3; ++i) decs[i].append(effattn::make_view<const std::int32_t>(chunk.data(), B, n), l[i], exs[i]);
    for (int i = 1; i < 3; ++i)
      for (index_t b = 0; b < B; ++b) EXPECT_EQ(row(l[i], b), row(l[0], b)) << "executor " << i << " token " << j0;
  };
  feed(0, pre);
  for (index_t j = pre; j < N; ++j) feed(j, 1);
  EXPECT_EQ(decs[0].recomputes(), 1);
}

// The uncached forward on a shape where every kind of step runs threaded:
// 2048-row latent projections (3 row tiles), the MLP's 512 hidden outputs and
// the 500-way head (2 column tiles), the input key/value projections (1024-row
// chunks) and both attentions. Executor(1), Executor(2) and a host pool give
// the same bits, for float32 and float16 context storage.
TEST(PerceiverArModel, ForwardBitIdenticalForOneAndTwoThreads) {
  const index_t B = 2, N = 2048, M = 1024, W = 128, H = 4, hidden = 512;
  for (effattn::Storage kv : {effattn::Storage::float32, effattn::Storage::float16}) {
    SCOPED_TRACE(effattn::to_string(kv));
    PerceiverArConfig cfg;
    cfg.vocab = 500;
    cfg.width = W;
    cfg.heads = H;
    cfg.layers = 2;
    cfg.mlp_hidden = hidden;
    cfg.context_kv = kv;
    const PerceiverArModel model = PerceiverArModel::random(cfg, 21);
    ASSERT_TRUE(runs_threaded(double(B) * M * W * W)) << "latent projections";
    ASSERT_TRUE(runs_threaded(double(B) * H * M * M * 2 * (W / H))) << "latent attention";
    const auto tok = random_tokens(B, N, cfg.vocab, 77);
    std::vector<index_t> len{N, N - 300};  // one padded sequence
    const auto tv = effattn::make_view<const std::int32_t>(tok.data(), B, N);
    const auto lv = effattn::make_view<const index_t>(len.data(), B);
    const auto exs = three_executors();
    Matrix l[3];
    for (int i = 0; i < 3; ++i) model.forward(tv, lv, M, l[i], 0, exs[i]);
    ASSERT_EQ(l[0].rows(), B * M);
    ASSERT_EQ(l[0].cols(), cfg.vocab);
    for (int i = 1; i < 3; ++i)
      EXPECT_TRUE((l[i].array() == l[0].array()).all()) << "executor " << i;
  }
}

// causal_forward is the latent blocks over every position: row j depends on
// tokens 0..j only, and it is bit-identical for any executor.
TEST(PerceiverArModel, CausalForwardIsCausalAndThreadInvariant) {
  const index_t B = 2, N = 900;
  PerceiverArConfig cfg;
  cfg.vocab = 50;
  cfg.width = 64;
  cfg.heads = 4;
  cfg.layers = 2;
  cfg.mlp_hidden = 512;
  const PerceiverArModel model = PerceiverArModel::random(cfg, 8);
  auto tok = random_tokens(B, N, cfg.vocab, 4);
  const auto tv = effattn::make_view<const std::int32_t>(tok.data(), B, N);
  const auto exs = three_executors();
  Matrix l[3];
  for (int i = 0; i < 3; ++i) model.causal_forward(tv, l[i], exs[i]);
  ASSERT_EQ(l[0].rows(), B * N);
  ASSERT_EQ(l[0].cols(), cfg.vocab);
  for (int i = 1; i < 3; ++i) EXPECT_TRUE((l[i].array() == l[0].array()).all()) << "executor " << i;
  for (index_t r = 0; r < l[0].rows(); ++r)
    for (index_t c = 0; c < l[0].cols(); ++c) ASSERT_TRUE(std::isfinite(l[0](r, c)));
  // Changing token 600 of sequence 1 leaves its rows 0..599 and sequence 0 alone.
  tok[N + 600] = (tok[N + 600] + 1) % 50;
  Matrix l2;
  model.causal_forward(tv, l2, exs[1]);
  for (index_t j = 0; j < N; ++j)
    testing_util::expect_close(row(l2, j), row(l[0], j), 1e-5, 1e-5, "sequence 0 row " + std::to_string(j));
  for (index_t j = 0; j < 600; ++j)
    testing_util::expect_close(row(l2, N + j), row(l[0], N + j), 1e-5, 1e-5, "sequence 1 row " + std::to_string(j));
  EXPECT_GT(testing_util::max_abs_diff(row(l2, N + 600), row(l[0], N + 600)), 1e-4);
  // Bad input.
  Matrix out = Matrix::Constant(2, 2, 3.0f);
  tok[5] = 50;
  EXPECT_THROW(model.causal_forward(tv, out), effattn::parameter_error);
  tok[5] = 0;
  EXPECT_THROW(model.causal_forward(tv, out, effattn::Executor(-1)), effattn::parameter_error);
  EXPECT_TRUE((out.array() == 3.0f).all() && out.rows() == 2);
  model.causal_forward(effattn::make_view<const std::int32_t>(tok.data(), 0, N), out);
  EXPECT_EQ(out.rows(), 0);
}

// Right padding never leaks: a padded sequence gives the same valid-latent
// logits as the same tokens without padding (when L >= M), and fully padded
// sequences give finite logits.
TEST(PerceiverArModel, PaddingDoesNotLeak) {
  const index_t B = 3, N = 40, M = 8;
  const PerceiverArModel model = small_model(2, 17);
  auto tok = random_tokens(B, N, model.config.vocab, 1);
  std::vector<index_t> len{N, 25, 0};
  Matrix padded;
  model.forward(effattn::make_view<const std::int32_t>(tok.data(), B, N), effattn::make_view<const index_t>(len.data(), B),
                M, padded);
  for (index_t r = 0; r < padded.rows(); ++r)
    for (index_t c = 0; c < padded.cols(); ++c) ASSERT_TRUE(std::isfinite(padded(r, c)));
  // Sequence 1 truncated to its 25 valid tokens.
  std::vector<std::int32_t> t1(tok.begin() + N, tok.begin() + N + 25);
  Matrix trunc;
  model.forward(effattn::make_view<const std::int32_t>(t1.data(), 1, 25), {}, M, trunc);
  for (index_t m = 0; m < M; ++m)
    testing_util::expect_close(row(padded, M + m), row(trunc, m), 1e-5, 1e-5, "latent " + std::to_string(m));
  // Changing the padding tokens changes nothing.
  for (index_t j = 25; j < N; ++j) tok[N + j] = (tok[N + j] + 5) % 23;
  Matrix padded2;
  model.forward(effattn::make_view<const std::int32_t>(tok.data(), B, N), effattn::make_view<const index_t>(len.data(), B),
                M, padded2);
  for (index_t m = 0; m < M; ++m) EXPECT_EQ(row(padded, M + m), row(padded2, M + m));
  // With L < M the valid latents still match the truncated sequence with M = L.
  std::vector<index_t> len5{N, 5, 0};
  Matrix p5, t5;
  model.forward(effattn::make_view<const std::int32_t>(tok.data(), B, N), effattn::make_view<const index_t>(len5.data(), B),
                M, p5);
  model.forward(effattn::make_view<const std::int32_t>(tok.data() + N, 1, 5), {}, 5, t5);
  for (index_t m = 0; m < 5; ++m)
    testing_util::expect_close(row(p5, M + (M - 5) + m), row(t5, m), 1e-5, 1e-5, "short latent " + std::to_string(m));
}

// 16-bit context storage changes the logits only by its rounding of the
// keys/values, halves the context cache, and rejects unknown storage values.
TEST(PerceiverArModel, SixteenBitContextStorage) {
  const index_t B = 2, N = 90, M = 16;
  const auto tok = random_tokens(B, N, 23, 8);
  auto tv = effattn::make_view<const std::int32_t>(tok.data(), B, N);
  Matrix l32, l16, lbf;
  small_model(2, 4, 64, 4, effattn::Storage::float32).forward(tv, {}, M, l32);
  small_model(2, 4, 64, 4, effattn::Storage::float16).forward(tv, {}, M, l16);
  small_model(2, 4, 64, 4, effattn::Storage::bfloat16).forward(tv, {}, M, lbf);
  const std::vector<float> a(l32.data(), l32.data() + l32.size()), h(l16.data(), l16.data() + l16.size()),
      bf(lbf.data(), lbf.data() + lbf.size());
  EXPECT_TRUE(testing_util::close(h, a, 2e-3, 2e-3));
  EXPECT_TRUE(testing_util::close(bf, a, 2e-2, 2e-2));
  EXPECT_GT(testing_util::max_abs_diff(h, a), 0.0);  // the storage is really 16-bit

  const PerceiverArModel m32 = small_model(1, 4, 64, 4), m16 = small_model(1, 4, 64, 4, effattn::Storage::float16);
  PerceiverArDecoder d32(m32, 2, 1000, 16), d16(m16, 2, 1000, 16);
  EXPECT_EQ(d16.context_storage(), effattn::Storage::float16);
  const std::size_t ctx32 = 2 * 2 * 1000 * 64 * 4, lat = 2 * 1 * 2 * 16 * 64 * 4, toks = 2 * 1000 * 4;
  EXPECT_EQ(d32.memory_bytes(), ctx32 + lat + toks);
  EXPECT_EQ(d16.memory_bytes(), ctx32 / 2 + lat + toks);

  PerceiverArConfig bad;
  bad.width = 8;
  bad.heads = 2;
  bad.context_kv = static_cast<effattn::Storage>(7);
  EXPECT_THROW(PerceiverArModel::random(bad, 1), effattn::parameter_error);
  PerceiverArModel tampered = m32;
  tampered.config.context_kv = static_cast<effattn::Storage>(7);
  Matrix out;
  EXPECT_THROW(tampered.forward(tv, {}, M, out), effattn::parameter_error);
  EXPECT_THROW(PerceiverArDecoder(tampered, 1, 10, 4), effattn::parameter_error);
}

TEST(PerceiverArModel, BadInputThrows) {
  const PerceiverArModel model = small_model(1, 1);
  auto tok = random_tokens(2, 10, model.config.vocab, 1);
  Matrix out;
  auto tv = effattn::make_view<const std::int32_t>(tok.data(), 2, 10);
  EXPECT_THROW(model.forward(tv, {}, 11, out), effattn::parameter_error);
  EXPECT_THROW(model.forward(tv, {}, 0, out), effattn::parameter_error);
  std::vector<index_t> len{10, 11};
  EXPECT_THROW(model.forward(tv, effattn::make_view<const index_t>(len.data(), 2), 4, out), effattn::parameter_error);
  tok[3] = 23;
  EXPECT_THROW(model.forward(tv, {}, 4, out), effattn::parameter_error);
  tok[3] = -1;
  EXPECT_THROW(model.forward(tv, {}, 4, out), effattn::parameter_error);
  tok[3] = 0;
  EXPECT_THROW(PerceiverArDecoder(model, 2, 10, 3), effattn::parameter_error);  // odd max_latents
  EXPECT_THROW(PerceiverArDecoder(model, 0, 10, 4), effattn::parameter_error);
  EXPECT_THROW(PerceiverArDecoder(model, 2, 2, 4), effattn::parameter_error);
  PerceiverArDecoder dec(model, 2, 12, 4);
  EXPECT_THROW(dec.append(effattn::make_view<const std::int32_t>(tok.data(), 1, 5), out), effattn::shape_error);
  EXPECT_THROW(dec.append(effattn::make_view<const std::int32_t>(tok.data(), 2, 0), out), effattn::parameter_error);
  EXPECT_THROW(dec.append(effattn::make_view<const std::int32_t>(tok.data(), 1, 11), out), effattn::shape_error);
  std::vector<std::int32_t> big(22, 1);
  EXPECT_THROW(dec.append(effattn::make_view<const std::int32_t>(big.data(), 2, 11), out), effattn::parameter_error);
  big[4] = 99;
  EXPECT_THROW(dec.append(effattn::make_view<const std::int32_t>(big.data(), 2, 3), out), effattn::parameter_error);
  EXPECT_EQ(dec.length(), 0);  // nothing was appended
}

}  // namespace
