"""Real vLLM engines on a tiny random-initialized Qwen3, built from a config (no weights downloaded)."""

import gc
import os
import shutil

import torch

from poc_kernels._env import vllm_wanted  # noqa: F401  (the tests' switch)

VLLM_SKIP_REASON = "vLLM is not installed, or POC_KERNELS_NO_VLLM is set"

#: The time limit of a test that starts vLLM engines or servers, its fixtures' set-up included: one start takes
#: 15-60 s on two loaded cores, and a test starts up to three.
ENGINE_TEST_TIMEOUT_S = 600


def engine_marks() -> list:
    """The marks of a module whose tests start vLLM engines or servers: a longer time limit than the suite's default
    (``timeout`` in pyproject.toml)."""
    import pytest

    return [pytest.mark.timeout(ENGINE_TEST_TIMEOUT_S)]


TINY_QWEN3 = dict(
    vocab_size=49152,  # SmolLM2's tokenizer, so chat works
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,  # vLLM's CPU attention needs head_dim >= 32
    max_position_embeddings=512,
    tie_word_embeddings=True,
)


def build_tiny_qwen3(path):
    """Save a seeded random Qwen3 with SmolLM2's tokenizer at ``path``; return the transformers model."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from poc_kernels.weights import smollm2_tokenizer_dir

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(dtype="float32", **TINY_QWEN3)).eval()
    model.save_pretrained(path)
    for f in smollm2_tokenizer_dir().iterdir():
        shutil.copy(f, os.path.join(path, f.name))
    return model


def make_llm(path, **kwargs):
    from vllm import LLM

    return LLM(**engine_args(path, **kwargs))


def engine_args(path, **kwargs):
    """The arguments of a test engine on ``path`` (``kwargs`` override them)."""
    from poc_kernels.vllm import WORKER_EXTENSION

    args = dict(
        model=str(path),
        worker_extension_cls=WORKER_EXTENSION,
        dtype="float32",
        enforce_eager=True,
        max_model_len=256,
        max_num_seqs=8,
        # a small KV cache, so that several test engines fit in memory at once
        kv_cache_memory_bytes=64 << 20,
        seed=0,
    )
    args.update(kwargs)
    return args


def shutdown(llm):
    """Shut the engine down; its engine core must stop by itself (exit code 0), not be killed at the timeout."""
    from poc_kernels.vllm.lifecycle import shutdown_engine

    procs = list(llm.llm_engine.engine_core.resources.engine_manager.processes)
    shutdown_engine(llm)
    for proc in procs:
        proc.join(10)
    assert [p.exitcode for p in procs] == [0] * len(procs), f"engine core exit codes {[p.exitcode for p in procs]}"
    del llm
    gc.collect()
