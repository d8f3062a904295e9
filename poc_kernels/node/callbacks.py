"""Callbacks: where they go, their delivery, and the buffer of mined artifacts waiting for one.

- :func:`join_callback`: ``{url}/generated`` or ``{url}/validated``, the query
  and fragment of ``url`` kept (tokens live there);
- :class:`CallbackSender`: delivers JSON payloads in the background, with
  bounded retries, a deadline on each attempt, bounded concurrency and a
  bounded waiting line in each of two lanes (mining, jobs); both APIs deliver
  through it;
- :func:`public_url`: a URL without its credentials and query, as ``/status``
  and the logs show it; :func:`log_event`: the node's structured log lines;
- :class:`ArtifactBuffer`: the network API's mined artifacts, bounded (the
  oldest dropped and counted), POSTed at most once every
  ``POC_CALLBACK_INTERVAL_S`` and flushed when mining stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Callable, Optional

from . import metrics, settings

logger = logging.getLogger("poc_kernels.node")

__all__ = ["LANES", "ArtifactBuffer", "CallbackSender", "endpoint_of", "join_callback", "log_event", "public_url"]


def log_event(event: str, round: Any = None, **fields: Any) -> None:
    """One structured log line: ``poc_event=EVENT key=value ...`` (values as JSON), led by the ``block_height``,
    ``node_id`` and ``node_count`` of ``round`` (a round's config or request) when given. Never artifacts or keys."""
    import json

    if round is not None:
        head = {f: getattr(round, f, None) for f in ("block_height", "node_id", "node_count")}
        fields = {**head, **fields}
    line = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
    level = logging.WARNING if event.endswith("failed") else logging.INFO
    logger.log(level, "poc_event=%s %s", event, line)


def join_callback(url: Optional[Any], path: str) -> Optional[str]:
    """``url`` with ``path`` (``/generated`` or ``/validated``) joined to its path, before its query and fragment,
    which are kept (tokens live there); None without a URL."""
    if url is None:
        return None
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(str(url))
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


def public_url(url: Any) -> str:
    """``url`` as ``/status`` and the logs show it: without its credentials, query and fragment (tokens live
    there)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def endpoint_of(url: Any) -> str:
    """The callback's endpoint, the last segment of its path (``generated`` or ``validated``): a metric label."""
    from urllib.parse import urlsplit

    return urlsplit(str(url)).path.rstrip("/").rsplit("/", 1)[-1] or "/"


#: The lanes of deliveries, each with its own slots and waiting line: mining callbacks never wait behind jobs'.
LANES = ("mining", "jobs")


class _Lane:
    def __init__(self, max_concurrent: int) -> None:
        self.slots = asyncio.Semaphore(max_concurrent)
        self.waiting: deque = deque()


class CallbackSender:
    """Delivers JSON payloads in the background: bounded retries with exponential backoff, failures recorded.

    Deliveries go in one of two lanes (:data:`LANES`): ``mining`` (the mined
    artifacts, the seeds' ``/generated``) and ``jobs`` (the results of jobs and
    validations). Each lane runs at most ``max_concurrent`` deliveries at once;
    at most ``max_waiting`` more wait for a slot, and beyond that the oldest
    waiting one is dropped (counted in ``dropped``), so that a receiver that is
    down costs bounded memory however long the node runs, and slow receivers
    of jobs cannot hold up a round's mining callbacks.

    Each attempt (connect, send, answer) ends by ``deadline_s``, however
    slowly a receiver trickles its answer; at most ``CALLBACK_MAX_ANSWER_BYTES``
    of the answer are read; redirects are not followed (a 3xx is a failure).
    ``/status`` and the logs show URLs without credentials or query
    (:func:`public_url`). Defaults come from :mod:`.settings`.
    """

    def __init__(
        self,
        attempts: Optional[int] = None,
        backoff_s: Optional[float] = None,
        timeout_s: Optional[float] = None,
        max_concurrent: Optional[int] = None,
        max_waiting: Optional[int] = None,
        deadline_s: Optional[float] = None,
    ):
        self.attempts = attempts or settings.CALLBACK_ATTEMPTS
        self.backoff_s = backoff_s if backoff_s is not None else settings.CALLBACK_BACKOFF_S
        self.timeout_s = timeout_s if timeout_s is not None else settings.CALLBACK_TIMEOUT_S
        self.deadline_s = deadline_s if deadline_s is not None else settings.CALLBACK_DEADLINE_S
        self.max_concurrent = max_concurrent or settings.CALLBACK_MAX_CONCURRENT
        self.max_waiting = max_waiting or settings.CALLBACK_MAX_WAITING
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        #: deliveries and failures by endpoint (``generated``, ``validated``)
        self.delivered_by: dict = {}
        self.failed_by: dict = {}
        self.failures: deque = deque(maxlen=20)
        self._pending: set = set()
        self._lanes: dict = {}

    def _lane(self, name: str) -> _Lane:
        if name not in LANES:
            raise ValueError(f"lane must be one of {LANES}, got {name!r}")
        if name not in self._lanes:
            self._lanes[name] = _Lane(self.max_concurrent)
        return self._lanes[name]

    def send(self, url: str, payload: dict, lane: str = "jobs") -> None:
        """Queue one delivery in ``lane`` (returns at once)."""
        line = self._lane(lane)
        while len(line.waiting) >= self.max_waiting:
            oldest = line.waiting.popleft()
            oldest.cancel()
            self._pending.discard(oldest)
            self.dropped += 1
            metrics.CALLBACKS_DROPPED.inc()
        task = asyncio.get_running_loop().create_task(self._deliver_when_free(line, url, payload))
        line.waiting.append(task)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _deliver_when_free(self, line: _Lane, url: str, payload: dict) -> None:
        async with line.slots:
            me = asyncio.current_task()
            if me in line.waiting:
                line.waiting.remove(me)
            await self._deliver(url, payload)

    async def _attempt(self, client: Any, url: str, payload: dict) -> Optional[str]:
        """One delivery attempt: None when delivered, else why not (the answer read up to a size cap)."""
        async with client.stream("POST", url, json=payload) as response:
            if response.status_code < 300:
                return None
            answer = b""
            async for chunk in response.aiter_bytes():
                answer += chunk
                if len(answer) >= settings.CALLBACK_MAX_ANSWER_BYTES:
                    break
            text = answer[:200].decode("utf-8", "replace").strip()
            if 300 <= response.status_code < 400:
                return f"HTTP {response.status_code} (redirects are not followed)"
            return f"HTTP {response.status_code}" + (f": {text}" if text else "")

    async def _deliver(self, url: str, payload: dict) -> None:
        import httpx

        shown = public_url(url)
        error = ""
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
            for attempt in range(1, self.attempts + 1):
                try:
                    error = await asyncio.wait_for(self._attempt(client, url, payload), self.deadline_s)
                    if error is None:
                        self._count(self.delivered_by, url)
                        metrics.DELIVERIES.labels(endpoint=metrics.endpoint_label(endpoint_of(url))).inc()
                        self.delivered += 1
                        return
                except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
                    error = f"{type(exc).__name__}: no whole answer from {shown} within {self.deadline_s} s"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__} posting to {shown}: {str(exc).replace(str(url), shown)}"
                if attempt < self.attempts:
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        self.failed += 1
        self._count(self.failed_by, url)
        metrics.FAILURES.labels(endpoint=metrics.endpoint_label(endpoint_of(url))).inc()
        self.failures.append({"url": shown, "attempts": self.attempts, "error": error, "time": time.time()})
        ids = {f: payload.get(f) for f in ("block_height", "node_id")}
        log_event("callback_failed", **ids, endpoint=endpoint_of(url), url=shown, attempts=self.attempts, error=error)

    @staticmethod
    def _count(table: dict, url: str) -> None:
        endpoint = endpoint_of(url)
        table[endpoint] = table.get(endpoint, 0) + 1

    def status(self) -> dict:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "dropped": self.dropped,
            "pending": len(self._pending),
            "failures": list(self.failures),
        }

    async def drain(self, timeout: Optional[float] = None) -> None:
        """Wait for the queued deliveries (tests and shutdown); with ``timeout``, cancel what is left after it."""
        tasks = list(self._pending)
        if not tasks:
            return
        done, left = await asyncio.wait(tasks, timeout=timeout)
        for task in left:
            task.cancel()
        if left:
            logger.warning("PoC callbacks: %d deliveries still pending at shutdown were cancelled", len(left))
            await asyncio.gather(*left, return_exceptions=True)


