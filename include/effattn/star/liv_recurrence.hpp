// SPDX-License-Identifier: MIT
// effattn::star: Rec-1 / Rec-2, STAR's input-varying diagonal recurrences
// (LIV classes 5 and 6: state expansion E = 16 and 2), a Mamba-like selective
// scan (Gu & Dao 2023, Mamba-1's selective SSM without its short conv).
//
// Parameterisation (per token t; C channels, E states per channel, R = dt rank):
//
//   [u' | z]   = in_proj(x_t)                       in_proj [2C, C], no bias
//   u          = silu(u')                           the scanned input [C]
//   [d | B | Cc] = x_proj(u)                        x_proj [R + 2E, C], no bias:
//                                                   d [R], B [E], Cc [E], shared by all channels
//   dt         = softplus(dt_proj(d))               dt_proj [C, R] + bias [C]: one step per channel
//   a[c, s]    = exp(-dt[c] * exp(A_log[c, s]))     A_log [C, E]: 0 < a < 1
//   b[c, s]    = dt[c] * B[s]                       (Mamba's simplified zero-order hold)
//   h[c, s]    = a[c, s] * h[c, s] + b[c, s] * u[c]
//   yc[c]      = (sum_s Cc[s] * h[c, s] + D[c] * u[c]) * silu(z[c])     D [C]
//   y_t        = out_proj(yc)                       out_proj [C, C], no bias
//
// Init (Mamba's): A_log[c, s] = log(s + 1) (S4D-real), D = 1, dt_proj's bias
// the inverse softplus of dt ~ log-uniform [1e-3, 0.1], its weight
// U(-R^-1/2, R^-1/2); R = 0 picks Mamba's "auto" rank ceil(C / 16).
// Decision: no short conv before the scan (that is GConv-1's job in STAR's
// class list; the LIV here is the recurrence alone), so the state is h only:
// C x E floats, whatever the context.
//
// Prefill runs in chunks of `chunk` tokens (the projections of one chunk
// through nn::linear's kernel, then the scan of the chunk in parallel over blocks of 16
// channels, sequential in time, the state carried to the next chunk). Memory
// O(chunk x C) besides x and y. Every (c, s) update and the sum over s run in a
// fixed order, so the chunk size and the thread count never change the scan's
// bits. The scan runs across a block of 16 channels at once (vectorised;
// the decay's exp is detail::exp_fast, within 2 float ulps of std::exp).
// Measured (AMD EPYC Zen 5, AVX-512, one thread, C = 512, N = 4096;
// bench_star): Rec-1 prefill 40 ms (178 GFLOP/s, 66% of the FMA peak),
// Rec-2 33 ms (75%), with nn::linear on the engine's micro-kernel, softplus
// without libm calls and the projections on the chunk's rows in place
// (77 ms before; docs/star.md, "Measured costs"). See liv.hpp for the
// contract.
#pragma once

#include "liv.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

struct RecurrenceConfig {
  index_t width = 0;       ///< C > 0
  index_t expansion = 16;  ///< E > 0: 16 for Rec-1, 2 for Rec-2
  index_t dt_rank = 0;     ///< R > 0, or 0 for ceil(C / 16)
  index_t chunk = 512;     ///< tokens per prefill chunk, > 0 (512: docs/star.md, "Rec prefill")

  static RecurrenceConfig rec1(index_t width) { return {width, 16, 0, 512}; }
  static RecurrenceConfig rec2(index_t width) { return {width, 2, 0, 512}; }
};

class Recurrence {
 public:
  using Config = RecurrenceConfig;
  struct State {
    Matrix h;  ///< [C, E]
    index_t length = 0;
  };

  nn::Linear in_proj;   ///< [2C, C]: u', z
  nn::Linear x_proj;    ///< [R + 2E, C]: d, B, Cc
  nn::Linear dt_proj;   ///< [C, R] + bias [C]
  Matrix A_log;         ///< [C, E]
  Vector D;             ///< [C]
  nn::Linear out_proj;  ///< [C, C]

