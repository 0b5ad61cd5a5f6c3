// SPDX-License-Identifier: MIT
// effattn internal: the short vectors of one instruction-set level. No include
// guard: included once per level by attention/detail/levels.hpp, inside that
// level's namespace, with the EFFATTN_LEVEL_* macros set (see core/simd.hpp);
// include nothing here.
#ifndef EFFATTN_LEVEL_BYTES
#  error "effattn/core/simd_level.hpp is internal: it is included by effattn/attention/detail/levels.hpp"
#endif

// The kernels are written on fixed-width vectors of EFFATTN_LEVEL_BYTES: 16
// floats for AVX-512, 8 for AVX2, 4 for the baseline. With GCC and Clang these
// are the compilers' vector extensions, which lower to the best instructions
// of the level (the level's functions carry its target attribute); other
// compilers get a plain array type that they may vectorise.

namespace simd {

constexpr int kBytes = EFFATTN_LEVEL_BYTES;
constexpr int kFloatLanes = kBytes / 4;
#if EFFATTN_LEVEL_AVX512
constexpr __mmask16 kAll16 = 0xFFFF;  // every lane of a 16-lane mask (see core/simd.hpp)
#endif
/// Registers the level has; decides the register blocking of the micro-kernels.
constexpr int kRegisters = EFFATTN_LEVEL_REGISTERS;

#if EFFATTN_HAVE_VECTOR_EXT
// Register types keep their natural alignment (the vector size), so a local
// array of them (accumulators a kernel keeps on the stack) is aligned as the
// compiler assumes when it loads it with an aligned instruction. Memory that
// is not known to be aligned is read and written only through the *_u types
// (element alignment, may_alias), as <immintrin.h> does with __m512_u.
typedef float vf __attribute__((vector_size(kBytes)));
typedef double vd __attribute__((vector_size(kBytes)));
typedef std::int32_t vi __attribute__((vector_size(kBytes)));
typedef float vf_u __attribute__((vector_size(kBytes), aligned(4), __may_alias__));
typedef double vd_u __attribute__((vector_size(kBytes), aligned(8), __may_alias__));
// A local array of registers (the kernels' accumulators) must be aligned as
// the compiler assumes when it loads it with an aligned instruction.
static_assert(alignof(vf) == sizeof(vf) && alignof(vd) == sizeof(vd), "effattn: register types must be naturally aligned");
#else
struct vf {
  float v[kFloatLanes];
  float& operator[](int i) { return v[i]; }
  float operator[](int i) const { return v[i]; }
};
struct vd {
  double v[kBytes / 8];
  double& operator[](int i) { return v[i]; }
  double operator[](int i) const { return v[i]; }
};
inline vd operator+(vd a, vd b) { for (int i = 0; i < kBytes / 8; ++i) a.v[i] += b.v[i]; return a; }
inline vd operator-(vd a, vd b) { for (int i = 0; i < kBytes / 8; ++i) a.v[i] -= b.v[i]; return a; }
inline vd operator*(vd a, vd b) { for (int i = 0; i < kBytes / 8; ++i) a.v[i] *= b.v[i]; return a; }
inline vf operator+(vf a, vf b) { for (int i = 0; i < kFloatLanes; ++i) a.v[i] += b.v[i]; return a; }
inline vf operator-(vf a, vf b) { for (int i = 0; i < kFloatLanes; ++i) a.v[i] -= b.v[i]; return a; }
inline vf operator*(vf a, vf b) { for (int i = 0; i < kFloatLanes; ++i) a.v[i] *= b.v[i]; return a; }
#endif

EFFATTN_ALWAYS_INLINE vf load(const float* p) {
#if EFFATTN_HAVE_VECTOR_EXT
  return *reinterpret_cast<const vf_u*>(p);  // element-aligned, may_alias
#else
  vf r;
  std::memcpy(&r, p, sizeof(vf));
  return r;
#endif
}
EFFATTN_ALWAYS_INLINE void store(float* p, vf v) {
#if EFFATTN_HAVE_VECTOR_EXT
  *reinterpret_cast<vf_u*>(p) = v;
#else
  std::memcpy(p, &v, sizeof(vf));
#endif
}
EFFATTN_ALWAYS_INLINE vf broadcast(float x) {
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  return _mm512_set1_ps(x);
#elif EFFATTN_LEVEL_AVX && EFFATTN_LEVEL_BYTES == 32
  return _mm256_set1_ps(x);
#elif EFFATTN_HAVE_VECTOR_EXT
  return vf{} + x;
#else
  vf r;
  for (int i = 0; i < kFloatLanes; ++i) r[i] = x;
  return r;
#endif
}

/// a * b + c, fused where the target has FMA (the same on every thread, so
/// results stay bit-identical whatever the thread count).
EFFATTN_ALWAYS_INLINE vf fmadd(vf a, vf b, vf c) {
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  return _mm512_fmadd_ps(a, b, c);
#elif EFFATTN_LEVEL_FMA && EFFATTN_LEVEL_BYTES == 32
  return _mm256_fmadd_ps(a, b, c);
#else
  return a * b + c;
#endif
}

EFFATTN_ALWAYS_INLINE vf max(vf a, vf b) {
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  return _mm512_mask_max_ps(a, kAll16, a, b);
#elif EFFATTN_LEVEL_AVX && EFFATTN_LEVEL_BYTES == 32
  return _mm256_max_ps(a, b);
#else
  vf r;
  for (int i = 0; i < kFloatLanes; ++i) r[i] = a[i] > b[i] ? a[i] : b[i];
  return r;
#endif
}

EFFATTN_ALWAYS_INLINE vf min(vf a, vf b) {
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  return _mm512_mask_min_ps(a, kAll16, a, b);
#elif EFFATTN_LEVEL_AVX && EFFATTN_LEVEL_BYTES == 32
  return _mm256_min_ps(a, b);
#else
  vf r;
  for (int i = 0; i < kFloatLanes; ++i) r[i] = a[i] < b[i] ? a[i] : b[i];
  return r;
#endif
}

EFFATTN_ALWAYS_INLINE float reduce_max(vf a) {
  float m = a[0];
  for (int i = 1; i < kFloatLanes; ++i) m = a[i] > m ? a[i] : m;
  return m;
}
EFFATTN_ALWAYS_INLINE float reduce_add(vf a) {
  // Pairwise, in a fixed order.
  float t[kFloatLanes];
  std::memcpy(t, &a, sizeof(t));
  for (int w = kFloatLanes / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) t[i] += t[i + w];
  return t[0];
}

/// exp(x) for float lanes: Cody-Waite range reduction to x = n ln2 + r,
/// a degree-6 polynomial for e^r (Cephes expf coefficients, ~1 ulp), and
/// 2^n built in the exponent bits. exp(-inf) = 0 exactly, and every
/// x < -87.33 gives 0 (masked logits must contribute exactly nothing).
EFFATTN_ALWAYS_INLINE vf exp(vf x) {
  const vf lo = broadcast(-87.3365478515625f), hi = broadcast(88.0f);
  vf xc = max(x, lo);
  xc = min(xc, hi);
  const vf magic = broadcast(12582912.0f);  // 1.5 * 2^23: adds and subtracts to round
  vf n = (xc * broadcast(1.44269504088896341f) + magic) - magic;
  vf r = fmadd(n, broadcast(-0.693359375f), xc);
  r = fmadd(n, broadcast(2.12194440e-4f), r);
  vf p = broadcast(1.9875691500e-4f);
  p = fmadd(p, r, broadcast(1.3981999507e-3f));
  p = fmadd(p, r, broadcast(8.3334519073e-3f));
  p = fmadd(p, r, broadcast(4.1665795894e-2f));
  p = fmadd(p, r, broadcast(1.6666665459e-1f));
  p = fmadd(p, r, broadcast(5.0000001201e-1f));
  vf y = fmadd(p, r * r, r + broadcast(1.0f));
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  // vscalefps forms y * 2^n in one instruction (the same bits as the
  // exponent-field construction below); its zero mask clears the lanes below
  // the range (-inf, tiny x, NaN) before any subnormal could be formed.
  const __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
  return _mm512_maskz_scalef_ps(keep, y, n);
#elif EFFATTN_HAVE_VECTOR_EXT
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &e, sizeof(vf));
  // Zero the out-of-range lanes (-inf, tiny x) *before* scaling: for them
  // n = -126 and y < 1, so y * 2^-126 would be a subnormal, which costs a
  // microcode assist on x86 (3x slower exps where many logits are masked).
  vi keep = x >= lo;  // all-ones where x is in range
  vi bits;
  std::memcpy(&bits, &y, sizeof(vf));
  bits &= keep;
  std::memcpy(&y, &bits, sizeof(vf));
  y = y * scale;
#else
  for (int i = 0; i < kFloatLanes; ++i) y[i] = x[i] >= lo[i] ? std::ldexp(y[i], static_cast<int>(n[i])) : 0.0f;
#endif
  return y;
}

