"""Time of the study's network simulation: 100,000 rounds × 377 stake-weighted validators.

``simulate_network`` draws every validator's mismatch count in every round
(by inversion of the exact binomial CDF) and sums the stakes voting "cheater"
with one matrix-vector product per chunk of rounds. ``conviction_probability``
brackets the exact conviction probability by convolving the rounded stakes.
"""

import pytest

from poc_kernels import validation

ROUNDS, VALIDATORS = 100_000, 377


@pytest.mark.parametrize("p_target", [0.02, 0.04])
def test_simulate_network_100k_rounds_377_validators(benchmark, p_target):
    w = validation.default_weights(VALIDATORS)
    sim = benchmark.pedantic(
        lambda: validation.simulate_network(w, p_target, 200, 0.05, 0.5, ROUNDS, seed=0, progress=False),
        rounds=3,
        iterations=1,
        warmup_rounds=1,
    )
    benchmark.extra_info.update(
        {"rounds": ROUNDS, "validators": VALIDATORS, "conviction_probability": sim.conviction_probability}
    )
    assert sim.rounds == ROUNDS


def test_conviction_probability_377_validators(benchmark):
    w = validation.default_weights(VALIDATORS)
    q = validation.detection_power(200, 0.02, 0.04, 0.05)
    bounds = benchmark.pedantic(lambda: validation.conviction_probability(w, q, 0.5), rounds=3, iterations=1)
    assert bounds.lower <= bounds.upper
