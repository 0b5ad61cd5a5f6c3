// SPDX-License-Identifier: MIT
// effattn::models: a timm-style pre-LN ViT block and encoder with ToMe placed
// as in the official patch (facebookresearch/ToMe `tome/patch/timm.py`):
//
//   attn_size = size if prop_attn else none
//   x_attn, metric = Attention(LN1(x), attn_size)    metric = k averaged over heads
//   x = x + x_attn
//   if r > 0: plan = bipartite_soft_matching(metric, r, class_token, distill_token)
//             (source = merge_source(plan, source) when tracing)
//             x, size = merge_wavg(plan, x, size)
//   x = x + MLP(LN2(x))                               MLP = fc2(GELU_erf(fc1(.)))
//
// A demonstration model (weights from the caller or random from a seed), kept
// apart from the ToMe method in effattn/tome/ (matching, merging, proportional
// attention, schedules), which it only uses.
//
// Activations are row-major matrices [batch * tokens, width] (batch-major); the
// token count shrinks block by block. The dense layers (qkv, proj, fc1, fc2)
// are nn::linear over the whole batch (fixed output tiles on the Executor);
// attention runs on effattn's tiled engine straight from the qkv matrix
// (strided views, no head split copies) with proportional attention via
// KeyBiasScore(log size); LayerNorm, GELU, the matching and the merge run on
// the Executor too. Everything is bit-identical for any thread count and any
// pool hook; Eigen's global thread setting is not used, and Executor(1) runs
// the whole forward pass on the calling thread.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <vector>

#include "../attention/engine.hpp"
#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/view.hpp"
#include "../nn/layers.hpp"
#include "../tome/matching.hpp"
#include "../tome/merge.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace models {
namespace detail {
namespace vit_tome {

/// The extents of a randomly initialised block.
inline void check_shape_args(index_t width, index_t heads, index_t mlp_hidden, const char* op) {
  effattn::detail::require(width > 0 && heads > 0 && width % heads == 0, op, "heads",
                           "must divide width, got width=", width, " heads=", heads);
  effattn::detail::require(mlp_hidden > 0, op, "mlp_hidden", "must be > 0, got ", mlp_hidden);
}

}  // namespace vit_tome
}  // namespace detail

/// Weights of one pre-LN ViT block (torch Linear layout [out, in]).
struct ViTBlock {
  nn::Vector norm1_weight, norm1_bias;
  nn::Linear qkv;   ///< [3C, C]: rows [0,C) = q, [C,2C) = k, [2C,3C) = v; head h = rows h*hd.. inside each
  nn::Linear proj;  ///< [C, C]
  nn::Vector norm2_weight, norm2_bias;
  nn::Linear fc1;  ///< [hidden, C]
  nn::Linear fc2;  ///< [C, hidden]
  index_t heads = 1;
  float eps = 1e-6f;

  index_t width() const { return qkv.in_features(); }

  /// Random weights (torch-like uniform bounds, LayerNorm weight 1 + noise).
  /// Throws parameter_error unless width > 0, heads > 0 divides it and
  /// mlp_hidden > 0.
  template <class Rng>
  static ViTBlock random(index_t width, index_t heads, index_t mlp_hidden, Rng& rng) {
    detail::vit_tome::check_shape_args(width, heads, mlp_hidden, "models::ViTBlock::random");
    ViTBlock b;
    std::normal_distribution<float> nd(0.0f, 0.02f);
    b.norm1_weight = nn::Vector::Ones(width);
    b.norm1_bias = nn::Vector::Zero(width);
    b.norm2_weight = nn::Vector::Ones(width);
    b.norm2_bias = nn::Vector::Zero(width);
    for (index_t i = 0; i < width; ++i) {
      b.norm1_weight[i] += nd(rng);
      b.norm1_bias[i] = nd(rng);
      b.norm2_weight[i] += nd(rng);
      b.norm2_bias[i] = nd(rng);
    }
    b.qkv = nn::Linear::random(width, 3 * width, rng);
    b.proj = nn::Linear::random(width, width, rng);
    b.fc1 = nn::Linear::random(width, mlp_hidden, rng);
    b.fc2 = nn::Linear::random(mlp_hidden, width, rng);
    b.heads = heads;
    return b;
  }
};

