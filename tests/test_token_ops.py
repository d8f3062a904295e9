"""The token operations of an engine's flat batch: ``write_token_inputs_`` and ``apply_token_layer_transform_``.

One forward step holds tokens of many requests; the PoC tokens' rows get their
input embeddings and layer transforms, every other row keeps its bits. Each
backend is held, bit for bit, to its own whole-tensor operations: a token's
row equals the row of ``generate_inputs`` for its nonce and position, and the
per-row ``apply_layer_transform`` of its request's layer code. Rows straddle
the cosine/sine boundary of a stream and, for the stronger inputs, segment
boundaries (an empty last segment included). On CUDA both operations are also
captured in a CUDA graph and replayed with refilled index tables.
"""

import pytest
import torch

import poc_kernels
from poc_kernels import backends, seeds, vectors

from _backends import CUDA, backend_devices

BLOCK, KEY = "blk_tok", "key_tok"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# 41: the stronger inputs of a one-position request have an empty last segment; 57: odd streams (the last sine is
# dropped); on a GPU also a size across several 1024-element blocks, not a multiple of them.
HIDDEN_SIZES = [41, 57] + ([2880] if CUDA else [])
# (nonce, seq_len, segments): odd sequence lengths put the cosine/sine boundary inside a row
REQUESTS = [(11, 5, 1), (12, 3, 8), (13, 4, 1), (2**32 - 1, 7, 8), (7, 1, 8)]
# (request row, position) of each token, -1 for a chat token; runs of one request and single decoding tokens
TOKENS = [(0, 0), (-1, 0), (1, 0), (1, 1), (0, 1), (0, 2), (-1, 0), (1, 2), (2, 3), (0, 3), (3, 6), (3, 2), (4, 0)]
# layer codes of the requests: slot 0 normalized, slot 1 plain, none, slot 1 normalized, slot 0 plain
CODES = [1, 2, -1, 3, 0]
SLOTS, LAYERS = 2, 3
SENTINEL = -3.5


def _params(op: str) -> list:
    return [p for p in backend_devices() if getattr(backends.get(p.values[0]), op) is not None]


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of a float tensor (so NaN payloads and signed zeros count)."""
    return t.view({2: torch.int16, 4: torch.int32}[t.element_size()])


def _tables(device, tokens=TOKENS, requests=REQUESTS, extra=3):
    """The index tensors of a step: token tables longer than T by ``extra`` (entries the op must not read)."""
    num = len(requests)
    req_seeds = torch.zeros(num, 8, dtype=torch.int64)
    for r, (nonce, _, segments) in enumerate(requests):
        if segments == 1:
            req_seeds[r, 0] = seeds.derive_nonce_seeds(BLOCK, KEY, [nonce], need_post=False).input[0]
        else:
            req_seeds[r] = seeds.stronger_input_seeds(BLOCK, KEY, [nonce])[0]
    i32 = lambda v: torch.tensor(v, dtype=torch.int32, device=device)  # noqa: E731
    return {
        "tok_req": i32([r for r, _ in tokens] + [0] * extra),
        "tok_pos": i32([p for _, p in tokens] + [1] * extra),
        "req_seeds": req_seeds.to(device),
        "req_seq_len": i32([q[1] for q in requests]),
        "req_segments": i32([q[2] for q in requests]),
    }


def _input_rows(backend, device, hidden, dtype, requests=REQUESTS):
    """Each request's whole input embeddings from the same backend's generate_inputs."""
    kw = {"dtype": dtype, "device": device, "backend": backend}
    return [
        poc_kernels.generate_inputs(BLOCK, KEY, [nonce], seq_len, hidden, stronger_rng=segments == 8, **kw)[0]
        for nonce, seq_len, segments in requests
    ]


def _vectors(hidden, dtype, device):
    """``[SLOTS, LAYERS, H]``: each slot's layer vectors (its own block hash), cast to the activation dtype."""
    return torch.stack(
        [
            torch.stack([vectors.layer_vector(f"{BLOCK}{s}", layer, hidden, device=device) for layer in range(LAYERS)])
            for s in range(SLOTS)
        ]
    ).to(dtype)


