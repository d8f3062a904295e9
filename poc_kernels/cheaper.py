"""``poc-kernels audit --cheaper VARIANT``: can a validator tell a cheaper model from the honest one?

A node that serves a cheaper variant of the model saves compute; its artifacts
then differ from the honest ones by more than the honest floor, or not. For
each variant:

- ``bf16``: the model run in bfloat16 (against a float32 deployment);
- ``int8``, ``fp8``: every linear layer's weight fake-quantized per output
  channel (symmetric int8; float8 e4m3 scaled to its range) and back, a round
  trip written as a new checkpoint;
- ``drop-layers:K``: the last ``K`` decoder layers skipped (a checkpoint
  without them);

the honest model mines the nonces in batches, a validator recomputes them in
its own (shuffled) batches, and the cheater mines them with the variant in the
honest batches. Reported:

- the honest floor (honest artifacts against the validator's) and the
  cheater's L2 against the validator's, with the AUC of telling them apart
  (the probability that a cheater's nonce lies further than an honest one,
  ties counted half);
- per threshold, the cheater's mismatch rate and the fraud test's exact
  detection probability at the network's settings
  (:func:`poc_kernels.selfcheck.flag_probability`);
- the (threshold, sample size) pair of least sample size on a grid that keeps
  the honest node's false-flag probability at most 1e-6 (from the upper 95%
  bound of its mismatch rate) while flagging the cheater with at least 99%
  probability (from the lower 95% bound of its rate), or the statement that
  no such pair exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Callable, Optional

import numpy as np

from .constants import NETWORK_FRAUD_THRESHOLD, NETWORK_P_MISMATCH
from .selfcheck import (
    DEFAULT_THRESHOLDS,
    NETWORK_SAMPLE,
    SAFE_FALSE_FLAG,
    Engine,
    EngineConfig,
    clopper_pearson,
    flag_probability,
    in_batches,
    l2_against,
)

__all__ = ["VARIANTS", "auc", "cheaper_report", "format_cheaper", "make_variant", "parse_variant", "run_cheaper"]

VARIANTS = ("bf16", "int8", "fp8", "drop-layers:K")
#: the detection probability a validator wants against the cheater
CATCH = 0.99
#: the sample sizes searched for a (threshold, sample) pair
SAMPLE_GRID = (10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000)
_FP8_MAX = 448.0  # the largest float8 e4m3fn value


def parse_variant(text: str) -> tuple[str, int]:
    """Return ``(name, K)`` of a variant (``K`` is 0 but for ``drop-layers:K``); ValueError when unknown."""
    if text in ("bf16", "int8", "fp8"):
        return text, 0
    m = re.fullmatch(r"drop-layers:(\d+)", text)
    if m and int(m.group(1)) >= 1:
        return "drop-layers", int(m.group(1))
    raise ValueError(f"must be one of {', '.join(VARIANTS)} (K >= 1), got {text!r}")


def fake_quantize(w, kind: str):
    """Return ``w`` ``[out, in]`` quantized per output channel (symmetric) to int8 or float8 e4m3, and back."""
    import torch

    x = w.float()
    amax = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    if kind == "int8":
        scale = amax / 127.0
        q = torch.round(x / scale).clamp(-127, 127) * scale
    elif kind == "fp8":
        scale = amax / _FP8_MAX
        q = (x / scale).to(torch.float8_e4m3fn).float() * scale
    else:
        raise ValueError(f"kind must be int8 or fp8, got {kind!r}")
    return q.to(w.dtype)


def make_variant(path: str, variant: str, out_dir: str) -> tuple[str, dict]:
    """Return ``(checkpoint directory, engine settings)`` of the cheater's model: a new checkpoint under
    ``out_dir`` for int8, fp8 and drop-layers, the honest one run in bfloat16 for bf16."""
    from safetensors.torch import load_file, save_file

    name, k = parse_variant(variant)
    if name == "bf16":
        return path, {"dtype": "bfloat16"}
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise ValueError(f"{path!r} holds no .safetensors weights")
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    layers = int(config["num_hidden_layers"])
    if name == "drop-layers" and k >= layers:
        raise ValueError(f"drop-layers:{k} would drop all {layers} decoder layers")
    tensors: dict[str, Any] = {}
    for f in files:
        tensors.update(load_file(os.path.join(path, f)))
    out: dict[str, Any] = {}
    for key, w in tensors.items():
        m = re.search(r"\.layers\.(\d+)\.", key)
        if name == "drop-layers":
            if m and int(m.group(1)) >= layers - k:
                continue
        elif w.dim() == 2 and key.endswith("proj.weight") and w.is_floating_point():
            w = fake_quantize(w, name)
        out[key] = w.contiguous()
    target = os.path.join(out_dir, variant.replace(":", "-"))
    os.makedirs(target, exist_ok=True)
    for f in os.listdir(path):  # config, tokenizer, templates
        if not f.endswith(".safetensors") and not f.endswith(".index.json") and os.path.isfile(os.path.join(path, f)):
            shutil.copy(os.path.join(path, f), os.path.join(target, f))
    if name == "drop-layers":
        config["num_hidden_layers"] = layers - k
        for key in ("layer_types",):  # per-layer lists of newer configs
            if isinstance(config.get(key), list):
                config[key] = config[key][: layers - k]
        with open(os.path.join(target, "config.json"), "w") as f:
            json.dump(config, f, indent=1)
    save_file(out, os.path.join(target, "model.safetensors"), metadata={"format": "pt"})
    return target, {"model": target}


def auc(honest: np.ndarray, cheater: np.ndarray) -> float:
    """The probability that a cheater's L2 exceeds an honest one's (ties counted half): 0.5 cannot tell them apart."""
    h = np.sort(honest[np.isfinite(honest)])
    c = cheater[np.isfinite(cheater)]
    if not h.size or not c.size:
        raise ValueError("auc needs finite distances on both sides")
    below = np.searchsorted(h, c, side="left")
    equal = np.searchsorted(h, c, side="right") - below
    return float((below + 0.5 * equal).sum() / (h.size * c.size))


def _rate(d: np.ndarray, t: float) -> tuple[int, int]:
    d = d[np.isfinite(d)]
    return int(np.count_nonzero(~(d <= t))), int(d.size)


def best_pair(
    honest: np.ndarray,
    cheater: np.ndarray,
    thresholds: Sequence[float],
    *,
    p_mismatch: float = NETWORK_P_MISMATCH,
    alpha: float = NETWORK_FRAUD_THRESHOLD,
    max_false_flag: float = SAFE_FALSE_FLAG,
    catch: float = CATCH,
    grid: Sequence[int] = SAMPLE_GRID,
) -> Optional[dict]:
    """The (threshold, sample) pair of least sample size on ``grid`` (then least threshold) that keeps the honest
    false flag <= ``max_false_flag`` (upper bound of its rate) and catches the cheater with >= ``catch`` (lower
    bound of its rate); None when none does. Thresholds tried: ``thresholds``, the honest L2 maximum and the
    cheater's L2 deciles."""
    c = cheater[np.isfinite(cheater)]
    h = honest[np.isfinite(honest)]
    candidates = {float(t) for t in thresholds} | {float(h.max())}
    candidates |= {float(x) for x in np.quantile(c, np.linspace(0.05, 0.95, 19))}
    for n in grid:
        for t in sorted(candidates):
            kh, nh = _rate(honest, t)
            kc, nc = _rate(cheater, t)
            h_up = clopper_pearson(kh, nh)[1]
            c_low = clopper_pearson(kc, nc)[0]
            ff = flag_probability(h_up, n, p_mismatch, alpha)
            if ff > max_false_flag:
                continue
            det = flag_probability(c_low, n, p_mismatch, alpha)
            if det >= catch:
                return {
                    "threshold": t,
                    "sample": n,
                    "honest_rate_upper": h_up,
                    "false_flag": ff,
                    "cheater_rate_lower": c_low,
                    "detection": det,
                }
    return None


