// SPDX-License-Identifier: MIT
// effattn::star::twin: training a star::Model with LibTorch (issue 15), and
// scoring it through effattn's inference path ("train with LibTorch, serve
// with effattn"). Needs LibTorch (effattn::torch).
//
// train(model, train_data, val_data, options):
// - builds a twin::Model from the model's weights (twins.hpp);
// - runs options.steps steps of AdamW on batches of options.batch sequences,
//   train_data(batch, train_batch_seed(seed, step)); the loss is the mean
//   cross-entropy over the scored positions (targets != -1);
// - learning rate: linear warmup over the first round(warmup * steps) steps
//   (lr * (k + 1) / warm), then cosine decay to 0 over the rest
//   (lr * (1 + cos(pi * (k - warm) / (steps - warm))) / 2): a schedule over the
//   fixed token budget steps * batch * length, which a sampler's fixed length
//   consumes at a constant rate (learning_rate());
// - weight decay (decoupled, AdamW) on the matrices of projections and the
//   embedding (weight names ending ".weight"), none on norms, biases, conv
//   taps, A_log, D, s1, s2; the global gradient norm is clipped to grad_clip;
// - writes the trained weights back into `model` (twin::Model::store_to) and
//   reports the twin's validation loss and accuracy on val_batches batches
//   val_data(batch, validation_batch_seed(v)), v = 0 .. val_batches-1 (the
//   same batches evaluate_accuracy scores); train_loss is the mean loss of the
//   last max(1, steps / 10) steps.
// Determinism: for one seed and one `threads`, two runs give identical losses
// and weights on the CPU: torch::manual_seed(seed), at::set_num_threads(threads)
// for the run (the previous count is restored after), data seeds derived from
// the seed (SplitMix64), no random operation in the step (no dropout), and
// torch's CPU kernels split their work by the thread count only.
//
// train() sets process-wide LibTorch state (the thread count and the global
// generator's seed): run one train() at a time per process (a search that
// evaluates candidates in parallel trains them one after another, or in
// separate processes). On a machine shared with other work, threads = 1 (or
// OMP_WAIT_POLICY=passive): libgomp's active waiting made two threads 10x
// slower than one on a loaded 2-vCPU host (docs/star.md).
//
// evaluate_accuracy(model, val_data, batches, batch, ex) scores through
// effattn: Model::prefill of each sequence, argmax of the logits at the scored
// positions (the first maximum on a tie), accuracy = correct / scored.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../tasks.hpp"
#include "twins.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {
namespace twin {

struct TrainOptions {
  index_t steps = 0;         ///< optimizer steps, >= 1
  index_t batch = 0;         ///< sequences per step (and per validation batch), >= 1
  double lr = 3e-3;          ///< peak learning rate, finite and > 0
  double weight_decay = 0.1; ///< AdamW's decoupled decay, finite and >= 0
  double warmup = 0.1;       ///< fraction of the steps spent warming up, in [0, 1)
  double grad_clip = 1.0;    ///< max global gradient norm, finite and > 0
  std::uint64_t seed = 0;    ///< torch::manual_seed and the training data's seeds
  int threads = 1;           ///< at::set_num_threads for the run, >= 1
  index_t val_batches = 1;   ///< validation batches, >= 1
  std::function<void(index_t step, double loss)> progress;  ///< after each step (step 0-based), optional
};

struct TrainResult {
  double train_loss = 0;    ///< mean loss of the last max(1, steps / 10) steps
  double val_loss = 0;      ///< the twin's mean cross-entropy over the scored validation positions
  double val_accuracy = 0;  ///< the twin's argmax accuracy on them
  double seconds = 0;       ///< wall time of train()
  index_t steps = 0;        ///< steps run
};

/// The data seed of training step `step`: SplitMix64 of (seed, step), top bit
/// clear, so it never equals a validation seed (top bit set).
inline std::uint64_t train_batch_seed(std::uint64_t seed, index_t step) {
  return star::detail::derive_seed(seed, static_cast<std::uint64_t>(step)) & ~(std::uint64_t(1) << 63);
}
/// The data seed of validation batch v: 2^63 + v (fixed for every run).
inline std::uint64_t validation_batch_seed(index_t v) {
  return (std::uint64_t(1) << 63) | static_cast<std::uint64_t>(v);
}

namespace detail {
inline void check_options(const TrainOptions& o) {
  const char* op = "star::twin::train";
  using effattn::detail::require;
  require(o.steps >= 1, op, "steps", "must be >= 1, got ", o.steps);
  require(o.batch >= 1, op, "batch", "must be >= 1, got ", o.batch);
  require(std::isfinite(o.lr) && o.lr > 0, op, "lr", "must be finite and > 0, got ", o.lr);
  require(std::isfinite(o.weight_decay) && o.weight_decay >= 0, op, "weight_decay", "must be finite and >= 0, got ",
          o.weight_decay);
  require(o.warmup >= 0 && o.warmup < 1, op, "warmup", "must be in [0, 1), got ", o.warmup);
  require(std::isfinite(o.grad_clip) && o.grad_clip > 0, op, "grad_clip", "must be finite and > 0, got ",
          o.grad_clip);
  require(o.threads >= 1, op, "threads", "must be >= 1, got ", o.threads);
  require(o.val_batches >= 1, op, "val_batches", "must be >= 1, got ", o.val_batches);
}

/// Checks a sampler's batch and returns tokens and targets as int64 [B, N].
inline std::pair<Tensor, Tensor> batch_tensors(const char* op, const TaskBatch& b, index_t want_batch, index_t vocab) {
  if (b.batch != want_batch || b.length < 1 || b.tokens.size() != size_t(b.batch * b.length) ||
      b.targets.size() != b.tokens.size())
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": the sampler gave batch ", b.batch, " length ", b.length,
                                                      " with ", b.tokens.size(), " tokens and ", b.targets.size(),
                                                      " targets; asked for batch ", want_batch,
                                                      ", length >= 1, batch * length of each")));
  std::vector<int64_t> tok(b.tokens.size()), tgt(b.targets.size());
  bool scored = false;
  for (size_t i = 0; i < tok.size(); ++i) {
    if (b.tokens[i] < 0 || b.tokens[i] >= vocab || b.targets[i] < -1 || b.targets[i] >= vocab)
      EFFATTN_THROW(parameter_error(effattn::detail::concat(op, ": sampler entry ", i, " has token ", b.tokens[i],
                                                            " target ", b.targets[i], "; tokens must be in [0, vocab=",
                                                            vocab, "), targets too or -1")));
    tok[i] = b.tokens[i];
    tgt[i] = b.targets[i];
    scored = scored || b.targets[i] >= 0;
  }
  if (!scored) EFFATTN_THROW(parameter_error(effattn::detail::concat(op, ": a sampler batch has no scored target")));
  const std::vector<int64_t> shape{b.batch, b.length};
  return {torch::from_blob(tok.data(), shape, torch::kInt64).clone(),
          torch::from_blob(tgt.data(), shape, torch::kInt64).clone()};
}

