// SPDX-License-Identifier: MIT
// effattn::star::twin: LibTorch twins of STAR's LIV operators and of a
// compiled star::Model (issue 15), for training with autograd. Needs LibTorch
// (link effattn::torch, which defines EFFATTN_HAVE_TORCH=1).
//
// A twin computes exactly what its effattn operator computes (liv_*.hpp and
// model.hpp state every formula), from the same weights in the same layout
// (torch's Linear [out, in], depthwise taps [D, L] with tap 0 the oldest
// input), batched: forward(x [B, N, C] float32) -> [B, N, C], causal, from a
// fresh state (a training forward; decoding stays effattn's). The twins:
//
//   SoftmaxAttention (SA-1..SA-4)   Recurrence (Rec-1/2)   ShortConv (GConv-1)
//   LongConv (GConv-2)              SwiGLU (GMemless)      Differential<Twin> (10-17)
//
// each built from (Config, effattn operator) (its weights copied; the config
// gives what the operator does not expose: RoPE's theta, GConv-2's l_max, and
// is checked against the operator's shapes) with store_to(op) writing the
// trained weights back; and Model, built from a star::Model (its genome,
// dims, sharing and weights): forward(tokens int64 [B, N]) -> logits float32
// [B, N, vocab]. Model holds one torch parameter per buffer of
// Model::for_each_weight, named as there ('.' -> '_' in torch's registry,
// which forbids dots), so a featurizer shared by several slots is one
// parameter (its gradient sums over them) and a feature-group follower
// attends with its leader's computed K/V (kv) or Q/K (qk) of the same call,
// as effattn's prefill does. load_from / store_to copy the weights by name
// and shape (shape_error on any mismatch).
//
// How each piece runs in torch 1.13 (no SDPA): attention is two matmuls with
// a -inf upper-triangle mask and softmax, GQA by repeat_interleave of the K/V
// heads; RoPE's cos/sin tables are computed in double and rounded to float
// exactly as effattn's apply_rope does; the recurrence is a loop over time
// (one [B, C, E] update per token, then the readout on the stacked states:
// training runs N <= 256); GConv-2's long convolution is an FFT convolution
// (torch::fft::rfft at 2N and up, zero-padded: the causal linear convolution);
// RMSNorm's statistics are in float (effattn: double). Parity with effattn is
// tested within 1e-4 (tests/star/torch/twins_test.cpp, docs/star.md).
#pragma once

#include <torch/torch.h>

#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../model.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {
namespace twin {

using Tensor = torch::Tensor;

namespace detail {
using effattn::detail::concat;

inline std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "," : "") + std::to_string(t.size(i));
  return s + "]";
}

/// A float32 copy of r x c row-major floats ([r, c]; [c] when vector).
inline Tensor tensor_of(const float* p, index_t r, index_t c, bool vector = false) {
  std::vector<int64_t> shape = vector ? std::vector<int64_t>{int64_t(r) * int64_t(c)} : std::vector<int64_t>{r, c};
  if (r * c == 0) return torch::zeros(shape, torch::kFloat32);
  return torch::from_blob(const_cast<float*>(p), shape, torch::kFloat32).clone();
}
inline Tensor tensor_of(const Matrix& m) { return tensor_of(m.data(), m.rows(), m.cols()); }
inline Tensor tensor_of(const Vector& v) { return tensor_of(v.data(), 1, v.size(), true); }

/// Copies t (numel n) into dst; shape_error naming `what` when the sizes differ.
inline void copy_out(const char* op, const std::string& what, const Tensor& t, float* dst, index_t rows,
                     index_t cols) {
  if (!t.defined() || t.numel() != int64_t(rows) * int64_t(cols))
    EFFATTN_THROW(shape_error(concat(op, ": ", what, " is ", t.defined() ? shape_str(t) : std::string("absent"),
                                     " in the twin, [", rows, ",", cols, "] in the effattn operator")));
  if (rows * cols == 0) return;
  const Tensor c = t.detach().to(torch::kFloat32).contiguous();
  std::memcpy(dst, c.data_ptr<float>(), sizeof(float) * size_t(rows * cols));
}
inline void copy_out(const char* op, const std::string& what, const Tensor& t, Matrix& m) {
  copy_out(op, what, t, m.data(), m.rows(), m.cols());
}
inline void copy_out(const char* op, const std::string& what, const Tensor& t, Vector& v) {
  if (!t.defined() && v.size() == 0) return;
  copy_out(op, what, t, v.data(), 1, v.size());
}

/// x must be a float32 [B, N, C].
inline void check_input(const char* op, const Tensor& x, index_t C) {
  if (!x.defined() || x.dim() != 3 || x.size(2) != C || x.scalar_type() != torch::kFloat32)
    EFFATTN_THROW(shape_error(concat(op, ": x must be float32 [B,N,C] with C=", C, ", got ",
                                     x.defined() ? shape_str(x) : std::string("undefined"),
                                     x.defined() && x.scalar_type() != torch::kFloat32 ? " (not float32)" : "")));
}

inline void require_match(const char* op, bool ok, const std::string& what) {
  if (!ok) EFFATTN_THROW(shape_error(concat(op, ": the operator does not match the config: ", what)));
}

