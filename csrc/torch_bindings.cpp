// Every op of poc_kernels._C, declared once with its schema. They appear as
// torch.ops.poc_kernels.<name>; poc_kernels/_custom_ops.py wraps each in a
// one-line Python function and registers its fake (meta) kernel.
#include <Python.h>
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(poc_kernels, m) {
  // SPEC §1: (input [B], signs [B], reflections [B, R]) as uint32 on nonces' device.
  m.def(
      "derive_seeds(str block_hash, str public_key, Tensor nonces, int num_reflections=8, bool need_input=True, "
      "bool need_post=True) -> (Tensor, Tensor, Tensor)");
  m.impl("derive_seeds", c10::DeviceType::CPU, &poc::derive_seeds_cpu);
#ifdef POC_KERNELS_WITH_CUDA
  m.impl("derive_seeds", c10::DeviceType::CUDA, &poc::derive_seeds_cuda);
#endif

  // SPEC §2-4 streams of S seeds, [S, n].
  m.def("hash_stream(Tensor seeds, int n) -> Tensor");
  m.impl("hash_stream", c10::DeviceType::CPU, &poc::hash_stream_cpu);
  m.def("uniform_stream(Tensor seeds, int n) -> Tensor");
  m.impl("uniform_stream", c10::DeviceType::CPU, &poc::uniform_stream_cpu);
  m.def("sign_stream(Tensor seeds, int n) -> Tensor");
  m.impl("sign_stream", c10::DeviceType::CPU, &poc::sign_stream_cpu);
  m.def("normal_(Tensor(a!) out, Tensor seeds, float scale=1.0) -> ()");
  m.impl("normal_", c10::DeviceType::CPU, &poc::normal_cpu_);
  m.def("normal_slice_(Tensor(a!) out, int seed, int n, int start) -> ()");
  m.impl("normal_slice_", c10::DeviceType::CPU, &poc::normal_slice_cpu_);

  // SPEC §10: x + x @ p, float32 [..., H], in vectors.tree_sum's fixed order (the same bits as vectors.project).
  m.def("project(Tensor x, Tensor p) -> Tensor");
  m.impl("project", c10::DeviceType::CPU, &poc::project_cpu);

  // SPEC §5: float32 [B].
  m.def(
      "compute_distances(Tensor last_hidden, Tensor weight, Tensor target, Tensor? sign_seeds, "
      "Tensor reflection_seeds) -> Tensor");
  m.impl("compute_distances", c10::DeviceType::CPU, &poc::compute_distances_cpu);

  // SPEC-ARTIFACTS §4: float32 [B, k], k = 1 + haar_seeds.size(1).
  m.def("compute_artifacts(Tensor last_hidden, Tensor pick_seeds, Tensor haar_seeds) -> Tensor");
  m.impl("compute_artifacts", c10::DeviceType::CPU, &poc::compute_artifacts_cpu);

  // Build facts and a switch for the tests: the SIMD and portable CPU paths give the same bits.
  m.def("built_with_cuda() -> bool", []() -> bool {
#ifdef POC_KERNELS_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
  m.def("_set_simd_enabled(bool enabled) -> bool", &poc::set_simd_enabled);
}

// A Python module with no functions: importing poc_kernels._C loads the
// library above.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, 0, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module);
}