/// Restores torch's thread count on scope exit.
struct ThreadScope {
  int saved;
  explicit ThreadScope(int n) : saved(at::get_num_threads()) { at::set_num_threads(n); }
  ~ThreadScope() { at::set_num_threads(saved); }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;
};
}  // namespace detail

/// The learning rate of step k (0-based) of a run of o.steps steps.
inline double learning_rate(const TrainOptions& o, index_t k) {
  const index_t warm = static_cast<index_t>(std::llround(o.warmup * double(o.steps)));
  if (k < warm) return o.lr * double(k + 1) / double(warm);
  const double t = double(k - warm) / double(std::max<index_t>(1, o.steps - warm));
  return o.lr * 0.5 * (1.0 + std::cos(3.14159265358979323846 * t));
}

/// The twin's validation loss and accuracy (see train()).
struct Score {
  double loss = 0, accuracy = 0;
  index_t scored = 0;
};
inline Score evaluate(Model& net, const TaskSampler& val_data, index_t batches, index_t batch) {
  const char* op = "star::twin::evaluate";
  effattn::detail::require(batches >= 1 && batch >= 1, op, "batches/batch", "must be >= 1, got ", batches, ", ",
                           batch);
  effattn::detail::require(bool(val_data), op, "val_data", "must be a sampler, got an empty std::function");
  torch::NoGradGuard ng;
  double loss = 0;
  index_t correct = 0, scored = 0;
  for (index_t v = 0; v < batches; ++v) {
    auto [tok, tgt] = detail::batch_tensors(op, val_data(batch, validation_batch_seed(v)), batch, net.config().vocab);
    const Tensor logits = net.forward(tok).view({-1, net.config().vocab});
    const Tensor t = tgt.view(-1);
    const Tensor m = t.ge(0);
    const index_t n = m.sum().item<int64_t>();
    const Tensor lg = logits.index({m}), tt = t.index({m});
    loss += torch::nn::functional::cross_entropy(lg, tt, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)).item<double>();
    correct += lg.argmax(1).eq(tt).sum().item<int64_t>();
    scored += n;
  }
  return {loss / double(scored), double(correct) / double(scored), scored};
}

