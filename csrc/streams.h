// Counter-based random streams of SPEC §2-4, for the CPU:
//
//   hash(key, seed)  MurmurHash3_x86_32 of one 4-byte block, without `h ^= len`
//   U(seed)[i]     = float32(hash(i, seed)) / 2^32        (round to nearest even)
//   N(seed, n)     : p = ceil(n/2), u1 = max(U[j], 1e-10f), u2 = U[p + j],
//                    rad = sqrt(-2 log u1), ang = float32(2π) * u2,
//                    N[j] = rad cos(ang), N[p + j] = rad sin(ang)
//   sign(seed)[h]  = +1 if U[h] > 0.5 else -1
//
// Every float32 step is rounded as the contract writes it. log, sin and cos are
// evaluated in double precision (fdlibm's kernels, error below 1 ulp of a
// double) and rounded to float32 once, so they are the correctly rounded
// float32 functions except in vanishingly rare near-tie cases.
//
// Two code paths give identical bits: AVX2 (8 values per step) and portable
// scalar C++. They perform the same IEEE operations in the same order (the
// extension is built with -ffp-contract=off, so nothing is fused behind our
// back), which the tests check. Values are produced in blocks of 8 pairs and
// a partial block is computed in full and cut, so an element's value never
// depends on where a range starts or ends.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define POC_HAVE_AVX2 1
#else
#define POC_HAVE_AVX2 0
#endif

