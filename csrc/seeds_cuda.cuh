// SHA-256 seed derivation for CUDA threads (and, for testing, the host):
// torch-free, included by seeds_cuda.cu and tests/csrc/seeds_cuda_host.cu.
//
// The host compresses the full 64-byte blocks of the shared prefix
// f"{block_hash}_{public_key}_nonce" once (make_prefix) and passes that state,
// with the prefix bytes left over, by value; seed_of finishes one message (one
// or two blocks). Plain FIPS 180-4 SHA-256, the same digests as csrc/sha256.h.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace poc {
namespace cuda_seeds {

struct PrefixArg {
  uint32_t state[8];
  uint8_t rest[64];
  uint32_t rest_len;
  uint64_t total_len;
};

__host__ __device__ __forceinline__ uint32_t rotr32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

// One block; fully unrolled so that the round constants become immediates on the device.
__host__ __device__ inline void compress_block(uint32_t st[8], const uint8_t* blk) {
  const uint32_t K[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  uint32_t w[16];
#pragma unroll
  for (int t = 0; t < 16; ++t)
    w[t] = (uint32_t(blk[4 * t]) << 24) | (uint32_t(blk[4 * t + 1]) << 16) | (uint32_t(blk[4 * t + 2]) << 8) |
           uint32_t(blk[4 * t + 3]);
  uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6], h = st[7];
#pragma unroll
  for (int t = 0; t < 64; ++t) {
    if (t >= 16) {
      const uint32_t w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
      const uint32_t s0 = rotr32(w15, 7) ^ rotr32(w15, 18) ^ (w15 >> 3);
      const uint32_t s1 = rotr32(w2, 17) ^ rotr32(w2, 19) ^ (w2 >> 10);
      w[t & 15] += s0 + w[(t - 7) & 15] + s1;
    }
    const uint32_t t1 = h + (rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t & 15];
    const uint32_t t2 = (rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  st[0] += a;
  st[1] += b;
  st[2] += c;
  st[3] += d;
  st[4] += e;
  st[5] += f;
  st[6] += g;
  st[7] += h;
}

__host__ __device__ inline int put_digits(uint64_t v, uint8_t* out) {
  uint8_t tmp[20];
  int n = 0;
  do {
    tmp[n++] = uint8_t('0' + v % 10);
    v /= 10;
  } while (v);
  for (int i = 0; i < n; ++i) out[i] = tmp[n - 1 - i];
  return n;
}

// Seed m of a nonce, in the order input (when need_input), signs, r0, r1, ...
// Returns the seed; *which is 0 (input), 1 (signs) or 2 + r (reflection r).
__host__ __device__ inline uint32_t seed_of(const PrefixArg& p, uint64_t nonce, int64_t m, bool need_input,
                                            int64_t* which) {
  uint8_t buf[128];
  uint32_t n = p.rest_len;
  for (uint32_t i = 0; i < p.rest_len; ++i) buf[i] = p.rest[i];
  if (need_input && m == 0) {
    n += put_digits(nonce, buf + n);
    *which = 0;
  } else {
    m -= need_input ? 1 : 0;
    buf[n++] = '_';
    n += put_digits(nonce, buf + n);
    if (m == 0) {
      const char s[] = "_signs";
      for (int i = 0; i < 6; ++i) buf[n++] = s[i];
      *which = 1;
    } else {
      const char s[] = "_hidden_r";
      for (int i = 0; i < 9; ++i) buf[n++] = s[i];
      n += put_digits(uint64_t(m - 1), buf + n);
      *which = 1 + m;
    }
  }
  const uint64_t bits = (p.total_len + (n - p.rest_len)) * 8;
  const int nblocks = n + 9 <= 64 ? 1 : 2;
  const uint32_t end = 64u * nblocks;
  buf[n] = 0x80;
  for (uint32_t i = n + 1; i < end - 8; ++i) buf[i] = 0;
  for (int i = 0; i < 8; ++i) buf[end - 1 - i] = uint8_t(bits >> (8 * i));
  uint32_t st[8];
  for (int i = 0; i < 8; ++i) st[i] = p.state[i];
  compress_block(st, buf);
  if (nblocks == 2) compress_block(st, buf + 64);
  return st[0];
}

inline PrefixArg make_prefix(const std::string& block_hash, const std::string& public_key) {
  const std::string s = block_hash + "_" + public_key + "_nonce";
  PrefixArg p;
  const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                            0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::memcpy(p.state, init, sizeof(init));
  const size_t full = s.size() / 64;
  for (size_t i = 0; i < full; ++i) compress_block(p.state, reinterpret_cast<const uint8_t*>(s.data()) + 64 * i);
  p.rest_len = uint32_t(s.size() - 64 * full);
  std::memcpy(p.rest, s.data() + 64 * full, p.rest_len);
  p.total_len = s.size();
  return p;
}

}  // namespace cuda_seeds
}  // namespace poc