inline Tensor lin(const Tensor& x, const Tensor& w, const Tensor& b = {}) {
  return torch::nn::functional::linear(x, w, b.defined() ? b.view(-1) : b);
}

/// Causal depthwise convolution over time (liv.hpp's causal_depthwise_conv
/// from a zero tail): y[:, t, d] = b[d] + sum_k w[d, k] x[:, t-(L-1)+k, d].
inline Tensor causal_dwconv(const Tensor& x, const Tensor& w, const Tensor& b = {}) {
  const int64_t L = w.size(1), N = x.size(1);
  const Tensor xp = torch::constant_pad_nd(x, {0, 0, L - 1, 0});
  Tensor y = xp.narrow(1, 0, N) * w.select(1, 0);
  for (int64_t k = 1; k < L; ++k) y = y + xp.narrow(1, k, N) * w.select(1, k);
  if (b.defined()) y = y + b.view(-1);
  return y;
}

/// Rotate-half RoPE on nh heads of hd channels of x [B, N, nh*hd], positions
/// 0..N-1: the tables as star::detail::apply_rope computes them (double
/// angles, cos/sin rounded to float).
inline Tensor rope(const Tensor& x, int64_t nh, int64_t hd, double theta) {
  const int64_t B = x.size(0), N = x.size(1), half = hd / 2;
  std::vector<float> c(size_t(N * half)), s(size_t(N * half));
  for (int64_t p = 0; p < N; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double ang = double(p) * std::pow(theta, -2.0 * double(i) / double(hd));
      c[size_t(p * half + i)] = static_cast<float>(std::cos(ang));
      s[size_t(p * half + i)] = static_cast<float>(std::sin(ang));
    }
  const Tensor ct = torch::from_blob(c.data(), {1, N, 1, half}, torch::kFloat32).clone();
  const Tensor st = torch::from_blob(s.data(), {1, N, 1, half}, torch::kFloat32).clone();
  const Tensor x4 = x.view({B, N, nh, hd});
  const Tensor x1 = x4.narrow(3, 0, half), x2 = x4.narrow(3, half, half);
  return torch::cat({x1 * ct - x2 * st, x2 * ct + x1 * st}, 3).view({B, N, nh * hd});
}

/// Causal softmax attention: q [B, N, H*hd], k, v [B, N, Hkv*hd]; query head
/// h reads K/V head h / (H / Hkv). Returns [B, N, H*hd].
inline Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t Hkv, int64_t hd) {
  const int64_t B = q.size(0), N = q.size(1), G = H / Hkv;
  const Tensor q4 = q.reshape({B, N, H, hd}).transpose(1, 2);
  Tensor k4 = k.reshape({B, N, Hkv, hd}).transpose(1, 2), v4 = v.reshape({B, N, Hkv, hd}).transpose(1, 2);
  if (G > 1) {
    k4 = k4.repeat_interleave(G, 1);
    v4 = v4.repeat_interleave(G, 1);
  }
  Tensor s = torch::matmul(q4, k4.transpose(-2, -1)) * (1.0 / std::sqrt(double(hd)));
  const Tensor mask = torch::ones({N, N}, torch::kBool).triu(1);
  s = s.masked_fill(mask, -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(s, -1), v4).transpose(1, 2).reshape({B, N, H * hd});
}

/// The recurrence after in_proj (liv_recurrence.hpp): p = [u' | z] [B, N, 2C].
inline Tensor recurrence(const Tensor& p, const Tensor& x_proj, const Tensor& dt_w, const Tensor& dt_b,
                         const Tensor& A_log, const Tensor& D, const Tensor& out_w) {
  const int64_t B = p.size(0), N = p.size(1), C = A_log.size(0), E = A_log.size(1), R = dt_w.size(1);
  const Tensor u = torch::silu(p.narrow(2, 0, C)), z = p.narrow(2, C, C);
  const Tensor q = lin(u, x_proj);  // [B, N, R + 2E]
  const Tensor Bm = q.narrow(2, R, E), Cm = q.narrow(2, R + E, E);
  const Tensor dt = torch::softplus(lin(q.narrow(2, 0, R), dt_w, dt_b));  // [B, N, C]
  const Tensor a = torch::exp(dt.unsqueeze(-1) * (-torch::exp(A_log)));    // [B, N, C, E]
  const Tensor bu = (dt * u).unsqueeze(-1) * Bm.unsqueeze(2);              // [B, N, C, E]
  // unbind, not select per step: select's backward writes a zero tensor of
  // the whole [B, N, C, E] input per step (N of them), unbind's is one stack.
  const std::vector<Tensor> as = a.unbind(1), bus = bu.unbind(1);
  Tensor h = torch::zeros({B, C, E}, p.options());
  std::vector<Tensor> hs;
  hs.reserve(size_t(N));
  for (int64_t t = 0; t < N; ++t) {
    h = as[size_t(t)] * h + bus[size_t(t)];
    hs.push_back(h);
  }
  const Tensor y = (torch::stack(hs, 1) * Cm.unsqueeze(2)).sum(-1);  // [B, N, C]
  return lin((y + D.view(-1) * u) * torch::silu(z), out_w);
}

