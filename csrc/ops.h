// Kernels behind the ops declared in torch_bindings.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <string>
#include <tuple>

namespace poc {

// SPEC §1 seeds of each nonce as uint32 tensors on nonces' device: input [B],
// signs [B] and reflections [B, R] (empty [0] / [0, R] when not wanted).
std::tuple<at::Tensor, at::Tensor, at::Tensor> derive_seeds_cpu(const std::string& block_hash,
                                                                const std::string& public_key, const at::Tensor& nonces,
                                                                int64_t num_reflections, bool need_input,
                                                                bool need_post);
#ifdef POC_KERNELS_WITH_CUDA
std::tuple<at::Tensor, at::Tensor, at::Tensor> derive_seeds_cuda(const std::string& block_hash,
                                                                 const std::string& public_key,
                                                                 const at::Tensor& nonces, int64_t num_reflections,
                                                                 bool need_input, bool need_post);
#endif

// Streams of SPEC §2-4 for S seeds, [S, n]: hashes (uint32), uniforms and signs (float32).
at::Tensor hash_stream_cpu(const at::Tensor& seeds, int64_t n);
at::Tensor uniform_stream_cpu(const at::Tensor& seeds, int64_t n);
at::Tensor sign_stream_cpu(const at::Tensor& seeds, int64_t n);

// out[s, :] = scale * N(seeds[s], n) for out of shape [S, n] (float32, float64,
// float16 or bfloat16; computed in float32 and cast once).
void normal_cpu_(at::Tensor& out, const at::Tensor& seeds, double scale);

// out[i] = N(seed, n)[start + i] for the contiguous 1-D out (float32, float64, float16 or bfloat16; computed
// in float32 and cast once): a slice of one stream, from the pairs it needs only.
void normal_slice_cpu_(at::Tensor& out, int64_t seed, int64_t n, int64_t start);
at::Tensor project_cpu(const at::Tensor& x, const at::Tensor& p);

// SPEC §5 distances, float32 [B].
at::Tensor compute_distances_cpu(const at::Tensor& last_hidden, const at::Tensor& weight, const at::Tensor& target,
                                 const c10::optional<at::Tensor>& sign_seeds, const at::Tensor& reflection_seeds);

// SPEC-ARTIFACTS §4 artifacts, float32 [B, k] with k = 1 + haar_seeds.size(1): last_hidden float32 [B, H],
// pick_seeds [B], haar_seeds [B, k - 1]; a row holding NaN or Inf gives a NaN row.
at::Tensor compute_artifacts_cpu(const at::Tensor& last_hidden, const at::Tensor& pick_seeds,
                                 const at::Tensor& haar_seeds);

// Turns the SIMD code paths off or on (they give the same bits); returns the previous setting.
bool set_simd_enabled(bool enabled);

}  // namespace poc
