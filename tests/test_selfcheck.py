"""``poc-kernels selfcheck``'s statistics, checked against the package's power functions and scipy (no engine)."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from poc_kernels import cli, selfcheck
from poc_kernels.validation import critical_mismatches, detection_power, false_positive_rate


@pytest.mark.parametrize("k, n", [(0, 64), (3, 64), (35, 96), (64, 64), (1, 1)])
def test_clopper_pearson_bounds_are_the_exact_binomial_ones(k, n):
    lower, upper = selfcheck.clopper_pearson(k, n)
    # the one-sided 95% upper bound u solves P(X <= k | n, u) = 0.05; the lower bound l solves P(X >= k | n, l) = 0.05
    if k < n:
        assert stats.binom.cdf(k, n, upper) == pytest.approx(0.05, rel=1e-9)
    else:
        assert upper == 1.0
    if k > 0:
        assert stats.binom.sf(k - 1, n, lower) == pytest.approx(0.05, rel=1e-9)
    else:
        assert lower == 0.0
    assert lower <= k / n <= upper
    if k == 0:
        assert upper == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-12)


@pytest.mark.parametrize("rate", [0.001, 0.05, 0.0729, 0.1, 0.3])
@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_flag_probability_is_the_packages_detection_power(rate, alpha):
    assert selfcheck.flag_probability(rate, 200, 0.1, alpha) == detection_power(200, 0.1, rate, alpha)
    # at the honest rate the test assumes it is the test's own false-positive rate
    assert selfcheck.flag_probability(0.1, 200, 0.1, alpha) == false_positive_rate(200, 0.1, alpha)


def test_flag_probability_limits():
    assert selfcheck.flag_probability(0.0, 200, 0.1, 0.05) == 0.0
    assert selfcheck.flag_probability(1.0, 200, 0.1, 0.05) == 1.0
    assert selfcheck.flag_probability(1.0, 1, 0.1, 0.01) == 0.0  # one check can never reach p < 0.01
    with pytest.raises(ValueError, match="rate must lie in"):
        selfcheck.flag_probability(1.5, 200, 0.1, 0.05)


def test_safe_samples_against_the_power_function():
    limit = 400
    rate = 0.06
    r = selfcheck.safe_samples(rate, 0.1, 0.05, 1e-6, limit=limit)
    safe = [n for n in range(1, limit + 1) if detection_power(n, 0.1, rate, 0.05) <= 1e-6]
    assert r == {"smallest": safe[0], "largest": safe[-1], "contiguous": len(safe) == safe[-1] - safe[0] + 1}
    assert selfcheck.largest_safe_sample(rate, 0.1, 0.05, 1e-6, limit=limit) == safe[-1]
    # a small rate: few checks flag at 2 mismatches, which it reaches too often; many checks are safe
    small = selfcheck.safe_samples(0.001, 0.1, 0.05, 1e-6, limit=300)
    assert small["largest"] == 300 and not small["contiguous"]
    assert any(detection_power(n, 0.1, 0.001, 0.05) > 1e-6 for n in range(small["smallest"], 300))
    # above p_mismatch only one nonce is safe: a single check cannot reach p < 0.05
    assert selfcheck.safe_samples(0.5, 0.1, 0.05, 1e-6, limit=100) == {"smallest": 1, "largest": 1, "contiguous": True}


def test_floor_report_against_the_power_functions():
    rng = np.random.default_rng(0)
    exact = np.zeros(64)
    noisy = rng.uniform(0.0, 0.06, 96)  # a bf16-like floor: 35-ish of 96 above 0.02
    noisy[:3] = np.nan  # nonces without an artifact
    thresholds = (0.02, 0.4)
    report = selfcheck.floor_report({"reversed": exact, "batch-16": noisy}, thresholds, sample=200)
    assert set(report) == {"compositions", "false_flag", "recommended_dist_threshold"}
    rows = {r["name"]: r for r in report["compositions"]}
    assert set(rows["reversed"]) >= {"name", "n", "l2_max", "l2_p50", "l2_p99", "mismatch_rate"}
    assert rows["reversed"]["l2_max"] == 0.0 and rows["reversed"]["mismatch_rate"] == {"0.02": 0.0, "0.4": 0.0}
    assert rows["reversed"]["bitwise_equal"] == 64
    d = noisy[np.isfinite(noisy)]
    k = int(np.count_nonzero(d > 0.02))
    assert rows["batch-16"]["n"] == 93 and rows["batch-16"]["skipped"] == 3
    assert rows["batch-16"]["mismatch_rate"]["0.02"] == k / 93
    assert rows["batch-16"]["l2_max"] == d.max() and rows["batch-16"]["l2_p50"] == np.quantile(d, 0.5)

    at = report["false_flag"]["thresholds"]["0.02"]
    assert at["worst_composition"] == "batch-16"
    upper = selfcheck.clopper_pearson(k, 93)[1]
    assert at["worst_rate_upper"] == upper
    for alpha in (0.01, 0.05):
        flag = at["compositions"]["batch-16"]["flag"][f"{alpha:g}"]
        assert flag["rate"] == detection_power(200, 0.1, k / 93, alpha)
        assert flag["upper"] == detection_power(200, 0.1, upper, alpha)
        assert at["compositions"]["reversed"]["flag"][f"{alpha:g}"]["rate"] == 0.0
    # zero mismatches in 64: the upper bound 1 - 0.05^(1/64) and the power function at it
    zero = report["false_flag"]["thresholds"]["0.4"]["compositions"]["reversed"]
    assert zero["rate_upper"] == pytest.approx(1 - 0.05 ** (1 / 64), rel=1e-12)
    assert zero["flag"]["0.05"]["upper"] == detection_power(200, 0.1, zero["rate_upper"], 0.05)

    rec = report["recommended_dist_threshold"]
    t = rec["threshold"]
    assert t is not None and 0.02 < t <= d.max()
    assert rec["false_flag"] <= 1e-6 and rec["false_flag"] == detection_power(200, 0.1, rec["rate_upper"], 0.05)
    # the smallest: the largest measured value below it is not safe
    below = d[d < t].max()
    k_below = int(np.count_nonzero(d > below))
    assert detection_power(200, 0.1, selfcheck.clopper_pearson(k_below, 93)[1], 0.05) > 1e-6
    assert critical_mismatches(200, 0.1, 0.05) == 28  # the network's test flags at 28 of 200


def test_no_safe_threshold_is_said_so():
    always = np.full(400, 1.0)
    report = selfcheck.floor_report({"alone": always}, (0.02, 0.4))
    assert report["recommended_dist_threshold"]["threshold"] is not None  # 1.0 itself (everything equal or below)
    report = selfcheck.floor_report({"alone": always}, (0.02,), sample=200, max_false_flag=0.0)
    assert report["recommended_dist_threshold"]["threshold"] is None
    assert "no threshold keeps" in selfcheck.format_report(report)


def test_format_report_prints_every_composition_and_threshold():
    report = selfcheck.floor_report({"alone": np.zeros(400), "shuffled": np.linspace(0, 0.05, 400)})
    text = selfcheck.format_report(report)
    for word in ("alone", "shuffled", ">0.02", ">0.75", "smallest safe dist_threshold"):
        assert word in text


@pytest.mark.parametrize(
    "text, msg",
    [
        ("dtype=bfloat16,enforce_eager=false", None),
        ("tensor-parallel-size=2", None),
        ("dtype=int4", "dtype must be float32, bfloat16 or float16"),
        ("enforce_eager=maybe", "enforce_eager must be true or false"),
        ("tensor_parallel_size=0", "tensor_parallel_size must be >= 1"),
        ("colour=red", "expected key=value pairs"),
        ("", "names no engine setting"),
    ],
)
def test_parse_against(text, msg):
    if msg is None:
        assert selfcheck.parse_against(text)
    else:
        with pytest.raises(ValueError, match=msg):
            selfcheck.parse_against(text)


@pytest.mark.parametrize(
    "args, msg",
    [
        (["selfcheck", "--nonces", "0"], "argument --nonces: must be an integer >= 1, got 0"),
        (["selfcheck", "--thresholds", "0.02,-1"], "argument --thresholds: must be comma-separated finite numbers"),
        (["selfcheck", "--compositions", "alone,sideways"], "argument --compositions: must be a comma-separated"),
        (["selfcheck", "--against", "dtype=int4"], "argument --against: dtype must be float32, bfloat16 or"),
        (["selfcheck", "--dtype", "int8"], "argument --dtype: invalid choice"),
        (["selfcheck", "--model", "/nonexistent"], "argument --model: '/nonexistent' is not a checkpoint directory"),
        (["selfcheck", "--json", "/nonexistent/x.json"], "argument --json: directory '/nonexistent' does not exist"),
        (["selfcheck", "--batch-size", "4", "--seq-len", "7", "--chunk-tokens", "32"], "argument --chunk-tokens"),
        (["audit", "--cheaper", "int3"], "argument --cheaper: must be one of bf16, int8, fp8, drop-layers:K"),
        (["audit", "--cheaper", "drop-layers:0"], "argument --cheaper: must be one of"),
    ],
)
def test_bad_arguments(args, msg, capsys, tmp_path):
    if "--chunk-tokens" in args or "--json" in args:  # get past the model check with a stand-in checkpoint
        (tmp_path / "config.json").write_text("{}")
        args = [*args, "--model", str(tmp_path)]
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2
    assert msg in capsys.readouterr().err


# ---------------------------------------------------------------------------- audit --cheaper, without an engine


def test_parse_variant():
    from poc_kernels.cheaper import parse_variant

    assert parse_variant("int8") == ("int8", 0) and parse_variant("drop-layers:3") == ("drop-layers", 3)
    for bad in ("int4", "drop-layers:0", "drop-layers:", "drop-layers:x", ""):
        with pytest.raises(ValueError, match="must be one of bf16, int8, fp8, drop-layers:K"):
            parse_variant(bad)


def test_fake_quantize_round_trips_per_channel():
    import torch

    from poc_kernels.cheaper import fake_quantize

    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.01, 3, 16)[:, None]
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    q = fake_quantize(w, "int8")
    assert torch.all((q - w).abs() <= scale / 2 + 1e-6)  # round to nearest on each row's own grid
    assert torch.allclose(torch.round(q / scale), q / scale, atol=1e-4)
    f = fake_quantize(w, "fp8")
    s8 = w.abs().amax(dim=1, keepdim=True) / 448
    assert torch.equal((f / s8).to(torch.float8_e4m3fn).float() * s8, f)  # on the float8 grid already
    assert not torch.equal(f, w) and (f - w).abs().max() <= 0.0625 * w.abs().max()
    with pytest.raises(ValueError, match="kind must be int8 or fp8"):
        fake_quantize(w, "int4")


def test_make_variant_writes_the_cheaters_checkpoints(tiny_qwen3, tmp_path):
    from safetensors.torch import load_file

    from poc_kernels.cheaper import make_variant

    path, model = tiny_qwen3
    assert make_variant(str(path), "bf16", str(tmp_path)) == (str(path), {"dtype": "bfloat16"})
    honest = load_file(str(path / "model.safetensors"))
    target, settings = make_variant(str(path), "int8", str(tmp_path))
    assert settings == {"model": target}
    quant = load_file(f"{target}/model.safetensors")
    assert set(quant) == set(honest)
    changed = {k for k in honest if not np.array_equal(honest[k].numpy(), quant[k].numpy())}
    assert changed and all(k.endswith("proj.weight") for k in changed)
    target, _ = make_variant(str(path), "drop-layers:1", str(tmp_path))
    dropped = load_file(f"{target}/model.safetensors")
    assert json.loads((tmp_path / "drop-layers-1" / "config.json").read_text())["num_hidden_layers"] == 1
    assert not any(".layers.1." in k for k in dropped) and any(".layers.0." in k for k in dropped)
    with pytest.raises(ValueError, match="would drop all 2 decoder layers"):
        make_variant(str(path), "drop-layers:2", str(tmp_path))


def test_auc_is_the_mann_whitney_statistic():
    from poc_kernels.cheaper import auc

    rng = np.random.default_rng(3)
    h = np.round(rng.exponential(0.01, 200), 3)
    c = np.round(rng.exponential(0.02, 150), 3)  # ties on both sides
    u = stats.mannwhitneyu(c, h).statistic
    assert auc(h, c) == pytest.approx(u / (h.size * c.size), rel=1e-12)
    assert auc(np.zeros(5), np.ones(5)) == 1.0 and auc(np.zeros(5), np.zeros(5)) == 0.5


def test_best_pair_keeps_both_promises():
    from poc_kernels.cheaper import best_pair, cheaper_report

    rng = np.random.default_rng(4)
    honest = np.zeros(500)
    cheater = rng.uniform(0.0, 0.1, 500)
    pair = best_pair(honest, cheater, (0.02, 0.4))
    assert pair is not None and pair["false_flag"] <= 1e-6 and pair["detection"] >= 0.99
    assert pair["detection"] == detection_power(pair["sample"], 0.1, pair["cheater_rate_lower"], 0.05)
    # a cheater inside the honest floor cannot be caught
    report = cheaper_report("int8", honest, np.zeros(500), (0.02, 0.4))
    assert report["pair"] is None and report["auc"] == 0.5 and "no threshold keeps" in report["no_pair"]


def test_canonical_batches_put_each_nonce_in_its_miners_slot():
    order = np.random.default_rng(0).permutation(20).tolist()
    batches = selfcheck.canonical_batches(order, 8, 20)
    real = [x for b in batches for x in b if x < 20]
    assert sorted(real) == list(range(20))  # every nonce once
    fillers = [x for b in batches for x in b if x >= 20]
    assert len(set(fillers)) == len(fillers) and min(fillers) >= 24  # past the miner's last (padded) batch
    for b in batches:
        assert len(b) == 8 and all(x % 8 == slot for slot, x in enumerate(b))


def test_batch_invariant_mode_needs_a_cuda_engine(monkeypatch, tmp_path):
    import torch

    monkeypatch.setenv("POC_BATCH_INVARIANT", "1")
    config = selfcheck.EngineConfig(model=str(tmp_path))
    assert config.batch_invariant
    if torch.cuda.is_available():  # started there: the engine's processes inherit vLLM's switch
        monkeypatch.setenv("VLLM_BATCH_INVARIANT", "0")  # so that monkeypatch restores it afterwards
        monkeypatch.delenv("VLLM_BATCH_INVARIANT")
        config.llm_kwargs()
        assert os.environ["VLLM_BATCH_INVARIANT"] == "1"
        return
    with pytest.raises(ValueError, match="POC_BATCH_INVARIANT=1 needs a CUDA engine"):
        config.llm_kwargs()


def test_l2_against_compares_as_the_validator_does():
    mined = np.array([[0.5, -1.0], [2.0, 3.0]], dtype=np.float32)
    recomputed = mined.copy()
    recomputed[1, 0] += 1e-4  # below float16's resolution at 2.0: the validator sees no difference
    recomputed[0, 1] = -1.5
    d = selfcheck.l2_against(mined, recomputed)
    assert d.tolist() == [0.5, 0.0]
    recomputed[1] = np.nan  # no artifact: skipped, not a mismatch
    assert np.isnan(selfcheck.l2_against(mined, recomputed)[1])
    # the distance scheme: the absolute difference of the distances
    dist = selfcheck.l2_against(mined[:, :1], mined[:, :1] + 0.25, scheme="distance")
    assert dist.tolist() == [0.25, 0.25]
