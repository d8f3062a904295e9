"""The ``"reference"`` backend: the oracle (:mod:`poc_kernels.reference`) served through the API, on any device.

The token operations read their index tensors on the host (a device waits for
them): they are the oracle of the Triton kernels, which read them on the GPU.
"""

from __future__ import annotations

import torch

from .. import reference, rng, vectors
from .._checks import TokenInputArgs, TokenLayerArgs
from ._registry import Backend, register_backend


def layer_transform_(x: torch.Tensor, v: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Write the oracle's layer transform of ``x`` into ``x``; return ``x``."""
    return x.copy_(reference.apply_layer_transform(x, v, normalize=normalize))


def write_token_inputs_(args: TokenInputArgs) -> torch.Tensor:
    """Write each run of PoC rows as the stream slices of its request (``rng.normal_slice``), cast once
    (projected first, SPEC §10, when its request names a projection slot)."""
    out = args.out
    hidden = out.shape[1]
    for run in args.host_runs():
        values = [rng.normal_slice(seed, n, start, stop, device=out.device) for seed, n, start, stop in run.pieces]
        rows = torch.cat(values).view(run.rows, hidden)
        if run.slot >= 0:
            rows = vectors.project(rows, args.projections[run.slot])
        out[run.row : run.row + run.rows] = rows
    return out


def token_layer_transform_(args: TokenLayerArgs) -> None:
    """Gather the rows of each layer code, apply the oracle's layer transform to them, scatter them back."""
    # vectorized over tokens: this runs once per decoder layer in every engine step with PoC rows
    req = args.tok_req[: args.x.shape[0]].to(torch.int64)
    codes = args.req_layer.to(torch.int64)
    poc = req >= 0
    beyond = poc & (req >= codes.numel())
    if bool(beyond.any()):
        t = int(beyond.nonzero()[0])
        raise ValueError(f"tok_req[{t}] = {int(req[t])} is not a row of req_layer (R = {codes.numel()})")
    token_code = torch.full_like(req, -1)
    token_code[poc] = codes[req[poc]]
    slots = args.vectors.shape[0]
    for code in torch.unique(token_code[token_code >= 0]).tolist():
        if code >> 1 >= slots:
            r = int(req[(token_code == code).nonzero()[0]])
            raise ValueError(f"req_layer[{r}] = {code} names slot {code >> 1}, but vectors has {slots} slots")
    for code in torch.unique(token_code[token_code >= 0]).tolist():
        idx = (token_code == code).nonzero().flatten()
        v = args.vectors[code >> 1, args.layer]
        for t in (args.x, args.y):
            if t is not None:
                rows_out = reference.apply_layer_transform(t.index_select(0, idx), v, normalize=bool(code & 1))
                t.index_copy_(0, idx, rows_out)


register_backend(
    Backend(
        "reference",
        supports=lambda device: True,
        compute_distances=reference.distances,
        generate_inputs=reference.inputs,
        compute_artifacts=reference.artifacts,
        layer_transform_=layer_transform_,
        write_token_inputs_=write_token_inputs_,
        token_layer_transform_=token_layer_transform_,
        project=vectors.project,
    )
)
