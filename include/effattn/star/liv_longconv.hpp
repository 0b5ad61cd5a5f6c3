// SPDX-License-Identifier: MIT
// effattn::star: GConv-2, STAR's gated long convolution with an implicit
// kernel (LIV class 8), Hyena-like (Poli et al., ICML 2023; order 2: one long
// convolution between two gates).
//
//   [B | Cg | u] = in_proj(x)                 in_proj [3C, C], rows B, Cg, u (as ShortConv)
//   Bx[t, c]     = B[t, c] * u[t, c]
//   z[p, c]      = sum_{j=0}^{p} h[j, c] * Bx[p - j, c] + D[c] * Bx[p, c]
//   y            = out_proj(Cg * z)            out_proj [C, C]; no biases on the projections
//
// The implicit filter h[j, c] (Hyena's HyenaFilter, ours without dropout or
// its short conv): positional features of the lag j,
//   f(j) = [j / (l_max - 1), cos(w_k 2 pi j / l_max), -sin(w_k 2 pi j / l_max)]   w_k = linspace(1e-4, bands-1, bands)
// (Hyena's PositionalEmbedding, emb_dim = 1 + 2 bands), a small MLP
//   g(j) = W3 sin(s2 * (W2 sin(s1 * (W1 f(j) + b1)) + b2))      W1 [hid, 1+2 bands], W2 [hid, hid], W3 [C, hid]
// (Hyena's Sin activations with per-feature frequencies s1, s2 [hid], init 1),
// times Hyena's ExponentialModulation,
//   h[j, c] = g(j)[c] * exp(-(j / (l_max - 1)) * |delta_c|),   delta = linspace(log(target)/slow, log(target)/fast, C)
// (fast 0.3, slow 1.5, target 1e-2, shift 0). l_max only scales the
// features: lags past l_max continue the same formulas, so a context may be
// any length. Every filter row is computed by plain loops of its own (not
// nn::linear), so a lag's filter has the same bits however it is reached.
//
// Prefill (continuing from a State of L0 tokens, N new ones, T = L0 + N): the
// outputs of the N new positions from the whole input history, either direct
// (O(N (L0 + N/2) C) multiply-adds, parallel over time blocks, each output
// summed over j = 0..p in order) or by FFT (Eigen's unsupported FFT module,
// kissfft: per channel a real FFT of size M = 2^ceil(log2(2T)) of the history
// and of the filter, parallel over channels), whichever the cost model
// kFftCostPerPoint (measured, see below) says is cheaper. step is the direct
// path with N = 1: O(T C) per token from the cached inputs.
//
// State: the inputs Bx of every position (the cache, [T, C], grown by
// doubling), and a table of the filter for lags 0..T-1 ([T, C], also grown
// by doubling) — a function of the weights only, kept with the State so
// decoding never re-evaluates the MLP. cache_bytes(n) counts the inputs,
// n x C floats (STAR's cache); filter_bytes(n) the table, n x C floats more.
// See liv.hpp for the contract.
#pragma once

#include <complex>
#include <unsupported/Eigen/FFT>

#include "liv.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

/// How LongConv's prefill convolves: by the cost model, or always one way
/// (tests, measurements). step is always direct.
enum class ConvPath { automatic, direct, fft };

struct LongConvConfig {
  index_t width = 0;          ///< C > 0
  index_t filter_hidden = 16; ///< hid > 0: width of the filter MLP
  index_t bands = 4;          ///< > 0: frequency bands of the positional features
  index_t l_max = 2048;       ///< > 1: the length the features are scaled to
  ConvPath path = ConvPath::automatic;  ///< prefill's convolution
};

class LongConv {
 public:
  using Config = LongConvConfig;
  struct State {
    Matrix inputs;  ///< [capacity, C]; rows < length hold Bx
    Matrix filter;  ///< [filter capacity, C]; rows < filter_rows hold h
    index_t filter_rows = 0;
    index_t length = 0;
  };

  /// The FFT path's cost per point of its transform size M, in units of one
  /// direct multiply-add (per channel): FFT when kFftCostPerPoint * M log2 M
  /// < N (L0 + N/2). Measured on the development host (AMD EPYC Zen 5,
  /// AVX-512, 2 cores, GCC 12 -O3 -march=native, C = 256, one thread, whole
  /// prefill incl. projections): direct 4.5 / 8.6 / 14.0 / 55 / 185 ms and FFT
  /// 5.6 / 8.7 / 10.2 / 30 / 53 ms at N = 512 / 768 / 1024 / 2048 / 4096, so
  /// the paths cross near N = 768, where N^2/2 / (M log2 M) = 13.
  static constexpr double kFftCostPerPoint = 14.0;

