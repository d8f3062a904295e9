"""The suite's own machinery: the worker groups of tests/conftest.py reach pytest-xdist.

``make test`` runs two workers; the files that start vLLM servers must share
one (two mining servers on two cores stall each other's event loops). That
holds only while pytest-xdist sees the groups, which a pytest or xdist release
can break without any test failing: this runs a small suite with the same
conftest in two workers and checks where each test ran.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("xdist")

CONFTEST = pathlib.Path(__file__).with_name("conftest.py")

TEST_FILE = """
import json, os, pathlib

def _record(name):
    out = pathlib.Path(os.environ["RECORD_DIR"]) / (name + ".json")
    out.write_text(json.dumps(os.environ.get("PYTEST_XDIST_WORKER")))

def test_a():
    _record(__name__ + ".a")

def test_b():
    _record(__name__ + ".b")

def test_c():
    _record(__name__ + ".c")
"""


def test_the_server_files_share_one_worker(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST.read_text())
    names = ["test_pow_api", "test_pow_v2", "test_alpha", "test_beta", "test_gamma"]
    for name in names:
        (suite / f"{name}.py").write_text(TEST_FILE)
    records = tmp_path / "records"
    records.mkdir()
    cmd = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-q", str(suite)]
    env = {**os.environ, "RECORD_DIR": str(records)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    where = {p.stem: json.loads(p.read_text()) for p in records.glob("*.json")}
    assert len(where) == 3 * len(names)
    servers = {where[f"{m}.{t}"] for m in ("test_pow_api", "test_pow_v2") for t in "abc"}
    assert len(servers) == 1, f"the server files ran in several workers: {where}"
    for name in names:  # a file runs whole in one worker
        assert len({where[f"{name}.{t}"] for t in "abc"}) == 1, where
    assert len(set(where.values())) == 2, f"everything ran in one worker: {where}"
