// SPDX-License-Identifier: MIT
// Selective attention: prefill a prompt, then decode with a pruned KV cache.
//
//   selective_decoding [contexts=512,1024,2048] [threads=2] [layers=2] [heads=8]
//
// A small random-weight transformer stack (attention + residual only, head_dim
// 64, a KV cache per layer) reads a sequence of tokens from a 97-word random
// vocabulary. The first quarter of each context is the prompt (tiled prefill,
// exact), the rest is decoded one token at a time with budgets N/16, N/25 and
// N/47, the paper's memory reductions at contexts 512, 1024 and 2048, and
// without pruning. For each run it prints the KV bytes held, the attention
// time per token (all layers' cache steps, median over the decoded tokens) and how far the decoded hidden
// states are from unpruned decoding. The weights are random, not trained with
// selective attention, so the distances say nothing about the paper's
// perplexity claims; they show what the pruning changes on this model.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <effattn/effattn.hpp>
#include <effattn/nn/layers.hpp>
#include <effattn/selective/selective.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using effattn::index_t;
using effattn::nn::Matrix;

namespace {

constexpr index_t kHeadDim = 64;

struct Layer {
  effattn::nn::Linear wq, wk, wv, wo;
};

struct Result {
  Matrix hidden;        // [N - P, C]: last layer's hidden state of every decoded token
  double us_per_token;  // attention (cache steps of all layers) per decoded token, median over tokens
  size_t kv_bytes;      // K/V bytes held by all layers' caches at the end
  index_t evicted;      // tokens evicted from layer 0 of sequence 0 in total
};

/// Runs the stack over tokens x [N, C]: prefill of the first P, then decoding.
Result run(const std::vector<Layer>& layers, const Matrix& x, index_t P, index_t H, index_t budget, int threads) {
  const index_t N = x.rows(), C = x.cols(), L = static_cast<index_t>(layers.size());
  const effattn::Executor ex(threads);
  std::vector<effattn::selective::SelectiveKVCache<float>> caches;
  for (index_t l = 0; l < L; ++l) caches.emplace_back(1, H, H, kHeadDim, kHeadDim, budget);

  // Prompt: every layer prefills all P tokens at once.
  Matrix h = x.topRows(P), q, k, v, merged, proj;
  std::vector<float> qh(static_cast<size_t>(P * C)), kh(qh.size()), vh(qh.size()), oh(qh.size());
  index_t evicted = 0;
  for (index_t l = 0; l < L; ++l) {
    layers[l].wq.forward(h, q);
    layers[l].wk.forward(h, k);
    layers[l].wv.forward(h, v);
    effattn::nn::split_heads(q, H, qh.data());
    effattn::nn::split_heads(k, H, kh.data());
    effattn::nn::split_heads(v, H, vh.data());
    caches[l].prefill(effattn::make_view<const float>(qh.data(), 1, H, P, kHeadDim),
                      effattn::make_view<const float>(kh.data(), 1, H, P, kHeadDim),
                      effattn::make_view<const float>(vh.data(), 1, H, P, kHeadDim),
                      effattn::make_view(oh.data(), 1, H, P, kHeadDim), ex);
    if (l == 0) evicted += static_cast<index_t>(caches[0].last_evicted(0).size());
    effattn::nn::merge_heads(oh.data(), H, P, kHeadDim, merged);
    layers[l].wo.forward(merged, proj);
    h += proj;
  }

  // Decoding: one token at a time through every layer's cache.
  Result r;
  r.hidden.resize(N - P, C);
  std::vector<float> q1(static_cast<size_t>(C)), k1(q1.size()), v1(q1.size()), o1(q1.size());
  std::vector<double> seconds(static_cast<size_t>(N - P), 0.0);
  for (index_t t = P; t < N; ++t) {
    Matrix ht = x.row(t);
    for (index_t l = 0; l < L; ++l) {
      layers[l].wq.forward(ht, q);
      layers[l].wk.forward(ht, k);
      layers[l].wv.forward(ht, v);
      effattn::nn::split_heads(q, H, q1.data());
      effattn::nn::split_heads(k, H, k1.data());
      effattn::nn::split_heads(v, H, v1.data());
      const auto t0 = std::chrono::steady_clock::now();
      caches[l].step(effattn::make_view<const float>(q1.data(), 1, H, 1, kHeadDim),
                     effattn::make_view<const float>(k1.data(), 1, H, 1, kHeadDim),
                     effattn::make_view<const float>(v1.data(), 1, H, 1, kHeadDim),
                     effattn::make_view(o1.data(), 1, H, 1, kHeadDim), ex);
      seconds[static_cast<size_t>(t - P)] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (l == 0) evicted += static_cast<index_t>(caches[0].last_evicted(0).size());
      effattn::nn::merge_heads(o1.data(), H, 1, kHeadDim, merged);
      layers[l].wo.forward(merged, proj);
      ht += proj;
    }
    r.hidden.row(t - P) = ht;
  }
  // The median is robust to the time slices a busy machine steals.
  std::nth_element(seconds.begin(), seconds.begin() + seconds.size() / 2, seconds.end());
  r.us_per_token = 1e6 * seconds[seconds.size() / 2];
  r.kv_bytes = 0;
  for (auto& c : caches) r.kv_bytes += c.kv_bytes();
  r.evicted = evicted;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<index_t> contexts;
  {
    std::stringstream ss(argc > 1 ? argv[1] : "512,1024,2048");
    std::string tok;
    while (std::getline(ss, tok, ',')) contexts.push_back(std::atol(tok.c_str()));
  }
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  const index_t L = argc > 3 ? std::atol(argv[3]) : 2;
  const index_t H = argc > 4 ? std::atol(argv[4]) : 8;
  const index_t C = H * kHeadDim;

  // Random weights and a random 97-token vocabulary.
  std::mt19937 rng(2410);
  std::vector<Layer> layers;
  for (index_t l = 0; l < L; ++l)
    layers.push_back({effattn::nn::Linear::random(C, C, rng), effattn::nn::Linear::random(C, C, rng),
                      effattn::nn::Linear::random(C, C, rng), effattn::nn::Linear::random(C, C, rng, 0.5f / std::sqrt(float(C)))});
  std::normal_distribution<float> normal;
  Matrix vocab(97, C);
  for (index_t i = 0; i < vocab.size(); ++i) vocab.data()[i] = normal(rng);

  std::printf("selective attention decoding: %ld layers, %ld heads x %ld, %d threads\n", static_cast<long>(L),
              static_cast<long>(H), static_cast<long>(kHeadDim), threads);
  std::printf("%7s %7s %8s %12s %9s %14s %10s %12s\n", "context", "budget", "memory", "KV bytes", "evicted",
              "us/token attn", "speedup", "rel. dist");
  for (index_t N : contexts) {
    if (N < 8) {
      std::fprintf(stderr, "context %ld too small (need >= 8)\n", static_cast<long>(N));
      return 1;
    }
    std::uniform_int_distribution<int> word(0, 96);
    Matrix x(N, C);
    for (index_t t = 0; t < N; ++t) x.row(t) = vocab.row(word(rng));
    const index_t P = N / 4;
    const Result full = run(layers, x, P, H, N, threads);
    std::printf("%7ld %7s %8s %12zu %9ld %14.1f %10s %12s\n", static_cast<long>(N), "none", "1x", full.kv_bytes, 0L,
                full.us_per_token, "1.0x", "0");
    for (index_t div : {16, 25, 47}) {
      const index_t K = std::max<index_t>(2, N / div);
      const Result r = run(layers, x, P, H, K, threads);
      const double dist = (r.hidden - full.hidden).norm() / full.hidden.norm();
      char mem[32], sp[32];
      std::snprintf(mem, sizeof mem, "%.1fx", static_cast<double>(full.kv_bytes) / static_cast<double>(r.kv_bytes));
      std::snprintf(sp, sizeof sp, "%.1fx", full.us_per_token / r.us_per_token);
      std::printf("%7ld %7ld %8s %12zu %9ld %14.1f %10s %12.3e\n", static_cast<long>(N), static_cast<long>(K), mem,
                  r.kv_bytes, static_cast<long>(r.evicted), r.us_per_token, sp, dist);
    }
  }
  std::printf("memory = unpruned KV bytes / pruned KV bytes; rel. dist = ||h - h_unpruned|| / ||h_unpruned|| over the\n"
              "decoded tokens' last hidden states; us/token attn = all layers' cache steps (eviction, attention,\n"
              "F update) per decoded token, median over the decoded tokens.\n");
  return 0;
}
