"""The truncated power law :math:`p(x) \\propto x^{-\\alpha} e^{-\\Lambda x}` on :math:`[x_{\\min}, x_{\\max})`.

Clauset, Shalizi & Newman, "Power-law distributions in empirical data", SIAM Review 51(4), 2009, Table 1 (the
"power law with cutoff"). With :math:`u = \\ln(x/x_{\\min}) \\in [0, c)`, :math:`c = \\ln(x_{\\max}/x_{\\min})`
(:math:`c = \\infty` without an upper end), :math:`L = \\Lambda x_{\\min}` and :math:`s = 1 - \\alpha`, the law of
:math:`u` is an exponential family in :math:`(\\alpha, L)`:

.. math::

    g(u) = \\frac{e^{h(u)}}{\\tilde Z}, \\quad h(u) = s\\,u - L\\,(e^u - 1), \\quad
    \\tilde Z(\\alpha, L) = \\int_0^c e^{h(u)}\\,du, \\qquad
    \\ln p(x) = -\\alpha u - \\ln x_{\\min} - L\\,(e^u - 1) - \\ln \\tilde Z .

The mean negative log-likelihood :math:`f = \\alpha\\,\\bar u + L\\,(\\bar y - 1) + \\ln \\tilde Z` (``ȳ`` the mean of
:math:`e^u`) is convex, with gradient :math:`(\\bar u - E[u],\\ \\bar y - E[e^u])` and Hessian the covariance of
:math:`(u, e^u)`, so the maximum-likelihood :math:`(\\hat\\alpha, \\hat L)` with :math:`L \\ge 0` is unique and found
by damped Newton steps, for many tails at once (:func:`truncated_power_law_mle`). Where the optimum is on the
boundary :math:`L = 0` the law is the power law itself (:math:`\\hat\\alpha = 1 + 1/\\bar u` untruncated). The
integrals are Gauss–Legendre sums on panels between the level sets :math:`h = \\max h - d` of the concave
:math:`h` (``d`` = 0.5 … 45), accurate to ~1e-13 relative (tested against adaptive quadrature).

:func:`fit_truncated_powerlaw` chooses :math:`x_{\\min}` as ``powerlaw.Fit(xmin_distribution=
"truncated_power_law")`` does, and so WeightWatcher 0.7.7's ``fit="TPL"``: every distinct value but the largest
(of a range, when given) is a candidate, each gets its maximum-likelihood fit, and the candidate with the smallest
Kolmogorov–Smirnov distance between the fitted CDF and the empirical ``k/n`` of its tail wins, among the fits with
:math:`\\alpha > 1` and :math:`\\Lambda > 0` (powerlaw's valid range) when there are any.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from funnelscope.errors import FunnelscopeInputError

__all__ = ["TruncatedPowerLawFit", "fit_truncated_powerlaw", "truncated_power_law_mle"]

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(16)
_CDF_NODES, _CDF_WEIGHTS = np.polynomial.legendre.leggauss(8)
_LEVELS = np.array([1.0, 6.0, 18.0, 45.0])  # drops of h below its maximum bounding the panels
_MIN_VALUE = 1e-5


@dataclass(frozen=True)
class TruncatedPowerLawFit:
    """A truncated power law fitted to the tail ``xmin ≤ x`` of some values.

    Attributes:
        alpha: exponent :math:`\\hat\\alpha`.
        Lambda: cut-off rate :math:`\\hat\\Lambda` (units of 1/x); 0 when the optimum is the power law itself.
        xmin: lower end of the tail (a data value).
        D: Kolmogorov–Smirnov distance between the fitted CDF and the tail's empirical ``k/n``.
        sigma: standard error of ``alpha`` from the Fisher information of both parameters (NaN at ``Lambda = 0``).
        n_tail: number of values in the tail.
        n: number of values searched (after dropping those ``<= 1e-5``).
        loglik: the summed log-likelihood of the tail.
        valid: ``alpha > 1`` and ``Lambda > 0`` (the range ``powerlaw`` accepts).
    """

    alpha: float
    Lambda: float
    xmin: float
    D: float
    sigma: float
    n_tail: int
    n: int
    loglik: float
    valid: bool


# ----------------------------------------------------------------------------------------------------
# quadrature of e^{h(u)}, h(u) = s u - L (e^u - 1), on [0, c)


def _h(u: np.ndarray, s: np.ndarray, L: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return s * u - np.where(L > 0, L * np.expm1(np.minimum(u, 700.0)), 0.0)


def _panels(s: np.ndarray, L: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints (m, 2·len(_LEVELS) + 1) bracketing where e^{h - max h} > e^-45 on [0, c), and max h."""
    with np.errstate(divide="ignore", invalid="ignore"):
        peak = np.where(s > L, np.log(s / np.where(L > 0, L, 1.0)), 0.0)
    peak = np.where((s > 0) & (L <= 0), c, peak)  # increasing all the way: the peak is at the upper end
    peak = np.clip(peak, 0.0, c)
    top = _h(peak, s, L)
    left, right = [], []
    for drop in _LEVELS:
        target = top - drop
        left.append(_level(peak, s, L, target, np.zeros_like(peak), peak))
        span = np.ones_like(peak)
        for _ in range(80):  # double until h(peak + span) is below the target (or c is reached)
            short = (_h(peak + span, s, L) > target) & (peak + span < c)
            if not short.any():
                break
            span = np.where(short, span * 2.0, span)
        right.append(_level(peak, s, L, target, peak, np.minimum(peak + span, c)))
    points = np.stack([*reversed(left), peak, *right], axis=1)
    return np.maximum.accumulate(points, axis=1), top