  Recurrence(const Config& cfg, std::uint64_t seed) : chunk_(cfg.chunk) {
    const char* op = "star::Recurrence";
    effattn::detail::require(cfg.width > 0, op, "width", "must be > 0, got ", cfg.width);
    effattn::detail::require(cfg.expansion > 0, op, "expansion", "must be > 0, got ", cfg.expansion);
    effattn::detail::require(cfg.dt_rank >= 0, op, "dt_rank", "must be >= 0 (0: ceil(C/16)), got ", cfg.dt_rank);
    effattn::detail::require(cfg.chunk > 0, op, "chunk", "must be > 0, got ", cfg.chunk);
    const index_t C = cfg.width, E = cfg.expansion, R = cfg.dt_rank > 0 ? cfg.dt_rank : (C + 15) / 16;
    effattn::detail::checked_mul<index_t>(2 * C, C, op, "2C * C");
    effattn::detail::checked_mul<index_t>(C, E, op, "C * E");
    std::mt19937_64 rng(seed);
    in_proj = nn::Linear::random(C, 2 * C, rng, 0, false);
    x_proj = nn::Linear::random(C, R + 2 * E, rng, 0, false);
    dt_proj = nn::Linear::random(R, C, rng, 0, true);
    std::uniform_real_distribution<double> u01(0.0, 1.0);
    for (index_t c = 0; c < C; ++c) {
      const double dt = std::exp(std::log(1e-3) + u01(rng) * (std::log(0.1) - std::log(1e-3)));
      dt_proj.bias[c] = static_cast<float>(dt + std::log(-std::expm1(-dt)));  // softplus^-1(dt)
    }
    A_log.resize(C, E);
    for (index_t c = 0; c < C; ++c)
      for (index_t s = 0; s < E; ++s) A_log(c, s) = std::log(static_cast<float>(s + 1));
    D = Vector::Ones(C);
    out_proj = nn::Linear::random(C, C, rng, 0, false);
  }

  index_t width() const { return out_proj.out_features(); }
  index_t expansion() const { return A_log.cols(); }
  index_t dt_rank() const { return dt_proj.in_features(); }
  index_t chunk() const { return chunk_; }
  State make_state(index_t = 0) const {
    State s;
    s.h = Matrix::Zero(width(), expansion());
    return s;
  }
  index_t param_count() const {
    return detail::linear_params(in_proj) + detail::linear_params(x_proj) + detail::linear_params(dt_proj) +
           A_log.size() + D.size() + detail::linear_params(out_proj);
  }
  /// C x E floats, whatever the context.
  index_t cache_bytes(index_t context) const {
    detail::check_context("star::Recurrence::cache_bytes", context);
    return width() * expansion() * index_t(sizeof(float));
  }

