"""What the random projection (SPEC §10) costs on this machine: per row, per block, and in a round.

- per row: ``x + x @ P`` by ``vectors.project`` (elementwise torch ops, any
  device) and by the C++ op (the ``cpp`` backend), the same bits;
- per block: building ``P`` from the counter streams (what a cache per block
  saves; generating it on the fly would pay this for every row);
- in a round on SmolLM2 (transformers forward, float32): inputs, forward and
  distances of ``--batch`` nonces of ``--seq-len`` tokens, with and without the
  projection, with the C++ backend.

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
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=None, help="path prefix of the .json and .md reports")
    args = p.parse_args(argv)
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
    report = {
        "command": "python bench/projection.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
        "round": {"batch": args.batch, "seq_len": args.seq_len, "hidden": h_size, "off": med[False], "on": med[True]},
        "round_overhead": overhead,
    }
    print(json.dumps(report["round"], indent=1), f"overhead {100 * overhead:+.1f}%")
    if args.out:
        with open(args.out + ".json", "w") as f:
            json.dump(report, f, indent=1)
        with open(args.out + ".md", "w") as f:
            f.write(markdown(report))
    return 0


def markdown(r: dict) -> str:
    rnd = r["round"]
    lines = [
        "# The random projection's cost (SPEC §10)",
        "",
        f"{r['machine']}; {r['date']}. CPU figures.",
        "",
        f"Command: `{r['command']}`",
        "",
        "| H | build P (ms) | P (MiB) | vectors.project (ms/row) | C++ op (ms/row) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['hidden']} | {x['build_p_ms']:.1f} | {x['p_mib']:.1f} | {x['reference_ms_per_row']:.3f} | "
            f"{x['cpp_ms_per_row']:.3f} |"
        )
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
    lines += ["", f"Overhead of the projection on the round: {100 * r['round_overhead']:+.1f}%."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
