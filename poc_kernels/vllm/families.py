"""Where a vLLM model keeps its input embedding and its decoder layers, found by what the model is.

The in-graph ops of :mod:`.inline` go after the module that embeds token ids
and after every decoder layer of the worker's pipeline stage. Those are found
the way vLLM itself builds its models, not by one attribute name:

1. the language model: ``get_language_model()`` where the model has it
   (multimodal wrappers), else the model;
2. the decoder stack: the first module inside it that carries the layer list
   of vLLM's ``make_layers`` (``layers`` with integer ``start_layer`` and
   ``end_layer``, the pipeline stage's bounds); its layers
   ``[start_layer, end_layer)`` are this stage's;
3. the embedding: the stack's one child that is a ``VocabParallelEmbedding``
   and not an ``lm_head`` (what its ``embed_input_ids`` calls), whatever its
   name (``embed_tokens`` in most families, ``embedding`` in GPT-OSS); on a
   later pipeline stage vLLM puts a ``PPMissingLayer`` there.

Architectures whose model does not follow that pattern are found through
:data:`FALLBACK`, a short table of (decoder stack path, embedding attribute)
per architecture. :data:`FAMILIES` names the families the network serves, by
the architecture names of their checkpoints. When the embedding cannot take
the in-graph path, :func:`find_parts` says why, naming the family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

__all__ = ["FALLBACK", "FAMILIES", "ModelParts", "family_of", "find_parts"]

#: The families the network serves, by the architecture names of their checkpoints (``config.architectures``).
FAMILIES = {
    "LlamaForCausalLM": "Llama",
    "Qwen2ForCausalLM": "Qwen2",
    "Qwen3ForCausalLM": "Qwen3",
    "Qwen3MoeForCausalLM": "Qwen3-MoE",
    "Glm4MoeForCausalLM": "GLM-4-MoE",
    "GptOssForCausalLM": "GPT-OSS",
    "DeepseekV2ForCausalLM": "DeepSeek-V2 (MLA)",
    "DeepseekV3ForCausalLM": "DeepSeek-V3 / Kimi-K2 (MLA)",
    "MiniMaxM2ForCausalLM": "MiniMax-M2",
}

#: Per architecture: the path of the module holding the decoder layers, and the attribute of its embedding. Used
#: only where the model does not show them by itself (see the module docstring); every row is checked against
#: vLLM's model class in the tests.
FALLBACK = {
    "LlamaForCausalLM": ("model", "embed_tokens"),
    "Qwen2ForCausalLM": ("model", "embed_tokens"),
    "Qwen3ForCausalLM": ("model", "embed_tokens"),
    "Qwen3MoeForCausalLM": ("model", "embed_tokens"),
    "Glm4MoeForCausalLM": ("model", "embed_tokens"),
    "GptOssForCausalLM": ("model", "embedding"),
    "DeepseekV2ForCausalLM": ("model", "embed_tokens"),
    "DeepseekV3ForCausalLM": ("model", "embed_tokens"),
    "MiniMaxM2ForCausalLM": ("model", "embed_tokens"),
}


@dataclass
class ModelParts:
    """A worker's model, as the in-graph ops see it."""

    architecture: str  # the model class's name (vLLM registers it under the checkpoint's architecture)
    stack: torch.nn.Module  # the module holding the decoder layers
    start: int  # this pipeline stage's first layer index
    end: int  # and its end
    layers: list = field(repr=False)  # the decoder layers [start, end)
    embedding: Optional[torch.nn.Module] = field(default=None, repr=False)  # None on a later pipeline stage
    found_by: str = ""  # "model" (by what it is) or "table" (FALLBACK)
    missing: str = ""  # why no embedding was found, when none was

    @property
    def family(self) -> str:
        return family_of(self.architecture)


def family_of(architecture: str) -> str:
    """Return the family's name of an architecture (the architecture itself when it is not in :data:`FAMILIES`)."""
    return FAMILIES.get(architecture, architecture)


def _language_model(model: Any) -> Any:
    get = getattr(model, "get_language_model", None)
    if callable(get):
        try:
            lm = get()
        except (AttributeError, NotImplementedError, AssertionError):
            lm = None
        if isinstance(lm, torch.nn.Module):
            return lm
    return model


def _is_stack(module: Any) -> bool:
    layers = getattr(module, "layers", None)
    return (
        isinstance(layers, torch.nn.ModuleList)
        and isinstance(getattr(module, "start_layer", None), int)
        and isinstance(getattr(module, "end_layer", None), int)
    )


def _attr_path(module: Any, path: str) -> Any:
    for name in path.split(".") if path else ():
        module = getattr(module, name, None)
    return module


def _embedding_types() -> tuple[type, type, type]:
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
    from vllm.model_executor.models.utils import PPMissingLayer

    return VocabParallelEmbedding, ParallelLMHead, PPMissingLayer


def find_parts(model: Any) -> ModelParts:
    """Return the embedding and this pipeline stage's decoder layers of a vLLM model (see the module docstring).

    Raises ``RuntimeError`` naming the family when the decoder layers cannot be
    found; a missing embedding is reported in ``ModelParts.missing`` instead
    (the layers can still take the in-graph layer transform).
    """
    arch = type(model).__name__
    lm = _language_model(model)
    table = FALLBACK.get(arch) or FALLBACK.get(type(lm).__name__)
    stack, found_by = next((m for m in lm.modules() if _is_stack(m)), None), "model"
    if stack is None and table is not None:
        stack, found_by = _attr_path(lm, table[0]), "table"
    if stack is None or not isinstance(getattr(stack, "layers", None), torch.nn.ModuleList):
        raise RuntimeError(
            f"{family_of(arch)} ({arch}): cannot find the decoder layers (no module with vLLM's make_layers "
            "list of layers and start_layer/end_layer, and the architecture is not in poc_kernels.vllm.families."
            "FALLBACK)"
        )
    start = int(getattr(stack, "start_layer", 0))
    end = int(getattr(stack, "end_layer", len(stack.layers)))
    layers = list(stack.layers)[start:end]

    vocab, lm_head, missing_layer = _embedding_types()
    found = [
        m for _, m in stack.named_children() if isinstance(m, vocab) and not isinstance(m, lm_head)
    ]  # by what it is
    embedding, missing = None, ""
    if len(found) == 1:
        embedding = found[0]
    elif table is not None and isinstance(_attr_path(stack, table[1]), (vocab, missing_layer)):
        embedding, found_by = _attr_path(stack, table[1]), "table"
    elif found:
        missing = f"{len(found)} embedding layers in {type(stack).__name__}, and the architecture is not in FALLBACK"
    else:
        missing = (
            f"no VocabParallelEmbedding in {type(stack).__name__} (the module of its decoder layers), "
            "and the architecture is not in poc_kernels.vllm.families.FALLBACK"
        )
    if isinstance(embedding, missing_layer):
        embedding = None  # a later pipeline stage: the embedding lives on the first
    return ModelParts(arch, stack, start, end, layers, embedding, found_by, missing)