  void forward(const Matrix& x, Matrix& y, const Executor& ex = {}) const {
    detail::check_sequence("star::Recurrence::forward", x, y, width(), ex);
    State s = make_state();
    run(x, s, y, ex);
  }
  void prefill(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const {
    const char* op = "star::Recurrence::prefill";
    detail::check_sequence(op, x, y, width(), ex);
    detail::check_state(op, "h", s.h, width(), expansion());
    run(x, s, y, ex);
  }
  void step(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const {
    const char* op = "star::Recurrence::step";
    detail::check_step(op, x, y, width(), ex);
    detail::check_state(op, "h", s.h, width(), expansion());
    run(x, s, y, ex);
  }

  /// prefill with the featurizers (in_proj, x_proj, dt_proj) passed in
  /// instead of this operator's own, so that a compiled model (model.hpp) can
  /// share them between layers (STAR's featurizer sharing) while A_log, D and
  /// out_proj stay this operator's. Shapes: in_proj [2C, C], x_proj
  /// [R + 2E, C], dt_proj [C, R] with a bias [C] (shape_error otherwise).
  void prefill_with(const nn::Linear& in, const nn::Linear& xp, const nn::Linear& dtp, const Matrix& x, State& s,
                    Matrix& y, const Executor& ex = {}) const {
    const char* op = "star::Recurrence::prefill_with";
    detail::check_sequence(op, x, y, width(), ex);
    detail::check_state(op, "h", s.h, width(), expansion());
    const index_t C = width(), E = expansion(), R = dtp.in_features();
    detail::check_weight(op, "in_proj", in.weight, 2 * C, C);
    detail::check_weight(op, "x_proj", xp.weight, R + 2 * E, C);
    detail::check_weight(op, "dt_proj", dtp.weight, C, R);
    if (R < 1 || dtp.bias.size() != C || in.bias.size() != 0 || xp.bias.size() != 0)
      EFFATTN_THROW(shape_error(detail::concat(op, ": dt_proj needs R >= 1 and a bias [", C,
                                               "], in_proj and x_proj no bias")));
    scan(in, xp, dtp, x, s, y, ex);
  }

 private:
  static constexpr index_t kLanes = 16;  ///< channels per scan work item
  index_t chunk_;

  /// silu through detail::exp_fast, so that the loops over it vectorise
  /// (std::exp is a libm call per element: with softplus, about a tenth of
  /// the prefill at C = 512 before). Within a few float ulps of detail::silu;
  /// for x < -87.3 the clamp in exp_fast gives x / 2^126-ish, i.e. -0 within
  /// float resolution of the true value.
  static float silu_fast(float x) { return x / (1.0f + detail::exp_fast(-x)); }

  void run(const Matrix& x, State& st, Matrix& y, const Executor& ex) const {
    scan(in_proj, x_proj, dt_proj, x, st, y, ex);
  }

  // The featurizer parameters shadow the members of the same names on
  // purpose: the scan reads whichever weights it is given (its own from run,
  // a compiled model's shared ones from prefill_with).
  void scan(const nn::Linear& in_proj, const nn::Linear& x_proj, const nn::Linear& dt_proj, const Matrix& x,
            State& st, Matrix& y, const Executor& ex) const {
    const index_t N = x.rows(), C = width(), E = expansion(), R = dt_proj.in_features();
    {  // The weights are public members: check what the raw-row projections and the scan read.
      const char* op = "star::Recurrence";
      detail::check_weight(op, "in_proj", in_proj.weight, 2 * C, C);
      detail::check_weight(op, "x_proj", x_proj.weight, R + 2 * E, C);
      detail::check_weight(op, "dt_proj", dt_proj.weight, C, R);
      detail::check_weight(op, "out_proj", out_proj.weight, C, C);
      detail::check_weight(op, "A_log", A_log, C, E);
      if (D.size() != C || !detail::bias_fits(in_proj) || !detail::bias_fits(x_proj) || !detail::bias_fits(dt_proj) ||
          !detail::bias_fits(out_proj))
        EFFATTN_THROW(shape_error(detail::concat(op, ": D must be [", C,
                                                 "] and each projection's bias [out] or empty, got D [", D.size(),
                                                 "], biases ", in_proj.bias.size(), ", ", x_proj.bias.size(), ", ",
                                                 dt_proj.bias.size(), ", ", out_proj.bias.size())));
    }
    y.resize(N, C);
    // -exp(A_log), once per call, transposed to [E, C] so the scan runs across
    // channels. exp_fast, not std::exp: C x E libm calls were most of a decode
    // step's time (about 40 of 65 us at C = 512, E = 16).
    Matrix negA(E, C);
    for (index_t s = 0; s < E; ++s) {
      float* EFFATTN_RESTRICT row = negA.data() + s * C;
      const float* al = A_log.data() + s;  // A_log(c, s) = al[c * E]
      for (index_t c = 0; c < C; ++c) row[c] = -detail::exp_fast(al[c * E]);
    }
    // The projections read and write row blocks in place (effattn::detail::linear_rows:
    // nn::linear's bits without a copy of the chunk, of dt's low-rank input or
    // of the output).
    Matrix p, u, q, dt, yc;
    for (index_t t0 = 0; t0 < N; t0 += chunk_) {
      const index_t n = std::min(chunk_, N - t0);
      p.resize(n, 2 * C);
      effattn::detail::linear_rows(in_proj, x.data() + t0 * C, C, n, p.data(), 2 * C, ex);  // [n, 2C]
      u.resize(n, C);
      detail::parallel_chunks(ex, 8.0 * double(n) * double(C), n, 64, [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r) {
          const float* EFFATTN_RESTRICT pr = p.data() + r * 2 * C;
          float* EFFATTN_RESTRICT ur = u.data() + r * C;
          for (index_t c = 0; c < C; ++c) ur[c] = silu_fast(pr[c]);
        }
      });
      nn::linear(x_proj, u, q, ex);  // [n, R + 2E]
      dt.resize(n, C);
      effattn::detail::linear_rows(dt_proj, q.data(), R + 2 * E, n, dt.data(), C, ex);  // [n, C] from q's first R columns
      detail::parallel_chunks(ex, 8.0 * double(n) * double(C), n, 64, [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r) {
          float* EFFATTN_RESTRICT dr = dt.data() + r * C;
          for (index_t c = 0; c < C; ++c) dr[c] = detail::softplus(dr[c]);
        }
      });
      yc.resize(n, C);
      // The scan: blocks of kLanes channels in parallel (vectorised across the
      // block), time in order; per channel the sum over s runs s = 0..E-1.
      detail::parallel_chunks(ex, 6.0 * double(n) * double(C) * double(E), C, kLanes, [&](index_t c0, index_t c1) {
        // Lanes past the last channel (a partial block) compute on zeros and are dropped.
        const index_t w = c1 - c0;
        alignas(64) float dtv[kLanes], uv[kLanes], du[kLanes], acc[kLanes];
        std::vector<float> hb(static_cast<size_t>(E * kLanes), 0.0f);  // h of the block, [E][kLanes]
        std::vector<float> nab(static_cast<size_t>(E * kLanes), 0.0f);  // -exp(A_log) of the block
        for (index_t i = 0; i < w; ++i)
          for (index_t s = 0; s < E; ++s) {
            hb[size_t(s * kLanes + i)] = st.h(c0 + i, s);
            nab[size_t(s * kLanes + i)] = negA(s, c0 + i);
          }
        for (index_t i = 0; i < kLanes; ++i) dtv[i] = uv[i] = 0.0f;
        for (index_t r = 0; r < n; ++r) {
          const float* qr = q.data() + r * (R + 2 * E);
          const float* Bs = qr + R;
          const float* Cs = qr + R + E;
          const float* EFFATTN_RESTRICT dtr = dt.data() + r * C + c0;
          const float* EFFATTN_RESTRICT ur = u.data() + r * C + c0;
          if (w == kLanes) {  // a fixed count: vector moves (a variable one became two memcpy calls per row)
            for (index_t i = 0; i < kLanes; ++i) {
              dtv[i] = dtr[i];
              uv[i] = ur[i];
            }
          } else {
            for (index_t i = 0; i < w; ++i) {
              dtv[i] = dtr[i];
              uv[i] = ur[i];
            }
          }
          for (index_t i = 0; i < kLanes; ++i) {
            du[i] = dtv[i] * uv[i];
            acc[i] = 0.0f;
          }
          for (index_t s = 0; s < E; ++s) {
            float* EFFATTN_RESTRICT h = hb.data() + s * kLanes;
            const float* EFFATTN_RESTRICT nas = nab.data() + s * kLanes;
            const float bs = Bs[s], cs = Cs[s];
            // One loop for the decay and the update: split in two, GCC 12
            // vectorised the exp but ran the update in scalar code (lane
            // extracts), which cost more than the exp itself.
            for (index_t i = 0; i < kLanes; ++i) {
              const float hv = detail::exp_fast(dtv[i] * nas[i]) * h[i] + bs * du[i];
              h[i] = hv;
              acc[i] += cs * hv;
            }
          }
          const float* EFFATTN_RESTRICT zr = p.data() + r * 2 * C + C + c0;
          float* EFFATTN_RESTRICT yr = yc.data() + r * C + c0;
          for (index_t i = 0; i < w; ++i) yr[i] = (acc[i] + D[c0 + i] * uv[i]) * silu_fast(zr[i]);
        }
        for (index_t i = 0; i < w; ++i)
          for (index_t s = 0; s < E; ++s) st.h(c0 + i, s) = hb[size_t(s * kLanes + i)];
      });
      effattn::detail::linear_rows(out_proj, yc.data(), C, n, y.data() + t0 * C, C, ex);
    }
    st.length += N;
  }
};

}  // namespace star
EFFATTN_NAMESPACE_END
