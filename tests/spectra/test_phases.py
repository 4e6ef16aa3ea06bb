"""Phases of training: the rule on hand-made spectra, and the synthetic matrix of each phase classified as such."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from funnelscope.errors import FunnelscopeInputError
from funnelscope.spectra.marchenko_pastur import fit_marchenko_pastur, marchenko_pastur_cdf
from funnelscope.spectra.phases import (
    BLEEDING_OUT,
    BULK_DECAY,
    BULK_PLUS_SPIKES,
    HEAVY_TAILED,
    PHASES,
    RANDOM_LIKE,
    RANK_COLLAPSE,
    classify_phase,
    phase_evidence,
)
from funnelscope.spectra.powerlaw import fit_powerlaw
from funnelscope.spectra.synthetic import (
    bbp_threshold,
    iid_esd,
    low_rank_matrix,
    phase_matrix,
    spike_for_outlier,
    spike_outlier,
    spiked_matrix,
    student_t_matrix,
)


def gram_eigenvalues(w: np.ndarray) -> np.ndarray:
    """``σ(W)²`` as the eigenvalues of the float64 Gram ``WᵀW`` (N ≥ M), the library's route
    (docs/quantities.md#layer-matrices)."""
    t = torch.from_numpy(np.asarray(w)).to(torch.float64)
    return torch.linalg.eigvalsh(t.T @ t).clamp_min(0.0).numpy()


def mp_quantile_spectrum(N: int, M: int) -> np.ndarray:
    """``λ`` (σ(W)² units, σ² = 1) at the MP quantiles (i − ½)/M: an ESD that is exactly MP, without noise."""
    grid = np.linspace((1 - math.sqrt(M / N)) ** 2, (1 + math.sqrt(M / N)) ** 2, 400_001)
    return N * np.interp((np.arange(M) + 0.5) / M, marchenko_pastur_cdf(grid, sigma2=1.0, Q=N / M), grid)


def test_phase_names():
    # The strings of the brief, in Martin & Mahoney's order (2021, Section 5), rank collapse last.
    assert PHASES == ("random-like", "bleeding-out", "bulk+spikes", "bulk-decay", "heavy-tailed", "rank-collapse")


# --- the rule, step by step, on spectra built by hand ---------------------------------------------------------

N0, M0 = 1000, 500
EDGE0 = (1 + math.sqrt(M0 / N0)) ** 2  # λ₊ of the noise-free MP spectrum, in units of X


def with_outliers(positions) -> np.ndarray:
    """The noise-free MP spectrum with its largest values replaced by outliers at ``positions`` × λ₊."""
    lam = np.sort(mp_quantile_spectrum(N0, M0))
    lam[M0 - len(positions) :] = N0 * EDGE0 * np.asarray(positions)
    return lam


# 60 outliers (12%) from the edge outwards; they take mass from the bulk, whose fitted σ² drops to 0.82.
HEAVY_TAIL = np.r_[np.linspace(1.0, 1.2, 10), np.geomspace(1.3, 50.0, 50)]


@pytest.mark.parametrize(
    ("lam", "alpha", "phase"),
    [
        (mp_quantile_spectrum(N0, M0), 8.0, RANDOM_LIKE),
        (with_outliers([1.1]), 8.0, BLEEDING_OUT),  # just past λ₊ + 4s (s = 0.023 here, 0.8% of λ₊)
        (with_outliers([1.1, 1.2, 1.4]), 8.0, BLEEDING_OUT),
        (with_outliers([1.1, 3.0]), 8.0, BULK_PLUS_SPIKES),  # one spike ≥ 1.5 λ₊ makes the gap
        # 12 outliers (2.4%: past 1%, short of 10%), 8 of them below 1.5 λ₊: the edge decays.
        (with_outliers(np.r_[np.linspace(1.1, 1.45, 8), 2.0, 3.0, 4.0, 6.0]), 3.0, BULK_DECAY),
        # 12 outliers all past 1.5 λ₊ (many spikes, a clean gap); 3 near the edge and 3 far.
        (with_outliers(np.linspace(2.0, 8.0, 12)), 3.0, BULK_PLUS_SPIKES),
        (with_outliers(np.r_[1.1, 1.2, 1.3, 2.0, 3.0, 4.0]), 3.0, BULK_PLUS_SPIKES),
        (with_outliers(HEAVY_TAIL), 3.0, HEAVY_TAILED),  # 12% outliers and α ≤ 4
        (with_outliers(HEAVY_TAIL), 6.0, BULK_DECAY),  # the same, but no heavy power law
        (with_outliers(HEAVY_TAIL), math.nan, BULK_DECAY),  # no power-law fit at all
        (np.concatenate([np.zeros(250), np.sort(mp_quantile_spectrum(N0, M0))[250:]]), 8.0, RANK_COLLAPSE),
        (np.concatenate([np.zeros(249), np.sort(mp_quantile_spectrum(N0, M0))[249:]]), 8.0, None),  # not collapse
    ],
)
def test_rule_on_hand_made_spectra(lam, alpha, phase):
    if phase is None:
        assert classify_phase(lam, N=N0, M=M0, alpha=alpha) != RANK_COLLAPSE
    else:
        assert classify_phase(lam, N=N0, M=M0, alpha=alpha) == phase


def test_evidence_reports_what_the_rule_read():
    lam = with_outliers([1.1, 3.0])
    evidence = phase_evidence(lam, N=N0, M=M0, alpha=8.0)
    assert evidence.phase == BULK_PLUS_SPIKES
    assert evidence.num_outliers == 2 and evidence.outlier_fraction == 2 / M0
    assert evidence.zero_fraction == 0.0 and evidence.alpha == 8.0
    assert evidence.top_ratio == pytest.approx(3.0 * EDGE0 / evidence.mp_fit.bulk_max)
    # A fit passed in is used as is; one made for other dimensions is refused.
    fit = fit_marchenko_pastur(lam, N=N0, M=M0)
    assert phase_evidence(lam, N=N0, M=M0, alpha=8.0, mp_fit=fit) == evidence
    with pytest.raises(FunnelscopeInputError):
        classify_phase(lam, N=2 * N0, M=M0, alpha=8.0, mp_fit=fit)


def test_rank_tolerance_option():
    lam = np.concatenate([np.full(300, 1e-3), np.sort(mp_quantile_spectrum(N0, M0))[300:]])
    assert classify_phase(lam, N=N0, M=M0, alpha=8.0) != RANK_COLLAPSE  # 1e-3 is not zero by default
    assert classify_phase(lam, N=N0, M=M0, alpha=8.0, rank_tol=1e-2) == RANK_COLLAPSE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"N": N0, "M": M0, "alpha": 1.0},  # a power-law exponent is > 1
        {"N": N0, "M": M0, "alpha": "3"},
        {"N": N0, "M": M0, "alpha": True},
        {"N": 1, "M": 1, "alpha": 3.0},
        {"N": M0 - 1, "M": M0, "alpha": 3.0},
        {"N": N0, "M": M0, "alpha": 3.0, "rank_tol": math.inf},
    ],
)
def test_rejects_bad_input(kwargs):
    lam = mp_quantile_spectrum(N0, M0) if kwargs["M"] == M0 else np.ones(1)
    with pytest.raises(FunnelscopeInputError):
        classify_phase(lam, **kwargs)


