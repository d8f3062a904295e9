"""SPEC §8: distances of random hidden states follow the analytic law."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import poc_kernels
from poc_kernels import distribution

D = poc_kernels.POC_OUTPUT_DIM


def test_analytic_law_figures():
    # SPEC §8 / the study: mean ≈ √2, std ≈ 1/sqrt(2D), 59.0% below 1.416, 10% below 1.40417
    assert distribution.distance_mean() == pytest.approx(math.sqrt(2), abs=1e-4)
    assert distribution.distance_std() == pytest.approx(1 / math.sqrt(2 * D), rel=1e-3)
    assert distribution.valid_rate(1.416) == pytest.approx(0.590, abs=0.005)
    assert distribution.r_target_for_valid_rate(0.10) == pytest.approx(1.4042, abs=0.0005)
    assert distribution.valid_rate(distribution.r_target_for_valid_rate(0.3)) == pytest.approx(0.3, abs=1e-9)
    # the density integrates to one and its mean is the closed form
    from scipy import integrate

    mean = distribution.distance_mean()
    mass = integrate.quad(distribution.distance_pdf, mean - 0.1, mean + 0.1)[0]
    first = integrate.quad(lambda x: x * distribution.distance_pdf(x), mean - 0.1, mean + 0.1)[0]
    assert mass == pytest.approx(1.0, abs=1e-9)
    assert first == pytest.approx(mean, abs=1e-9)


def test_analytic_law_small_dimension_matches_monte_carlo():
    # In D = 3 dimensions cos θ of a uniform direction is uniform on [-1, 1].
    g = np.random.default_rng(1)
    v = g.standard_normal((20000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    d = np.linalg.norm(v - np.array([1.0, 0, 0]), axis=1)
    assert stats.kstest(d, lambda x: distribution.distance_cdf(x, 3)).pvalue > 0.01


@pytest.mark.parametrize("backend", [b for b in ("reference", "cpp") if b in poc_kernels.available_backends("cpu")])
def test_distances_follow_the_analytic_law(backend):
    n, hidden = 3000, 1024
    g = torch.Generator().manual_seed(2024)
    x = torch.randn(n, hidden, generator=g)
    d = poc_kernels.compute_distances(x, "dist_block", "dist_key", range(n), backend=backend).double().numpy()
    assert np.isfinite(d).all()
    assert abs(d.mean() - math.sqrt(2)) < 1e-3
    assert abs(d.std() - 1 / math.sqrt(2 * D)) < 0.1 / math.sqrt(2 * D)
    ks = stats.kstest(d, lambda r: distribution.distance_cdf(r, D))
    assert ks.pvalue > 0.01, ks


def test_distribution_bad_input():
    with pytest.raises(ValueError, match="p"):
        distribution.r_target_for_valid_rate(1.5)
    with pytest.raises(ValueError, match="r_target"):
        distribution.valid_rate(float("nan"))
    with pytest.raises(ValueError, match="output_dim"):
        distribution.distance_cdf(1.0, 1)
