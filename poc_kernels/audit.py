"""``poc-kernels audit``: how much of a proof can be had without running the model on the challenged nonce.

A model whose final-norm hidden state is nearly constant across inputs (one
massive coordinate, a participation ratio of a few dimensions) hands its proofs
to anyone who knows that constant: the post-processing of every scheme is public
and seeded, so a cheater can run it on a predicted hidden state instead of the
real one. For a model, per block hash, per scheme and with and without the
random projection (SPEC §10), this module measures:

- **structure** of the final hidden state: the share of its norm in the largest
  coordinate, the share of its energy in the 4 largest, the participation ratio
  ``(Σh²)² / Σh⁴``, and the dominant coordinate;
- **the model-free attack**: the predictor is the mean final hidden state of a
  public calibration set (nonces of another public key, on the same block: for
  the schemes with layer transforms the cheater runs those once per block),
  post-processed with the challenged nonce's public seeds.
  - distance scheme: the cheater claims the nonces that a predictor calls
    valid: the calibration mean's own distance below ``r_target``, or the sign
    that the nonce's flips leave on the dominant coordinate being the one under
    which more calibration nonces were valid (the best of the two is reported);
    reported are the claimed fraction, the fraction of those claims that are
    false (the true distance is not below ``r_target``), and the honest valid
    rate (a blind cheater's false-claim rate is one minus it);
  - artifact scheme: the cheater sends the predicted artifacts; reported is the
    fraction within ``dist_threshold`` of the true ones (float16 both), at the
    deployed node's 0.02 and the network client's 0.4;
- **conviction**: the exact probability that one validator's binomial test
  flags such a cheater (``validation.fraud.detection_power``) at the deployed
  settings, for several sample sizes, and the least sample size that reaches
  95%;
- **cross-block spread** (SPEC §8, as the study defines it): max − min over
  block hashes of the honest valid rate at ``r_target`` (one public key here).

Hidden states come from a transformers forward of the model (float32 by
default). The layer transforms hook each decoder layer's output, the residual
stream; vLLM applies them to its hidden and residual parts apart, which the
normalizing transform of SPEC §7 does not commute with, so the layer-hook
figures are those of this forward, close to but not bit for bit the engine's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Callable, Optional

import numpy as np
import torch

from . import vectors
from .api import apply_layer_transform, compute_artifacts, compute_distances, generate_inputs
from .constants import (
    ARTIFACT_DIST_THRESHOLD,
    ARTIFACT_FRAUD_THRESHOLD,
    ARTIFACT_K,
    ARTIFACT_P_MISMATCH,
    DISTANCE_P_HONEST,
    NETWORK_DIST_THRESHOLD,
    NETWORK_FRAUD_THRESHOLD,
    NETWORK_P_MISMATCH,
)
from .seeds import derive_nonce_seeds
from .validation.fraud import detection_power

__all__ = ["SCHEMES", "HiddenStates", "audit", "format_report", "structure"]

#: the schemes and modes audited: the distance scheme with sign flips (SPEC §5), with layer hooks instead
#: (SPEC §7), and the artifact scheme (SPEC-ARTIFACTS)
SCHEMES = ("sign_flips", "layer_hooks", "artifact")
PUBLIC_KEY = "node_A"
CALIBRATION_KEY = "public_calibration"
#: the distance scheme's deployed test: p_honest and the round's default fraud_threshold
DISTANCE_ALPHA = 0.01
CHECKS = (50, 200, 1000)


class HiddenStates:
    """Final-norm hidden states of the last position, from a transformers causal LM fed the nonces' inputs."""

    def __init__(self, model: Any, *, seq_len: int = 16, batch_size: int = 32) -> None:
        self.model = model.eval()
        self.hidden_size = int(model.config.hidden_size)
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.seq_len = seq_len
        self.batch_size = batch_size

    @classmethod
    def from_path(cls, path: str, *, dtype: torch.dtype = torch.float32, **kw: Any) -> HiddenStates:
        from transformers import AutoModelForCausalLM

        return cls(AutoModelForCausalLM.from_pretrained(path, dtype=dtype), **kw)

    def __call__(
        self, block_hash: str, public_key: str, nonces: Sequence[int], scheme: str, random_projection: bool
    ) -> torch.Tensor:
        """float32 ``[N, H]`` on the CPU, before the random projection's ``P_post`` (the post-processing adds it)."""
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        hooks = self._hooks(block_hash, normalize=scheme == "layer_hooks") if scheme != "sign_flips" else []
        out = []
        try:
            for i in range(0, len(nonces), self.batch_size):
                chunk = list(nonces[i : i + self.batch_size])
                x = generate_inputs(
                    block_hash,
                    public_key,
                    chunk,
                    self.seq_len,
                    self.hidden_size,
                    dtype=self.dtype,
                    device=self.device,
                    random_projection=random_projection,
                )
                with torch.no_grad():
                    out.append(self.model.model(inputs_embeds=x).last_hidden_state[:, -1].float().cpu())
        finally:
            for h in hooks:
                h.remove()
        return torch.cat(out)

    def _hooks(self, block_hash: str, normalize: bool) -> list:
        handles = []
        for i, layer in enumerate(self.model.model.layers):
            v = vectors.layer_vector(block_hash, i, self.hidden_size, device=self.device).to(self.dtype)

            def hook(module, inputs, output, v=v):
                if isinstance(output, tuple):
                    return (apply_layer_transform(output[0], v, normalize=normalize), *output[1:])
                return apply_layer_transform(output, v, normalize=normalize)

            handles.append(layer.register_forward_hook(hook))
        return handles


