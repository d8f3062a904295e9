"""Figures of the validation statistics, drawn with matplotlib (the ``plot`` extra).

matplotlib is imported lazily with the non-interactive Agg backend, so these
functions work on a machine without a display and the rest of the package
does not need matplotlib.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np

from . import validation
from .validation.distribution import distance_mean, distance_pdf, distance_std

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "plot_audit",
    "plot_cheaper",
    "plot_distance_density",
    "plot_power_curves",
    "plot_selfcheck",
    "plot_vote_shares",
    "supported_formats",
]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'poc_kernels[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def supported_formats() -> tuple[str, ...]:
    """Return the file extensions (without the dot) that matplotlib can write, e.g. ``("png", "pdf", ...)``."""
    plt = _pyplot()
    fig = plt.figure()
    try:
        return tuple(sorted(fig.canvas.get_supported_filetypes()))
    finally:
        plt.close(fig)


def _save(fig, path: PathLike) -> None:
    plt = _pyplot()
    try:
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=120)
    finally:
        plt.close(fig)


def plot_distance_density(
    path: PathLike, r_targets: Sequence[float], output_dim: int = validation.POC_OUTPUT_DIM
) -> None:
    """Write a figure of the analytic distance density, each ``r_target`` and its valid area ``d < r_target`` marked."""
    plt = _pyplot()
    mean, std = distance_mean(output_dim), distance_std(output_dim)
    lo = max(0.0, min([mean - 6 * std] + [r - std for r in r_targets]))
    hi = min(2.0, max([mean + 6 * std] + [r + std for r in r_targets]))
    x = np.linspace(lo, hi, 2001)
    y = distance_pdf(x, output_dim)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(x, y, color="black", lw=1.5, label=f"density of d, D = {output_dim}")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(sorted(r_targets, reverse=True)):
        c = colors[i % len(colors)]
        rate = validation.valid_rate(r, output_dim)
        inside = x < r
        ax.fill_between(x[inside], y[inside], color=c, alpha=0.35, lw=0)
        ax.axvline(r, color=c, ls="--", lw=1.2, label=f"r_target = {r:.5f}: {100 * rate:.2f}% valid (d < r_target)")
    ax.axvline(mean, color="gray", ls=":", lw=1, label=f"mean {mean:.5f}, std {std:.5f}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("distance d")
    ax.set_ylabel("probability density")
    ax.set_title("Analytic distance law (SPEC §8) and the valid area below r_target")
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, path)


def plot_power_curves(
    path: PathLike,
    n_checks_list: Sequence[int],
    p_honest: float,
    alpha: float,
    marks: Sequence[tuple[int, float, float, Optional[tuple[float, float]]]] = (),
) -> None:
    """Write a figure of the exact detection power against the cheater's mismatch rate, one curve per check count.

    ``marks`` holds ``(n_checks, p_cheater, power, monte_carlo)`` points to
    highlight, ``monte_carlo`` being ``(rate, stderr)`` or None.
    """
    from scipy import stats

    plt = _pyplot()
    p_max = min(0.999, max([4 * p_honest] + [1.5 * m[1] for m in marks]))
    p = np.linspace(p_max / 500, p_max, 500)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for n in sorted(set(n_checks_list)):
        k = validation.critical_mismatches(n, p_honest, alpha)
        power = stats.binom.sf(k - 1, n, p)
        ax.plot(p, power, lw=1.5, label=f"{n} checks (flag at >= {k} mismatches)")
    for n, pc, pw, mc in marks:
        ax.plot([pc], [pw], "o", color="black", ms=6)
        ax.annotate(
            f"{n} checks, p = {pc:g}: {100 * pw:.1f}%",
            (pc, pw),
            textcoords="offset points",
            xytext=(8, -12),
            fontsize=8,
        )
        if mc is not None:
            ax.errorbar(
                [pc],
                [mc[0]],
                yerr=[3 * mc[1]],
                fmt="x",
                color="red",
                capsize=4,
                label="Monte Carlo ± 3σ" if pc == marks[0][1] and n == marks[0][0] else None,
            )
    ax.axvline(p_honest, color="gray", ls="--", lw=1, label=f"p_honest = {p_honest:g}")
    ax.axhline(alpha, color="gray", ls=":", lw=1, label=f"alpha = {alpha:g}")
    ax.set_xlim(0, p_max)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("cheater's per-nonce mismatch rate")
    ax.set_ylabel("probability one validator flags it")
    ax.set_title("Exact power of the one-sided binomial test")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_vote_shares(path: PathLike, simulations: Sequence[validation.NetworkSimulation]) -> None:
    """Write a histogram of the simulated "cheater" stake share per round, with the quorum marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = np.linspace(0.0, 1.0, 101)
    for sim in simulations:
        ax.hist(
            sim.shares,
            bins=bins,
            alpha=0.5,
            density=True,
            label=f"p_target = {sim.p_target:g}: convicted in {100 * sim.conviction_probability:.2f}% of "
            f"{sim.rounds} rounds",
        )
    quorum = simulations[0].quorum if simulations else 0.5
    ax.axvline(quorum, color="black", ls="--", lw=1.2, label=f"quorum {quorum:g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel('stake share voting "cheater"')
    ax.set_ylabel("density over rounds")
    if simulations:
        s = simulations[0]
        ax.set_title(
            f"{s.n_validators} validators (effective {s.effective_validators:.1f}), {s.n_checks} checks each, "
            f"alpha {s.alpha:g}"
        )
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, path)


