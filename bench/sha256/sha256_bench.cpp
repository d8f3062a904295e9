// Seed derivation cost per nonce (all ten seeds: input, signs, 8 reflections)
// with each SHA-256 implementation: the portable C++ compression, the SHA-NI
// one of csrc/sha256.h, and OpenSSL's libcrypto (the low-level SHA256_* API,
// whose context is a plain struct copied per message, and the EVP API).
// Every variant continues the cached state of the shared prefix and hashes
// only the tails, and all must agree bit for bit.
//
// Build and run: `make bench-sha256` (see bench/README.md).
#define OPENSSL_SUPPRESS_DEPRECATED
#include <omp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "seeds.h"

namespace {

constexpr int kR = 8;
using Clock = std::chrono::steady_clock;

// The tails of one nonce, in the order input, signs, r0..r7, formatted into
// fixed buffers (no allocation, so the OpenSSL runs time hashing, not strings).
struct Tails {
  uint8_t buf[2 + kR][48];
  size_t len[2 + kR];
};

int tails_of(uint64_t nonce, Tails& t) {
  uint8_t d[20];
  const int nd = poc::sha256::format_u64(nonce, d);
  std::memcpy(t.buf[0], d, nd);
  t.len[0] = nd;
  t.buf[1][0] = '_';
  std::memcpy(t.buf[1] + 1, d, nd);
  std::memcpy(t.buf[1] + 1 + nd, "_signs", 6);
  t.len[1] = nd + 7;
  for (int r = 0; r < kR; ++r) {
    uint8_t* p = t.buf[2 + r];
    p[0] = '_';
    std::memcpy(p + 1, d, nd);
    std::memcpy(p + 1 + nd, "_hidden_r", 9);
    p[10 + nd] = uint8_t('0' + r);
    t.len[2 + r] = nd + 11;
  }
  return 2 + kR;
}

uint32_t be32(const unsigned char* d) { return poc::sha256::load_be32(d); }

void run_lowlevel(const std::string& prefix, const std::vector<int64_t>& nonces, uint32_t* out) {
  SHA256_CTX base;
  SHA256_Init(&base);
  SHA256_Update(&base, prefix.data(), prefix.size());
  Tails tails;
  unsigned char md[32];
  for (size_t b = 0; b < nonces.size(); ++b) {
    const int n = tails_of(nonces[b], tails);
    for (int i = 0; i < n; ++i) {
      SHA256_CTX c = base;
      SHA256_Update(&c, tails.buf[i], tails.len[i]);
      SHA256_Final(md, &c);
      out[b * n + i] = be32(md);
    }
  }
}

void run_evp(const std::string& prefix, const std::vector<int64_t>& nonces, uint32_t* out) {
  EVP_MD_CTX* base = EVP_MD_CTX_new();
  EVP_MD_CTX* c = EVP_MD_CTX_new();
  EVP_DigestInit_ex(base, EVP_sha256(), nullptr);
  EVP_DigestUpdate(base, prefix.data(), prefix.size());
  Tails tails;
  unsigned char md[32];
  unsigned int len = 0;
  for (size_t b = 0; b < nonces.size(); ++b) {
    const int n = tails_of(nonces[b], tails);
    for (int i = 0; i < n; ++i) {
      EVP_MD_CTX_copy_ex(c, base);
      EVP_DigestUpdate(c, tails.buf[i], tails.len[i]);
      EVP_DigestFinal_ex(c, md, &len);
      out[b * n + i] = be32(md);
    }
  }
  EVP_MD_CTX_free(c);
  EVP_MD_CTX_free(base);
}

void run_poc(const std::string& bh, const std::string& pk, const std::vector<int64_t>& nonces, uint32_t* out,
             poc::SeedsFn fn, int threads) {
  const poc::sha256::Prefix p = poc::nonce_prefix(bh, pk);
  const int64_t B = nonces.size();
  // Output layout [B, 10] to match the OpenSSL runs: input at 0, signs at 1, reflections at 2..9.
  std::vector<uint32_t> in(B), sg(B), rf(B * kR);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t c = 0; c < (B + 1023) / 1024; ++c) {
    const int64_t lo = c * 1024, hi = std::min(B, lo + 1024);
    poc::derive_seeds_range(p, nonces.data(), lo, hi, kR, in.data(), sg.data(), rf.data(), fn);
  }
  for (int64_t b = 0; b < B; ++b) {
    out[b * 10] = in[b];
    out[b * 10 + 1] = sg[b];
    for (int r = 0; r < kR; ++r) out[b * 10 + 2 + r] = rf[b * kR + r];
  }
}

template <class F>
double ns_per_nonce(F&& f, size_t nonces, int repeats) {
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    f();
    const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / nonces;
    best = ns < best ? ns : best;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t B = argc > 1 ? std::atoll(argv[1]) : 200000;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  // Prefix lengths 17 (short names), 137 (hex block hash and key) and 118 (a
  // prefix that leaves 54 bytes in its last block, so every tail spills into
  // a second block: the worst case).
  const std::pair<std::string, std::string> rounds[] = {
      {"block_alpha", "node_A"},
      {"0x" + std::string(64, 'a'), std::string(64, 'b')},
      {std::string(60, 'c'), std::string(51, 'd')},
  };
  std::vector<int64_t> nonces(B);
  for (int64_t i = 0; i < B; ++i) nonces[i] = (i * 2654435761ULL) % 4294967296ULL;
  const int threads = omp_get_max_threads();
  std::printf("seed derivation, ns per nonce (10 seeds), %lld nonces, best of %d\n", (long long)B, repeats);
  std::printf("SHA-NI available: %s, OpenMP threads: %d\n", poc::sha256::cpu_has_sha_ni() ? "yes" : "no", threads);
  std::printf("%-8s %-22s %10s %10s %10s %10s %12s\n", "prefix", "", "portable", "openssl", "evp", "sha-ni",
              "sha-ni omp");
  int status = 0;
  for (const auto& rd : rounds) {
    const std::string prefix = rd.first + "_" + rd.second + "_nonce";
    std::vector<uint32_t> ref(B * 10), got(B * 10);
    const double t_ll = ns_per_nonce([&] { run_lowlevel(prefix, nonces, ref.data()); }, B, repeats);
    const double t_evp = ns_per_nonce([&] { run_evp(prefix, nonces, got.data()); }, B, repeats);
    status |= got != ref;
    const double t_port = ns_per_nonce(
        [&] { run_poc(rd.first, rd.second, nonces, got.data(), &poc::sha256::seeds_portable, 1); }, B, repeats);
    status |= got != ref;
    double t_ni = 0, t_ni_omp = 0;
#if POC_SHA256_X86
    if (poc::sha256::cpu_has_sha_ni()) {
      t_ni = ns_per_nonce([&] { run_poc(rd.first, rd.second, nonces, got.data(), &poc::sha256::seeds_ni, 1); }, B,
                          repeats);
      status |= got != ref;
      t_ni_omp = ns_per_nonce(
          [&] { run_poc(rd.first, rd.second, nonces, got.data(), &poc::sha256::seeds_ni, threads); }, B, repeats);
      status |= got != ref;
    }
#endif
    std::printf("%-8zu %-22s %10.0f %10.0f %10.0f %10.0f %12.0f\n", prefix.size(), "", t_port, t_ll, t_evp, t_ni,
                t_ni_omp);
  }
  std::printf(status ? "MISMATCH between implementations\n" : "all implementations agree\n");
  return status;
}
