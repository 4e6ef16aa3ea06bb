"""Fixing "fingers": spuriously large power-law exponents from a few outlying top eigenvalues.

A handful of eigenvalues far above the rest of an ESD's tail (finite-size "fingers", WeightWatcher issue #102)
can drag the KS-optimal :math:`x_{\\min}` into them, and the fit then reports a huge α on a tail of a few values.
WeightWatcher 0.7.7 offers two repairs, reproduced here with :func:`~funnelscope.spectra.powerlaw.fit_powerlaw`
as the one fitter:

``xmin_peak`` (:func:`fit_xmin_peak`)
    Cap :math:`x_{\\min}` near the peak of the ESD. The peak ``p`` is the left edge of the fullest of 100 equal
    bins of :math:`\\log_{10}\\lambda` (eigenvalues > 1e-5); :math:`x_{\\min}` is searched, by the usual KS rule,
    among the eigenvalues in :math:`[\\log_{10}(0.95\\,p),\\ x_{\\max}^{\\mathrm{search}}]` with
    :math:`x_{\\max}^{\\mathrm{search}}` = ``xmin_max`` (default :math:`1.5\\,p`), the largest of them left out.
    Both details are WeightWatcher's as it runs: it passes :math:`\\log_{10}(0.95\\,p)`, not :math:`0.95\\,p`, as
    the lower end of the range (for :math:`p \\lesssim 1.05` no bound at all, elsewhere a bound far below ``p``),
    and ``powerlaw.Fit`` drops the largest candidate of a range (meant to keep two points in the tail). In effect
    the search is capped at :math:`1.5\\,p` from above.

``clip_xmax`` (:func:`fit_clipped_powerlaw`)
    Fit all values (α₀, ``raw_alpha``), then refit without the ``k`` largest for ``k = 2, …, max_fingers − 1``
    (WeightWatcher's range: it never tries ``k = 1``); the first ``k`` whose α is below ``α₀ − finger_thresh`` is
    taken, and the search stops early at the first α ≤ 2. ``num_fingers`` is that ``k``, the number of values
    clipped (WeightWatcher reports ``k − 1``); 0 when no clip lowers α enough.

Reference: C. H. Martin, M. W. Mahoney, WeightWatcher 0.7.7, ``WeightWatcher.fit_powerlaw`` and
``RMT_Util.fit_clipped_powerlaw`` (https://github.com/CalculatedContent/WeightWatcher).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from funnelscope.errors import FunnelscopeInputError
from funnelscope.spectra.powerlaw import PowerLawFit, fit_powerlaw

__all__ = ["FIX_FINGERS", "ClippedFit", "esd_peak", "fit_clipped_powerlaw", "fit_xmin_peak", "xmin_peak_bounds"]

FIX_FINGERS = ("xmin_peak", "clip_xmax")
_MIN_VALUE = 1e-5  # WeightWatcher's EVALS_THRESH: eigenvalues at or below it are left out of every fit
_PEAK_BINS = 100
_XMIN_MAX_FACTOR = 1.5
_STOP_ALPHA = 2.0  # fit_clipped_powerlaw's min_alpha


@dataclass(frozen=True)
class ClippedFit:
    """The result of :func:`fit_clipped_powerlaw`.

    Attributes:
        fit: the fit chosen (on the values without the ``num_fingers`` largest).
        num_fingers: how many of the largest values were clipped (0: none).
        raw_fit: the fit of all values.
    """

    fit: PowerLawFit
    num_fingers: int
    raw_fit: PowerLawFit


def esd_peak(eigenvalues: np.ndarray) -> float:
    """The peak of the ESD on a log scale: ``10**e`` with ``e`` the left edge of the fullest of 100 equal bins
    of ``log10 λ`` over the eigenvalues above 1e-5 (the first such bin on ties), as WeightWatcher finds it.

    Raises:
        FunnelscopeInputError: no eigenvalue above 1e-5.
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    positive = values[values > _MIN_VALUE]
    if positive.size == 0:
        raise FunnelscopeInputError(f"no eigenvalue above {_MIN_VALUE}: the ESD has no peak")
    counts, edges = np.histogram(np.log10(positive), bins=_PEAK_BINS)
    return float(10.0 ** edges[int(np.argmax(counts))])