def cheaper_report(
    variant: str,
    honest: np.ndarray,
    cheater: np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    sample: int = NETWORK_SAMPLE,
    p_mismatch: float = NETWORK_P_MISMATCH,
    alpha: float = NETWORK_FRAUD_THRESHOLD,
) -> dict:
    """The figures of one variant from the honest floor's and the cheater's per-nonce L2 (see the module)."""
    finite = cheater[np.isfinite(cheater)]
    per = {}
    for t in sorted({float(x) for x in thresholds}):
        kh, nh = _rate(honest, t)
        kc, nc = _rate(cheater, t)
        per[f"{t:g}"] = {
            "honest_rate": kh / nh,
            "cheater_rate": kc / nc,
            "false_flag_upper": flag_probability(clopper_pearson(kh, nh)[1], sample, p_mismatch, alpha),
            "detection": flag_probability(kc / nc, sample, p_mismatch, alpha),
        }
    pair = best_pair(honest, cheater, thresholds, p_mismatch=p_mismatch, alpha=alpha)
    return {
        "variant": variant,
        "n": int(finite.size),
        "honest_l2_max": float(np.nanmax(honest)),
        "honest_l2_p50": float(np.nanquantile(honest, 0.5)),
        "cheater_l2_min": float(finite.min()),
        "cheater_l2_p50": float(np.quantile(finite, 0.5)),
        "cheater_l2_max": float(finite.max()),
        "auc": auc(honest, cheater),
        "sample": sample,
        "p_mismatch": p_mismatch,
        "alpha": alpha,
        "thresholds": per,
        "pair": pair,
        "no_pair": None
        if pair is not None
        else f"no threshold keeps honest false flags <= {SAFE_FALSE_FLAG:g} while catching >= {CATCH:.0%} "
        f"at any sample size up to {SAMPLE_GRID[-1]}",
    }


