#!/usr/bin/env python3
"""`make gpu-check`: install, test and time all the GPU code on one CUDA machine, in one command.

    python bench/gpu_check.py --out DIR [--quick] [--dry-run] [--wheels DIR]

Phases, each printing its elapsed time (a run cut off at its limit still shows
where it got to), each bounded so that the next one still runs:

1. environment: the device, Python, torch, Triton, CUDA;
2. install, with that machine's own Python and torch: the wheels of ``--wheels``
   (what it lacks, with ``pip install --no-index``), then the package with
   ``--no-deps --no-build-isolation -e .``, the CUDA extension built for sm_90
   only on every core;
3. tests: every test that runs on CUDA, compiled (``GPU_TESTS``);
4. benchmarks: ``bench/gpu_bench.py``;
5. report: ``DIR/gpu-check-<device>.json`` and ``.md``, and a summary printed last.

``--dry-run`` runs the same phases on the CPU with the development venv (no
install, Triton's interpreter, tiny sizes; the CUDA-only tests are reported as
skipped with their reasons), so that CI keeps the script from rotting.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

# The test files whose tests run on CUDA (the vLLM, HTTP, CLI and statistics suites need no GPU).
GPU_TESTS = [
    "tests/test_api.py",
    "tests/test_artifacts.py",
    "tests/test_bad_input.py",
    "tests/test_conformance.py",
    "tests/test_determinism.py",
    "tests/test_distribution.py",
    "tests/test_ext.py",
    "tests/test_layer_hooks.py",
    "tests/test_random_projection.py",
    "tests/test_rng.py",
    "tests/test_seeds.py",
    "tests/test_token_ops.py",
    "tests/test_topk_order.py",
    "tests/test_triton.py",
]
# CI compiles every kernel for sm_80/sm_90 (with this Triton and the GPU machine's); here it would only cost time.
DESELECT = ["tests/test_triton.py::test_every_shipped_kernel_compiles_for_sm80_and_sm90_without_spills"]
# The quick mode's tests: the conformance vectors on the fused kernels, the CUDA-only checks, the topk order.
QUICK = (
    "conformance or cuda_graph or topk or opcheck or torch_compile or subnormal or batch_invariance or non_finite "
    "or derive_seeds_cuda or kernel_streams or odd_sizes or artifacts_conform or eager_sequence or triton_projection"
)
# The dry run's: enough to run the phase, under the interpreter, in seconds.
DRY = "topk or cuda or graph or opcheck or kernel_streams"

# Seconds per phase: (full, quick, dry run), so that the whole command fits 8 minutes (quick: 4) on an H200.
# Estimates until a GPU run measures them; --phase-seconds overrides them.
LIMITS = {"install": (120, 100, 60), "tests": (180, 50, 240), "bench": (150, 80, 300)}


class Phases:
    """Runs the phases, timing each and keeping going after a failure or a timeout."""

    def __init__(self, mode: str, seconds: list | None = None) -> None:
        self.t0 = time.perf_counter()
        self.mode = mode
        self.seconds = seconds
        self.done: list = []

    def log(self, msg: str) -> None:
        print(f"[gpu-check +{time.perf_counter() - self.t0:6.1f} s] {msg}", flush=True)

    def limit(self, name: str) -> int:
        if self.seconds:
            return self.seconds[list(LIMITS).index(name)]
        return LIMITS[name][("full", "quick", "dry-run").index(self.mode)]

    def run(self, name: str, fn) -> object:
        self.log(f"{name} ...")
        start = time.perf_counter()
        try:
            status, detail = fn()
        except Exception as exc:  # a broken phase must not stop the others
            status, detail = "error", f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - start
        self.done.append({"phase": name, "status": status, "seconds": round(seconds, 1), "detail": detail})
        self.log(f"{name}: {status} in {seconds:.1f} s{' - ' + str(detail) if detail else ''}")
        return status


def run_logged(cmd: list, log_path: str, timeout: int, env: dict | None = None) -> tuple[int | None, str]:
    """Run ``cmd``, its output to the console and appended to ``log_path``; return (status, None on timeout; tail)."""
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        lines = []
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
                lines.append(line)
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(cmd, timeout)
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.write(f"\n[gpu-check] stopped after {timeout} s\n")
            return None, "".join(lines[-20:])
    return proc.returncode, "".join(lines[-20:])


# ----------------------------------------------------------------------------- phases


def environment() -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "executable": PY,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU",
        "cpu_count": os.cpu_count(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    try:
        env["commit"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except OSError:
        env["commit"] = None
    return env


def install(args, phases: Phases, out: str):
    wheels = sorted(glob.glob(os.path.join(args.wheels, "*.whl"))) if args.wheels else []
    log = os.path.join(out, "gpu-check-install.log")
    if wheels:
        code, tail = run_logged(
            [PY, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *wheels], log, phases.limit("install")
        )
        if code != 0:
            return "failed", f"wheels: {tail.strip().splitlines()[-1] if tail.strip() else code}"
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST="9.0", MAX_JOBS=str(os.cpu_count() or 1), POC_KERNELS_REQUIRE_EXT="1")
    code, tail = run_logged(
        [PY, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", "."],
        log,
        phases.limit("install"),
        env,
    )
    if code != 0:
        return ("timeout" if code is None else "failed"), tail.strip().splitlines()[-1] if tail.strip() else code
    probe = subprocess.run(
        [PY, "-c", "import poc_kernels, poc_kernels._custom_ops as o; print(o.EXT_STATUS, o.HAS_CUDA_EXT)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return "failed", probe.stderr.strip().splitlines()[-1]
    return "ok", f"{len(wheels)} wheels; extension: {probe.stdout.strip()}"


def tests(args, phases: Phases, out: str, report: dict):
    xml = os.path.join(out, "gpu-check-tests.xml")
    cmd = [PY, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={xml}", *GPU_TESTS]
    cmd += [f"--deselect={d}" for d in DESELECT]
    if phases.mode != "full":
        cmd += ["-k", DRY if phases.mode == "dry-run" else QUICK]
    if phases.mode != "dry-run" and _has("xdist"):
        cmd += ["-n", str(min(8, os.cpu_count() or 1))]
    code, _ = run_logged(cmd, os.path.join(out, "gpu-check-tests.log"), phases.limit("tests"))
    report["tests"] = summary = junit_summary(xml) if os.path.exists(xml) else {}
    counts = (
        f"{summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed, {summary.get('skipped', 0)} skipped"
    )
    if code is None:
        return "timeout", counts
    return ("ok" if code == 0 else "failed"), counts


def junit_summary(path: str) -> dict:
    """Counts, failures and skip reasons from a pytest JUnit XML file."""
    failed, skipped, passed = [], {}, 0
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        if bad is not None:
            failed.append({"test": name, "message": (bad.get("message") or "")[:300]})
        elif skip is not None:
            reason = re.sub(r"^Skipped: ", "", skip.get("message") or "")
            skipped[reason] = skipped.get(reason, 0) + 1
        else:
            passed += 1
    return {
        "passed": passed,
        "failed": len(failed),
        "skipped": sum(skipped.values()),
        "failures": failed,
        "skip_reasons": skipped,
    }


def bench(args, phases: Phases, out: str, report: dict):
    path = os.path.join(out, "gpu-check-bench.json")
    cmd = [PY, os.path.join("bench", "gpu_bench.py"), "--json", path]
    cmd += ["--dry-run"] if phases.mode == "dry-run" else ["--quick"] if phases.mode == "quick" else []
    code, tail = run_logged(cmd, os.path.join(out, "gpu-check-bench.log"), phases.limit("bench"))
    if os.path.exists(path):
        with open(path) as f:
            report["bench"] = json.load(f)
        os.remove(path)  # folded into the report
    if code is None:
        return "timeout", None
    return ("ok" if code == 0 else "failed"), None if code == 0 else tail.strip().splitlines()[-1]


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ----------------------------------------------------------------------------- report


def goals(report: dict) -> list:
    """The issue's goal at B = 1024, H = 4096: within 2x of the roofline floor and >= 100x the per-nonce original."""
    rows = [r for r in report.get("bench", {}).get("distances", []) if r["B"] == 1024 and r["H"] == 4096]
    out = []
    for r in rows:
        if not r["impl"].startswith("triton"):
            continue
        out.append(
            {
                "impl": r["impl"],
                "x_floor": r.get("x_floor"),
                "vs_per_nonce": r["vs_per_nonce"],
                "met": r.get("x_floor") is not None and r["x_floor"] <= 2.0 and r["vs_per_nonce"] >= 100.0,
            }
        )
    return out


