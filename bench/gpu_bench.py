#!/usr/bin/env python3
"""The measuring half of `make gpu-check`: ceilings, distances, artifacts, inputs, layer transforms, token ops,
the random projection, topk order.

    python bench/gpu_bench.py --json OUT.json [--quick] [--dry-run]

On a CUDA device every time is the median of device-event timings after
warm-up. The ceilings (a device-to-device copy, fp32 and TF32 GEMMs) are
measured in the same run, and each ``compute_distances`` row is set against
them through the roofline of ``bench/ROOFLINE.md`` (``bench/roofline.py``).
``--dry-run`` runs the same code on the CPU (Triton's interpreter, tiny sizes,
host timers): it checks the script, and its numbers are not GPU timings.
Each section prints its elapsed time as it ends.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

if not torch.cuda.is_available():  # the Triton backend runs on the CPU only through its interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

import roofline  # noqa: E402

import poc_kernels  # noqa: E402
from poc_kernels import _custom_ops, baselines, rng  # noqa: E402

BLOCK, KEY = "bench_block", "bench_key"
TOPK_K = 12
TOPK_HIDDEN = (576, 1024, 4096, 7168)


class Clock:
    """Median seconds of a call: CUDA events on a GPU, the host clock on the CPU."""

    def __init__(self, device: torch.device, warmup: int, reps: int) -> None:
        self.device, self.warmup, self.reps = device, warmup, reps

    def median_s(self, fn, *args, reps: int | None = None, **kwargs) -> float:
        """Return the median seconds of ``fn(*args, **kwargs)``."""
        reps = reps or self.reps
        for _ in range(self.warmup):
            fn(*args, **kwargs)
        if self.device.type != "cuda":
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn(*args, **kwargs)
                times.append(time.perf_counter() - t0)
            return statistics.median(times)
        torch.cuda.synchronize(self.device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in events:
            start.record()
            fn(*args, **kwargs)
            end.record()
        torch.cuda.synchronize(self.device)
        return statistics.median(s.elapsed_time(e) for s, e in events) / 1e3


class Plan:
    """The sizes of one mode."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        if mode == "dry-run":
            self.batches, self.hidden, self.per_nonce_batch, self.output_dim = [4, 9], [64], 4, 8192
            self.gemm, self.copy_mb, self.inputs, self.layer = 256, 16, (2, 8, 64), (64, 64)
            self.topk_rows, self.clock = 8, (1, 3)
            self.tokens = (16, (64,), 4)
            self.projection = (16, (64,))
        elif mode == "quick":
            self.batches, self.hidden, self.per_nonce_batch, self.output_dim = [256, 1024], [4096], 64, 8192
            self.gemm, self.copy_mb, self.inputs, self.layer = 8192, 2048, (64, 1024, 4096), (16384, 4096)
            self.topk_rows, self.clock = 256, (2, 10)
            self.tokens = (8192, (4096,), 1024)
            self.projection = (1024, (4096,))
        else:
            self.batches, self.hidden, self.output_dim = [64, 256, 1024, 4096], [1024, 4096, 7168], 8192
            self.per_nonce_batch = 64
            self.gemm, self.copy_mb, self.inputs, self.layer = 8192, 4096, (64, 1024, 4096), (32768, 4096)
            self.topk_rows, self.clock = 1024, (3, 20)
            # the engine's flat batch: T tokens, H of the network's models, PoC sequences of seq_len positions
            self.tokens = (8192, (2880, 4096), 1024)
            # SPEC §10: the input rows of a prefill of this many tokens, at the hidden sizes of the network's models
            self.projection = (2048, (2880, 4096))


# ----------------------------------------------------------------------------- ceilings