namespace poc {

constexpr float kTwoPiF32 = 6.28318548202514648438f;   // float32(2π), 0x40C90FDB
constexpr float kUniformMin = 1e-10f;                  // float32(1e-10)
constexpr float kTwoPowM32 = 2.3283064365386963e-10f;  // 2^-32, exact

// fdlibm constants: ln 2 split, π/2 split (first 33 bits exact), and the
// minimax coefficients of log1p on [√½-1, √2-1] and of sin/cos on [-π/4, π/4].
constexpr double kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;
constexpr double kLg1 = 6.666666666666735130e-01, kLg2 = 3.999999999940941908e-01, kLg3 = 2.857142874366239149e-01,
                 kLg4 = 2.222219843214978396e-01, kLg5 = 1.818357216161805012e-01, kLg6 = 1.531383769920937332e-01,
                 kLg7 = 1.479819860511658591e-01;
constexpr double kTwoOverPi = 6.36619772367581382433e-01;
constexpr double kPio2_1 = 1.57079632673412561417e+00, kPio2_1t = 6.07710050650619224932e-11;
constexpr double kS1 = -1.66666666666666324348e-01, kS2 = 8.33333333332248946124e-03, kS3 = -1.98412698298579493134e-04,
                 kS4 = 2.75573137070700676789e-06, kS5 = -2.50507602534068634195e-08, kS6 = 1.58969099521155010221e-10;
constexpr double kC1 = 4.16666666666666019037e-02, kC2 = -1.38888888888741095749e-03, kC3 = 2.48015872894767294178e-05,
                 kC4 = -2.75573143513906633035e-07, kC5 = 2.08757232129817482790e-09, kC6 = -1.13596475577881948265e-11;
constexpr uint32_t kSqrt2Bits = 0x3fb504f3;  // float32(√2): mantissas above it are halved

// ----------------------------------------------------------------------------- portable scalar path

inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

inline uint32_t hash32(uint32_t key, uint32_t seed) {
  uint32_t k = key * 0xcc9e2d51u;
  k = rotl32(k, 15);
  k *= 0x1b873593u;
  uint32_t h = seed ^ k;
  h = rotl32(h, 13);
  h = h * 5u + 0xe6546b64u;
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// float32(h) * 2^-32. Both halves convert exactly and their sum is rounded
// once, which is the round-to-nearest-even conversion (AVX2 has no unsigned
// conversion, so both paths use this form).
inline float uniform_of(uint32_t h) {
  const float hi = static_cast<float>(static_cast<int32_t>(h >> 16)) * 65536.0f;
  const float lo = static_cast<float>(static_cast<int32_t>(h & 0xffffu));
  return (hi + lo) * kTwoPowM32;
}

inline float log_f32(float u) {  // u a positive normal float
  uint32_t bits;
  std::memcpy(&bits, &u, 4);
  int32_t e = static_cast<int32_t>(bits >> 23) - 127;
  uint32_t mb = (bits & 0x007fffffu) | 0x3f800000u;
  if (mb > kSqrt2Bits) {
    mb -= 0x00800000u;
    e += 1;
  }
  float m;
  std::memcpy(&m, &mb, 4);
  const double f = static_cast<double>(m) - 1.0, dk = static_cast<double>(e);
  const double s = f / (2.0 + f), z = s * s, w = z * z;
  const double t1 = w * (kLg2 + w * (kLg4 + w * kLg6));
  const double t2 = z * (kLg1 + w * (kLg3 + w * (kLg5 + w * kLg7)));
  const double R = t2 + t1, hfsq = 0.5 * f * f;
  return static_cast<float>(dk * kLn2Hi - ((hfsq - (s * (hfsq + R) + dk * kLn2Lo)) - f));
}

// sin and cos of a float32 angle in [0, float32(2π)] (quadrants 0..4).
inline void sincos_f32(float a, float* sin_out, float* cos_out) {
  const double x = a;
  const double kd = std::nearbyint(x * kTwoOverPi);
  const double r = (x - kd * kPio2_1) - kd * kPio2_1t;
  const double z = r * r;
  const double sv = r + (z * r) * (kS1 + z * (kS2 + z * (kS3 + z * (kS4 + z * (kS5 + z * kS6)))));
  const double cr = z * (kC1 + z * (kC2 + z * (kC3 + z * (kC4 + z * (kC5 + z * kC6)))));
  const double cv = 1.0 - (0.5 * z - z * cr);
  const bool swap = kd == 1.0 || kd == 3.0;
  double s = swap ? cv : sv, c = swap ? sv : cv;
  if (kd == 2.0 || kd == 3.0) s = -s;
  if (kd == 1.0 || kd == 2.0) c = -c;
  *sin_out = static_cast<float>(s);
  *cos_out = static_cast<float>(c);
}

// Pairs j0 .. j0+7 of N(seed, n) with p = ceil(n/2): cos half and sin half.
inline void normal8_portable(uint32_t seed, uint32_t p, uint32_t j0, float* c8, float* s8) {
  for (int i = 0; i < 8; ++i) {
    float u1 = uniform_of(hash32(j0 + i, seed));
    u1 = u1 < kUniformMin ? kUniformMin : u1;
    const float u2 = uniform_of(hash32(p + j0 + i, seed));
    const float rad = std::sqrt(log_f32(u1) * -2.0f);
    const float ang = kTwoPiF32 * u2;
    float s, c;
    sincos_f32(ang, &s, &c);
    c8[i] = rad * c;
    s8[i] = rad * s;
  }
}

// ----------------------------------------------------------------------------- AVX2 path

#if POC_HAVE_AVX2
namespace avx2 {

inline __m256i rotl(__m256i x, int r) { return _mm256_or_si256(_mm256_slli_epi32(x, r), _mm256_srli_epi32(x, 32 - r)); }

inline __m256i hash8(__m256i k, __m256i seed) {
  k = _mm256_mullo_epi32(k, _mm256_set1_epi32(static_cast<int>(0xcc9e2d51u)));
  k = rotl(k, 15);
  k = _mm256_mullo_epi32(k, _mm256_set1_epi32(0x1b873593));
  __m256i h = _mm256_xor_si256(seed, k);
  h = rotl(h, 13);
  h = _mm256_add_epi32(_mm256_mullo_epi32(h, _mm256_set1_epi32(5)), _mm256_set1_epi32(static_cast<int>(0xe6546b64u)));
  h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
  h = _mm256_mullo_epi32(h, _mm256_set1_epi32(static_cast<int>(0x85ebca6bu)));
  h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 13));
  h = _mm256_mullo_epi32(h, _mm256_set1_epi32(static_cast<int>(0xc2b2ae35u)));
  return _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
}

inline __m256 uniform8(__m256i h) {
  const __m256 hi = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(h, 16)), _mm256_set1_ps(65536.0f));
  const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(h, _mm256_set1_epi32(0xffff)));
  return _mm256_mul_ps(_mm256_add_ps(hi, lo), _mm256_set1_ps(kTwoPowM32));
}