/// What flows from block to block (the official `_tome_info`).
struct ToMeState {
  index_t batch = 0;
  index_t tokens = 0;           ///< current tokens per sequence
  std::vector<float> size;      ///< [batch, tokens] token sizes; empty = all ones (official None)
  bool trace_source = false;    ///< keep source_map up to date
  std::vector<index_t> source_map;  ///< [batch, original tokens]: current row of each original token

  /// Start of a forward pass: tokens per sequence, no sizes, identity sources.
  /// Throws (and changes nothing) for a negative extent or, when tracing, a
  /// batch * tokens that overflows.
  void reset(index_t batch_, index_t tokens_, bool trace = false) {
    const char* op = "models::ToMeState::reset";
    effattn::detail::require(batch_ >= 0 && tokens_ >= 0, op, "batch/tokens", "must be >= 0, got batch=", batch_, " tokens=", tokens_);
    if (trace) effattn::detail::checked_mul(batch_, tokens_, op, "source map batch * tokens");
    batch = batch_;
    tokens = tokens_;
    size.clear();
    trace_source = trace;
    source_map.clear();
    if (trace) {
      source_map.resize(static_cast<size_t>(batch * tokens));
      for (index_t b = 0; b < batch; ++b)
        for (index_t t = 0; t < tokens; ++t) source_map[b * tokens + t] = t;
    }
  }
  index_t original_tokens() const { return batch > 0 ? static_cast<index_t>(source_map.size()) / batch : 0; }
};

/// Options of a ToMe block (ViTEncoder::forward passes them to every block).
struct ToMeBlockOptions {
  bool prop_attn = true;                  ///< proportional attention (+ log size)
  tome::MatchOptions match{true, false};  ///< class token on, no distillation token
  Backend attention_backend = Backend::tiled;
  /// The attention's products (AttentionOptions::compute): float32, or
  /// bfloat16 (q, k, v and the probabilities rounded to bfloat16, scores,
  /// softmax and accumulation in float) on a CPU with AVX512-BF16; below that
  /// level (or with the reference backend) it computes in float. The dense
  /// layers, the matching and the merge stay float.
  Precision compute = Precision::float32;
};

/// Intermediates of one block, for tests and inspection.
struct ToMeBlockTrace {
  nn::Matrix x_attn;           ///< [B*N, C] after the attention residual
  std::vector<float> metric;   ///< [B, N, hd] keys averaged over heads
  tome::MergePlan plan;        ///< the merge (identity when r == 0)
  std::vector<float> x_merged; ///< [B*N', C] after merge_wavg, before the MLP
};

/// Reusable buffers of the block (so a forward pass allocates once).
struct ViTWorkspace {
  nn::Matrix h, qkv, attn, tmp, hidden, merged;
  std::vector<float> metric, log_size, size_out;
};

namespace detail {
namespace vit_tome {

inline void check_block(const ViTBlock& blk, const char* op) {
  const index_t C = blk.qkv.in_features();
  effattn::detail::require(C > 0 && blk.heads > 0 && C % blk.heads == 0, op, "heads", "must divide the width, got width=", C,
          " heads=", blk.heads);
  auto chk = [&](bool ok, const char* what) {
    if (!ok) EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": block weight ", what, " has the wrong shape for width ", C)));
  };
  chk(blk.qkv.out_features() == 3 * C && (blk.qkv.bias.size() == 0 || blk.qkv.bias.size() == 3 * C), "qkv [3C,C]");
  chk(blk.proj.in_features() == C && blk.proj.out_features() == C, "proj [C,C]");
  chk(blk.fc1.in_features() == C && blk.fc1.out_features() > 0, "fc1 [hidden,C]");
  chk(blk.fc2.in_features() == blk.fc1.out_features() && blk.fc2.out_features() == C, "fc2 [C,hidden]");
  chk(blk.proj.bias.size() == 0 || blk.proj.bias.size() == C, "proj bias [C]");
  chk(blk.fc1.bias.size() == 0 || blk.fc1.bias.size() == blk.fc1.out_features(), "fc1 bias [hidden]");
  chk(blk.fc2.bias.size() == 0 || blk.fc2.bias.size() == C, "fc2 bias [C]");
  chk(blk.norm1_weight.size() == C && blk.norm1_bias.size() == C, "norm1 [C]");
  chk(blk.norm2_weight.size() == C && blk.norm2_bias.size() == C, "norm2 [C]");
  effattn::detail::require(std::isfinite(blk.eps) && blk.eps > 0, op, "eps", "must be finite and > 0, got ", blk.eps);
}

