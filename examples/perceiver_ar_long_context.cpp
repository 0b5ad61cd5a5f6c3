// SPDX-License-Identifier: MIT
// Perceiver AR on a long context: an uncached forward pass, cached
// token-by-token decoding, and, beside it, a full causal transformer of the
// same depth at the largest context that fits in the same time.
//
//   perceiver_ar_long_context [N] [M] [layers] [width] [heads] [decode_tokens] [threads] [f32|f16|bf16|int8]
//
// Defaults are small (N = 16384). The configuration:
//   perceiver_ar_long_context 131072 1024 6 512 8
// and with the context keys/values stored as float16 (half the memory; each
// decoded token streams the whole context cache, so it also runs faster):
//   perceiver_ar_long_context 131072 1024 6 512 8 32 2 f16
// or as int8 codes with a float scale per (head, token) row (about a quarter):
//   perceiver_ar_long_context 131072 1024 6 512 8 32 2 int8
//
// The input is shaped like a copy task: a random sequence, a separator, then
// the sequence again, so that predicting the second half needs the whole
// context. The weights are random (this measures cost, not quality).
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <effattn/models/perceiver_ar.hpp>
#include <random>
#include <string>
#include <vector>

using effattn::index_t;
using effattn::models::PerceiverArConfig;
using effattn::models::PerceiverArDecoder;
using effattn::models::PerceiverArModel;
using effattn::nn::Matrix;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Peak resident set size of the process so far, MiB.
double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux: KiB
}

index_t arg(int argc, char** argv, int i, index_t def) { return argc > i ? std::atoll(argv[i]) : def; }

