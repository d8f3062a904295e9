"""Callbacks: where they go, their delivery, and the buffer of mined artifacts waiting for one.

- :func:`join_callback`: ``{url}/generated`` or ``{url}/validated``, the query
  and fragment of ``url`` kept (tokens live there);
- :class:`CallbackSender`: delivers JSON payloads in the background, with
  bounded retries, bounded concurrency and a bounded waiting line; both APIs
  deliver through it;
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

from . import settings

logger = logging.getLogger("poc_kernels.node")

__all__ = ["ArtifactBuffer", "CallbackSender", "join_callback"]


def join_callback(url: Optional[Any], path: str) -> Optional[str]:
    """``url`` with ``path`` (``/generated`` or ``/validated``) joined to its path, before its query and fragment,
    which are kept (tokens live there); None without a URL."""
    if url is None:
        return None
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(str(url))
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


class CallbackSender:
    """Delivers JSON payloads in the background: bounded retries with exponential backoff, failures recorded.

    At most ``max_concurrent`` deliveries run at once; at most ``max_waiting``
    more wait for a slot, and beyond that the oldest waiting one is dropped
    (counted in ``dropped``), so that a receiver that is down costs bounded
    memory however long the node runs. Defaults come from :mod:`.settings`.
    """

    def __init__(
        self,
        attempts: Optional[int] = None,
        backoff_s: Optional[float] = None,
        timeout_s: Optional[float] = None,
        max_concurrent: Optional[int] = None,
        max_waiting: Optional[int] = None,
    ):
        self.attempts = attempts or settings.CALLBACK_ATTEMPTS
        self.backoff_s = backoff_s if backoff_s is not None else settings.CALLBACK_BACKOFF_S
        self.timeout_s = timeout_s if timeout_s is not None else settings.CALLBACK_TIMEOUT_S
        self.max_concurrent = max_concurrent or settings.CALLBACK_MAX_CONCURRENT
        self.max_waiting = max_waiting or settings.CALLBACK_MAX_WAITING
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.failures: deque = deque(maxlen=20)
        self._pending: set = set()
        self._waiting: deque = deque()
        self._slots: Optional[asyncio.Semaphore] = None

    def send(self, url: str, payload: dict) -> None:
        """Queue one delivery (returns at once)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent)
        while len(self._waiting) >= self.max_waiting:
            oldest = self._waiting.popleft()
            oldest.cancel()
            self._pending.discard(oldest)
            self.dropped += 1
        task = asyncio.get_running_loop().create_task(self._deliver_when_free(url, payload))
        self._waiting.append(task)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _deliver_when_free(self, url: str, payload: dict) -> None:
        async with self._slots:
            me = asyncio.current_task()
            if me in self._waiting:
                self._waiting.remove(me)
            await self._deliver(url, payload)

    async def _deliver(self, url: str, payload: dict) -> None:
        import httpx

        error = ""
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for attempt in range(1, self.attempts + 1):
                try:
                    response = await client.post(url, json=payload)
                    if response.status_code < 300:
                        self.delivered += 1
                        return
                    error = f"HTTP {response.status_code}"
                except httpx.TimeoutException as exc:
                    error = f"{type(exc).__name__}: no answer from {url} within {self.timeout_s} s {exc}".rstrip()
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__} posting to {url}: {exc}"
                if attempt < self.attempts:
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        self.failed += 1
        self.failures.append({"url": url, "attempts": self.attempts, "error": error, "time": time.time()})
        logger.warning("PoC callback to %s failed after %d attempts: %s", url, self.attempts, error)

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

    def flush(self) -> None:
        """POST what is buffered (in the background)."""
        if self._url is None or not self._items:
            return
        artifacts = list(self._items)
        self._items.clear()
        self.sender.send(self._url, {**self._head, "artifacts": artifacts, "encoding": self._encoding})

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
