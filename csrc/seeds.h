// Per-nonce seeds of SPEC §1, bit-exact with hashlib:
//
//   input        seed(f"{block_hash}_{public_key}_nonce{nonce}")
//   signs        seed(f"{block_hash}_{public_key}_nonce_{nonce}_signs")
//   reflection r seed(f"{block_hash}_{public_key}_nonce_{nonce}_hidden_r{r}")
//
// Every string starts with the prefix f"{block_hash}_{public_key}_nonce", whose
// SHA-256 state is computed once; each seed then costs the one or two blocks
// of its tail. Torch-free: shared by the CPU op, the CUDA host code and
// bench/sha256/.
#pragma once

#include <cstdint>
#include <string>

#include "sha256.h"

namespace poc {

using SeedsFn = void (*)(const sha256::Prefix&, const sha256::Final*, int, uint32_t*);

inline sha256::Prefix nonce_prefix(const std::string& block_hash, const std::string& public_key) {
  const std::string s = block_hash + "_" + public_key + "_nonce";
  return sha256::make_prefix(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// The fastest compression this CPU has (both give identical results).
inline SeedsFn best_seeds_fn() {
#if POC_SHA256_X86
  static const bool ni = sha256::cpu_has_sha_ni();
  if (ni) return &sha256::seeds_ni;
#endif
  return &sha256::seeds_portable;
}

// Seeds of nonces [begin, end). Outputs may be null when not wanted;
// `reflections` is [B, num_reflections] row-major.
inline void derive_seeds_range(const sha256::Prefix& prefix, const int64_t* nonces, int64_t begin, int64_t end,
                               int64_t num_reflections, uint32_t* input, uint32_t* signs, uint32_t* reflections,
                               SeedsFn fn) {
  constexpr int kBatch = 10;
  static const uint8_t kSigns[] = {'_', 's', 'i', 'g', 'n', 's'};
  static const uint8_t kHidden[] = {'_', 'h', 'i', 'd', 'd', 'e', 'n', '_', 'r'};
  sha256::Final msgs[kBatch];
  uint32_t out[kBatch];
  uint32_t* dest[kBatch];
  for (int64_t b = begin; b < end; ++b) {
    uint8_t tail[sha256::kMaxTail];
    uint8_t digits[20];
    const int nd = sha256::format_u64(static_cast<uint64_t>(nonces[b]), digits);
    int count = 0;
    auto flush = [&]() {
      fn(prefix, msgs, count, out);
      for (int i = 0; i < count; ++i) *dest[i] = out[i];
      count = 0;
    };
    if (input) {
      sha256::finish(prefix, digits, nd, msgs[count]);
      dest[count++] = input + b;
    }
    if (signs || (reflections && num_reflections > 0)) {
      // "_{nonce}" is shared by the sign and reflection tails.
      tail[0] = '_';
      std::memcpy(tail + 1, digits, nd);
      const int head = 1 + nd;
      if (signs) {
        std::memcpy(tail + head, kSigns, sizeof(kSigns));
        sha256::finish(prefix, tail, head + sizeof(kSigns), msgs[count]);
        dest[count++] = signs + b;
      }
      if (reflections) {
        std::memcpy(tail + head, kHidden, sizeof(kHidden));
        const int base = head + sizeof(kHidden);
        for (int64_t r = 0; r < num_reflections; ++r) {
          if (count == kBatch) flush();
          const int nr = sha256::format_u64(static_cast<uint64_t>(r), tail + base);
          sha256::finish(prefix, tail, base + nr, msgs[count]);
          dest[count++] = reflections + b * num_reflections + r;
        }
      }
    }
    if (count) flush();
  }
}

}  // namespace poc
