// SPDX-License-Identifier: MIT
// effattn basics: the tiled engine on caller-owned memory.
//
//   attention_basics [N=2048] [threads=2]
//
// 1. causal grouped-query attention on contiguous [B,H,N,D] buffers,
// 2. the same data seen through a PyTorch-style [B,N,H,D] layout (a strided
//    view, no copy),
// 3. attention over two halves of the keys combined with the returned
//    log-sum-exp (how split-KV decoding and distributed attention merge),
// 4. a host thread pool driving the kernels instead of OpenMP,
// 5. a decode step against a float16 key/value cache (half the bytes),
// 6. what bad input looks like.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <effattn/effattn.hpp>
#include <random>
#include <thread>
#include <vector>

using effattn::index_t;

static std::vector<float> randn(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

static double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::fmax(m, std::fabs(a[i] - b[i]));
  return m;
}

int main(int argc, char** argv) {
  const index_t N = argc > 1 ? std::atol(argv[1]) : 2048;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  const index_t B = 1, H = 8, Hkv = 2, D = 64;  // 8 query heads share 2 K/V heads
  if (N < 2 || threads < 1) {
    std::fprintf(stderr, "usage: attention_basics [N>=2] [threads>=1]\n");
    return 2;
  }
  auto q = randn(B * H * N * D, 1), k = randn(B * Hkv * N * D, 2), v = randn(B * Hkv * N * D, 3);
  std::vector<float> out(B * H * N * D), lse(B * H * N);

  // 1. Causal GQA. Views are pointer + shape; make_view assumes row-major.
  auto Q = effattn::make_view<const float>(q.data(), B, H, N, D);
  auto K = effattn::make_view<const float>(k.data(), B, Hkv, N, D);
  auto V = effattn::make_view<const float>(v.data(), B, Hkv, N, D);
  auto t0 = std::chrono::steady_clock::now();
  effattn::attention<float>(Q, K, V, effattn::make_view(out.data(), B, H, N, D), effattn::CausalMask{},
                            effattn::NoScore{}, {}, effattn::Executor(threads),
                            effattn::make_view(lse.data(), B, H, N));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double flops = 4.0 * B * H * D * (N * (N + 1) / 2.0);  // allowed (unmasked) work only
  std::printf("causal GQA attention, N=%ld H=%ld Hkv=%ld D=%ld: %.2f ms, %.1f GFLOP/s, extra memory O(tile)\n",
              static_cast<long>(N), static_cast<long>(H), static_cast<long>(Hkv), static_cast<long>(D), secs * 1e3,
              flops / secs / 1e9);

  // 2. The same queries stored as [B, N, H, D] (PyTorch's usual layout before
  //    a transpose): pass strides instead of copying.
  std::vector<float> q_bnhd(q.size()), out2(out.size());
  for (index_t h = 0; h < H; ++h)
    for (index_t n = 0; n < N; ++n)
      for (index_t e = 0; e < D; ++e) q_bnhd[(n * H + h) * D + e] = q[(h * N + n) * D + e];
  effattn::ConstView<float, 4> Qs(q_bnhd.data(), {B, H, N, D}, {N * H * D, D, H * D, 1});
  effattn::attention<float>(Qs, K, V, effattn::make_view(out2.data(), B, H, N, D), effattn::CausalMask{});
  std::printf("strided [B,N,H,D] view: max |difference| = %.3g (same kernel, same math)\n", max_diff(out, out2));

  // 3. Split the keys in two halves, attend to each (non-causal here), and
  //    merge with the log-sum-exp: o = sum_h exp(lse_h - lse) o_h.
  const index_t half = N / 2;
  std::vector<float> full(out.size()), o1(out.size()), o2(out.size()), l1(lse.size()), l2(lse.size());
  effattn::flash_attention<float>(Q, K, V, effattn::make_view(full.data(), B, H, N, D));
  effattn::ConstView<float, 4> K1(k.data(), {B, Hkv, half, D}, K.strides()), V1(v.data(), {B, Hkv, half, D}, V.strides());
  effattn::ConstView<float, 4> K2(k.data() + half * D, {B, Hkv, N - half, D}, K.strides()),
      V2(v.data() + half * D, {B, Hkv, N - half, D}, V.strides());
  effattn::flash_attention<float>(Q, K1, V1, effattn::make_view(o1.data(), B, H, N, D), {}, {},
                                  effattn::make_view(l1.data(), B, H, N));
  effattn::flash_attention<float>(Q, K2, V2, effattn::make_view(o2.data(), B, H, N, D), {}, {},
                                  effattn::make_view(l2.data(), B, H, N));
  std::vector<float> merged(out.size());
  for (index_t r = 0; r < B * H * N; ++r) {
    const double m = std::fmax(l1[r], l2[r]);
    const double w1 = std::exp(l1[r] - m), w2 = std::exp(l2[r] - m);
    for (index_t e = 0; e < D; ++e)
      merged[r * D + e] = static_cast<float>((w1 * o1[r * D + e] + w2 * o2[r * D + e]) / (w1 + w2));
  }
  std::printf("two key halves merged by log-sum-exp: max |difference| to one pass = %.3g\n", max_diff(merged, full));

  // 4. A host thread pool (here: plain std::threads) instead of OpenMP. The
  //    result is bit-identical to the OpenMP run.
  effattn::Executor pool;
  pool.parallel_for = [threads](index_t n, const std::function<void(index_t, index_t)>& body) {
    std::vector<std::thread> ts;
    const index_t chunk = (n + threads - 1) / threads;
    for (index_t b = 0; b < n; b += chunk) ts.emplace_back(body, b, std::min(n, b + chunk));
    for (auto& t : ts) t.join();
  };
  std::vector<float> out3(out.size());
  effattn::attention<float>(Q, K, V, effattn::make_view(out3.data(), B, H, N, D), effattn::CausalMask{},
                            effattn::NoScore{}, {}, pool);
  std::printf("host thread pool: bit-identical to OpenMP: %s\n", max_diff(out, out3) == 0 ? "yes" : "NO");

  // 5. Decoding: the last query row against a K/V cache stored as float16.
  //    The engine widens each element exactly as it loads it and computes in
  //    float; the difference to float storage is the float16 rounding of K/V.
  std::vector<effattn::float16> k16(k.size()), v16(v.size());
  effattn::convert(k.data(), k16.data(), static_cast<index_t>(k.size()));
  effattn::convert(v.data(), v16.data(), static_cast<index_t>(v.size()));
  effattn::ConstView<float, 4> Qlast(q.data() + (N - 1) * D, {B, H, 1, D}, Q.strides());
  std::vector<float> dec32(B * H * D), dec16(B * H * D);
  effattn::attention<float>(Qlast, K, V, effattn::make_view(dec32.data(), B, H, 1, D));
  effattn::attention<float>(Qlast, effattn::make_view<const effattn::float16>(k16.data(), B, Hkv, N, D),
                            effattn::make_view<const effattn::float16>(v16.data(), B, Hkv, N, D),
                            effattn::make_view(dec16.data(), B, H, 1, D));
  std::printf("decode step with a float16 K/V cache (%.1f of %.1f MiB): max |difference| to float = %.3g\n",
              2.0 * k16.size() * sizeof(effattn::float16) / 1048576.0, 2.0 * k.size() * sizeof(float) / 1048576.0,
              max_diff(dec16, dec32));

  // 6. Bad input is rejected before anything is written.
  try {
    effattn::flash_attention<float>(Q, effattn::make_view<const float>(k.data(), B, Hkv, N, D / 2), V,
                                    effattn::make_view(out3.data(), B, H, N, D));
  } catch (const std::invalid_argument& e) {
    std::printf("bad input: %s\n", e.what());
  }
  return 0;
}
