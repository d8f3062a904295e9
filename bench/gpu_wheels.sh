#!/usr/bin/env bash
# Downloads, on a machine with a package registry, the wheels of bench/gpu-wheels.txt for the GPU machine
# (CPython 3.12, x86-64 Linux) into DIR (default .whl/, git-ignored); `make gpu-check` installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
mkdir -p "$dest"
grep -v '^#' bench/gpu-wheels.txt | xargs python3 -m pip download -q --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest"
ls -1 "$dest"