inline __m256i iota8(uint32_t start) {
  return _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(start)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline __m256d poly_log(__m256d f, __m256d dk) {
#define C(x) _mm256_set1_pd(x)
  const __m256d s = _mm256_div_pd(f, _mm256_add_pd(C(2.0), f));
  const __m256d z = _mm256_mul_pd(s, s), w = _mm256_mul_pd(z, z);
  __m256d t1 = _mm256_add_pd(C(kLg4), _mm256_mul_pd(w, C(kLg6)));
  t1 = _mm256_mul_pd(w, _mm256_add_pd(C(kLg2), _mm256_mul_pd(w, t1)));
  __m256d t2 = _mm256_add_pd(C(kLg5), _mm256_mul_pd(w, C(kLg7)));
  t2 = _mm256_add_pd(C(kLg3), _mm256_mul_pd(w, t2));
  t2 = _mm256_mul_pd(z, _mm256_add_pd(C(kLg1), _mm256_mul_pd(w, t2)));
  const __m256d R = _mm256_add_pd(t2, t1);
  const __m256d hfsq = _mm256_mul_pd(_mm256_mul_pd(C(0.5), f), f);
  const __m256d inner = _mm256_add_pd(_mm256_mul_pd(s, _mm256_add_pd(hfsq, R)), _mm256_mul_pd(dk, C(kLn2Lo)));
  return _mm256_sub_pd(_mm256_mul_pd(dk, C(kLn2Hi)), _mm256_sub_pd(_mm256_sub_pd(hfsq, inner), f));
}

inline __m256 log8(__m256 u) {
  const __m256i bits = _mm256_castps_si256(u);
  __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127));
  __m256i mb = _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f800000));
  const __m256i adj = _mm256_cmpgt_epi32(mb, _mm256_set1_epi32(static_cast<int>(kSqrt2Bits)));
  mb = _mm256_sub_epi32(mb, _mm256_and_si256(adj, _mm256_set1_epi32(0x00800000)));
  e = _mm256_sub_epi32(e, adj);
  const __m256 m = _mm256_castsi256_ps(mb);
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d flo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(m)), one);
  const __m256d fhi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(m, 1)), one);
  const __m256d elo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(e));
  const __m256d ehi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(e, 1));
  const __m128 rlo = _mm256_cvtpd_ps(poly_log(flo, elo)), rhi = _mm256_cvtpd_ps(poly_log(fhi, ehi));
  return _mm256_insertf128_ps(_mm256_castps128_ps256(rlo), rhi, 1);
}