/// A copy-task-shaped sequence of n tokens: <sos> x_1..x_k <sep> x_1..x_k ...
std::vector<std::int32_t> copy_task(index_t n, index_t vocab, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<std::int32_t> d(2, static_cast<std::int32_t>(vocab - 1));
  const index_t half = (n - 2) / 2;
  std::vector<std::int32_t> t(static_cast<size_t>(n));
  t[0] = 0;  // <sos>
  for (index_t i = 0; i < half; ++i) t[1 + i] = d(g);
  t[1 + half] = 1;  // <sep>
  for (index_t i = 2 + half; i < n; ++i) t[i] = t[i - 1 - half];
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const index_t N = arg(argc, argv, 1, 16384), M = arg(argc, argv, 2, 1024), layers = arg(argc, argv, 3, 6);
  const index_t width = arg(argc, argv, 4, 512), heads = arg(argc, argv, 5, 8), decode = arg(argc, argv, 6, 32);
  const effattn::Executor ex{static_cast<int>(arg(argc, argv, 7, 2))};
  const std::string kv = argc > 8 ? argv[8] : "f32";
  if (N < 4 || M < 2 || M > N || decode < 1 || decode >= N ||
      (kv != "f32" && kv != "f16" && kv != "bf16" && kv != "int8")) {
    std::fprintf(stderr, "need 2 <= M <= N, N >= 4, 1 <= decode_tokens < N and a storage of f32, f16, bf16 or int8\n");
    return 1;
  }
  PerceiverArConfig cfg;
  cfg.vocab = 256;
  cfg.width = width;
  cfg.heads = heads;
  cfg.layers = layers;
  cfg.context_kv = kv == "f16"    ? effattn::Storage::float16
                   : kv == "bf16" ? effattn::Storage::bfloat16
                   : kv == "int8" ? effattn::Storage::int8
                                  : effattn::Storage::float32;
  std::printf("Perceiver AR: context N=%lld, latents M=%lld, %lld latent layers, width %lld, %lld heads, %d threads, "
              "context keys/values in %s\n",
              (long long)N, (long long)M, (long long)layers, (long long)width, (long long)heads, ex.num_threads,
              effattn::to_string(cfg.context_kv));

  const PerceiverArModel model = PerceiverArModel::random(cfg, 2024);
  const auto tokens = copy_task(N, cfg.vocab, 7);
  const double rss0 = peak_rss_mib();

  // 1. The uncached forward pass over all N tokens with M latents: the
  //    cross-attention costs O(N M), the latent stack O(layers M^2).
  Matrix logits;
  auto t0 = std::chrono::steady_clock::now();
  model.forward(effattn::make_view<const std::int32_t>(tokens.data(), 1, N), {}, M, logits, 0, ex);
  const double t_forward = seconds_since(t0);
  const double rss_forward = peak_rss_mib();
  std::printf("forward (uncached):     %9.3f s   peak RSS %8.1f MiB (%.1f MiB above the start)\n", t_forward,
              rss_forward, rss_forward - rss0);

  // 2. Cached decoding: feed the first N - decode tokens (one latent), then
  //    one token per call, greedily choosing the next token (the memory: the
  //    window's keys/values and max_latents = M cached latents per layer).
  PerceiverArDecoder dec(model, 1, N + M, M);
  Matrix step_logits;
  t0 = std::chrono::steady_clock::now();
  dec.append(effattn::make_view<const std::int32_t>(tokens.data(), 1, N - decode), step_logits, ex);
  const double t_prefill = seconds_since(t0);
  std::int32_t next = 0;
  index_t correct = 0;
  t0 = std::chrono::steady_clock::now();
  for (index_t i = N - decode; i < N; ++i) {
    step_logits.row(0).maxCoeff(&next);
    correct += next == tokens[i];
    // Teacher forcing keeps the sequence a copy task; `next` is the model's guess.
    dec.append(effattn::make_view<const std::int32_t>(tokens.data() + i, 1, 1), step_logits, ex);
  }
  const double t_decode = seconds_since(t0) / static_cast<double>(decode);
  std::printf("cached prefill:         %9.3f s   (%lld tokens, one latent; decoder caches %.1f MiB)\n", t_prefill,
              (long long)(N - decode), static_cast<double>(dec.memory_bytes()) / (1024.0 * 1024.0));
  std::printf("cached decode:          %9.3f ms per token over %lld tokens (%.0fx less than the uncached forward);"
              " %lld latents cached, %lld recomputes, peak RSS %.1f MiB\n",
              1e3 * t_decode, (long long)decode, t_forward / t_decode, (long long)dec.cached_latents(),
              (long long)dec.recomputes(), peak_rss_mib());
  std::printf("  (random weights: %lld of %lld greedy guesses matched the copy task)\n", (long long)correct,
              (long long)decode);

  // 3. The baseline: a causal transformer of the same depth and width over all
  //    of its n tokens (causal_forward: the latent stack with every position a
  //    latent). Its cost grows like n^2; find the largest power of two n >= 1024
  //    whose forward pass fits in the Perceiver AR forward time.
  index_t best_n = 0;
  double best_t = 0;
  for (index_t n = 1024; n <= N; n *= 2) {
    Matrix full_logits;
    t0 = std::chrono::steady_clock::now();
    model.causal_forward(effattn::make_view<const std::int32_t>(tokens.data(), 1, n), full_logits, ex);
    const double t = seconds_since(t0);
    std::printf("full causal, %lld layers, n=%7lld: %9.3f s\n", (long long)layers, (long long)n, t);
    if (t > t_forward) break;
    best_n = n;
    best_t = t;
    if (2.0 * t > t_forward) break;  // doubling n at least doubles the time: it cannot fit
  }
  if (best_n > 0)
    std::printf("=> in %.3f s a full causal transformer of the same depth handles n=%lld tokens (%.3f s); "
                "Perceiver AR handles N=%lld (%.0fx the context)\n",
                t_forward, (long long)best_n, best_t, (long long)N, static_cast<double>(N) / best_n);
  else
    std::printf("=> a full causal transformer of the same depth does not fit 1024 tokens in %.3f s\n", t_forward);
  return 0;
}