def fit_xmin_peak(eigenvalues: np.ndarray, *, xmin_max: float | None = None) -> PowerLawFit:
    """The power-law fit with :math:`x_{\\min}` capped near the ESD's peak (WeightWatcher's ``xmin_peak``).

    Args:
        eigenvalues: the layer's eigenvalues ``λ = σ²``.
        xmin_max: the largest :math:`x_{\\min}` searched (in the eigenvalues' units); default ``1.5 ·`` the
            peak (:func:`esd_peak`).

    Returns:
        :class:`~funnelscope.spectra.powerlaw.PowerLawFit` over the candidates of the module docstring.

    Raises:
        FunnelscopeInputError: fewer than two distinct eigenvalues in the range (for example an ``xmin_max``
            below the ESD), or those of :func:`~funnelscope.spectra.powerlaw.fit_powerlaw`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> values = np.concatenate([rng.pareto(2.0, 500) + 1.0, [1e4, 2e4]])  # two fingers
        >>> fit = fit_xmin_peak(values)
        >>> fit.xmin <= 1.5 * esd_peak(values)
        True
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    lower, upper = xmin_peak_bounds(values, xmin_max=xmin_max)
    x = values[values > _MIN_VALUE]
    candidates = np.unique(x[(x >= lower) & (x <= upper)])
    if candidates.size < 2:
        raise FunnelscopeInputError(
            f"xmin_peak: fewer than 2 distinct eigenvalues in [{lower:.4g}, {upper:.4g}] (the ESD's peak "
            f"{esd_peak(values):.4g})"
        )
    return fit_powerlaw(values, xmin=(lower if lower > 0 else None, float(candidates[-2])))


def xmin_peak_bounds(eigenvalues: np.ndarray, *, xmin_max: float | None = None) -> tuple[float, float]:
    """The range ``[log10(0.95 p), xmin_max or 1.5 p]`` that ``xmin_peak`` searches (``p``: :func:`esd_peak`)."""
    peak = esd_peak(eigenvalues)
    return float(np.log10(0.95 * peak)), _XMIN_MAX_FACTOR * peak if xmin_max is None else float(xmin_max)


def fit_clipped_powerlaw(
    eigenvalues: np.ndarray, *, max_fingers: int = 10, finger_thresh: float = 1.0
) -> ClippedFit:
    """The power-law fit after clipping the largest eigenvalues (WeightWatcher's ``clip_xmax``).

    Args:
        eigenvalues: the layer's eigenvalues ``λ = σ²``.
        max_fingers: clips of ``k = 2, …, max_fingers − 1`` values are tried (WeightWatcher's loop).
        finger_thresh: a clip is taken when it lowers α by more than this.

    Returns:
        :class:`ClippedFit`.

    Raises:
        FunnelscopeInputError: those of :func:`~funnelscope.spectra.powerlaw.fit_powerlaw` on all values.

    Example:
        >>> values = np.random.default_rng(1).pareto(2.0, 300) + 1.0   # a clean tail: no clip helps
        >>> clipped = fit_clipped_powerlaw(values)
        >>> clipped.num_fingers, clipped.fit == clipped.raw_fit
        (0, True)
    """
    x = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    x = x[x > _MIN_VALUE]
    raw = fit_powerlaw(x)
    for k in range(2, max_fingers):
        if x.size - k < 2:
            break
        try:
            fit = fit_powerlaw(x[:-k])
        except FunnelscopeInputError:
            break
        if fit.alpha + finger_thresh < raw.alpha:
            return ClippedFit(fit, k, raw)
        if fit.alpha <= _STOP_ALPHA:
            break
    return ClippedFit(raw, 0, raw)
