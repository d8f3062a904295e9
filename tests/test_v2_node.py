"""The v2 node's bounds and schedule, on a stand-in runner: what HTTP tests can't reach in their time.

The stand-in returns a known artifact per nonce, so these tests see exactly
which nonces were computed and which artifacts were kept, dropped or evicted.
The real engine behind the same ArtifactNode is tested in test_pow_v2.py.
"""

import asyncio
import base64

import numpy as np
import pytest
import torch

from _vllm_fixtures import VLLM_SKIP_REASON, vllm_wanted

pytestmark = pytest.mark.skipif(not vllm_wanted(), reason=VLLM_SKIP_REASON)


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
    from poc_kernels.vllm.v2 import ArtifactNode, GenerateRequest, InitGenerateRequest

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
        assert node.total_processed >= 12 and node.total_artifacts == node.total_processed - 1

    asyncio.run(main())


def test_the_callback_buffer_is_bounded_oldest_dropped_first(monkeypatch):
    from poc_kernels.vllm import v2

    monkeypatch.setattr(v2, "MAX_BUFFERED_ARTIFACTS", 10)
    monkeypatch.setattr(v2, "CALLBACK_INTERVAL_S", 3600.0)  # no flush while the test runs

    async def main():
        runner = StandInRunner()
        node, init_body, _ = node_and_bodies(runner)
        node.callbacks.attempts, node.callbacks.backoff_s = 1, 0.0
        await node.init_generate(init_body(batch_size=4, url="http://127.0.0.1:9/cb"))
        await until(lambda: len(runner.calls) >= 6)
        node._mining.cancel()  # freeze the buffer without the flush of /stop
        await asyncio.gather(node._mining, return_exceptions=True)
        done = node.total_processed
        st = node.status()["callbacks"]
        assert st["artifacts_buffered"] == 10 and st["artifacts_dropped"] == done - 10
        assert [a["nonce"] for a in node._buffer] == list(range(done - 10, done))  # the newest kept
        sent = []
        node.callbacks.send = lambda url, payload: sent.append((url, payload))
        await node.stop()  # what is buffered is delivered, not dropped
        ((url, payload),) = sent
        assert url == "http://127.0.0.1:9/cb/generated" and len(payload["artifacts"]) == 10
        assert node.status()["callbacks"]["artifacts_buffered"] == 0

    asyncio.run(main())


def test_the_result_store_evicts_the_oldest_finished_jobs(monkeypatch):
    import json

    from poc_kernels.vllm import v2

    monkeypatch.setattr(v2, "MAX_STORED_JOBS", 3)

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
    from poc_kernels.vllm import v2

    monkeypatch.setattr(v2, "MAX_QUEUED_NONCES", 6)

    async def main():
        runner = StandInRunner(delay=0.05)
        node, _, gen_body = node_and_bodies(runner)
        first = node.enqueue(gen_body(nonces=[1, 2, 3]))
        second = node.enqueue(gen_body(nonces=[4, 5]))
        with pytest.raises(v2.QueueFull, match="queue full: 5 nonces queued, limit is 6"):
            node.enqueue(gen_body(nonces=[6, 7]))
        with pytest.raises(v2.ApiTooLarge, match="at most 6 nonces"):
            node.enqueue(gen_body(nonces=list(range(7))))
        await until(lambda: b"completed" in node.job(second["request_id"]))
        assert runner.calls == [[1, 2, 3], [4, 5]]  # first in, first out
        assert b"completed" in node.job(first["request_id"]) and node.queued_nonces == 0
        await node.shutdown()

    asyncio.run(main())


def test_callback_deliveries_are_bounded():
    from poc_kernels.vllm.manager import CallbackSender

    async def main():
        sender = CallbackSender(attempts=1, backoff_s=0.0, timeout_s=0.5, max_concurrent=1, max_waiting=2)
        for i in range(5):
            sender.send("http://127.0.0.1:9/cb", {"i": i})
        assert sender.dropped == 3 and sender.status()["pending"] == 2
        await sender.drain()
        assert (sender.delivered, sender.failed, sender.dropped) == (0, 2, 3)
        assert "127.0.0.1:9" in sender.failures[-1]["error"]

    asyncio.run(main())


def test_stat_test_names_and_defaults():
    from pydantic import ValidationError

    from poc_kernels.vllm.v2 import StatTestRequest

    assert StatTestRequest().test().fraud_threshold == 0.01
    assert StatTestRequest(p_value_threshold=0.05).test().fraud_threshold == 0.05
    assert StatTestRequest(fraud_threshold=0.2, p_value_threshold=0.2).test().fraud_threshold == 0.2
    with pytest.raises(ValidationError, match="name the same alpha"):
        StatTestRequest(fraud_threshold=0.01, p_value_threshold=0.05)