/// GConv-1 after in_proj: p = [B | Cg | u] [B, N, 3C].
inline Tensor short_conv(const Tensor& p, const Tensor& conv_w, const Tensor& conv_b, const Tensor& out_w,
                         const Tensor& out_b) {
  const int64_t C = conv_w.size(0);
  const Tensor bx = p.narrow(2, 0, C) * p.narrow(2, 2 * C, C);
  return lin(p.narrow(2, C, C) * causal_dwconv(bx, conv_w, conv_b), out_w, out_b);
}

/// GConv-2's implicit filter h [N, C] for lags 0..N-1 (liv_longconv.hpp's
/// fill_filter: positional features and the decay modulation as constants in
/// double rounded to float, the MLP through autograd).
inline Tensor long_filter(int64_t N, int64_t bands, int64_t l_max, const Tensor& f1w, const Tensor& f1b,
                          const Tensor& f2w, const Tensor& f2b, const Tensor& f3w, const Tensor& s1,
                          const Tensor& s2, const Tensor& decay) {
  constexpr double kPi = 3.14159265358979323846;
  const int64_t Ef = 1 + 2 * bands, C = f3w.size(0);
  std::vector<float> f(size_t(N * Ef)), mod(size_t(N * C));
  const Tensor dc = decay.detach().to(torch::kFloat32).contiguous();
  const float* dp = dc.data_ptr<float>();
  for (int64_t j = 0; j < N; ++j) {
    const double tn = double(j) / double(l_max - 1), w = 2 * kPi * double(j) / double(l_max);
    f[size_t(j * Ef)] = static_cast<float>(tn);
    for (int64_t k = 0; k < bands; ++k) {
      const double fk = bands == 1 ? 1e-4 : 1e-4 + (double(bands - 1) - 1e-4) * double(k) / double(bands - 1);
      f[size_t(j * Ef + 1 + k)] = static_cast<float>(std::cos(fk * w));
      f[size_t(j * Ef + 1 + bands + k)] = static_cast<float>(-std::sin(fk * w));
    }
    for (int64_t c = 0; c < C; ++c) mod[size_t(j * C + c)] = static_cast<float>(std::exp(-tn * double(dp[c])));
  }
  const Tensor ft = torch::from_blob(f.data(), {N, Ef}, torch::kFloat32).clone();
  const Tensor mt = torch::from_blob(mod.data(), {N, C}, torch::kFloat32).clone();
  const Tensor a = torch::sin(s1.view(-1) * lin(ft, f1w, f1b));
  const Tensor b = torch::sin(s2.view(-1) * lin(a, f2w, f2b));
  return lin(b, f3w) * mt;
}

/// GConv-2 after in_proj: z[:, p] = sum_{j<=p} h[j] Bx[:, p-j] + D Bx[:, p] by
/// an FFT of size >= 2N, then the gate and out_proj.
inline Tensor long_conv(const Tensor& p, const Tensor& h, const Tensor& D, const Tensor& out_w) {
  const int64_t C = h.size(1), N = p.size(1);
  const Tensor bx = p.narrow(2, 0, C) * p.narrow(2, 2 * C, C);
  int64_t M = 1;
  while (M < 2 * N) M *= 2;
  const Tensor X = torch::fft::rfft(bx, M, 1), Hf = torch::fft::rfft(h, M, 0);
  const Tensor z = torch::fft::irfft(X * Hf, M, 1).narrow(1, 0, N) + D.view(-1) * bx;
  return lin(p.narrow(2, C, C) * z, out_w);
}

inline Tensor swiglu(const Tensor& x, const Tensor& w1, const Tensor& w3, const Tensor& w2) {
  return lin(torch::silu(lin(x, w1)) * lin(x, w3), w2);
}

inline Tensor rms_norm(const Tensor& x, const Tensor& w, double eps) {
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * w.view(-1);
}
}  // namespace detail

// ------------------------------------------------------------ the LIV twins

/// SA-1..SA-4 (star::SoftmaxAttention): parameters wq, wk, wv, wo and with
/// SA-2 q_conv, k_conv, v_conv.
class SoftmaxAttention : public torch::nn::Module {
 public:
  using Op = star::SoftmaxAttention;
  Tensor wq, wk, wv, wo, q_conv, k_conv, v_conv;

