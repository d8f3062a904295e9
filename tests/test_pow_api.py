"""The PoC HTTP API against a real engine: `vllm serve` with the poc_kernels endpoint plugin, and the
standalone node server, both on a tiny random Qwen3, over real HTTP on 127.0.0.1."""

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from _servers import (
    API_KEY,
    AUTH,
    POW,
    Receiver,
    chat,
    free_port,
    node_cmd,
    server_env,
    start_server,
    stop_server,
    vllm_server_cmd,
    wait_for,
)

import poc_kernels
from poc_kernels.validation import ValidatedBatch

from _vllm_fixtures import VLLM_SKIP_REASON, engine_marks, vllm_wanted

pytestmark = [
    pytest.mark.skipif(
        not vllm_wanted() or importlib.util.find_spec("httpx") is None,
        reason=f"{VLLM_SKIP_REASON} (or httpx is missing)",
    ),
    *engine_marks(),
]

SEQ_LEN = 16


@pytest.fixture(scope="module")
def served(tiny_qwen3, tmp_path_factory):
    """`vllm serve` of the tiny model with the PoC plugin; yields (base url, model name, transformers model)."""
    import httpx  # noqa: F401

    path, hf = tiny_qwen3
    port = free_port()
    cmd = vllm_server_cmd(path, port)
    proc = start_server(cmd, port, server_env(), tmp_path_factory.mktemp("serve") / "server.log")
    try:
        yield f"http://127.0.0.1:{port}", str(path), hf
    finally:
        stop_server(proc)


def hf_distances(hf, block_hash, public_key, nonces, rp=False):
    h_size = hf.config.hidden_size
    x = poc_kernels.generate_inputs(
        block_hash, public_key, nonces, SEQ_LEN, h_size, dtype=torch.float32, random_projection=rp
    )
    with torch.no_grad():
        h = hf.model(inputs_embeds=x).last_hidden_state[:, -1]
    return poc_kernels.compute_distances(h, block_hash, public_key, nonces, random_projection=rp)


def test_a_round_with_the_random_projection(served):
    """SPEC §10 through the seeds' API: the node recomputes projected distances, equal to transformers' with the
    public API's flag; a batch claimed with the plain distances is no longer honest."""
    import httpx

    base, _, hf = served
    nonces = [2, 5, 8, 11]
    projected = hf_distances(hf, "blk", "prover", nonces, rp=True).tolist()
    plain = hf_distances(hf, "blk", "prover", nonces).tolist()
    assert max(abs(a - b) for a, b in zip(projected, plain)) > 1e-4  # the flag matters beyond the tolerance
    batch = dict(public_key="prover", block_hash="blk", block_height=7, nonces=nonces, node_id=1)
    with httpx.Client(timeout=120) as client:
        body = round_body(r_target=2.0, random_projection=True)
        assert client.post(f"{base}{POW}/init/validate", json=body).status_code == 200
        v = client.post(f"{base}{POW}/validate", json=dict(batch, dist=projected)).json()
        assert max(abs(a - b) for a, b in zip(v["dist"], projected)) < 1e-5 and v["fraud_detected"] is False
        assert client.post(f"{base}{POW}/stop").status_code == 200


def round_body(**kw) -> dict:
    body = dict(
        block_hash="blk",
        block_height=7,
        public_key="prover",
        r_target=1.42,
        fraud_threshold=0.01,
        node_id=1,
        node_count=3,
        batch_size=4,
        seq_len=SEQ_LEN,
        use_sign_flips=True,
        use_layer_hooks=False,
    )
    body.update(kw)
    return body


def long_validation() -> dict:
    """A /validate body as long as the server takes: at batch_size 1, thousands of engine steps, which no machine
    runs in the second or two the tests need it to be in flight (600 nonces at batch_size 2 once finished
    within a client's 2 s timeout)."""
    from poc_kernels.node.settings import MAX_VALIDATE_NONCES

    n = MAX_VALIDATE_NONCES
    return dict(public_key="p", block_hash="blk", block_height=7, node_id=0, nonces=list(range(n)), dist=[1.4] * n)