  nn::Linear in_proj, out_proj;  ///< [3C, C] (B, Cg, u), [C, C]
  nn::Linear f1, f2, f3;         ///< the filter MLP: [hid, 1+2 bands] + b, [hid, hid] + b, [C, hid]
  Vector s1, s2;                 ///< Sin frequencies [hid]
  Vector D;                      ///< [C] skip
  Vector decay;                  ///< |delta_c| [C] (fixed, not a parameter)

  LongConv(const Config& cfg, std::uint64_t seed) : bands_(cfg.bands), l_max_(cfg.l_max), path_(cfg.path) {
    const char* op = "star::LongConv";
    effattn::detail::require(cfg.width > 0, op, "width", "must be > 0, got ", cfg.width);
    effattn::detail::require(cfg.filter_hidden > 0, op, "filter_hidden", "must be > 0, got ", cfg.filter_hidden);
    effattn::detail::require(cfg.bands > 0, op, "bands", "must be > 0, got ", cfg.bands);
    effattn::detail::require(cfg.l_max > 1, op, "l_max", "must be > 1, got ", cfg.l_max);
    const index_t C = cfg.width, hid = cfg.filter_hidden;
    effattn::detail::checked_mul<index_t>(3 * C, C, op, "3C * C");
    std::mt19937_64 rng(seed);
    in_proj = nn::Linear::random(C, 3 * C, rng, 0, false);
    out_proj = nn::Linear::random(C, C, rng, 0, false);
    f1 = nn::Linear::random(1 + 2 * cfg.bands, hid, rng, 0, true);
    f2 = nn::Linear::random(hid, hid, rng, 0, true);
    f3 = nn::Linear::random(hid, C, rng, 0, false);
    s1 = Vector::Ones(hid);
    s2 = Vector::Ones(hid);
    Matrix d(1, C);
    detail::fill_uniform(d, 1.0f, rng);
    D = d.row(0).transpose();
    decay.resize(C);
    const double lo = std::log(1e-2) / 1.5, hi = std::log(1e-2) / 0.3;
    for (index_t c = 0; c < C; ++c)
      decay[c] = static_cast<float>(std::fabs(C == 1 ? lo : lo + (hi - lo) * double(c) / double(C - 1)));
  }

  index_t width() const { return out_proj.out_features(); }
  State make_state(index_t reserve = 0) const {
    effattn::detail::require(reserve >= 0, "star::LongConv::make_state", "reserve", "must be >= 0, got ", reserve);
    effattn::detail::checked_mul(reserve, width(), "star::LongConv::make_state", "reserve * C");
    State s;
    s.inputs.resize(reserve, width());
    s.filter.resize(reserve, width());
    return s;
  }
  index_t param_count() const {
    return detail::linear_params(in_proj) + detail::linear_params(out_proj) + detail::linear_params(f1) +
           detail::linear_params(f2) + detail::linear_params(f3) + s1.size() + s2.size() + D.size();
  }
  /// The cached inputs: context x C floats.
  index_t cache_bytes(index_t context) const {
    detail::check_context("star::LongConv::cache_bytes", context);
    return context * width() * index_t(sizeof(float));
  }
  /// The State's filter table (a function of the weights): context x C floats.
  index_t filter_bytes(index_t context) const {
    detail::check_context("star::LongConv::filter_bytes", context);
    return context * width() * index_t(sizeof(float));
  }

  /// The filter h[j, c] for lags j in [j0, j1) into out rows 0.. (out [j1 - j0, C]).
  void filter(index_t j0, index_t j1, Matrix& out, const Executor& ex = {}) const {
    effattn::detail::require(0 <= j0 && j0 <= j1, "star::LongConv::filter", "lags", "must be 0 <= j0 <= j1, got ", j0,
                             ", ", j1);
    out.resize(j1 - j0, width());
    fill_filter(j0, j1, out.data(), ex);
  }