  SoftmaxAttention(const AttentionConfig& cfg, const Op& op) : theta_(cfg.rope_theta), rope_(cfg.rope) {
    const char* name = "star::twin::SoftmaxAttention";
    const index_t kvh = cfg.kv_heads > 0 ? cfg.kv_heads : cfg.heads;
    const index_t hd = cfg.head_dim > 0 ? cfg.head_dim : (cfg.heads > 0 ? cfg.width / cfg.heads : 0);
    detail::require_match(name,
                          op.width() == cfg.width && op.heads() == cfg.heads && op.kv_heads() == kvh &&
                              op.head_dim() == hd && op.short_conv() == cfg.short_conv && op.rope() == cfg.rope,
                          detail::concat("operator width ", op.width(), " heads ", op.heads(), "/", op.kv_heads(),
                                         " head_dim ", op.head_dim(), " short_conv ", op.short_conv(), "; config ",
                                         cfg.width, " heads ", cfg.heads, "/", kvh, " head_dim ", hd, " short_conv ",
                                         cfg.short_conv));
    C_ = op.width();
    H_ = op.heads();
    Hkv_ = op.kv_heads();
    hd_ = op.head_dim();
    wq = register_parameter("wq", detail::tensor_of(op.wq.weight));
    wk = register_parameter("wk", detail::tensor_of(op.wk.weight));
    wv = register_parameter("wv", detail::tensor_of(op.wv.weight));
    wo = register_parameter("wo", detail::tensor_of(op.wo.weight));
    if (op.short_conv() > 0) {
      q_conv = register_parameter("q_conv", detail::tensor_of(op.q_conv));
      k_conv = register_parameter("k_conv", detail::tensor_of(op.k_conv));
      v_conv = register_parameter("v_conv", detail::tensor_of(op.v_conv));
    }
  }

  Tensor forward(const Tensor& x) {
    detail::check_input("star::twin::SoftmaxAttention::forward", x, C_);
    if (x.size(1) == 0) return torch::zeros_like(x);  // an empty sequence (as effattn allows)
    Tensor q = detail::lin(x, wq), k = detail::lin(x, wk), v = detail::lin(x, wv);
    if (q_conv.defined()) {
      q = detail::causal_dwconv(q, q_conv);
      k = detail::causal_dwconv(k, k_conv);
      v = detail::causal_dwconv(v, v_conv);
    }
    if (rope_) {
      q = detail::rope(q, H_, hd_, theta_);
      k = detail::rope(k, Hkv_, hd_, theta_);
    }
    return detail::lin(detail::attention(q, k, v, H_, Hkv_, hd_), wo);
  }

  void store_to(Op& op) const {
    const char* name = "star::twin::SoftmaxAttention::store_to";
    detail::copy_out(name, "wq", wq, op.wq.weight);
    detail::copy_out(name, "wk", wk, op.wk.weight);
    detail::copy_out(name, "wv", wv, op.wv.weight);
    detail::copy_out(name, "wo", wo, op.wo.weight);
    if (q_conv.defined() || op.q_conv.size()) {
      detail::copy_out(name, "q_conv", q_conv, op.q_conv);
      detail::copy_out(name, "k_conv", k_conv, op.k_conv);
      detail::copy_out(name, "v_conv", v_conv, op.v_conv);
    }
  }

 private:
  double theta_;
  bool rope_;
  int64_t C_ = 0, H_ = 0, Hkv_ = 0, hd_ = 0;
};

/// Rec-1 / Rec-2 (star::Recurrence): in_proj, x_proj, dt_proj (+ dt_proj_bias),
/// A_log, D, out_proj.
class Recurrence : public torch::nn::Module {
 public:
  using Op = star::Recurrence;
  Tensor in_proj, x_proj, dt_proj, dt_proj_bias, A_log, D, out_proj;

  Recurrence(const RecurrenceConfig& cfg, const Op& op) {
    const index_t R = cfg.dt_rank > 0 ? cfg.dt_rank : (cfg.width + 15) / 16;
    detail::require_match("star::twin::Recurrence",
                          op.width() == cfg.width && op.expansion() == cfg.expansion && op.dt_rank() == R,
                          detail::concat("operator width ", op.width(), " expansion ", op.expansion(), " dt_rank ",
                                         op.dt_rank(), "; config ", cfg.width, ", ", cfg.expansion, ", ", R));
    C_ = op.width();
    in_proj = register_parameter("in_proj", detail::tensor_of(op.in_proj.weight));
    x_proj = register_parameter("x_proj", detail::tensor_of(op.x_proj.weight));
    dt_proj = register_parameter("dt_proj", detail::tensor_of(op.dt_proj.weight));
    dt_proj_bias = register_parameter("dt_proj_bias", detail::tensor_of(op.dt_proj.bias));
    A_log = register_parameter("A_log", detail::tensor_of(op.A_log));
    D = register_parameter("D", detail::tensor_of(op.D));
    out_proj = register_parameter("out_proj", detail::tensor_of(op.out_proj.weight));
  }

  Tensor forward(const Tensor& x) {
    detail::check_input("star::twin::Recurrence::forward", x, C_);
    if (x.size(1) == 0) return torch::zeros_like(x);  // an empty sequence (as effattn allows)
    return detail::recurrence(detail::lin(x, in_proj), x_proj, dt_proj, dt_proj_bias, A_log, D, out_proj);
  }

  void store_to(Op& op) const {
    const char* name = "star::twin::Recurrence::store_to";
    detail::copy_out(name, "in_proj", in_proj, op.in_proj.weight);
    detail::copy_out(name, "x_proj", x_proj, op.x_proj.weight);
    detail::copy_out(name, "dt_proj", dt_proj, op.dt_proj.weight);
    detail::copy_out(name, "dt_proj_bias", dt_proj_bias, op.dt_proj.bias);
    detail::copy_out(name, "A_log", A_log, op.A_log);
    detail::copy_out(name, "D", D, op.D);
    detail::copy_out(name, "out_proj", out_proj, op.out_proj.weight);
  }