def run_cheaper(
    config: EngineConfig,
    variants: Sequence[str],
    nonces: int,
    batch_size: int,
    work_dir: str,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    sample: int = NETWORK_SAMPLE,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Mine and recompute honestly, then mine with each variant (one engine at a time); return the report."""
    say = progress or (lambda text: None)
    for v in variants:
        parse_variant(v)
    mined_batches = in_batches(range(nonces), batch_size)
    shuffled = in_batches(np.random.default_rng(seed).permutation(nonces).tolist(), batch_size)
    config = replace(config, max_num_seqs=batch_size)
    say(f"honest engine: mining {nonces} nonces, and recomputing them in shuffled batches")
    with Engine(config) as engine:
        mined = engine.batches(mined_batches, nonces)
        validator = engine.batches(shuffled, nonces)
    honest = l2_against(mined, validator)
    out: dict[str, Any] = {
        "honest": {
            "composition": "shuffled",
            "n": int(np.isfinite(honest).sum()),
            "l2_max": float(np.nanmax(honest)),
            "l2_p50": float(np.nanquantile(honest, 0.5)),
            "bitwise_equal": int(np.count_nonzero(honest == 0)),
        },
        "variants": [],
        "l2": {"honest": honest.tolist()},
    }
    for v in variants:
        path, settings = make_variant(config.model, v, work_dir)
        say(f"cheater {v}: mining with {settings}")
        with Engine(replace(config, **settings)) as engine:
            cheat = engine.batches(mined_batches, nonces)
        d = l2_against(cheat, validator)
        out["variants"].append(cheaper_report(v, honest, d, thresholds, sample=sample))
        out["l2"][v] = [None if not np.isfinite(x) else float(x) for x in d]
        if path != config.model:
            shutil.rmtree(path, ignore_errors=True)
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_cheaper(report: dict) -> str:
    """The cheap-model audit as text."""
    h = report["honest"]
    lines = [
        f"honest floor ({h['composition']} recomputation): {h['n']} nonces, max L2 {h['l2_max']:.4g}, "
        f"median {h['l2_p50']:.4g}, {h['bitwise_equal']} bitwise equal",
        "",
        f"  {'variant':<16}{'L2 min':>9}{'median':>9}{'max':>9}{'AUC':>7}   per threshold: cheater's mismatch rate "
        f"/ detection at {report['variants'][0]['sample'] if report['variants'] else NETWORK_SAMPLE} nonces",
    ]
    for v in report["variants"]:
        per = "  ".join(f">{t}: {_pct(x['cheater_rate'])}/{_pct(x['detection'])}" for t, x in v["thresholds"].items())
        lines.append(
            f"  {v['variant']:<16}{v['cheater_l2_min']:>9.4g}{v['cheater_l2_p50']:>9.4g}{v['cheater_l2_max']:>9.4g}"
            f"{v['auc']:>7.3f}   {per}"
        )
    lines.append("")
    for v in report["variants"]:
        p = v["pair"]
        if p is None:
            lines.append(f"  {v['variant']}: {v['no_pair']}")
        else:
            lines.append(
                f"  {v['variant']}: dist_threshold {p['threshold']:.4g} with {p['sample']} nonces: honest false flag "
                f"{p['false_flag']:.1e}, detection {_pct(p['detection'])} (from the bounds of the rates)"
            )
    return "\n".join(lines)