/// The state and activations a block starts from: x [B*N, C], sizes [B, N]
/// finite and > 0 (or none), the source map [B, N0] with rows in [0, N) when
/// tracing; match options valid. Everything a block (or an encoder) would
/// otherwise only find out after it has changed x.
inline void check_block_state(const nn::Matrix& x, const ToMeState& st, index_t C, const ToMeBlockOptions& opt,
                              const char* op) {
  const index_t B = st.batch, N = st.tokens;
  effattn::detail::require(B >= 1 && N >= 1, op, "state", "must have batch >= 1 and tokens >= 1, got batch=", B, " tokens=", N);
  const index_t rows = effattn::detail::checked_mul(B, N, op, "state batch * tokens");
  if (x.rows() != rows || x.cols() != C)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": x must be [B*N,C]=[", rows, ",", C, "], got [",
                                                      x.rows(), ",", x.cols(), "]")));
  effattn::detail::require(st.size.empty() || static_cast<index_t>(st.size.size()) == rows, op, "state.size",
          "must be empty or [B,N]=[", B, ",", N, "], got ", st.size.size(), " values");
  for (size_t i = 0; i < st.size.size(); ++i)
    effattn::detail::require(std::isfinite(st.size[i]) && st.size[i] > 0.0f, op, "state.size", "must be finite and > 0, got ",
            st.size[i], " at ", i);
  if (st.trace_source) {
    effattn::detail::require(!st.source_map.empty() && static_cast<index_t>(st.source_map.size()) % B == 0, op, "state.source_map",
            "must be [B,N0] when tracing (call ToMeState::reset)");
    for (size_t i = 0; i < st.source_map.size(); ++i)
      effattn::detail::require(st.source_map[i] >= 0 && st.source_map[i] < N, op, "state.source_map", "values must be rows in [0, N=",
              N, "), got ", st.source_map[i], " at ", i);
  }
  effattn::detail::require(!opt.match.distill_token || opt.match.class_token, op, "match.distill_token",
                           "requires match.class_token (the official output order is undefined without it)");
  effattn::detail::require(opt.attention_backend == Backend::tiled || opt.attention_backend == Backend::reference, op,
          "attention_backend", "must be tiled or reference");
  effattn::detail::require(opt.compute == Precision::float32 || opt.compute == Precision::bfloat16, op, "compute",
          "must be Precision::float32 or bfloat16, got ", static_cast<int>(opt.compute));
}

}  // namespace vit_tome
}  // namespace detail

/// ToMe's similarity metric of a block (the official `metric = k.mean(1)`):
/// the keys of the block's qkv projection averaged over the heads. qkv is
/// [rows, 3C] as ViTBlock::qkv lays it out (keys in columns [C, 2C), head h in
/// columns C + h*hd ..); metric is resized to [rows, hd], hd = C / heads. This
/// is the step tome_block_forward runs before the matching. Throws (before
/// writing metric) shape_error for a qkv width that is not a positive multiple
/// of 3, parameter_error for heads that do not divide C.
inline void key_metric(const nn::Matrix& qkv, index_t heads, std::vector<float>& metric) {
  const char* op = "models::key_metric";
  if (qkv.cols() <= 0 || qkv.cols() % 3 != 0)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": qkv must be [rows,3C] with C > 0, got [", qkv.rows(), ",",
                                                      qkv.cols(), "]")));
  const index_t C = qkv.cols() / 3, rows = qkv.rows();
  effattn::detail::require(heads > 0 && C % heads == 0, op, "heads", "must divide the width C=", C, ", got ", heads);
  const index_t H = heads, hd = C / H, C3 = 3 * C;
  metric.resize(static_cast<size_t>(rows * hd));
  const float* p = qkv.data();
  for (index_t t = 0; t < rows; ++t) {
    const float* kr = p + t * C3 + C;
    float* m = metric.data() + t * hd;
    for (index_t d = 0; d < hd; ++d) {
      float s = 0;
      for (index_t h = 0; h < H; ++h) s += kr[h * hd + d];
      m[d] = s / static_cast<float>(H);
    }
  }
}