 private:
  int64_t C_ = 0;
};

/// GConv-1 (star::ShortConv): in_proj, out_proj (+ _bias with cfg.bias),
/// conv_weight, conv_bias.
class ShortConv : public torch::nn::Module {
 public:
  using Op = star::ShortConv;
  Tensor in_proj, in_proj_bias, out_proj, out_proj_bias, conv_weight, conv_bias;

  ShortConv(const ShortConvConfig& cfg, const Op& op) {
    detail::require_match("star::twin::ShortConv",
                          op.width() == cfg.width && op.kernel() == cfg.kernel &&
                              (op.conv_bias.size() != 0) == cfg.bias,
                          detail::concat("operator width ", op.width(), " kernel ", op.kernel(), " bias ",
                                         op.conv_bias.size() != 0, "; config ", cfg.width, ", ", cfg.kernel, ", ",
                                         cfg.bias));
    C_ = op.width();
    in_proj = register_parameter("in_proj", detail::tensor_of(op.in_proj.weight));
    out_proj = register_parameter("out_proj", detail::tensor_of(op.out_proj.weight));
    conv_weight = register_parameter("conv_weight", detail::tensor_of(op.conv_weight));
    if (cfg.bias) {
      in_proj_bias = register_parameter("in_proj_bias", detail::tensor_of(op.in_proj.bias));
      out_proj_bias = register_parameter("out_proj_bias", detail::tensor_of(op.out_proj.bias));
      conv_bias = register_parameter("conv_bias", detail::tensor_of(op.conv_bias));
    }
  }

  Tensor forward(const Tensor& x) {
    detail::check_input("star::twin::ShortConv::forward", x, C_);
    if (x.size(1) == 0) return torch::zeros_like(x);  // an empty sequence (as effattn allows)
    return detail::short_conv(detail::lin(x, in_proj, in_proj_bias), conv_weight, conv_bias, out_proj,
                              out_proj_bias);
  }

  void store_to(Op& op) const {
    const char* name = "star::twin::ShortConv::store_to";
    detail::copy_out(name, "in_proj", in_proj, op.in_proj.weight);
    detail::copy_out(name, "out_proj", out_proj, op.out_proj.weight);
    detail::copy_out(name, "conv_weight", conv_weight, op.conv_weight);
    detail::copy_out(name, "in_proj_bias", in_proj_bias, op.in_proj.bias);
    detail::copy_out(name, "out_proj_bias", out_proj_bias, op.out_proj.bias);
    detail::copy_out(name, "conv_bias", conv_bias, op.conv_bias);
  }

 private:
  int64_t C_ = 0;
};

/// GConv-2 (star::LongConv): in_proj, out_proj, f1 (+ f1_bias), f2 (+ f2_bias),
/// f3, s1, s2, D; decay is a buffer (fixed, as in effattn).
class LongConv : public torch::nn::Module {
 public:
  using Op = star::LongConv;
  Tensor in_proj, out_proj, f1, f1_bias, f2, f2_bias, f3, s1, s2, D, decay;

  LongConv(const LongConvConfig& cfg, const Op& op) : bands_(cfg.bands), l_max_(cfg.l_max) {
    detail::require_match("star::twin::LongConv",
                          op.width() == cfg.width && op.f2.in_features() == cfg.filter_hidden &&
                              op.f1.in_features() == 1 + 2 * cfg.bands && cfg.l_max > 1,
                          detail::concat("operator width ", op.width(), " filter_hidden ", op.f2.in_features(),
                                         " features ", op.f1.in_features(), "; config ", cfg.width, ", ",
                                         cfg.filter_hidden, ", 1+2*", cfg.bands, " (l_max ", cfg.l_max, ")"));
    C_ = op.width();
    in_proj = register_parameter("in_proj", detail::tensor_of(op.in_proj.weight));
    out_proj = register_parameter("out_proj", detail::tensor_of(op.out_proj.weight));
    f1 = register_parameter("f1", detail::tensor_of(op.f1.weight));
    f1_bias = register_parameter("f1_bias", detail::tensor_of(op.f1.bias));
    f2 = register_parameter("f2", detail::tensor_of(op.f2.weight));
    f2_bias = register_parameter("f2_bias", detail::tensor_of(op.f2.bias));
    f3 = register_parameter("f3", detail::tensor_of(op.f3.weight));
    s1 = register_parameter("s1", detail::tensor_of(op.s1));
    s2 = register_parameter("s2", detail::tensor_of(op.s2));
    D = register_parameter("D", detail::tensor_of(op.D));
    decay = register_buffer("decay", detail::tensor_of(op.decay));
  }

  /// The filter h [N, C] for lags 0..N-1 (LongConv::filter).
  Tensor filter(int64_t N) const {
    return detail::long_filter(N, bands_, l_max_, f1, f1_bias, f2, f2_bias, f3, s1, s2, decay);
  }

  Tensor forward(const Tensor& x) {
    detail::check_input("star::twin::LongConv::forward", x, C_);
    if (x.size(1) == 0) return torch::zeros_like(x);  // an empty sequence (as effattn allows)
    return detail::long_conv(detail::lin(x, in_proj), filter(x.size(1)), D, out_proj);
  }

