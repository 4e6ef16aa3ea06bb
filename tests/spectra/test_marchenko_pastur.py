"""Marchenko–Pastur law and bulk fit: closed forms against quadrature, the fit against matrices with known σ²."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from funnelscope.errors import FunnelscopeInputError
from funnelscope.spectra.marchenko_pastur import (
    MarchenkoPasturFit,
    default_rank_tolerance,
    fit_marchenko_pastur,
    marchenko_pastur_cdf,
    marchenko_pastur_edges,
    marchenko_pastur_pdf,
    tracy_widom_scale,
)

ASPECTS = [1.0, 1.5, 2.0, 4.0, 10.0]


def squared_singular_values(w: np.ndarray) -> np.ndarray:
    """``σ(W)²`` (not divided by N) as the eigenvalues of the float64 Gram ``WᵀW``, the library's route."""
    t = torch.from_numpy(np.asarray(w, dtype=np.float64))
    return torch.linalg.eigvalsh(t.T @ t).clamp_min(0.0).numpy()


def naive_bulk_variance(x: np.ndarray, Q: float) -> float:
    """The fixed-point rule of ``fit_marchenko_pastur`` written literally: re-mask and re-average until stable."""
    sigma2 = x.mean()
    while True:
        new = x[x <= sigma2 * (1 + 1 / math.sqrt(Q)) ** 2].mean()
        if new == sigma2:
            return sigma2
        sigma2 = new