def _fmt(row: dict, key: str, fmt: str) -> str:
    return format(row[key], fmt) if row.get(key) is not None else "-"


def markdown(report: dict) -> str:
    env, b = report["environment"], report.get("bench", {})
    lines = [
        f"# make gpu-check on {env['device']} ({report['mode']})",
        "",
        f"Command: `{report['command']}`. Date {report['date']}; commit {env.get('commit') or 'unknown'}; "
        f"Python {env['python']}, torch {env['torch']} (CUDA {env['cuda']}), Triton {env.get('triton')}.",
    ]
    if report["mode"] == "dry-run":
        lines += ["", "**A dry run on the CPU: it checks the script; none of its numbers is a GPU timing.**"]
    lines += ["", "## Phases", "", "| phase | status | seconds | detail |", "|---|---|---:|---|"]
    lines += [f"| {p['phase']} | {p['status']} | {p['seconds']} | {p['detail'] or ''} |" for p in report["phases"]]
    t = report.get("tests")
    if t:
        lines += ["", f"## Tests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped", ""]
        lines += [f"- FAILED `{f['test']}`: {f['message']}" for f in t["failures"]]
        lines += [f"- skipped ({n}): {reason}" for reason, n in t["skip_reasons"].items()]
    if b.get("topk_order"):
        lines += [
            "",
            "## torch.topk(-scores, 12, sorted=False) against the canonical order (SPEC-ARTIFACTS §5)",
            "",
            "| H | rows | canonical rows (hashes) | canonical rows (ties) | verdict |",
            "|---:|---:|---:|---:|---|",
        ]
        for r in b["topk_order"]:
            verdict = "canonical" if r["canonical"] else "NOT canonical"
            lines.append(
                f"| {r['H']} | {r['rows']} | {r['hashes_canonical_rows']} | {r['ties_canonical_rows']} | "
                f"{verdict} on {r['device']} |"
            )
    if b.get("ceilings"):
        c = b["ceilings"]
        lines += [
            "",
            "## Ceilings, measured in this run",
            "",
            f"Device-to-device copy {c['copy_gbps']:.0f} GB/s (read + write); GEMM fp32 "
            f"{c['fp32_tflops']:.1f} TFLOP/s, TF32 {c['tf32_tflops']:.1f} TFLOP/s.",
        ]
    if b.get("distances"):
        lines += [
            "",
            "## compute_distances",
            "",
            "| H | B | impl | median ms | nonces/s | x per-nonce | x batched fp32 | x batched fp32 compiled "
            "| floor ms | x floor |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in b["distances"]:
            lines.append(
                f"| {r['H']} | {r['B']} | {r['impl']} | {r['median_ms']:.3f} | {r['nonces_per_s']:.0f} | "
                f"{_fmt(r, 'vs_per_nonce', '.1f')} | {_fmt(r, 'vs_batched_fp32', '.2f')} | "
                f"{_fmt(r, 'vs_batched_fp32_compiled', '.2f')} | {_fmt(r, 'floor_ms', '.3f')} | "
                f"{_fmt(r, 'x_floor', '.2f')} |"
            )
        lines.append("")
        lines.append(
            "The per-nonce original is timed at one small B (its cost per nonce does not depend on B); "
            "every row's `x per-nonce` uses that rate at the same H."
        )
    for key, title, cols in (
        ("artifacts", "compute_artifacts", ("impl", "B", "H", "median_ms", "nonces_per_s", "vs_reference")),
        ("inputs", "generate_inputs", ("impl", "dtype", "B", "seq_len", "H", "median_ms", "written_gbps", "of_copy")),
        (
            "layer_transform",
            "The layer transforms (SPEC §7, SPEC-ARTIFACTS §3)",
            ("impl", "variant", "dtype", "T", "H", "median_ms", "gbps", "of_copy", "vs_eager", "vs_compiled"),
        ),
        (
            "token_ops",
            "The token operations on a flat batch of T tokens, poc of them PoC "
            "(vs_whole: the whole-batch kernels on as many rows)",
            ("impl", "mode", "dtype", "T", "poc", "H", "median_ms", "gbps", "of_copy", "vs_whole"),
        ),
        (
            "projection",
            "The random projection (SPEC §10) on the input rows of N PoC tokens: P built per block (build_p_ms), "
            "the Triton kernel with the cached P (project_ms), the engine's input write without and with it, and "
            "its overhead against a forward estimated from the bf16 GEMM rate (an upper bound: see gpu_bench.py)",
            (
                "H",
                "N",
                "p_mib",
                "build_p_ms",
                "project_ms",
                "fp64_tflops",
                "token_plain_ms",
                "token_projected_ms",
                "bf16_tflops",
                "forward_est_ms",
                "overhead_pct",
            ),
        ),
    ):
        if b.get(key):
            lines += ["", f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for r in b[key]:
                lines.append(
                    "| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
                )
    if report.get("goals"):
        lines += ["", "## The goal at B = 1024, H = 4096 (within 2x of the floor, >= 100x per-nonce)", ""]
        for g in report["goals"]:
            lines.append(
                f"- {g['impl']}: {g['x_floor'] if g['x_floor'] is None else round(g['x_floor'], 2)}x the floor, "
                f"{g['vs_per_nonce']:.0f}x per-nonce: {'met' if g['met'] else 'NOT met'}"
            )
    return "\n".join(lines) + "\n"


def summary(report: dict) -> str:
    lines = ["", "=" * 30 + " gpu-check summary " + "=" * 30]
    env = report["environment"]
    lines.append(f"{env['device']} | torch {env['torch']} | Triton {env.get('triton')} | mode {report['mode']}")
    for p in report["phases"]:
        lines.append(f"  {p['phase']:<12} {p['status']:<8} {p['seconds']:>7.1f} s  {p['detail'] or ''}")
    b = report.get("bench", {})
    for r in b.get("topk_order", []):
        lines.append(
            f"  topk order H={r['H']:<5} {'canonical' if r['canonical'] else 'NOT canonical'} on {r['device']} "
            f"({r['hashes_canonical_rows']}/{r['rows']} rows, ties {r['ties_canonical_rows']}/{r['rows']})"
        )
    for g in report.get("goals", []):
        x = "-" if g["x_floor"] is None else f"{g['x_floor']:.2f}x floor"
        lines.append(
            f"  B=1024 H=4096 {g['impl']:<18} {x}, {g['vs_per_nonce']:.0f}x per-nonce: "
            f"{'goal met' if g['met'] else 'goal NOT met'}"
        )
    for r in b.get("layer_transform", []):
        if r["dtype"] == "bfloat16":
            lines.append(
                f"  layer {r['variant']:<17} {r['impl']:<22} {r['gbps']:8.1f} GB/s  x eager {r['vs_eager']:.2f}"
            )
    token_rows = b.get("token_ops", [])
    graphed = any(r["mode"] == "graph" for r in token_rows)
    for r in token_rows:
        if r["impl"].startswith(("write_token", "apply_token")) and (r["mode"] == "graph") == graphed:
            lines.append(
                f"  {r['impl']:<29} T={r['T']} poc={r['poc']:<5} H={r['H']:<5} {r['mode']:<5} "
                f"{r['median_ms']:8.3f} ms  x whole batch {r['vs_whole']:.2f}"
            )
    for r in b.get("projection", []):
        verdict = "under 5%" if r["overhead_pct"] < 5.0 else "NOT under 5%"
        lines.append(
            f"  random projection H={r['H']:<5} N={r['N']} {r['project_ms']:.3f} ms ({r['fp64_tflops']:.1f} fp64 "
            f"TFLOP/s), +{r['overhead_pct']:.1f}% of an estimated forward: {verdict}"
        )
    lines.append(f"  report: {report['paths']['json']} and .md; total {report['elapsed_s']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="where the report goes")
    p.add_argument("--quick", action="store_true", help="fewer tests and sizes: under 4 minutes on an H200")
    p.add_argument("--dry-run", action="store_true", help="on the CPU with the development venv: checks the script")
    p.add_argument("--wheels", default=os.path.join(ROOT, ".whl"), help="wheels to install first (--no-index)")
    p.add_argument(
        "--phase-seconds", type=int, nargs=3, metavar=("INSTALL", "TESTS", "BENCH"), help="time limits of the phases"
    )
    args = p.parse_args(argv)
    mode = "dry-run" if args.dry_run else "quick" if args.quick else "full"
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    for name in ("install.log", "tests.log", "tests.xml", "bench.log"):  # this run's logs only
        if os.path.exists(os.path.join(out, f"gpu-check-{name}")):
            os.remove(os.path.join(out, f"gpu-check-{name}"))
    phases = Phases(mode, args.phase_seconds)
    report = {
        "mode": mode,
        "command": " ".join(["python", "bench/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
    }
    env = report["environment"] = environment()
    phases.done.append({"phase": "environment", "status": "ok", "seconds": 0.0, "detail": env["device"]})
    phases.log(f"environment: {env['device']}, Python {env['python']}, torch {env['torch']}, Triton {env['triton']}")
    if mode != "dry-run" and not env["cuda_available"]:
        phases.log("no CUDA device here: use --dry-run (make gpu-check DRY_RUN=1) to check the script on the CPU")
        return 2
    if mode == "dry-run":
        phases.done.append(
            {
                "phase": "install",
                "status": "skipped",
                "seconds": 0.0,
                "detail": "dry run: the development venv is used as it is",
            }
        )
        phases.log("install: skipped (dry run: the development venv is used as it is)")
    else:
        phases.run("install", lambda: install(args, phases, out))
    phases.run("tests", lambda: tests(args, phases, out, report))
    phases.run("bench", lambda: bench(args, phases, out, report))
    report["phases"] = phases.done
    report["goals"] = goals(report)
    report["elapsed_s"] = time.perf_counter() - phases.t0
    slug = "dry-run" if mode == "dry-run" else re.sub(r"[^a-z0-9]+", "-", env["device"].lower()).strip("-")
    stem = os.path.join(out, f"gpu-check-{slug}{'-quick' if mode == 'quick' else ''}")
    report["paths"] = {"json": stem + ".json", "markdown": stem + ".md"}
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(report))
    print(summary(report), flush=True)
    return 0 if all(p["status"] in ("ok", "skipped") for p in phases.done) else 1


if __name__ == "__main__":
    raise SystemExit(main())