  void store_to(Op& op) const {
    const char* name = "star::twin::LongConv::store_to";
    detail::copy_out(name, "in_proj", in_proj, op.in_proj.weight);
    detail::copy_out(name, "out_proj", out_proj, op.out_proj.weight);
    detail::copy_out(name, "f1", f1, op.f1.weight);
    detail::copy_out(name, "f1_bias", f1_bias, op.f1.bias);
    detail::copy_out(name, "f2", f2, op.f2.weight);
    detail::copy_out(name, "f2_bias", f2_bias, op.f2.bias);
    detail::copy_out(name, "f3", f3, op.f3.weight);
    detail::copy_out(name, "s1", s1, op.s1);
    detail::copy_out(name, "s2", s2, op.s2);
    detail::copy_out(name, "D", D, op.D);
  }

 private:
  int64_t bands_, l_max_, C_ = 0;
};

/// GMemless (star::SwiGLU): w1 (gate), w3 (up), w2 (down).
class SwiGLU : public torch::nn::Module {
 public:
  using Op = star::SwiGLU;
  Tensor w1, w3, w2;

  SwiGLU(const SwiGLUConfig& cfg, const Op& op) {
    const index_t H = cfg.hidden > 0 ? cfg.hidden : (8 * cfg.width / 3 + 7) / 8 * 8;
    detail::require_match("star::twin::SwiGLU", op.width() == cfg.width && op.hidden() == H,
                          detail::concat("operator width ", op.width(), " hidden ", op.hidden(), "; config ",
                                         cfg.width, ", ", H));
    C_ = op.width();
    w1 = register_parameter("w1", detail::tensor_of(op.w1.weight));
    w3 = register_parameter("w3", detail::tensor_of(op.w3.weight));
    w2 = register_parameter("w2", detail::tensor_of(op.w2.weight));
  }

  Tensor forward(const Tensor& x) {
    detail::check_input("star::twin::SwiGLU::forward", x, C_);
    if (x.size(1) == 0) return torch::zeros_like(x);  // an empty sequence (as effattn allows)
    return detail::swiglu(x, w1, w3, w2);
  }

  void store_to(Op& op) const {
    const char* name = "star::twin::SwiGLU::store_to";
    detail::copy_out(name, "w1", w1, op.w1.weight);
    detail::copy_out(name, "w3", w3, op.w3.weight);
    detail::copy_out(name, "w2", w2, op.w2.weight);
  }

 private:
  int64_t C_ = 0;
};

/// Classes 10-17 (star::Differential<Op>): y = a(x) - b(x), submodules a, b.
template <class Twin>
class Differential : public torch::nn::Module {
 public:
  using Op = star::Differential<typename Twin::Op>;
  std::shared_ptr<Twin> a, b;

  Differential(const typename Op::Config& cfg, const Op& op)
      : a(register_module("a", std::make_shared<Twin>(cfg, op.a))),
        b(register_module("b", std::make_shared<Twin>(cfg, op.b))) {}

  Tensor forward(const Tensor& x) { return a->forward(x) - b->forward(x); }
  void store_to(Op& op) const {
    a->store_to(op.a);
    b->store_to(op.b);
  }
};

// ------------------------------------------------------------ the model twin

/// The twin of a compiled star::Model (see the top of this file).
class Model : public torch::nn::Module {
 public:
  /// The twin of `m`: its genome, dims and sharing, and a copy of its weights.
  explicit Model(const star::Model& m) : genome_(m.genome()), cfg_(m.config()) {
    m.for_each_weight([&](const std::string& name, const float* p, index_t r, index_t c) {
      std::string reg = name;
      for (char& ch : reg)
        if (ch == '.') ch = '_';
      names_.push_back(name);
      w_[name] = register_parameter(reg, detail::tensor_of(p, r, c));
    });
    plan(m);
  }

  const Genome& genome() const { return genome_; }
  const ModelConfig& config() const { return cfg_; }
  /// The effattn names of the weights, in for_each_weight's order.
  const std::vector<std::string>& weight_names() const { return names_; }
  /// The parameter of an effattn weight name (shape [rows, cols] as
  /// for_each_weight gives it); parameter_error for a name the model lacks.
  const Tensor& weight(const std::string& name) const {
    auto it = w_.find(name);
    if (it == w_.end())
      EFFATTN_THROW(parameter_error("star::twin::Model::weight: no weight named '" + name + "'"));
    return it->second;
  }

