"""The suite's tolerance table: one row per quantity and dtype, each citing the bound it comes from.

Nothing is compared with a tolerance that the contract wants exact: seeds,
hashes, uniforms and signs (SPEC §5 "Accuracy"), batch invariance and run-to-run
identity (docs/concepts.md, "Guarantees") are checked with ``torch.equal``. Bounds from
SPEC.md are never widened here to make a test pass; rows that are not SPEC
bounds say what they bound instead.
"""

from poc_kernels.constants import LM_HEAD_SCALE

# --------------------------------------------------------------------------- SPEC §5: distances

#: Any implementation's distance vs the float64 evaluation of the same formula on the same streams
#: (SPEC §5 "Accuracy": within 1e-6 absolute). Also used between two implementations whose one side is
#: the oracle, which is that evaluation rounded once to float32.
DIST_ATOL = 1e-6
#: The oracle vs an independent float64 transcription of SPEC §5 in the test: both are the float64
#: evaluation, so they differ by the oracle's final rounding to float32 (half an ulp at d <= 2, 1.2e-7).
ORACLE_DIST_ATOL = 1e-7

# --------------------------------------------------------------------------- SPEC §3, §4, §6: streams and vectors

#: float32 normals N(seed, n) of two implementations (SPEC §3/§5: log, cos, sin may differ by a few ulp
#: between math libraries; |N| < 7, so a few float32 ulp stay below 1e-6; the conformance vectors' README
#: puts it at about 5e-7).
NORMAL_ATOL = 1e-6
#: Input embeddings before the dtype cast (SPEC §6: they are the normals of SPEC §3).
EMBED_ATOL = NORMAL_ATOL
#: The random lm_head ``W = 0.02 * N`` (SPEC §4): the normals' bound, scaled.
LM_HEAD_ATOL = LM_HEAD_SCALE * NORMAL_ATOL
#: A unit vector normalized in float64 from a float32 stream (target, SPEC §4) vs torch's own float64
#: norm of the same stream: two float64 summation orders over at most 8192 terms.
UNIT_F64_ATOL = 1e-15
#: The same, rounded to float32 (layer vectors, SPEC §7): half a float32 ulp at magnitude <= 1 is 6e-8.
UNIT_F32_ATOL = 1e-7

# --------------------------------------------------------------- SPEC §7, SPEC-ARTIFACTS §3: the layer transform

#: The deployed eager op sequence (the oracle) vs the exact value, in ulps of the activation dtype at the row's
#: largest magnitude (SPEC §7: "That sequence differs from the correctly rounded result by up to 5 bf16 ulps").
LAYER_EAGER_ULPS = 5
#: The Triton kernel vs that sequence run by torch, in float32 (in fp16 and bf16 they are equal bit for bit): they may
#: differ only through the order of the float32 accumulations (SPEC §7, SPEC-ARTIFACTS §3), which moves the norm and
#: the dot product by about an ulp each; relative to the row's largest magnitude.
LAYER_FP32_ORDER_RTOL = 2.0**-20

# --------------------------------------------------------------------------- SPEC-ARTIFACTS §4: artifacts

#: Any implementation's float32 artifact vs the float64 evaluation of the same formula on the same float32 streams
#: (SPEC-ARTIFACTS §4 "Accuracy": within 1e-6); the float16 artifact equals the rounded float32 one, except where
#: that lies within this bound of a float16 rounding boundary (then at most 1 ulp apart).
ARTIFACT_ATOL = 1e-6

# --------------------------------------------------------------------------- not SPEC bounds

#: torch's float64 sum vs the fixed-order tree sum over 37 standard normals: float64 rounding of two orders.
TREE_SUM_F64_ATOL = 1e-12
#: Final-norm hidden states of two float32 model forwards (vLLM's fused kernels vs transformers' plain ones) on
#: the same inputs: the model is outside the contract; a few float32 ulp of values up to about 4.
MODEL_HIDDEN_ATOL = 1e-5
#: Distances computed from those two forwards' hidden states.
MODEL_DIST_ATOL = 1e-5
#: Distances of the same nonces run in vLLM batches of other sizes or orders: vLLM's CPU forward is not batch
#: invariant (its kernels reduce in a batch-dependent order); measured within 1e-6, asserted there.
ENGINE_BATCH_DIST_ATOL = 1e-6

# --------------------------------------------------------------------------- SPEC §10: random projection

#: ``x + x @ P`` (inputs and final hidden states) vs its float64 evaluation on the same float32 streams
#: (SPEC §10 "Accuracy": within 1e-6 absolute). The float32 result itself is that value rounded once, so this
#: holds for results below 16 in magnitude (half a float32 ulp there is 4.8e-7).
PROJECTION_ATOL = 1e-6