inline void sincos4(__m128 a, __m128* s_out, __m128* c_out) {
  const __m256d x = _mm256_cvtps_pd(a);
  const __m256d kd = _mm256_round_pd(_mm256_mul_pd(x, C(kTwoOverPi)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256d r = _mm256_sub_pd(_mm256_sub_pd(x, _mm256_mul_pd(kd, C(kPio2_1))), _mm256_mul_pd(kd, C(kPio2_1t)));
  const __m256d z = _mm256_mul_pd(r, r);
  __m256d sp = _mm256_add_pd(C(kS5), _mm256_mul_pd(z, C(kS6)));
  sp = _mm256_add_pd(C(kS4), _mm256_mul_pd(z, sp));
  sp = _mm256_add_pd(C(kS3), _mm256_mul_pd(z, sp));
  sp = _mm256_add_pd(C(kS2), _mm256_mul_pd(z, sp));
  sp = _mm256_add_pd(C(kS1), _mm256_mul_pd(z, sp));
  const __m256d sv = _mm256_add_pd(r, _mm256_mul_pd(_mm256_mul_pd(z, r), sp));
  __m256d cp = _mm256_add_pd(C(kC5), _mm256_mul_pd(z, C(kC6)));
  cp = _mm256_add_pd(C(kC4), _mm256_mul_pd(z, cp));
  cp = _mm256_add_pd(C(kC3), _mm256_mul_pd(z, cp));
  cp = _mm256_add_pd(C(kC2), _mm256_mul_pd(z, cp));
  cp = _mm256_add_pd(C(kC1), _mm256_mul_pd(z, cp));
  const __m256d cr = _mm256_mul_pd(z, cp);
  const __m256d cv = _mm256_sub_pd(C(1.0), _mm256_sub_pd(_mm256_mul_pd(C(0.5), z), _mm256_mul_pd(z, cr)));
  const __m256d eq1 = _mm256_cmp_pd(kd, C(1.0), _CMP_EQ_OQ), eq2 = _mm256_cmp_pd(kd, C(2.0), _CMP_EQ_OQ),
                eq3 = _mm256_cmp_pd(kd, C(3.0), _CMP_EQ_OQ);
  const __m256d swap = _mm256_or_pd(eq1, eq3);
  const __m256d sign = C(-0.0);
  __m256d s = _mm256_blendv_pd(sv, cv, swap), c = _mm256_blendv_pd(cv, sv, swap);
  s = _mm256_xor_pd(s, _mm256_and_pd(_mm256_or_pd(eq2, eq3), sign));
  c = _mm256_xor_pd(c, _mm256_and_pd(_mm256_or_pd(eq1, eq2), sign));
#undef C
  *s_out = _mm256_cvtpd_ps(s);
  *c_out = _mm256_cvtpd_ps(c);
}

inline void normal8(uint32_t seed, uint32_t p, uint32_t j0, __m256* c8, __m256* s8) {
  const __m256i sd = _mm256_set1_epi32(static_cast<int>(seed));
  const __m256 u1 = _mm256_max_ps(uniform8(hash8(iota8(j0), sd)), _mm256_set1_ps(kUniformMin));
  const __m256 u2 = uniform8(hash8(iota8(p + j0), sd));
  const __m256 rad = _mm256_sqrt_ps(_mm256_mul_ps(log8(u1), _mm256_set1_ps(-2.0f)));
  const __m256 ang = _mm256_mul_ps(_mm256_set1_ps(kTwoPiF32), u2);
  __m128 slo, clo, shi, chi;
  sincos4(_mm256_castps256_ps128(ang), &slo, &clo);
  sincos4(_mm256_extractf128_ps(ang, 1), &shi, &chi);
  const __m256 s = _mm256_insertf128_ps(_mm256_castps128_ps256(slo), shi, 1);
  const __m256 c = _mm256_insertf128_ps(_mm256_castps128_ps256(clo), chi, 1);
  *c8 = _mm256_mul_ps(rad, c);
  *s8 = _mm256_mul_ps(rad, s);
}

}  // namespace avx2
#endif

// ----------------------------------------------------------------------------- ranges

// Whether the SIMD path is used (when compiled in); the portable one gives the same bits.
inline bool& simd_enabled() {
  static bool enabled = POC_HAVE_AVX2;
  return enabled;
}

// out[i - i0] = hash(i, seed) for i in [i0, i1).
inline void hash_range(uint32_t seed, int64_t i0, int64_t i1, uint32_t* out) {
  for (int64_t i = i0; i < i1; ++i) out[i - i0] = hash32(static_cast<uint32_t>(i), seed);
}

// out[i - i0] = U(seed)[i] for i in [i0, i1).
inline void uniform_range(uint32_t seed, int64_t i0, int64_t i1, float* out) {
  int64_t i = i0;
#if POC_HAVE_AVX2
  if (simd_enabled()) {
    const __m256i sd = _mm256_set1_epi32(static_cast<int>(seed));
    for (; i + 8 <= i1; i += 8)
      _mm256_storeu_ps(out + (i - i0), avx2::uniform8(avx2::hash8(avx2::iota8(static_cast<uint32_t>(i)), sd)));
  }
#endif
  for (; i < i1; ++i) out[i - i0] = uniform_of(hash32(static_cast<uint32_t>(i), seed));
}

// out[h - h0] = +1 if U(seed)[h] > 0.5 else -1, for h in [h0, h1).
inline void sign_range(uint32_t seed, int64_t h0, int64_t h1, float* out) {
  int64_t h = h0;
#if POC_HAVE_AVX2
  if (simd_enabled()) {
    const __m256i sd = _mm256_set1_epi32(static_cast<int>(seed));
    const __m256 half = _mm256_set1_ps(0.5f), plus = _mm256_set1_ps(1.0f), minus = _mm256_set1_ps(-1.0f);
    for (; h + 8 <= h1; h += 8) {
      const __m256 u = avx2::uniform8(avx2::hash8(avx2::iota8(static_cast<uint32_t>(h)), sd));
      _mm256_storeu_ps(out + (h - h0), _mm256_blendv_ps(minus, plus, _mm256_cmp_ps(u, half, _CMP_GT_OQ)));
    }
  }
#endif
  for (; h < h1; ++h) out[h - h0] = uniform_of(hash32(static_cast<uint32_t>(h), seed)) > 0.5f ? 1.0f : -1.0f;
}

// Pairs j in [j0, j1) of N(seed, n), times `scale` (a float32 multiply, skipped
// when scale == 1): cos_out[j - j0] = N[j], and sin_out[j - j0] = N[p + j] for
// the first `nsin` of them (the sine of the last pair is dropped when n is odd).
inline void normal_pairs(uint32_t seed, int64_t n, int64_t j0, int64_t j1, float scale, float* cos_out, float* sin_out,
                         int64_t nsin) {
  const uint32_t p = static_cast<uint32_t>((n + 1) / 2);
  const bool scaled = scale != 1.0f;
  alignas(32) float c8[8], s8[8];
  for (int64_t j = j0; j < j1; j += 8) {
    const int64_t k = j - j0;
    const int nc = static_cast<int>(j1 - j < 8 ? j1 - j : 8);
    const int64_t ns_left = nsin - k;
    const int ns = static_cast<int>(ns_left < 0 ? 0 : (ns_left < nc ? ns_left : nc));
#if POC_HAVE_AVX2
    if (simd_enabled()) {
      __m256 c, s;
      avx2::normal8(seed, p, static_cast<uint32_t>(j), &c, &s);
      if (scaled) {
        c = _mm256_mul_ps(c, _mm256_set1_ps(scale));
        s = _mm256_mul_ps(s, _mm256_set1_ps(scale));
      }
      if (nc == 8 && ns == 8) {
        _mm256_storeu_ps(cos_out + k, c);
        _mm256_storeu_ps(sin_out + k, s);
        continue;
      }
      _mm256_store_ps(c8, c);
      _mm256_store_ps(s8, s);
    } else
#endif
    {
      normal8_portable(seed, p, static_cast<uint32_t>(j), c8, s8);
      if (scaled)
        for (int i = 0; i < 8; ++i) {
          c8[i] *= scale;
          s8[i] *= scale;
        }
    }
    for (int i = 0; i < nc; ++i) cos_out[k + i] = c8[i];
    for (int i = 0; i < ns; ++i) sin_out[k + i] = s8[i];
  }
}

// The whole stream N(seed, n) * scale into out[0:n].
inline void normal_stream(uint32_t seed, int64_t n, float scale, float* out) {
  const int64_t p = (n + 1) / 2;
  normal_pairs(seed, n, 0, p, scale, out, out + p, n - p);
}

}  // namespace poc