/// Scalar exp with the same polynomial, so a tail lane computed alone equals
/// the same value computed in a vector.
EFFATTN_ALWAYS_INLINE float exp(float x) {
  vf v = broadcast(x);
  return exp(v)[0];
}

// ---- double lanes: the same operations, so kernels can be written once on
// vec<S>. exp for double runs std::exp per lane (double is the accuracy path,
// not the speed path).
constexpr int kDoubleLanes = kBytes / 8;
EFFATTN_ALWAYS_INLINE vd load(const double* p) {
#if EFFATTN_HAVE_VECTOR_EXT
  return *reinterpret_cast<const vd_u*>(p);
#else
  vd r;
  std::memcpy(&r, p, sizeof(vd));
  return r;
#endif
}
EFFATTN_ALWAYS_INLINE void store(double* p, vd v) {
#if EFFATTN_HAVE_VECTOR_EXT
  *reinterpret_cast<vd_u*>(p) = v;
#else
  std::memcpy(p, &v, sizeof(vd));
#endif
}
EFFATTN_ALWAYS_INLINE vd fmadd(vd a, vd b, vd c) {
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  return _mm512_fmadd_pd(a, b, c);
#elif EFFATTN_LEVEL_FMA && EFFATTN_LEVEL_BYTES == 32
  return _mm256_fmadd_pd(a, b, c);
#else
  return a * b + c;
#endif
}
EFFATTN_ALWAYS_INLINE vd max(vd a, vd b) {
  vd r;
  for (int i = 0; i < kDoubleLanes; ++i) r[i] = a[i] > b[i] ? a[i] : b[i];
  return r;
}
EFFATTN_ALWAYS_INLINE double reduce_max(vd a) {
  double m = a[0];
  for (int i = 1; i < kDoubleLanes; ++i) m = a[i] > m ? a[i] : m;
  return m;
}
EFFATTN_ALWAYS_INLINE double reduce_add(vd a) {
  double t[kDoubleLanes];
  std::memcpy(t, &a, sizeof(t));
  for (int w = kDoubleLanes / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) t[i] += t[i + w];
  return t[0];
}
EFFATTN_ALWAYS_INLINE vd exp(vd x) {
  vd r;
  for (int i = 0; i < kDoubleLanes; ++i) r[i] = std::exp(x[i]);
  return r;
}
EFFATTN_ALWAYS_INLINE double exp(double x) { return std::exp(x); }

