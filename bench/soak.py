"""A soak of a PoC node: rounds, validation and chat over HTTP for many minutes; memory must stay flat.

Starts vLLM's OpenAI server with the poc_kernels plugin (the node as operators
run it) on 127.0.0.1, then repeats until ``--minutes`` have passed:

1. ``/init/generate`` and generate for ``--generate-s`` seconds, polling
   ``/status`` (its size and latency, incremental with ``since=``);
2. ``/phase/validate``, then validate the valid nonces found (``/validate``)
   while chat requests run beside it;
3. ``/stop``.

Every ``--sample-s`` seconds it records the RSS of every process of the
server (API server, engine core, workers). At the end it checks that memory is
flat: the total RSS of the last quarter of the run stays within ``--rss-slack``
of that after the warm-up, and writes a JSON and a markdown report. The
warm-up is the first ``--warm-rounds`` rounds (default 5): each round has a new
block hash, and the worker's backend keeps the lm_head and target of the 4
latest block hashes (``CACHE_SIZE``: 8192 x H float32 each, 18.9 MB at H = 576),
so a node's memory grows over its first 4 rounds by design. The growth from the
end of the first round is reported too::

    .venv/bin/python bench/soak.py --minutes 10 --out bench/results/cpu-2core-soak

``--traffic stock`` is the control: the same server without poc_kernels (no
plugin, no worker extension) under the same load of plain prefill requests
(``/v1/completions`` of ``batch_size`` prompts of ``seq_len`` random token ids,
one output token), with the same chat beside the "validation" half. Whatever
memory growth it shows too is vLLM's (or the allocator's), not the PoC path's.
``--env NAME=VALUE`` (repeatable) sets the server's environment, e.g.
``MALLOC_ARENA_MAX=2``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POW = "/api/v1/pow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str, port: int, log_path: str, kv_bytes: int, stock: bool = False, env: dict | None = None):
    poc = [] if stock else ["--worker-extension-cls", "poc_kernels.vllm.PoCWorkerExtension"]
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        *poc,
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
        "--kv-cache-memory-bytes",
        str(kv_bytes),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        "node",
    ]
    env = dict(env or {})
    if stock:
        return launch(cmd, port, log_path, env=env, ready="/v1/models", drop=("VLLM_PLUGINS",))
    # the endpoint plugin, serving the seeds API (the distance scheme) that this soak drives
    return launch(cmd, port, log_path, env={"VLLM_PLUGINS": "poc_kernels", "POC_API": "distance", **env})


def launch(
    cmd: list,
    port: int,
    log_path: str,
    timeout: float = 900.0,
    env: dict | None = None,
    ready: str = POW + "/status",
    drop: tuple = (),
) -> subprocess.Popen:
    """Start a server (its output to ``log_path``, in its own process group) and wait until ``ready`` answers."""
    import httpx

    env = dict(os.environ, **(env or {}))
    for name in ("TRITON_INTERPRET", *drop):
        env.pop(name, None)
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"the server did not come up in {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """SIGINT to the server's process group; SIGKILL if it is not gone within a minute."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def rss(proc: subprocess.Popen) -> dict:
    import psutil

    out = {}
    try:
        root = psutil.Process(proc.pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                name = "api_server" if p.pid == proc.pid else (p.name() or str(p.pid))
                out[f"{name}[{p.pid}]"] = p.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return out


def main(argv=None) -> int:
    import httpx

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint (default: the embedded SmolLM2 weights)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--generate-s", type=float, default=20.0)
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--rss-slack", type=float, default=0.05, help="allowed growth of the total RSS (default 5%%)")
    p.add_argument("--warm-rounds", type=int, default=5, help="rounds of warm-up before the flat check (default 5)")
    p.add_argument("--traffic", choices=("poc", "stock"), default="poc", help="poc rounds, or the stock control")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="the server's environment")
    p.add_argument("--out", default=None, help="path prefix of the .json and .md reports")
    p.add_argument("--render", metavar="JSON", help="only write the markdown of an earlier run's JSON report")
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            r = json.load(f)
        r.update(memory_summary(r["rss_samples"], warm_time(r["rounds"], args.warm_rounds, r["startup_s"])))
        with open(args.render, "w") as f:
            json.dump(r, f, indent=1)
        with open(args.render[: -len(".json")] + ".md", "w") as f:
            f.write(markdown(r))
        return 0
    model = args.model
    if model is None:
        from poc_kernels.weights import smollm2_dir

        model = str(smollm2_dir())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = os.path.join(tempfile.gettempdir(), "poc-soak-server.log")  # the server's own log, not committed
    t_start = time.time()
    server_env = dict(e.split("=", 1) for e in args.env)
    stock = args.traffic == "stock"
    proc = start(model, port, log_path, 512 << 20, stock=stock, env=server_env)
    startup_s = time.time() - t_start
    samples, polls, rounds, errors = [], [], [], []
    done = threading.Event()

    def sampler():
        while not done.is_set():
            samples.append({"t": time.time() - t_start, "rss": rss(proc)})
            done.wait(args.sample_s)

    threading.Thread(target=sampler, daemon=True).start()
    body = dict(
        block_hash="soak",
        block_height=1,
        public_key="node",
        r_target=1.42,
        node_id=0,
        node_count=1,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
    )
    chat = {"model": "node", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
    deadline = time.time() + 60 * args.minutes
    try:
        with httpx.Client(timeout=300) as client:
            n = 0
            while stock and time.time() < deadline:
                n += 1
                rounds.append({**stock_round(client, base, n, args, chat, errors), "t_end": time.time() - t_start})
                print(f"round {n}: {rounds[-1]}", flush=True)
            while not stock and time.time() < deadline:
                n += 1
                r = client.post(f"{base}{POW}/init/generate", json=dict(body, block_hash=f"soak{n}"))
                if r.status_code != 200:
                    errors.append(f"round {n} init: {r.status_code} {r.text[:200]}")
                    break
                since, t_gen = 0, time.time()
                while time.time() - t_gen < args.generate_s:
                    for s in (0, since):  # the full status, as old clients poll it, and the incremental one
                        t0 = time.perf_counter()
                        r = client.get(f"{base}{POW}/status", params={"since": s})
                        polls.append(
                            {
                                "t": time.time() - t_start,
                                "since": s,
                                "ms": 1e3 * (time.perf_counter() - t0),
                                "bytes": len(r.content),
                            }
                        )
                    since = r.json()["valid_next"]
                    time.sleep(1.0)
                st = client.post(f"{base}{POW}/phase/validate").json()["pow_status"]
                nonces, dist = st["valid_nonces"][:64], st["valid_distances"][:64]
                chats: list = []

                def talk(chats=chats):
                    chats.extend(client.post(f"{base}/v1/chat/completions", json=chat).status_code for _ in range(4))

                chatter = threading.Thread(target=talk)
                chatter.start()
                t0 = time.time()
                v = client.post(
                    f"{base}{POW}/validate",
                    json=dict(
                        public_key="node", block_hash=f"soak{n}", block_height=1, nonces=nonces, dist=dist, node_id=0
                    ),
                )
                chatter.join()
                verdict = v.json() if v.status_code == 200 else {}
                rounds.append(
                    {
                        "t_end": time.time() - t_start,
                        "round": n,
                        "checked": st["total_checked"],
                        "rate_per_s": st["rate_per_second"],
                        "valid": st["total_valid"],
                        "validated": len(nonces),
                        "validate_s": time.time() - t0,
                        "fraud_detected": verdict.get("fraud_detected"),
                        "n_invalid": verdict.get("n_invalid"),
                        "chat_status": chats,
                    }
                )
                if v.status_code != 200 or verdict.get("fraud_detected") or any(c != 200 for c in chats):
                    errors.append(f"round {n}: validate {v.status_code}, chat {chats}")
                client.post(f"{base}{POW}/stop")
                print(f"round {n}: {rounds[-1]}", flush=True)
    finally:
        done.set()
        stop(proc)

    totals = [(s["t"], sum(s["rss"].values())) for s in samples if s["rss"]]
    warm_t = warm_time(rounds, args.warm_rounds, startup_s)
    first_t = warm_time(rounds, 1, startup_s)
    warm = [r for t, r in totals if t >= warm_t] or [r for _, r in totals]
    base_rss = warm[0]
    tail = warm[-max(1, len(warm) // 4) :]
    growth = max(tail) / base_rss - 1
    after_first = next((r for t, r in totals if t >= first_t), totals[0][1])
    report_extra = memory_summary(samples, warm_t)
    full = [q for q in polls if q["since"] == 0]
    inc = [q for q in polls if q["since"] != 0]
    report = {
        "traffic": args.traffic,
        "server_env": server_env,
        "command": "python bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "date": time.strftime("%Y-%m-%d"),
        "model": model,
        "startup_s": startup_s,
        "rounds": rounds,
        "errors": errors,
        "rss_samples": samples,
        "status_polls": polls,
        "warm_rounds": args.warm_rounds,
        "rss_warm_bytes": base_rss,
        "rss_after_first_round_bytes": after_first,
        "rss_growth_from_first_round": max(tail) / after_first - 1,
        "rss_tail_max_bytes": max(tail),
        "rss_growth": growth,
        "rss_flat": growth <= args.rss_slack,
        **report_extra,
        "status_full_ms_median": statistics.median(q["ms"] for q in full) if full else None,
        "status_full_bytes_max": max(q["bytes"] for q in full) if full else None,
        "status_incremental_ms_median": statistics.median(q["ms"] for q in inc) if inc else None,
        "status_incremental_bytes_max": max(q["bytes"] for q in inc) if inc else None,
    }
    print(
        f"{len(rounds)} rounds, errors {len(errors)}; RSS after warm-up {base_rss / 2**20:.0f} MiB, "
        f"last quarter max {max(tail) / 2**20:.0f} MiB ({100 * growth:+.1f}%, flat: {report['rss_flat']})"
        + (
            f"; /status full {report['status_full_ms_median']:.1f} ms median, {report['status_full_bytes_max']} B "
            f"max; incremental {report['status_incremental_ms_median']:.1f} ms, "
            f"{report['status_incremental_bytes_max']} B"
            if full and inc
            else ""
        )
    )
    if args.out:
        with open(args.out + ".json", "w") as f:
            json.dump(report, f, indent=1)
        with open(args.out + ".md", "w") as f:
            f.write(markdown(report))
    return 0 if report["rss_flat"] and not errors else 1


def stock_round(client, base: str, n: int, args, chat: dict, errors: list) -> dict:
    """One round of the control: the same prefill load as a PoC round, as plain completions (no PoC anywhere)."""
    import random

    rng = random.Random(n)

    def prefill(count: int) -> int:
        # random token ids: no two prompts share a prefix, as the salted PoC requests share none
        prompts = [[rng.randrange(1000, 40000) for _ in range(args.seq_len)] for _ in range(count)]
        body = {"model": "node", "prompt": prompts, "max_tokens": 1}
        return client.post(f"{base}/v1/completions", json=body).status_code

    checked, t_gen = 0, time.time()
    while time.time() - t_gen < args.generate_s:
        code = prefill(args.batch_size)
        if code != 200:
            errors.append(f"round {n} prefill: {code}")
            break
        checked += args.batch_size
    rate = checked / (time.time() - t_gen)
    chats: list = []
    chatter = threading.Thread(
        target=lambda: chats.extend(client.post(f"{base}/v1/chat/completions", json=chat).status_code for _ in range(4))
    )
    chatter.start()
    t0 = time.time()
    codes = [prefill(args.batch_size) for _ in range(64 // args.batch_size or 1)]
    chatter.join()
    if any(c != 200 for c in codes + chats):
        errors.append(f"round {n}: prefill {codes}, chat {chats}")
    return {
        "round": n,
        "checked": checked,
        "rate_per_s": rate,
        "valid": 0,
        "validated": 64,
        "validate_s": time.time() - t0,
        "fraud_detected": None,
        "n_invalid": None,
        "chat_status": chats,
    }


def warm_time(rounds: list, n: int, startup_s: float) -> float:
    """When round ``n`` ended (seconds from the start), or that of the last round when fewer ran."""
    ends = [r["t_end"] for r in rounds if "t_end" in r]
    return ends[min(n, len(ends)) - 1] if ends else startup_s


def memory_summary(samples: list, warm_t: float) -> dict:
    """Per process: RSS after warm-up and at the end; and the total's growth over the second half of the run."""
    samples = [s for s in samples if s["rss"]]
    warm = next((s for s in samples if s["t"] >= warm_t), samples[0])
    last = samples[-1]
    half = samples[len(samples) // 2]
    name = lambda k: k.split("[")[0]  # noqa: E731
    per = {}
    for k, v in warm["rss"].items():
        end = next((v2 for k2, v2 in last["rss"].items() if name(k2) == name(k)), None)
        per[name(k)] = {"warm_mib": v / 2**20, "end_mib": end / 2**20 if end else None}
    tail = [sum(s["rss"].values()) for s in samples[len(samples) // 2 :]]
    return {
        "rss_per_process": per,
        "rss_second_half_growth": max(tail) / sum(half["rss"].values()) - 1,
        "rss_second_half_range_mib": [min(tail) / 2**20, max(tail) / 2**20],
    }


def markdown(r: dict) -> str:
    stock = r.get("traffic") == "stock"
    title = "stock vLLM server, the same prefill load without PoC (the control)" if stock else None
    lines = [
        f"# Soak: {title}" if stock else "# Soak of a PoC node (vLLM's server with the poc_kernels plugin)",
        "",
        f"{r['machine']}; {r['date']}; model `{os.path.basename(r['model'])}`, float32. CPU figures.",
        "",
        f"Command: `{r['command']}`" + (f"; server environment {r['server_env']}" if r.get("server_env") else ""),
        "",
        f"- {len(r['rounds'])} rounds "
        + ("(prefill, then 64 prompts beside chat)" if stock else "(generate, validate beside chat, stop)")
        + f"; errors: {len(r['errors'])}"
        + (": " + "; ".join(r["errors"]) if r["errors"] else ""),
        f"- total RSS of the server's processes after the first round {r['rss_after_first_round_bytes'] / 2**20:.0f}"
        f" MiB; largest in the last quarter {r['rss_growth_from_first_round'] * 100:+.1f}% over it",
        f"- after the warm-up ({r['warm_rounds']} rounds) {r['rss_warm_bytes'] / 2**20:.0f} MiB, "
        f"largest in the last quarter {r['rss_tail_max_bytes'] / 2**20:.0f} MiB ({100 * r['rss_growth']:+.1f}%): "
        f"{'flat' if r['rss_flat'] else 'NOT flat'}",
        "- per process, after warm-up -> at the end (MiB): "
        + ", ".join(
            f"{k} {v['warm_mib']:.0f} -> {v['end_mib']:.0f}" for k, v in r["rss_per_process"].items() if v["end_mib"]
        ),
        f"- second half of the run: total RSS within {r['rss_second_half_range_mib'][0]:.0f}–"
        f"{r['rss_second_half_range_mib'][1]:.0f} MiB (largest {100 * r['rss_second_half_growth']:+.1f}% over its "
        "first sample)",
        ""
        if stock
        else f"- `/status` (every valid nonce): median {r['status_full_ms_median']:.1f} ms, at most "
        f"{r['status_full_bytes_max']} bytes; with `since=` (only what is new): median "
        f"{r['status_incremental_ms_median']:.1f} ms, at most {r['status_incremental_bytes_max']} bytes",
        "",
        "| round | nonces checked | nonces/s | valid | validated | validate (s) | fraud | chat beside it |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for x in r["rounds"]:
        lines.append(
            f"| {x['round']} | {x['checked']} | {x['rate_per_s']:.1f} | {x['valid']} | {x['validated']} | "
            f"{x['validate_s']:.1f} | {x['fraud_detected']} | {x['chat_status']} |"
        )
    lines += [
        "",
        "RSS over time (MiB, every process):",
        "",
        "| t (s) | " + " | ".join(["processes"]) + " |",
        "|---:|---|",
    ]
    step = max(1, len(r["rss_samples"]) // 20)
    for s in r["rss_samples"][::step]:
        procs = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(s["rss"].items()))
        lines.append(f"| {s['t']:.0f} | {procs} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