def test_full_round_validation_callbacks_and_gating(served):
    import httpx

    base, model, hf = served
    receiver = Receiver(free_port())  # down at first: the first deliveries must be retried
    with httpx.Client(timeout=120) as client:
        r = client.post(f"{base}{POW}/init/generate", json=round_body(callback_url=f"http://127.0.0.1:{receiver.port}"))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "OK" and r.json()["pow_status"]["state"] == "GENERATING"
        # inference is paused while generating
        blocked = chat(client, base, model)
        assert blocked.status_code == 503 and "PoC" in blocked.json()["detail"]
        time.sleep(1.0)
        receiver.start()
        try:
            status = wait_for(
                lambda: (
                    (s := client.get(f"{base}{POW}/status").json())["total_checked"] >= 12
                    and s["total_valid"] >= 2
                    and s
                )
            )
            assert status["state"] == "GENERATING" and status["elapsed_seconds"] > 0
            assert status["rate_per_second"] > 0 and status["nonces_per_minute"] > 0
            valid, dists = status["valid_nonces"], status["valid_distances"]
            assert len(valid) == len(dists) == status["total_valid"]
            assert all(n % 3 == 1 for n in valid)  # node 1 of 3 takes 1 + 3k
            assert all(d < 1.42 for d in dists)
            # the distances are those of a plain transformers forward of the same nonces
            expect = hf_distances(hf, "blk", "prover", valid[:6])
            assert max(abs(a - b) for a, b in zip(dists[:6], expect.tolist())) < 1e-5

            r = client.post(f"{base}{POW}/phase/validate")
            assert r.status_code == 200 and r.json()["pow_status"]["state"] == "VALIDATING"
            allowed = chat(client, base, model)
            assert allowed.status_code == 200, allowed.text
            assert allowed.json()["choices"][0]["message"] is not None

            checked = client.get(f"{base}{POW}/status").json()
            honest = dict(
                public_key="prover", block_hash="blk", block_height=7, nonces=valid[:6], dist=dists[:6], node_id=1
            )
            verdict = client.post(f"{base}{POW}/validate", json=honest)
            assert verdict.status_code == 200, verdict.text
            v = verdict.json()
            assert v["fraud_detected"] is False and v["n_invalid"] == 0 and v["probability_honest"] == 1.0
            assert v["received_dist"] == dists[:6] and len(v["dist"]) == 6
            # the original API's two fields beside the ValidatedBatch's, which parse back as one
            assert v.pop("status") == "OK" and v.pop("computed_distances") == v["dist"]
            assert ValidatedBatch.model_validate(v).fraud_detected is False

            # a tampered batch: nonces this node checked and found invalid, claimed below r_target
            # (from one status read after generation stopped: the earlier `valid` misses nonces found since)
            found = set(checked["valid_nonces"])
            invalid = [1 + 3 * k for k in range(checked["total_checked"]) if 1 + 3 * k not in found][:6]
            assert invalid, "every checked nonce was valid: choose a lower r_target"
            tampered = dict(honest, nonces=invalid, dist=[1.30] * len(invalid))
            v = client.post(f"{base}{POW}/validate", json=tampered).json()
            assert v["n_invalid"] == len(invalid) and v["fraud_detected"] is True
            assert v["probability_honest"] < 0.01

            # callbacks: valid batches, then the two verdicts, delivered despite the late receiver
            # (the mining and job lanes deliver independently: a /generated batch first sent while the receiver
            # was down may still be in its retry backoff, 0.5, 1, 2, 4 s, when both verdicts have arrived)
            wait_for(lambda: len(receiver.of("/validated")) == 2, timeout=60)
            generated = wait_for(lambda: receiver.of("/generated"), timeout=60)
            first = generated[0]
            assert set(first) == {"public_key", "block_hash", "block_height", "nonces", "dist", "node_id", "r_target"}
            assert first["r_target"] == 1.42 and all(d < 1.42 for d in first["dist"])
            assert {json.dumps(b["fraud_detected"]) for b in receiver.of("/validated")} == {"false", "true"}
            cb = client.get(f"{base}{POW}/status").json()["callbacks"]
            assert cb["delivered"] >= 3 and cb["failed"] == 0

            r = client.post(f"{base}{POW}/stop")
            assert r.status_code == 200 and r.json()["pow_status"]["state"] == "STOPPED"
            assert chat(client, base, model).status_code == 200
        finally:
            receiver.stop()


