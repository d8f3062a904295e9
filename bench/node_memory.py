"""Memory of a PoC node's processes around one large batch: the in-engine path keeps the API process flat.

Starts the standalone node (``python -m poc_kernels.node``) on the
embedded SmolLM2 weights, samples the RSS of every process at idle, while it
generates with ``batch_size x seq_len`` tokens per batch (1024 x 1023 by
default, the shape that cost 2.3 GB in the API process and again in the engine
when the driver built the embeddings), and after ``/stop``; then checks that a
node started with ``--enable-prompt-embeds`` refuses that batch (it would have
to hold the embeddings). Writes a markdown report::

    .venv/bin/python bench/node_memory.py --out bench/results/cpu-2core-node-memory.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from soak import POW, free_port, launch, rss, stop  # noqa: E402


def start(model: str, port: int, extra: list) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "poc_kernels.node", "--poc-api", "distance", "--model", model,
           "--port", str(port), "--dtype", "float32", "--max-model-len", "1100",
           "--kv-cache-memory-bytes", str(1 << 30), *extra]  # fmt: skip
    return launch(cmd, port, os.path.join(tempfile.gettempdir(), "poc-node-memory.log"), timeout=600)


def mib(sample: dict) -> dict:
    out = {}
    for k, v in sample.items():
        name = k.split("[")[0]
        out[name] = out.get(name, 0) + v / 2**20
    return out


def main(argv=None) -> int:
    import httpx

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--seq-len", type=int, default=1023)
    p.add_argument("--generate-s", type=float, default=30.0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from poc_kernels.weights import smollm2_dir

    model = str(smollm2_dir())
    body = dict(block_hash="mem", block_height=1, public_key="node", r_target=1.42, node_id=0, node_count=1,
                batch_size=args.batch_size, seq_len=args.seq_len)  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start(model, port, [])
    rows = []
    try:
        with httpx.Client(timeout=120) as client:
            time.sleep(5)
            rows.append(("idle", mib(rss(proc))))
            r = client.post(f"{base}{POW}/init/generate", json=body)
            assert r.status_code == 200, r.text
            peak: dict = {}
            t0 = time.time()
            while time.time() - t0 < args.generate_s:
                for k, v in mib(rss(proc)).items():
                    peak[k] = max(peak.get(k, 0), v)
                time.sleep(1)
            rows.append((f"generating {args.batch_size} x {args.seq_len} (peak over {args.generate_s:.0f} s)", peak))
            assert client.post(f"{base}{POW}/stop").status_code == 200
            time.sleep(10)
            rows.append(("10 s after /stop", mib(rss(proc))))
    finally:
        stop(proc)
    port = free_port()
    proc = start(model, port, ["--enable-prompt-embeds"])
    try:
        r = httpx.post(f"http://127.0.0.1:{port}{POW}/init/generate", json=body, timeout=120)
        answer = r.json()
        refused = (r.status_code, answer.get("detail") or f"accepted, state {answer['pow_status']['state']}")
    finally:
        stop(proc)
    names = sorted({k for _, s in rows for k in s})
    lines = [
        "# Memory of a PoC node around one large batch (CPU)",
        "",
        f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU; {time.strftime('%Y-%m-%d')}; SmolLM2-135M "
        "(H = 576), float32, the standalone node.",
        "",
        "Command: `.venv/bin/python bench/node_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
        "",
        "RSS per process (MiB):",
        "",
        "| when | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for when, s in rows:
        lines.append(f"| {when} | " + " | ".join(f"{s.get(n, 0):.0f}" for n in names) + " |")
    lines += [
        "",
        f"The same batch on a node started with `--enable-prompt-embeds` (its API process would hold "
        f"{args.batch_size * args.seq_len * 576 * 4 / 2**30:.1f} GiB of float32 embeddings): HTTP {refused[0]}, "
        f'"{refused[1]}"',
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
