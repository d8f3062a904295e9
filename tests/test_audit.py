"""`poc-kernels audit`: the model-free attack must succeed on a model built with a massive, input-independent
coordinate in its final hidden state, and fail on one without it; the figures and the command line around it."""

import importlib.util
import json
import math

import pytest
import torch

from poc_kernels import audit
from poc_kernels.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is missing")

H = 64


def tiny_model(massive: bool):
    """A seeded random 2-layer Qwen3; with ``massive``, its last layer writes 200 into coordinate 7 of the residual
    stream for every input (what trained models' massive activations do), so the final state is nearly constant."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=64,
        hidden_size=H,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=64,
        dtype="float32",
    )
    model = Qwen3ForCausalLM(config).eval()
    if massive:
        constant = torch.zeros(H)
        constant[7] = 200.0

        def hook(module, inputs, output):
            return (output[0] + constant, *output[1:]) if isinstance(output, tuple) else output + constant

        model.model.layers[-1].register_forward_hook(hook)
    return model


def run(massive: bool) -> dict:
    hidden = audit.HiddenStates(tiny_model(massive), seq_len=8)
    report = audit.audit(hidden, blocks=("block_alpha", "block_beta"), nonces=96, calibration=24)
    return {(r["scheme"], r["random_projection"]): r for r in report["runs"]}


@pytest.fixture(scope="module")
def massive():
    return run(True)


@pytest.fixture(scope="module")
def plain():
    return run(False)


def test_the_attack_succeeds_on_a_massive_coordinate_and_the_projection_does_not_stop_it(massive):
    for projection in (False, True):
        flips = massive[("sign_flips", projection)]
        assert flips["top1_norm_share"] > 0.95 and flips["participation_ratio"] < 1.2
        assert 0.3 < flips["honest_valid_rate"] < 0.8  # the scheme looks healthy from the valid rate alone
        # the cheater claims about as many nonces as an honest node finds, and almost all of them hold
        assert abs(flips["claimed_fraction"] - flips["honest_valid_rate"]) < 0.1
        assert flips["false_claim_rate"] < 0.05 and flips["false_claim_rate"] < flips["blind_false_rate"] / 5
        assert flips["conviction"]["power"]["50"] < 0.5  # a small sample rarely convicts
        assert set(flips["predictors"]) == {"mean", "dominant_sign"}
        hooks = massive[("layer_hooks", projection)]
        assert hooks["false_claim_rate"] < 0.05
        art = massive[("artifact", projection)]
        assert art["within_network"] > 0.7  # the network client's 0.4 passes most predicted artifacts
    for block in ("block_alpha", "block_beta"):
        row = massive[("sign_flips", False)]["blocks"][block]
        assert row["structure"]["dominant_coordinate"] == 7 and row["structure"]["dominant_share_of_nonces"] == 1.0
        assert set(row["dominant_sign"]) == {-1.0, 1.0}  # the flips split the nonces by the sign they leave


def test_the_attack_fails_without_structure(plain):
    for projection in (False, True):
        flips = plain[("sign_flips", projection)]
        assert flips["top1_norm_share"] < 0.6 and flips["participation_ratio"] > 10
        assert flips["false_claim_rate"] > 0.25
        assert flips["conviction"]["power"]["50"] > 0.99  # such a cheater is caught at once
        assert plain[("layer_hooks", projection)]["false_claim_rate"] > 0.25
        art = plain[("artifact", projection)]
        assert art["within_network"] < 0.2 and art["within_deployed"] == 0.0
        assert art["conviction_network"]["power"]["200"] > 0.99


def test_structure_and_conviction_figures():
    h = torch.zeros(2, 5)
    h[0, :2] = torch.tensor([3.0, 4.0])
    h[1, 1] = -2.0
    s = audit.structure(h)
    assert math.isclose(s["top1_norm_share"], (0.8 + 1.0) / 2)
    assert math.isclose(s["participation_ratio"], (625 / 337 + 1.0) / 2)
    assert s["dominant_coordinate"] == 1 and s["hidden_size"] == 5
    c = audit.conviction(0.0, 5e-4, 0.01)
    assert c["checks_for_95"] is None and all(p < 0.01 for p in c["power"].values())
    c = audit.conviction(1.0, 5e-4, 0.01)
    assert c["checks_for_95"] == 10 and c["power"]["50"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="blocks must name at least one block hash"):
        audit.audit(lambda *a: None, blocks=())
    with pytest.raises(ValueError, match="scheme must be one of"):
        audit.HiddenStates(tiny_model(False))("b", "k", [1], "decode", False)


def test_audit_command(tiny_qwen3, tmp_path, capsys):
    path, _ = tiny_qwen3
    out, fig = tmp_path / "audit.json", tmp_path / "audit.png"
    args = ["audit", "--model", str(path), "--nonces", "12", "--calibration", "4", "--seq-len", "4"]
    args += ["--blocks", "b1,b2", "--schemes", "sign_flips,artifact", "--out", str(out), "--plot", str(fig), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [(r["scheme"], r["random_projection"]) for r in summary["runs"]] == [
        ("sign_flips", False),
        ("sign_flips", True),
        ("artifact", False),
        ("artifact", True),
    ]
    full = json.loads(out.read_text())
    assert full["blocks"] == ["b1", "b2"] and full["model"] == str(path)
    assert len(full["runs"][0]["blocks"]["b2"]["attack"]["distances"]) == 12
    assert fig.stat().st_size > 0
    assert main(["audit", "--model", str(path), "--nonces", "4", "--calibration", "2", "--no-projection"]) == 0
    table = capsys.readouterr().out
    assert "distance scheme" in table and "artifact scheme" in table and " on " not in table


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--schemes", "sign_flips,decode"], "--schemes"),
        (["--model", "/no/such/dir"], "--model"),
        (["--nonces", "0"], "--nonces"),
        (["--blocks", ","], "--blocks"),
        (["--out", "/no/such/dir/a.json"], "--out"),
    ],
)
def test_audit_bad_arguments(args, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["audit", *args])
    assert exc.value.code == 2 and msg in capsys.readouterr().err
