"""Shared benchmark plumbing: throughput table and ratios to the per-nonce baseline.

Each benchmark stores ``extra_info = {"impl", "B", "H"}``; at the end of the
session the table below is printed (and, with ``--throughput-json``, written),
giving nonces per second from the median time and the ratio to the
``per-nonce`` baseline at the same shape.
"""

import json
import platform

import pytest
import torch

BASELINE = "per-nonce"


def pytest_addoption(parser):
    parser.addoption("--throughput-json", default=None, help="write the throughput table to this JSON file")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU {_cpu_model()} ({torch.get_num_threads()} threads)"


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@pytest.fixture
def run_bench(benchmark):
    """Time ``fn`` with pytest-benchmark (pedantic, synchronized) and tag the row."""

    def run(fn, *, impl, batch, hidden, rounds=5, warmup_rounds=1, kind="distances"):
        benchmark.extra_info.update({"impl": impl, "B": batch, "H": hidden, "device": device_name(), "kind": kind})

        def call():
            out = fn()
            sync()
            return out

        return benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)

    return run


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    rows = []
    for bench in session.benchmarks:
        info = bench.extra_info
        if "impl" not in info:
            continue
        median = bench.stats.median
        rows.append({**info, "median_s": median, "nonces_per_s": info["B"] / median})
    seeds = [r for r in rows if r.get("kind") == "seeds"]
    artifacts = [r for r in rows if r.get("kind") == "artifacts"]
    rows = [r for r in rows if r.get("kind") not in ("seeds", "artifacts")]
    base = {(r["B"], r["H"]): r["nonces_per_s"] for r in rows if r["impl"] == BASELINE}
    for r in rows:
        b = base.get((r["B"], r["H"]))
        r["vs_per_nonce"] = r["nonces_per_s"] / b if b else None
    rows.sort(key=lambda r: (r["H"], r["B"], r["impl"]))
    tr = terminalreporter
    tr.section(f"throughput on {device_name()}")
    tr.write_line(f"{'H':>6} {'B':>5} {'impl':<28} {'median ms':>10} {'nonces/s':>11} {'x per-nonce':>12}")
    for r in rows:
        ratio = f"{r['vs_per_nonce']:.1f}x" if r["vs_per_nonce"] else "-"
        tr.write_line(
            f"{r['H']:>6} {r['B']:>5} {r['impl']:<28} {r['median_s'] * 1e3:>10.2f} "
            f"{r['nonces_per_s']:>11.1f} {ratio:>12}"
        )
    if seeds:
        # seed derivation as a share of the fastest distance computation at H=1024 in this run
        dist = [r for r in rows if r["H"] == 1024 and r["impl"] != BASELINE]
        best = min(dist, key=lambda r: r["median_s"] / r["B"]) if dist else None
        ref_us = best["median_s"] / best["B"] * 1e6 if best else None
        tr.section("seed derivation (10 seeds per nonce)")
        if best:
            tr.write_line(f"share: of compute_distances {best['impl']} at H=1024 B={best['B']}, {ref_us:.1f} us/nonce")
        tr.write_line(f"{'B':>6} {'impl':<22} {'median ms':>10} {'us/nonce':>9} {'share':>8}")
        for r in sorted(seeds, key=lambda r: (r["B"], r["impl"])):
            us = r["median_s"] / r["B"] * 1e6
            r["us_per_nonce"] = us
            r["share_of_distance"] = us / ref_us if ref_us else None
            share = f"{100 * us / ref_us:.2f}%" if ref_us else "-"
            tr.write_line(f"{r['B']:>6} {r['impl']:<22} {r['median_s'] * 1e3:>10.3f} {us:>9.3f} {share:>8}")
    if artifacts:
        ref = {(r["B"], r["H"]): r["nonces_per_s"] for r in artifacts if r["impl"] == "artifacts/reference"}
        tr.section("compute_artifacts (the artifact scheme)")
        tr.write_line(f"{'H':>6} {'B':>5} {'impl':<22} {'median ms':>10} {'nonces/s':>11} {'x reference':>12}")
        for r in sorted(artifacts, key=lambda r: (r["H"], r["B"], r["impl"])):
            base = ref.get((r["B"], r["H"]))
            r["vs_reference"] = r["nonces_per_s"] / base if base else None
            ratio = f"{r['vs_reference']:.1f}x" if base else "-"
            tr.write_line(
                f"{r['H']:>6} {r['B']:>5} {r['impl']:<22} {r['median_s'] * 1e3:>10.2f} {r['nonces_per_s']:>11.1f} "
                f"{ratio:>12}"
            )
    path = config.getoption("--throughput-json")
    if path:
        with open(path, "w") as f:
            json.dump(
                {"device": device_name(), "torch": torch.__version__, "rows": rows + seeds + artifacts}, f, indent=1
            )
        tr.write_line(f"wrote {path}")
