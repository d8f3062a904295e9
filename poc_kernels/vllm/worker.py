"""The worker side of PoC v2 in vLLM: ``PoCWorkerExtension``, mixed into every vLLM worker.

Pass ``worker_extension_cls="poc_kernels.vllm.PoCWorkerExtension"`` to
``vllm.LLM`` (or ``--worker-extension-cls`` to ``vllm serve``); the driver side
(:mod:`poc_kernels.vllm.runner`) calls its methods with ``collective_rpc``,
by the names and with the wire forms of :mod:`poc_kernels.vllm.protocol`.

How a PoC batch runs. The driver submits one request per nonce through the
engine's own scheduler, with the nonce's random input embeddings as
``prompt_embeds`` and ``max_tokens=1``, under the protocol's request ids
(batch tag and index). On every worker a wrapper around the model runner's
logits step records, for the requests of an active tag, the hidden state the
runner hands to ``compute_logits``: the final-norm hidden state of each
request's last scheduled token. Chunked prefill also passes the last row of
every unfinished chunk; the last row recorded for a request is its final
position. After the requests finish, ``poc_finish`` stacks the rows in nonce
order and computes the distances on the worker's device with
``poc_kernels.compute_distances`` (the fused backend of that device). Layer
hooks transform through ``poc_kernels.apply_layer_transform``, which picks the
kernel for the device.

- vLLM's v1 model runner (CPU, and CUDA unless the newer runner is chosen)
  computes logits inside ``execute_model``; the rows are in
  ``runner.input_batch.req_ids`` order. The newer CUDA runner
  (``vllm.v1.worker.gpu``) computes them in ``sample(hidden_states,
  input_batch, ...)``, which carries the request order itself. Both are hooked.
- Tensor/pipeline parallelism: the embeddings come from the driver, so every
  rank sees the same inputs; only the last pipeline stage computes logits, and
  of its tensor-parallel ranks only rank 0 answers ``poc_finish`` (the others
  return None).
- Other requests running at the same time are not touched: the wrapper only
  copies rows of requests whose id carries an active tag, and returns the
  runner's own result unchanged.

Results cross process boundaries as bytes plus shape (no tensor pickling, so
no insecure-serialization switch is needed).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

import torch

from .protocol import FinishRequest, WorkerInfo, check_tag, encode_result, parse_request_id

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

    def poc_install(self) -> dict:
        """Hook the model runner's logits step (once); return facts the driver needs about this worker."""
        runner = self.model_runner
        if getattr(self, "_poc_capture", None) is None:
            self._poc_capture = _Capture()
            self._poc_layer_handles = []
            _hook_runner(runner, self._poc_capture)
        model = runner.model
        config = runner.model_config
        last_pp, tp_rank = _pp_tp_ranks()
        return WorkerInfo(
            runner=f"{type(runner).__module__}.{type(runner).__name__}",
            device=str(runner.device),
            dtype=str(config.dtype).replace("torch.", ""),
            hidden_size=int(config.get_hidden_size()),
            num_layers=len(_decoder_layers(model)[2]),
            last_pp_rank=last_pp,
            tp_rank=tp_rank,
            enforce_eager=bool(config.enforce_eager),
        ).to_wire()

    # ------------------------------------------------------------------ batches

    def poc_begin(self, tag: str) -> None:
        """Start recording the rows of the requests of batch ``tag``."""
        check_tag(tag)
        capture = self._poc_require_install()
        with capture.lock:
            capture.tags[tag] = {}

    def poc_abort(self, tag: str) -> None:
        """Stop recording ``tag`` and drop its rows."""
        capture = self._poc_require_install()
        with capture.lock:
            capture.tags.pop(tag, None)

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
        if req.scheme == "artifact":
            values = compute_artifacts(hidden, req.block_hash, req.public_key, req.nonces, k=req.k, backend=used)
        else:
            values = compute_distances(
                hidden, req.block_hash, req.public_key, req.nonces, sign_flips=req.sign_flips, backend=used
            )
        return encode_result(values, hidden, used, req.return_hidden, req.scheme)

    # ------------------------------------------------------------------ layer hooks (SPEC §7, SPEC-ARTIFACTS §3)

    def poc_set_layer_hooks(self, block_hash: str, normalize: bool = True) -> int:
        """Install the layer hooks of ``block_hash`` on this worker's decoder layers; return how many.

        ``normalize``: SPEC §7's transform (the distance scheme's layer-hook
        mode); without it, SPEC-ARTIFACTS §3's (the artifact scheme's, always on
        during its forward).
        """
        from ..vectors import layer_vector

        self.poc_clear_layer_hooks()
        runner = self.model_runner
        if not runner.model_config.enforce_eager:
            raise RuntimeError(
                "layer hooks need an engine built with enforce_eager=True: a compiled or CUDA-graph "
                "forward would not run Python forward hooks added after compilation"
            )
        start, _, layers = _decoder_layers(runner.model)
        hidden = runner.model_config.get_hidden_size()
        handles = []
        for offset, layer in enumerate(layers):
            index = start + offset
            v = layer_vector(block_hash, index, hidden, device=runner.device)
            handles.append(layer.register_forward_hook(_layer_hook(v, normalize)))
        self._poc_layer_handles = handles
        return len(handles)

    def poc_clear_layer_hooks(self) -> int:
        """Remove the layer hooks; return how many were installed."""
        handles = getattr(self, "_poc_layer_handles", None) or []
        for h in handles:
            h.remove()
        self._poc_layer_handles = []
        return len(handles)

    def _poc_require_install(self) -> _Capture:
        capture = getattr(self, "_poc_capture", None)
        if capture is None:
            raise RuntimeError("PoCWorkerExtension is not installed on this worker: call poc_install first")
        return capture


# ---------------------------------------------------------------------- runner hooks


def _hook_runner(runner: Any, capture: _Capture) -> None:
    """Wrap the runner's logits step so that rows of tagged requests are recorded."""
    module = type(runner).__module__
    if hasattr(runner, "sample") and module.startswith("vllm.v1.worker.gpu."):
        _hook_v2(runner, capture)
    elif hasattr(runner, "input_batch") and hasattr(runner, "execute_model"):
        _hook_v1(runner, capture)
    else:
        raise RuntimeError(f"unsupported vLLM model runner {module}.{type(runner).__name__}")


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


# ---------------------------------------------------------------------- layer hooks


def _decoder_layers(model: Any) -> tuple[int, int, list]:
    """Return (first layer index, end index, the decoder layers of this pipeline stage)."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise RuntimeError(f"cannot find the decoder layers of {type(model).__name__} (no .model.layers)")
    start = int(getattr(inner, "start_layer", 0))
    end = int(getattr(inner, "end_layer", len(layers)))
    return start, end, list(layers)[start:end]


def _layer_hook(v: torch.Tensor, normalize: bool):
    """Forward hook replacing a decoder layer's hidden-state and residual outputs by their layer transform."""
    from ..api import apply_layer_transform

    by_dtype: dict = {}  # v cast to the activation dtype once, as the deployed code casts it

    def transform(x: torch.Tensor) -> torch.Tensor:
        vd = by_dtype.get(x.dtype)
        if vd is None:
            vd = by_dtype[x.dtype] = v.to(x.dtype)
        return apply_layer_transform(x, vd, normalize=normalize)

    def hook(module, inputs, output):
        if isinstance(output, tuple):
            return tuple(transform(o) if isinstance(o, torch.Tensor) else o for o in output)
        return transform(output)

    return hook
