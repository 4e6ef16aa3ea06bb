r"""Random matrices built to sit in each of Martin & Mahoney's 5+1 phases of training.

They calibrate and test :func:`funnelscope.spectra.phases.classify_phase`, and show what each phase looks like.
All return a float64 ``numpy`` array of shape ``(N, M)``, ``N ≥ M``; ``Q = N/M``; noise entries are
standard normal (``σ² = 1``), so the MP law of ``X = WᵀW/N`` has edges ``(1 ± 1/√Q)²``.

Spikes follow the rank-``k`` additive model of Benaych-Georges & Nadakuditi (2012, Section 3.1),

.. math::

    W = Z + \sqrt{N} \sum_{i=1}^{k} \theta_i u_i v_i^\top ,

with ``Z`` Gaussian and orthonormal ``u_i ∈ ℝᴺ``, ``v_i ∈ ℝᴹ``. A spike ``θ`` above the BBP threshold
:math:`\theta_c = Q^{-1/4}` pulls one eigenvalue of ``X`` out of the bulk, to

.. math::

    x(\theta) = \frac{(1 + \theta^2)(1/Q + \theta^2)}{\theta^2} \quad (> \lambda_+ = (1 + 1/\sqrt{Q})^2),

and one below it leaves the spectrum at the edge (Baik, Ben Arous & Péché 2005).

References
----------
F. Benaych-Georges and R. R. Nadakuditi, "The singular values and vectors of low rank perturbations of large
rectangular random matrices", J. Multivariate Anal. 111:120–135, 2012.

C. H. Martin and M. W. Mahoney, JMLR 22(165), 2021, Section 5 (Pareto matrices as models of heavy tails).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from funnelscope.errors import FunnelscopeInputError
from funnelscope.options import check_int
from funnelscope.spectra.marchenko_pastur import _check_shape
from funnelscope.spectra.phases import (
    BLEEDING_OUT,
    BULK_DECAY,
    BULK_PLUS_SPIKES,
    HEAVY_TAILED,
    PHASES,
    RANDOM_LIKE,
    RANK_COLLAPSE,
)

__all__ = [
    "bbp_threshold",
    "gaussian_matrix",
    "iid_esd",
    "low_rank_matrix",
    "pareto_matrix",
    "phase_matrix",
    "spike_for_outlier",
    "spike_outlier",
    "spiked_matrix",
    "student_t_matrix",
]

Seed = int | np.random.Generator | None

#: ``phase_matrix``'s bleeding-out spikes put outliers this far above ``λ₊`` (as multiples of it).
_BLEEDING_OUTLIERS = (1.03, 1.06, 1.10)
#: ``phase_matrix``'s bulk+spikes strengths ``θ`` (outliers at 3.6, 6.1 and 9.1 ``λ₊`` for ``Q = 2``).
_STRONG_SPIKES = (3.0, 4.0, 5.0)
_BULK_DECAY_MU = 2.5
_HEAVY_TAILED_MU = 1.5
_RANK_COLLAPSE_SHARE = 0.1


def bbp_threshold(Q: float) -> float:
    r"""The spike strength :math:`\theta_c = Q^{-1/4}` above which a spike leaves the bulk."""
    _check_q(Q)
    return Q**-0.25


def spike_outlier(theta: float, *, Q: float) -> float:
    r"""Limit of the eigenvalue of ``X`` that a spike ``θ`` creates: ``x(θ)`` above, ``λ₊`` below threshold."""
    _check_q(Q)
    if not (math.isfinite(theta) and theta >= 0.0):
        raise FunnelscopeInputError(f"spike_outlier: theta must be finite and ≥ 0, got {theta!r}")
    if theta <= bbp_threshold(Q):
        return (1.0 + 1.0 / math.sqrt(Q)) ** 2
    t2 = theta * theta
    return (1.0 + t2) * (1.0 / Q + t2) / t2


def spike_for_outlier(x: float, *, Q: float) -> float:
    r"""The spike strength ``θ > θ_c`` whose outlier sits at ``x > λ₊`` (inverse of :func:`spike_outlier`).

    Solves :math:`\theta^4 + (1 + 1/Q - x)\theta^2 + 1/Q = 0` for its larger root.
    """
    _check_q(Q)
    edge = (1.0 + 1.0 / math.sqrt(Q)) ** 2
    if not (math.isfinite(x) and x > edge):
        raise FunnelscopeInputError(f"spike_for_outlier: x must lie above λ₊ = {edge:g}, got {x!r}")
    b = 1.0 + 1.0 / Q - x
    return math.sqrt(0.5 * (-b + math.sqrt(b * b - 4.0 / Q)))


def gaussian_matrix(N: int, M: int, *, seed: Seed = None) -> np.ndarray:
    """I.i.d. standard normal entries: random-like (the ESD of ``WᵀW/N`` is MP with ``σ² = 1``)."""
    _check_shape(N, M, "gaussian_matrix")
    return np.random.default_rng(seed).standard_normal((N, M))


def spiked_matrix(N: int, M: int, *, thetas: Sequence[float], seed: Seed = None) -> np.ndarray:
    r"""Gaussian plus :math:`\sqrt{N}\sum_i \theta_i u_i v_i^\top` with random orthonormal ``u_i``, ``v_i``."""
    _check_shape(N, M, "spiked_matrix")
    strengths = np.asarray(thetas, dtype=np.float64)
    if strengths.ndim != 1 or strengths.size > M or not np.all(np.isfinite(strengths) & (strengths >= 0)):
        raise FunnelscopeInputError(f"spiked_matrix: thetas must be at most M finite values ≥ 0, got {thetas!r}")
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((N, M))
    k = strengths.size
    left, _ = np.linalg.qr(rng.standard_normal((N, k)))
    right, _ = np.linalg.qr(rng.standard_normal((M, k)))
    return noise + math.sqrt(N) * (left * strengths) @ right.T


def pareto_matrix(N: int, M: int, *, mu: float, seed: Seed = None) -> np.ndarray:
    r"""Entries ``±P`` with a random sign and :math:`P(|w| > t) = t^{-\mu}` for ``t ≥ 1`` (tail index ``μ``).

    ``μ < 2``: infinite variance, no MP limit (heavy-tailed); ``2 < μ < 4``: an MP bulk with a power-law tail
    at finite ``N`` (Martin & Mahoney 2021, Table 1).
    """
    _check_shape(N, M, "pareto_matrix")
    if not (math.isfinite(mu) and mu > 0.0):
        raise FunnelscopeInputError(f"pareto_matrix: mu must be finite and > 0, got {mu!r}")
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(N, M))
    return signs * (rng.pareto(mu, size=(N, M)) + 1.0)


def student_t_matrix(N: int, M: int, *, dof: float, seed: Seed = None) -> np.ndarray:
    """I.i.d. Student-t entries with ``dof`` degrees of freedom (tail index ``μ = dof``: ``dof = 3`` has a finite
    variance and a power-law tail in the ESD at finite ``N``)."""
    _check_shape(N, M, "student_t_matrix")
    if not (math.isfinite(dof) and dof > 0.0):
        raise FunnelscopeInputError(f"student_t_matrix: dof must be finite and > 0, got {dof!r}")
    return np.random.default_rng(seed).standard_t(dof, size=(N, M))


def iid_esd(N: int, M: int, *, entries: str = "gaussian", seed: Seed = None) -> np.ndarray:
    """Eigenvalues of ``X = WᵀW/N`` (ascending) for an ``N × M`` matrix of i.i.d. entries: ``"gaussian"`` (the
    MP law), ``"student_t"`` (3 degrees of freedom) or ``"pareto"`` (signed, tail index 1.5: heavy-tailed).
    Synthetic spectra with known shapes, for fits and benchmarks."""
    makers = {
        "gaussian": lambda: gaussian_matrix(N, M, seed=seed),
        "student_t": lambda: student_t_matrix(N, M, dof=3.0, seed=seed),
        "pareto": lambda: pareto_matrix(N, M, mu=1.5, seed=seed),
    }
    if entries not in makers:
        raise FunnelscopeInputError(f"iid_esd: entries must be one of {', '.join(makers)}, got {entries!r}")
    matrix = makers[entries]()
    return np.linalg.eigvalsh(matrix.T @ matrix / N)


def low_rank_matrix(N: int, M: int, *, rank: int, seed: Seed = None) -> np.ndarray:
    """``A @ B`` with standard normal ``A`` (N×rank) and ``B`` (rank×M): ``M − rank`` zero eigenvalues."""
    _check_shape(N, M, "low_rank_matrix")
    if check_int("low_rank_matrix: rank", rank) > M:
        raise FunnelscopeInputError(f"low_rank_matrix: rank must be an integer in [1, M={M}], got {rank!r}")
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, rank)) @ rng.standard_normal((rank, M))


def phase_matrix(phase: str, N: int, M: int, *, seed: Seed = None) -> np.ndarray:
    """A matrix in the given phase, with the defaults that calibrated :mod:`funnelscope.spectra.phases`.

    ================ =================================================================
    phase            matrix
    ================ =================================================================
    random-like      :func:`gaussian_matrix`
    bleeding-out     three spikes with outliers at 1.03, 1.06 and 1.10 ``λ₊`` (just beyond BBP)
    bulk+spikes      three spikes ``θ = 3, 4, 5``
    bulk-decay       :func:`pareto_matrix` with ``μ = 2.5``
    heavy-tailed     :func:`pareto_matrix` with ``μ = 1.5``
    rank-collapse    :func:`low_rank_matrix` of rank ``max(1, M // 10)``
    ================ =================================================================

    Examples
    --------
    >>> phase_matrix("bulk+spikes", 100, 50, seed=0).shape
    (100, 50)
    """
    _check_shape(N, M, "phase_matrix")
    Q = N / M
    edge = (1.0 + 1.0 / math.sqrt(Q)) ** 2
    if phase == RANDOM_LIKE:
        return gaussian_matrix(N, M, seed=seed)
    if phase == BLEEDING_OUT:
        thetas = [spike_for_outlier(edge * factor, Q=Q) for factor in _BLEEDING_OUTLIERS]
        return spiked_matrix(N, M, thetas=thetas, seed=seed)
    if phase == BULK_PLUS_SPIKES:
        return spiked_matrix(N, M, thetas=_STRONG_SPIKES, seed=seed)
    if phase == BULK_DECAY:
        return pareto_matrix(N, M, mu=_BULK_DECAY_MU, seed=seed)
    if phase == HEAVY_TAILED:
        return pareto_matrix(N, M, mu=_HEAVY_TAILED_MU, seed=seed)
    if phase == RANK_COLLAPSE:
        return low_rank_matrix(N, M, rank=max(1, int(M * _RANK_COLLAPSE_SHARE)), seed=seed)
    raise FunnelscopeInputError(f"phase_matrix: unknown phase {phase!r}; expected one of {PHASES}")


def _check_q(Q: float) -> None:
    if not (math.isfinite(Q) and Q >= 1.0):
        raise FunnelscopeInputError(f"Q = N/M must be finite and ≥ 1, got {Q!r}")