# --- the synthetic matrices of each phase ---------------------------------------------------------------------


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize(("N", "M", "seed"), [(1000, 500, 101), (1000, 500, 102), (512, 512, 103), (600, 300, 104)])
def test_synthetic_matrix_is_classified_as_its_phase(phase, N, M, seed):
    # Each builder is in its phase by construction (synthetic.phase_matrix); eigenvalues in float64, α from
    # fit_powerlaw. The thresholds were calibrated on seeds 1000-1019 at 1000×500, 2000×1000 and 512×512.
    lam = gram_eigenvalues(phase_matrix(phase, N, M, seed=seed))
    assert classify_phase(lam, N=N, M=M, alpha=fit_powerlaw(lam).alpha) == phase


def test_rank_collapse_of_a_float32_product():
    # Weights stored in float32: the product's zero singular values are rounding noise of order σ_max·ε₃₂.
    w = low_rank_matrix(800, 400, rank=40, seed=5).astype(np.float32)
    lam = gram_eigenvalues(w)
    assert classify_phase(lam, N=800, M=400, alpha=fit_powerlaw(lam).alpha) == RANK_COLLAPSE
    assert phase_evidence(lam, N=800, M=400, alpha=3.0).zero_fraction == pytest.approx(0.9)


def test_spike_location_formulas():
    Q = 2.0
    edge = (1 + 1 / math.sqrt(Q)) ** 2
    # At the BBP threshold θ_c = Q^{-1/4} the outlier meets the edge; below it there is none.
    assert spike_outlier(bbp_threshold(Q) * (1 + 1e-9), Q=Q) == pytest.approx(edge)
    assert spike_outlier(0.5, Q=Q) == edge
    assert spike_outlier(spike_for_outlier(1.1 * edge, Q=Q), Q=Q) == pytest.approx(1.1 * edge)
    # Simulated (Benaych-Georges & Nadakuditi 2012): θ = 2 at Q = 2 gives (1 + 4)(0.5 + 4)/4 = 5.625. At
    # 1000×500 the outlier fluctuates with sd 0.16 (measured, 30 seeds): the mean of 6 has an error of ≈ 0.07.
    tops = [gram_eigenvalues(spiked_matrix(1000, 500, thetas=[2.0], seed=seed)).max() / 1000 for seed in range(6)]
    assert np.mean(tops) == pytest.approx(5.625, rel=0.03)