def structure(h: torch.Tensor) -> dict:
    """Concentration of hidden states ``[N, H]``: norm share of the largest coordinate, energy share of the 4
    largest, participation ratio, and the coordinate that is most often the largest."""
    h = h.double()
    sq = h * h
    total = sq.sum(dim=1)
    top = sq.topk(min(4, h.shape[1]), dim=1).values
    ok = total > 0
    top_dims = Counter(h.abs().argmax(dim=1).tolist())
    dim, count = top_dims.most_common(1)[0]
    return {
        "top1_norm_share": float((top[ok, 0].sqrt() / total[ok].sqrt()).mean()),
        "top4_energy_share": float((top[ok].sum(dim=1) / total[ok]).mean()),
        "participation_ratio": float((total[ok] ** 2 / (sq[ok] ** 2).sum(dim=1)).mean()),
        "dominant_coordinate": int(dim),
        "dominant_share_of_nonces": count / h.shape[0],
        "hidden_size": int(h.shape[1]),
    }


#: the sample sizes searched for 95% power
_GRID = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000)


def conviction(p_cheater: float, p_honest: float, alpha: float, checks: Sequence[int] = CHECKS) -> dict:
    """Exact power of one validator's test against mismatch rate ``p_cheater``, per sample size, and the least
    sample size of 10, 20, 50, ..., 100 000 that reaches 95% (None when none does)."""
    p = min(max(p_cheater, 1e-12), 1 - 1e-12)  # the power functions take an open interval; 0 and 1 are its limits
    powers = {str(n): detection_power(n, p_honest, p, alpha) for n in checks}
    n95 = next((n for n in _GRID if detection_power(n, p_honest, p, alpha) >= 0.95), None)
    return {"p_cheater": p_cheater, "p_honest": p_honest, "alpha": alpha, "power": powers, "checks_for_95": n95}


def _dominant_sign(h: torch.Tensor, dim: int, block_hash: str, public_key: str, nonces, flips: bool) -> np.ndarray:
    """The sign the final state's dominant coordinate has where the post-processing sees it (after the flips)."""
    s = torch.sign(h[:, dim]).numpy()
    if flips:
        seeds = derive_nonce_seeds(block_hash, public_key, nonces).signs
        s = s * vectors.sign_flips(seeds, h.shape[1])[:, dim].numpy()
    return s


