"""Engine shutdown (poc_kernels.vllm.lifecycle): the engine core stops by itself, even when its SIGTERM is lost.

vLLM stops the engine core with SIGTERM, whose Python handler runs only in the
core's main thread. A signal taken by another thread leaves that thread asleep
in its input queue until the process manager kills it. These tests deliver the
process manager's SIGTERM to a thread other than the main one (``tgkill``),
which reproduces that every time.
"""

import ctypes
import os
import signal
import time

import pytest

from _vllm_fixtures import VLLM_SKIP_REASON, engine_marks, vllm_wanted

pytestmark = [pytest.mark.skipif(not vllm_wanted(), reason=VLLM_SKIP_REASON), *engine_marks()]

SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def _core_processes(llm):
    return list(llm.llm_engine.engine_core.resources.engine_manager.processes)


def _other_thread(pid: int) -> int:
    """A thread of process ``pid``, not its main one, that does not block SIGTERM."""
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        if tid == pid:
            continue
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            blocked = next(int(line.split()[1], 16) for line in f if line.startswith("SigBlk:"))
        if not blocked & SIGTERM_BIT:
            return tid
    raise AssertionError(f"process {pid}: every thread but the main one blocks SIGTERM")


def _sigterm_to_another_thread(proc) -> None:
    """Make ``proc.terminate()`` deliver its SIGTERM to a thread other than the main one."""
    libc = ctypes.CDLL(None, use_errno=True)

    def terminate():
        if libc.tgkill(proc.pid, _other_thread(proc.pid), signal.SIGTERM) != 0:
            raise OSError(ctypes.get_errno(), "tgkill")

    proc.terminate = terminate


def _shm_segments() -> set:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


def _mapped_segments(pids) -> set:
    """The shared-memory segments (``/dev/shm/psm_*``) that the processes ``pids`` and their children map.

    Read from ``/proc/PID/maps``, so that segments of other engines running at
    the same time (another test worker's) are never taken for this one's.
    """
    import psutil

    procs = [psutil.Process(pid) for pid in pids]
    procs += [child for proc in procs for child in proc.children(recursive=True)]
    found = set()
    for proc in procs:
        try:
            with open(f"/proc/{proc.pid}/maps") as f:
                found |= {line.rsplit("/", 1)[-1].strip() for line in f if "/dev/shm/psm_" in line}
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


@pytest.fixture
def idle_engine(tiny_qwen3):
    """A tiny engine that has served a PoC batch, and the shared-memory segments its processes created."""
    from poc_kernels.vllm import PoCRunner

    from _vllm_fixtures import make_llm

    before = _shm_segments()
    llm = make_llm(tiny_qwen3[0])
    PoCRunner(llm, seq_len=8).run("blk", "key", [0, 1, 2])
    created = (_shm_segments() - before) & _mapped_segments([p.pid for p in _core_processes(llm)] + [os.getpid()])
    yield llm, created
    llm.llm_engine.engine_core.shutdown(timeout=0)  # a test that failed leaves its engine behind


def test_a_lost_sigterm_makes_vllm_kill_the_engine_core(idle_engine):
    """The failure the lifecycle module works around: without a wake-up, the core is killed at the timeout."""
    llm, created = idle_engine
    procs = _core_processes(llm)
    for proc in procs:
        _sigterm_to_another_thread(proc)
    t0 = time.monotonic()
    llm.llm_engine.engine_core.shutdown(timeout=2.0)
    assert time.monotonic() - t0 >= 2.0
    for proc in procs:  # killed with os.kill: the exit code is known once it is reaped
        proc.join(10)
    assert [p.exitcode for p in procs] == [-signal.SIGKILL] * len(procs)


def test_shutdown_engine_wakes_the_core_so_it_stops_by_itself(idle_engine):
    from poc_kernels.vllm.lifecycle import ENGINE_SHUTDOWN_S, shutdown_engine

    llm, created = idle_engine
    assert created, "the engine created no shared-memory rings: nothing to check"
    procs = _core_processes(llm)
    for proc in procs:
        _sigterm_to_another_thread(proc)
    t0 = time.monotonic()
    shutdown_engine(llm)
    took = time.monotonic() - t0
    for proc in procs:
        proc.join(10)
    assert [p.exitcode for p in procs] == [0] * len(procs), "the engine core did not stop by itself"
    assert took < ENGINE_SHUTDOWN_S / 2
    # its workers unlinked their rings themselves: none is left for the resource tracker
    assert not created & _shm_segments()
    # a second call does nothing
    shutdown_engine(llm)