def planted_spikes(N: int, M: int, strengths: list[float], rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian plus ``√N Σ θ u vᵀ`` (orthonormal u, v): one outlier per θ above Q^{-1/4}."""
    left, _ = np.linalg.qr(rng.standard_normal((N, len(strengths))))
    right, _ = np.linalg.qr(rng.standard_normal((M, len(strengths))))
    return rng.standard_normal((N, M)) + math.sqrt(N) * (left * np.asarray(strengths)) @ right.T


# --- the law ----------------------------------------------------------------------------------------------


def test_edges_closed_form():
    # (1 ± 1/√4)² = 0.25, 2.25; at Q = 1 the bulk starts at 0 and ends at 4σ².
    assert marchenko_pastur_edges(1.0, 4.0) == (0.25, 2.25)
    assert marchenko_pastur_edges(0.5, 1.0) == (0.0, 2.0)


@pytest.mark.parametrize("Q", ASPECTS)
def test_pdf_integrates_to_one_with_mean_sigma2(Q):
    sigma2 = 0.7
    lo, hi = marchenko_pastur_edges(sigma2, Q)

    def pdf(x):
        return float(marchenko_pastur_pdf(x, sigma2=sigma2, Q=Q))

    total = integrate.quad(pdf, lo, hi, limit=200)[0]
    mean = integrate.quad(lambda x: x * pdf(x), lo, hi, limit=200)[0]
    # Closed forms: a density integrates to 1; the MP mean is σ² (the trace of X over M).
    assert total == pytest.approx(1.0, abs=1e-7)
    assert mean == pytest.approx(sigma2, rel=1e-7)
    assert pdf(lo - 1e-3) == 0.0 and pdf(hi + 1e-3) == 0.0


@pytest.mark.parametrize("Q", ASPECTS)
def test_cdf_matches_quadrature_of_pdf(Q):
    sigma2 = 1.3
    lo, hi = marchenko_pastur_edges(sigma2, Q)
    points = np.linspace(lo - 0.1, hi + 0.1, 23)
    reference = [
        integrate.quad(lambda x: float(marchenko_pastur_pdf(x, sigma2=sigma2, Q=Q)), lo, max(p, lo), limit=200)[0]
        for p in points
    ]
    np.testing.assert_allclose(marchenko_pastur_cdf(points, sigma2=sigma2, Q=Q), reference, atol=1e-7)


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        (marchenko_pastur_pdf, {"sigma2": 0.0, "Q": 2.0}),
        (marchenko_pastur_pdf, {"sigma2": 1.0, "Q": 0.5}),
        (marchenko_pastur_cdf, {"sigma2": -1.0, "Q": 2.0}),
        (marchenko_pastur_cdf, {"sigma2": 1.0, "Q": math.nan}),
    ],
)
def test_law_rejects_bad_parameters(call, kwargs):
    with pytest.raises(FunnelscopeInputError):
        call(1.0, **kwargs)


def test_tracy_widom_scale_standardises_the_largest_eigenvalue():
    # Johnstone (2001): (λ_max − μ)/s → TW₁, whose mean is −1.2065 and sd 1.2680 (Tracy & Widom 1996;
    # Bornemann 2010, Table 3). 400 Gaussian 200×100 matrices: standard error of the mean ≈ 0.06.
    N, M = 200, 100
    w = torch.from_numpy(np.random.default_rng(7).standard_normal((400, N, M)))
    top = torch.linalg.eigvalsh(w.transpose(1, 2) @ w)[:, -1].numpy() / N
    centre = (math.sqrt(N - 1) + math.sqrt(M)) ** 2 / N
    standardised = (top - centre) / tracy_widom_scale(sigma2=1.0, N=N, M=M)
    assert standardised.mean() == pytest.approx(-1.2065, abs=0.25)
    assert standardised.std() == pytest.approx(1.2680, abs=0.25)


# --- the fit ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("N", "M", "sigma2"), [(1000, 500, 0.25), (600, 600, 2.0)])
def test_fit_recovers_sigma2_of_gaussian_matrix(N, M, sigma2):
    rng = np.random.default_rng(0)
    lam = squared_singular_values(rng.standard_normal((N, M)) * math.sqrt(sigma2))
    fit = fit_marchenko_pastur(lam, N=N, M=M)
    assert isinstance(fit, MarchenkoPasturFit)
    # The entries' variance is σ² by construction; measured error +0.23% and +0.15% (seed 0).
    assert fit.sigma2 == pytest.approx(sigma2, rel=0.02)
    assert fit.num_spikes <= 1  # the top of a pure-noise ESD sits at λ₊ up to Tracy–Widom noise
    assert (fit.Q, fit.scale, fit.num_zero) == (N / M, float(N), 0)
    assert (fit.bulk_min, fit.bulk_max) == marchenko_pastur_edges(fit.sigma2, N / M)
    assert fit.lambda_max == pytest.approx(lam.max() / N)
    assert fit.mp_softrank == pytest.approx(fit.bulk_max / fit.lambda_max)


def test_esd_of_gaussian_matrix_follows_the_law():
    N, M = 1000, 500
    x = np.sort(squared_singular_values(np.random.default_rng(1).standard_normal((N, M)))) / N

    def ks(sigma2):
        cdf = marchenko_pastur_cdf(x, sigma2=sigma2, Q=N / M)
        return max(np.max(np.abs(np.arange(1, M + 1) / M - cdf)), np.max(np.abs(np.arange(M) / M - cdf)))

    # Eigenvalues are rigid: the KS distance to the true law measured 3.0–3.4/M over seeds at this size and
    # 2000×1000 (i.i.d. samples would give ≈ 0.9/√M ≈ 0.04). A 5% wrong σ² measured ≥ 0.024, so the test can tell.
    assert ks(1.0) < 0.01
    assert ks(1.05) > 0.018


@pytest.mark.parametrize(("N", "M", "seed"), [(1000, 500, 0), (1000, 500, 1), (600, 600, 2)])
def test_fit_finds_planted_spikes_and_keeps_sigma2(N, M, seed):
    strengths = [2.0, 3.0, 5.0, 10.0]  # outliers from 2.0 λ₊ up (the BBP threshold Q^{-1/4} is ≤ 1)
    lam = squared_singular_values(planted_spikes(N, M, strengths, np.random.default_rng(seed)))
    fit = fit_marchenko_pastur(lam, N=N, M=M)
    # Noise entries are standard normal. Each spike carries about (1 + 1/Q)σ² of trace out of the bulk, so the
    # bulk mean is low by up to 4(1 + M/N)/M ≈ 1.2–1.3% here (measured 0.3–1.1% over 8 seeds).
    assert fit.sigma2 == pytest.approx(1.0, rel=0.02)
    assert fit.sigma2 < 1.0
    margin = 4 * tracy_widom_scale(sigma2=fit.sigma2, N=N, M=M)
    assert np.count_nonzero(lam / N > fit.bulk_max + margin) == len(strengths)
    # Above λ₊ itself, the largest bulk eigenvalue may also count (it crosses λ₊ on the Tracy–Widom scale:
    # measured in 5 of 24 seeded runs).
    assert fit.num_spikes - len(strengths) in (0, 1)
    # The strongest spike sits at (1 + θ²)(1/Q + θ²)/θ² (Benaych-Georges & Nadakuditi 2012, Section 3.1).
    theta2 = 100.0
    assert fit.lambda_max == pytest.approx((1 + theta2) * (M / N + theta2) / theta2, rel=0.02)
    assert fit.mp_softrank < 0.05


def test_fixed_point_equals_naive_iteration():
    rng = np.random.default_rng(3)
    N, M = 900, 300
    lam = squared_singular_values(planted_spikes(N, M, [1.5, 4.0, 8.0], rng))
    fit = fit_marchenko_pastur(lam, N=N, M=M)
    assert fit.sigma2 == pytest.approx(naive_bulk_variance(np.sort(lam) / N, N / M), rel=1e-12)


def test_rank_deficiency_is_left_out():
    rng = np.random.default_rng(4)
    N, M, zero_columns = 1000, 500, 50
    w = rng.standard_normal((N, M))
    w[:, :zero_columns] = 0.0
    lam = squared_singular_values(w)
    fit = fit_marchenko_pastur(lam, N=N, M=M)
    assert fit.num_zero == zero_columns
    # The non-zero part is MP with Q' = N/(M − 50) > Q: a narrower bulk, inside the fitted edge, so σ² = 1 holds.
    assert fit.sigma2 == pytest.approx(1.0, rel=0.02)
    assert fit.num_spikes == 0
    # A rank tolerance of 0 keeps exact zeros out too (they are not > 0); tiny negative noise counts as zero.
    noisy = np.concatenate([np.sort(lam)[zero_columns:], np.full(zero_columns, -1e-12)])
    assert fit_marchenko_pastur(noisy, N=N, M=M, rank_tol=0.0).num_zero == zero_columns


def test_default_rank_tolerance_is_numpys_rule_for_the_gram():
    lam = np.array([0.0, 1e-20, 2.0, 8.0])
    # numpy.linalg.matrix_rank(G) for a Hermitian G uses S.max() · max(G.shape) · eps.
    assert default_rank_tolerance(lam, M=4) == 8.0 * 4 * np.finfo(np.float64).eps
    gram = np.diag(lam)
    assert np.linalg.matrix_rank(gram) == np.count_nonzero(lam > default_rank_tolerance(lam, M=4))


def test_fit_accepts_a_torch_tensor():
    lam = squared_singular_values(np.random.default_rng(5).standard_normal((300, 100)))
    assert fit_marchenko_pastur(torch.from_numpy(lam), N=300, M=100) == fit_marchenko_pastur(lam, N=300, M=100)


@pytest.mark.parametrize(
    ("eigenvalues", "kwargs"),
    [
        (np.ones(10), {"N": 10, "M": 20}),  # N < M
        (np.ones(10), {"N": 20.0, "M": 10}),  # N not an integer
        (np.ones(10), {"N": 20, "M": 0}),
        (np.array([1.0, math.nan]), {"N": 20, "M": 2}),
        (np.array([1.0, -0.5]), {"N": 20, "M": 2}),  # clearly negative
        (np.ones((2, 2)), {"N": 20, "M": 2}),
        (np.array([]), {"N": 20, "M": 2}),
        (np.zeros(5), {"N": 20, "M": 5}),  # nothing left to fit
        (np.ones(5), {"N": 20, "M": 5, "rank_tol": -1.0}),
    ],
)
def test_fit_rejects_bad_input(eigenvalues, kwargs):
    with pytest.raises(FunnelscopeInputError):
        fit_marchenko_pastur(eigenvalues, **kwargs)
