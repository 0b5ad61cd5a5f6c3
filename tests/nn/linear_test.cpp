// SPDX-License-Identifier: MIT
// nn::linear, the one dense layer of effattn (issue 11 item 1): against a
// plain float64 loop on odd shapes at every instruction-set level (both the
// tiled path on the engine's micro-kernel and the <= 4-row GEMV path, one
// and several tiles or slices, bias and none),
// bit-identical for every Executor and a host pool hook that runs its ranges
// in reverse order, and it runs where the Executor says: the hook is called
// for a big layer (never for a small one), Executor(1) never starts a thread
// (counted in a child process), Executor(2) does. Linear::forward and
// Mlp::forward pass their Executor on.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <effattn/nn/layers.hpp>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/levels.hpp"
#include "support/nn_testing.hpp"
#include "support/testing.hpp"
#include "support/threads.hpp"

namespace nn = effattn::nn;
using effattn::Executor;
using effattn::index_t;

namespace {

using testing_util::same;
using testing_util::random_matrix;

struct Shape {
  index_t rows, in, out;
};

std::string str(const Shape& s, bool bias) {
  return std::to_string(s.rows) + "x" + std::to_string(s.in) + "x" + std::to_string(s.out) +
         (bias ? " (bias)" : " (no bias)");
}


nn::Linear random_linear(index_t in, index_t out, bool bias, unsigned seed) {
  std::mt19937 rng(seed);
  return nn::Linear::random(in, out, rng, 0, bias);
}

/// Odd shapes for both paths: rows <= 4 is the GEMV path (slices of 512
/// outputs), more rows the tiled path (W^T packed in panels of Q outputs,
/// 16 x 16 or 8 x 8 register transposes plus element-wise edges; tiles of
/// 48 x 256 outputs; sums in blocks of 128 inputs).
/// Work (rows * in * out) below 2e5 runs serially whatever the executor.
const Shape kShapes[] = {
    {1, 3, 1},        // the smallest layer
    {3, 5, 700},      // GEMV, two slices (the last one partial)
    {4, 256, 1537},   // GEMV at its row limit, four slices, above the serial cut-off
    {5, 9, 33},       // the first row count past the GEMV path; in < 8: the pack's edges only
    {7, 33, 385},     // two column tiles (the second 129 wide: a ragged last panel)
    {49, 129, 257},   // two row tiles (the second one row), two input blocks (128 + 1), 1-column tail
    {97, 300, 64},    // three row tiles, three input blocks (128, 128, 44), whole panels only
    {769, 64, 770},   // 17 row tiles x four column tiles
    {1600, 96, 40},   // 34 row tiles, one column tile narrower than a panel at AVX-512
};
/// y = x W^T + b in float64, and per element the bound (in + 1) u sum |x_k w_k| + |b|
/// on the error of any float32 summation order (with or without FMA).
void reference(const nn::Linear& l, const nn::Matrix& x, std::vector<double>& y, std::vector<double>& tol) {
  const index_t M = x.rows(), K = x.cols(), N = l.weight.rows();
  y.assign(static_cast<size_t>(M * N), 0.0);
  tol.assign(y.size(), 0.0);
  const double u = std::ldexp(1.0, -24);
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      double s = 0, a = 0;
      for (index_t k = 0; k < K; ++k) {
        const double p = double(x(i, k)) * double(l.weight(j, k));
        s += p;
        a += std::fabs(p);
      }
      if (l.bias.size() != 0) {
        s += l.bias[j];
        a += std::fabs(double(l.bias[j]));
      }
      y[static_cast<size_t>(i * N + j)] = s;
      tol[static_cast<size_t>(i * N + j)] = double(K + 2) * u * a + 1e-30;
    }
}