def test_callback_failure_is_reported(served):
    import httpx

    base, _, hf = served
    dead = free_port()  # nothing listens there
    with httpx.Client(timeout=120) as client:
        r = client.post(f"{base}{POW}/init/validate", json=round_body(callback_url=f"http://127.0.0.1:{dead}"))
        assert r.status_code == 200, r.text
        nonces = [4, 7]
        d = hf_distances(hf, "blk", "prover", nonces).tolist()
        v = client.post(
            f"{base}{POW}/validate",
            json=dict(public_key="prover", block_hash="blk", block_height=7, nonces=nonces, dist=d, node_id=1),
        )
        assert v.status_code == 200, v.text
        assert max(abs(a - b) for a, b in zip(v.json()["dist"], d)) < 1e-5
        target = f"http://127.0.0.1:{dead}/validated"

        def ours():
            failures = client.get(f"{base}{POW}/status").json()["callbacks"]["failures"]
            return [f for f in failures if f["url"] == target]

        failure = wait_for(ours, timeout=60)[-1]
        assert failure["attempts"] == 5
        assert target in failure["error"]  # the error names the URL
        client.post(f"{base}{POW}/stop")


BAD_REQUESTS = [
    # (method, path, body, status, text in the detail)
    ("post", "/init", {"block_hash": "b"}, 422, "block_height"),
    ("post", "/init", round_body(block_height=-1), 422, "block_height"),
    ("post", "/init", round_body(r_target="1.4"), 422, "r_target"),
    ("post", "/init", round_body(r_target=0), 422, "r_target"),
    ("post", "/init", round_body(node_id=3, node_count=3), 422, "node_id must be < node_count"),
    ("post", "/init", round_body(node_count=None), 422, "node_id and node_count go together"),
    ("post", "/init", round_body(batch_size=0), 422, "batch_size"),
    ("post", "/init", round_body(callback_url="not a url"), 422, "callback_url"),
    ("post", "/init", round_body(surprise=1), 422, "surprise"),
    ("post", "/init", round_body(seq_len=10_000), 400, "max_model_len"),
    ("post", "/init", round_body(batch_size=4096, seq_len=200), 400, "POC_MAX_BATCH_TOKENS"),
    ("post", "/init", round_body(use_layer_hooks=True, seq_len=0), 422, "seq_len"),
    ("post", "/init/generate", round_body(node_id=None, node_count=None), 422, "node_id"),
    ("post", "/validate", {"public_key": "p"}, 422, "block_hash"),
    (
        "post",
        "/validate",
        dict(public_key="p", block_hash="blk", block_height=1, nonces=[1, 2], dist=[1.4], node_id=0),
        422,
        "one distance per nonce",
    ),
    (
        "post",
        "/validate",
        dict(public_key="p", block_hash="blk", block_height=1, nonces=[2**32], dist=[1.4], node_id=0),
        422,
        "nonces",
    ),
]


