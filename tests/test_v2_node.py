"""The v2 node's parts and bounds, on a stand-in runner: what HTTP tests can't reach in their time.

ArtifactNode is three parts, each tested alone here: the mining
(``node.mining.Miner``), the job queue and result store (``node.jobs``) and the
callback buffer and its delivery (``node.callbacks``); then put together.
The stand-in runner returns a known artifact per nonce, so these tests see
exactly which nonces were computed and which artifacts were kept, dropped or
evicted. None of this needs vLLM; the real engine behind the same ArtifactNode
is tested in test_pow_v2.py.
"""

import asyncio
import base64

import numpy as np
import pytest
import torch

from poc_kernels.node import callbacks, jobs, mining, settings
from poc_kernels.node.errors import ApiTooLarge, QueueFull
from poc_kernels.node.v2 import ArtifactNode, GenerateRequest, InitGenerateRequest, StatTestRequest


class Result:
    def __init__(self, artifacts):
        self.artifacts = artifacts


class StandInRunner:
    """Artifact of nonce n: the k values n + 0.25·j (exact in float16 for small n); NaN for nonces in ``nan``."""

    hidden_size = 64
    layers_supported = True

    def __init__(self, nan=(), delay=0.0):
        self.calls: list = []
        self.nan = set(nan)
        self.delay = delay

    async def run(self, block_hash, public_key, nonces, *, seq_len, scheme, k, stronger_rng, random_projection):
        assert scheme == "artifact" and random_projection is False
        self.calls.append(list(nonces))
        await asyncio.sleep(self.delay)
        rows = torch.tensor([[float(n) + 0.25 * j for j in range(k)] for n in nonces], dtype=torch.float32)
        for i, n in enumerate(nonces):
            if n in self.nan:
                rows[i] = float("nan")
        return Result(rows)


def node_and_bodies(runner, **init):
    node = ArtifactNode(runner, model_names=["m"], max_model_len=64)
    fields = dict(block_hash="b", block_height=1, public_key="p", node_id=0, node_count=1)
    fields["params"] = {"model": "m", "seq_len": 8}

    def init_body(**kw):
        return InitGenerateRequest.model_validate({**fields, **init, **kw})

    def gen_body(**kw):
        return GenerateRequest.model_validate({**fields, **kw})

    return node, init_body, gen_body


