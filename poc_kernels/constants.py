"""Constants of the PoC v2 numeric contract (SPEC.md), each defined once.

Kernels that need one as a compile-time constant (Triton's ``tl.constexpr``)
wrap the value from here; they never restate it.
"""

#: Output dimension D of the random lm_head projection (SPEC terms).
POC_OUTPUT_DIM: int = 8192
#: Number R of per-nonce Householder reflections (SPEC §5).
NUM_REFLECTIONS: int = 8
#: Scale of the random lm_head, ``W = LM_HEAD_SCALE * N`` (SPEC §4; cancels after normalization).
LM_HEAD_SCALE: float = 0.02
#: Scale of the random projections, ``P = RANDOM_PROJECTION_SCALE * N`` (SPEC §10).
RANDOM_PROJECTION_SCALE: float = 0.01
#: Epsilon of the layer-hook normalization ``y = x / (||x|| + eps)`` (SPEC §7).
LAYER_HOOK_EPS: float = 1e-8
#: Nonces are unsigned 32-bit integers.
MAX_NONCE: int = 2**32 - 1
#: 2π rounded to float32 (SPEC §3: rounded first, then a float32 multiply); exactly 6.2831854820251465.
TWO_PI_F32: float = 6.2831854820251465
#: Lower clamp of the Box–Muller radius uniform (SPEC §3), as the float32 the contract uses (``float32(1e-10)``).
UNIFORM_MIN: float = 1.000000013351432e-10
#: 2**-32, the scale from a 32-bit hash to a uniform (SPEC §3); exact in float32.
INV_2_32: float = 2.0**-32

# Validation (SPEC §9)

#: Honest per-nonce mismatch probability of distance checks (the original API's ``PROBABILITY_MISMATCH``).
DISTANCE_P_HONEST: float = 5e-4
#: Honest per-nonce mismatch probability of vector checks, as calibrated in the validation study.
VECTOR_P_HONEST: float = 0.02
#: The study's vector mismatch threshold: the 98th percentile of honest cross-hardware L2 distances.
VECTOR_DIST_THRESHOLD: float = 0.173663
#: Length of a vector artifact in the original API (the first k dimensions of the normalized logits).
VECTOR_DIM: int = 12

# The artifact scheme (SPEC-ARTIFACTS.md)

#: Artifact length k (``k_dim``); requests carry it, other values are legal.
ARTIFACT_K: int = 12
#: Epsilon of the normalizations ``h / (||h|| + eps)`` and ``y = x / (||x|| + eps)`` (SPEC-ARTIFACTS §4).
ARTIFACT_EPS: float = 1e-8
#: Epsilon of the Haar vectors' normalization ``u / (||u|| + eps)`` (SPEC-ARTIFACTS §4).
HAAR_EPS: float = 1e-30
#: Number of seeds, hence segments, of the stronger inputs (SPEC-ARTIFACTS §2).
STRONGER_SEGMENTS: int = 8
#: The deployed node's validation defaults (SPEC-ARTIFACTS §6), and the network client's fallbacks.
ARTIFACT_DIST_THRESHOLD: float = 0.02
ARTIFACT_P_MISMATCH: float = 0.001
ARTIFACT_FRAUD_THRESHOLD: float = 0.01
NETWORK_DIST_THRESHOLD: float = 0.4
NETWORK_P_MISMATCH: float = 0.1
NETWORK_FRAUD_THRESHOLD: float = 0.05
