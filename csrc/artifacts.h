// The artifact of one nonce (SPEC-ARTIFACTS §4-5) on the CPU, torch-free:
//
//   h   = h / (||h|| + 1e-8)
//   idx = the k smallest of hash(i, seed_pick), i < H, in the canonical order
//   x   = h[idx];  x = x - 2 (x·u_j) u_j for j < k-1, u_j = N(seed_j, k) / (||N|| + 1e-30)
//   y   = x / (||x|| + 1e-8)
//
// The canonical order (SPEC-ARTIFACTS §5) is computed directly, never taken
// from a sort's or a selection's own order: the indices whose hash is strictly
// below the k-th smallest hash, ascending, then those equal to it, ascending,
// until k are taken. Everything after the float32 streams is evaluated in
// float64 with the fixed-order sums of distance.h and rounded to float32 once,
// so each row's artifact depends on that row alone.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "distance.h"
#include "streams.h"

namespace poc {

constexpr double kArtifactEps = 1e-8;  // the two normalizations
constexpr double kHaarEps = 1e-30;     // the Haar vectors'

// The picked indices of one nonce into idx[0:k]; scores and tmp hold H values each.
inline void pick_canonical(uint32_t seed, int64_t H, int64_t k, uint32_t* scores, uint32_t* tmp, int64_t* idx) {
  hash_range(seed, 0, H, scores);
  std::copy(scores, scores + H, tmp);
  std::nth_element(tmp, tmp + (k - 1), tmp + H);
  const uint32_t kth = tmp[k - 1];
  int64_t m = 0;
  for (int64_t i = 0; i < H && m < k; ++i)
    if (scores[i] < kth) idx[m++] = i;
  for (int64_t i = 0; i < H && m < k; ++i)
    if (scores[i] == kth) idx[m++] = i;
}

// Scratch of one thread: H uint32 twice, and k of each of the rest.
struct ArtifactScratch {
  uint32_t* scores;
  uint32_t* tmp;
  int64_t* idx;
  double* x;
  float* u;
  double* ud;
};

// Writes the artifact of one nonce to out[0:k]; returns false when h holds NaN or Inf (the artifact is then NaN).
inline bool artifact_row(const float* h, int64_t H, int64_t k, uint32_t pick_seed, const uint32_t* haar_seeds,
                         float* out, ArtifactScratch s) {
  bool finite = true;
  for (int64_t i = 0; i < H; ++i) finite &= std::isfinite(h[i]);
  const double inv = 1.0 / (std::sqrt(dot_ff(h, h, H)) + kArtifactEps);
  pick_canonical(pick_seed, H, k, s.scores, s.tmp, s.idx);
  for (int64_t j = 0; j < k; ++j) s.x[j] = static_cast<double>(h[s.idx[j]]) * inv;
  for (int64_t r = 0; r + 1 < k; ++r) {
    normal_stream(haar_seeds[r], k, 1.0f, s.u);
    const double un = std::sqrt(dot_ff(s.u, s.u, k)) + kHaarEps;
    for (int64_t j = 0; j < k; ++j) s.ud[j] = static_cast<double>(s.u[j]) / un;
    const double two_dot = 2.0 * dot_dd(s.x, s.ud, k);
    for (int64_t j = 0; j < k; ++j) s.x[j] -= two_dot * s.ud[j];
  }
  const double nx = std::sqrt(dot_dd(s.x, s.x, k)) + kArtifactEps;
  for (int64_t j = 0; j < k; ++j) out[j] = static_cast<float>(s.x[j] / nx);
  return finite;
}

}  // namespace poc