def _claims(valid: np.ndarray, claim: np.ndarray) -> dict:
    false = int(np.count_nonzero(claim & ~valid))
    return {
        "nonces": int(claim.size),
        "claims": int(np.count_nonzero(claim)),
        "false_claims": false,
        "claimed_fraction": float(claim.mean()),
        "false_claim_rate": false / max(1, int(np.count_nonzero(claim))),
    }


def _pooled(parts: list) -> dict:
    """Claims pooled over blocks: each claim counts once, whatever its block's share."""
    out = {k: sum(p[k] for p in parts) for k in ("nonces", "claims", "false_claims")}
    out["claimed_fraction"] = out["claims"] / out["nonces"]
    out["false_claim_rate"] = out["false_claims"] / max(1, out["claims"])
    return out


def _distance_attack(h, cal_h, block_hash, nonces, public, *, flips: bool, projection: bool, r_target: float) -> dict:
    """The distance scheme's model-free claims, by two predictors; the best is the one with the fewest false
    claims among those that claim at least 5% of the nonces.

    - ``mean``: claim when the distance of the calibration mean, post-processed with the nonce's seeds, is below
      ``r_target``;
    - ``dominant_sign``: claim when the sign that the nonce's flips leave on the dominant coordinate is the one
      under which more calibration nonces were valid (without flips every nonce gets the same sign).
    """
    kw = dict(sign_flips=flips, random_projection=projection)
    n = len(nonces)
    m = cal_h.mean(dim=0, keepdim=True)
    d_true = compute_distances(h, block_hash, PUBLIC_KEY, nonces, **kw).double().numpy()
    valid = d_true < r_target
    d_mean = compute_distances(m.expand(n, -1), block_hash, PUBLIC_KEY, nonces, **kw).double().numpy()
    seen_m = vectors.project(m, vectors.random_projection(block_hash, m.shape[1], "post")) if projection else m
    dim = int(seen_m.abs().argmax())
    d_cal = compute_distances(cal_h, block_hash, CALIBRATION_KEY, public, **kw).double().numpy()
    s_cal = _dominant_sign(seen_m.expand(len(public), -1), dim, block_hash, CALIBRATION_KEY, public, flips)
    rate = {s: float(np.mean(d_cal[s_cal == s] < r_target)) if (s_cal == s).any() else 0.0 for s in (1.0, -1.0)}
    win = 1.0 if rate[1.0] >= rate[-1.0] else -1.0
    s_pred = _dominant_sign(seen_m.expand(n, -1), dim, block_hash, PUBLIC_KEY, nonces, flips)
    predictors = {"mean": _claims(valid, d_mean < r_target), "dominant_sign": _claims(valid, s_pred == win)}
    usable = {k: v for k, v in predictors.items() if v["claimed_fraction"] >= 0.05} or predictors
    best = min(usable, key=lambda k: usable[k]["false_claim_rate"])
    return {
        "honest_valid_rate": float(valid.mean()),
        "blind_false_rate": float(1.0 - valid.mean()),
        "predictors": predictors,
        "best_predictor": best,
        **predictors[best],
        "conviction": conviction(predictors[best]["false_claim_rate"], DISTANCE_P_HONEST, DISTANCE_ALPHA),
        "distances": d_true.tolist(),
    }


def _artifact_attack(h, m, block_hash, nonces, *, projection: bool) -> dict:
    kw = dict(k=ARTIFACT_K, random_projection=projection)
    a_true = compute_artifacts(h, block_hash, PUBLIC_KEY, nonces, **kw).half().double().numpy()
    a_pred = compute_artifacts(m.expand(len(nonces), -1), block_hash, PUBLIC_KEY, nonces, **kw)
    dist = np.linalg.norm(a_pred.half().double().numpy() - a_true, axis=1)
    out = {"distances": dist.tolist(), "median_distance": float(np.median(dist))}
    for name, threshold, p, alpha in (
        ("deployed", ARTIFACT_DIST_THRESHOLD, ARTIFACT_P_MISMATCH, ARTIFACT_FRAUD_THRESHOLD),
        ("network", NETWORK_DIST_THRESHOLD, NETWORK_P_MISMATCH, NETWORK_FRAUD_THRESHOLD),
    ):
        within = float(np.mean(dist <= threshold))
        out[name] = {
            "dist_threshold": threshold,
            "within_threshold": within,
            "conviction": conviction(1.0 - within, p, alpha),
        }
    return out