/// One ViT block with ToMe. x [B*N, C] (B = st.batch, N = st.tokens) is
/// replaced by the block output [B*N', C], N' = N - r_eff; st.tokens, st.size
/// and (when tracing) st.source_map are updated. r >= 0 (r == 0: a plain
/// block). trace (optional) receives x_attn, the metric, the plan and x_merged.
/// Throws before touching x or st on bad shapes or parameters (a negative
/// executor thread count first). (A non-finite metric, i.e. overflowed
/// activations, is only detected by the matching, after the attention step has
/// updated x.)
inline void tome_block_forward(const ViTBlock& blk, nn::Matrix& x, ToMeState& st, index_t r,
                               const ToMeBlockOptions& opt, ViTWorkspace& ws, const Executor& ex = {},
                               ToMeBlockTrace* trace = nullptr) {
  const char* op = "models::tome_block_forward";
  effattn::detail::check_executor(ex, op);
  detail::vit_tome::check_block(blk, op);
  detail::vit_tome::check_block_state(x, st, blk.width(), opt, op);
  effattn::detail::require(r >= 0, op, "r", "must be >= 0, got ", r);
  const index_t B = st.batch, N = st.tokens, C = blk.width(), H = blk.heads, hd = C / H;

  // Attention with proportional attention.
  nn::layer_norm(x, blk.norm1_weight, blk.norm1_bias, blk.eps, ws.h, ex);
  nn::linear(blk.qkv, ws.h, ws.qkv, ex);
  ws.attn.resize(B * N, C);
  const float* qkv = ws.qkv.data();
  const index_t C3 = 3 * C;
  const std::array<index_t, 4> shp{B, H, N, hd}, qst{N * C3, hd, C3, 1};
  ConstView<float, 4> q(qkv, shp, qst), k(qkv + C, shp, qst), v(qkv + 2 * C, shp, qst);
  View<float, 4> o(ws.attn.data(), shp, {N * C, hd, C, 1});
  AttentionOptions aopt;
  aopt.backend = opt.attention_backend;
  aopt.compute = opt.compute;
  if (opt.prop_attn && !st.size.empty()) {
    ws.log_size.resize(static_cast<size_t>(B * N));
    for (index_t i = 0; i < B * N; ++i) ws.log_size[i] = std::log(st.size[i]);
    attention<float>(q, k, v, o, NoMask{}, KeyBiasScore{make_view<const float>(ws.log_size.data(), B, N)}, aopt, ex);
  } else {
    attention<float>(q, k, v, o, NoMask{}, NoScore{}, aopt, ex);
  }
  nn::linear(blk.proj, ws.attn, ws.tmp, ex);
  x += ws.tmp;
  if (trace) trace->x_attn = x;

  // ToMe between attention and MLP (benchmarks/bench_tome.cpp times these
  // steps on their own: key_metric, bipartite_soft_matching, merge_wavg).
  tome::MergePlan plan;
  if (r > 0 || trace) key_metric(ws.qkv, H, ws.metric);
  if (r > 0) {
    plan = tome::bipartite_soft_matching(make_view<const float>(ws.metric.data(), B, N, hd), r, opt.match, ex);
  } else {
    plan = tome::MergePlan::identity(B, N);
  }
  if (trace) {
    trace->metric = ws.metric;
    trace->plan = plan;
  }
  if (!plan.is_identity()) {
    const index_t Np = plan.out_tokens();
    if (st.trace_source) {
      const index_t N0 = st.original_tokens();
      View<index_t, 2> map(st.source_map.data(), {B, N0});
      tome::merge_source_map(plan, map, map);
    }
    ws.merged.resize(B * Np, C);
    ws.size_out.resize(static_cast<size_t>(B * Np));
    ConstView<float, 2> sz = st.size.empty() ? ConstView<float, 2>() : make_view<const float>(st.size.data(), B, N);
    tome::merge_wavg<float>(plan, make_view<const float>(x.data(), B, N, C), sz,
                            make_view(ws.merged.data(), B, Np, C), make_view(ws.size_out.data(), B, Np), ex);
    x.swap(ws.merged);
    st.size.assign(ws.size_out.begin(), ws.size_out.end());
    st.tokens = Np;
  }
  if (trace) trace->x_merged.assign(x.data(), x.data() + x.size());

  // MLP.
  nn::layer_norm(x, blk.norm2_weight, blk.norm2_bias, blk.eps, ws.h, ex);
  nn::linear(blk.fc1, ws.h, ws.hidden, ex);
  nn::gelu_erf(ws.hidden, ex);
  nn::linear(blk.fc2, ws.hidden, ws.tmp, ex);
  x += ws.tmp;
}

