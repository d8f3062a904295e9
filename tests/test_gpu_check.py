"""The report half of `make gpu-check` (bench/gpu_check.py) on made-up results; CI also runs the script dry."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(x_floor_cached, vs_per_nonce):
    rows = [
        {"impl": "per-nonce", "B": 64, "H": 4096, "median_ms": 500.0, "nonces_per_s": 128.0},
        {
            "impl": "triton-cached",
            "B": 1024,
            "H": 4096,
            "median_ms": 0.5,
            "nonces_per_s": 2.0e6,
            "vs_per_nonce": vs_per_nonce,
            "vs_batched_fp32": 3.0,
            "vs_batched_fp32_compiled": 2.5,
            "floor_ms": 0.25,
            "x_floor": x_floor_cached,
        },
        {
            "impl": "batched-fp32",
            "B": 1024,
            "H": 4096,
            "median_ms": 1.5,
            "nonces_per_s": 6.8e5,
            "vs_per_nonce": 50.0,
            "vs_batched_fp32": 1.0,
            "vs_batched_fp32_compiled": 0.8,
        },
    ]
    return {
        "mode": "full",
        "command": "python bench/gpu_check.py --out x",
        "date": "2026-11-30",
        "environment": {
            "device": "NVIDIA H200",
            "python": "3.12.3",
            "torch": "2.11.0",
            "cuda": "13.0",
            "triton": "3.6.0",
            "commit": None,
        },
        "phases": [{"phase": "tests", "status": "ok", "seconds": 60.0, "detail": "3 passed"}],
        "tests": {
            "passed": 3,
            "failed": 1,
            "skipped": 1,
            "failures": [{"test": "t::a", "message": "boom"}],
            "skip_reasons": {"needs X": 1},
        },
        "bench": {
            "topk_order": [
                {
                    "H": 576,
                    "k": 12,
                    "rows": 8,
                    "device": "cuda",
                    "hashes_canonical_rows": 8,
                    "ties_canonical_rows": 7,
                    "canonical": False,
                }
            ],
            "ceilings": {"copy_gbps": 4300.0, "fp32_tflops": 50.0, "tf32_tflops": 400.0},
            "distances": rows,
            "inputs": [
                {
                    "impl": "triton",
                    "dtype": "bfloat16",
                    "B": 64,
                    "seq_len": 1024,
                    "H": 4096,
                    "median_ms": 0.2,
                    "written_gbps": 2600.0,
                    "of_copy": 0.6,
                }
            ],
            "layer_transform": [
                {
                    "impl": "eager",
                    "variant": "SPEC §7",
                    "dtype": "bfloat16",
                    "T": 8,
                    "H": 8,
                    "median_ms": 0.1,
                    "gbps": 1.0,
                    "of_copy": 0.1,
                    "vs_eager": 1.0,
                    "vs_compiled": 0.9,
                }
            ],
            "projection": [
                {
                    "H": 4096,
                    "N": 2048,
                    "p_mib": 64.0,
                    "build_p_ms": 0.5,
                    "project_ms": 2.0,
                    "fp64_tflops": 34.4,
                    "token_plain_ms": 0.1,
                    "token_projected_ms": 2.4,
                    "bf16_tflops": 700.0,
                    "forward_est_ms": 46.8,
                    "overhead_pct": 4.9,
                }
            ],
        },
        "elapsed_s": 300.0,
        "paths": {"json": "x/gpu-check-nvidia-h200.json"},
    }


@pytest.mark.parametrize("x_floor, vs_per_nonce, met", [(1.5, 150.0, True), (2.5, 150.0, False), (1.5, 90.0, False)])
def test_goal_at_b1024_h4096(gpu_check, x_floor, vs_per_nonce, met):
    report = _report(x_floor, vs_per_nonce)
    goals = gpu_check.goals(report)
    assert [g["impl"] for g in goals] == ["triton-cached"]
    assert goals[0]["met"] is met
    report["goals"] = goals
    text = gpu_check.markdown(report)
    assert "NVIDIA H200" in text and "| 4096 | 1024 | triton-cached |" in text
    assert "FAILED `t::a`: boom" in text and "skipped (1): needs X" in text
    assert "NOT canonical on cuda" in text  # one row with ties out of order
    assert "| 4096 | 2048 | 64.000 | 0.500 | 2.000 | 34.400 |" in text  # the random projection's row
    assert "random projection H=4096  N=2048 2.000 ms (34.4 fp64 TFLOP/s), +4.9% of an estimated forward: under 5%" in (
        gpu_check.summary(report)
    )
    assert ("goal met" if met else "goal NOT met") in gpu_check.summary(report)


def test_junit_summary(gpu_check, tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text(
        '<testsuites><testsuite><testcase classname="tests.a" name="ok"/>'
        '<testcase classname="tests.a" name="bad"><failure message="assert 1 == 2"/></testcase>'
        '<testcase classname="tests.a" name="err"><error message="fixture"/></testcase>'
        '<testcase classname="tests.b" name="s1"><skipped message="needs a GPU"/></testcase>'
        '<testcase classname="tests.b" name="s2"><skipped message="Skipped: needs a GPU"/></testcase>'
        "</testsuite></testsuites>"
    )
    got = gpu_check.junit_summary(str(xml))
    assert (got["passed"], got["failed"], got["skipped"]) == (1, 2, 2)
    assert got["skip_reasons"] == {"needs a GPU": 2}
    assert [f["test"] for f in got["failures"]] == ["tests.a::bad", "tests.a::err"]
