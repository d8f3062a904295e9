// SHA-256 (FIPS 180-4) for seed derivation: the first 32-bit word of the
// digest of `prefix || tail`, with the compression state of the shared prefix
// computed once.
//
//   seed(s) = big-endian uint32 of SHA-256(s)[0:4] = final state word H0
//
// Two compression functions give identical results: a portable one and one
// using the x86 SHA extensions (SHA-NI), picked at run time from CPUID. The
// SHA-NI one hashes two independent messages in lock step, because a single
// message is latency bound (each sha256rnds2 waits for the previous one).
//
// Header-only and free of torch, so the CPU op, the CUDA seed kernel
// (seeds_cuda.cuh), its host test and the stand-alone benchmark in
// bench/sha256/ share it. The portable parts (compress_block, format_u64) are
// __host__ __device__ under nvcc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define POC_SHA256_X86 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define POC_SHA256_X86 0
#endif

// Full unrolling turns the round constants into immediates and keeps the
// rolling message schedule in registers, on the GPU and on the CPU.
#if defined(__CUDACC__)
#define POC_HOST_DEVICE __host__ __device__
#define POC_UNROLL _Pragma("unroll")
#define POC_GCC_UNROLL_16
#else
#define POC_HOST_DEVICE
#define POC_UNROLL _Pragma("GCC unroll 64")
#define POC_GCC_UNROLL_16 _Pragma("GCC unroll 16")
#endif

// The 64 round constants, written once: device code cannot read a host array,
// so compress_block expands them into a table of its own.
#define POC_SHA256_ROUND_CONSTANTS                                                                                \
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,     \
      0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, \
      0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, \
      0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, \
      0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, \
      0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, \
      0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, \
      0xc67178f2

namespace poc {
namespace sha256 {

constexpr uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

alignas(16) constexpr uint32_t kK[64] = {POC_SHA256_ROUND_CONSTANTS};

POC_HOST_DEVICE inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

POC_HOST_DEVICE inline uint32_t load_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// Portable compression of one 64-byte block into `state`, with a rolling
// 16-word message schedule.
POC_HOST_DEVICE inline void compress_block(uint32_t state[8], const uint8_t* blk) {
  const uint32_t K[64] = {POC_SHA256_ROUND_CONSTANTS};
  uint32_t w[16];
  POC_UNROLL
  for (int t = 0; t < 16; ++t) w[t] = load_be32(blk + 4 * t);
  uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
  uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
  POC_UNROLL
  for (int t = 0; t < 64; ++t) {
    if (t >= 16) {
      const uint32_t w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
      const uint32_t s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3);
      const uint32_t s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10);
      w[t & 15] += s0 + w[(t - 7) & 15] + s1;
    }
    const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t & 15];
    const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  state[0] += a;
  state[1] += b;
  state[2] += c;
  state[3] += d;
  state[4] += e;
  state[5] += f;
  state[6] += g;
  state[7] += h;
}

// Portable compression of `nblocks` 64-byte blocks into `state`.
inline void compress_portable(uint32_t state[8], const uint8_t* data, size_t nblocks) {
  for (size_t blk = 0; blk < nblocks; ++blk) compress_block(state, data + 64 * blk);
}

#if POC_SHA256_X86
#define POC_SHA_TARGET __attribute__((target("sha,sse4.1")))

// State in the register layout of the SHA instructions: (ABEF, CDGH).
struct NiState {
  __m128i abef, cdgh;
};

POC_SHA_TARGET inline NiState ni_load(const uint32_t s[8]) {
  __m128i tmp = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));       // DCBA
  __m128i efgh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 4));  // HGFE
  tmp = _mm_shuffle_epi32(tmp, 0xB1);                                       // CDAB
  efgh = _mm_shuffle_epi32(efgh, 0x1B);                                     // EFGH
  return {_mm_alignr_epi8(tmp, efgh, 8), _mm_blend_epi16(efgh, tmp, 0xF0)};
}

POC_SHA_TARGET inline void ni_store(const NiState& st, uint32_t s[8]) {
  __m128i tmp = _mm_shuffle_epi32(st.abef, 0x1B);   // FEBA
  __m128i cdgh = _mm_shuffle_epi32(st.cdgh, 0xB1);  // DCHG
  __m128i dcba = _mm_blend_epi16(tmp, cdgh, 0xF0);  // DCBA
  __m128i hgfe = _mm_alignr_epi8(cdgh, tmp, 8);     // HGFE
  _mm_storeu_si128(reinterpret_cast<__m128i*>(s), dcba);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(s + 4), hgfe);
}

// One block into each of `n` (1 or 2) independent states, interleaved.
template <int n>
POC_SHA_TARGET inline void ni_block(NiState* st, const uint8_t* const* data) {
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i w[n][4];
  NiState save[n];
  for (int i = 0; i < n; ++i) save[i] = st[i];
  POC_GCC_UNROLL_16
  for (int g = 0; g < 16; ++g) {
    const __m128i k = _mm_load_si128(reinterpret_cast<const __m128i*>(kK + 4 * g));
    for (int i = 0; i < n; ++i) {
      __m128i m;
      if (g < 4) {
        m = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data[i] + 16 * g)), bswap);
      } else {
        // W[t] = sigma1(W[t-2]) + W[t-7] + sigma0(W[t-15]) + W[t-16], four words at a time.
        __m128i t = _mm_sha256msg1_epu32(w[i][g & 3], w[i][(g + 1) & 3]);
        t = _mm_add_epi32(t, _mm_alignr_epi8(w[i][(g + 3) & 3], w[i][(g + 2) & 3], 4));
        m = _mm_sha256msg2_epu32(t, w[i][(g + 3) & 3]);
      }
      w[i][g & 3] = m;
      __m128i mk = _mm_add_epi32(m, k);
      st[i].cdgh = _mm_sha256rnds2_epu32(st[i].cdgh, st[i].abef, mk);
      mk = _mm_shuffle_epi32(mk, 0x0E);
      st[i].abef = _mm_sha256rnds2_epu32(st[i].abef, st[i].cdgh, mk);
    }
  }
  for (int i = 0; i < n; ++i) {
    st[i].abef = _mm_add_epi32(st[i].abef, save[i].abef);
    st[i].cdgh = _mm_add_epi32(st[i].cdgh, save[i].cdgh);
  }
}

