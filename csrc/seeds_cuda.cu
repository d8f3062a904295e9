// SPEC §1 seeds on the GPU: one thread per (nonce, seed string), so a GPU
// pipeline derives its seeds with no host work per nonce.
//
//   input        seed(f"{block_hash}_{public_key}_nonce{nonce}")
//   signs        seed(f"{block_hash}_{public_key}_nonce_{nonce}_signs")
//   reflection r seed(f"{block_hash}_{public_key}_nonce_{nonce}_hidden_r{r}")
//
// The per-thread work (seed_of) lives in seeds_cuda.cuh, torch-free, so a host
// build of it is tested against hashlib on machines without a GPU.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <cstring>

#include "ops.h"
#include "seeds_cuda.cuh"

namespace poc {
namespace {

// Thread (b, m): seed m of nonce b (see seed_of).
__global__ void derive_seeds_kernel(cuda_seeds::PrefixArg p, const int64_t* __restrict__ nonces, int64_t total,
                                    int64_t per_nonce, int64_t num_reflections, bool need_input,
                                    uint32_t* __restrict__ input, uint32_t* __restrict__ signs,
                                    uint32_t* __restrict__ refl) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int64_t b = idx / per_nonce;
  int64_t which;
  const uint32_t seed = cuda_seeds::seed_of(p, uint64_t(nonces[b]), idx % per_nonce, need_input, &which);
  if (which == 0)
    input[b] = seed;
  else if (which == 1)
    signs[b] = seed;
  else
    refl[b * num_reflections + (which - 2)] = seed;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> derive_seeds_cuda(const std::string& block_hash,
                                                                 const std::string& public_key,
                                                                 const at::Tensor& nonces, int64_t num_reflections,
                                                                 bool need_input, bool need_post) {
  TORCH_CHECK(nonces.is_cuda(), "nonces must be a CUDA tensor here, got a tensor on ", nonces.device());
  TORCH_CHECK(nonces.dim() == 1, "nonces must be a 1-D integer tensor, got shape ", nonces.sizes());
  TORCH_CHECK(at::isIntegralType(nonces.scalar_type(), false), "nonces must be an integer tensor, got dtype ",
              nonces.scalar_type());
  TORCH_CHECK(num_reflections >= 0, "num_reflections must be >= 0, got ", num_reflections);
  const c10::cuda::CUDAGuard guard(nonces.device());
  const at::Tensor n64 = nonces.to(at::kLong).contiguous();
  const int64_t B = n64.size(0);
  if (B > 0) {
    // One synchronizing check keeps out-of-range nonces from hashing as something else.
    const int64_t lo = n64.min().item<int64_t>(), hi = n64.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi <= 0xffffffffLL, "nonces must lie in [0, 2**32), got ", lo < 0 ? lo : hi);
  }
  const auto opts = n64.options().dtype(at::kUInt32);
  at::Tensor input = at::empty({need_input ? B : 0}, opts);
  at::Tensor signs = at::empty({need_post ? B : 0}, opts);
  at::Tensor refl = at::empty({need_post ? B : 0, num_reflections}, opts);
  const int64_t per_nonce = (need_input ? 1 : 0) + (need_post ? 1 + num_reflections : 0);
  const int64_t total = B * per_nonce;
  if (total == 0) return {input, signs, refl};
  const cuda_seeds::PrefixArg p = cuda_seeds::make_prefix(block_hash, public_key);
  constexpr int kThreads = 256;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  derive_seeds_kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      p, n64.data_ptr<int64_t>(), total, per_nonce, num_reflections, need_input,
      need_input ? static_cast<uint32_t*>(input.data_ptr()) : nullptr,
      need_post ? static_cast<uint32_t*>(signs.data_ptr()) : nullptr,
      need_post && num_reflections > 0 ? static_cast<uint32_t*>(refl.data_ptr()) : nullptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {input, signs, refl};
}

}  // namespace poc
