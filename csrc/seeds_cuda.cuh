// SHA-256 seed derivation for CUDA threads (and, for testing, the host):
// torch-free, included by seeds_cuda.cu and tests/csrc/seeds_cuda_host.cu.
//
// The host compresses the full 64-byte blocks of the shared prefix
// f"{block_hash}_{public_key}_nonce" once (make_prefix) and passes that state,
// with the prefix bytes left over, by value; seed_of finishes one message (one
// or two blocks), with the portable compression and digit printing of
// csrc/sha256.h, which are __host__ __device__ under nvcc.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "sha256.h"

namespace poc {
namespace cuda_seeds {

// The prefix state, passed to the kernel by value (a plain struct).
using PrefixArg = sha256::Prefix;

// Seed m of a nonce, in the order input (when need_input), signs, r0, r1, ...
// Returns the seed; *which is 0 (input), 1 (signs) or 2 + r (reflection r).
__host__ __device__ inline uint32_t seed_of(const PrefixArg& p, uint64_t nonce, int64_t m, bool need_input,
                                            int64_t* which) {
  uint8_t buf[128];
  uint32_t n = p.rest_len;
  for (uint32_t i = 0; i < p.rest_len; ++i) buf[i] = p.rest[i];
  if (need_input && m == 0) {
    n += sha256::format_u64(nonce, buf + n);
    *which = 0;
  } else {
    m -= need_input ? 1 : 0;
    buf[n++] = '_';
    n += sha256::format_u64(nonce, buf + n);
    if (m == 0) {
      const char s[] = "_signs";
      for (int i = 0; i < 6; ++i) buf[n++] = s[i];
      *which = 1;
    } else {
      const char s[] = "_hidden_r";
      for (int i = 0; i < 9; ++i) buf[n++] = s[i];
      n += sha256::format_u64(uint64_t(m - 1), buf + n);
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
  sha256::compress_block(st, buf);
  if (nblocks == 2) sha256::compress_block(st, buf + 64);
  return st[0];
}

inline PrefixArg make_prefix(const std::string& block_hash, const std::string& public_key) {
  const std::string s = block_hash + "_" + public_key + "_nonce";
  return sha256::make_prefix(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace cuda_seeds
}  // namespace poc
