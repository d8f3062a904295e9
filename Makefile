# Two commands, each doing its own set-up on a fresh machine:
#   make run    the main job (distances of random hidden states vs the analytic law)
#   make test   the test suite
# plus `make bench` (throughput benchmarks, see bench/README.md) and
# `make bench-sha256` (SHA-256 implementations for the seed derivation).
#
# The install step builds the C++/CUDA extension of csrc/ (poc_kernels._C) and
# fails if that build fails (POC_KERNELS_REQUIRE_EXT=1); `make test
# POC_KERNELS_NO_EXT=1` installs and tests without it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0: the CPU build where the machine provides it (a local +cpu wheel),
# otherwise what pip resolves. Override e.g. TORCH_SPEC='torch==2.13.0' PIP_TORCH_ARGS='--index-url https://download.pytorch.org/whl/cpu'.
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
STAMP := $(VENV)/.installed
POC_KERNELS_REQUIRE_EXT ?= 1
export POC_KERNELS_REQUIRE_EXT
CSRC := $(wildcard csrc/*.cpp csrc/*.cu csrc/*.h)

.PHONY: run test bench bench-sha256 clean

$(STAMP): pyproject.toml setup.py $(CSRC)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q setuptools wheel ninja
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) python/distance_distribution.py

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m pytest bench -p no:cacheprovider --benchmark-columns=median,iqr,rounds $(BENCH_ARGS)

# Seed derivation per nonce with each SHA-256 implementation (needs OpenSSL's headers and libcrypto).
build/sha256_bench: bench/sha256/sha256_bench.cpp csrc/sha256.h csrc/seeds.h
	mkdir -p build
	$(CXX) -O3 -std=c++17 -Wall -fopenmp -Icsrc $< -o $@ -lcrypto

bench-sha256: build/sha256_bench
	./build/sha256_bench $(SHA_BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks poc_kernels/_C*.so