async def until(condition, timeout: float = 20.0) -> None:
    """Wait until ``condition()`` holds; fail (never hang) after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def decode(vector_b64):
    return np.frombuffer(base64.b64decode(vector_b64), dtype="<f2").astype(np.float32)


def test_mining_follows_the_group_schedule_and_leaves_out_nan_rows():
    async def main():
        runner = StandInRunner(nan={17 + 20 * 5})
        node, init_body, _ = node_and_bodies(runner)
        await node.init_generate(init_body(node_id=2, node_count=5, group_id=3, n_groups=4, batch_size=3))
        await until(lambda: len(runner.calls) >= 4)
        await node.stop()
        # SPEC-ARTIFACTS §7: node_id + group_id·node_count + x·n_groups·node_count
        assert runner.calls[:4] == [[17 + 20 * x for x in range(3 * b, 3 * b + 3)] for b in range(4)]
        assert node.miner.total_processed >= 12 and node.miner.total_artifacts == node.miner.total_processed - 1

    asyncio.run(main())


def test_the_callback_buffer_is_bounded_oldest_dropped_first(monkeypatch):
    monkeypatch.setattr(settings, "MAX_BUFFERED_ARTIFACTS", 10)
    monkeypatch.setattr(settings, "CALLBACK_INTERVAL_S", 3600.0)  # no flush while the test runs

    async def main():
        runner = StandInRunner()
        node, init_body, _ = node_and_bodies(runner)
        node.callbacks.attempts, node.callbacks.backoff_s = 1, 0.0
        await node.init_generate(init_body(batch_size=4, url="http://127.0.0.1:9/cb"))
        await until(lambda: len(runner.calls) >= 6)
        await node.miner.stop()  # freeze the buffer without the flush of /stop
        done = node.miner.total_processed
        st = node.status()["callbacks"]
        assert st["artifacts_buffered"] == 10 and st["artifacts_dropped"] == done - 10
        assert [a["nonce"] for a in node.buffer] == list(range(done - 10, done))  # the newest kept
        sent = []
        node.callbacks.send = lambda url, payload, lane: sent.append((url, payload, lane))
        await node.stop()  # what is buffered is delivered, not dropped
        ((url, payload, lane),) = sent
        assert url == "http://127.0.0.1:9/cb/generated" and len(payload["artifacts"]) == 10 and lane == "mining"
        assert node.status()["callbacks"]["artifacts_buffered"] == 0

    asyncio.run(main())


def test_the_result_store_evicts_the_oldest_finished_jobs(monkeypatch):
    import json

    monkeypatch.setattr(settings, "MAX_STORED_JOBS", 3)

    async def main():
        node, _, gen_body = node_and_bodies(StandInRunner())
        answers = [json.loads(await node.generate_now(gen_body(nonces=[i, i + 100], wait=True))) for i in range(5)]
        ids = [a["request_id"] for a in answers]
        assert [node.job(i) is None for i in ids] == [True, True, False, False, False]
        kept = json.loads(node.job(ids[4]))
        assert kept == answers[4] and kept["status"] == "completed"
        assert [a["nonce"] for a in kept["artifacts"]] == [4, 104]
        assert np.array_equal(decode(kept["artifacts"][1]["vector_b64"]), 104 + 0.25 * np.arange(12))

    asyncio.run(main())


def test_the_queue_is_bounded_and_fifo(monkeypatch):
    monkeypatch.setattr(settings, "MAX_QUEUED_NONCES", 6)

    async def main():
        runner = StandInRunner(delay=0.05)
        node, _, gen_body = node_and_bodies(runner)
        first = node.enqueue(gen_body(nonces=[1, 2, 3]))
        second = node.enqueue(gen_body(nonces=[4, 5]))
        with pytest.raises(QueueFull, match="queue full: 5 nonces queued, limit is 6"):
            node.enqueue(gen_body(nonces=[6, 7]))
        with pytest.raises(ApiTooLarge, match="at most 6 nonces"):
            node.enqueue(gen_body(nonces=list(range(7))))
        await until(lambda: b"completed" in node.job(second["request_id"]))
        assert runner.calls == [[1, 2, 3], [4, 5]]  # first in, first out
        assert b"completed" in node.job(first["request_id"]) and node.jobs.queued_nonces == 0
        await node.shutdown()

    asyncio.run(main())


def test_callback_deliveries_are_bounded():
    pytest.importorskip("httpx")

    async def main():
        sender = callbacks.CallbackSender(attempts=1, backoff_s=0.0, timeout_s=0.5, max_concurrent=1, max_waiting=2)
        for i in range(5):
            sender.send("http://127.0.0.1:9/cb", {"i": i})
        assert sender.dropped == 3 and sender.status()["pending"] == 2
        await sender.drain()
        assert (sender.delivered, sender.failed, sender.dropped) == (0, 2, 3)
        assert "127.0.0.1:9" in sender.failures[-1]["error"]

    asyncio.run(main())


def test_stat_test_names_and_defaults(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setattr(settings, "HONOUR_P_VALUE_THRESHOLD", False)  # the default: as the deployed node
    assert StatTestRequest().test().fraud_threshold == 0.01
    assert StatTestRequest(p_value_threshold=0.05).test().fraud_threshold == 0.01
    assert StatTestRequest(fraud_threshold=0.2, p_value_threshold=0.05).test().fraud_threshold == 0.2
    monkeypatch.setattr(settings, "HONOUR_P_VALUE_THRESHOLD", True)  # POC_HONOUR_P_VALUE_THRESHOLD=1
    assert StatTestRequest(p_value_threshold=0.05).test().fraud_threshold == 0.05
    assert StatTestRequest(fraud_threshold=0.2, p_value_threshold=0.2).test().fraud_threshold == 0.2
    with pytest.raises(ValidationError, match="name the same alpha"):
        StatTestRequest(fraud_threshold=0.01, p_value_threshold=0.05)


@pytest.mark.parametrize("honour", [False, True])
def test_p_value_threshold_is_ignored_unless_honoured(honour, monkeypatch):
    """A batch of 200 with 29 mismatches at p_mismatch 0.1: p = 0.027, between 0.01 (the deployed node's alpha)
    and 0.05 (the client's p_value_threshold). Fraud only when the operator honours the field."""
    import json

    monkeypatch.setattr(settings, "HONOUR_P_VALUE_THRESHOLD", honour)

    async def main():
        node, _, gen_body = node_and_bodies(StandInRunner())
        nonces = list(range(200))
        honest = json.loads(await node.generate_now(gen_body(nonces=nonces, wait=True)))["artifacts"]
        sent = [dict(a, vector_b64="AAAA" * 8) if a["nonce"] < 29 else a for a in honest]  # 29 zero vectors
        body = gen_body(
            nonces=nonces,
            wait=True,
            validation={"artifacts": sent},
            stat_test={"dist_threshold": 0.4, "p_mismatch": 0.1, "p_value_threshold": 0.05},
        )
        return json.loads(await node.generate_now(body))

    verdict = asyncio.run(main())
    assert verdict["n_total"] == 200 and verdict["n_mismatch"] == 29
    assert 0.01 < verdict["p_value"] < 0.05
    assert verdict["fraud_detected"] is honour


# ---------------------------------------------------------------------- each part alone


class Recorder:
    """A stand-in CallbackSender: records what would be sent."""

    def __init__(self):
        self.sent: list = []

    def send(self, url, payload, lane="jobs"):
        self.sent.append((url, payload))


def test_mining_nonces_follow_the_schedule_and_stop_below_2_32():
    _, init_body, _ = node_and_bodies(StandInRunner())
    cfg = init_body(node_id=1, node_count=3, group_id=1, n_groups=2, batch_size=4)
    assert mining.mining_nonces(cfg, 0) == [4, 10, 16, 22]  # 1 + 1·3 + x·2·3
    assert mining.mining_nonces(cfg, 8) == [52, 58, 64, 70]
    last = init_body(node_id=0, node_count=2**31, batch_size=4)
    assert mining.mining_nonces(last, 0) == [0, 2**31]  # 2**32 and beyond are not nonces
    assert mining.mining_nonces(last, 2) == []


def test_the_miner_alone_counts_sinks_and_reports_an_engine_failure():
    class Dead(Exception):
        pass

    Dead.__name__ = "EngineDeadError"

    async def main():
        _, init_body, _ = node_and_bodies(StandInRunner())
        sunk, errors, calls = [], [], []

        async def artifacts(cfg, nonces):
            calls.append(nonces)
            if len(calls) == 3:
                raise Dead("the engine died")
            return [{"nonce": n} for n in nonces if n % 2]  # even nonces have no artifact

        miner = mining.Miner(artifacts, sink=sunk.extend, on_error=errors.append)
        miner.start(init_body(batch_size=4))
        await until(lambda: not miner.mining)
        assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
        assert [a["nonce"] for a in sunk] == [1, 3, 5, 7]
        assert (miner.total_processed, miner.total_artifacts) == (8, 4)
        assert miner.error == "EngineDeadError: the engine died" and len(errors) == 1
        assert miner.status() == {"status": "IDLE", "config": None, "stats": None}
        with pytest.raises(RuntimeError, match="stop"):
            miner.start(init_body())
            miner.start(init_body())  # a second start while mining
        await miner.stop()
        assert not miner.mining

    asyncio.run(main())


def test_the_artifact_buffer_alone_flushes_on_its_interval_and_at_close():
    async def main():
        sender = Recorder()
        buffer = callbacks.ArtifactBuffer(sender, max_artifacts=3, interval_s=0.05)
        running = [True]
        buffer.add([{"nonce": 0}])  # before open: no URL, nothing kept
        assert len(buffer) == 0
        buffer.open("http://cb/generated", {"node_id": 7}, {"dtype": "f16"}, running=lambda: running[0])
        buffer.add([{"nonce": n} for n in range(5)])
        assert [a["nonce"] for a in buffer] == [2, 3, 4] and buffer.status()["artifacts_dropped"] == 2
        await until(lambda: len(sender.sent) == 1)
        url, payload = sender.sent[0]
        assert url == "http://cb/generated"
        assert payload == {
            "node_id": 7,
            "artifacts": [{"nonce": 2}, {"nonce": 3}, {"nonce": 4}],
            "encoding": {"dtype": "f16"},
        }
        running[0] = False
        await until(lambda: buffer._flusher.done())  # idle and nothing buffered: the flusher ends
        buffer.open("http://cb/generated", {}, {}, running=lambda: True)
        buffer.add([{"nonce": 9}])
        await buffer.close()  # what is left is delivered at once
        assert sender.sent[-1][1]["artifacts"] == [{"nonce": 9}] and len(buffer) == 0

    asyncio.run(main())


def test_the_result_store_alone_keeps_running_jobs_past_its_bounds():
    class Body:
        def __init__(self, n):
            self.nonces = list(range(n))

    store = jobs.ResultStore(max_jobs=2, max_nonces=10)
    a, b, c = jobs.Job(Body(4)), jobs.Job(Body(4)), jobs.Job(Body(4))
    for job in (a, b, c):
        store.keep(job)
    assert len(store) == 3 and store.nonces == 12  # nothing finished: nothing to evict
    b.finished = 1.0
    store.keep(c)
    assert [store.get(j.request_id) is not None for j in (a, b, c)] == [True, False, True]
    assert store.nonces == 8


def test_the_job_queue_alone_waits_while_busy_and_calls_back():
    async def main():
        _, _, gen_body = node_and_bodies(StandInRunner())
        busy = [True]
        computed: list = []

        async def rows(body, chunk):
            computed.append(list(chunk))
            return chunk

        sender = Recorder()
        queue = jobs.JobQueue(
            rows, lambda body, parts: {"parts": parts}, busy=lambda: busy[0], callbacks=sender, max_queued_nonces=10
        )
        answer = queue.enqueue(gen_body(nonces=[5, 6, 7], batch_size=2, url="http://cb/x?t=1"))
        assert answer["status"] == "queued" and answer["queued_count"] == 3
        await asyncio.sleep(0.3)
        assert computed == [] and queue.status()["jobs"] == 1  # held back while the node is busy
        busy[0] = False
        await until(lambda: b"completed" in queue.get(answer["request_id"]))
        assert computed == [[5, 6], [7]]
        ((url, payload),) = sender.sent
        assert url == "http://cb/x/generated?t=1" and payload["parts"] == [[5, 6], [7]]
        assert payload["request_id"] == answer["request_id"] and payload["node_id"] == 0
        with pytest.raises(ApiTooLarge, match="wait=true holds at most"):
            queue.max_wait_nonces = 2
            await queue.run_now(gen_body(nonces=[1, 2, 3], wait=True))
        await queue.shutdown("test over")

    asyncio.run(main())


def test_stop_clears_the_rounds_error():
    class Failing(StandInRunner):
        async def run(self, *args, **kw):
            raise RuntimeError("the batch failed")

    async def main():
        node, init_body, _ = node_and_bodies(Failing())
        await node.init_generate(init_body())
        await until(lambda: not node.mining)
        assert node.status()["error"] == "RuntimeError: the batch failed"
        await node.stop()
        assert node.status()["error"] is None  # not carried into later rounds

    asyncio.run(main())
