"""Validation statistics of PoC v2 (SPEC §8–9), one module per reader:

- :mod:`.batches`: proof batches, the mismatch rules and the vector codec (what
  the node's HTTP API sends, receives and judges);
- :mod:`.artifacts`: the artifact scheme's batches, comparison and verdict
  (SPEC-ARTIFACTS §6), in the network's JSON shapes;
- :mod:`.fraud`: the binomial fraud test and its exact power;
- :mod:`.network`: stake-weighted validators and the network simulation (read
  by the command line and its plots);
- :mod:`.distribution`: the analytic law of the distance (r_target calibration).

Every public name of those modules is importable from here.
"""

from ..constants import DISTANCE_P_HONEST, POC_OUTPUT_DIM, VECTOR_DIM, VECTOR_DIST_THRESHOLD, VECTOR_P_HONEST
from .artifacts import (
    Artifact,
    ArtifactBatch,
    ArtifactComparison,
    ArtifactValidation,
    Encoding,
    StatTest,
    compare_artifacts,
    decode_artifact,
    encode_artifacts,
    validate_artifacts,
)
from .batches import (
    ProofBatch,
    ValidatedBatch,
    calibrate_threshold,
    decode_vector,
    distance_mismatches,
    encode_vector,
    vector_distances,
    vector_mismatches,
)
from .distribution import (
    distance_cdf,
    distance_mean,
    distance_pdf,
    distance_std,
    r_target_for_valid_rate,
    valid_rate,
)
from .fraud import (
    FraudTestResult,
    MonteCarloPower,
    critical_mismatches,
    detection_power,
    false_positive_rate,
    fraud_test,
    monte_carlo_power,
)
from .network import (
    DEFAULT_VALIDATORS,
    ConvictionBounds,
    NetworkSimulation,
    conviction_probability,
    default_weights,
    load_weights,
    number_lines,
    simulate_network,
)

__all__ = [
    "Artifact",
    "ArtifactBatch",
    "ArtifactComparison",
    "ArtifactValidation",
    "Encoding",
    "StatTest",
    "compare_artifacts",
    "decode_artifact",
    "encode_artifacts",
    "validate_artifacts",
    "DEFAULT_VALIDATORS",
    "DISTANCE_P_HONEST",
    "POC_OUTPUT_DIM",
    "VECTOR_DIM",
    "VECTOR_DIST_THRESHOLD",
    "VECTOR_P_HONEST",
    "ConvictionBounds",
    "FraudTestResult",
    "MonteCarloPower",
    "NetworkSimulation",
    "ProofBatch",
    "ValidatedBatch",
    "calibrate_threshold",
    "conviction_probability",
    "critical_mismatches",
    "decode_vector",
    "default_weights",
    "detection_power",
    "distance_cdf",
    "distance_mean",
    "distance_pdf",
    "distance_std",
    "distance_mismatches",
    "encode_vector",
    "false_positive_rate",
    "fraud_test",
    "load_weights",
    "monte_carlo_power",
    "number_lines",
    "r_target_for_valid_rate",
    "simulate_network",
    "valid_rate",
    "vector_distances",
    "vector_mismatches",
]