class ArtifactBuffer:
    """Mined artifacts waiting for their ``/generated`` callback, delivered through a :class:`CallbackSender`.

    :meth:`open` starts a round's buffer: every ``interval_s`` what is
    buffered goes out in one POST of ``{**head, "artifacts": [...],
    "encoding": encoding}``; the flusher ends once ``running()`` is false and
    the buffer is empty. At most ``max_artifacts`` wait (the oldest are
    dropped, counted in ``dropped``). :meth:`close` stops the flusher and
    delivers what is left: what was mined is sent, not lost.
    """

    def __init__(
        self, sender: CallbackSender, *, max_artifacts: Optional[int] = None, interval_s: Optional[float] = None
    ) -> None:
        self.sender = sender
        self.max_artifacts = max_artifacts or settings.MAX_BUFFERED_ARTIFACTS
        self.interval_s = interval_s if interval_s is not None else settings.CALLBACK_INTERVAL_S
        self.dropped = 0
        self._items: deque = deque()
        self._url: Optional[str] = None
        self._head: dict = {}
        self._encoding: dict = {}
        self._flusher: Optional[asyncio.Task] = None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def open(self, url: Optional[str], head: dict, encoding: dict, running: Callable[[], bool]) -> None:
        """Buffer for ``url`` (no buffering without one); flush every ``interval_s`` while ``running()``."""
        self._url, self._head, self._encoding = url, dict(head), dict(encoding)
        if url is not None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_every(running))

    def add(self, artifacts: list) -> None:
        """Buffer ``artifacts`` (nothing without a URL); drop the oldest beyond ``max_artifacts``."""
        if self._url is None:
            return
        self._items.extend(artifacts)
        while len(self._items) > self.max_artifacts:
            self._items.popleft()
            self.dropped += 1
            metrics.ARTIFACTS_DROPPED.inc()

    def flush(self) -> None:
        """POST what is buffered (in the background)."""
        if self._url is None or not self._items:
            return
        artifacts = list(self._items)
        self._items.clear()
        payload = {**self._head, "artifacts": artifacts, "encoding": self._encoding}
        self.sender.send(self._url, payload, lane="mining")

    async def close(self) -> None:
        """Stop flushing and deliver what is left."""
        task, self._flusher = self._flusher, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.flush()

    async def _flush_every(self, running: Callable[[], bool]) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.flush()
            if not running() and not self._items:
                return

    def status(self) -> dict:
        return {"artifacts_buffered": len(self._items), "artifacts_dropped": self.dropped}
