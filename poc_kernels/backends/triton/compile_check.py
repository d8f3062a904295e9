"""Compile every shipped kernel configuration for real NVIDIA GPUs, without a GPU.

Runs Triton's NVIDIA backend and ptxas for each kernel variant the launchers
can use (``configs.GPU_CONFIGS`` x input/output dtypes x flags) and each
requested architecture, and reports registers, spills, stack and shared memory
from the ptxas log and ``cuobjdump -res-usage`` of the cubin.

    python -m poc_kernels.backends.triton.compile_check --arch 80 90 [--json]

Exits with status 1 when a variant spills or fails to compile. Must run with
``TRITON_INTERPRET`` unset: the interpreter replaces ``@triton.jit`` functions.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Optional

from ...constants import ARTIFACT_K, NUM_REFLECTIONS, STRONGER_SEGMENTS
from .configs import GPU_CONFIGS, Config, interpreter_enabled
from .projection import tree_shape

DTYPES = {"fp32": "*fp32", "fp16": "*fp16", "bf16": "*bf16"}
# seeds derived on the host arrive as int64, seeds derived on a GPU (the extension's CUDA op) as uint32
SEED_TYPES = ("*i64", "*u32")


@dataclass
class Variant:
    kernel: str
    config: str
    label: str
    signature: dict[str, str]
    constexprs: dict[str, object]
    options: dict[str, object]


@dataclass
class Report:
    kernel: str
    config: str
    label: str
    arch: int
    ok: bool
    registers: Optional[int] = None
    spill_stores: Optional[int] = None
    spill_loads: Optional[int] = None
    stack: Optional[int] = None
    shared: Optional[int] = None
    error: Optional[str] = None
    extra: dict[str, object] = field(default_factory=dict)


def shipped_variants(cfg: Config) -> list[Variant]:
    """Return every kernel variant the launchers compile under ``cfg``."""
    out: list[Variant] = []
    for (dname, ptr), seeds, use_signs in itertools.product(DTYPES.items(), SEED_TYPES, (True, False)):
        out.append(
            Variant(
                "_prep_kernel",
                cfg.name,
                f"h={dname} seeds={seeds[1:]} signs={use_signs} R={NUM_REFLECTIONS} block_p={cfg.prep_block_p}",
                {
                    "h_ptr": ptr,
                    "stride_hb": "i32",
                    "stride_hh": "i32",
                    "sign_seed_ptr": seeds,
                    "refl_seed_ptr": seeds,
                    "x_ptr": "*fp32",
                    "B": "i32",
                    "H": "i32",
                    "P": "i32",
                    "USE_SIGNS": "constexpr",
                    "NUM_R": "constexpr",
                    "ROWS": "constexpr",
                    "BLOCK_P": "constexpr",
                },
                {"USE_SIGNS": use_signs, "NUM_R": NUM_REFLECTIONS, "ROWS": cfg.prep_rows, "BLOCK_P": cfg.prep_block_p},
                {"num_warps": cfg.prep_warps, "enable_fp_fusion": True},
            )
        )
    for cached in (False, True):
        for paired in (True, False):
            out.append(
                Variant(
                    "_project_kernel",
                    cfg.name,
                    f"{'cached' if cached else 'on_the_fly'} {'paired' if paired else 'odd-D'} "
                    f"{cfg.block_b}x{cfg.block_n}x{cfg.block_k} {cfg.precision}",
                    {
                        "x_ptr": "*fp32",
                        "w_ptr": "*fp32",
                        "t_ptr": "*fp32",
                        "part_ptr": "*fp32",
                        "seed_ptr": "*i64",
                        "B": "i32",
                        "H": "i32",
                        "D": "i32",
                        "HALF": "i32",
                        "P": "i32",
                        "CACHED": "constexpr",
                        "PAIRED": "constexpr",
                        "BLOCK_B": "constexpr",
                        "BLOCK_N": "constexpr",
                        "BLOCK_K": "constexpr",
                        "PRECISION": "constexpr",
                        "BROADCAST_DOT": "constexpr",
                    },
                    {
                        "CACHED": cached,
                        "PAIRED": paired,
                        "BLOCK_B": cfg.block_b,
                        "BLOCK_N": cfg.block_n,
                        "BLOCK_K": cfg.block_k,
                        "PRECISION": cfg.precision,
                        "BROADCAST_DOT": cfg.broadcast_dot,
                    },
                    {"num_warps": cfg.proj_warps, "num_stages": cfg.proj_stages, "enable_fp_fusion": True},
                )
            )
    out.append(
        Variant(
            "_finalize_kernel",
            cfg.name,
            f"block={cfg.finalize_block}",
            {"part_ptr": "*fp32", "out_ptr": "*fp32", "B": "i32", "T": "i32", "tt": "fp32", "BLOCK": "constexpr"},
            {"BLOCK": cfg.finalize_block},
            {"num_warps": 4, "enable_fp_fusion": True},
        )
    )
    for (dname, ptr), seeds, segments in itertools.product(DTYPES.items(), SEED_TYPES, (1, STRONGER_SEGMENTS)):
        out.append(
            Variant(
                "_normal_rows_kernel",
                cfg.name,
                f"out={dname} seeds={seeds[1:]} segments={segments} block={cfg.rows_block}",
                {
                    "seed_ptr": seeds,
                    "out_ptr": ptr,
                    "n": "i64",
                    "L": "i64",
                    "H": "i32",
                    "stride_b": "i64",
                    "stride_s": "i64",
                    "stride_h": "i64",
                    "scale": "fp32",
                    "SEGMENTS": "constexpr",
                    "BLOCK": "constexpr",
                },
                {"SEGMENTS": segments, "BLOCK": cfg.rows_block},
                {"num_warps": cfg.rows_warps, "enable_fp_fusion": True},
            )
        )
    for (dname, ptr), normalize in itertools.product(DTYPES.items(), (True, False)):
        out.append(
            Variant(
                "_layer_hook_kernel",
                cfg.name,
                f"x={dname} normalize={normalize} block={cfg.hook_block}",
                {
                    "x_ptr": ptr,
                    "v_ptr": ptr,
                    "H": "i32",
                    "stride_t": "i64",
                    "eps": "fp32",
                    "NORMALIZE": "constexpr",
                    "BLOCK_H": "constexpr",
                },
                {"NORMALIZE": normalize, "BLOCK_H": cfg.hook_block},
                {"num_warps": cfg.hook_warps, "enable_fp_fusion": False},
            )
        )
    for dname, ptr in DTYPES.items():
        out.append(
            Variant(
                "_token_inputs_kernel",
                cfg.name,
                f"out={dname} block={cfg.token_block}",
                {
                    "out_ptr": ptr,
                    "tok_req_ptr": "*i32",
                    "tok_pos_ptr": "*i32",
                    "seed_ptr": "*i64",
                    "seq_len_ptr": "*i32",
                    "segments_ptr": "*i32",
                    "R": "i32",
                    "G": "i32",
                    "H": "i32",
                    "stride_t": "i64",
                    "stride_r": "i32",
                    "BLOCK": "constexpr",
                },
                {"BLOCK": cfg.token_block},
                {"num_warps": cfg.token_warps, "enable_fp_fusion": True},
            )
        )
        out.append(
            Variant(
                "_token_layer_kernel",
                cfg.name,
                f"x={dname} block={cfg.hook_block}",
                {
                    "x_ptr": ptr,
                    "y_ptr": ptr,
                    "tok_req_ptr": "*i32",
                    "req_layer_ptr": "*i32",
                    "v_ptr": ptr,
                    "H": "i32",
                    "R": "i32",
                    "S": "i32",
                    "stride_x": "i64",
                    "stride_y": "i64",
                    "stride_v": "i64",
                    "eps": "fp32",
                    "BLOCK_H": "constexpr",
                },
                {"BLOCK_H": cfg.hook_block},
                {"num_warps": cfg.hook_warps, "enable_fp_fusion": False},
            )
        )
    for dname, ptr in DTYPES.items():
        out.append(
            Variant(
                "_artifact_kernel",
                cfg.name,
                f"h={dname} k={ARTIFACT_K} block={cfg.artifact_block}",
                {
                    "h_ptr": ptr,
                    "stride_hb": "i32",
                    "stride_hh": "i32",
                    "pick_seed_ptr": "*i64",
                    "haar_seed_ptr": "*i64",
                    "out_ptr": "*fp32",
                    "H": "i32",
                    "K": "constexpr",
                    "KPAD": "constexpr",
                    "BLOCK_H": "constexpr",
                },
                {"K": ARTIFACT_K, "KPAD": 16, "BLOCK_H": cfg.artifact_block},
                {"num_warps": cfg.artifact_warps, "enable_fp_fusion": False},
            )
        )
    # SPEC §10 for the hidden sizes of SmolLM2 (576), 8B (4096) and 70B (8192) models: NC residues x C leaves
    for hidden in (576, 4096, 8192):
        nc1, nc2, c = tree_shape(hidden, cfg.rp_chunk)
        shape = f"H={hidden} NC={nc1}x{nc2} C={c} block_j={cfg.rp_block_j}"
        constexprs = {"NC1": nc1, "NC2": nc2, "C": c, "BLOCK_J": cfg.rp_block_j}
        options = {"num_warps": cfg.rp_warps, "enable_fp_fusion": False}
        token_options = {"num_warps": cfg.rp_warps, "enable_fp_fusion": True}
        out.append(
            Variant(
                "_random_projection_kernel",
                cfg.name,
                shape,
                {
                    "x_ptr": "*fp32",
                    "p_ptr": "*fp32",
                    "out_ptr": "*fp32",
                    "H": "i32",
                    "stride_x": "i64",
                    "stride_o": "i64",
                    "NC1": "constexpr",
                    "NC2": "constexpr",
                    "C": "constexpr",
                    "BLOCK_J": "constexpr",
                },
                constexprs,
                options,
            )
        )
        for dname, ptr in DTYPES.items():
            out.append(
                Variant(
                    "_token_random_projection_kernel",
                    cfg.name,
                    f"out={dname} {shape}",
                    {
                        "out_ptr": ptr,
                        "tok_req_ptr": "*i32",
                        "tok_pos_ptr": "*i32",
                        "seed_ptr": "*i64",
                        "seq_len_ptr": "*i32",
                        "segments_ptr": "*i32",
                        "req_proj_ptr": "*i32",
                        "p_ptr": "*fp32",
                        "R": "i32",
                        "G": "i32",
                        "S": "i32",
                        "H": "i32",
                        "stride_t": "i64",
                        "stride_r": "i32",
                        "NC1": "constexpr",
                        "NC2": "constexpr",
                        "C": "constexpr",
                        "BLOCK_J": "constexpr",
                    },
                    constexprs,
                    token_options,
                )
            )
    return out


def _kernel(name: str):
    from . import artifacts, distances, inputs, layer_hook, projection

    for mod in (distances, artifacts, inputs, layer_hook, projection):
        if hasattr(mod, name):
            return getattr(mod, name)
    raise KeyError(name)


_PTXAS_RE = {
    "registers": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
}


def compile_variant(variant: Variant, arch: int) -> Report:
    """Compile ``variant`` for ``sm_<arch>`` and return its resource report."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    report = Report(variant.kernel, variant.config, variant.label, arch, ok=False)
    try:
        src = ASTSource(fn=_kernel(variant.kernel), signature=variant.signature, constexprs=variant.constexprs)
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(variant.options))
    except Exception as exc:  # report and go on with the other variants
        report.error = f"{type(exc).__name__}: {str(exc).splitlines()[-1] if str(exc) else ''}"
        return report
    ptx = compiled.asm["ptx"]
    target = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as tmp:
        ptx_path, cubin_path = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(ptx_path, "w") as f:
            f.write(ptx)
        from triton.backends.nvidia.compiler import get_ptxas

        fmad = [] if variant.options.get("enable_fp_fusion", True) else ["--fmad=false"]
        log = subprocess.run(
            [
                get_ptxas(arch).path,
                "-v",
                "--regAllocOptLevel=2",
                *fmad,
                f"--gpu-name={target}",
                ptx_path,
                "-o",
                os.path.join(tmp, "v.cubin"),
            ],
            capture_output=True,
            text=True,
        )
        for key, rx in _PTXAS_RE.items():
            m = rx.search(log.stderr)
            setattr(report, key, int(m.group(1)) if m else 0)
        with open(cubin_path, "wb") as f:
            f.write(compiled.asm["cubin"])
        res = subprocess.run(
            [os.path.join(bindir, "cuobjdump"), "-res-usage", cubin_path], capture_output=True, text=True
        )
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", res.stdout)
        if m:
            report.extra = {
                "cuobjdump_reg": int(m.group(1)),
                "cuobjdump_stack": int(m.group(2)),
                "cuobjdump_local": int(m.group(4)),
            }
    report.shared = int(compiled.metadata.shared)
    report.ok = report.spill_stores == 0 and report.spill_loads == 0 and log.returncode == 0
    if log.returncode != 0:
        report.error = log.stderr.strip().splitlines()[-1]
    return report


