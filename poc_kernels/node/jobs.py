"""The network API's ``/generate`` jobs: one FIFO queue run one job at a time, and a bounded result store.

A job computes its nonces in chunks of its batch size, each only while the
node is not busy (mining). Queued jobs (``wait=false``) are answered with an
id and polled at ``GET /generate/{request_id}``; a waiting job (``wait=true``)
runs at once beside the queue and answers its caller. Both are kept in the
:class:`ResultStore`, which evicts the oldest finished jobs beyond
``POC_MAX_STORED_JOBS`` jobs or ``POC_MAX_STORED_NONCES`` nonces.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable
from typing import Any, Callable, Optional

from . import metrics, settings
from .callbacks import CallbackSender, join_callback
from .errors import ApiTooLarge, JobCancelled, QueueFull

logger = logging.getLogger("poc_kernels.node")

__all__ = ["Job", "JobQueue", "ResultStore"]


class Job:
    """One ``/generate`` request: its body, state (queued, running, completed, failed, cancelled) and result."""

    __slots__ = ("request_id", "body", "status", "result", "error", "created", "finished", "task")

    def __init__(self, body: Any) -> None:
        self.request_id = str(uuid.uuid4())
        self.body = body
        self.status = "queued"
        self.result: Optional[bytes] = None  # the result's JSON object, serialized once
        self.error: Optional[str] = None
        self.created = time.time()
        self.finished: Optional[float] = None
        self.task: Optional[asyncio.Task] = None

    def answer(self) -> bytes:
        """The job's answer to its caller or poller (JSON bytes)."""
        head = json.dumps({"status": self.status, "request_id": self.request_id})
        if self.status == "completed" and self.result is not None:
            return (head[:-1] + ", " + self.result.decode()[1:]).encode()
        if self.status in ("failed", "cancelled"):  # a cancelled job is a failed one, whose error says why
            return json.dumps({"status": "failed", "request_id": self.request_id, "error": self.error}).encode()
        return head.encode()

    def callback(self) -> Optional[tuple]:
        """``(url, payload)`` of a completed job's callback, or None (not completed, or no ``url``)."""
        body = self.body
        if self.status != "completed" or body.url is None:
            return None
        head = {
            "request_id": self.request_id,
            "block_hash": body.block_hash,
            "block_height": body.block_height,
            "public_key": body.public_key,
            "node_id": body.node_id,
        }
        path = "/validated" if body.validation is not None else "/generated"
        return join_callback(body.url, path), {**head, **json.loads(self.result)}


class ResultStore:
    """Jobs by id, the oldest finished ones evicted beyond ``max_jobs`` jobs or ``max_nonces`` nonces."""

    def __init__(self, max_jobs: Optional[int] = None, max_nonces: Optional[int] = None) -> None:
        self.max_jobs = max_jobs or settings.MAX_STORED_JOBS
        self.max_nonces = max_nonces or settings.MAX_STORED_NONCES
        self._jobs: OrderedDict = OrderedDict()
        self.nonces = 0

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, request_id: str) -> Optional[Job]:
        return self._jobs.get(request_id)

    def keep(self, job: Job) -> None:
        """Store ``job`` under its id; evict the oldest finished jobs beyond the bounds (running ones stay)."""
        if job.request_id not in self._jobs:
            self._jobs[job.request_id] = job
            self.nonces += len(job.body.nonces)
        while len(self._jobs) > self.max_jobs or self.nonces > self.max_nonces:
            victim = next((j for j in self._jobs.values() if j.finished is not None), None)
            if victim is None:
                break
            del self._jobs[victim.request_id]
            self.nonces -= len(victim.body.nonces)