/// vec<S>: the vector type of scalar S; lanes<S>: its width.
template <class S> struct vec_of;
template <> struct vec_of<float> { using type = vf; static constexpr int lanes = kFloatLanes; };
template <> struct vec_of<double> { using type = vd; static constexpr int lanes = kDoubleLanes; };
template <class S> using vec = typename vec_of<S>::type;
template <class S> constexpr int lanes = vec_of<S>::lanes;

EFFATTN_ALWAYS_INLINE vf splat_(float x) { return broadcast(x); }
EFFATTN_ALWAYS_INLINE vd splat_(double x) {
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  return _mm512_set1_pd(x);
#elif EFFATTN_LEVEL_AVX && EFFATTN_LEVEL_BYTES == 32
  return _mm256_set1_pd(x);
#elif EFFATTN_HAVE_VECTOR_EXT
  return vd{} + x;
#else
  vd r;
  for (int i = 0; i < kDoubleLanes; ++i) r[i] = x;
  return r;
#endif
}
template <class S>
EFFATTN_ALWAYS_INLINE vec<S> splat(S x) {
  return splat_(x);
}


// ---- 16-bit storage: load W elements and widen them to float lanes (exact).
EFFATTN_ALWAYS_INLINE vf load_widen(const float16* p) {
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  return _mm512_maskz_cvtph_ps(kAll16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif EFFATTN_LEVEL_F16C && EFFATTN_LEVEL_BYTES == 32
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  vf r;
  for (int i = 0; i < kFloatLanes; ++i) r[i] = detail::half_bits_to_float(p[i].bits);
  return r;
#endif
}
EFFATTN_ALWAYS_INLINE vf load_widen(const bfloat16* p) {
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(
      kAll16,
      _mm512_maskz_cvtepu16_epi32(kAll16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
#elif EFFATTN_LEVEL_AVX2 && EFFATTN_LEVEL_BYTES == 32
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
#else
  vf r;
  for (int i = 0; i < kFloatLanes; ++i) r[i] = detail::bfloat16_bits_to_float(p[i].bits);
  return r;
#endif
}
/// int8 codes (core/quant.hpp) to float lanes, exactly (the row's scale is
/// applied by the caller).
EFFATTN_ALWAYS_INLINE vf load_widen(const std::int8_t* p) {
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  return _mm512_maskz_cvtepi32_ps(kAll16, _mm512_maskz_cvtepi8_epi32(kAll16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#elif EFFATTN_LEVEL_AVX2 && EFFATTN_LEVEL_BYTES == 32
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#else
  vf r;
  for (int i = 0; i < kFloatLanes; ++i) r[i] = static_cast<float>(p[i]);
  return r;
#endif
}
/// One vector of S lanes from storage KV: a plain load when KV is S, a
/// widening load from 16-bit or int8 storage into float lanes.
template <class S, class KV>
EFFATTN_ALWAYS_INLINE vec<S> load_as(const KV* p) {
  if constexpr (std::is_same<S, KV>::value) {
    return load(p);
  } else {
    static_assert(std::is_same<S, float>::value, "effattn: 16-bit and int8 storage are widened to float");
    return load_widen(p);
  }
}

}  // namespace simd