def test_bad_requests_get_clear_4xx(served):
    import httpx

    base, model, _ = served
    with httpx.Client(timeout=60) as client:
        client.post(f"{base}{POW}/stop")  # whatever state the previous test left
        for method, path, body, code, text in BAD_REQUESTS:
            r = getattr(client, method)(f"{base}{POW}{path}", json=body)
            assert r.status_code == code, (path, body, r.status_code, r.text)
            assert text in r.text, (path, r.text)
        # not JSON at all
        r = client.post(f"{base}{POW}/init", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        # illegal transitions
        assert client.get(f"{base}{POW}/status").json()["state"] == "STOPPED"
        for path in ("/phase/generate", "/phase/validate", "/stop"):
            r = client.post(f"{base}{POW}{path}")
            assert r.status_code == 409 and "round" in r.json()["detail"], (path, r.text)
        batch = dict(public_key="p", block_hash="blk", block_height=1, nonces=[1], dist=[1.4], node_id=0)
        r = client.post(f"{base}{POW}/validate", json=batch)
        assert r.status_code == 409 and "VALIDATING" in r.json()["detail"]
        assert client.post(f"{base}{POW}/init", json=round_body(node_id=None, node_count=None)).status_code == 200
        r = client.post(f"{base}{POW}/phase/generate")
        assert r.status_code == 409 and "node_id" in r.json()["detail"]
        assert client.post(f"{base}{POW}/phase/validate").status_code == 200
        assert client.post(f"{base}{POW}/phase/validate").status_code == 409
        r = client.post(f"{base}{POW}/validate", json=dict(batch, block_hash="other"))
        assert r.status_code == 400 and "block_hash" in r.json()["detail"]
        # a layer-hook round transforms its own rows inside the forward: chat stays open while it validates,
        # and answers as with no round at all
        assert client.post(f"{base}{POW}/stop").status_code == 200
        plain = chat(client, base, model)
        assert plain.status_code == 200
        r = client.post(f"{base}{POW}/init/validate", json=round_body(use_layer_hooks=True))
        assert r.status_code == 200, r.text
        during = chat(client, base, model)
        assert during.status_code == 200
        assert during.json()["choices"][0]["message"] == plain.json()["choices"][0]["message"]
        assert client.post(f"{base}{POW}/stop").status_code == 200
        assert chat(client, base, model).status_code == 200


# ---------------------------------------------------------------------- faults and hostile input


def _state(client, base):
    return client.get(f"{base}{POW}/status").json()


def test_gate_covers_every_inference_route(served):
    """While GENERATING every route that runs the model answers 503, whatever its path; polling routes stay open."""
    import httpx

    base, model, _ = served
    chat_body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3}
    with httpx.Client(timeout=120) as client:
        assert client.post(f"{base}{POW}/init/generate", json=round_body()).status_code == 200
        try:
            for path, body in (
                ("/v1/chat/completions", chat_body),
                ("/v1/completions", {"model": model, "prompt": "Hi", "max_tokens": 2}),
                ("/invocations", chat_body),
                ("/generative_scoring", {"model": model}),
                ("/some/route/a/later/vllm/adds", {}),
            ):
                r = client.post(f"{base}{path}", json=body)
                assert r.status_code == 503 and "PoC generation" in r.json()["detail"], (path, r.text)
                assert r.headers["retry-after"] == "30"
            assert client.get(f"{base}/v1/models").status_code == 200
            assert client.get(f"{base}/health").status_code == 200
            scraped = client.get(f"{base}/metrics")  # vLLM's registry carries the node's metrics
            assert scraped.status_code == 200 and 'poc_state{state="GENERATING"} 1.0' in scraped.text
            assert (
                "poc_nonces_mined_total" in scraped.text and "# TYPE poc_engine_call_seconds histogram" in scraped.text
            )
            assert client.post(f"{base}/tokenize", json={"model": model, "prompt": "Hello"}).status_code == 200
            assert client.post(f"{base}/ping").status_code == 200  # health checks POST it: it runs no model
        finally:
            assert client.post(f"{base}{POW}/stop").status_code == 200
        r = client.post(f"{base}/invocations", json=chat_body)
        assert r.status_code == 200, r.text