def ceilings(plan: Plan, device: torch.device, clock: Clock) -> dict:
    """Device-to-device copy (bytes read + written), fp32 and TF32 GEMM rates, and the issue rate."""
    n = plan.copy_mb * (1 << 20) // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    copy_s = clock.median_s(dst.copy_, src)
    m = plan.gemm
    a, b = torch.randn(m, m, device=device), torch.randn(m, m, device=device)
    rates = {}
    prev = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, tf32 in (("fp32", False), ("tf32", True)):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            rates[name] = 2 * m**3 / clock.median_s(torch.matmul, a, b)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    out = {
        "copy_gbps": 2 * n * 4 / copy_s / 1e9,
        "fp32_tflops": rates["fp32"] / 1e12,
        "tf32_tflops": rates["tf32"] / 1e12,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        clock_hz = getattr(props, "clock_rate", 0) * 1e3 or 1.98e9  # kHz where torch reports it
        out.update(sms=props.multi_processor_count, clock_ghz=clock_hz / 1e9)
        out["issue_tinstr_per_s"] = props.multi_processor_count * 4 * 32 * clock_hz / 1e12
    return out


# ----------------------------------------------------------------------------- distances


def distances(plan: Plan, device: torch.device, clock: Clock, ceil: dict):
    """Yield the rows of each (B, H), then of the next."""
    cuda = device.type == "cuda"
    common = {"output_dim": plan.output_dim}
    compiled_core = torch.compile(
        baselines.batched_fp32_core, dynamic=True, backend="inductor" if cuda else "aot_eager"
    )
    impls = {
        "triton-on_the_fly": functools.partial(poc_kernels.compute_distances, backend="triton", lm_head="on_the_fly"),
        "triton-cached": functools.partial(poc_kernels.compute_distances, backend="triton", lm_head="cached"),
        "batched-fp32": baselines.compute_distances_batched_fp32,
        "batched-fp32-compiled": functools.partial(baselines.compute_distances_batched_fp32, core=compiled_core),
    }
    rates = {"tf32": ceil["tf32_tflops"] * 1e12, "hbm": ceil["copy_gbps"] * 1e9}
    if "issue_tinstr_per_s" in ceil:
        rates["issue"] = ceil["issue_tinstr_per_s"] * 1e12
    g = torch.Generator(device="cpu").manual_seed(0)
    for h in plan.hidden:
        # the per-nonce original: its cost per nonce does not depend on B, so it is timed at one small B
        b = plan.per_nonce_batch
        x = torch.randn(b, h, generator=g).to(device)
        s = clock.median_s(baselines.compute_distances_per_nonce, x, BLOCK, KEY, torch.arange(b), reps=3, **common)
        per_nonce_rate = b / s
        yield [{"impl": "per-nonce", "B": b, "H": h, "median_ms": s * 1e3, "nonces_per_s": per_nonce_rate}]
        for b in plan.batches:
            x = torch.randn(b, h, generator=g).to(device)
            floor = roofline.row(b, h, **rates) if plan.output_dim == roofline.D else None
            found, rows = {}, []
            for name, fn in impls.items():
                s = clock.median_s(fn, x, BLOCK, KEY, torch.arange(b), **common)
                found[name] = b / s
                row = {
                    "impl": name,
                    "B": b,
                    "H": h,
                    "median_ms": s * 1e3,
                    "nonces_per_s": b / s,
                    "vs_per_nonce": (b / s) / per_nonce_rate,
                }
                if floor is not None:  # W generated inside the matmul, or read (the baselines read a cached W)
                    key = "floor_otf_ms" if name.endswith("on_the_fly") else "floor_cached_ms"
                    row["floor_ms"] = floor[key]
                    row["x_floor"] = s * 1e3 / floor[key]
                rows.append(row)
            for row in rows:
                row["vs_batched_fp32"] = row["nonces_per_s"] / found["batched-fp32"]
                row["vs_batched_fp32_compiled"] = row["nonces_per_s"] / found["batched-fp32-compiled"]
            yield rows


# ----------------------------------------------------------------------------- inputs and the layer transform


def inputs(plan: Plan, device: torch.device, clock: Clock, ceil: dict) -> list:
    b, seq, h = plan.inputs
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        out = torch.empty(b, seq, h, dtype=dtype, device=device)
        for backend in ("triton", "reference"):
            s = clock.median_s(
                poc_kernels.generate_inputs,
                BLOCK,
                KEY,
                torch.arange(b),
                seq,
                h,
                dtype=dtype,
                out=out,
                backend=backend,
                reps=None if backend == "triton" else 3,  # the oracle's torch ops in bounded slices: slow
            )
            gbps = out.numel() * out.element_size() / s / 1e9
            rows.append(
                {
                    "impl": backend,
                    "dtype": str(dtype).replace("torch.", ""),
                    "B": b,
                    "seq_len": seq,
                    "H": h,
                    "median_ms": s * 1e3,
                    "written_gbps": gbps,
                    "of_copy": gbps / ceil["copy_gbps"],
                }
            )
    return rows


def eager_layer_transform(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The layer transform of SPEC §7 as the original code runs it: eager ops in the activation dtype."""
    y = x / (x.norm(dim=-1, keepdim=True) + 1e-8)
    return y - 2 * (y * v).sum(dim=-1, keepdim=True) * v


def eager_layer_reflection(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The layer transform of SPEC-ARTIFACTS §3 (no normalization) as the deployed code runs it."""
    return x - 2 * (x * v).sum(dim=-1, keepdim=True) * v


def artifacts(plan: Plan, device: torch.device, clock: Clock, ceil: dict):
    """compute_artifacts: the fused kernel against the oracle (float64 torch ops) on the same device."""
    g = torch.Generator(device="cpu").manual_seed(1)
    for h in plan.hidden:
        for b in plan.batches:
            x = torch.randn(b, h, generator=g).to(device)
            found = {}
            for backend in ("triton", "reference"):
                found[backend] = clock.median_s(
                    poc_kernels.compute_artifacts, x, BLOCK, KEY, torch.arange(b), backend=backend
                )
            yield [
                {
                    "impl": name,
                    "B": b,
                    "H": h,
                    "median_ms": s * 1e3,
                    "nonces_per_s": b / s,
                    "vs_reference": found["reference"] / s,
                }
                for name, s in found.items()
            ]


def layer_transform(plan: Plan, device: torch.device, clock: Clock, ceil: dict) -> list:
    t, h = plan.layer
    cuda = device.type == "cuda"
    v32 = poc_kernels.vectors.layer_vector(BLOCK, 0, h, device=device)
    backend = "inductor" if cuda else "aot_eager"
    rows = []
    for normalize, eager in ((True, eager_layer_transform), (False, eager_layer_reflection)):
        compiled = torch.compile(eager, dynamic=False, backend=backend)
        for dtype in (torch.bfloat16, torch.float16):
            x = torch.randn(t, h, device=device).to(dtype)
            v = v32.to(dtype)  # as the deployed code: the vector cast to the activation dtype
            kernel = functools.partial(poc_kernels.apply_layer_transform_, normalize=normalize, backend="triton")
            impls = {"triton (in place)": kernel, "eager": eager, "eager, torch.compile": compiled}
            found = {name: clock.median_s(fn, x, v) for name, fn in impls.items()}
            for name, s in found.items():
                gbps = 2 * x.numel() * x.element_size() / s / 1e9  # read and write x once
                rows.append(
                    {
                        "impl": name,
                        "variant": "SPEC §7" if normalize else "SPEC-ARTIFACTS §3",
                        "dtype": str(dtype).replace("torch.", ""),
                        "T": t,
                        "H": h,
                        "median_ms": s * 1e3,
                        "gbps": gbps,
                        "of_copy": gbps / ceil["copy_gbps"],
                        "vs_eager": found["eager"] / s,
                        "vs_compiled": found["eager, torch.compile"] / s,
                    }
                )
    return rows


# ----------------------------------------------------------------------------- the token operations


def _graphed(fn):
    """Return ``fn`` captured in a CUDA graph (after a warm-up on a side stream) as its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _token_case(device: torch.device, t: int, h: int, share: float, seq_len: int, dtype: torch.dtype) -> dict:
    """One flat batch of ``t`` tokens, a ``share`` of them PoC (all, or every other one), as timed calls.

    Returns ``{(kind, impl): fn}``: the token operations and the whole-batch kernels on as many rows.
    """
    from poc_kernels.backends.triton import custom_ops  # noqa: F401  (registers torch.ops.poc_kernels.triton_*)

    poc = int(t * share)
    num_req = -(-poc // seq_len)
    idx = torch.arange(0, t, round(1 / share))
    tok_req = torch.full((t,), -1, dtype=torch.int32)
    tok_pos = torch.zeros(t, dtype=torch.int32)
    tok_req[idx] = (torch.arange(poc) // seq_len).to(torch.int32)
    tok_pos[idx] = (torch.arange(poc) % seq_len).to(torch.int32)
    seeds = torch.arange(1, num_req + 1, dtype=torch.int64) * 2654435761 % 2**32
    req_seeds = torch.zeros(num_req, 8, dtype=torch.int64)
    req_seeds[:, 0] = seeds
    tables = {
        "tok_req": tok_req.to(device),
        "tok_pos": tok_pos.to(device),
        "req_seeds": req_seeds.to(device),
        "req_seq_len": torch.full((num_req,), seq_len, dtype=torch.int32, device=device),
        "req_segments": torch.ones(num_req, dtype=torch.int32, device=device),
    }
    out = torch.empty(t, h, dtype=dtype, device=device)
    whole = torch.empty(num_req, seq_len, h, dtype=dtype, device=device)
    dev_seeds = seeds.to(device)
    x = torch.randn(t, h, device=device).to(dtype)
    y = torch.randn(t, h, device=device).to(dtype)
    xp, yp = x[:poc].clone(), y[:poc].clone()
    vecs = poc_kernels.vectors.layer_vector(BLOCK, 0, h, device=device).to(dtype).view(1, 1, h)
    req_layer = torch.zeros(num_req, dtype=torch.int32, device=device)  # slot 0, SPEC-ARTIFACTS §3 (the network's)

    def whole_layer():
        poc_kernels.apply_layer_transform_(xp, vecs[0, 0], normalize=False, backend="triton")
        poc_kernels.apply_layer_transform_(yp, vecs[0, 0], normalize=False, backend="triton")

    return {
        ("inputs", "write_token_inputs_"): lambda: poc_kernels.write_token_inputs_(out, **tables, backend="triton"),
        ("inputs", TOKEN_BASELINES["inputs"]): lambda: torch.ops.poc_kernels.triton_generate_inputs_(dev_seeds, whole),
        ("layer", "apply_token_layer_transform_"): lambda: poc_kernels.apply_token_layer_transform_(
            x, y, tables["tok_req"], req_layer, vecs, 0, backend="triton"
        ),
        ("layer", TOKEN_BASELINES["layer"]): whole_layer,
    }


TOKEN_BASELINES = {"inputs": "generate_inputs (whole batch)", "layer": "apply_layer_transform_ x2 (whole batch)"}


def token_ops(plan: Plan, device: torch.device, clock: Clock, ceil: dict) -> list:
    """The token operations on a flat batch of T tokens (all PoC, or every other one) against the whole-batch
    kernels on as many rows: the input rows against ``triton_generate_inputs_`` (seeds ready on the device), the
    layer transform of x and the residual (one launch) against ``apply_layer_transform_`` on each (two); eagerly
    and, on CUDA, as CUDA graph replays (the engine's way)."""
    t, hiddens, seq_len = plan.tokens
    modes = ("eager", "graph") if device.type == "cuda" else ("eager",)
    dtype = torch.bfloat16
    rows = []
    for h in hiddens:
        for share in (1.0, 0.5):
            poc = int(t * share)
            found, case_rows = {}, []
            for mode in modes:
                for (kind, name), fn in _token_case(device, t, h, share, seq_len, dtype).items():
                    s = found[mode, name] = clock.median_s(fn if mode == "eager" else _graphed(fn))
                    written = poc * h * dtype.itemsize
                    moved = written if kind == "inputs" else 4 * written  # x and y, each read and written
                    case_rows.append(
                        {
                            "impl": name,
                            "mode": mode,
                            "dtype": str(dtype).replace("torch.", ""),
                            "T": t,
                            "poc": poc,
                            "H": h,
                            "median_ms": s * 1e3,
                            "gbps": moved / s / 1e9,
                            "of_copy": moved / s / 1e9 / ceil["copy_gbps"],
                            "kind": kind,
                        }
                    )
            for row in case_rows:
                row["vs_whole"] = found[row["mode"], TOKEN_BASELINES[row["kind"]]] / (row["median_ms"] / 1e3)
            rows += case_rows
    return rows


# ----------------------------------------------------------------------------- the random projection (SPEC §10)

#: active parameters per token of a model of each hidden size, for the forward-time estimate: gpt-oss-20b
#: (H = 2880, 3.6B active) and Llama-3.1-8B (H = 4096); other sizes (the dry run) as 12 * H^2 * 32 layers
ACTIVE_PARAMS = {2880: 3.6e9, 4096: 8.0e9}


def projection(plan: Plan, device: torch.device, clock: Clock) -> list:
    """SPEC §10's ``x + x @ P`` (float64, fixed order) on the input rows of ``N`` PoC tokens.

    - ``build_p_ms``: ``P`` from the counter streams (what generating it per call would add; the package caches
      it per block instead), and ``project_ms`` the Triton kernel with the cached ``P`` (fp64 TFLOP/s);
    - ``token_plain_ms`` / ``token_projected_ms``: ``write_token_inputs_`` on the flat batch without and with the
      projection (every token projected), as the engine runs it (CUDA graph replays on a GPU);
    - ``forward_est_ms``: a forward of those tokens through a model of that H, estimated as ``2 * active
      parameters`` FLOPs at the bf16 GEMM rate measured here ([N, H] x [H, 4H]); ``overhead_pct`` the
      projection's added time against it (attention and the memory-bound ops are left out of the estimate, so
      the true overhead is lower).
    """
    from poc_kernels.backends.triton import custom_ops  # noqa: F401

    n, hiddens = plan.projection
    graph = device.type == "cuda"
    rows = []
    for h in hiddens:
        build_s = clock.median_s(poc_kernels.vectors.random_projection, BLOCK, h, "pre", device=device, reps=3)
        p = poc_kernels.api.projection(BLOCK, h, "pre", device)
        x = torch.randn(n, h, device=device)
        project_s = clock.median_s(torch.ops.poc_kernels.triton_project, x, p)
        seq_len = min(n, 1024)  # whole sequences of seq_len tokens, every one projected
        num_req = -(-n // seq_len)
        out = torch.empty(n, h, dtype=torch.bfloat16, device=device)
        req_seeds = torch.zeros(num_req, 8, dtype=torch.int64)
        req_seeds[:, 0] = torch.arange(1, num_req + 1, dtype=torch.int64) * 2654435761 % 2**32
        idx = torch.arange(n)
        t = {
            "tok_req": (idx // seq_len).to(torch.int32).to(device),
            "tok_pos": (idx % seq_len).to(torch.int32).to(device),
            "req_seeds": req_seeds.to(device),
            "req_seq_len": torch.full((num_req,), seq_len, dtype=torch.int32, device=device),
            "req_segments": torch.ones(num_req, dtype=torch.int32, device=device),
        }
        slots = torch.zeros(num_req, dtype=torch.int32, device=device)
        proj = p.view(1, h, h)

        plain = functools.partial(poc_kernels.write_token_inputs_, out, **t, backend="triton")
        projected = functools.partial(
            poc_kernels.write_token_inputs_, out, **t, req_projection=slots, projections=proj, backend="triton"
        )

        plain_s = clock.median_s(_graphed(plain) if graph else plain)
        projected_s = clock.median_s(_graphed(projected) if graph else projected)
        a = torch.randn(n, h, device=device, dtype=torch.bfloat16)
        w = torch.randn(h, 4 * h, device=device, dtype=torch.bfloat16)
        gemm_s = clock.median_s(torch.matmul, a, w)
        bf16_tflops = 2 * n * h * 4 * h / gemm_s / 1e12
        active = ACTIVE_PARAMS.get(h, 12 * h * h * 32)
        forward_s = 2 * active * n / (bf16_tflops * 1e12)
        rows.append(
            {
                "H": h,
                "N": n,
                "p_mib": 4 * h * h / 2**20,
                "build_p_ms": build_s * 1e3,
                "project_ms": project_s * 1e3,
                "fp64_tflops": 2 * n * h * h / project_s / 1e12,
                "token_plain_ms": plain_s * 1e3,
                "token_projected_ms": projected_s * 1e3,
                "bf16_tflops": bf16_tflops,
                "forward_est_ms": forward_s * 1e3,
                "overhead_pct": 100 * (projected_s - plain_s) / forward_s,
            }
        )
    return rows


# ----------------------------------------------------------------------------- the topk order (SPEC-ARTIFACTS §5)


def topk_order(plan: Plan, device: torch.device) -> list:
    """For each H: how many rows of torch.topk(-scores, 12, sorted=False) on this device are in the canonical order."""
    rows = []
    for h in TOPK_HIDDEN:
        seeds = torch.tensor(
            [rng.seed_from_string(f"{BLOCK}_{KEY}_nonce_{n}_pick_{TOPK_K}") for n in range(plan.topk_rows)]
        )
        scores = rng.hash32(torch.arange(h).expand(plan.topk_rows, h), seeds[:, None]).to(device)
        row = {"H": h, "k": TOPK_K, "rows": plan.topk_rows, "device": device.type}
        for name, s in (("hashes", scores), ("ties", scores % 7)):
            canonical = rng.smallest_k_canonical(s, TOPK_K)
            got = torch.topk(-s, k=TOPK_K, largest=True, sorted=False, dim=1).indices
            row[f"{name}_canonical_rows"] = int((got == canonical).all(dim=1).sum())
            row[f"{name}_same_set_rows"] = int(
                (got.sort(dim=1).values == canonical.sort(dim=1).values).all(dim=1).sum()
            )
        row["canonical"] = row["hashes_canonical_rows"] == row["ties_canonical_rows"] == plan.topk_rows
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- main


def environment(device: torch.device) -> dict:
    import triton

    env = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "backends": poc_kernels.available_backends(device),
        "extension": _custom_ops.EXT_STATUS,
        "cuda_extension": _custom_ops.HAS_CUDA_EXT,
    }
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", required=True, help="where the results go")
    p.add_argument("--quick", action="store_true", help="fewer sizes (the quick mode of make gpu-check)")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, tiny sizes: checks the script, times nothing")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        p.error("no CUDA device: run with --dry-run to check the script on the CPU")
    device = torch.device("cuda" if cuda else "cpu")
    plan = Plan("dry-run" if args.dry_run else "quick" if args.quick else "full")
    clock = Clock(device, *plan.clock)
    t0 = time.perf_counter()
    result = {"mode": plan.mode, "environment": environment(device)}

    def dump():
        result["elapsed_s"] = time.perf_counter() - t0
        with open(args.json, "w") as f:  # often: a run stopped at its limit keeps what it measured
            json.dump(result, f, indent=1)

    def section(name, fn):
        value = fn()
        if not inspect.isgenerator(value):
            result[name] = value
        else:  # rows as they come
            result[name] = []
            for rows in value:
                result[name].extend(rows)
                dump()
        dump()
        print(f"[gpu-bench] {name} done at +{result['elapsed_s']:.1f} s", flush=True)

    section("topk_order", lambda: topk_order(plan, device))
    section("ceilings", lambda: ceilings(plan, device, clock))
    section("distances", lambda: distances(plan, device, clock, result["ceilings"]))
    section("artifacts", lambda: artifacts(plan, device, clock, result["ceilings"]))
    section("inputs", lambda: inputs(plan, device, clock, result["ceilings"]))
    section("layer_transform", lambda: layer_transform(plan, device, clock, result["ceilings"]))
    section("token_ops", lambda: token_ops(plan, device, clock, result["ceilings"]))
    section("projection", lambda: projection(plan, device, clock))
    print(f"[gpu-bench] wrote {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
