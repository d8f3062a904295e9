"""Build script: the package, plus the optional C++/CUDA extension ``poc_kernels._C`` from ``csrc/``.

The extension is built with ``torch.utils.cpp_extension`` (ninja when available).
It is optional: the package installs and imports without it, and falls back to
the other backends.

Environment switches:

- ``POC_KERNELS_NO_EXT=1``: do not build the extension (at import, the same
  variable makes an already built one be ignored).
- ``POC_KERNELS_REQUIRE_EXT=1``: a failed extension build fails the install
  (``make`` sets it) instead of being reported and skipped.
- ``POC_KERNELS_NO_CUDA=1``: leave out the CUDA sources even when torch has CUDA.
- ``POC_KERNELS_PORTABLE=1``: no ``-mavx2 -mfma -mf16c`` (the build otherwise
  adds them on an x86-64 machine whose CPU has them). Both builds compute the
  same bits; the SIMD one is faster.
"""

import os
import platform
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _note(msg: str) -> None:
    print(f"poc_kernels setup: {msg}", file=sys.stderr)


def _cpu_has(*flags: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return all(fl in have for fl in flags)
    except OSError:
        pass
    return False


def _extensions():
    """Return ``(ext_modules, cmdclass)``; both empty when the extension is not to be built."""
    if _flag("POC_KERNELS_NO_EXT"):
        _note("POC_KERNELS_NO_EXT is set: building without the C++/CUDA extension")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as exc:  # e.g. an isolated build environment without torch
        _note(f"torch is not importable ({exc}); building without the C++/CUDA extension")
        return [], {}

    sources = [str(p.relative_to(ROOT)) for p in sorted(CSRC.glob("*.cpp"))]
    cxx = ["-O3", "-ffp-contract=off", "-fopenmp", "-Wall", "-Wno-unknown-pragmas"]
    x86 = platform.machine() in ("x86_64", "AMD64")
    if x86 and _cpu_has("avx2", "fma", "f16c") and not _flag("POC_KERNELS_PORTABLE"):
        cxx += ["-mavx2", "-mfma", "-mf16c"]
    define_macros = []
    use_cuda = (
        torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None and not _flag("POC_KERNELS_NO_CUDA")
    )
    kwargs = {}
    if use_cuda:
        sources += [str(p.relative_to(ROOT)) for p in sorted(CSRC.glob("*.cu"))]
        define_macros.append(("POC_KERNELS_WITH_CUDA", None))
        kwargs["extra_compile_args"] = {"cxx": cxx, "nvcc": ["-O3"]}
        make = cpp_extension.CUDAExtension
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx}
        make = cpp_extension.CppExtension
    ext = make(
        "poc_kernels._C",
        sources,
        include_dirs=[str(CSRC)],
        define_macros=define_macros,
        extra_link_args=["-fopenmp"],
        **kwargs,
    )
    _note(f"building poc_kernels._C ({'CPU + CUDA' if use_cuda else 'CPU'}), flags {' '.join(cxx)}")

    class OptionalBuildExtension(cpp_extension.BuildExtension):
        """A failed build (no compiler, ...) is reported, not fatal, unless POC_KERNELS_REQUIRE_EXT=1."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any compiler or toolchain failure
                if _flag("POC_KERNELS_REQUIRE_EXT"):
                    raise
                _note(f"building the extension failed ({exc}); installing without it")

    return [ext], {"build_ext": OptionalBuildExtension}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