class JobQueue:
    """Runs ``/generate`` jobs: ``rows(body, chunk)`` computes a chunk, ``result(body, parts)`` the job's JSON object.

    ``busy()`` holds every chunk back while true (the node mines); completed
    jobs with a ``url`` are called back through ``callbacks``; ``on_error``
    hears of a failed job's error (an engine failure).
    """

    def __init__(
        self,
        rows: Callable[[Any, list], Awaitable[Any]],
        result: Callable[[Any, list], dict],
        *,
        busy: Callable[[], bool],
        callbacks: CallbackSender,
        on_error: Optional[Callable[[BaseException], None]] = None,
        store: Optional[ResultStore] = None,
        max_queued_nonces: Optional[int] = None,
        max_wait_nonces: Optional[int] = None,
    ) -> None:
        self._rows = rows
        self._result = result
        self._busy = busy
        self.callbacks = callbacks
        self._on_error = on_error
        self.store = store or ResultStore()
        self.max_queued_nonces = max_queued_nonces or settings.MAX_QUEUED_NONCES
        self.max_wait_nonces = max_wait_nonces or settings.MAX_WAIT_NONCES
        self._queue: deque = deque()
        self.queued_nonces = 0
        self._running: Optional[Job] = None
        self._waiting_callers: set = set()
        self._wake: Optional[asyncio.Event] = None
        self._worker: Optional[asyncio.Task] = None

    def get(self, request_id: str) -> Optional[bytes]:
        """A stored job's answer, or None (unknown, or evicted)."""
        job = self.store.get(request_id)
        return job.answer() if job is not None else None

    def enqueue(self, body: Any) -> dict:
        """Queue a job (``wait=false``): 413 above the queue's size, 429 when it is full; answer its id."""
        n = len(body.nonces)
        if n > self.max_queued_nonces:
            raise ApiTooLarge(
                f"the queue holds at most {self.max_queued_nonces} nonces (POC_MAX_QUEUED_NONCES); this request has "
                f"{n}: split it"
            )
        if self.queued_nonces + n > self.max_queued_nonces:
            raise QueueFull(f"queue full: {self.queued_nonces} nonces queued, limit is {self.max_queued_nonces}")
        job = Job(body)
        self._queue.append(job)
        self.queued_nonces += n
        self.store.keep(job)
        self._ensure_worker()
        self._wake.set()
        return {"status": "queued", "request_id": job.request_id, "queued_count": n}

    async def run_now(self, body: Any) -> bytes:
        """Run a job at once (``wait=true``; 413 above ``POC_MAX_WAIT_NONCES``), store it and answer its result.

        ``/stop`` or shutdown end it with :class:`~.errors.JobCancelled`; a
        caller that goes away cancels its work.
        """
        if len(body.nonces) > self.max_wait_nonces:
            raise ApiTooLarge(
                f"a /generate with wait=true holds at most {self.max_wait_nonces} nonces (POC_MAX_WAIT_NONCES), got "
                f"{len(body.nonces)}: queue it (wait=false) or split it"
            )
        job = Job(body)
        job.status = "running"
        job.task = asyncio.get_running_loop().create_task(self._run(job))
        self._waiting_callers.add(job)
        self.store.keep(job)
        try:
            await asyncio.shield(job.task)
        except asyncio.CancelledError:
            if job.task.cancelled() and not _cancelling():  # /stop or shutdown ended the job
                raise JobCancelled(job.error) from None
            job.task.cancel()  # our caller is gone: stop the work too
            raise
        finally:
            self._waiting_callers.discard(job)
        if job.status == "failed":
            raise RuntimeError(job.error)
        self._call_back(job)
        return job.answer()

    @property
    def running(self) -> int:
        """Jobs computing now: the queue's one and the waiting callers' ones."""
        return (self._running is not None) + sum(1 for j in self._waiting_callers if j.status == "running")

    def status(self) -> dict:
        return {
            "jobs": len(self._queue),
            "nonces": self.queued_nonces,
            "limit_nonces": self.max_queued_nonces,
            "running": self._running.request_id if self._running is not None else None,
            "wait_jobs": len(self._waiting_callers),
            "stored_results": len(self.store),
        }

    async def cancel_all(self, why: str) -> None:
        """Cancel the running job, the queued ones and the waiting callers' ones (their records fail with ``why``)."""
        queued = list(self._queue)
        self._queue.clear()
        self.queued_nonces = 0
        tasks = []
        for job in queued + list(self._waiting_callers):
            job.error = why
            if job.task is not None and not job.task.done():
                job.task.cancel()
                tasks.append(job.task)
            elif job.status == "queued":
                job.status, job.finished = "cancelled", time.time()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def shutdown(self, why: str) -> None:
        """Cancel every job and stop the queue's worker."""
        await self.cancel_all(why)
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    # ------------------------------------------------------------------ the worker

    def _ensure_worker(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        """Run the queued jobs one at a time, first in, first out; none starts while the node is busy."""
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._busy():
                await asyncio.sleep(settings.MINING_POLL_S)
                continue
            job = self._queue[0]
            self._running = job
            job.status = "running"
            job.task = asyncio.get_running_loop().create_task(self._run(job, finish=self._dequeue))
            try:
                await asyncio.shield(job.task)
            except asyncio.CancelledError:
                if _cancelling() or not job.task.done():  # the worker itself is cancelled (shutdown)
                    job.task.cancel()
                    raise
            self._call_back(job)

    def _dequeue(self, job: Job) -> None:
        if self._queue and self._queue[0] is job:
            self._queue.popleft()
            self.queued_nonces -= len(job.body.nonces)
        if self._running is job:
            self._running = None

    async def _run(self, job: Job, finish: Any = None) -> None:
        """Compute ``job`` in chunks of its batch size, each once the node is not busy; record its result or error.

        ``finish(job)`` runs just before the job's final state is set, in the same step.
        """
        body = job.body
        result = None
        try:
            parts = []
            for i in range(0, len(body.nonces), body.batch()):
                while self._busy():
                    await asyncio.sleep(settings.MINING_POLL_S)
                began = time.monotonic()
                parts.append(await self._rows(body, body.nonces[i : i + body.batch()]))
                metrics.ENGINE_SECONDS.labels(kind="job").observe(time.monotonic() - began)
            result = json.dumps(self._result(body, parts)).encode()
        except asyncio.CancelledError:
            job.error = job.error or "the job was cancelled"
            _finish(job, "cancelled", finish)
            raise
        except Exception as exc:
            logger.exception("PoC job %s failed", job.request_id)
            job.error = f"{type(exc).__name__}: {exc}"
            _finish(job, "failed", finish)
            if self._on_error is not None:
                self._on_error(exc)
            return
        job.result = result
        _finish(job, "completed", finish)

    def _call_back(self, job: Job) -> None:
        target = job.callback()
        if target is not None:
            self.callbacks.send(*target)


def _finish(job: Job, state: str, finish: Any) -> None:
    if finish is not None:
        finish(job)
    job.status, job.finished = state, time.time()
    validation = getattr(job.body, "validation", None)
    kind = "generate" if validation is None else "validate"
    metrics.JOBS_FINISHED.labels(kind=kind, result=state).inc()
    if validation is not None and validation.artifacts:
        # the artifacts were needed for the verdict only: the result store keeps no more than the verdict
        job.body = job.body.model_copy(update={"validation": validation.model_copy(update={"artifacts": []})})


def _cancelling() -> bool:
    """Whether the current task itself is being cancelled (not just something it awaited)."""
    task = asyncio.current_task()
    return bool(task is not None and task.cancelling())