def audit(
    hidden: Callable,
    *,
    blocks: Sequence[str] = ("block_alpha", "block_beta"),
    nonces: int = 128,
    calibration: int = 32,
    r_target: float = 1.416,
    schemes: Sequence[str] = SCHEMES,
    projections: Sequence[bool] = (False, True),
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Run the audit with ``hidden(block_hash, public_key, nonces, scheme, random_projection)`` -> ``[N, H]``.

    Returns a JSON-ready dict: per scheme and projection setting, per block, the
    structure, the attack and the conviction figures, plus the cross-block
    spread of the distance modes and the figures averaged over blocks.
    """
    if not blocks:
        raise ValueError("blocks must name at least one block hash")
    if nonces < 1 or calibration < 1:
        raise ValueError(f"nonces and calibration must be >= 1, got {nonces} and {calibration}")
    challenged = list(range(nonces))
    public = list(range(calibration))
    runs = []
    for scheme in schemes:
        for projection in projections:
            per_block = {}
            for block in blocks:
                if progress is not None:
                    progress(f"{scheme}, random_projection={projection}, {block}")
                h = hidden(block, PUBLIC_KEY, challenged, scheme, projection)
                cal = hidden(block, CALIBRATION_KEY, public, scheme, projection)
                m = cal.mean(dim=0, keepdim=True)
                seen = h
                if projection:  # the post-processing sees h + h @ P_post
                    seen = vectors.project(h, vectors.random_projection(block, h.shape[1], "post"))
                row = {"structure": structure(seen)}
                dim = row["structure"]["dominant_coordinate"]
                if scheme == "artifact":
                    row["attack"] = _artifact_attack(h, m, block, challenged, projection=projection)
                else:
                    flips = scheme == "sign_flips"
                    row["attack"] = _distance_attack(
                        h, cal, block, challenged, public, flips=flips, projection=projection, r_target=r_target
                    )
                row["dominant_sign"] = _dominant_sign(
                    seen, dim, block, PUBLIC_KEY, challenged, scheme == "sign_flips"
                ).tolist()
                per_block[block] = row
            runs.append({"scheme": scheme, "random_projection": projection, "blocks": per_block, **_summary(per_block)})
    return {
        "nonces": nonces,
        "calibration": calibration,
        "r_target": r_target,
        "blocks": list(blocks),
        "public_key": PUBLIC_KEY,
        "calibration_key": CALIBRATION_KEY,
        "runs": runs,
    }


def _summary(per_block: dict) -> dict:
    rows = list(per_block.values())

    def mean(get):
        return float(np.mean([get(r) for r in rows]))

    out = {
        "top1_norm_share": mean(lambda r: r["structure"]["top1_norm_share"]),
        "participation_ratio": mean(lambda r: r["structure"]["participation_ratio"]),
    }
    attack = rows[0]["attack"]
    if "false_claim_rate" in attack:
        rates = [r["attack"]["honest_valid_rate"] for r in rows]
        predictors = {name: _pooled([r["attack"]["predictors"][name] for r in rows]) for name in attack["predictors"]}
        usable = {k: v for k, v in predictors.items() if v["claimed_fraction"] >= 0.05} or predictors
        best = min(usable, key=lambda k: usable[k]["false_claim_rate"])
        out.update(
            honest_valid_rate=float(np.mean(rates)),
            blind_false_rate=float(1.0 - np.mean(rates)),
            cross_block_spread=float(max(rates) - min(rates)),
            predictors=predictors,
            best_predictor=best,
            **predictors[best],
        )
        out["conviction"] = conviction(out["false_claim_rate"], DISTANCE_P_HONEST, DISTANCE_ALPHA)
    else:
        for name, p, alpha in (
            ("deployed", ARTIFACT_P_MISMATCH, ARTIFACT_FRAUD_THRESHOLD),
            ("network", NETWORK_P_MISMATCH, NETWORK_FRAUD_THRESHOLD),
        ):
            within = mean(lambda r, name=name: r["attack"][name]["within_threshold"])
            out[f"within_{name}"] = within
            out[f"conviction_{name}"] = conviction(1.0 - within, p, alpha)
    return out


def _pct(x: Optional[float]) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def format_report(report: dict) -> str:
    """The audit as text tables: one row per scheme and projection setting (averaged over blocks)."""
    lines = [
        f"{report['nonces']} challenged nonces per block ({', '.join(report['blocks'])}), predictor: the mean final "
        f"hidden state of {report['calibration']} calibration nonces; r_target {report['r_target']}",
        "",
        "distance scheme: the cheater claims the nonces its best predictor calls valid (false: the share of its",
        "claims that are not; blind: that share for claims at random, 1 - valid)",
        f"  {'mode':<12} {'proj':<5} {'top1 norm':>9} {'PR':>6} {'valid':>6} {'spread':>6} {'predictor':>13} "
        f"{'claimed':>8} {'false':>6} {'blind':>6} {'power@50':>8} {'@200':>6} {'@1000':>6} {'n for 95%':>9}",
    ]
    for run in report["runs"]:
        if "false_claim_rate" not in run:
            continue
        c = run["conviction"]
        lines.append(
            f"  {run['scheme']:<12} {'on' if run['random_projection'] else 'off':<5} {_pct(run['top1_norm_share']):>9} "
            f"{run['participation_ratio']:>6.1f} {_pct(run['honest_valid_rate']):>6} "
            f"{_pct(run['cross_block_spread']):>6} {run['best_predictor']:>13} {_pct(run['claimed_fraction']):>8} "
            f"{_pct(run['false_claim_rate']):>6} {_pct(run['blind_false_rate']):>6} "
            f"{_pct(c['power']['50']):>8} {_pct(c['power']['200']):>6} {_pct(c['power']['1000']):>6} "
            f"{c['checks_for_95'] if c['checks_for_95'] is not None else '—':>9}"
        )
    lines += [
        "",
        "artifact scheme: the cheater sends the predicted artifacts (float16)",
        f"  {'proj':<5} {'top1 norm':>9} {'PR':>6} {'within 0.02':>11} {'power@200':>9} {'within 0.4':>10} "
        f"{'power@200':>9} {'n for 95% (0.4)':>15}",
    ]
    for run in report["runs"]:
        if "within_deployed" not in run:
            continue
        d, n = run["conviction_deployed"], run["conviction_network"]
        lines.append(
            f"  {'on' if run['random_projection'] else 'off':<5} {_pct(run['top1_norm_share']):>9} "
            f"{run['participation_ratio']:>6.1f} {_pct(run['within_deployed']):>11} {_pct(d['power']['200']):>9} "
            f"{_pct(run['within_network']):>10} {_pct(n['power']['200']):>9} "
            f"{n['checks_for_95'] if n['checks_for_95'] is not None else '—':>15}"
        )
    lines += [
        "",
        "power: the exact probability that one validator's binomial test flags the cheater (distance: p_honest "
        f"{DISTANCE_P_HONEST}, alpha {DISTANCE_ALPHA}; artifact: 0.02/{ARTIFACT_P_MISMATCH}/{ARTIFACT_FRAUD_THRESHOLD} "
        f"deployed, 0.4/{NETWORK_P_MISMATCH}/{NETWORK_FRAUD_THRESHOLD} the network's client).",
    ]
    return "\n".join(lines)