/// A host pool hook: every range is a single item, run in reverse order, on
/// the calling thread (`threads` = 0) or on that many std::threads (the last
/// range started first). Counts its calls.
Executor reverse_hook(std::atomic<int>& calls, int threads = 0) {
  Executor ex;
  ex.parallel_for = [&calls, threads](index_t n, const std::function<void(index_t, index_t)>& body) {
    ++calls;
    if (threads <= 0) {
      for (index_t i = n - 1; i >= 0; --i) body(i, i + 1);
      return;
    }
    std::vector<std::thread> pool;
    for (int t = threads - 1; t >= 0; --t)
      pool.emplace_back([&, t] {
        for (index_t i = n - 1 - t; i >= 0; i -= threads) body(i, i + 1);
      });
    for (auto& th : pool) th.join();
  };
  return ex;
}


}  // namespace

TEST(NnLinear, MatchesFloat64ReferenceOnOddShapesAtEveryLevel) {
  for (const effattn::Isa level : testing_util::isa_levels()) {
  SCOPED_TRACE(effattn::to_string(level));
  const testing_util::ScopedIsa at(level);
  unsigned seed = 1;
  for (const Shape& s : kShapes) {
    for (bool bias : {true, false}) {
      const nn::Linear l = random_linear(s.in, s.out, bias, seed++);
      const nn::Matrix x = random_matrix(s.rows, s.in, seed++);
      nn::Matrix y = nn::Matrix::Constant(2, 3, 7.0f);  // resized by the call
      nn::linear(l, x, y);
      ASSERT_EQ(y.rows(), s.rows) << str(s, bias);
      ASSERT_EQ(y.cols(), s.out) << str(s, bias);
      std::vector<double> want, tol;
      reference(l, x, want, tol);
      index_t bad = 0;
      for (index_t i = 0; i < y.size(); ++i) {
        const double err = std::fabs(double(y.data()[i]) - want[static_cast<size_t>(i)]);
        if (!(err <= tol[static_cast<size_t>(i)]) && bad++ < 3)
          ADD_FAILURE() << str(s, bias) << ": element " << i << " got " << y.data()[i] << ", want "
                        << want[static_cast<size_t>(i)] << " (bound " << tol[static_cast<size_t>(i)] << ")";
      }
      EXPECT_EQ(bad, 0) << str(s, bias);
    }
  }
  }
}

TEST(NnLinear, EmptyInputsGiveEmptyOutputs) {
  for (bool bias : {true, false}) {
    const nn::Linear l = random_linear(6, 5, bias, 3);
    nn::Matrix x(0, 6), y = nn::Matrix::Constant(2, 2, 1.0f);
    nn::linear(l, x, y, Executor(2));
    EXPECT_EQ(y.rows(), 0);
    EXPECT_EQ(y.cols(), 5);
  }
}

TEST(NnLinear, BitIdenticalForEveryExecutorAndAReversedPoolHook) {
  unsigned seed = 100;
  for (const Shape& s : kShapes) {
    for (bool bias : {true, false}) {
      const nn::Linear l = random_linear(s.in, s.out, bias, seed++);
      const nn::Matrix x = random_matrix(s.rows, s.in, seed++);
      nn::Matrix y1;
      nn::linear(l, x, y1, Executor(1));
      std::atomic<int> serial_calls{0}, pool_calls{0};
      const std::vector<std::pair<const char*, Executor>> executors = {
          {"Executor(2)", Executor(2)},
          {"Executor(3)", Executor(3)},
          {"Executor(0)", Executor(0)},
          {"reversed hook", reverse_hook(serial_calls)},
          {"reversed hook on 3 threads", reverse_hook(pool_calls, 3)},
      };
      for (const auto& [name, ex] : executors) {
        nn::Matrix y = nn::Matrix::Constant(1, 1, -1.0f);
        nn::linear(l, x, y, ex);
        EXPECT_TRUE(same(y, y1)) << str(s, bias) << ": " << name << " differs from Executor(1)";
      }
      // The hook is the executor: a layer above the serial cut-off hands it
      // its tiles (and the packing of W^T when that alone reaches the
      // cut-off), a smaller one runs on the calling thread.
      const double cut = effattn::detail::kSerialWorkBelow;
      const bool big = double(s.rows) * double(s.in) * double(s.out) >= cut;
      const bool big_pack = s.rows > 4 && 2.0 * double(s.in) * double(s.out) >= cut;
      const int want = (big ? 1 : 0) + (big_pack ? 1 : 0);
      EXPECT_EQ(serial_calls.load(), want) << str(s, bias);
      EXPECT_EQ(pool_calls.load(), want) << str(s, bias);
    }
  }
}

