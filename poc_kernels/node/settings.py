"""Every bound and environment variable of the node, read once at import, in one place.

The node's modules read them as ``settings.NAME`` when they need them, so a
test (or an embedding application) can change one by setting the attribute.

| variable | default | what |
|---|---|---|
| ``POC_API`` | ``artifacts`` | the API a node speaks: ``artifacts`` (the network's v2 API) or ``distance`` |
| ``POC_API_KEY`` | (none) | the Bearer key of the PoC routes (else ``--api-key``, else ``VLLM_API_KEY``) |
| ``POC_MAX_BODY_BYTES`` | 16 MiB | the largest request body of a PoC route (413 above, before parsing) |
| ``POC_MAX_ID_CHARS`` | 256 | the longest ``block_hash`` and ``public_key`` (422 longer) |
| ``POC_MAX_MODEL_CHARS`` | 512 | the longest ``params.model`` (422 longer) |
| ``POC_MAX_URL_CHARS`` | 2048 | the longest callback URL (422 longer) |
| ``POC_HONOUR_P_VALUE_THRESHOLD`` | 0 | 1: ``p_value_threshold`` sets alpha; 0: it is ignored, as deployed |
| ``POC_BATCH_INVARIANT`` | 0 | 1: the standalone node's engine in vLLM's batch-invariant mode (CUDA only, untested) |
| ``POC_MAX_BATCH_TOKENS`` | 4194304 | the most tokens one engine batch of a round may hold (batch size x seq_len) |
| ``POC_MAX_EMBED_BYTES`` | 1 GiB | with an engine that takes prompt_embeds: the most embedding bytes of one batch |
| ``POC_MAX_VALIDATE_NONCES`` | 4096 | the most nonces of one seeds' ``/validate`` (413 above) |
| ``POC_BATCH_SIZE_DEFAULT`` | 32 | nonces per engine batch when a v2 request gives no ``batch_size`` |
| ``POC_MAX_QUEUED_NONCES`` | 100000 | the most nonces waiting in the v2 ``/generate`` queue (429; one request: 413) |
| ``POC_MAX_WAIT_NONCES`` | 4096 | the most nonces of one v2 ``/generate`` with ``wait=true`` (413 above) |
| ``POC_MAX_STORED_JOBS`` | 1000 | finished v2 jobs kept in the result store (the oldest evicted first) |
| ``POC_MAX_STORED_NONCES`` | 400000 | nonces of the jobs kept in the result store |
| ``POC_CALLBACK_MAX_ARTIFACTS`` | 200000 | mined artifacts waiting for their callback (the oldest dropped, counted) |
| ``POC_CALLBACK_INTERVAL_S`` | 5 | at most one mining ``/generated`` POST per this many seconds |
| ``POC_CALLBACK_ATTEMPTS`` | 5 | delivery attempts of one callback |
| ``POC_CALLBACK_BACKOFF_S`` | 0.5 | the first retry's delay; it doubles with each attempt |
| ``POC_CALLBACK_MAX_CONCURRENT`` | 10 | callback deliveries running at once, per lane (mining, jobs) |
| ``POC_CALLBACK_MAX_WAITING`` | 1000 | deliveries waiting for a slot, per lane (the oldest dropped beyond, counted) |
| ``POC_CALLBACK_DEADLINE_S`` | 10 | the deadline of one whole delivery attempt: connect, send, answer |
| ``POC_CALLBACK_HOSTS`` | (any) | comma-separated hosts that callback URLs may name (400 for another) |
| ``POC_RETRY_AFTER_S`` | 30 | ``Retry-After`` of the 503 that gated inference routes answer |
| ``VLLM_HTTP_TIMEOUT_KEEP_ALIVE`` | 5 | seconds an idle connection stays open (vLLM's variable; the node's too) |
"""

from __future__ import annotations

import os
from typing import Optional


def _read(name: str, default, kind, what: str):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None


def _int(name: str, default: int) -> int:
    return _read(name, default, int, "an integer")


def _float(name: str, default: float) -> float:
    return _read(name, default, float, "a number")


def _str(name: str, default: Optional[str]) -> Optional[str]:
    return _read(name, default, str, "a string")


#: The two APIs a node can speak: the network's v2 API of the artifact scheme, and the seeds' distance scheme.
POC_APIS = ("artifacts", "distance")
#: The largest block height accepted (int64 clients read it back).
INT64_MAX = 2**63 - 1
#: Nonces are 32-bit: node ids lie below it, and more nodes than nonces make no sense.
NONCE_SPACE = 2**32

