// The distance of SPEC §5 on the CPU, in three stages (torch-free; the op in
// cpu_ops.cpp runs each stage in parallel):
//
//   1. per nonce:  x = float32(h) * s;  x = x - 2 (x·N_r)/(N_r·N_r) N_r for r < R
//                  (= H_r x with v_r = N_r/||N_r||);  x̂ = x / ||x||   [float64, rounded to float32]
//   2. projection: l = W x̂                                          [float32, FMA]
//   3. per nonce:  d = || l/||l|| - t ||                              [float64]
//
// Batch invariance: every value of a nonce is computed from that nonce's row
// alone, by the same sequence of IEEE operations, whatever the batch, the
// tiling or the thread count. In the projection each l[b, o] is accumulated in
// 8 lanes (lane j sums h ≡ j mod 8 in increasing h, one FMA per element), then
// the lanes are added as ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)). Tiles over
// nonces, outputs and h change which values sit in registers together, never
// this order; a partial tile runs the same per-element sequence. The float64
// sums of stages 1 and 3 use the same fixed 8-lane order.
//
// Precision: the float32 projection moves l by a relative 1e-7..1e-6 per entry
// in uncorrelated directions, which moves d by well under 1e-7 (an error in l
// changes d only through its component along t); everything else is float64.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "streams.h"

namespace poc {

// ----------------------------------------------------------------------------- fixed-order float64 sums

inline double sum8(const double* acc) {
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

inline double dot_dd(const double* a, const double* b, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  for (int j = 0; i + j < n; ++j) acc[j] += a[i + j] * b[i + j];
  return sum8(acc);
}

inline double dot_df(const double* a, const float* b, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * static_cast<double>(b[i + j]);
  for (int j = 0; i + j < n; ++j) acc[j] += a[i + j] * static_cast<double>(b[i + j]);
  return sum8(acc);
}

inline double dot_ff(const float* a, const float* b, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(a[i + j]) * static_cast<double>(b[i + j]);
  for (int j = 0; i + j < n; ++j) acc[j] += static_cast<double>(a[i + j]) * static_cast<double>(b[i + j]);
  return sum8(acc);
}

// ----------------------------------------------------------------------------- stage 1

// Scratch of one thread for prepare_row: H doubles and H floats.
struct RowScratch {
  double* x;
  float* v;
};

// Writes x̂ (float32, zero padded to `ldx`) for one nonce; returns false when the
// row holds NaN or Inf (its distance is then NaN).
inline bool prepare_row(const float* h, int64_t H, bool use_signs, uint32_t sign_seed, const uint32_t* refl_seeds,
                        int64_t R, float* xhat, int64_t ldx, RowScratch s) {
  bool finite = true;
  for (int64_t i = 0; i < H; ++i) finite &= std::isfinite(h[i]);
  if (use_signs) {
    sign_range(sign_seed, 0, H, s.v);
    for (int64_t i = 0; i < H; ++i) s.x[i] = static_cast<double>(h[i]) * static_cast<double>(s.v[i]);
  } else {
    for (int64_t i = 0; i < H; ++i) s.x[i] = static_cast<double>(h[i]);
  }
  for (int64_t r = 0; r < R; ++r) {
    normal_stream(refl_seeds[r], H, 1.0f, s.v);
    const double coef = 2.0 * dot_df(s.x, s.v, H) / dot_ff(s.v, s.v, H);
    for (int64_t i = 0; i < H; ++i) s.x[i] -= coef * static_cast<double>(s.v[i]);
  }
  const double norm = std::sqrt(dot_dd(s.x, s.x, H));
  for (int64_t i = 0; i < H; ++i) xhat[i] = static_cast<float>(s.x[i] / norm);
  for (int64_t i = H; i < ldx; ++i) xhat[i] = 0.0f;
  return finite;
}

// ----------------------------------------------------------------------------- stage 3

inline float distance_of(const float* l, const double* t, int64_t D) {
  const double nl = std::sqrt(dot_ff(l, l, D));
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t o = 0;
  for (; o + 8 <= D; o += 8)
    for (int j = 0; j < 8; ++j) {
      const double e = static_cast<double>(l[o + j]) / nl - t[o + j];
      acc[j] += e * e;
    }
  for (int j = 0; o + j < D; ++j) {
    const double e = static_cast<double>(l[o + j]) / nl - t[o + j];
    acc[j] += e * e;
  }
  return static_cast<float>(std::sqrt(sum8(acc)));
}

// ----------------------------------------------------------------------------- stage 2: l = x̂ Wᵀ

constexpr int kTileB = 3;        // nonces per micro tile
constexpr int kTileO = 4;        // outputs per micro tile
constexpr int64_t kTileK = 512;  // h per pass (a multiple of 8): keeps the x̂ tile in L1

// Outputs per block: a block of W rows stays in L2 (about 256 KB) while every
// nonce tile passes over it.
inline int64_t block_rows(int64_t H) {
  const int64_t rows = (int64_t(1) << 16) / std::max<int64_t>(H, 1);
  return std::max<int64_t>(kTileO, std::min<int64_t>(256, rows / kTileO * kTileO));
}

struct Projection {
  const float* x;  // [B, ldx], zero padded beyond H
  int64_t ldx;
  const float* w;  // [D, ldw], first H columns used
  int64_t ldw;
  int64_t B, H, D;
  float* l;  // [B, ldl]
  int64_t ldl;
};

inline float hsum8(const float* a) {
  const float t0 = a[0] + a[4], t1 = a[1] + a[5], t2 = a[2] + a[6], t3 = a[3] + a[7];
  return (t0 + t2) + (t1 + t3);
}

// acc holds the NB x NO lane accumulators between h passes.
template <int NB, int NO>
inline void micro_portable(const Projection& P, int64_t b0, int64_t o0, int64_t k0, int64_t k1, bool first, bool last,
                           float* acc) {
  float a[NB][NO][8];
  for (int b = 0; b < NB; ++b)
    for (int o = 0; o < NO; ++o)
      for (int j = 0; j < 8; ++j) a[b][o][j] = first ? 0.0f : acc[(b * NO + o) * 8 + j];
  for (int64_t k = k0; k < k1; k += 8) {
    for (int o = 0; o < NO; ++o) {
      const float* wr = P.w + (o0 + o) * P.ldw + k;
      float wv[8];
      for (int j = 0; j < 8; ++j) wv[j] = k + j < P.H ? wr[j] : 0.0f;
      for (int b = 0; b < NB; ++b) {
        const float* xr = P.x + (b0 + b) * P.ldx + k;
        for (int j = 0; j < 8; ++j) a[b][o][j] = std::fma(xr[j], wv[j], a[b][o][j]);
      }
    }
  }
  for (int b = 0; b < NB; ++b)
    for (int o = 0; o < NO; ++o) {
      if (last)
        P.l[(b0 + b) * P.ldl + o0 + o] = hsum8(a[b][o]);
      else
        for (int j = 0; j < 8; ++j) acc[(b * NO + o) * 8 + j] = a[b][o][j];
    }
}

#if POC_HAVE_AVX2
template <int NB, int NO>
inline void micro_avx2(const Projection& P, int64_t b0, int64_t o0, int64_t k0, int64_t k1, bool first, bool last,
                       float* acc) {
  __m256 a[NB][NO];
  for (int b = 0; b < NB; ++b)
    for (int o = 0; o < NO; ++o) a[b][o] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(acc + (b * NO + o) * 8);
  const float* xr[NB];
  const float* wr[NO];
  for (int b = 0; b < NB; ++b) xr[b] = P.x + (b0 + b) * P.ldx;
  for (int o = 0; o < NO; ++o) wr[o] = P.w + (o0 + o) * P.ldw;
  const int64_t kfull = std::min(k1, P.H / 8 * 8);
  int64_t k = k0;
  for (; k < kfull; k += 8) {
    __m256 xv[NB];
    for (int b = 0; b < NB; ++b) xv[b] = _mm256_loadu_ps(xr[b] + k);
    for (int o = 0; o < NO; ++o) {
      const __m256 wv = _mm256_loadu_ps(wr[o] + k);
      for (int b = 0; b < NB; ++b) a[b][o] = _mm256_fmadd_ps(xv[b], wv, a[b][o]);
    }
  }
  if (k < k1) {  // the last, partial 8 columns of W (x̂ is zero padded)
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(P.H - k)), lane);
    __m256 xv[NB];
    for (int b = 0; b < NB; ++b) xv[b] = _mm256_loadu_ps(xr[b] + k);
    for (int o = 0; o < NO; ++o) {
      const __m256 wv = _mm256_maskload_ps(wr[o] + k, mask);
      for (int b = 0; b < NB; ++b) a[b][o] = _mm256_fmadd_ps(xv[b], wv, a[b][o]);
    }
  }
  for (int b = 0; b < NB; ++b)
    for (int o = 0; o < NO; ++o) {
      if (last) {
        const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(a[b][o]), _mm256_extractf128_ps(a[b][o], 1));
        const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        P.l[(b0 + b) * P.ldl + o0 + o] = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
      } else {
        _mm256_storeu_ps(acc + (b * NO + o) * 8, a[b][o]);
      }
    }
}
#endif

