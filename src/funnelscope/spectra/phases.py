r"""The 5+1 phases of training of Martin & Mahoney (2021), assigned to a layer's ESD by a documented rule.

Martin & Mahoney describe six shapes a layer's ESD takes relative to the Marchenko–Pastur (MP) law as training
imposes more and more correlation on ``W`` (JMLR 22(165), 2021, Section 5, "5+1 Phases of Regularized
Training"): *Random-like* (the ESD is MP), *Bleeding-out* (MP, but some eigenmass just beyond the bulk edge
``λ₊``), *Bulk+Spikes* (MP plus a few spikes well above ``λ₊``, as in the spiked-covariance model),
*Bulk-decay* (the MP bulk edge erodes into heavy-tailed eigenmass beyond ``λ₊``), *Heavy-tailed* (the ESD is
better described by heavy-tailed than by Gaussian random-matrix theory), and *Rank-collapse* (a large mass at
``λ = 0``, over-regularisation). The paper defines them by eye; funnelscope assigns one by the rule below, on
the eigenvalues of ``X = WᵀW/N`` (``x = λ/N`` with ``λ = σ(W)²``, see
:mod:`funnelscope.spectra.marchenko_pastur`).

Quantities. ``zero_fraction``: the share of eigenvalues at or below the rank tolerance
(:func:`~funnelscope.spectra.marchenko_pastur.default_rank_tolerance`). ``λ₊``: the MP edge of
:func:`~funnelscope.spectra.marchenko_pastur.fit_marchenko_pastur`. ``s``: the Tracy–Widom scale of the
largest noise eigenvalue (:func:`~funnelscope.spectra.marchenko_pastur.tracy_widom_scale`). *Outliers*: the
eigenvalues above ``λ₊ + 4 s``; ``outlier_fraction``: their share of the non-zero eigenvalues;
``num_near_edge``: the outliers below ``1.5 λ₊``. ``top_ratio = λ_max / λ₊``. ``α``: the power-law exponent
of the tail (:func:`funnelscope.fit_powerlaw`).

The rule, first match wins:

==== ============= ========================================== ==================================================
step phase         condition                                  reading of Martin & Mahoney (2021)
==== ============= ========================================== ==================================================
1    rank-collapse ``zero_fraction ≥ 0.5``                    a large mass at ``λ = 0``: at least half the rank
                                                              is lost
2    heavy-tailed  ``outlier_fraction ≥ 0.1`` and ``α ≤ 4``   no MP bulk describes the ESD, and its tail is a
                                                              power law with ``α ≲ 4`` (heavy-tailed RMT)
3    bulk-decay    ``outlier_fraction ≥ 0.01`` and            the bulk edge decays into a continuum of
                   ``num_near_edge ≥ 4``                      eigenvalues: more than a few spikes, and no gap
4    bulk+spikes   ``top_ratio ≥ 1.5`` (and an outlier)       spikes, the largest well separated from an MP bulk
                                                              (spiked covariance)
5    bleeding-out  an outlier                                 eigenmass just beyond ``λ₊``, all below ``1.5 λ₊``
6    random-like   no outlier                                 the ESD is MP up to Tracy–Widom fluctuations
==== ============= ========================================== ==================================================

A ``nan`` ``α`` (no power-law fit) never satisfies step 2.

Where the constants come from: measured on the matrices of :func:`funnelscope.spectra.synthetic.phase_matrix`
at 1000×500, 2000×1000 and 512×512 (20 seeds each) and 300×100, 256×256, 600×300, 4096×1024 (5 seeds each),
eigenvalues of the float64 Gram, ``α`` from :func:`funnelscope.fit_powerlaw`. Each threshold sits between the
measured ranges of the phases it separates (ranges over the three main sizes; the others agree unless noted):

- ``4 s`` (``_TW_SIGMAS``): the top eigenvalue of Gaussian matrices lay at most 2.0 ``s`` above the fitted
  ``λ₊`` (the ``TW₁`` law puts about 2·10⁻⁴ of its mass beyond 4); near-threshold spikes at least 7.8 ``s``.
- ``0.5`` (``_RANK_COLLAPSE_FRACTION``): a convention (half the rank lost); full-rank builders measured 0, the
  rank-``M/10`` products 0.9.
- ``0.1`` (``_HEAVY_TAILED_FRACTION``): Pareto entries with ``μ = 1.5`` (infinite variance, no MP limit) had
  ``outlier_fraction`` 0.19–0.31, ``μ = 2.5`` at most 0.05. ``μ = 2``, where the variance becomes infinite,
  falls on the boundary (0.08–0.15, up to 0.2 at 300×100), as it should.
- ``4`` (``_HEAVY_TAILED_ALPHA``): the paper's bound for the heavy-tailed classes (``μ < 4``). ``μ = 1.5``
  matrices fit ``α`` 1.7–2.0; planted spikes fit 3.4–4.7 (2.6 at 300×100) and are kept out by the fraction.
- ``0.01`` and ``4`` (``_BULK_DECAY_FRACTION``, ``_BULK_DECAY_NEAR_EDGE``): ``μ = 2.5`` matrices had
  ``outlier_fraction`` ≥ 0.0195 and ``num_near_edge`` ≥ 6 (4 at 256×256); three planted spikes give a
  fraction up to 0.01 at 600×300 but ``num_near_edge`` ≤ 3.
- ``1.5`` (``_SPIKE_GAP``): strong spikes (``θ = 3, 4, 5``) gave ``top_ratio`` ≥ 6.6; spikes just beyond the
  BBP threshold at most 1.17 (1.22 at 256×256).

Limits. Pareto matrices with ``μ = 3`` at these sizes mostly look like bleeding-out or bulk+spikes (1 to 8
outliers, at most 1.6% of the spectrum; bulk-decay in 13 of 60 runs): their tail shows only at larger ``N``
(2 of 5 runs at 4096×1024), so the bulk-decay example uses ``μ = 2.5``. At ``M = 100`` near-threshold spikes
can hide in the Tracy–Widom margin (1 of 5 runs random-like) and ``μ = 2.5`` is not resolved (1 of 5 runs
bulk-decay); below ``M ≈ 250`` the rule is coarse.

References
----------
C. H. Martin and M. W. Mahoney, "Implicit self-regularization in deep neural networks: evidence from random
matrix theory and implications for learning", JMLR 22(165):1–73, 2021.

J. Baik, G. Ben Arous and S. Péché, "Phase transition of the largest eigenvalue for nonnull complex sample
covariance matrices", Ann. Probab. 33(5):1643–1697, 2005 (the BBP threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from funnelscope.errors import FunnelscopeInputError
from funnelscope.spectra.marchenko_pastur import (
    MarchenkoPasturFit,
    _as_eigenvalues,
    _check_shape,
    _resolve_rank_tol,
    fit_marchenko_pastur,
    tracy_widom_scale,
)

__all__ = [
    "BLEEDING_OUT",
    "BULK_DECAY",
    "BULK_PLUS_SPIKES",
    "HEAVY_TAILED",
    "PHASES",
    "RANDOM_LIKE",
    "RANK_COLLAPSE",
    "PhaseEvidence",
    "classify_phase",
    "phase_evidence",
]

RANDOM_LIKE = "random-like"
BLEEDING_OUT = "bleeding-out"
BULK_PLUS_SPIKES = "bulk+spikes"
BULK_DECAY = "bulk-decay"
HEAVY_TAILED = "heavy-tailed"
RANK_COLLAPSE = "rank-collapse"
#: The phases in the paper's order, from least to most implicitly regularised, then rank collapse.
PHASES = (RANDOM_LIKE, BLEEDING_OUT, BULK_PLUS_SPIKES, BULK_DECAY, HEAVY_TAILED, RANK_COLLAPSE)

_TW_SIGMAS = 4.0
_RANK_COLLAPSE_FRACTION = 0.5
_HEAVY_TAILED_FRACTION = 0.1
_HEAVY_TAILED_ALPHA = 4.0
_BULK_DECAY_FRACTION = 0.01
_BULK_DECAY_NEAR_EDGE = 4
_SPIKE_GAP = 1.5


@dataclass(frozen=True)
class PhaseEvidence:
    """The quantities the phase rule reads, and the phase it assigns (see the module docstring).

    Attributes
    ----------
    phase : str
        One of :data:`PHASES`.
    zero_fraction : float
        Share of the eigenvalues at or below the rank tolerance.
    outlier_edge : float
        ``λ₊ + 4 s`` in units of ``X = WᵀW/N`` (``nan`` when rank collapse made the MP fit moot).
    num_outliers : int
        Eigenvalues of ``X`` above ``outlier_edge``.
    num_near_edge : int
        Outliers below ``1.5 λ₊``: the eigenmass just past the edge.
    outlier_fraction : float
        ``num_outliers`` over the number of non-zero eigenvalues.
    top_ratio : float
        ``λ_max / λ₊``.
    alpha : float
        The power-law exponent that was passed in.
    mp_fit : MarchenkoPasturFit or None
        The MP fit used (``None`` when rank collapse was decided first and none was given).
    """

    phase: str
    zero_fraction: float
    outlier_edge: float
    num_outliers: int
    num_near_edge: int
    outlier_fraction: float
    top_ratio: float
    alpha: float
    mp_fit: MarchenkoPasturFit | None


def phase_evidence(
    eigenvalues: Any,
    *,
    N: int,
    M: int,
    alpha: float,
    mp_fit: MarchenkoPasturFit | None = None,
    rank_tol: float | None = None,
) -> PhaseEvidence:
    """Measure what the phase rule needs and apply it; :func:`classify_phase` returns only the phase.

    Parameters
    ----------
    eigenvalues : array_like
        ``λ = σ(W)²`` (not divided by ``N``), e.g. from :func:`funnelscope.spectra.eigen.gram_eigenvalues`.
    N, M : int
        The matrix dimensions, ``N ≥ M``, ``N ≥ 2``.
    alpha : float
        Power-law exponent of the same eigenvalues (``fit_powerlaw(eigenvalues).alpha``); ``nan`` if there is
        no fit.
    mp_fit : MarchenkoPasturFit, optional
        A fit of the same eigenvalues with the same ``N`` and ``M``; computed when not given.
    rank_tol : float, optional
        Eigenvalues at or below it (``λ`` units) are zeros; default
        :func:`~funnelscope.spectra.marchenko_pastur.default_rank_tolerance`.

    Returns
    -------
    PhaseEvidence

    Raises
    ------
    FunnelscopeInputError
        On bad eigenvalues, shape, ``alpha`` (must be > 1 or nan), ``rank_tol``, or an ``mp_fit`` made for
        other dimensions.
    """
    _check_shape(N, M, "classify_phase")
    if N < 2:
        raise FunnelscopeInputError(f"classify_phase: N must be at least 2, got {N}")
    values = _as_eigenvalues(eigenvalues, "classify_phase")
    alpha = _check_alpha(alpha)
    tol = _resolve_rank_tol(values, M, rank_tol, "classify_phase")
    if mp_fit is not None and not (mp_fit.scale == N and math.isclose(mp_fit.Q, N / M)):
        raise FunnelscopeInputError(
            f"classify_phase: mp_fit was made for N={mp_fit.scale:g}, Q={mp_fit.Q:g}, not N={N}, M={M}"
        )
    nonzero = np.sort(values[values > tol]) / N
    zero_fraction = 1.0 - nonzero.size / values.size
    if zero_fraction >= _RANK_COLLAPSE_FRACTION:
        return PhaseEvidence(RANK_COLLAPSE, zero_fraction, math.nan, 0, 0, math.nan, math.nan, alpha, mp_fit)
    if mp_fit is None:
        mp_fit = fit_marchenko_pastur(values, N=N, M=M, rank_tol=tol)
    edge = mp_fit.bulk_max + _TW_SIGMAS * tracy_widom_scale(sigma2=mp_fit.sigma2, N=N, M=M)
    first_outlier = int(np.searchsorted(nonzero, edge, side="right"))
    num_outliers = nonzero.size - first_outlier
    gap = _SPIKE_GAP * mp_fit.bulk_max
    num_near_edge = max(0, int(np.searchsorted(nonzero, gap, side="left")) - first_outlier)
    outlier_fraction = num_outliers / nonzero.size
    top_ratio = float(nonzero[-1]) / mp_fit.bulk_max
    if outlier_fraction >= _HEAVY_TAILED_FRACTION and alpha <= _HEAVY_TAILED_ALPHA:
        phase = HEAVY_TAILED
    elif outlier_fraction >= _BULK_DECAY_FRACTION and num_near_edge >= _BULK_DECAY_NEAR_EDGE:
        phase = BULK_DECAY
    elif num_outliers > 0 and top_ratio >= _SPIKE_GAP:
        phase = BULK_PLUS_SPIKES
    elif num_outliers > 0:
        phase = BLEEDING_OUT
    else:
        phase = RANDOM_LIKE
    return PhaseEvidence(
        phase, zero_fraction, edge, num_outliers, num_near_edge, outlier_fraction, top_ratio, alpha, mp_fit
    )


def classify_phase(
    eigenvalues: Any,
    *,
    N: int,
    M: int,
    alpha: float,
    mp_fit: MarchenkoPasturFit | None = None,
    rank_tol: float | None = None,
) -> str:
    """The phase of training of one layer's ESD, by the rule in the module docstring.

    Parameters
    ----------
    eigenvalues : array_like
        ``λ = σ(W)²`` (not divided by ``N``).
    N, M : int
        The matrix dimensions, ``N ≥ M``, ``N ≥ 2``.
    alpha : float
        Power-law exponent of the same eigenvalues (``nan`` if there is no fit).
    mp_fit : MarchenkoPasturFit, optional
        A fit of the same eigenvalues with the same ``N`` and ``M``; computed when not given.
    rank_tol : float, optional
        Eigenvalues at or below it (``λ`` units) are zeros; default ``λ_max M ε₆₄``.

    Returns
    -------
    str
        One of :data:`PHASES`.

    Raises
    ------
    FunnelscopeInputError
        As :func:`phase_evidence`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> lam = np.linalg.svd(rng.standard_normal((1000, 500)), compute_uv=False) ** 2
    >>> classify_phase(lam, N=1000, M=500, alpha=8.0)
    'random-like'
    """
    return phase_evidence(eigenvalues, N=N, M=M, alpha=alpha, mp_fit=mp_fit, rank_tol=rank_tol).phase


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise FunnelscopeInputError(f"classify_phase: alpha must be a number, got {alpha!r}")
    alpha = float(alpha)
    if not (math.isnan(alpha) or alpha > 1.0):
        raise FunnelscopeInputError(f"classify_phase: alpha must be > 1 (or nan for no fit), got {alpha!r}")
    return alpha
