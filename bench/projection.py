"""What the random projection (SPEC §10) costs on this machine: per row, per block, and in a round.

- per row: ``x + x @ P`` by ``vectors.project`` (elementwise torch ops, any
  device) and by the C++ op (the ``cpp`` backend), the same bits;
- per block: building ``P`` from the counter streams (what a cache per block
  saves; generating it on the fly would pay it again in every call, shown
  against the C++ op's time on a round's rows);
- in a round on SmolLM2 (transformers forward, float32): inputs, forward and
  distances of ``--batch`` nonces of ``--seq-len`` tokens, with and without the
  projection, with the C++ backend;
- with ``--engine-rounds N``: ``make run``'s round (``python/poc_round.py``,
  256 nonces of 64 tokens through vLLM on this CPU, both schemes) N times
  without and with ``--random-projection``, alternating, each in a fresh
  process; the input rows are projected inside the engine's forward;
- with ``--engine-write N`` alone: the same engine in this process (SmolLM2,
  float32, artifact scheme, batches of 32 nonces of 64 tokens), the time spent
  in the forward's input write (``TokenTable.write_inputs``) and in the round,
  N times without and with the projection: the projection's own cost inside
  the engine, without the spread between processes.

    .venv/bin/python bench/projection.py --out bench/results/cpu-2core-projection
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

import poc_kernels
from poc_kernels import _custom_ops, vectors


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[576, 2880])
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--engine-rounds", type=int, default=0, help="also time make run's round N times each way")
    p.add_argument("--engine-write", type=int, default=0, help="only time the engine's input write, N times each way")
    p.add_argument("--out", default=None, help="path prefix of the .json and .md reports")
    args = p.parse_args(argv)
    if args.engine_write:
        return engine_write(args.engine_write, args.out, argv)
    torch.manual_seed(0)
    rows = []
    for h in args.hidden:
        x = torch.randn(args.rows, h)
        build = best_of(lambda h=h: vectors.random_projection("bench", h, "pre"), args.repeat)
        proj = vectors.random_projection("bench", h, "pre")
        t_ref = best_of(lambda x=x, proj=proj: vectors.project(x, proj), 1)
        t_cpp = best_of(lambda x=x, proj=proj: _custom_ops.project(x, proj), args.repeat)
        assert torch.equal(vectors.project(x[:4], proj), _custom_ops.project(x[:4], proj))
        rows.append(
            {
                "hidden": h,
                "build_p_ms": 1e3 * build,
                "p_mib": 4 * h * h / 2**20,
                "reference_ms_per_row": 1e3 * t_ref / args.rows,
                "cpp_ms_per_row": 1e3 * t_cpp / args.rows,
                # P generated in every call instead of cached: its build against the projection of a round's rows
                "fresh_p_round_pct": 100 * build / (t_cpp / args.rows * args.batch * args.seq_len),
            }
        )
        print(rows[-1], flush=True)

    from poc_kernels.audit import HiddenStates
    from poc_kernels.weights import smollm2_dir

    hidden = HiddenStates.from_path(str(smollm2_dir()), seq_len=args.seq_len, batch_size=args.batch)
    nonces = list(range(args.batch))
    h_size = hidden.hidden_size

    def round_(projection: bool) -> dict:
        t0 = time.perf_counter()
        x = poc_kernels.generate_inputs(
            "bench", "node", nonces, args.seq_len, h_size, dtype=torch.float32, random_projection=projection
        )
        t1 = time.perf_counter()
        with torch.no_grad():
            last = hidden.model.model(inputs_embeds=x).last_hidden_state[:, -1]
        t2 = time.perf_counter()
        poc_kernels.compute_distances(last, "bench", "node", nonces, random_projection=projection)
        t3 = time.perf_counter()
        return {"inputs_s": t1 - t0, "forward_s": t2 - t1, "distances_s": t3 - t2, "total_s": t3 - t0}

    round_(True)  # warm: P cached, the forward's kernels loaded
    runs = {False: [], True: []}
    for _ in range(args.repeat):
        for projection in (False, True):
            runs[projection].append(round_(projection))
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
    overhead = med[True]["total_s"] / med[False]["total_s"] - 1
    # the projection's own time: the forward is the same work either way, so its spread is the machine's noise
    own = lambda m: m["inputs_s"] + m["distances_s"]  # noqa: E731
    own_overhead = (own(med[True]) - own(med[False])) / med[False]["total_s"]
    forwards = [r["forward_s"] for v in runs.values() for r in v]
    forward_spread = (max(forwards) - min(forwards)) / statistics.median(forwards)
    engine = engine_rounds(args.engine_rounds) if args.engine_rounds else None
    report = {
        "engine_rounds": engine,
        "command": "python bench/projection.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
        "round": {"batch": args.batch, "seq_len": args.seq_len, "hidden": h_size, "off": med[False], "on": med[True]},
        "round_overhead": overhead,
        "own_overhead": own_overhead,
        "forward_spread": forward_spread,
    }
    print(
        json.dumps(report["round"], indent=1),
        f"overhead {100 * overhead:+.1f}% (own {100 * own_overhead:+.1f}%, forward spread {100 * forward_spread:.1f}%)",
    )
    if args.out:
        with open(args.out + ".json", "w") as f:
            json.dump(report, f, indent=1)
        with open(args.out + ".md", "w") as f:
            f.write(markdown(report))
    return 0


def engine_write(n: int, out, argv) -> int:
    """The engine's input write and round, in this process, ``n`` times without and with the projection."""
    import sys

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the worker in this process, so its calls can be timed
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "python"))
    from poc_kernels.vllm import inline
    from poc_kernels.weights import smollm2_dir

    from _common import make_engine

    spent = {"s": 0.0}
    write = inline.TokenTable.write_inputs

    def timed(self, x):
        t0 = time.perf_counter()
        write(self, x)
        spent["s"] += time.perf_counter() - t0

    inline.TokenTable.write_inputs = timed
    nonces, batch, seq_len = 256, 32, 64
    engine = make_engine("vllm", str(smollm2_dir()), "float32", seq_len, batch)
    runs = {"off": [], "on": []}
    try:
        for _ in range(n):
            for name in ("off", "on"):
                spent["s"] = 0.0
                t0 = time.perf_counter()
                for i in range(0, nonces, batch):
                    engine.run("bench", "node", list(range(i, i + batch)), scheme="artifact", rp=name == "on")
                runs[name].append({"round_s": time.perf_counter() - t0, "write_s": spent["s"]})
                print(name, runs[name][-1], flush=True)
    finally:
        engine.close()
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
    own = (med["on"]["write_s"] - med["off"]["write_s"]) / med["off"]["round_s"]
    report = {
        "command": "python bench/projection.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "nonces": nonces,
        "batch": batch,
        "seq_len": seq_len,
        "runs": runs,
        "own_overhead": own,
    }
    lines = [
        "# The random projection inside the engine (SPEC §10)",
        "",
        f"{report['machine']}; {report['date']}. CPU figures.",
        "",
        f"Command: `{report['command']}`",
        "",
        f"SmolLM2 through vLLM on this CPU (float32, the worker in the driver's process), {nonces} nonces of "
        f"{seq_len} tokens in batches of {batch}, artifact scheme; the forward's input write "
        "(`TokenTable.write_inputs`: the C++ op writes the rows, and with the projection projects them before "
        "the cast) timed inside the worker, seconds:",
        "",
        "| projection | round (runs) | input write (runs) |",
        "|---|---|---|",
    ]
    for name in ("off", "on"):
        rounds = ", ".join(f"{r['round_s']:.2f}" for r in runs[name])
        writes = ", ".join(f"{r['write_s']:.3f}" for r in runs[name])
        lines.append(f"| {name} | {rounds} | {writes} |")
    lines += [
        "",
        f"The projection's own time in the engine (the input write, on minus off, medians) against the round: "
        f"**{100 * own:+.1f}%**.",
    ]
    print(lines[-1])
    if out:
        with open(out + ".json", "w") as f:
            json.dump(report, f, indent=1)
        with open(out + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


def engine_rounds(n: int) -> dict:
    """Seconds of each scheme's batches in ``python/poc_round.py``, ``n`` runs without and with the projection."""
    import subprocess
    import sys
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = {"off": {"distance": [], "artifact": []}, "on": {"distance": [], "artifact": []}}
    for _ in range(n):
        for name, flag in (("off", []), ("on", ["--random-projection"])):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, os.path.join(root, "python", "poc_round.py"), "--out-dir", tmp, *flag]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=root)
                with open(os.path.join(tmp, "poc_round.json")) as f:
                    result = json.load(f)
            out[name]["distance"].append(result["elapsed_s"])
            out[name]["artifact"].append(result["artifact"]["elapsed_s"])
            out["engine"] = f"{result['engine']} on {result['device']}, {result['dtype']}"
            out["nonces"], out["seq_len"] = len(result["nonces"]), result["seq_len"]
            print(name, out[name]["distance"][-1], out[name]["artifact"][-1], flush=True)
    return out


