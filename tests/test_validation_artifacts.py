"""Validation of the artifact scheme (SPEC-ARTIFACTS §6): the network's JSON shapes, the mismatch rule, the verdict."""

import base64
import json

import numpy as np
import pydantic
import pytest
import torch

import poc_kernels
from poc_kernels import validation as v
from poc_kernels.constants import ARTIFACT_DIST_THRESHOLD, ARTIFACT_FRAUD_THRESHOLD, ARTIFACT_P_MISMATCH


def _node_batch(n=40, k=12, seed=0):
    x = torch.randn(n, 96, generator=torch.Generator().manual_seed(seed))
    nonces = list(range(100, 100 + n))
    y = poc_kernels.compute_artifacts(x, "blk", "node", nonces, k=k)
    wire = {
        "public_key": "node",
        "block_hash": "blk",
        "block_height": 7,
        "node_id": 3,
        "artifacts": [{"nonce": n_, "vector_b64": b} for n_, b in zip(nonces, v.encode_artifacts(y))],
        "encoding": {"dtype": "f16", "k_dim": k, "endian": "le"},
    }
    return wire, y


def test_batch_json_shape_round_trip_and_strictness():
    wire, _ = _node_batch()
    batch = v.ArtifactBatch.model_validate_json(json.dumps(wire))
    assert batch.nonces == list(range(100, 140)) and batch.encoding.k_dim == 12
    assert json.loads(batch.model_dump_json()) == wire
    without_encoding = {key: value for key, value in wire.items() if key != "encoding"}
    assert v.ArtifactBatch.model_validate(without_encoding).encoding == v.Encoding()
    bad = [
        ({**wire, "extra": 1}, "extra"),
        ({**wire, "block_height": "7"}, "block_height"),
        ({**wire, "artifacts": wire["artifacts"] + wire["artifacts"][:1]}, "unique nonces"),
        ({**wire, "artifacts": [{"nonce": 2**32, "vector_b64": "AAAA"}]}, "nonce"),
        ({**wire, "encoding": {"dtype": "f32", "k_dim": 12, "endian": "le"}}, "dtype"),
        ({**wire, "encoding": {"dtype": "f16", "k_dim": 0, "endian": "le"}}, "k_dim"),
    ]
    for body, where in bad:
        with pytest.raises(pydantic.ValidationError, match=where):
            v.ArtifactBatch.model_validate_json(json.dumps(body))


def test_encode_artifacts_leaves_out_rows_without_an_artifact():
    y = torch.tensor([[0.6, 0.8], [float("nan"), 0.0], [0.0, 0.0]])
    enc = v.encode_artifacts(y)
    assert enc[1] is None and enc[2] is not None
    assert np.array_equal(v.decode_artifact(enc[0], 2), np.array([0.6, 0.8], dtype=np.float16).astype(np.float32))
    assert v.decode_artifact("not base64!", 2) is None and v.decode_artifact(enc[0], 3) is None
    with pytest.raises(ValueError, match="artifacts must be 2-D"):
        v.encode_artifacts(torch.zeros(3))


def test_an_honest_batch_passes():
    wire, y = _node_batch()
    batch = v.ArtifactBatch.model_validate(wire)
    verdict = v.validate_artifacts(batch, y)  # the validator recomputes the same artifacts
    assert (verdict.n_total, verdict.n_mismatch, verdict.mismatch_nonces) == (40, 0, [])
    assert verdict.p_value == 1.0 and not verdict.fraud_detected
    assert set(json.loads(verdict.model_dump_json())) == {
        "public_key",
        "block_hash",
        "block_height",
        "node_id",
        "n_total",
        "n_mismatch",
        "mismatch_nonces",
        "p_value",
        "fraud_detected",
    }


def test_mismatches_malformed_vectors_and_skipped_nonces():
    wire, y = _node_batch()
    arts = wire["artifacts"]
    arts[0]["vector_b64"] = v.encode_vector(-v.decode_artifact(arts[0]["vector_b64"]))  # far away: a mismatch
    near = v.decode_artifact(arts[1]["vector_b64"]).astype(np.float64)
    near[0] += 0.5 * ARTIFACT_DIST_THRESHOLD
    arts[1]["vector_b64"] = v.encode_vector(near)  # within the threshold: no mismatch
    arts[2]["vector_b64"] = "@@@@"  # not base64
    arts[3]["vector_b64"] = v.encode_vector(np.ones(11))  # the wrong length
    arts[4]["vector_b64"] = base64.b64encode(np.full(12, np.inf, dtype="<f2").tobytes()).decode()  # not finite
    arts[5]["vector_b64"] = ""  # empty
    own = y.clone()
    own[6] = float("nan")  # the validator has no artifact for this nonce: skipped, still counted
    batch = v.ArtifactBatch.model_validate(wire)
    cmp = v.compare_artifacts([a["vector_b64"] for a in arts], own)
    assert cmp.mismatch[:7].tolist() == [True, False, True, True, True, True, False] and cmp.skipped[6]
    assert np.isnan(cmp.distances[2:7]).all() and cmp.distances[0] > 1.0
    verdict = v.validate_artifacts(batch, own)
    assert verdict.n_total == 40 and verdict.n_mismatch == 5
    assert verdict.mismatch_nonces == [100, 102, 103, 104, 105]
    expect = v.fraud_test(40, 5, ARTIFACT_P_MISMATCH, ARTIFACT_FRAUD_THRESHOLD)
    assert verdict.p_value == expect.p_value and verdict.fraud_detected
    # the network client's fallbacks tolerate more
    loose = v.validate_artifacts(batch, own, v.StatTest(dist_threshold=0.4, p_mismatch=0.1, fraud_threshold=0.05))
    assert loose.n_mismatch == 5 and not loose.fraud_detected


def test_comparison_bad_arguments():
    _, y = _node_batch(n=3)
    enc = v.encode_artifacts(y)
    with pytest.raises(ValueError, match="one artifact per nonce"):
        v.compare_artifacts(enc[:2], y)
    with pytest.raises(ValueError, match=r"recomputed must be \[n, k = 12\]"):
        v.compare_artifacts(enc, y[:, :5])
    with pytest.raises(ValueError, match="dist_threshold must be a finite number >= 0"):
        v.compare_artifacts(enc, y, dist_threshold=-1)
    with pytest.raises(TypeError, match="batch must be an ArtifactBatch"):
        v.validate_artifacts({"artifacts": []}, y)
    with pytest.raises(pydantic.ValidationError, match="p_mismatch"):
        v.StatTest(p_mismatch=1.5)
    empty = v.validate_artifacts(
        v.ArtifactBatch(public_key="n", block_hash="b", block_height=0, node_id=0, artifacts=[]), torch.empty(0, 12)
    )
    assert empty.n_total == 0 and empty.p_value == 1.0 and not empty.fraud_detected