  /// logits [B, N, vocab] of tokens [B, N] (int64 ids in [0, vocab)), causal,
  /// from a fresh state (star::Model::prefill of each row).
  Tensor forward(const Tensor& tokens) {
    const char* op = "star::twin::Model::forward";
    if (!tokens.defined() || tokens.dim() != 2 || tokens.scalar_type() != torch::kInt64)
      EFFATTN_THROW(shape_error(detail::concat(op, ": tokens must be int64 [B,N], got ",
                                               tokens.defined() ? detail::shape_str(tokens) : std::string("undefined"))));
    if (tokens.numel() > 0) {
      const int64_t lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
      if (lo < 0 || hi >= cfg_.vocab)
        EFFATTN_THROW(parameter_error(detail::concat(op, ": tokens must be in [0, vocab=", cfg_.vocab,
                                                     "), got ids in [", lo, ", ", hi, "]")));
    }
    if (tokens.size(1) == 0) return torch::zeros({tokens.size(0), int64_t(0), int64_t(cfg_.vocab)});
    const int64_t d = cfg_.width, H = cfg_.heads, hd = d / H;
    const double eps = cfg_.norm_eps;
    Tensor h = torch::embedding(W("embed.weight"), tokens);  // [B, N, d]
    // The computed attention features (q, k, v after conv and RoPE) of each slot half, for its followers.
    std::vector<std::array<std::array<Tensor, 3>, 2>> feats(plan_.size());
    for (size_t i = 0; i < plan_.size(); ++i) {
      const SlotPlan& s = plan_[i];
      const Tensor xn = detail::rms_norm(h, W(s.norm), eps);
      Tensor y;
      for (int hh = 0; hh < s.halves; ++hh) {
        const HalfPlan& hp = s.half[size_t(hh)];
        const auto& U = hp.unit;
        Tensor out;
        switch (family(hp.base)) {
          case LivFamily::attention: {
            const int64_t kd = kv_dim(hp.base), Hkv = kd / hd;
            for (int u = 0; u < 3; ++u) {
              Tensor f;
              if (U[size_t(u)].empty()) {
                f = feats[size_t(s.fg_leader)][size_t(hh)][size_t(u)];
              } else {
                f = detail::lin(xn, W(U[size_t(u)] + ".weight"));
                if (hp.base == LivClass::SA2) f = detail::causal_dwconv(f, W(U[size_t(u)] + ".taps"));
                if (u < 2) f = detail::rope(f, u == 0 ? H : Hkv, hd, 10000.0);
              }
              feats[i][size_t(hh)][size_t(u)] = f;
            }
            const auto& F = feats[i][size_t(hh)];
            out = detail::lin(detail::attention(F[0], F[1], F[2], H, Hkv, hd), W(hp.p + ".out.weight"));
            break;
          }
          case LivFamily::recurrence:
            out = detail::recurrence(detail::lin(xn, W(U[0] + ".weight")), W(U[1] + ".weight"),
                                     W(U[1] + ".dt.weight"), W(U[1] + ".dt.bias"), W(hp.p + ".A_log"),
                                     W(hp.p + ".D"), W(hp.p + ".out.weight"));
            break;
          case LivFamily::convolution: {
            const Tensor p = torch::cat({detail::lin(xn, W(U[0] + ".weight")), detail::lin(xn, W(U[1] + ".weight"))}, 2);
            if (hp.base == LivClass::GConv1) {
              out = detail::short_conv(p, W(hp.p + ".conv"), opt(hp.p + ".conv_bias"), W(hp.p + ".out.weight"),
                                       Tensor());
            } else {
              const Tensor filt = detail::long_filter(
                  p.size(1), cfg_.longconv_bands, cfg_.longconv_l_max, W(hp.p + ".filter1.weight"),
                  W(hp.p + ".filter1.bias"), W(hp.p + ".filter2.weight"), W(hp.p + ".filter2.bias"),
                  W(hp.p + ".filter3.weight"), W(hp.p + ".s1"), W(hp.p + ".s2"), hp.decay);
              out = detail::long_conv(p, filt, W(hp.p + ".D"), W(hp.p + ".out.weight"));
            }
            break;
          }
          default:
            out = detail::swiglu(xn, W(U[0] + ".weight"), W(U[1] + ".weight"), W(hp.p + ".down.weight"));
            break;
        }
        y = hh == 0 ? out : y - out;
      }
      h = h + y;
    }
    return detail::lin(detail::rms_norm(h, W("final_norm"), eps), W("embed.weight"));
  }

  /// Copies m's weights into this twin. m must have this twin's genome and
  /// dims (shape_error naming what differs); every weight is matched by name
  /// and shape.
  void load_from(const star::Model& m) {
    const char* op = "star::twin::Model::load_from";
    check_same(op, m);
    torch::NoGradGuard ng;
    size_t n = 0;
    m.for_each_weight([&](const std::string& name, const float* p, index_t r, index_t c) {
      Tensor& t = lookup(op, name, r, c);
      t.copy_(detail::tensor_of(p, r, c));
      ++n;
    });
    if (n != names_.size())
      EFFATTN_THROW(shape_error(detail::concat(op, ": the model has ", n, " weights, the twin ", names_.size())));
  }

  /// Writes this twin's weights into m (same checks as load_from).
  void store_to(star::Model& m) const {
    const char* op = "star::twin::Model::store_to";
    check_same(op, m);
    size_t n = 0;
    m.edit_weights([&](const std::string& name, float* p, index_t r, index_t c) {
      detail::copy_out(op, name, const_cast<Model*>(this)->lookup(op, name, r, c), p, r, c);
      ++n;
    });
    if (n != names_.size())
      EFFATTN_THROW(shape_error(detail::concat(op, ": the model has ", n, " weights, the twin ", names_.size())));
  }

