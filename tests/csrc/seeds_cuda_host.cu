// Runs the per-thread seed code of csrc/seeds_cuda.cuh on the host, so that it
// is checked against hashlib on machines without a GPU (tests/test_ext.py
// builds this with nvcc for sm_90, which also compiles the device code of the
// kernel below, never launched here). Usage: seeds_cuda_host BLOCK_HASH PUBLIC_KEY R NEED_INPUT < nonces
// prints, per nonce, its seeds in thread order (input, signs, r0, r1, ...).
#include <cstdio>
#include <cstdlib>

#include "seeds_cuda.cuh"

// The same per-thread code as a device function: compiled, not run.
__global__ void seed_of_on_the_device(poc::cuda_seeds::PrefixArg p, const uint64_t* nonces, uint32_t* out) {
  int64_t which;
  out[threadIdx.x] = poc::cuda_seeds::seed_of(p, nonces[threadIdx.x / 10], threadIdx.x % 10, true, &which);
}

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s BLOCK_HASH PUBLIC_KEY R NEED_INPUT < nonces\n", argv[0]);
    return 2;
  }
  const poc::cuda_seeds::PrefixArg p = poc::cuda_seeds::make_prefix(argv[1], argv[2]);
  const long long r = std::atoll(argv[3]);
  const bool need_input = std::atoi(argv[4]) != 0;
  const long long per_nonce = (need_input ? 1 : 0) + 1 + r;
  unsigned long long nonce;
  while (std::scanf("%llu", &nonce) == 1) {
    for (long long m = 0; m < per_nonce; ++m) {
      int64_t which;
      const uint32_t seed = poc::cuda_seeds::seed_of(p, nonce, m, need_input, &which);
      std::printf("%lld:%u%c", static_cast<long long>(which), seed, m + 1 == per_nonce ? '\n' : ' ');
    }
  }
  return 0;
}
