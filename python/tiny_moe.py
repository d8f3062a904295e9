#!/usr/bin/env python3
"""Write a seeded random tiny Qwen3-MoE checkpoint (8 experts, top 2) with SmolLM2's tokenizer: a MoE family for
``poc-kernels selfcheck`` at CPU speed (no weights downloaded).

    python python/tiny_moe.py OUT_DIR
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

TINY_QWEN3_MOE = dict(
    vocab_size=49152,  # SmolLM2's tokenizer
    hidden_size=64,
    intermediate_size=128,
    moe_intermediate_size=64,
    num_experts=8,
    num_experts_per_tok=2,
    norm_topk_prob=True,
    decoder_sparse_step=1,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,  # vLLM's CPU attention needs head_dim >= 32
    max_position_embeddings=512,
    tie_word_embeddings=True,
)


def main(argv=None) -> int:
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from poc_kernels.weights import smollm2_tokenizer_dir

    out = Path((argv or sys.argv[1:])[0])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    Qwen3MoeForCausalLM(Qwen3MoeConfig(dtype="float32", **TINY_QWEN3_MOE)).eval().save_pretrained(out)
    for f in smollm2_tokenizer_dir().iterdir():
        shutil.copy(f, out / f.name)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