def test_validate_is_capped_and_stop_cancels_it(served):
    """/validate takes at most POC_MAX_VALIDATE_NONCES nonces; /stop cancels a running one, which is never counted."""
    import httpx

    from poc_kernels.node.settings import MAX_VALIDATE_NONCES

    base, _, _ = served
    with httpx.Client(timeout=120) as client:
        assert client.post(f"{base}{POW}/init/validate", json=round_body(batch_size=1)).status_code == 200
        big = dict(public_key="p", block_hash="blk", block_height=7, node_id=0)
        n = MAX_VALIDATE_NONCES + 1
        r = client.post(f"{base}{POW}/validate", json=dict(big, nonces=list(range(n)), dist=[1.4] * n))
        assert r.status_code == 413 and str(MAX_VALIDATE_NONCES) in r.json()["detail"]
        answers = []
        long = long_validation()
        worker = threading.Thread(target=lambda: answers.append(client.post(f"{base}{POW}/validate", json=long)))
        worker.start()
        wait_for(lambda: _state(client, base)["validations_running"] == 1, timeout=30, step=0.1)
        t0 = time.time()
        assert client.post(f"{base}{POW}/stop").status_code == 200
        worker.join(timeout=60)
        assert answers and answers[0].status_code == 409 and "round ended" in answers[0].json()["detail"]
        assert time.time() - t0 < 10
        status = _state(client, base)
        assert status["validations_running"] == 0 and status["state"] == "STOPPED"
        # the next round starts clean and its engine is free at once
        assert client.post(f"{base}{POW}/init/validate", json=round_body()).status_code == 200
        r = client.post(f"{base}{POW}/validate", json=dict(big, nonces=[1, 2], dist=[1.4, 1.4]), timeout=30)
        assert r.status_code == 200 and _state(client, base)["validated_batches"] == 1
        assert client.post(f"{base}{POW}/stop").status_code == 200


def test_validate_is_cancelled_when_the_client_leaves(served):
    import httpx

    base, _, _ = served
    with httpx.Client(timeout=120) as client:
        assert client.post(f"{base}{POW}/init/validate", json=round_body(batch_size=1)).status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            client.post(f"{base}{POW}/validate", json=long_validation(), timeout=2.0)
        wait_for(lambda: _state(client, base)["validations_running"] == 0, timeout=15, step=0.2)
        assert _state(client, base)["validated_batches"] == 0
        assert client.post(f"{base}{POW}/stop").status_code == 200


def test_concurrent_init_generate_each_answers_its_own_round(served):
    import httpx

    base, _, _ = served
    answers: dict = {}

    def call(i):
        with httpx.Client(timeout=120) as c:
            answers[i] = c.post(f"{base}{POW}/init/generate", json=round_body(block_hash=f"race{i}"))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(answers) == list(range(6))
    for i, r in answers.items():
        assert r.status_code == 200, r.text
        status = r.json()["pow_status"]
        assert status["block_hash"] == f"race{i}" and status["state"] == "GENERATING", (i, status)
    with httpx.Client(timeout=120) as client:
        assert client.post(f"{base}{POW}/stop").status_code == 200


def test_exhausted_nonces_leave_generating(served):
    import httpx

    base, model, _ = served
    with httpx.Client(timeout=120) as client:
        r = client.post(f"{base}{POW}/init/generate", json=round_body(node_id=2**32 - 3, node_count=2**40))
        assert r.status_code == 422 and "node_count" in r.text
        r = client.post(f"{base}{POW}/init/generate", json=round_body(node_id=2**32 - 3, node_count=2**32))
        assert r.status_code == 200
        status = wait_for(lambda: (s := _state(client, base))["state"] == "IDLE" and s, timeout=60, step=0.2)
        assert "exhausted" in status["error"] and status["total_checked"] == 1
        assert chat(client, base, model).status_code == 200  # inference reopened
        assert client.post(f"{base}{POW}/stop").status_code == 200


def test_callback_url_keeps_its_query(served):
    import httpx

    base, _, _ = served
    receiver = Receiver(free_port())
    receiver.start()
    try:
        url = f"http://127.0.0.1:{receiver.port}/cb?token=abc"
        with httpx.Client(timeout=120) as client:
            body = round_body(callback_url=url, r_target=2.0)
            assert client.post(f"{base}{POW}/init/generate", json=body).status_code == 200
            wait_for(lambda: receiver.posts, timeout=60, step=0.2)
            assert client.post(f"{base}{POW}/stop").status_code == 200
        assert receiver.posts[0][0] == "/cb/generated?token=abc"
    finally:
        receiver.stop()