def test_phase_matrix_rejects_unknown_phase():
    with pytest.raises(FunnelscopeInputError):
        phase_matrix("over-trained", 100, 50, seed=0)


def test_iid_esd_gaussian_fills_the_mp_support_and_heavy_tails_leave_it():
    # Q = 2: the MP law of X = WᵀW/N lives on [(1 − 1/√2)², (1 + 1/√2)²] = [0.086, 2.914]
    low, high = (1 - 2**-0.5) ** 2, (1 + 2**-0.5) ** 2
    gaussian = iid_esd(1000, 500, entries="gaussian", seed=0)
    assert gaussian.shape == (500,) and np.all(np.diff(gaussian) >= 0)
    assert gaussian.min() == pytest.approx(low, abs=0.03) and gaussian.max() == pytest.approx(high, abs=0.1)
    assert gaussian.mean() == pytest.approx(1.0, abs=0.02)  # tr X / M = mean of the squared entries
    # Student-t(3) has variance 3 and a power-law tail: its top eigenvalue lies beyond the MP edge rescaled by 3
    student = iid_esd(1000, 500, entries="student_t", seed=0)
    assert student.mean() == pytest.approx(3.0, rel=0.2) and student.max() > 1.2 * 3.0 * high
    pareto = iid_esd(1000, 500, entries="pareto", seed=0)
    assert pareto.max() / np.median(pareto) > 100  # μ = 1.5: infinite variance, a few huge entries dominate


def test_iid_esd_and_student_t_reject_bad_input():
    with pytest.raises(FunnelscopeInputError, match="entries"):
        iid_esd(100, 50, entries="cauchy")
    with pytest.raises(FunnelscopeInputError, match="dof"):
        student_t_matrix(100, 50, dof=0.0)
    assert student_t_matrix(20, 10, dof=3.0, seed=1).shape == (20, 10)