def plot_audit(path: PathLike, report: dict) -> None:
    """Histograms of the audit (``poc_kernels.audit``), one panel per scheme and projection setting, on the first
    block: the honest distances (distance scheme) or the predicted artifacts' distance to the true ones (artifact
    scheme), split by the sign of the dominant coordinate where the post-processing sees it."""
    plt = _pyplot()
    runs = report["runs"]
    block = report["blocks"][0]
    cols = 2
    rows = (len(runs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
    try:
        for ax, run in zip(axes.flat, runs):
            row = run["blocks"][block]
            d = np.asarray(row["attack"]["distances"], dtype=float)
            sign = np.asarray(row["dominant_sign"])
            bins = np.linspace(np.nanmin(d), np.nanmax(d), 40) if np.isfinite(d).any() else 10
            for s, color in ((1, "tab:blue"), (-1, "tab:orange")):
                ax.hist(d[sign == s], bins=bins, alpha=0.6, color=color, label=f"dominant sign {'+' if s > 0 else '−'}")
            if "false_claim_rate" in run:
                ax.axvline(report["r_target"], color="k", lw=1, ls="--", label="r_target")
                ax.set_xlabel("honest distance")
            else:
                ax.axvline(0.02, color="k", lw=1, ls="--", label="0.02 (deployed)")
                ax.axvline(0.4, color="k", lw=1, ls=":", label="0.4 (network client)")
                ax.set_xlabel("predicted artifact's distance to the true one")
            proj = "with" if run["random_projection"] else "without"
            ax.set_title(f"{run['scheme']}, {proj} random projection ({block})", fontsize=9)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(runs) :]:
            ax.axis("off")
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


def plot_selfcheck(path: PathLike, report: dict) -> None:
    """Histograms of the honest L2 of ``poc-kernels selfcheck`` (its ``l2`` and ``compositions``), one panel per
    composition, with the thresholds reported (and ``audit --cheaper``'s cheaters, under ``cheaters``, if any)."""
    plt = _pyplot()
    names = list(report["l2"])
    thresholds = [float(t) for t in report["false_flag"]["thresholds"]]
    cols = 2
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.0 * rows), squeeze=False)
    try:
        for ax, name in zip(axes.flat, names):
            d = np.asarray([np.nan if x is None else x for x in report["l2"][name]], dtype=float)
            d = d[np.isfinite(d)]
            equal = int(np.count_nonzero(d == 0))
            top = max([float(d.max()) if d.size else 0.0, *thresholds])
            ax.hist(d, bins=np.linspace(0.0, top * 1.05 or 1.0, 60), color="tab:blue", alpha=0.7)
            for t, style in zip(thresholds, ("--", ":", "-.", (0, (1, 3)), (0, (5, 5)))):
                ax.axvline(t, color="k", lw=1, ls=style, label=f"{t:g}")
            ax.set_title(f"{name}: {d.size} nonces, {equal} bitwise equal", fontsize=9)
            ax.set_xlabel("L2 to the mined artifact")
            ax.legend(fontsize=7, title="dist_threshold", title_fontsize=7)
        for ax in list(axes.flat)[len(names) :]:
            ax.axis("off")
        _save(fig, path)
    finally:
        plt.close(fig)


def plot_cheaper(path: PathLike, report: dict) -> None:
    """Histograms of ``audit --cheaper``: the honest floor's L2 and each variant's, on a log axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    try:
        series = {name: np.asarray([np.nan if x is None else x for x in d], float) for name, d in report["l2"].items()}
        positive = np.concatenate([d[np.isfinite(d) & (d > 0)] for d in series.values()] + [np.array([1e-4])])
        bins = np.geomspace(max(positive.min() / 2, 1e-6), max(positive.max() * 2, 1.0), 60)
        for name, d in series.items():
            d = d[np.isfinite(d)]
            ax.hist(np.maximum(d, bins[0]), bins=bins, alpha=0.5, label=f"{name} ({np.count_nonzero(d == 0)} at 0)")
        for t in (0.02, 0.4):
            ax.axvline(t, color="k", lw=1, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("L2 to the validator's artifact (0 drawn at the left edge)")
        ax.legend(fontsize=7)
        _save(fig, path)
    finally:
        plt.close(fig)