template <int NB, int NO>
inline void micro(const Projection& P, int64_t b0, int64_t o0, int64_t k0, int64_t k1, bool first, bool last,
                  float* acc) {
#if POC_HAVE_AVX2
  if (simd_enabled()) return micro_avx2<NB, NO>(P, b0, o0, k0, k1, first, last, acc);
#endif
  micro_portable<NB, NO>(P, b0, o0, k0, k1, first, last, acc);
}

template <int NB>
inline void micro_o(int no, const Projection& P, int64_t b0, int64_t o0, int64_t k0, int64_t k1, bool first, bool last,
                    float* acc) {
  switch (no) {
    case 4: return micro<NB, 4>(P, b0, o0, k0, k1, first, last, acc);
    case 3: return micro<NB, 3>(P, b0, o0, k0, k1, first, last, acc);
    case 2: return micro<NB, 2>(P, b0, o0, k0, k1, first, last, acc);
    default: return micro<NB, 1>(P, b0, o0, k0, k1, first, last, acc);
  }
}

// Outputs [o_begin, o_end) of every nonce. `acc` holds kTileB * (o_end - o_begin) * 8 floats.
inline void project_rows(const Projection& P, int64_t o_begin, int64_t o_end, float* acc) {
  for (int64_t b0 = 0; b0 < P.B; b0 += kTileB) {
    const int nb = static_cast<int>(std::min<int64_t>(kTileB, P.B - b0));
    for (int64_t k0 = 0; k0 < P.H; k0 += kTileK) {
      const int64_t k1 = std::min(P.H, k0 + kTileK);
      const bool first = k0 == 0, last = k1 == P.H;
      for (int64_t o0 = o_begin; o0 < o_end; o0 += kTileO) {
        const int no = static_cast<int>(std::min<int64_t>(kTileO, o_end - o0));
        float* a = acc + (o0 - o_begin) * kTileB * 8;
        switch (nb) {
          case 3: micro_o<3>(no, P, b0, o0, k0, k1, first, last, a); break;
          case 2: micro_o<2>(no, P, b0, o0, k0, k1, first, last, a); break;
          default: micro_o<1>(no, P, b0, o0, k0, k1, first, last, a); break;
        }
      }
    }
  }
}

}  // namespace poc