def markdown(r: dict) -> str:
    rnd = r["round"]
    lines = [
        "# The random projection's cost (SPEC §10)",
        "",
        f"{r['machine']}; {r['date']}. CPU figures.",
        "",
        f"Command: `{r['command']}`",
        "",
        "| H | build P (ms) | P (MiB) | vectors.project (ms/row) | C++ op (ms/row) | P per call, on a round (+%) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['hidden']} | {x['build_p_ms']:.1f} | {x['p_mib']:.1f} | {x['reference_ms_per_row']:.3f} | "
            f"{x['cpp_ms_per_row']:.3f} | {x['fresh_p_round_pct']:.1f} |"
        )
    rnd_rows = rnd["batch"] * rnd["seq_len"]
    lines += [
        "",
        f"The last column: building P in every call instead of once per block, against the C++ op on a round's "
        f"{rnd_rows} input rows. The package caches P per block (`poc_kernels.api.projection`, 4 blocks; in an "
        "engine, `POC_PROJECTION_SLOTS` slots).",
    ]
    lines += [
        "",
        f"A round on SmolLM2 (H = {rnd['hidden']}), {rnd['batch']} nonces x {rnd['seq_len']} tokens, transformers "
        "forward in float32, C++ backend, median seconds:",
        "",
        "| | inputs | forward | distances | total |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("off", "on"):
        m = rnd[name]
        lines.append(
            f"| projection {name} | {m['inputs_s']:.3f} | {m['forward_s']:.3f} | {m['distances_s']:.3f} | "
            f"{m['total_s']:.3f} |"
        )
    lines += [
        "",
        f"The projection's own time (inputs and distances, on minus off) against the round: "
        f"**{100 * r['own_overhead']:+.1f}%**. The rounds' medians differ by {100 * r['round_overhead']:+.1f}%; "
        f"that includes the forward, which does the same work either way and whose runs spread by "
        f"{100 * r['forward_spread']:.1f}% on this machine.",
    ]
    e = r.get("engine_rounds")
    if e:
        lines += [
            "",
            f"`make run`'s round through the engine ({e['engine']}; {e['nonces']} nonces of {e['seq_len']} tokens "
            "per scheme; the input rows projected in the forward, the hidden states before each scheme), "
            f"{len(e['off']['distance'])} fresh processes each way, alternating; seconds per scheme:",
            "",
            "| scheme | off (runs) | on (runs) | median off | median on | on vs off |",
            "|---|---|---|---:|---:|---:|",
        ]
        for scheme in ("distance", "artifact"):
            off, on = e["off"][scheme], e["on"][scheme]
            m_off, m_on = statistics.median(off), statistics.median(on)
            lines.append(
                f"| {scheme} | {', '.join(f'{x:.1f}' for x in off)} | {', '.join(f'{x:.1f}' for x in on)} | "
                f"{m_off:.1f} | {m_on:.1f} | {100 * (m_on / m_off - 1):+.1f}% |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