POC_SHA_TARGET inline void compress_ni(uint32_t state[8], const uint8_t* data, size_t nblocks) {
  NiState st = ni_load(state);
  for (size_t b = 0; b < nblocks; ++b) {
    const uint8_t* p = data + 64 * b;
    ni_block<1>(&st, &p);
  }
  ni_store(st, state);
}

inline bool cpu_has_sha_ni() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool sha = (b >> 29) & 1;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool ssse3 = (c >> 9) & 1, sse41 = (c >> 19) & 1;
  return sha && ssse3 && sse41;
}
#else
inline bool cpu_has_sha_ni() { return false; }
#endif

// The compression state after the full 64-byte blocks of a prefix, plus the
// bytes that did not fill a block.
struct Prefix {
  uint32_t state[8];
  uint8_t rest[64];
  uint32_t rest_len;   // < 64
  uint64_t total_len;  // bytes of the whole prefix
};

inline Prefix make_prefix(const uint8_t* data, size_t len) {
  Prefix p;
  std::memcpy(p.state, kInit, sizeof(kInit));
  const size_t full = len / 64;
  compress_portable(p.state, data, full);
  p.rest_len = static_cast<uint32_t>(len - 64 * full);
  std::memcpy(p.rest, data + 64 * full, p.rest_len);
  p.total_len = len;
  return p;
}

// The message blocks that finish `prefix || tail`: at most 2 blocks for tails
// of up to 55 bytes (the longest seed tail is 40). Returns the block count.
struct Final {
  alignas(16) uint8_t buf[128];
  int nblocks;
};

inline int finish(const Prefix& p, const uint8_t* tail, size_t tail_len, Final& f) {
  const size_t n = p.rest_len + tail_len;
  std::memcpy(f.buf, p.rest, p.rest_len);
  std::memcpy(f.buf + p.rest_len, tail, tail_len);
  f.nblocks = n + 9 <= 64 ? 1 : 2;
  const size_t end = 64 * size_t(f.nblocks);
  f.buf[n] = 0x80;
  std::memset(f.buf + n + 1, 0, end - 8 - n - 1);
  const uint64_t bits = (p.total_len + tail_len) * 8;
  for (int i = 0; i < 8; ++i) f.buf[end - 1 - i] = uint8_t(bits >> (8 * i));
  return f.nblocks;
}

constexpr size_t kMaxTail = 55;

// Seeds of `count` finished messages, all continuing `p`.
inline void seeds_portable(const Prefix& p, const Final* f, int count, uint32_t* out) {
  for (int i = 0; i < count; ++i) {
    uint32_t s[8];
    std::memcpy(s, p.state, sizeof(s));
    compress_portable(s, f[i].buf, f[i].nblocks);
    out[i] = s[0];
  }
}

#if POC_SHA256_X86
POC_SHA_TARGET inline void seeds_ni(const Prefix& p, const Final* f, int count, uint32_t* out) {
  const NiState start = ni_load(p.state);
  int i = 0;
  for (; i + 1 < count; i += 2) {
    NiState st[2] = {start, start};
    const uint8_t* d[2] = {f[i].buf, f[i + 1].buf};
    ni_block<2>(st, d);
    if (f[i].nblocks == 2 && f[i + 1].nblocks == 2) {
      const uint8_t* d2[2] = {f[i].buf + 64, f[i + 1].buf + 64};
      ni_block<2>(st, d2);
    } else if (f[i].nblocks == 2) {
      const uint8_t* d2 = f[i].buf + 64;
      ni_block<1>(&st[0], &d2);
    } else if (f[i + 1].nblocks == 2) {
      const uint8_t* d2 = f[i + 1].buf + 64;
      ni_block<1>(&st[1], &d2);
    }
    uint32_t s0[8], s1[8];
    ni_store(st[0], s0);
    ni_store(st[1], s1);
    out[i] = s0[0];
    out[i + 1] = s1[0];
  }
  if (i < count) {
    uint32_t s[8];
    std::memcpy(s, p.state, sizeof(s));
    compress_ni(s, f[i].buf, f[i].nblocks);
    out[i] = s[0];
  }
}
#endif

// Decimal digits of v (no sign, no leading zeros); returns the length.
POC_HOST_DEVICE inline int format_u64(uint64_t v, uint8_t* out) {
  uint8_t tmp[20];
  int n = 0;
  do {
    tmp[n++] = uint8_t('0' + v % 10);
    v /= 10;
  } while (v);
  for (int i = 0; i < n; ++i) out[i] = tmp[n - 1 - i];
  return n;
}

}  // namespace sha256
}  // namespace poc