def _hidden(t, h, seed, dtype, device, scale=30.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(t, h, generator=g) * scale).to(dtype).to(device)


# ----------------------------------------------------------------------------- stream slices


@pytest.mark.parametrize("n", [1, 2, 41, 57, 300001])
def test_normal_slices_are_the_stream(n):
    """``rng.normal_slice`` and the C++ ``normal_slice_`` (any start, across p = ceil(n/2)) equal the whole stream."""
    from poc_kernels import _custom_ops, rng

    seed = 2**32 - 5
    whole = rng.normal(seed, n)
    g = torch.Generator().manual_seed(n)
    bounds = [(0, n), (0, 0), (n, n), ((n - 1) // 2, min(n, (n + 3) // 2))]
    bounds += [tuple(sorted(torch.randint(0, n + 1, (2,), generator=g).tolist())) for _ in range(6)]
    for start, stop in bounds:
        assert torch.equal(rng.normal_slice(seed, n, start, stop), whole[start:stop]), (start, stop)
    assert torch.equal(rng.normal_slice(torch.tensor([seed, 3]), n, 0, n)[0], whole)
    if not _custom_ops.HAS_EXT:
        return
    ext = _custom_ops.normal_(torch.empty(1, n), torch.tensor([seed]))[0]
    for start, stop in bounds:
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            got = _custom_ops.normal_slice_(torch.empty(stop - start, dtype=dtype), seed, n, start)
            assert torch.equal(got, ext[start:stop].to(dtype)), (start, stop, dtype)


def test_normal_slice_bad_arguments():
    from poc_kernels import _custom_ops, rng

    with pytest.raises(ValueError, match="slice \\[3, 2\\) must lie within \\[0, 5\\]"):
        rng.normal_slice(1, 5, 3, 2)
    with pytest.raises(ValueError, match="must lie within"):
        rng.normal_slice(1, 5, 0, 6)
    with pytest.raises(ValueError, match="seed must lie in"):
        rng.normal_slice(2**32, 5, 0, 1)
    if not _custom_ops.HAS_EXT:
        return
    for out, seed, n, start, match in (
        (torch.empty(4), 1, 5, 2, "start must lie in"),
        (torch.empty(4), -1, 5, 0, "seed must lie in"),
        (torch.empty(2, 2), 1, 5, 0, "out must be 1-D"),
        (torch.empty(8)[::2], 1, 9, 0, "out must be contiguous"),
        (torch.empty(4, dtype=torch.int32), 1, 5, 0, "out must be float32"),
    ):
        with pytest.raises(RuntimeError, match=match):
            _custom_ops.normal_slice_(out, seed, n, start)


# ----------------------------------------------------------------------------- write_token_inputs_


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("backend, device", _params("write_token_inputs_"))
def test_token_inputs_are_the_rows_of_generate_inputs(backend, device, hidden, dtype):
    tables = _tables(device)
    t_count = len(TOKENS)
    rows = _input_rows(backend, device, hidden, dtype)
    # dense rows (a view of a longer buffer) and padded rows (row stride > H): nothing outside out[:T, :H] moves
    dense = torch.full((t_count + 3, hidden), SENTINEL, dtype=dtype, device=device)
    padded = torch.full((t_count, hidden + 5), SENTINEL, dtype=dtype, device=device)
    dense[1, 0] = float("nan")  # a chat row keeps every bit, NaN included
    for buf, out in ((dense, dense[:t_count]), (padded, padded[:, :hidden])):
        before = buf.clone()
        assert poc_kernels.write_token_inputs_(out, **tables, backend=backend) is out
        expect = before.clone()
        for t, (r, pos) in enumerate(TOKENS):
            if r >= 0:
                expect[t, :hidden] = rows[r][pos]
        assert torch.equal(_bits(buf), _bits(expect)), (backend, (buf != expect).nonzero()[:5])


@pytest.mark.parametrize("backend, device", _params("write_token_inputs_"))
def test_token_inputs_of_a_whole_prefill(backend, device):
    """A request's whole sequence in one run (every row, several pieces of the C++ op), then the next request's."""
    hidden, dtype = 72, torch.bfloat16
    requests = [(21, 130, 1), (22, 70, 8)]
    tokens = [(0, p) for p in range(130)] + [(1, p) for p in range(70)]
    out = torch.zeros(len(tokens), hidden, dtype=dtype, device=device)
    poc_kernels.write_token_inputs_(out, **_tables(device, tokens, requests), backend=backend)
    rows = _input_rows(backend, device, hidden, dtype, requests)
    assert torch.equal(out, torch.cat(rows))


@pytest.mark.parametrize("backend, device", _params("write_token_inputs_"))
def test_token_inputs_empty_batch_and_no_poc_token(backend, device):
    tables = _tables(device)
    empty = torch.empty(0, 41, device=device)
    assert poc_kernels.write_token_inputs_(empty, **tables, backend=backend) is empty
    out = torch.full((4, 41), SENTINEL, device=device)
    tables["tok_req"] = torch.full((4,), -1, dtype=torch.int32, device=device)
    poc_kernels.write_token_inputs_(out, **tables, backend=backend)
    assert (out == SENTINEL).all()


# SPEC §10: the requests' P_pre slots (slot 0 is BLOCK's own P_pre, slot 1 another block's), -1 unprojected
PROJ_SLOTS = [0, -1, 1, 0, 1]


def _projections(hidden, device):
    return torch.stack(
        [vectors.random_projection(b, hidden, "pre", device=device) for b in (BLOCK, f"{BLOCK}_other")]
    ).contiguous()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend, device", _params("write_token_inputs_"))
def test_token_inputs_with_projection_are_the_projected_rows(backend, device, dtype):
    """SPEC §10 in the flat batch: a request's rows are x + x @ P of its slot, then cast; others as before."""
    hidden = 41
    tables = _tables(device)
    proj = _projections(hidden, device)
    req_projection = torch.tensor(PROJ_SLOTS, dtype=torch.int32, device=device)
    out = torch.full((len(TOKENS) + 2, hidden), SENTINEL, dtype=dtype, device=device)
    out[-1, 3] = float("nan")
    before = out.clone()
    poc_kernels.write_token_inputs_(
        out[: len(TOKENS)], **tables, req_projection=req_projection, projections=proj, backend=backend
    )
    f32 = _input_rows(backend, device, hidden, torch.float32)
    plain = _input_rows(backend, device, hidden, dtype)
    kw = {"dtype": dtype, "device": device, "backend": backend}
    own = [
        poc_kernels.generate_inputs(BLOCK, KEY, [n], q, hidden, stronger_rng=g == 8, random_projection=True, **kw)[0]
        for n, q, g in REQUESTS
    ]
    expect = before.clone()
    for t, (r, pos) in enumerate(TOKENS):
        if r < 0:
            continue
        slot = PROJ_SLOTS[r]
        if slot < 0:
            expect[t] = plain[r][pos]
        elif slot == 0:  # BLOCK's own P_pre: generate_inputs(random_projection=True), bit for bit
            expect[t] = own[r][pos]
        else:
            expect[t] = vectors.project(f32[r][pos : pos + 1], proj[1])[0].to(dtype)
    assert torch.equal(_bits(out), _bits(expect)), (backend, (out != expect).nonzero()[:5])
    assert not torch.equal(own[0], plain[0])
    # every slot -1: exactly the unprojected rows
    again = torch.full_like(out[: len(TOKENS)], SENTINEL)
    none = torch.full_like(req_projection, -1)
    poc_kernels.write_token_inputs_(again, **tables, req_projection=none, projections=proj, backend=backend)
    plain_out = torch.full_like(again, SENTINEL)
    poc_kernels.write_token_inputs_(plain_out, **tables, backend=backend)
    assert torch.equal(_bits(again), _bits(plain_out))


# ----------------------------------------------------------------------------- apply_token_layer_transform_


@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend, device", _params("token_layer_transform_"))
def test_token_layer_transform_is_the_per_row_transform(backend, device, dtype, with_residual):
    hidden, t_count, layer = 57, len(TOKENS), 1
    tok_req = _tables(device)["tok_req"]
    req_layer = torch.tensor(CODES, dtype=torch.int32, device=device)
    vecs = _vectors(hidden, dtype, device)
    x0 = _hidden(t_count, hidden, 1, dtype, device)
    y0 = _hidden(t_count, hidden, 2, dtype, device, scale=3.0)
    x0[1, 5] = y0[6, 0] = float("nan")  # chat rows keep their bits
    x, y = x0.clone(), y0.clone() if with_residual else None
    poc_kernels.apply_token_layer_transform_(x, y, tok_req, req_layer, vecs, layer, backend=backend)
    for name, got, start in (("x", x, x0), ("y", y, y0)):
        if got is None:
            continue
        expect = start.clone()
        for t, (r, _) in enumerate(TOKENS):
            code = CODES[r] if r >= 0 else -1
            if code >= 0:
                v = vecs[code >> 1, layer]
                row = poc_kernels.apply_layer_transform(start[t : t + 1], v, normalize=bool(code & 1), backend=backend)
                expect[t] = row[0]
        assert torch.equal(_bits(got), _bits(expect)), (name, (got != expect).any(dim=1).nonzero().flatten())
    assert (_bits(x) != _bits(x0)).any(dim=1).tolist() == [r >= 0 and CODES[r] >= 0 for r, _ in TOKENS]


@pytest.mark.parametrize("backend, device", _params("token_layer_transform_"))
def test_token_layer_transform_picks_the_layer_and_slot(backend, device):
    """Each (slot, layer) gives another vector, and a request without a code is left alone."""
    hidden, dtype = 41, torch.bfloat16
    vecs = _vectors(hidden, dtype, device)
    x0 = _hidden(3, hidden, 3, dtype, device)
    tok_req = torch.tensor([0, 1, 2], dtype=torch.int32, device=device)
    results = []
    for layer in (0, 2):
        x = x0.clone()
        req_layer = torch.tensor([0, 2, -1], dtype=torch.int32, device=device)
        poc_kernels.apply_token_layer_transform_(x, None, tok_req, req_layer, vecs, layer, backend=backend)
        for t, slot in ((0, 0), (1, 1)):
            expect = poc_kernels.apply_layer_transform(x0[t], vecs[slot, layer], normalize=False, backend=backend)
            assert torch.equal(x[t], expect)
        assert torch.equal(_bits(x[2]), _bits(x0[2]))
        results.append(x)
    assert not torch.equal(results[0], results[1])


def test_cpu_dispatch():
    """On the CPU "auto" writes inputs with the C++ backend when it is built; the layer transform is the oracle's."""
    tables = _tables("cpu")
    out = torch.zeros(len(TOKENS), 41)
    poc_kernels.write_token_inputs_(out, **tables)
    auto = "cpp" if "cpp" in poc_kernels.available_backends("cpu") else "reference"
    expect = torch.zeros_like(out)
    poc_kernels.write_token_inputs_(expect, **tables, backend=auto)
    assert torch.equal(out, expect)
    x = _hidden(len(TOKENS), 41, 4, torch.bfloat16, "cpu")
    args = (tables["tok_req"], torch.tensor(CODES, dtype=torch.int32), _vectors(41, torch.bfloat16, "cpu"), 0)
    x_auto, x_ref = x.clone(), x.clone()
    poc_kernels.apply_token_layer_transform_(x_auto, None, *args)
    poc_kernels.apply_token_layer_transform_(x_ref, None, *args, backend="reference")
    assert torch.equal(x_auto, x_ref)
    if "cpp" in poc_kernels.available_backends("cpu"):
        with pytest.raises(ValueError, match="backend='cpp' does not implement token_layer_transform"):
            poc_kernels.apply_token_layer_transform_(x, None, *args, backend="cpp")


# ----------------------------------------------------------------------------- bad arguments


def _input_call(**change):
    hidden = 41
    args = {"out": torch.zeros(len(TOKENS), hidden), **_tables("cpu")}
    args.update(change)
    return args


INPUT_ERRORS = [
    ({"out": torch.zeros(13, 41, dtype=torch.int32)}, TypeError, "out must be float16, bfloat16 or float32"),
    ({"out": torch.zeros(13, 41, dtype=torch.float64)}, TypeError, "out must be float16"),
    ({"out": [[0.0]]}, TypeError, "out must be a torch.Tensor"),
    ({"out": torch.zeros(13 * 41)}, ValueError, "out must be 2-D"),
    ({"out": torch.zeros(41, 13).t()}, ValueError, "out must have contiguous rows"),
    ({"out": torch.zeros(1, 41).expand(13, 41)}, ValueError, "out must have disjoint rows"),
    ({"tok_req": torch.zeros(16, dtype=torch.int64)}, TypeError, "tok_req must have dtype torch.int32"),
    ({"tok_req": torch.zeros(12, dtype=torch.int32)}, ValueError, "tok_req must hold at least T = 13"),
    ({"tok_pos": torch.zeros(13, 1, dtype=torch.int32)}, ValueError, "tok_pos must be 1-D"),
    ({"tok_pos": torch.zeros(32, dtype=torch.int32)[::2]}, ValueError, "tok_pos must be contiguous"),
    ({"tok_req": torch.zeros(16, dtype=torch.int32, device="meta")}, ValueError, "tok_req is on meta"),
    ({"req_seeds": torch.zeros(5, 1, dtype=torch.int64)}, ValueError, r"req_seeds must be \[R, 8\]"),
    ({"req_seeds": torch.zeros(5, 8, dtype=torch.int32)}, TypeError, "req_seeds must have dtype torch.int64"),
    ({"req_seq_len": torch.ones(4, dtype=torch.int32)}, ValueError, r"req_seq_len must be \[R\] with R = 5"),
    ({"req_segments": torch.ones(5)}, TypeError, "req_segments must have dtype torch.int32"),
    ({"req_projection": torch.zeros(5, dtype=torch.int32)}, ValueError, "must be given together"),
    ({"projections": torch.zeros(1, 41, 41)}, ValueError, "must be given together"),
    (
        {"req_projection": torch.zeros(5, dtype=torch.int64), "projections": torch.zeros(1, 41, 41)},
        TypeError,
        "req_projection must have dtype torch.int32",
    ),
    (
        {"req_projection": torch.zeros(4, dtype=torch.int32), "projections": torch.zeros(1, 41, 41)},
        ValueError,
        r"req_projection must be \[R\] with R = 5",
    ),
    (
        {"req_projection": torch.zeros(5, dtype=torch.int32), "projections": torch.zeros(1, 41, 40)},
        ValueError,
        r"projections must be \[S, 41, 41\]",
    ),
    (
        {"req_projection": torch.zeros(5, dtype=torch.int32), "projections": torch.zeros(1, 41, 41).double()},
        TypeError,
        "projections must be float32",
    ),
    (
        {"req_projection": torch.zeros(5, dtype=torch.int32), "projections": torch.zeros(1, 41, 41).transpose(1, 2)},
        ValueError,
        "projections must be contiguous",
    ),
    (
        {"req_projection": torch.zeros(5, dtype=torch.int32), "projections": [[[0.0]]]},
        TypeError,
        "projections must be a torch.Tensor",
    ),
]


@pytest.mark.parametrize("change, error, match", INPUT_ERRORS)
def test_token_inputs_bad_arguments(change, error, match):
    with pytest.raises(error, match=match):
        poc_kernels.write_token_inputs_(**_input_call(**change))


@pytest.mark.parametrize("backend", [b for b in ("cpp", "reference") if b in poc_kernels.available_backends("cpu")])
def test_token_inputs_bad_index_values_on_the_host(backend):
    """The CPU backends read the tables on the host and name a bad entry."""
    bad = [
        ("tok_req", 0, 5, "tok_req\\[0\\] = 5 is not a row"),
        ("tok_pos", 4, 5, "tok_pos\\[4\\] = 5 is outside \\[0, req_seq_len\\[0\\] = 5\\)"),
        ("tok_pos", 0, -1, "tok_pos\\[0\\] = -1"),
        ("req_segments", 1, 3, "req_segments\\[1\\] must be 1 or 8"),
        ("req_seq_len", 0, 0, "req_seq_len\\[0\\] must lie in"),
        ("req_projection", 0, 1, "req_projection\\[0\\] = 1 must be -1 or a slot of projections \\(S = 1\\)"),
        ("req_projection", 1, -2, "req_projection\\[1\\] = -2"),
    ]
    for name, index, value, match in bad:
        args = _input_call()
        if name == "req_projection":  # one slot
            args.update(req_projection=torch.full((5,), -1, dtype=torch.int32), projections=torch.zeros(1, 41, 41))
        args[name][index] = value
        with pytest.raises(ValueError, match=match):
            poc_kernels.write_token_inputs_(**args, backend=backend)
    args = _input_call()
    args["req_seeds"][0, 0] = 2**32
    with pytest.raises(ValueError, match="req_seeds\\[0, 0\\] must lie in"):
        poc_kernels.write_token_inputs_(**args, backend=backend)
    with pytest.raises(ValueError, match="backend must be one of"):
        poc_kernels.write_token_inputs_(**_input_call(), backend="nope")


def _layer_call(**change):
    hidden, dtype = 41, torch.bfloat16
    args = {
        "x": torch.zeros(len(TOKENS), hidden, dtype=dtype),
        "y": torch.zeros(len(TOKENS), hidden, dtype=dtype),
        "tok_req": _tables("cpu")["tok_req"],
        "req_layer": torch.tensor(CODES, dtype=torch.int32),
        "vectors": _vectors(hidden, dtype, "cpu"),
        "layer": 1,
    }
    args.update(change)
    return args


_X = torch.zeros(13, 41, dtype=torch.bfloat16)
LAYER_ERRORS = [
    ({"x": torch.zeros(13, 41, dtype=torch.int64)}, TypeError, "x must be float16"),
    ({"x": torch.zeros(13, 41, 1, dtype=torch.bfloat16)}, ValueError, "x must be 2-D"),
    ({"y": torch.zeros(13, 40, dtype=torch.bfloat16)}, ValueError, "y must be None or like x"),
    ({"y": torch.zeros(13, 41, dtype=torch.float16)}, ValueError, "y must be None or like x"),
    ({"x": _X, "y": _X}, ValueError, "y must be another tensor than x"),
    ({"y": torch.zeros(41, 13, dtype=torch.bfloat16).t()}, ValueError, "y must have contiguous rows"),
    ({"tok_req": torch.zeros(13, dtype=torch.int16)}, TypeError, "tok_req must have dtype torch.int32"),
    ({"tok_req": torch.zeros(3, dtype=torch.int32)}, ValueError, "tok_req must hold at least T = 13"),
    ({"req_layer": torch.zeros(5, dtype=torch.int64)}, TypeError, "req_layer must have dtype torch.int32"),
    ({"vectors": torch.zeros(2, 3, 41)}, TypeError, "vectors must have x's dtype"),
    ({"vectors": torch.zeros(2, 3, 40, dtype=torch.bfloat16)}, ValueError, r"vectors must be \[slots, layers, 41\]"),
    ({"vectors": torch.zeros(2, 41, dtype=torch.bfloat16)}, ValueError, "vectors must be"),
    ({"vectors": torch.zeros(2, 41, 3, dtype=torch.bfloat16).transpose(1, 2)}, ValueError, "vectors must be contig"),
    ({"vectors": None}, TypeError, "vectors must be a torch.Tensor"),
    ({"layer": 3}, ValueError, r"layer must lie in \[0, 3\)"),
    ({"layer": -1}, ValueError, "layer must be an int >= 0"),
    ({"layer": 1.0}, TypeError, "layer must be an int"),
]


@pytest.mark.parametrize("change, error, match", LAYER_ERRORS)
def test_token_layer_transform_bad_arguments(change, error, match):
    with pytest.raises(error, match=match):
        poc_kernels.apply_token_layer_transform_(**_layer_call(**change))


def test_token_layer_transform_bad_index_values_on_the_host():
    args = _layer_call()
    args["req_layer"][0] = 4  # slot 2 of 2
    with pytest.raises(ValueError, match="req_layer\\[0\\] = 4 names slot 2"):
        poc_kernels.apply_token_layer_transform_(**args, backend="reference")
    args = _layer_call()
    args["tok_req"][2] = 5
    with pytest.raises(ValueError, match="tok_req\\[2\\] = 5 is not a row"):
        poc_kernels.apply_token_layer_transform_(**args, backend="reference")


# ----------------------------------------------------------------------------- the Triton kernels


def _triton_device():
    params = [p.values[1] for p in backend_devices() if p.values[0] == "triton"]
    if not params:
        pytest.skip("Triton is not installed")
    return params[0]


def test_triton_leaves_rows_with_out_of_range_indices_untouched():
    """The kernels cannot check the tables without waiting for the device: a bad entry transforms or writes nothing."""
    device = _triton_device()
    hidden = 41
    tables = _tables(device)
    # a request row past the tables, positions past or before the sequence, a segment count of 0
    tokens = [(5, 0), (0, 5), (0, -1), (2, 0), (0, 1)]
    tables["tok_req"] = torch.tensor([r for r, _ in tokens], dtype=torch.int32, device=device)
    tables["tok_pos"] = torch.tensor([p for _, p in tokens], dtype=torch.int32, device=device)
    tables["req_segments"][2] = 0
    out = torch.full((len(tokens), hidden), SENTINEL, device=device)
    poc_kernels.write_token_inputs_(out, **tables, backend="triton")
    assert (out[:4] == SENTINEL).all()
    assert torch.equal(out[4], _input_rows("triton", device, hidden, torch.float32)[0][1])
    x0 = _hidden(3, hidden, 5, torch.float16, device)
    x = x0.clone()
    tok_req = torch.tensor([0, 1, 9], dtype=torch.int32, device=device)
    req_layer = torch.tensor([4, 2 * SLOTS + 1], dtype=torch.int32, device=device)  # slots past the vectors
    poc_kernels.apply_token_layer_transform_(
        x, None, tok_req, req_layer, _vectors(hidden, torch.float16, device), 0, backend="triton"
    )
    assert torch.equal(_bits(x), _bits(x0))
    # SPEC §10: a projection slot past the projections projects nothing (the rows keep their plain inputs)
    tables = _tables(device)
    plain = torch.full((len(TOKENS), hidden), SENTINEL, device=device)
    poc_kernels.write_token_inputs_(plain, **tables, backend="triton")
    out = torch.full_like(plain, SENTINEL)
    req_projection = torch.tensor([1, -1, 7, -5, 1], dtype=torch.int32, device=device)
    projections = _projections(hidden, device)[:1].contiguous()
    poc_kernels.write_token_inputs_(
        out, **tables, req_projection=req_projection, projections=projections, backend="triton"
    )
    assert torch.equal(_bits(out), _bits(plain))


def test_triton_custom_ops_opcheck():
    device = _triton_device()
    from poc_kernels.backends.triton import custom_ops  # noqa: F401  (registers the ops)

    t = _tables(device)
    hidden = 41
    x = _hidden(len(TOKENS), hidden, 6, torch.bfloat16, device)
    layer_args = (t["tok_req"], torch.tensor(CODES, dtype=torch.int32, device=device))
    vecs = _vectors(hidden, torch.bfloat16, device)
    proj = _projections(hidden, device)
    samples = [
        (
            torch.ops.poc_kernels.triton_write_token_inputs_,
            (torch.zeros(len(TOKENS), hidden, device=device), *t.values()),
        ),
        (torch.ops.poc_kernels.triton_token_layer_transform_, (x.clone(), x.clone() * 2, *layer_args, vecs, 1)),
        (torch.ops.poc_kernels.triton_token_layer_transform_, (x.clone(), None, *layer_args, vecs, 0)),
        (
            torch.ops.poc_kernels.triton_token_project_,
            (
                torch.zeros(len(TOKENS), hidden, device=device),
                *t.values(),
                torch.tensor(PROJ_SLOTS, dtype=torch.int32, device=device),
                proj,
            ),
        ),
        (torch.ops.poc_kernels.triton_project, (_hidden(3, hidden, 7, torch.float32, device, 1.0), proj[0])),
    ]
    for op, args in samples:
        torch.library.opcheck(op, args)


# ----------------------------------------------------------------------------- CUDA graphs


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_token_ops_under_cuda_graph_capture(dtype):
    """Captured once, replayed with refilled tables (as the engine does each step): the eager results, bit for bit."""
    device, hidden, t_count, layer = "cuda", 2880, 16, 2
    static = _tables(device, TOKENS + [(-1, 0)] * (t_count - len(TOKENS)))
    out = torch.zeros(t_count, hidden, dtype=dtype, device=device)
    x = torch.zeros(t_count, hidden, dtype=dtype, device=device)
    y = torch.zeros_like(x)
    req_layer = torch.tensor(CODES, dtype=torch.int32, device=device)
    vecs = _vectors(hidden, dtype, device)
    # SPEC §10 in the same graph: the requests' projection slots change between replays too
    req_projection = torch.tensor(PROJ_SLOTS, dtype=torch.int32, device=device)
    projections = _projections(hidden, device)

    def step(out, x, y, tables, req_layer, req_projection):
        poc_kernels.write_token_inputs_(out, **tables, req_projection=req_projection, projections=projections)
        poc_kernels.apply_token_layer_transform_(x, y, tables["tok_req"], req_layer, vecs, layer)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (compile) outside the capture
        step(out.clone(), x.clone(), y.clone(), static, req_layer, req_projection)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(out, x, y, static, req_layer, req_projection)

    # two steps with other tokens: other requests, positions, chat rows, layer codes and projection slots
    first = [(3, p) for p in range(7)] + [(-1, 0), (4, 0), (0, 4), (1, 2), (-1, 0), (2, 0), (2, 1), (2, 2), (2, 3)]
    steps = [
        (first, CODES, PROJ_SLOTS),
        ([(1, 0), (0, 0), (-1, 0)] * 5 + [(3, 5)], [3, 0, 2, -1, 1], [-1, 1, 0, 0, -1]),
    ]
    plain = _input_rows("triton", device, hidden, dtype)
    f32 = _input_rows("triton", device, hidden, torch.float32)
    for i, (tokens, codes, slots) in enumerate(steps):
        tables = _tables(device, tokens)
        for name, value in tables.items():
            static[name].copy_(value)
        req_layer.copy_(torch.tensor(codes, dtype=torch.int32))
        req_projection.copy_(torch.tensor(slots, dtype=torch.int32))
        x0, y0 = _hidden(t_count, hidden, 10 + i, dtype, device), _hidden(t_count, hidden, 20 + i, dtype, device)
        out.fill_(SENTINEL)
        x.copy_(x0)
        y.copy_(y0)
        graph.replay()
        expect_out = torch.full_like(out, SENTINEL)
        expect_x, expect_y = x0.clone(), y0.clone()
        step(expect_out, expect_x, expect_y, tables, req_layer, req_projection.clone())
        torch.cuda.synchronize()
        assert torch.equal(_bits(out), _bits(expect_out)), i
        assert torch.equal(_bits(x), _bits(expect_x)), i
        assert torch.equal(_bits(y), _bits(expect_y)), i
        for t, (r, pos) in enumerate(tokens):
            if r < 0:
                row = torch.full_like(out[t], SENTINEL)
            elif slots[r] < 0:
                row = plain[r][pos]
            else:
                row = vectors.project(f32[r][pos : pos + 1], projections[slots[r]])[0].to(dtype)
            assert torch.equal(out[t], row), (i, t)