def run(archs: list[int], configs=GPU_CONFIGS) -> list[Report]:
    """Compile every shipped variant of ``configs`` for every arch in ``archs``."""
    return [compile_variant(v, arch) for cfg in configs for v in shipped_variants(cfg) for arch in archs]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Compile the shipped Triton kernels for NVIDIA GPUs (no GPU needed).")
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities (default 80 90)")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument(
        "--expect-triton", metavar="VERSION", help="fail unless the Triton imported is this version (a prefix: 3.6)"
    )
    args = parser.parse_args(argv)
    if interpreter_enabled():
        parser.error("TRITON_INTERPRET is set: unset it to compile for GPUs")
    import triton

    expected = args.expect_triton
    if expected and not (triton.__version__ + ".").startswith(expected.rstrip(".") + "."):
        parser.error(f"--expect-triton {expected}: Triton {triton.__version__} is imported, from {triton.__file__}")
    if not args.json:
        print(f"Triton {triton.__version__}")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # every launch sets enable_fp_fusion explicitly
    reports = run(args.arch)
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=1))
    else:
        print(
            f"{'kernel':<20} {'config':<12} {'arch':>4} {'regs':>5} {'spill st/ld':>12} {'stack':>6} "
            f"{'smem':>7}  variant"
        )
        for r in reports:
            if r.error and r.registers is None:
                print(f"{r.kernel:<20} {r.config:<12} {r.arch:>4}  FAILED: {r.error}  [{r.label}]")
                continue
            flag = "" if r.ok else "  <-- SPILLS" if (r.spill_stores or r.spill_loads) else f"  <-- {r.error}"
            print(
                f"{r.kernel:<20} {r.config:<12} {r.arch:>4} {r.registers:>5} {r.spill_stores:>5}/{r.spill_loads:<6}"
                f" {r.stack:>6} {r.shared:>7}  {r.label}{flag}"
            )
    bad = [r for r in reports if not r.ok]
    if bad:
        print(f"{len(bad)} of {len(reports)} variants spill or fail to compile", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
