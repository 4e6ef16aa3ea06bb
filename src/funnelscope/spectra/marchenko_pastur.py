r"""The Marchenko–Pastur law and its fit to the bulk of a layer's ESD.

For a matrix ``W`` of shape ``N × M`` (``N ≥ M``, aspect ratio ``Q = N/M ≥ 1``) with i.i.d. entries of mean 0
and variance ``σ²``, the eigenvalues of the correlation matrix

.. math::

    X = \frac{1}{N} W^\top W \in \mathbb{R}^{M \times M}

are distributed, as ``N, M → ∞`` with ``Q`` fixed, according to the Marchenko–Pastur (MP) law

.. math::

    \rho(x) = \frac{Q}{2 \pi \sigma^2 x} \sqrt{(\lambda_+ - x)(x - \lambda_-)}, \qquad
    \lambda_\pm = \sigma^2 \left(1 \pm \frac{1}{\sqrt{Q}}\right)^2,

for ``λ₋ ≤ x ≤ λ₊`` (no point mass at 0 since ``Q ≥ 1``). Its mean is ``σ²``. Eigenvalues of ``X`` well above
the bulk edge ``λ₊`` (spikes) carry the structure that training puts into ``W``; Martin & Mahoney read the
phases of training from how the ESD departs from this law (see :mod:`funnelscope.spectra.phases`).

The largest eigenvalue of a pure-noise ``X`` fluctuates around ``λ₊`` on the Tracy–Widom scale
:func:`tracy_widom_scale`, ``O(N^{-2/3})``, which sets how far above ``λ₊`` an eigenvalue must lie before it is
an outlier rather than the edge of the bulk.

Eigenvalue convention: funnelscope (like WeightWatcher) reports ``λᵢ = σᵢ(W)²``, *not* divided by ``N``;
:func:`fit_marchenko_pastur` takes those and divides by ``N`` itself. Everything it returns is in units of
``X`` (multiply by ``MarchenkoPasturFit.scale = N`` to get back to ``σ(W)²`` units).

References
----------
V. A. Marchenko and L. A. Pastur, "Distribution of eigenvalues for some sets of random matrices",
Mat. Sb. 72(114):4, 507–536, 1967.

F. Benaych-Georges and R. R. Nadakuditi, "The singular values and vectors of low rank perturbations of large
rectangular random matrices", J. Multivariate Anal. 111:120–135, 2012 (where a spike's outlier sits).

C. H. Martin and M. W. Mahoney, "Implicit self-regularization in deep neural networks: evidence from random
matrix theory and implications for learning", JMLR 22(165):1–73, 2021 (Sections 3.1 and 4).

I. M. Johnstone, "On the distribution of the largest eigenvalue in principal components analysis",
Ann. Statist. 29(2):295–327, 2001 (Theorem 1.1: centring and scale of the largest eigenvalue).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from funnelscope.errors import FunnelscopeInputError
from funnelscope.options import check_int

__all__ = [
    "MarchenkoPasturFit",
    "default_rank_tolerance",
    "fit_marchenko_pastur",
    "marchenko_pastur_cdf",
    "marchenko_pastur_edges",
    "marchenko_pastur_pdf",
    "tracy_widom_scale",
]

_FLOAT64_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class MarchenkoPasturFit:
    """The MP law fitted to the bulk of an ESD, in units of ``X = WᵀW/N``.

    Attributes
    ----------
    sigma2 : float
        Estimated entry variance ``σ²`` (the mean of the MP bulk), see :func:`fit_marchenko_pastur`.
    Q : float
        Aspect ratio ``N/M ≥ 1``.
    bulk_min, bulk_max : float
        The MP edges ``λ∓ = σ²(1 ∓ 1/√Q)²``.
    num_spikes : int
        Number of eigenvalues of ``X`` strictly above ``bulk_max``.
    mp_softrank : float
        ``λ₊ / λ_max(X)``: near 1 for a random-like layer, near 0 when a few directions dominate.
    lambda_max : float
        Largest eigenvalue of ``X``.
    num_zero : int
        Eigenvalues at or below the rank tolerance, left out of the fit (rank deficiency).
    scale : float
        The input eigenvalues were divided by ``scale = N``: ``x = λ / scale``.
    """

    sigma2: float
    Q: float
    bulk_min: float
    bulk_max: float
    num_spikes: int
    mp_softrank: float
    lambda_max: float
    num_zero: int
    scale: float


def marchenko_pastur_edges(sigma2: float, Q: float) -> tuple[float, float]:
    r"""Edges of the MP bulk, :math:`\lambda_\pm = \sigma^2 (1 \pm 1/\sqrt{Q})^2`.

    Parameters
    ----------
    sigma2 : float
        Entry variance ``σ² > 0``.
    Q : float
        Aspect ratio ``N/M ≥ 1``.

    Returns
    -------
    (float, float)
        ``(λ₋, λ₊)``, in units of ``X = WᵀW/N``.

    Raises
    ------
    FunnelscopeInputError
        If ``σ² ≤ 0`` or ``Q < 1`` or either is not finite.

    Examples
    --------
    >>> marchenko_pastur_edges(1.0, 4.0)
    (0.25, 2.25)
    """
    _check_params(sigma2, Q, "marchenko_pastur_edges")
    root = 1.0 / math.sqrt(Q)
    return sigma2 * (1.0 - root) ** 2, sigma2 * (1.0 + root) ** 2


def marchenko_pastur_pdf(x: Any, *, sigma2: float, Q: float) -> np.ndarray:
    r"""Density of the MP law (Marchenko & Pastur 1967; Martin & Mahoney 2021, Eq. 5).

    .. math::

        \rho(x) = \frac{Q}{2 \pi \sigma^2 x} \sqrt{(\lambda_+ - x)(x - \lambda_-)}
        \quad \text{for } \lambda_- < x < \lambda_+, \text{ else } 0.

    Parameters
    ----------
    x : array_like
        Points, in units of ``X = WᵀW/N``.
    sigma2 : float
        Entry variance ``σ² > 0``.
    Q : float
        Aspect ratio ``N/M ≥ 1``. At ``Q = 1`` the density diverges like ``x^{-1/2}`` at 0 (integrable).

    Returns
    -------
    numpy.ndarray
        ``ρ(x)``, float64, the shape of ``x``.

    Examples
    --------
    >>> round(float(marchenko_pastur_pdf(1.0, sigma2=1.0, Q=4.0)), 6)  # 4 · sqrt(1.25 · 0.75) / (2π)
    0.616404
    """
    _check_params(sigma2, Q, "marchenko_pastur_pdf")
    lo, hi = marchenko_pastur_edges(sigma2, Q)
    x = np.asarray(x, dtype=np.float64)
    inside = (x > lo) & (x < hi)
    safe = np.where(inside, x, 0.5 * (lo + hi))
    density = Q * np.sqrt((hi - safe) * (safe - lo)) / (2.0 * math.pi * sigma2 * safe)
    return np.where(inside, density, 0.0)


def marchenko_pastur_cdf(x: Any, *, sigma2: float, Q: float) -> np.ndarray:
    r"""Cumulative distribution of the MP law, in closed form.

    With :math:`a = \lambda_-`, :math:`b = \lambda_+`, :math:`r(t) = \sqrt{(b - t)(t - a)}` and

    .. math::

        I(t) = r(t) + \frac{a + b}{2} \arcsin\frac{2t - a - b}{b - a}
               - \sqrt{ab}\, \arcsin\frac{(a + b)t - 2ab}{t (b - a)},

    an antiderivative of :math:`r(t)/t`, the CDF is :math:`F(x) = Q\,(I(x) - I(a)) / (2\pi\sigma^2)` on
    ``[a, b]`` (0 below, 1 above). :math:`I(b) - I(a) = \pi((a+b)/2 - \sqrt{ab}) = 2\pi\sigma^2/Q`.

    Parameters
    ----------
    x : array_like
        Points, in units of ``X = WᵀW/N``.
    sigma2 : float
        Entry variance ``σ² > 0``.
    Q : float
        Aspect ratio ``N/M ≥ 1``.

    Returns
    -------
    numpy.ndarray
        ``F(x)`` in ``[0, 1]``, float64, the shape of ``x``.

    Examples
    --------
    >>> round(float(marchenko_pastur_cdf(1.0, sigma2=1.0, Q=1.0)), 6)  # 1/3 + √3/(2π)
    0.608998
    """
    _check_params(sigma2, Q, "marchenko_pastur_cdf")
    a, b = marchenko_pastur_edges(sigma2, Q)
    x = np.asarray(x, dtype=np.float64)
    t = np.clip(x, a, b)
    width = b - a
    root_ab = math.sqrt(a * b)
    value = np.sqrt(np.clip((b - t) * (t - a), 0.0, None)) + 0.5 * (a + b) * np.arcsin(
        np.clip((2.0 * t - a - b) / width, -1.0, 1.0)
    )
    if root_ab > 0.0:  # at Q = 1, a = 0 and the last term vanishes (and would divide by t = 0)
        value = value - root_ab * np.arcsin(np.clip(((a + b) * t - 2.0 * a * b) / (t * width), -1.0, 1.0))
    start = -0.25 * math.pi * (a + b) + 0.5 * math.pi * root_ab  # I(a)
    cdf = Q * (value - start) / (2.0 * math.pi * sigma2)
    return np.clip(cdf, 0.0, 1.0)


def tracy_widom_scale(*, sigma2: float, N: int, M: int) -> float:
    r"""Scale of the fluctuations of the largest eigenvalue of a pure-noise ``X = WᵀW/N`` around ``λ₊``.

    Johnstone (2001, Theorem 1.1): for Gaussian ``W`` the largest eigenvalue of ``WᵀW`` is
    :math:`\mu + s\,\mathrm{TW}_1` with :math:`\mu = (\sqrt{N-1} + \sqrt{M})^2` and

    .. math::

        s = (\sqrt{N-1} + \sqrt{M}) \left(\frac{1}{\sqrt{N-1}} + \frac{1}{\sqrt{M}}\right)^{1/3};

    this returns :math:`\sigma^2 s / N`, of order :math:`N^{-2/3}` (``TW₁`` has mean −1.21, sd 1.27 and
    99th percentile 2.02, so the largest noise eigenvalue lies below ``λ₊ + 2 · scale`` 99% of the time).

    Parameters
    ----------
    sigma2 : float
        Entry variance ``σ² > 0``.
    N, M : int
        Matrix dimensions, ``N ≥ M ≥ 1`` (``N ≥ 2``).

    Returns
    -------
    float
        The scale, in units of ``X``.
    """
    _check_shape(N, M, "tracy_widom_scale")
    if N < 2:
        raise FunnelscopeInputError(f"tracy_widom_scale: N must be at least 2, got {N}")
    _check_params(sigma2, N / M, "tracy_widom_scale")
    root_n, root_m = math.sqrt(N - 1), math.sqrt(M)
    return sigma2 * (root_n + root_m) * (1.0 / root_n + 1.0 / root_m) ** (1.0 / 3.0) / N


def default_rank_tolerance(eigenvalues: Any, *, M: int) -> float:
    r"""Eigenvalues at or below this count as zero: :math:`\lambda_{\max} M \varepsilon_{64}`.

    The eigenvalues ``λ = σ(W)²`` are those of the ``M × M`` Gram matrix ``WᵀW``, and this is
    ``numpy.linalg.matrix_rank``'s tolerance for that matrix. It lies above the rounding noise of a float64
    Gram (about :math:`10^{-16}\lambda_{\max}`) and above the zeros of an exactly rank-deficient product
    rounded to float32 (:math:`\sigma \approx \sigma_{\max}\varepsilon_{32}`, so
    :math:`\lambda/\lambda_{\max} \approx 10^{-14}`), yet far below the bulk of even very heavy-tailed
    spectra. (The ``σ``-space rule :math:`\sigma \le \sigma_{\max} N \varepsilon_{32}` is too coarse: on
    Pareto ``μ = 1.5`` matrices of size 2000×1000 it called up to 45% of the spectrum zero.)

    Parameters
    ----------
    eigenvalues : array_like
        ``λ = σ(W)²`` (any units: the tolerance is relative to their maximum).
    M : int
        The smaller dimension of the matrix (the size of the Gram).

    Returns
    -------
    float
        The tolerance, in the units of ``eigenvalues``.
    """
    values = _as_eigenvalues(eigenvalues, "default_rank_tolerance")
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 1:
        raise FunnelscopeInputError(f"default_rank_tolerance: M must be a positive integer, got {M!r}")
    return float(values.max()) * M * _FLOAT64_EPS


def fit_marchenko_pastur(eigenvalues: Any, *, N: int, M: int, rank_tol: float | None = None) -> MarchenkoPasturFit:
    r"""Fit the MP law to the bulk of an ESD and count the spikes above it.

    The input is WeightWatcher-convention eigenvalues ``λ = σ(W)²``; the fit works on ``x = λ / N``, the
    eigenvalues of ``X = WᵀW/N``. Eigenvalues at or below ``rank_tol`` (zeros from rank deficiency) are
    left out. The entry variance is the fixed point of the truncated mean

    .. math::

        \sigma^2_{k+1} = \operatorname{mean}\{x_i : x_i \le \sigma^2_k (1 + 1/\sqrt{Q})^2\},
        \qquad \sigma^2_0 = \operatorname{mean}\{x_i\},

    iterated until the set stops changing. The mean of the MP law is ``σ²`` and its support ends at
    ``λ₊ = σ²(1 + 1/√Q)²``, so on a pure MP spectrum ``σ²`` is a fixed point. Spikes inflate
    ``σ²₀``; the iteration decreases monotonically from there (the truncated mean is non-decreasing in the
    threshold) and drops them, stopping at the largest fixed point, which is the bulk's ``σ²`` (the MP mass
    near the edge vanishes like ``(λ₊ − x)^{3/2}``, too little to pull the fixed point further down).
    It needs no bandwidth or grid, unlike WeightWatcher's brute-force fit of a kernel density
    (``fit_density_with_range``). One bias remains: a spike of strength ``θ`` adds ``θ²σ²`` to the trace but
    its outlier sits at ``(θ² + 1 + 1/Q + 1/(Qθ²))σ²`` (Benaych-Georges & Nadakuditi 2012), so each spike
    takes about ``(1 + 1/Q)σ²`` of trace out of the bulk and ``k`` spikes make ``σ²`` low by up to
    ``k(1 + 1/Q)/M`` (measured 0.3–1.1% for four spikes at 1000×500 and 600×600).

    Parameters
    ----------
    eigenvalues : array_like
        ``λ = σ(W)²``, not divided by ``N``; one per singular value (``M`` of them, or ``rf · M`` pooled over
        the kernel positions of a convolution). Tiny negative rounding noise is treated as zero.
    N, M : int
        The matrix dimensions, ``N ≥ M`` (``N = max(rows, cols)``).
    rank_tol : float, optional
        Eigenvalues (in ``λ`` units) at or below it are zeros from rank deficiency; default
        :func:`default_rank_tolerance`.

    Returns
    -------
    MarchenkoPasturFit
        In units of ``X`` (``scale = N``).

    Raises
    ------
    FunnelscopeInputError
        If the eigenvalues are empty, not 1-D, not finite, clearly negative or all zero; if ``N < M``; if
        ``rank_tol`` is negative or not finite.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((1000, 500)) * 0.5  # σ² = 0.25, Q = 2
    >>> fit = fit_marchenko_pastur(np.linalg.svd(w, compute_uv=False) ** 2, N=1000, M=500)
    >>> round(fit.sigma2, 2), fit.num_spikes
    (0.25, 0)
    """
    _check_shape(N, M, "fit_marchenko_pastur")
    values = _as_eigenvalues(eigenvalues, "fit_marchenko_pastur")
    tol = _resolve_rank_tol(values, M, rank_tol, "fit_marchenko_pastur")
    Q = N / M
    x = np.sort(values[values > tol]) / N
    if x.size == 0:
        raise FunnelscopeInputError(
            f"fit_marchenko_pastur: all {values.size} eigenvalues are at or below the rank tolerance {tol:g}"
        )
    sigma2 = _bulk_variance(x, Q)
    bulk_min, bulk_max = marchenko_pastur_edges(sigma2, Q)
    lambda_max = float(x[-1])
    return MarchenkoPasturFit(
        sigma2=sigma2,
        Q=Q,
        bulk_min=bulk_min,
        bulk_max=bulk_max,
        num_spikes=int(x.size - np.searchsorted(x, bulk_max, side="right")),
        mp_softrank=bulk_max / lambda_max,
        lambda_max=lambda_max,
        num_zero=int(values.size - x.size),
        scale=float(N),
    )


def _bulk_variance(x: np.ndarray, Q: float) -> float:
    """Fixed point of the truncated mean (see :func:`fit_marchenko_pastur`); ``x`` sorted, positive."""
    edge_factor = (1.0 + 1.0 / math.sqrt(Q)) ** 2
    prefix = np.cumsum(x)
    count = x.size
    sigma2 = float(prefix[-1] / count)
    while True:  # ``count`` strictly decreases on every pass but the last: at most x.size passes
        inside = int(np.searchsorted(x, sigma2 * edge_factor, side="right"))
        if inside == count:
            return sigma2
        count = inside  # never 0: the smallest value is at most any mean, and edge_factor ≥ 1
        sigma2 = float(prefix[count - 1] / count)


def _as_eigenvalues(eigenvalues: Any, where: str) -> np.ndarray:
    if hasattr(eigenvalues, "detach"):  # a torch tensor, possibly on an accelerator
        eigenvalues = eigenvalues.detach().cpu().numpy()
    values = np.asarray(eigenvalues, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise FunnelscopeInputError(f"{where}: expected a non-empty 1-D array, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise FunnelscopeInputError(f"{where}: eigenvalues must be finite")
    top = float(values.max())
    if values.min() < -1e-8 * max(top, 0.0) or top < 0.0:
        raise FunnelscopeInputError(
            f"{where}: eigenvalues of WᵀW cannot be negative, got {values.min():g} (largest {top:g})"
        )
    return np.clip(values, 0.0, None)


def _resolve_rank_tol(values: np.ndarray, M: int, rank_tol: float | None, where: str) -> float:
    if rank_tol is None:
        return default_rank_tolerance(values, M=M)
    if not (math.isfinite(rank_tol) and rank_tol >= 0.0):
        raise FunnelscopeInputError(f"{where}: rank_tol must be finite and ≥ 0, got {rank_tol!r}")
    return float(rank_tol)


def _check_shape(N: int, M: int, where: str) -> None:
    for name, value in (("N", N), ("M", M)):
        check_int(f"{where}: {name}", value)
    if N < M:
        raise FunnelscopeInputError(f"{where}: need N ≥ M (N = max(rows, cols)), got N={N}, M={M}")


def _check_params(sigma2: float, Q: float, where: str) -> None:
    if not (math.isfinite(sigma2) and sigma2 > 0.0):
        raise FunnelscopeInputError(f"{where}: sigma2 must be finite and > 0, got {sigma2!r}")
    if not (math.isfinite(Q) and Q >= 1.0):
        raise FunnelscopeInputError(f"{where}: Q = N/M must be finite and ≥ 1, got {Q!r}")