TEST(NnLinear, ForwardOfLinearAndMlpPassTheExecutorOn) {
  const nn::Linear l = random_linear(256, 640, true, 7);
  const nn::Matrix x = random_matrix(96, 256, 8);
  nn::Matrix want, got;
  nn::linear(l, x, want, Executor(1));
  std::atomic<int> calls{0};
  l.forward(x, got, reverse_hook(calls, 2));
  // Two parallel loops per layer above the cut-off: the packing of W^T, then the tiles.
  EXPECT_EQ(calls.load(), 2) << "Linear::forward did not run on its executor";
  EXPECT_TRUE(same(got, want));
  EXPECT_THROW(l.forward(x, got, Executor(-1)), effattn::parameter_error);

  std::mt19937 rng(9);
  const nn::Mlp mlp = nn::Mlp::random(256, 512, rng);
  nn::Matrix m1, m2;
  mlp.forward(x, m1, Executor(1));
  calls = 0;
  mlp.forward(x, m2, reverse_hook(calls, 2));
  EXPECT_EQ(calls.load(), 5) << "Mlp::forward: fc1 (pack, tiles), GELU and fc2 (pack, tiles) each run on the executor";
  EXPECT_TRUE(same(m1, m2));
  // The same by hand, with the library's pieces.
  nn::Matrix h, y;
  nn::linear(mlp.fc1, x, h, Executor(1));
  nn::gelu_erf(h, Executor(1));
  nn::linear(mlp.fc2, h, y, Executor(1));
  EXPECT_TRUE(same(m1, y));
}

// Executor(1) runs the dense layers on the calling thread: in a fresh
// process that asks OpenMP for 2 threads by default, a big GEMM, a big GEMV,
// Linear::forward and Mlp::forward on Executor(1) leave the thread count as
// it was; the same GEMM on Executor(2) starts OpenMP's team (so the count
// can grow and the check can fail). A layer that used Eigen's own (OpenMP)
// GEMM threading or OpenMP's default team would grow it.
namespace {

void dense_layers_on(int threads) {
  const nn::Linear gemm = random_linear(512, 1024, true, 11), gemv = random_linear(1024, 2048, false, 12);
  const nn::Matrix x = random_matrix(512, 512, 13), v = random_matrix(2, 1024, 14);
  std::mt19937 rng(15);
  const nn::Mlp mlp = nn::Mlp::random(512, 1024, rng);
  testing_util::report_thread_growth([&] {
    nn::Matrix y;
    nn::linear(gemm, x, y, Executor(threads));
    if (threads == 1) {
      nn::linear(gemv, v, y, Executor(1));
      gemm.forward(x, y, Executor(1));
      mlp.forward(x, y, Executor(1));
    }
  });
}

}  // namespace

TEST(NnLinearDeathTest, ExecutorOneRunsTheDenseLayersOnOneThread) {
#if !defined(_OPENMP)
  GTEST_SKIP() << "built without OpenMP: every layer is serial";
#else
  if (testing_util::process_threads() < 1) GTEST_SKIP() << "cannot count threads (no /proc/self/task)";
  testing_util::threadsafe_death_tests();
  EXPECT_EXIT(dense_layers_on(1), ::testing::ExitedWithCode(0), "threads: same");
  EXPECT_EXIT(dense_layers_on(2), ::testing::ExitedWithCode(0), "threads: grew");
#endif
}