  void forward(const Matrix& x, Matrix& y, const Executor& ex = {}) const {
    detail::check_sequence("star::LongConv::forward", x, y, width(), ex);
    State s = make_state(x.rows());
    run(x, s, y, ex);
  }
  void prefill(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const {
    const char* op = "star::LongConv::prefill";
    detail::check_sequence(op, x, y, width(), ex);
    check_state(op, s);
    run(x, s, y, ex);
  }
  void step(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const {
    const char* op = "star::LongConv::step";
    detail::check_step(op, x, y, width(), ex);
    check_state(op, s);
    run(x, s, y, ex);
  }

  /// True when an automatic prefill of n tokens after l0 takes the FFT path.
  static bool use_fft(index_t l0, index_t n) {
    if (n <= 1) return false;
    const double T = double(l0 + n);
    double M = 1;
    while (M < 2 * T) M *= 2;
    const double direct = double(n) * (double(l0) + 0.5 * double(n));
    return kFftCostPerPoint * M * std::log2(M) < direct;
  }

  /// prefill from the featurizer outputs p = [B | Cg | u] [N, 3C] (what
  /// in_proj gives) instead of x: a compiled model (model.hpp) computes them
  /// with featurizer weights it shares between layers (STAR's featurizer
  /// sharing); everything after in_proj is this operator's.
  void prefill_from(const Matrix& p, State& s, Matrix& y, const Executor& ex = {}) const {
    const char* op = "star::LongConv::prefill_from";
    effattn::detail::check_executor(ex, op);
    if (p.cols() != 3 * width())
      EFFATTN_THROW(shape_error(detail::concat(op, ": p must be [N,3C]=[", p.rows(), ",", 3 * width(), "], got [",
                                               p.rows(), ",", p.cols(), "]")));
    if (&p == &y) EFFATTN_THROW(shape_error(detail::concat(op, ": y must not be p")));
    check_state(op, s);
    mix(p, s, y, ex);
  }

 private:
  index_t bands_, l_max_;
  ConvPath path_;

  void check_state(const char* op, const State& s) const {
    detail::check_state(op, "inputs", s.inputs, s.inputs.rows(), width());
    detail::check_state(op, "filter", s.filter, s.filter.rows(), width());
    if (s.length < 0 || s.length > s.inputs.rows() || s.filter_rows < 0 || s.filter_rows > s.filter.rows())
      EFFATTN_THROW(shape_error(detail::concat(op, ": state length ", s.length, " / filter_rows ", s.filter_rows,
                                               " must fit the capacities ", s.inputs.rows(), " / ", s.filter.rows())));
  }

  void fill_filter(index_t j0, index_t j1, float* out, const Executor& ex) const {
    const index_t C = width(), hid = f2.in_features(), E = 1 + 2 * bands_;
    constexpr double kPi = 3.14159265358979323846;
    detail::parallel_chunks(ex, double(j1 - j0) * double(C + hid) * double(hid), j1 - j0, 16,
                            [&](index_t r0, index_t r1) {
                              std::vector<float> f(static_cast<size_t>(E)), a(static_cast<size_t>(hid)),
                                  b(static_cast<size_t>(hid));
                              for (index_t r = r0; r < r1; ++r) {
                                const index_t j = j0 + r;
                                const double tn = double(j) / double(l_max_ - 1), w = 2 * kPi * double(j) / double(l_max_);
                                f[0] = static_cast<float>(tn);
                                for (index_t k = 0; k < bands_; ++k) {
                                  const double fk = bands_ == 1 ? 1e-4 : 1e-4 + (double(bands_ - 1) - 1e-4) * double(k) / double(bands_ - 1);
                                  f[size_t(1 + k)] = static_cast<float>(std::cos(fk * w));
                                  f[size_t(1 + bands_ + k)] = static_cast<float>(-std::sin(fk * w));
                                }
                                for (index_t i = 0; i < hid; ++i) {
                                  float acc = f1.bias[i];
                                  for (index_t e = 0; e < E; ++e) acc += f1.weight(i, e) * f[size_t(e)];
                                  a[size_t(i)] = std::sin(s1[i] * acc);
                                }
                                for (index_t i = 0; i < hid; ++i) {
                                  float acc = f2.bias[i];
                                  for (index_t e = 0; e < hid; ++e) acc += f2.weight(i, e) * a[size_t(e)];
                                  b[size_t(i)] = std::sin(s2[i] * acc);
                                }
                                float* o = out + r * C;
                                for (index_t c = 0; c < C; ++c) {
                                  float acc = 0;
                                  for (index_t e = 0; e < hid; ++e) acc += f3.weight(c, e) * b[size_t(e)];
                                  o[c] = acc * static_cast<float>(std::exp(-tn * double(decay[c])));
                                }
                              }
                            });
  }

  static void grow(Matrix& m, index_t rows) {
    if (rows > m.rows()) m.conservativeResize(std::max(rows, 2 * m.rows()), m.cols());
  }

  void run(const Matrix& x, State& s, Matrix& y, const Executor& ex) const {
    Matrix p;
    nn::linear(in_proj, x, p, ex);  // [N, 3C]
    mix(p, s, y, ex);
  }
  void mix(const Matrix& p, State& s, Matrix& y, const Executor& ex) const {
    const index_t N = p.rows(), C = width(), L0 = s.length, T = L0 + N;
    grow(s.inputs, T);
    detail::parallel_chunks(ex, double(N) * double(C), N, 64, [&](index_t t0, index_t t1) {
      for (index_t t = t0; t < t1; ++t) {
        const float* pr = p.data() + t * 3 * C;
        float* br = s.inputs.data() + (L0 + t) * C;
        for (index_t c = 0; c < C; ++c) br[c] = pr[c] * pr[2 * C + c];
      }
    });
    if (T > s.filter_rows) {
      grow(s.filter, T);
      fill_filter(s.filter_rows, T, s.filter.data() + s.filter_rows * C, ex);
      s.filter_rows = T;
    }
    Matrix z(N, C);
    const float* u = s.inputs.data();
    const float* h = s.filter.data();
    const bool fft = N > 1 && (path_ == ConvPath::fft || (path_ == ConvPath::automatic && use_fft(L0, N)));
    if (fft) {
      index_t M = 1;
      while (M < 2 * T) M *= 2;
      struct Scratch {
        Eigen::FFT<float> fft;
        std::vector<float> a, b;
        std::vector<std::complex<float>> A, B;
      };
      effattn::detail::parallel_items(
          effattn::detail::executor_for(ex, kFftCostPerPoint * double(M) * std::log2(double(M)) * double(C)), C,
          [&] {
            Scratch sc;
            sc.fft.SetFlag(Eigen::FFT<float>::HalfSpectrum);
            sc.a.resize(size_t(M));
            sc.b.resize(size_t(M));
            sc.A.resize(size_t(M / 2 + 1));
            sc.B.resize(size_t(M / 2 + 1));
            return sc;
          },
          [&](index_t c, Scratch& sc) {
            std::fill(sc.a.begin(), sc.a.end(), 0.0f);
            std::fill(sc.b.begin(), sc.b.end(), 0.0f);
            for (index_t t = 0; t < T; ++t) {
              sc.a[size_t(t)] = u[t * C + c];
              sc.b[size_t(t)] = h[t * C + c];
            }
            sc.fft.fwd(sc.A.data(), sc.a.data(), M);
            sc.fft.fwd(sc.B.data(), sc.b.data(), M);
            for (size_t k = 0; k < sc.A.size(); ++k) sc.A[k] *= sc.B[k];
            sc.fft.inv(sc.a.data(), sc.A.data(), M);
            for (index_t t = 0; t < N; ++t) z(t, c) = sc.a[size_t(L0 + t)] + D[c] * u[(L0 + t) * C + c];
          });
    } else {
      detail::parallel_chunks(ex, double(N) * (double(L0) + 0.5 * double(N)) * double(C), N, 8,
                              [&](index_t t0, index_t t1) {
                                for (index_t t = t0; t < t1; ++t) {
                                  const index_t pos = L0 + t;
                                  float* zr = z.data() + t * C;
                                  std::fill(zr, zr + C, 0.0f);
                                  for (index_t j = 0; j <= pos; ++j) {
                                    const float* hj = h + j * C;
                                    const float* uj = u + (pos - j) * C;
                                    for (index_t c = 0; c < C; ++c) zr[c] += hj[c] * uj[c];
                                  }
                                  const float* up = u + pos * C;
                                  for (index_t c = 0; c < C; ++c) zr[c] += D[c] * up[c];
                                }
                              });
    }
    // Gate: z *= Cg.
    detail::parallel_chunks(ex, double(N) * double(C), N, 64, [&](index_t t0, index_t t1) {
      for (index_t t = t0; t < t1; ++t)
        for (index_t c = 0; c < C; ++c) z(t, c) *= p(t, C + c);
    });
    nn::linear(out_proj, z, y, ex);
    s.length = T;
  }
};

}  // namespace star
EFFATTN_NAMESPACE_END