def test_the_wake_ups_go_on_when_vllm_calls_the_shutdown_again(idle_engine):
    """vLLM's liveness monitor calls the process manager's shutdown a second time, up to a second after the first;
    that call returns at once. It once ended the wake-ups before the first one was sent: the core, its SIGTERM
    lost, idled until it was killed at the timeout (1 in 12 node shutdowns under load). Here the second call comes
    right after the SIGTERM, before any wake-up."""
    import threading

    from poc_kernels.vllm.lifecycle import shutdown_engine

    llm, _ = idle_engine
    manager = llm.llm_engine.engine_core.resources.engine_manager
    procs = _core_processes(llm)
    again = []
    for proc in procs:
        _sigterm_to_another_thread(proc)
        lost_sigterm = proc.terminate

        def terminate(lost_sigterm=lost_sigterm):
            lost_sigterm()
            # what monitor_engine_liveness does once the manager is stopped
            again.append(threading.Thread(target=manager.shutdown))
            again[-1].start()
            again[-1].join()

        proc.terminate = terminate
    t0 = time.monotonic()
    shutdown_engine(llm, timeout=15.0)
    took = time.monotonic() - t0
    for proc in procs:
        proc.join(10)
    assert again, "the process manager sent no SIGTERM"
    assert [p.exitcode for p in procs] == [0] * len(procs), f"the engine core was killed after {took:.1f} s"


def test_shutdown_engine_wakes_an_async_engine(tiny_qwen3):
    """The server's AsyncLLM: its input socket belongs to the event loop that the shutdown blocks.

    It is shut down right after it started: on vLLM 0.25 to 0.30 its core may not handle SIGTERM yet, and without
    the wait in ``shutdown_engine`` it was killed (exit -15) in the 0.30 matrix runs."""
    import asyncio

    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from poc_kernels.vllm.lifecycle import ENGINE_SHUTDOWN_S, shutdown_engine

    async def main():
        args = AsyncEngineArgs(
            model=str(tiny_qwen3[0]),
            dtype="float32",
            enforce_eager=True,
            max_model_len=64,
            max_num_seqs=2,
            kv_cache_memory_bytes=64 << 20,
        )
        engine = AsyncLLM.from_engine_args(args)
        procs = list(engine.engine_core.resources.engine_manager.processes)
        try:
            for proc in procs:
                _sigterm_to_another_thread(proc)
            t0 = time.monotonic()
            shutdown_engine(engine)  # as the server's lifespan does, on the loop's thread
            return procs, time.monotonic() - t0
        finally:
            engine.shutdown(timeout=0)

    procs, took = asyncio.run(main())
    for proc in procs:
        proc.join(10)
    assert [p.exitcode for p in procs] == [0] * len(procs), "the engine core did not stop by itself"
    assert took < ENGINE_SHUTDOWN_S / 2


def _handle_sigterm_after(delay: float) -> None:
    """A process that, like vLLM 0.25 to 0.30's engine core, handles SIGTERM only ``delay`` s after it started."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    time.sleep(delay)
    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    while not stop:
        time.sleep(0.01)


def test_shutdown_waits_until_a_starting_core_handles_sigterm():
    """vLLM 0.25 to 0.30 install the engine core's SIGTERM handler after it reports ready: a SIGTERM sent at once kills
    the core (exit -15). The wait lets it stop by itself; a process that never handles SIGTERM only delays it."""
    import multiprocessing

    from poc_kernels.vllm.lifecycle import _catches_sigterm, _wait_for_sigterm_handlers

    ctx = multiprocessing.get_context("fork")
    early, waited, never = (ctx.Process(target=_handle_sigterm_after, args=(d,), daemon=True) for d in (2.0, 2.0, 600))
    for proc in (early, waited, never):
        proc.start()
    try:
        assert not _catches_sigterm(early.pid)
        early.terminate()  # what vLLM's process manager does, without the wait
        early.join(10)
        assert early.exitcode == -signal.SIGTERM
        t0 = time.monotonic()
        assert _wait_for_sigterm_handlers([waited], 10.0)
        assert _catches_sigterm(waited.pid) and time.monotonic() - t0 < 10.0
        waited.terminate()
        waited.join(10)
        assert waited.exitcode == 0, "the process did not stop by itself"
        t0 = time.monotonic()
        assert not _wait_for_sigterm_handlers([never], 0.3)
        assert 0.3 <= time.monotonic() - t0 < 5.0
    finally:
        for proc in (early, waited, never):
            proc.kill()
            proc.join(10)


def test_shutdown_engine_names_a_wrong_argument():
    from poc_kernels.vllm.lifecycle import shutdown_engine

    with pytest.raises(TypeError, match="engine"):
        shutdown_engine(object())
    with pytest.raises(ValueError, match="timeout"):
        shutdown_engine(object(), timeout=-1)
