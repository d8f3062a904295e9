"""Starting a vLLM engine for a PoC node, and shutting it down so that its engine core stops by itself, on time.

:func:`engine_arg_parser`, :func:`engine_args_from_cli` and
:func:`start_async_engine` are what a server needs to build an ``AsyncLLM``
from its command line (the node uses them, so that it never imports vLLM
itself); :func:`shutdown_engine` stops any engine.

vLLM 0.32 stops an engine core process by sending it SIGTERM: the Python
handler flags the shutdown and the busy loop, woken, tears the executor and
its workers down, unlinking their shared-memory rings. The handler can only
run in the core's main thread, and an idle core's main thread sleeps in
``input_queue.get()``. Now and then the handler never runs: a dump of such a
core shows its main thread still asleep in ``Queue.get`` and no signal
pending, as when the signal is taken by another of the core's threads, which
does not wake the main one. The core then sits idle until the process
manager's timeout (5 s by default), which SIGKILLs it and its workers; their
shared-memory rings are left to the resource tracker, which prints "leaked
shared_memory objects" at exit. On a 2-core CPU machine this happened in
about half of the shutdowns that followed a PoC round; a second SIGTERM, or
any message to the core, ended it at once. A clean shutdown of the tiny test
model takes 3.5 to 4 s there, close enough to the 5 s that a loaded machine
can turn it into a forced one too.

:func:`shutdown_engine` closes that gap without touching vLLM: while the
process manager waits for the core, it sends the core a ``WAKEUP`` request
over the engine's own input socket every :data:`WAKE_EVERY_S` (the message
vLLM itself uses to wake the busy loop; the core ignores it otherwise). The
woken main thread runs the pending handler and shuts down cleanly. It also
gives the core :data:`ENGINE_SHUTDOWN_S` rather than 5 s before the kill.
vLLM's liveness monitor thread calls the process manager's shutdown a second
time, within a second of the first call, and that call returns at once; only
the first call's end stops the wake-ups (when the second one stopped them too,
before the first wake-up was sent, a core whose SIGTERM was lost idled until it
was killed: about 1 node shutdown in 12 on a loaded 2-core machine).

vLLM 0.25 to 0.30 install that SIGTERM handler only after the core has told
the client it is ready: the core still runs ``vllm_config.__post_init__()``
and then registers the handler, about a second on a loaded 2-core machine. A
shutdown in that window (an engine stopped right after it started) kills the
core with SIGTERM's default action (exit code -15): nothing is torn down, and
its workers are left to notice their parent is gone. Plain vLLM 0.30 does this
too (``AsyncLLM.from_engine_args(...)`` then ``shutdown()``: -15 in 0.06 s).
vLLM 0.32 registers the handler before it builds the core. So
:func:`shutdown_engine` first waits, up to :data:`HANDLER_WAIT_S`, until each
core process catches SIGTERM (``SigCgt`` in ``/proc/PID/status``); on 0.32 and
later that is already so, and it does not wait.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any, Optional

logger = logging.getLogger(__name__)

__all__ = ["ENGINE_SHUTDOWN_S", "engine_arg_parser", "engine_args_from_cli", "shutdown_engine", "start_async_engine"]

#: Seconds the engine core processes get to stop by themselves before they are killed.
ENGINE_SHUTDOWN_S = 30.0
#: How often the waiting shutdown wakes the engine core's busy loop.
WAKE_EVERY_S = 0.25
#: Seconds the shutdown waits for a just-started engine core to install its SIGTERM handler (vLLM 0.25 to 0.30).
HANDLER_WAIT_S = 10.0
_SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def _client(engine: Any) -> Any:
    """The engine-core client of a ``vllm.LLM``, an ``LLMEngine`` or an ``AsyncLLM``."""
    if hasattr(engine, "llm_engine"):  # vllm.LLM
        engine = engine.llm_engine
    client = getattr(engine, "engine_core", None)
    if client is None:
        raise TypeError(f"engine: expected a vllm.LLM, LLMEngine or AsyncLLM, got {type(engine).__name__}")
    return client


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM; True where that cannot be read (no ``/proc``, gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next((int(line.split()[1], 16) for line in f if line.startswith("SigCgt:")), None)
    except OSError:
        return True
    return caught is None or bool(caught & _SIGTERM_BIT)


def _wait_for_sigterm_handlers(procs: list, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until each live process of ``procs`` catches SIGTERM; return whether all do."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = [p for p in procs if p.is_alive() and not _catches_sigterm(p.pid)]
        if not waiting:
            return True
        if time.monotonic() >= deadline:
            logger.warning(
                "engine shutdown: engine core process(es) %s installed no SIGTERM handler within %.1f s; "
                "stopping them anyway",
                [p.pid for p in waiting],
                timeout,
            )
            return False
        time.sleep(0.02)


def _wake_until_stopped(client: Any, procs: list, stop: threading.Event) -> None:
    """Send the engine core ``WAKEUP`` requests until ``stop`` is set or its processes are gone."""
    import zmq
    import zmq.asyncio
    from vllm.v1.engine import EngineCoreRequestType

    try:
        sock = client.input_socket
        if isinstance(sock, zmq.asyncio.Socket):
            # the AsyncLLM's socket is a zmq.asyncio one, bound to its event loop, which is blocked in
            # the shutdown; a plain shadow of the same socket sends from this thread
            sock = zmq.Socket.shadow(sock.underlying)
        frames = (client.core_engine, EngineCoreRequestType.WAKEUP.value, *client.encoder.encode(None))
    except Exception as exc:  # another vLLM layout: the shutdown still works, only without the wake-ups
        logger.debug("engine shutdown: cannot wake the engine core (%s)", exc)
        return
    sent = 0
    while not stop.wait(WAKE_EVERY_S):
        if not any(p.is_alive() for p in procs):
            break
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the core's end is gone or full: it is shutting down anyway
            logger.debug("engine shutdown: a wake-up failed (%s); no more are sent", exc)
            break
        sent += 1
    logger.debug("engine shutdown: %d wake-up(s) sent", sent)


def shutdown_engine(engine: Any, timeout: Optional[float] = ENGINE_SHUTDOWN_S) -> None:
    """Shut down ``engine`` (a ``vllm.LLM``, ``LLMEngine`` or ``AsyncLLM``), waking its core while it waits.

    ``timeout``: seconds the engine core processes get before they are killed (None: vLLM's default).
    Returns when the processes are gone and the engine's sockets closed; a second call does nothing.
    """
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout: must be None or a number of seconds >= 0, got {timeout!r}")
    client = _client(engine)
    manager = getattr(getattr(client, "resources", None), "engine_manager", None)
    procs = [p for p in (getattr(manager, "processes", None) or []) if hasattr(p, "is_alive")]
    # a core that has just started may not handle SIGTERM yet (vLLM 0.25 to 0.30): SIGTERM would kill it outright
    _wait_for_sigterm_handlers(procs, HANDLER_WAIT_S if timeout is None else min(timeout, HANDLER_WAIT_S))
    if procs and getattr(client, "input_socket", None) is not None and "shutdown" not in vars(manager):
        stop = threading.Event()
        waker = threading.Thread(
            target=_wake_until_stopped, args=(client, procs, stop), name="poc-engine-wake", daemon=True
        )
        stop_processes = manager.shutdown
        first_call = threading.Lock()  # taken once, never released

        def stop_processes_waking_the_core(*args: Any, **kwargs: Any) -> None:
            # vLLM's own order: the client's shutdown stops the processes (SIGTERM, wait up to the
            # timeout, kill), then closes its sockets; the waker sends only while the first part
            # waits, so the socket is never used by two threads at once nor closed under it.
            # vLLM calls this a second time, from its liveness monitor thread, within a second of the
            # first call; that call returns at once and must not end the wake-ups (when it did, before
            # the first wake-up, a lost SIGTERM left the core idle until it was killed)
            stopping = first_call.acquire(blocking=False)
            try:
                stop_processes(*args, **kwargs)
            finally:
                if stopping:
                    stop.set()
                    if waker.ident is not None:
                        waker.join()

        manager.shutdown = stop_processes_waking_the_core
        waker.start()
    if hasattr(engine, "llm_engine") or not callable(getattr(engine, "shutdown", None)):
        client.shutdown(timeout=timeout)  # vllm.LLM and LLMEngine have no shutdown of their own
    else:
        engine.shutdown(timeout=timeout)  # AsyncLLM: also its output handler


def engine_arg_parser(description: str) -> Any:
    """Return vLLM's argument parser with every engine argument (``--model``, ``--tensor-parallel-size``, ...)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return AsyncEngineArgs.add_cli_args(FlexibleArgumentParser(description=description))


def engine_args_from_cli(args: Any) -> Any:
    """Return the ``AsyncEngineArgs`` of a namespace parsed by :func:`engine_arg_parser`."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs.from_cli_args(args)


def start_async_engine(engine_args: Any) -> Any:
    """Start an ``AsyncLLM`` from ``engine_args``; stop it with :func:`shutdown_engine`."""
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM.from_engine_args(engine_args)