def test_bounds_and_messages_of_round_bodies(served):
    import httpx

    base, _, _ = served
    with httpx.Client(timeout=60) as client:
        for value in ("NaN", "Infinity"):
            raw = json.dumps(round_body()).replace('"r_target": 1.42', f'"r_target": {value}')
            r = client.post(f"{base}{POW}/init", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422 and "finite" in r.text, r.text
        r = client.post(f"{base}{POW}/init", json=round_body(block_height=2**63))
        assert r.status_code == 422 and "block_height" in r.text
        raw = json.dumps(round_body())[:-1] + ', "seq_len": 8}'
        r = client.post(f"{base}{POW}/init", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "duplicate key" in r.text and "seq_len" in r.text


def test_standalone_node_server(tiny_qwen3, tmp_path):
    """`python -m poc_kernels.node`: the PoC API alone, no OpenAI routes."""
    import httpx

    path, hf = tiny_qwen3
    port = free_port()
    cmd = node_cmd(path, port, "--api-key", API_KEY)
    proc = start_server(cmd, port, server_env(), tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=120) as stranger:
            for path_, body in (("/init/generate", round_body()), ("/stop", None), ("/validate", {})):
                assert stranger.post(f"{base}{POW}{path_}", json=body).status_code == 401, path_
            assert stranger.get(f"{base}{POW}/status").status_code == 401
            assert stranger.get(f"{base}{POW}/versions").status_code == 200
            assert "poc_nonces_mined_total" in stranger.get(f"{base}/metrics").text
        with httpx.Client(timeout=120, headers=AUTH) as client:
            assert client.get(f"{base}{POW}/status").json()["state"] == "STOPPED"
            # an honest batch claims only valid nonces: a loose r_target makes these three valid
            assert client.post(f"{base}{POW}/init/validate", json=round_body(r_target=1.6)).status_code == 200
            nonces = [1, 4, 7]
            d = hf_distances(hf, "blk", "prover", nonces).tolist()
            assert max(d) < 1.6
            v = client.post(
                f"{base}{POW}/validate",
                json=dict(public_key="prover", block_hash="blk", block_height=7, nonces=nonces, dist=d, node_id=1),
            )
            assert v.status_code == 200, v.text
            assert max(abs(a - b) for a, b in zip(v.json()["dist"], d)) < 1e-5
            assert v.json()["fraud_detected"] is False
            assert client.post(f"{base}/v1/chat/completions", json={}).status_code == 404
            _check_status_cursor_and_resumed_generation(client, base)
            _check_sigterm_during_validation(client, base, proc, tmp_path / "server.log")
        # the node's own shutdown (poc_kernels.vllm.shutdown_engine): its engine core stopped by itself
        log = (tmp_path / "server.log").read_text()
        assert "force killing" not in log and "leaked shared_memory" not in log, log[-3000:]
        # the node's INFO records are printed (Python's defaults drop them): its events and its shutdown
        assert "[poc_kernels.node] poc_event=validation_verdict" in log, log[-3000:]
        assert "[poc_kernels.node] node shutdown: the PoC manager stopped in" in log, log[-3000:]
    finally:
        stop_server(proc)


def _check_status_cursor_and_resumed_generation(client, base):
    """/status?since=N pages the valid nonces; a batch cut by /phase/validate is computed when generation resumes."""
    body = round_body(r_target=2.0, node_id=1, node_count=3, batch_size=4)  # every nonce is valid
    assert client.post(f"{base}{POW}/init/generate", json=body).status_code == 200
    wait_for(lambda: _state(client, base)["total_checked"] >= 8, timeout=60, step=0.05)
    assert client.post(f"{base}{POW}/phase/validate").status_code == 200
    assert client.post(f"{base}{POW}/phase/generate").status_code == 200
    wait_for(lambda: _state(client, base)["total_checked"] >= 24, timeout=60, step=0.05)
    assert client.post(f"{base}{POW}/stop").status_code == 200
    full = _state(client, base)
    n = full["total_checked"]
    assert full["valid_nonces"] == [1 + 3 * k for k in range(n)]  # no gap, no repeat
    assert full["valid_since"] == 0 and full["valid_next"] == n
    page = client.get(f"{base}{POW}/status", params={"since": 5}).json()
    assert page["valid_nonces"] == full["valid_nonces"][5:] and page["valid_next"] == n
    assert page["valid_distances"] == full["valid_distances"][5:]
    assert client.get(f"{base}{POW}/status", params={"since": n}).json()["valid_nonces"] == []
    r = client.get(f"{base}{POW}/status", params={"since": "-1"})
    assert r.status_code == 422 and "since" in r.text


def _check_sigterm_during_validation(client, base, proc, log_path, sig=signal.SIGTERM, ours=True):
    """A signal while a long validation runs: the node exits within seconds, no engine process is left, and the
    cancelled request gets a 503, not a 500. ``ours``: the engine is shut down by ``shutdown_engine`` (the
    standalone node), so its core must stop by itself, without vLLM killing it (vLLM's own server kills a core
    whose SIGTERM was lost after 5 s, docs/node.md)."""
    import httpx
    import psutil

    assert client.post(f"{base}{POW}/init/validate", json=round_body(batch_size=1)).status_code == 200
    answers = []

    def post():
        try:
            answers.append(client.post(f"{base}{POW}/validate", json=long_validation()))
        except httpx.HTTPError:  # the server closed the connection before its answer
            pass

    worker = threading.Thread(target=post, daemon=True)
    worker.start()
    wait_for(lambda: _state(client, base)["validations_running"] == 1, timeout=30, step=0.1)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children  # the engine core (and its worker)
    t0 = time.time()
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    took = time.time() - t0
    worker.join(10)
    gone, alive = psutil.wait_procs(children, timeout=15)
    log = log_path.read_text()
    tail = log[-6000:]
    assert not ours or "force killing" not in log, f"vLLM killed the engine core after {took:.1f} s:\n{tail}"
    assert took < 30, tail
    assert not alive, [p.pid for p in alive]
    assert "Exception in ASGI application" not in log, tail
    assert [r.status_code for r in answers] in ([], [503]), [(r.status_code, r.text) for r in answers]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_vllm_server_exits_promptly_on_a_signal_during_validation(tiny_qwen3, tmp_path, sig):
    """vLLM's own server with the plugin: its engine client shuts down first, and a PoC batch in flight then
    waits for answers a dead engine never sends; the batch must fail at once so that the server can exit."""
    import httpx

    path, _ = tiny_qwen3
    port = free_port()
    cmd = vllm_server_cmd(path, port)
    proc = start_server(cmd, port, server_env(), tmp_path / "server.log")
    try:
        with httpx.Client(timeout=120) as client:
            _check_sigterm_during_validation(
                client, f"http://127.0.0.1:{port}", proc, tmp_path / "server.log", sig, ours=False
            )
    finally:
        stop_server(proc)


@pytest.mark.parametrize("api", ["distance", "artifacts"])
def test_standalone_node_needs_a_model_and_exits_when_its_engine_dies(tiny_qwen3, tmp_path, api):
    import psutil

    env = server_env(api)
    if api == "distance":  # the command line's own errors, once, through the console script and the former module
        script = pathlib.Path(sys.executable).with_name("poc-kernels-node")
        for cmd, extra, message in (
            ([sys.executable, "-m", "poc_kernels.vllm.server", "--port", "1"], {}, "--model is required"),
            ([str(script), "--poc-api", "v3"], {}, "invalid choice"),
            ([str(script), "--model", "m"], {"POC_LOGGING_LEVEL": "LOUD"}, "POC_LOGGING_LEVEL: must be one of"),
        ):
            r = subprocess.run(
                cmd,
                env=dict(env, **extra),
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
    path, _ = tiny_qwen3
    port = free_port()
    proc = start_server(node_cmd(path, port, "--poc-api", api), port, env, tmp_path / "server.log")
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
        engine = [c for c in children if "EngineCore" in " ".join(c.cmdline()) or "EngineCore" in c.name()]
        victim = engine[0] if engine else children[0]
        victim.kill()  # the engine dies under the node
        assert proc.wait(timeout=60) != 0
    finally:
        stop_server(proc)