/// A stack of ToMe blocks plus a final LayerNorm (timm VisionTransformer's
/// `blocks` + `norm`; patch embedding and head are the caller's).
struct ViTEncoder {
  std::vector<ViTBlock> blocks;
  nn::Vector norm_weight, norm_bias;
  float eps = 1e-6f;

  /// ViT-B/16 shape by default: width 768, 12 heads, MLP 3072, 12 blocks.
  /// Throws parameter_error unless depth >= 0, width > 0, heads > 0 divides
  /// it and mlp_hidden > 0.
  template <class Rng>
  static ViTEncoder random(Rng& rng, index_t depth = 12, index_t width = 768, index_t heads = 12,
                           index_t mlp_hidden = 3072) {
    const char* op = "models::ViTEncoder::random";
    effattn::detail::require(depth >= 0, op, "depth", "must be >= 0, got ", depth);
    detail::vit_tome::check_shape_args(width, heads, mlp_hidden, op);
    ViTEncoder e;
    for (index_t i = 0; i < depth; ++i) e.blocks.push_back(ViTBlock::random(width, heads, mlp_hidden, rng));
    e.norm_weight = nn::Vector::Ones(width);
    e.norm_bias = nn::Vector::Zero(width);
    return e;
  }

  /// x [B*N, C] tokens (class token first in every sequence) -> normalised
  /// output [B*N', C]. schedule: r per block (parse_r / schedule_constant; a
  /// shorter list means r = 0 for the rest). st is reset to (batch, N) with no
  /// sizes, keeping st.trace_source; afterwards it holds the final sizes and,
  /// when tracing, the source map. tokens_after (optional) gets the token
  /// count after each block.
  void forward(nn::Matrix& x, index_t batch, const std::vector<index_t>& schedule, ToMeState& st,
               const ToMeBlockOptions& opt, ViTWorkspace& ws, const Executor& ex = {},
               std::vector<index_t>* tokens_after = nullptr) const {
    const char* op = "models::ViTEncoder::forward";
    effattn::detail::check_executor(ex, op);
    effattn::detail::require(batch >= 1 && x.rows() % batch == 0, op, "batch", "must divide the rows of x, got batch=", batch,
            " rows=", x.rows());
    for (index_t r : schedule) effattn::detail::require(r >= 0, op, "schedule", "entries must be >= 0, got ", r);
    // Everything the blocks and the final norm would check, checked before x
    // or st change: a throwing call leaves both as they were.
    const index_t C = x.cols();
    for (const ViTBlock& blk : blocks) {
      detail::vit_tome::check_block(blk, op);
      if (blk.width() != C)
        EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": every block must have the width of x, ", C,
                                                          ", got ", blk.width())));
    }
    if (norm_weight.size() != C || norm_bias.size() != C)
      EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": norm weight and bias must be [C]=[", C, "], got [",
                                                        norm_weight.size(), "] and [", norm_bias.size(), "]")));
    effattn::detail::require(std::isfinite(eps) && eps > 0, op, "eps", "must be finite and > 0, got ", eps);
    ToMeState fresh;
    fresh.reset(batch, x.rows() / batch, st.trace_source);
    if (!blocks.empty()) detail::vit_tome::check_block_state(x, fresh, C, opt, op);
    st = std::move(fresh);
    if (tokens_after) tokens_after->clear();
    for (size_t i = 0; i < blocks.size(); ++i) {
      const index_t r = i < schedule.size() ? schedule[i] : 0;
      tome_block_forward(blocks[i], x, st, r, opt, ws, ex);
      if (tokens_after) tokens_after->push_back(st.tokens);
    }
    nn::layer_norm(x, norm_weight, norm_bias, eps, ws.h, ex);
    x.swap(ws.h);
  }
};

}  // namespace models
EFFATTN_NAMESPACE_END