/// Accuracy through effattn's inference path (see the top of this file) on
/// the validation batches train() reports on.
inline double evaluate_accuracy(const star::Model& model, const TaskSampler& val_data, index_t batches, index_t batch,
                                const Executor& ex = {}) {
  const char* op = "star::twin::evaluate_accuracy";
  effattn::detail::require(batches >= 1 && batch >= 1, op, "batches/batch", "must be >= 1, got ", batches, ", ",
                           batch);
  effattn::detail::require(bool(val_data), op, "val_data", "must be a sampler, got an empty std::function");
  effattn::detail::check_executor(ex, op);
  index_t correct = 0, scored = 0;
  for (index_t v = 0; v < batches; ++v) {
    const TaskBatch b = val_data(batch, validation_batch_seed(v));
    (void)detail::batch_tensors(op, b, batch, model.vocab());  // the same checks as training
    for (index_t s = 0; s < b.batch; ++s) {
      const std::vector<index_t> seq(b.tokens.begin() + s * b.length, b.tokens.begin() + (s + 1) * b.length);
      const Matrix logits = model.prefill(seq, ex).first;
      for (index_t t = 0; t < b.length; ++t) {
        const index_t target = b.targets[size_t(s * b.length + t)];
        if (target < 0) continue;
        index_t best = 0;
        for (index_t c = 1; c < logits.cols(); ++c)
          if (logits(t, c) > logits(t, best)) best = c;
        correct += best == target;
        ++scored;
      }
    }
  }
  return double(correct) / double(scored);
}

/// Trains `model` in place (see the top of this file).
inline TrainResult train(star::Model& model, const TaskSampler& train_data, const TaskSampler& val_data,
                         const TrainOptions& o) {
  const char* op = "star::twin::train";
  detail::check_options(o);
  effattn::detail::require(bool(train_data), op, "train_data", "must be a sampler, got an empty std::function");
  effattn::detail::require(bool(val_data), op, "val_data", "must be a sampler, got an empty std::function");
  const auto t0 = std::chrono::steady_clock::now();
  detail::ThreadScope threads(o.threads);
  torch::manual_seed(o.seed);
  Model net(model);
  net.train();

  std::vector<Tensor> decay, plain;
  for (const std::string& name : net.weight_names()) {
    const bool is_matrix = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    (is_matrix ? decay : plain).push_back(net.weight(name));
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay)));
  groups.emplace_back(plain, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(o.lr).weight_decay(0.0)));
  torch::optim::AdamW opt(std::move(groups), torch::optim::AdamWOptions(o.lr));
  const std::vector<Tensor> params = net.parameters();

  const index_t V = model.vocab(), tail = std::max<index_t>(1, o.steps / 10);
  double tail_loss = 0;
  for (index_t k = 0; k < o.steps; ++k) {
    auto [tok, tgt] = detail::batch_tensors(op, train_data(o.batch, train_batch_seed(o.seed, k)), o.batch, V);
    const double lr = learning_rate(o, k);
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    opt.zero_grad();
    const Tensor logits = net.forward(tok);
    const Tensor loss = torch::nn::functional::cross_entropy(
        logits.view({-1, V}), tgt.view(-1), torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1));
    loss.backward();
    torch::nn::utils::clip_grad_norm_(params, o.grad_clip);
    opt.step();
    const double l = loss.item<double>();
    if (k >= o.steps - tail) tail_loss += l;
    if (o.progress) o.progress(k, l);
  }
  net.eval();
  net.store_to(model);
  const Score s = evaluate(net, val_data, o.val_batches, o.batch);
  TrainResult r;
  r.train_loss = tail_loss / double(tail);
  r.val_loss = s.loss;
  r.val_accuracy = s.accuracy;
  r.steps = o.steps;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace twin
}  // namespace star
EFFATTN_NAMESPACE_END
