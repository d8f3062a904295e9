"""The node's Prometheus metrics, in ``prometheus_client``'s default registry (the one vLLM's ``/metrics`` serves).

| metric | type | what |
|---|---|---|
| ``poc_nonces_mined_total`` | counter | nonces computed by mining (both APIs) |
| ``poc_mining_rate_nonces_per_second`` | gauge | the current round's mining rate (0 when not mining) |
| ``poc_artifacts_buffered`` | gauge | mined artifacts waiting for their ``/generated`` callback |
| ``poc_artifacts_dropped_total`` | counter | mined artifacts dropped from a full buffer |
| ``poc_callback_deliveries_total{endpoint}`` | counter | callbacks delivered, by endpoint |
| ``poc_callback_failures_total{endpoint}`` | counter | callbacks that failed every attempt, by endpoint |
| ``poc_callbacks_dropped_total`` | counter | callbacks dropped from a full waiting line |
| ``poc_jobs_queued`` | gauge | v2 ``/generate`` jobs waiting in the queue |
| ``poc_jobs_running`` | gauge | jobs and validations computing now |
| ``poc_jobs_finished_total{kind,result}`` | counter | finished jobs, by ``kind`` and ``result`` |
| ``poc_mismatches_total`` | counter | mismatching nonces found by validations |
| ``poc_fraud_verdicts_total{fraud}`` | counter | validation verdicts, ``fraud`` true or false |
| ``poc_state{state}`` | gauge | 1 for the node's current state, 0 for the others |
| ``poc_engine_call_seconds{kind}`` | histogram | the time of one engine batch: ``mining``, ``job`` or ``validation`` |

The ``endpoint`` of callbacks is ``generated``, ``validated`` or ``other``;
the ``kind`` of jobs is ``generate`` or ``validate``, their ``result``
``completed``, ``failed`` or ``cancelled``; the states are ``GENERATING``,
``VALIDATING``, ``IDLE`` and ``STOPPED``. Counters count over the process's lifetime; the gauges read the node that
was created last (:func:`watch`) at each scrape. With
``PROMETHEUS_MULTIPROC_DIR`` set (vLLM's multi-process API servers), the
gauges are not exported: they live in one process only.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Optional

__all__ = ["watch"]

_node: Optional[weakref.ref] = None
STATES = ("GENERATING", "VALIDATING", "IDLE", "STOPPED")
ENDPOINTS = ("generated", "validated")


def watch(node: Any) -> None:
    """Let the gauges read ``node`` (an ``ArtifactNode`` or a ``PoCManager``; the last one created wins)."""
    global _node
    _node = weakref.ref(node)


def endpoint_label(endpoint: str) -> str:
    """``generated`` or ``validated``; ``other`` for any other path (a label's values must stay few)."""
    return endpoint if endpoint in ENDPOINTS else "other"


class _Nothing:
    """A metric that records nothing, when prometheus_client is not installed."""

    def labels(self, *args: Any, **kw: Any) -> _Nothing:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, value: float) -> None:
        pass


def _live() -> Any:
    from prometheus_client.core import GaugeMetricFamily

    class Live:
        """The gauges, read from the watched node at each scrape."""

        def describe(self):
            return list(self._families({}))

        def collect(self):
            node = _node() if _node is not None else None
            return self._families(node.metrics_snapshot() if node is not None else {})

        @staticmethod
        def _families(snap: dict):
            rate = GaugeMetricFamily(
                "poc_mining_rate_nonces_per_second", "the current round's mining rate (0 when not mining)"
            )
            rate.add_metric([], snap.get("rate", 0.0))
            buffered = GaugeMetricFamily("poc_artifacts_buffered", "mined artifacts waiting for their callback")
            buffered.add_metric([], snap.get("buffered", 0))
            queued = GaugeMetricFamily("poc_jobs_queued", "v2 /generate jobs waiting in the queue")
            queued.add_metric([], snap.get("queued", 0))
            running = GaugeMetricFamily("poc_jobs_running", "jobs and validations computing now")
            running.add_metric([], snap.get("running", 0))
            state = GaugeMetricFamily("poc_state", "1 for the node's current state", labels=["state"])
            for name in STATES:
                state.add_metric([name], 1.0 if snap.get("state") == name else 0.0)
            return [rate, buffered, queued, running, state]

    return Live()


def _register() -> dict:
    try:
        from prometheus_client import REGISTRY, Counter, Histogram
    except ImportError:
        nothing = _Nothing()
        return dict.fromkeys(
            ("nonces", "artifacts_dropped", "deliveries", "failures", "callbacks_dropped", "jobs_finished",
             "mismatches", "verdicts", "engine_seconds"),
            nothing,
        )  # fmt: skip
    made = {
        "nonces": Counter("poc_nonces_mined", "nonces computed by mining (both APIs)"),
        "artifacts_dropped": Counter("poc_artifacts_dropped", "mined artifacts dropped from a full buffer"),
        "deliveries": Counter("poc_callback_deliveries", "callbacks delivered, by endpoint", ["endpoint"]),
        "failures": Counter("poc_callback_failures", "callbacks that failed every attempt, by endpoint", ["endpoint"]),
        "callbacks_dropped": Counter("poc_callbacks_dropped", "callbacks dropped from a full waiting line"),
        "jobs_finished": Counter("poc_jobs_finished", "finished jobs by kind and result", ["kind", "result"]),
        "mismatches": Counter("poc_mismatches", "mismatching nonces found by validations"),
        "verdicts": Counter("poc_fraud_verdicts", "validation verdicts by outcome", ["fraud"]),
        "engine_seconds": Histogram(
            "poc_engine_call_seconds",
            "the time of one engine batch, by kind (mining, job, validation)",
            ["kind"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        ),
    }
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        REGISTRY.register(_live())
    return made


_METRICS = _register()
NONCES = _METRICS["nonces"]
ARTIFACTS_DROPPED = _METRICS["artifacts_dropped"]
DELIVERIES = _METRICS["deliveries"]
FAILURES = _METRICS["failures"]
CALLBACKS_DROPPED = _METRICS["callbacks_dropped"]
JOBS_FINISHED = _METRICS["jobs_finished"]
MISMATCHES = _METRICS["mismatches"]
VERDICTS = _METRICS["verdicts"]
ENGINE_SECONDS = _METRICS["engine_seconds"]


def verdict(n_mismatch: int, fraud: bool) -> None:
    """Count one validation verdict."""
    MISMATCHES.inc(n_mismatch)
    VERDICTS.labels(fraud="true" if fraud else "false").inc()


def exposition() -> tuple:
    """``(body, content type)`` of the default registry, for the standalone node's ``/metrics``."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
