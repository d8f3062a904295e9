"""Constants of the PoC v2 numeric contract (SPEC.md)."""

#: Output dimension D of the random lm_head projection.
POC_OUTPUT_DIM: int = 8192
#: Number R of per-nonce Householder reflections.
NUM_REFLECTIONS: int = 8
#: Scale of the random lm_head, ``W = LM_HEAD_SCALE * N`` (cancels after normalization).
LM_HEAD_SCALE: float = 0.02
#: Epsilon of the layer-hook normalization ``y = x / (||x|| + eps)`` (SPEC §7).
LAYER_HOOK_EPS: float = 1e-8
#: Nonces are unsigned 32-bit integers.
MAX_NONCE: int = 2**32 - 1