 private:
  struct HalfPlan {
    LivClass base = LivClass::SA1;
    std::string p;                    ///< the weight-name prefix of the half ("slot3", "slot3.a")
    std::array<std::string, 3> unit;  ///< the name prefix of each featurizer unit ("" = from the fg leader)
    Tensor decay;                     ///< GConv-2: the fixed decay [C]
  };
  struct SlotPlan {
    int halves = 1;
    index_t fg_leader = -1;
    std::string norm;
    std::array<HalfPlan, 2> half;
  };

  Genome genome_;
  ModelConfig cfg_;
  std::vector<std::string> names_;
  std::map<std::string, Tensor> w_;
  std::vector<SlotPlan> plan_;

  const Tensor& W(const std::string& name) const { return weight(name); }
  Tensor opt(const std::string& name) const {
    auto it = w_.find(name);
    return it == w_.end() ? Tensor() : it->second;
  }
  int64_t kv_dim(LivClass base) const {
    return cfg_.width / (base == LivClass::SA3 ? 4 : base == LivClass::SA4 ? 2 : 1);
  }

  Tensor& lookup(const char* op, const std::string& name, index_t r, index_t c) {
    auto it = w_.find(name);
    if (it == w_.end())
      EFFATTN_THROW(shape_error(detail::concat(op, ": weight '", name, "' is not one of the twin's")));
    if (it->second.dim() != 2 || it->second.size(0) != r || it->second.size(1) != c)
      EFFATTN_THROW(shape_error(detail::concat(op, ": weight '", name, "' is [", r, ",", c, "] in the model, ",
                                               detail::shape_str(it->second), " in the twin")));
    return it->second;
  }

  void check_same(const char* op, const star::Model& m) const {
    const ModelConfig& a = cfg_;
    const ModelConfig& b = m.config();
    const bool dims = a.vocab == b.vocab && a.width == b.width && a.heads == b.heads &&
                      a.short_conv == b.short_conv && a.ffn_hidden == b.ffn_hidden &&
                      a.rec_dt_rank == b.rec_dt_rank && a.longconv_hidden == b.longconv_hidden &&
                      a.longconv_bands == b.longconv_bands && a.longconv_l_max == b.longconv_l_max &&
                      a.norm_eps == b.norm_eps;
    if (!(m.genome() == genome_))
      EFFATTN_THROW(shape_error(detail::concat(op, ": the model's genome (", m.genome().slots(),
                                               " slots) is not the twin's (", genome_.slots(), " slots)")));
    if (!dims)
      EFFATTN_THROW(shape_error(detail::concat(op, ": the model's dims (vocab ", b.vocab, ", width ", b.width,
                                               ", heads ", b.heads, ", ...) are not the twin's (vocab ", a.vocab,
                                               ", width ", a.width, ", heads ", a.heads, ", ...)")));
  }

  /// Which weight names each slot half reads: the unit names follow
  /// Model::visit (a shared unit is named at its first slot).
  void plan(const star::Model& m) {
    static const char* const att[] = {"q", "k", "v"}, *const rec[] = {"xz", "aBC", ""},
                             *const conv[] = {"BC", "x", ""}, *const mem[] = {"gate", "up", ""};
    std::map<const void*, std::string> unit_names;
    plan_.resize(size_t(m.slots()));
    for (index_t i = 0; i < m.slots(); ++i) {
      const star::Model::Slot& s = m.slot(i);
      SlotPlan& sp = plan_[size_t(i)];
      sp.halves = s.halves;
      sp.fg_leader = s.fg_leader;
      const std::string pre = "slot" + std::to_string(i);
      sp.norm = pre + ".norm";
      (void)W(sp.norm);
      for (int h = 0; h < s.halves; ++h) {
        const star::Model::Half& hw = s.half[size_t(h)];
        HalfPlan& hp = sp.half[size_t(h)];
        hp.base = hw.base;
        hp.p = pre + (s.halves == 2 ? (h == 0 ? ".a" : ".b") : "");
        const LivFamily fam = family(hw.base);
        const char* const* un = fam == LivFamily::attention     ? att
                                : fam == LivFamily::recurrence  ? rec
                                : fam == LivFamily::convolution ? conv
                                                                : mem;
        for (int u = 0; u < 3; ++u) {
          const void* key = hw.unit[size_t(u)].get();
          if (!key) continue;
          auto it = unit_names.find(key);
          if (it == unit_names.end()) it = unit_names.emplace(key, hp.p + "." + un[u]).first;
          hp.unit[size_t(u)] = it->second;
          (void)W(it->second + ".weight");
        }
        if (fam == LivFamily::attention)
          for (int u = 0; u < 3; ++u)
            if (hp.unit[size_t(u)].empty() && s.fg_leader < 0)
              EFFATTN_THROW(shape_error(detail::concat("star::twin::Model: slot ", i, " lacks attention unit ", u,
                                                       " but has no feature-group leader")));
        if (hw.lconv) hp.decay = detail::tensor_of(hw.lconv->decay);
      }
    }
  }
};

}  // namespace twin
}  // namespace star
EFFATTN_NAMESPACE_END