def _level(peak: np.ndarray, s: np.ndarray, L: np.ndarray, target: np.ndarray, lo: np.ndarray,
           hi: np.ndarray) -> np.ndarray:
    """Where h crosses ``target`` in [lo, hi] (h monotone there), by bisection; an end when it does not."""
    rising = hi <= peak
    h_lo, h_hi = _h(lo, s, L), _h(hi, s, L)
    inside = np.where(rising, (h_lo < target) & (h_hi >= target), (h_lo >= target) & (h_hi < target))
    a, b = lo.copy(), hi.copy()
    for _ in range(25):  # the panels need not be placed precisely
        mid = 0.5 * (a + b)
        above = _h(mid, s, L) >= target
        move_a = above != rising  # falling side: keep [mid, b] while h(mid) ≥ target
        a = np.where(move_a, mid, a)
        b = np.where(move_a, b, mid)
    return np.where(inside, 0.5 * (a + b), np.where(rising, lo, hi))


def _moments(s: np.ndarray, L: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """ln Z̃ and the first two moments of (u, e^u - 1) under g, for each (s, L, c)."""
    points, top = _panels(s, L, c)
    a, b = points[:, :-1, None], points[:, 1:, None]
    half = 0.5 * (b - a)
    u = (a + half * (_NODES + 1.0)).reshape(len(s), -1)
    w = (half * _WEIGHTS).reshape(len(s), -1)
    e = np.exp(_h(u, s[:, None], L[:, None]) - top[:, None]) * w
    mass = e.sum(axis=1)
    v = np.expm1(u)
    mu = (e * u).sum(axis=1) / mass
    mv = (e * v).sum(axis=1) / mass
    var_u = (e * (u - mu[:, None]) ** 2).sum(axis=1) / mass
    var_v = (e * (v - mv[:, None]) ** 2).sum(axis=1) / mass
    cov = (e * (u - mu[:, None]) * (v - mv[:, None])).sum(axis=1) / mass
    return top + np.log(mass), mu, mv, var_u, var_v, cov


def _boundary(u_mean: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The power-law MLE (L = 0): 1 + 1/ū untruncated; on [0, c) the truncated-exponential rate."""
    from funnelscope.spectra.powerlaw_alternatives import truncated_exponential_rate

    alpha = 1.0 + 1.0 / u_mean
    finite = np.isfinite(c)
    if finite.any():
        t = truncated_exponential_rate(u_mean[finite] / c[finite])
        alpha[finite] = 1.0 + t / c[finite]
    return alpha


def truncated_power_law_mle(
    u_mean: np.ndarray, y_mean: np.ndarray, *, c: np.ndarray | float = math.inf
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Maximum-likelihood :math:`(\\hat\\alpha, \\hat L)` of truncated power laws from their sufficient statistics.

    ``f`` is jointly convex, so the profile :math:`\\varphi(L) = \\min_\\alpha f(\\alpha, L)` is convex with
    :math:`\\varphi'(L) = \\bar y - E[e^u]` at :math:`\\alpha^*(L)`, the root of the decreasing
    :math:`E[u] = \\bar u`. If :math:`\\varphi'(0) \\ge 0` the optimum is the power law (:math:`L = 0`);
    otherwise :math:`\\varphi'` has one root in :math:`L > 0`, found by the Illinois (regula falsi) method on
    :math:`\\ln L`, with :math:`\\alpha^*` by safeguarded Newton steps inside: each iteration is a convex
    1-D problem, so the search cannot stall on the boundary.

    Args:
        u_mean: :math:`\\bar u`, the mean of :math:`\\ln(x/x_{\\min})` over each tail (> 0), shape (m,).
        y_mean: :math:`\\bar y`, the mean of :math:`x/x_{\\min}` over each tail, shape (m,).
        c: :math:`\\ln(x_{\\max}/x_{\\min})` of each tail's support (``inf``: no upper end).

    Returns:
        ``alpha``, ``L`` (:math:`\\Lambda x_{\\min}`, ``0`` where the optimum is the power law), ``f`` (the
        mean negative log-likelihood plus :math:`\\ln x_{\\min}`) and ``var_alpha`` (the ``α`` entry of the
        inverse Fisher information per value: divide by ``n`` for the variance; NaN at ``L = 0``).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = 1.0 + rng.exponential(1.0, 20000)          # α = 0, Λ = 1 on [1, ∞)
        >>> alpha, L, _, _ = truncated_power_law_mle(np.array([np.log(x).mean()]), np.array([x.mean()]))
        >>> bool(abs(alpha[0]) < 0.1 and abs(L[0] - 1.0) < 0.05)
        True
    """
    u_mean = np.atleast_1d(np.asarray(u_mean, dtype=np.float64))
    y_mean = np.atleast_1d(np.asarray(y_mean, dtype=np.float64))
    c = np.broadcast_to(np.asarray(c, dtype=np.float64), u_mean.shape).copy()
    v_mean = y_mean - 1.0
    m = u_mean.size
    alpha = _boundary(u_mean, c)
    L = np.zeros(m)
    interior = ~np.isfinite(alpha) | ((alpha <= 1.0) & ~np.isfinite(c))  # no power law: L > 0 needed
    test = np.flatnonzero(~interior)
    if test.size:
        _, _, mv, *_ = _moments(1.0 - alpha[test], L[test], c[test])
        interior[test] = v_mean[test] - mv < 0.0
    idx = np.flatnonzero(interior)
    if idx.size:
        start = np.where(np.isfinite(alpha[idx]), alpha[idx], 1.0 + 1.0 / u_mean[idx])
        alpha[idx], L[idx] = _interior(u_mean[idx], v_mean[idx], c[idx], start)
    logz, _, _, vu, vv, cov = _moments(1.0 - alpha, L, c)
    f = alpha * u_mean + L * v_mean + logz
    with np.errstate(divide="ignore", invalid="ignore"):
        var_alpha = np.where(interior, vv / (vu * vv - cov * cov), np.nan)
    return alpha, L, f, var_alpha


def _profile_alpha(u_mean: np.ndarray, L: np.ndarray, c: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, ...]:
    """α*(L): the root of E[u] = ū (E[u] decreases in α with slope −Var u), by Newton steps kept inside a
    bracket that widens until it holds the root; returns α and the moments there."""
    lo, hi = np.full_like(alpha, -np.inf), np.full_like(alpha, np.inf)
    for _ in range(200):
        logz, mu, mv, vu, vv, cov = _moments(1.0 - alpha, L, c)
        g = u_mean - mu  # ∂f/∂α: negative below the root
        lo = np.where(g < 0, alpha, lo)
        hi = np.where(g > 0, alpha, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = alpha - g / vu
            width = np.where(np.isfinite(lo) & np.isfinite(hi), hi - lo, np.inf)
            fallback = np.where(np.isfinite(lo) & np.isfinite(hi), 0.5 * (lo + hi),
                                np.where(np.isfinite(lo), lo + 2.0 * np.maximum(1.0, np.abs(lo)),
                                         hi - 2.0 * np.maximum(1.0, np.abs(hi))))
        new = np.where(np.isfinite(step) & (step > lo) & (step < hi), step, fallback)
        done = (np.abs(new - alpha) <= 1e-14 * np.maximum(1.0, np.abs(alpha))) | (width <= 1e-14)
        alpha = new
        if done.all():
            break
    return alpha, logz, mu, mv, vu, vv, cov


def _interior(u_mean: np.ndarray, v_mean: np.ndarray, c: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, ...]:
    """The optimum with L > 0 where φ'(0) < 0: the root of φ'(L) = v̄ − E[e^u − 1] (increasing) in t = ln L."""

    def slope(t: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, _, _, mv, *_ = _profile_alpha(u_mean, np.exp(t), c, a)
        return v_mean - mv, a

    t_lo = np.full_like(alpha, -40.0)
    g_lo, a_lo = slope(t_lo, alpha.copy())
    t_hi = np.log(1.0 / np.maximum(v_mean, 1e-300)) + 1.0
    g_hi, a_hi = slope(t_hi, a_lo.copy())
    for _ in range(200):  # widen until the slope changes sign
        low = g_lo >= 0  # not below the root yet: move the lower end down
        high = g_hi <= 0
        if not (low.any() or high.any()):
            break
        t_lo = np.where(low, t_lo - 20.0, t_lo)
        t_hi = np.where(high, t_hi + 2.0, t_hi)
        g_lo2, a_lo2 = slope(t_lo, a_lo)
        g_hi2, a_hi2 = slope(t_hi, a_hi)
        g_lo, a_lo = np.where(low, g_lo2, g_lo), np.where(low, a_lo2, a_lo)
        g_hi, a_hi = np.where(high, g_hi2, g_hi), np.where(high, a_hi2, a_hi)
    side = np.zeros(alpha.size, dtype=int)
    t, a = t_hi.copy(), a_hi.copy()
    for _ in range(200):  # Illinois: regula falsi that halves the stale end's slope
        with np.errstate(divide="ignore", invalid="ignore"):
            t_new = (t_lo * g_hi - t_hi * g_lo) / (g_hi - g_lo)
        t_new = np.where(np.isfinite(t_new) & (t_new > t_lo) & (t_new < t_hi), t_new, 0.5 * (t_lo + t_hi))
        g_new, a_new = slope(t_new, a)
        below = g_new < 0
        t_lo, g_lo = np.where(below, t_new, t_lo), np.where(below, g_new, g_lo)
        t_hi, g_hi = np.where(below, t_hi, t_new), np.where(below, g_hi, g_new)
        g_hi = np.where(below & (side == -1), 0.5 * g_hi, g_hi)
        g_lo = np.where(~below & (side == 1), 0.5 * g_lo, g_lo)
        side = np.where(below, -1, 1)
        converged = (np.abs(t_new - t) <= 1e-13 * np.maximum(1.0, np.abs(t))) | (g_new == 0) | (t_hi - t_lo <= 1e-13)
        t, a = t_new, a_new
        if converged.all():
            break
    return a, np.exp(t)


def truncated_power_law_cdf(
    u: np.ndarray, alpha: float, L: float, c: float = math.inf, *, panels: tuple[np.ndarray, float] | None = None
) -> np.ndarray:
    """The CDF :math:`G(u) = \\int_0^u g` of the law of :math:`u = \\ln(x/x_{\\min})` at sorted ``u``.

    8-point Gauss–Legendre pieces between the points ``u`` and the panel breakpoints (so no piece spans more than
    a panel), summed cumulatively; the total runs to where the integrand is below ``e^-45`` of its peak.
    ``panels`` (breakpoints and the peak of ``h``) may be passed when already computed.
    """
    s, lam = 1.0 - alpha, L
    if panels is None:
        points, top = _panels(np.array([s]), np.array([lam]), np.array([c]))
        panels = (points[0], float(top[0]))
    points, top = panels
    end = max(float(points[-1]), float(u[-1]))
    breaks = np.union1d(u, points[points <= end])
    a, b = breaks[:-1, None], breaks[1:, None]
    half = 0.5 * (b - a)
    nodes = a + half * (_CDF_NODES + 1.0)
    pieces = (np.exp(_h(nodes, s, lam) - top) * half * _CDF_WEIGHTS).sum(axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(pieces)])
    return cumulative[np.searchsorted(breaks, u)] / cumulative[-1]


def fit_truncated_powerlaw(
    values: np.ndarray,
    *,
    xmin: float | tuple[float | None, float | None] | None = None,
) -> TruncatedPowerLawFit:
    """Fit a truncated power law to the tail of ``values``, choosing :math:`x_{\\min}` by the KS distance.

    Values ``<= 1e-5`` are dropped (WeightWatcher's threshold). Candidates for :math:`x_{\\min}`: every distinct
    value but the largest; with ``xmin=(lo, hi)`` the distinct values in ``[lo, hi]`` but the largest of them
    (``powerlaw.Fit``'s rule); a number fixes :math:`x_{\\min}` (snapped to the nearest value). Each candidate's
    tail gets its maximum-likelihood fit (:func:`truncated_power_law_mle`) and its KS distance
    :math:`D = \\max_k |G(u_k) - k/n|`; the smallest ``D`` among the valid fits (:math:`\\alpha > 1`,
    :math:`\\Lambda > 0`) wins, the first on ties; all candidates compete when none is valid.

    Args:
        values: 1-D array of finite values (e.g. eigenvalues).
        xmin: ``None``, a number or a ``(lo, hi)`` range (either may be ``None``).

    Returns:
        :class:`TruncatedPowerLawFit`.

    Raises:
        FunnelscopeInputError: non-finite or non-1-D values, fewer than two distinct values left, or no candidate.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> x = rng.pareto(1.5, 1000) + 1.0                 # a power law (α = 2.5): Λ comes out tiny
        >>> fit = fit_truncated_powerlaw(x, xmin=1.0)
        >>> bool(abs(fit.alpha - 2.5) < 0.15 and fit.Lambda * fit.xmin < 0.01)
        True
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or not np.isfinite(arr).all():
        raise FunnelscopeInputError("fit_truncated_powerlaw: values must be a 1-D array of finite numbers")
    x = np.sort(arr[arr > _MIN_VALUE])
    distinct = np.unique(x)
    if distinct.size < 2:
        raise FunnelscopeInputError(f"fit_truncated_powerlaw: need 2 distinct values above {_MIN_VALUE}, got "
                                    f"{distinct.size}")
    candidates = _candidates(x, distinct, xmin)
    N = x.size
    logx = np.log(x)
    first = np.searchsorted(x, candidates, side="left")
    n = N - first
    suffix_log = np.cumsum(logx[::-1])[::-1]
    suffix_x = np.cumsum(x[::-1])[::-1]
    u_mean = suffix_log[first] / n - np.log(candidates)
    y_mean = suffix_x[first] / (n * candidates)
    alpha, L, f, var_alpha = truncated_power_law_mle(u_mean, y_mean)
    points, top = _panels(1.0 - alpha, L, np.full(alpha.size, math.inf))
    D = np.empty(candidates.size)
    for j, (i, xm) in enumerate(zip(first, candidates, strict=True)):
        u = logx[i:] - math.log(xm)
        cdf = truncated_power_law_cdf(u, float(alpha[j]), float(L[j]), panels=(points[j], float(top[j])))
        D[j] = np.max(np.abs(cdf - np.arange(n[j]) / n[j]))
    valid = (alpha > 1.0) & (L > 0.0)
    pool = np.where(valid, D, np.inf) if valid.any() else D
    best = int(np.argmin(pool))
    xm = float(candidates[best])
    return TruncatedPowerLawFit(
        alpha=float(alpha[best]),
        Lambda=float(L[best] / xm),
        xmin=xm,
        D=float(D[best]),
        sigma=float(np.sqrt(var_alpha[best] / n[best])),
        n_tail=int(n[best]),
        n=int(N),
        loglik=float(-n[best] * (f[best] + math.log(xm))),
        valid=bool(valid[best]),
    )


def _candidates(x: np.ndarray, distinct: np.ndarray, xmin: float | tuple | None) -> np.ndarray:
    if xmin is None:
        return distinct[:-1]
    if isinstance(xmin, (tuple, list)):
        if len(xmin) != 2:
            raise FunnelscopeInputError(f"xmin={xmin!r}: a range must be a (lo, hi) pair")
        lo = -math.inf if xmin[0] is None else float(xmin[0])
        hi = math.inf if xmin[1] is None else float(xmin[1])
        inside = distinct[(distinct >= lo) & (distinct <= hi)]
        if inside.size < 2:
            raise FunnelscopeInputError(f"xmin={xmin!r}: fewer than 2 distinct values in the range")
        return inside[:-1]
    value = float(xmin)
    if not math.isfinite(value) or value <= 0:
        raise FunnelscopeInputError(f"xmin={xmin!r} must be a finite number > 0")
    snapped = distinct[int(np.argmin(np.abs(distinct - value)))]
    if snapped == distinct[-1]:
        raise FunnelscopeInputError(f"xmin={xmin!r} snaps to the largest value: the tail needs 2 values")
    return np.array([snapped])