MAX_BATCH_TOKENS = _int("POC_MAX_BATCH_TOKENS", 2**22)
MAX_EMBED_BYTES = _int("POC_MAX_EMBED_BYTES", 1 << 30)
MAX_VALIDATE_NONCES = _int("POC_MAX_VALIDATE_NONCES", 4096)
DEFAULT_BATCH_SIZE = _int("POC_BATCH_SIZE_DEFAULT", 32)
MAX_QUEUED_NONCES = _int("POC_MAX_QUEUED_NONCES", 100_000)
MAX_WAIT_NONCES = _int("POC_MAX_WAIT_NONCES", 4096)
MAX_STORED_JOBS = _int("POC_MAX_STORED_JOBS", 1000)
MAX_STORED_NONCES = _int("POC_MAX_STORED_NONCES", 400_000)
MAX_BUFFERED_ARTIFACTS = _int("POC_CALLBACK_MAX_ARTIFACTS", 200_000)
CALLBACK_INTERVAL_S = _float("POC_CALLBACK_INTERVAL_S", 5.0)
CALLBACK_ATTEMPTS = _int("POC_CALLBACK_ATTEMPTS", 5)
CALLBACK_BACKOFF_S = _float("POC_CALLBACK_BACKOFF_S", 0.5)
CALLBACK_MAX_CONCURRENT = _int("POC_CALLBACK_MAX_CONCURRENT", 10)
CALLBACK_MAX_WAITING = _int("POC_CALLBACK_MAX_WAITING", 1000)
CALLBACK_DEADLINE_S = _float("POC_CALLBACK_DEADLINE_S", 10.0)
CALLBACK_HOSTS = _str("POC_CALLBACK_HOSTS", None)
API_KEY = _str("POC_API_KEY", None)
MAX_BODY_BYTES = _int("POC_MAX_BODY_BYTES", 16 << 20)
MAX_ID_CHARS = _int("POC_MAX_ID_CHARS", 256)
MAX_MODEL_CHARS = _int("POC_MAX_MODEL_CHARS", 512)
MAX_URL_CHARS = _int("POC_MAX_URL_CHARS", 2048)
HONOUR_P_VALUE_THRESHOLD = _int("POC_HONOUR_P_VALUE_THRESHOLD", 0) == 1
#: vLLM's batch-invariant mode for the standalone node's engine (``VLLM_BATCH_INVARIANT=1``; CUDA only)
BATCH_INVARIANT = _int("POC_BATCH_INVARIANT", 0) == 1
RETRY_AFTER_S = _int("POC_RETRY_AFTER_S", 30)
HTTP_TIMEOUT_KEEP_ALIVE_S = _int("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", 5)

#: The deepest nesting of arrays and objects in a PoC request body (422 deeper; the bodies need 4).
MAX_JSON_DEPTH = 32
#: Bodies above this many bytes are parsed in a thread, so that the event loop keeps serving.
PARSE_INLINE_BYTES = 256 << 10
#: How long shutdown waits for callbacks still being delivered.
CALLBACK_DRAIN_S = 5.0
#: The timeout of one callback POST (per read; the whole attempt has CALLBACK_DEADLINE_S).
CALLBACK_TIMEOUT_S = 5.0
#: The most bytes of a callback receiver's answer that are read (the rest is not).
CALLBACK_MAX_ANSWER_BYTES = 64 << 10
#: How often a queued v2 job checks whether mining has stopped.
MINING_POLL_S = 0.1
#: How often a long request checks that its client is still connected.
DISCONNECT_POLL_S = 0.5
#: The seeds' /status answers with at most this many valid nonces on the event loop; more are serialized in a thread.
STATUS_INLINE_NONCES = 20_000
#: How often the standalone node checks that its engine is alive, and how long it lets requests finish at shutdown.
ENGINE_WATCH_S = 1.0
SHUTDOWN_GRACE_S = 5


def poc_api(api: Optional[str] = None) -> str:
    """The API a node speaks: ``api``, else ``POC_API`` from the environment, else ``artifacts`` (the network's)."""
    value = api if api is not None else os.environ.get("POC_API", "artifacts")
    if value not in POC_APIS:
        where = "api" if api is not None else "POC_API"
        raise ValueError(f"{where} must be one of {POC_APIS}, got {value!r}")
    return value
