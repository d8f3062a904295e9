"""The experiment scripts of python/ run against the public API (what `make run` runs)."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script, *args):
    return subprocess.run(
        [sys.executable, str(ROOT / "python" / script), *args], capture_output=True, text=True, timeout=300
    )


def test_distance_distribution_json():
    proc = _run("distance_distribution.py", "--nonces", "300", "--hidden-size", "64", "--batch-size", "128", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["nonces"] == 300 and out["nonces_per_s"] > 0
    assert abs(out["measured"]["mean"] - out["analytic"]["mean"]) < 3e-3
    assert 0.0 <= out["measured"]["valid_rate"] <= 1.0
    assert out["analytic"]["valid_rate"] == pytest.approx(0.590, abs=0.005)


def test_distance_distribution_table():
    proc = _run("distance_distribution.py", "--nonces", "100", "--hidden-size", "32")
    assert proc.returncode == 0, proc.stderr
    assert "nonces/s" in proc.stdout and "Kolmogorov-Smirnov" in proc.stdout


def test_cross_block_spread_json():
    proc = _run(
        "cross_block_spread.py", "--nonces", "100", "--hidden-size", "32",
        "--block-hashes", "b1", "b2", "--public-keys", "k1", "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["block_means"]) == {"b1", "b2"}
    assert out["spread"] == pytest.approx(abs(out["block_means"]["b1"] - out["block_means"]["b2"]))


@pytest.mark.parametrize("args, msg", [(["--r-target", "3"], "--r-target"), (["--nonces", "0"], "--nonces")])
def test_scripts_reject_bad_arguments(args, msg):
    proc = _run("distance_distribution.py", *args)
    assert proc.returncode == 2
    assert msg in proc.stderr


def test_poc_round_through_transformers(tiny_qwen3, tmp_path):
    proc = _run(
        "poc_round.py", "--model", str(tiny_qwen3[0]), "--engine", "transformers", "--nonces", "6",
        "--batch-size", "4", "--seq-len", "8", "--out-dir", str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "poc_round.json").read_text())
    assert out["engine"] == "transformers" and out["nonces"] == list(range(6)) and len(out["distances"]) == 6
    assert set(out["valid_nonces"]) == {n for n, d in zip(out["nonces"], out["distances"]) if d < out["r_target"]}
    assert (tmp_path / "poc_round.png").is_file()


def test_trained_structure_and_model_spread_scripts(tiny_qwen3):
    proc = _run(
        "trained_structure.py", "--model", str(tiny_qwen3[0]), "--engine", "transformers", "--nonces", "6",
        "--seq-len", "8", "--json",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    for key in ("trained_lm_head", "random_lm_head_only", "full_sign_flip_pipeline"):
        assert 0.0 < out[key]["mean"] < 2.0
    assert out["hidden"]["hidden_size"] == 64
    split = out["full_pipeline_by_outlier_sign"]
    assert split["+"]["nonces"] + split["-"]["nonces"] == 6 and 0 <= split["dim"] < 64
    proc = _run(
        "cross_block_spread.py", "--source", "model", "--model", str(tiny_qwen3[0]), "--engine", "transformers",
        "--nonces", "4", "--seq-len", "8", "--block-hashes", "b1", "b2", "--public-keys", "k1", "--json",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(json.loads(proc.stdout)["block_means"]) == {"b1", "b2"}


def test_poc_round_rejects_bad_arguments(tmp_path):
    proc = _run("poc_round.py", "--r-target", "2.5")
    assert proc.returncode == 2 and "--r-target" in proc.stderr
    proc = _run("poc_round.py", "--model", str(tmp_path / "missing"), "--engine", "transformers")
    assert proc.returncode != 0 and "--model must be a local checkpoint directory" in proc.stderr
