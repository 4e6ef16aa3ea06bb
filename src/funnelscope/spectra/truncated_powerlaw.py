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
:math:`(u, e^u)`, so the maximum-likelihood :math:`(\\hat\\alpha, \\hat L)` with :math:`L \\ge 0` (and, optionally,
:math:`\\alpha \\ge \\alpha_{\\min}`) is unique; :func:`truncated_power_law_mle` finds it for many tails at once
through the convex profile in :math:`L` (no stalling on the boundary). Where the optimum is on :math:`L = 0` the law
is the power law itself (:math:`\\hat\\alpha = 1 + 1/\\bar u` untruncated). The integrals are 16-point
Gauss–Legendre sums on 8 panels either side of the peak of the concave :math:`h`, out to where :math:`h` has
fallen by 45, accurate to ~1e-10 relative over α ∈ [−12, 20], L ∈ [1e-10, 500] (tested against adaptive
quadrature).

:func:`fit_truncated_powerlaw` chooses :math:`x_{\\min}` as ``powerlaw.Fit(xmin_distribution=
"truncated_power_law")`` does, and so WeightWatcher 0.7.7's ``fit="TPL"``: every distinct value but the largest
(of a range, when given) is a candidate, each gets its maximum-likelihood fit with :math:`\\alpha \\ge 1` (powerlaw
scores parameters outside :math:`\\alpha > 1, \\Lambda > 0` with a likelihood of 1e-308, so its optimum lies in that
range's closure), and the candidate with the smallest Kolmogorov–Smirnov distance between the fitted CDF and the
empirical ``k/n`` of its tail wins (the first on ties). Where they differ from WeightWatcher it is powerlaw's
optimiser: ``scipy.optimize.fmin`` (Nelder–Mead, default tolerances) stops short of the maximum near the bound
:math:`\\alpha = 1`, where most eigenvalue tails put it; the fits here have the higher likelihood.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from funnelscope.errors import FunnelscopeInputError

__all__ = [
    "TruncatedPowerLawFit",
    "fit_truncated_powerlaw",
    "nelder_mead_fits",
    "truncated_power_law_cdf",
    "truncated_power_law_logpdf",
    "truncated_power_law_mle",
]

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(16)
_CDF_NODES, _CDF_WEIGHTS = np.polynomial.legendre.leggauss(8)
_DROP = 45.0  # the integrals run where e^{h − max h} > e^-45
_GROWTH = np.arange(1, 9) / 8.0  # panel ends on each side of the peak, as fractions of the side
_MIN_VALUE = 1e-5
_T_MIN, _T_MAX = -80.0, 60.0  # ln L is kept in this box (the unbounded MLE diverges for under-dispersed tails)


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
    """

    alpha: float
    Lambda: float
    xmin: float
    D: float
    sigma: float
    n_tail: int
    n: int
    loglik: float


# ----------------------------------------------------------------------------------------------------
# quadrature of e^{h(u)}, h(u) = s u - L (e^u - 1), on [0, c)


def _h(u: np.ndarray, s: np.ndarray, L: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return s * u - np.where(L > 0, L * np.expm1(np.minimum(u, 700.0)), 0.0)


def _panels(s: np.ndarray, L: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Panel breakpoints (m, 2·len(_GROWTH) + 1) over where e^{h − max h} > e^-45 on [0, c), and max h.

    h is concave: its peak is at u* = ln(s/L) (clipped to [0, c]), and on each side it falls monotonically to
    the end where h = max h − 45 (:func:`_end`). Each side is cut into 8 equal panels of 16 Gauss–Legendre
    nodes: the log-integrand is concave, so no panel holds more than its share of the 45-unit drop.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        peak = np.where((s > L) & (L > 0), np.log(s / L), 0.0)
    peak = np.where((s > 0) & (L <= 0), c, peak)  # increasing all the way: the peak is the upper end
    peak = np.clip(peak, 0.0, c)
    top = _h(peak, s, L)
    target = top - _DROP
    right = _end(peak, s, L, target, c, +1.0)
    left = _end(peak, s, L, target, np.zeros_like(peak), -1.0)
    grow = _GROWTH[None, :]
    points = np.concatenate([(peak[:, None] - (peak - left)[:, None] * grow)[:, ::-1], peak[:, None],
                             peak[:, None] + (right - peak)[:, None] * grow], axis=1)
    return np.maximum.accumulate(points, axis=1), top


def _end(peak: np.ndarray, s: np.ndarray, L: np.ndarray, target: np.ndarray, bound: np.ndarray,
         direction: float) -> np.ndarray:
    """Where h falls to ``target`` on the ``direction`` side of the peak, within ``bound`` (an end of [0, c)):
    a bracket by doubling the distance from the peak, then bisection (the panels need not be exact)."""
    limit = np.abs(bound - peak)
    span = np.minimum(1.0, limit)
    for _ in range(64):
        short = (_h(peak + direction * span, s, L) > target) & (span < limit)
        if not short.any():
            break
        span = np.where(short, np.minimum(2.0 * span, limit), span)
    inside = _h(peak + direction * span, s, L) <= target
    lo, hi = np.zeros_like(span), span
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        above = _h(peak + direction * mid, s, L) > target
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return peak + direction * np.where(inside, hi, span)


def _moments(s: np.ndarray, L: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """ln Z̃ and the first two moments of (u, e^u - 1) under g, for each (s, L, c)."""
    if not s.size:
        return tuple(np.empty(0) for _ in range(6))
    with np.errstate(over="ignore", invalid="ignore"):
        return _moment_sums(s, L, c)


def _moment_sums(s: np.ndarray, L: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
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
    with np.errstate(divide="ignore"):  # a mass that underflows to 0: log-likelihood −inf, which the search drops
        return top + np.log(mass), mu, mv, var_u, var_v, cov


def _boundary(u_mean: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The power-law MLE (L = 0): 1 + 1/ū untruncated; on [0, c) the root of E[u] = ū at L = 0."""
    with np.errstate(divide="ignore"):
        alpha = 1.0 + 1.0 / u_mean
    finite = np.flatnonzero(np.isfinite(c))
    if finite.size:
        alpha[finite] = _profile_alpha(u_mean[finite], np.zeros(finite.size), c[finite], alpha[finite])[0]
    return alpha


def truncated_power_law_mle(
    u_mean: np.ndarray, y_mean: np.ndarray, *, c: np.ndarray | float = math.inf, alpha_min: float = -math.inf
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Maximum-likelihood :math:`(\\hat\\alpha, \\hat L)` of truncated power laws from their sufficient statistics.

    ``f`` is jointly convex, so the profile :math:`\\varphi(L) = \\min_\\alpha f(\\alpha, L)` is convex with
    :math:`\\varphi'(L) = \\bar y - E[e^u]` at :math:`\\alpha^*(L)`, the root of the decreasing
    :math:`E[u] = \\bar u`. If :math:`\\varphi'(0) \\ge 0` the optimum is the power law (:math:`L = 0`);
    otherwise :math:`\\varphi'` has one root in :math:`L > 0`, found by the Illinois (regula falsi) method on
    :math:`\\ln L`, with :math:`\\alpha^*` by safeguarded Newton steps inside: each iteration is a convex
    1-D problem, so the search cannot stall on the boundary. With ``alpha_min``, where the optimum has a smaller
    α the constrained optimum (f is convex) lies on :math:`\\alpha = \\alpha_{\\min}`, and :math:`L` is the
    root of :math:`\\bar y - E[e^u]` there (Newton in :math:`\\ln L` with slope :math:`L \\operatorname{Var} e^u`).

    Args:
        u_mean: :math:`\\bar u`, the mean of :math:`\\ln(x/x_{\\min})` over each tail (> 0), shape (m,).
        y_mean: :math:`\\bar y`, the mean of :math:`x/x_{\\min}` over each tail, shape (m,).
        c: :math:`\\ln(x_{\\max}/x_{\\min})` of each tail's support (``inf``: no upper end).
        alpha_min: a lower bound on α (``powerlaw``'s fits, and so WeightWatcher's, keep :math:`\\alpha > 1`).

    Returns:
        ``alpha``, ``L`` (:math:`\\Lambda x_{\\min}`, ``0`` where the optimum is the power law), ``f`` (the
        mean negative log-likelihood plus :math:`\\ln x_{\\min}`) and ``var_alpha`` (the ``α`` entry of the
        inverse Fisher information per value: divide by ``n`` for the variance; NaN on a bound).

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
    bounded = np.flatnonzero(alpha < alpha_min)
    if bounded.size:
        alpha[bounded], L[bounded] = alpha_min, 0.0
        free = np.isfinite(c[bounded])  # on a finite support L = 0 is allowed: is it optimal there?
        if free.any():
            at = bounded[free]
            _, _, mv, *_ = _moments(1.0 - alpha[at], L[at], c[at])
            free[free] = v_mean[at] - mv >= 0.0
        solve = bounded[~free]
        if solve.size:
            _, L[solve] = _interior(u_mean[solve], v_mean[solve], c[solve], alpha[solve], fixed=True)
        interior[bounded] = False
    logz, _, _, vu, vv, cov = _moments(1.0 - alpha, L, c)
    f = alpha * u_mean + L * v_mean + logz
    var_alpha = np.where(interior, _fisher_alpha(vu, vv, cov), np.nan)
    return alpha, L, f, var_alpha


def _fisher_alpha(var_u: np.ndarray, var_v: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``n·Var(α̂)``: the ``α`` entry of the inverse Fisher information per value, the covariance of
    ``(u, e^u)`` under the fitted law."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return var_v / (var_u * var_v - cov * cov)


def _profile_alpha(u_mean: np.ndarray, L: np.ndarray, c: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, ...]:
    """α*(L): the root of E[u] = ū (E[u] decreases in α with slope −Var u), by Newton steps kept inside a
    bracket that widens until it holds the root. Returns α and (Var u, E[e^u − 1], Var e^u, Cov) there."""
    alpha = alpha.copy()
    stats = np.empty((4, alpha.size))
    lo, hi = np.full_like(alpha, -np.inf), np.full_like(alpha, np.inf)
    active = np.arange(alpha.size)
    for _ in range(100):
        a = alpha[active]
        _, mu, mv, vu, vv, cov = _moments(1.0 - a, L[active], c[active])
        stats[:, active] = vu, mv, vv, cov
        g = u_mean[active] - mu  # ∂f/∂α: negative below the root
        lo[active] = np.where(g < 0, a, lo[active])
        hi[active] = np.where(g > 0, a, hi[active])
        l, h = lo[active], hi[active]
        with np.errstate(divide="ignore", invalid="ignore"):
            step = a - g / vu
            fallback = np.where(np.isfinite(l) & np.isfinite(h), 0.5 * (l + h),
                                np.where(np.isfinite(l), l + 2.0 * np.maximum(1.0, np.abs(l)),
                                         h - 2.0 * np.maximum(1.0, np.abs(h))))
        new = np.where(np.isfinite(step) & (step > l) & (step < h), step, fallback)
        alpha[active] = new
        moving = (np.abs(new - a) > 1e-11 * np.maximum(1.0, np.abs(a))) & (g != 0)
        active = active[moving]
        if not active.size:
            break
    return alpha, *stats


def _interior(
    u_mean: np.ndarray, v_mean: np.ndarray, c: np.ndarray, alpha: np.ndarray, *, fixed: bool = False
) -> tuple[np.ndarray, ...]:
    """The optimum with L > 0 where φ'(0) < 0: the root of φ'(L) = v̄ − E[e^u − 1] in t = ln L (α fixed at
    ``alpha`` when ``fixed``, where the slope is ``L Var e^u``).

    φ' increases, with :math:`d\\varphi'/dt = L\\,(\\operatorname{Var} e^u - \\operatorname{Cov}(u, e^u)^2 /
    \\operatorname{Var} u)` (the Schur complement of the Hessian), so Newton steps in ``t`` converge
    quadratically; each is kept inside the bracket of the signs seen so far (bisection otherwise, doubling the
    distance while one end is open), which makes the search safe from any start.
    """
    t = np.log(1.0 / np.maximum(v_mean + 1.0, 1.0 + 1e-12))  # powerlaw's start, Λ = 1/mean(x)
    a = alpha.copy()
    lo, hi = np.full_like(t, -np.inf), np.full_like(t, np.inf)
    active = np.arange(t.size)
    for _ in range(200):
        ta = t[active]
        L = np.exp(ta)
        if fixed:
            _, _, mv, vu, vv, cov = _moments(1.0 - a[active], L, c[active])
            cov = np.zeros_like(cov)
        else:
            a_new, vu, mv, vv, cov = _profile_alpha(u_mean[active], L, c[active], a[active])
            a[active] = a_new
        g = v_mean[active] - mv
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d = L * (vv - cov * cov / vu)
            newton = ta - g / d
        lo[active] = np.where(g < 0, ta, lo[active])
        hi[active] = np.where(g > 0, ta, hi[active])
        l, h = lo[active], hi[active]
        open_up, open_down = ~np.isfinite(h), ~np.isfinite(l)
        step = np.where(open_up, np.maximum(2.0 * np.abs(ta - l), 1.0), np.where(open_down, np.maximum(
            2.0 * np.abs(h - ta), 1.0), 0.0))
        fallback = np.where(open_up, ta + step, np.where(open_down, ta - step, 0.5 * (l + h)))
        good = np.isfinite(newton) & (newton > l) & (newton < h)
        new = np.clip(np.where(good, newton, fallback), _T_MIN, _T_MAX)  # a box: the MLE need not exist
        t[active] = new
        done = (np.abs(new - ta) <= 1e-12 * np.maximum(1.0, np.abs(ta))) | (g == 0)
        active = active[~done]
        if not active.size:
            break
    return a, np.exp(t)


def truncated_power_law_logpdf(
    x: np.ndarray, *, alpha: float, Lambda: float, xmin: float, xmax: float = math.inf
) -> np.ndarray:
    """:math:`\\ln p(x)` of the truncated power law on :math:`[x_{\\min}, x_{\\max})` at ``x`` (inside it):
    :math:`-\\alpha u - \\ln x_{\\min} - L (e^u - 1) - \\ln \\tilde Z` with :math:`u = \\ln(x/x_{\\min})`."""
    u = np.log(np.asarray(x, dtype=np.float64) / xmin)
    L = Lambda * xmin
    c = math.log(xmax / xmin) if math.isfinite(xmax) else math.inf
    logz = _moments(np.array([1.0 - alpha]), np.array([L]), np.array([c]))[0][0]
    return -alpha * u - math.log(xmin) - L * np.expm1(u) - logz


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
    with np.errstate(invalid="ignore"):  # a total that underflows to 0: NaN, which the xmin search skips
        return cumulative[np.searchsorted(breaks, u)] / cumulative[-1]


def fit_truncated_powerlaw(
    values: np.ndarray,
    *,
    xmin: float | tuple[float | None, float | None] | None = None,
    optimizer: str = "exact",
) -> TruncatedPowerLawFit:
    """Fit a truncated power law to the tail of ``values``, choosing :math:`x_{\\min}` by the KS distance.

    Values ``<= 1e-5`` are dropped (WeightWatcher's threshold). Candidates for :math:`x_{\\min}`: every distinct
    value but the largest; with ``xmin=(lo, hi)`` the distinct values in ``[lo, hi]`` but the largest of them
    (``powerlaw.Fit``'s rule); a number fixes :math:`x_{\\min}` (snapped to the nearest value). Each candidate's
    tail gets its maximum-likelihood fit with :math:`\\alpha \\ge 1` (:func:`truncated_power_law_mle`, powerlaw's
    range) and its KS distance :math:`D = \\max_k |G(u_k) - k/n|`; the smallest ``D`` wins, the first on ties.

    Args:
        values: 1-D array of finite values (e.g. eigenvalues).
        xmin: ``None``, a number or a ``(lo, hi)`` range (either may be ``None``).
        optimizer: ``"exact"``: the maximum-likelihood fit (:func:`truncated_power_law_mle`); ``"nelder-mead"``:
            powerlaw 1.5's, hence WeightWatcher 0.7.7's, for parity with it (:func:`nelder_mead_fits`: the same
            start, scoring and ``scipy.optimize.fmin`` run, which often stops near α = 1 below the maximum).

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
    if optimizer == "exact":
        alpha, L, f, var_alpha = truncated_power_law_mle(u_mean, y_mean, alpha_min=1.0)
    elif optimizer == "nelder-mead":
        alpha, L, f = nelder_mead_fits(u_mean, y_mean, n, candidates)
        var_alpha = _fisher_alpha(*_moments(1.0 - alpha, L, np.full(alpha.size, math.inf))[3:])
    else:
        raise FunnelscopeInputError(f"optimizer={optimizer!r} must be 'exact' or 'nelder-mead'")
    points, top = _panels(1.0 - alpha, L, np.full(alpha.size, math.inf))
    D = np.empty(candidates.size)
    for j, (i, xm) in enumerate(zip(first, candidates, strict=True)):
        u = logx[i:] - math.log(xm)
        cdf = truncated_power_law_cdf(u, float(alpha[j]), float(L[j]), panels=(points[j], float(top[j])))
        D[j] = np.max(np.abs(cdf - np.arange(n[j]) / n[j]))
    best = int(np.argmin(np.where(np.isnan(D), np.inf, D)))
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
    )


_OUT_OF_RANGE = -math.log(10.0**sys.float_info.min_10_exp)  # powerlaw's −ln p outside α > 1, Λ > 0 (1e-307)


def nelder_mead_fits(u_mean: np.ndarray, y_mean: np.ndarray, n: np.ndarray, xmin: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """powerlaw 1.5's truncated power-law fit of each tail, as WeightWatcher 0.7.7 runs it: ``(α, L, f)``.

    powerlaw minimises the summed negative log-likelihood in ``(α, Λ)`` with ``scipy.optimize.fmin`` (Nelder–Mead,
    default settings) from ``α₀ = 1 + 1/ū``, ``Λ₀ = 1/mean(x)`` (``Truncated_Power_Law._initial_parameters``),
    every value scored ``p = 1e-307`` when ``α ≤ 1`` or ``Λ ≤ 0`` (``Distribution.pdf``). This is that iteration,
    step for step (scipy's ``_minimize_neldermead``, non-adaptive: reflection 1, expansion 2, contractions ½,
    shrink ½; the first simplex ``x₀`` and ``x₀`` with one coordinate × 1.05; stop when the simplex is within
    ``1e-4`` of its best vertex in both coordinates and values, or after 400 evaluations or iterations), run for
    all tails at once. The sum leaves out ``n·ln xmin`` where the parameters are in range: no difference
    between two points in range changes and the plateau outside stays above them all, so every comparison
    comes out as in powerlaw. ``L = Λ·xmin``; ``f`` is the mean negative log-likelihood of
    :func:`truncated_power_law_mle` (without ``ln xmin``).

    >>> alpha, L, f = nelder_mead_fits(np.array([0.5]), np.array([1.8]), np.array([400]), np.array([2.0]))
    >>> bool(alpha[0] > 1 and L[0] > 0)
    True
    """
    u_mean, y_mean, xmin = (np.asarray(a, dtype=np.float64) for a in (u_mean, y_mean, xmin))
    n = np.asarray(n, dtype=np.float64)
    m, limit = u_mean.size, 400  # scipy: maxiter = maxfun = 200·N, N = 2 parameters
    calls = np.zeros(m, dtype=np.int64)

    def total(rows: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values at ``points`` (k, 2) for the tails ``rows``, and which rows had an evaluation left."""
        allowed = calls[rows] < limit
        calls[rows] += allowed
        alpha, Lambda = points[:, 0], points[:, 1]
        inside = (alpha > 1) & (Lambda > 0)
        values = n[rows] * _OUT_OF_RANGE
        if inside.any():
            i = rows[inside]
            L = Lambda[inside] * xmin[i]
            logz = _moments(1.0 - alpha[inside], L, np.full(i.size, math.inf))[0]
            values[inside] = n[i] * (alpha[inside] * u_mean[i] + L * (y_mean[i] - 1.0) + logz)
        return values, allowed

    start = np.stack([1.0 + 1.0 / u_mean, 1.0 / (xmin * y_mean)], axis=1)
    sim = np.repeat(start[:, None, :], 3, axis=1)
    sim[:, 1, 0] *= 1.05
    sim[:, 2, 1] *= 1.05
    everyone = np.arange(m)
    fsim = np.stack([total(everyone, sim[:, j])[0] for j in range(3)], axis=1)

    def order() -> None:
        ind = np.argsort(fsim, axis=1, kind="stable")
        sim[:] = np.take_along_axis(sim, ind[:, :, None], axis=1)
        fsim[:] = np.take_along_axis(fsim, ind, axis=1)

    order()
    active = np.ones(m, dtype=bool)
    for _iteration in range(1, limit):
        active &= calls < limit
        spread = np.abs(sim[:, 1:] - sim[:, :1]).reshape(m, -1).max(axis=1)
        active &= ~((spread <= 1e-4) & (np.abs(fsim[:, :1] - fsim[:, 1:]).max(axis=1) <= 1e-4))
        rows = np.flatnonzero(active)
        if not rows.size:
            break
        xbar = sim[rows, :2].sum(axis=1) / 2
        worst = sim[rows, 2]
        xr = 2 * xbar - worst
        fxr, ok = total(rows, xr)
        rows, xbar, worst, xr, fxr = rows[ok], xbar[ok], worst[ok], xr[ok], fxr[ok]
        expand = fxr < fsim[rows, 0]
        accept = ~expand & (fxr < fsim[rows, 1])
        outside = ~expand & ~accept & (fxr < fsim[rows, 2])
        inner = ~expand & ~accept & ~outside
        if expand.any():
            r = rows[expand]
            xe = 3 * xbar[expand] - 2 * worst[expand]
            fxe, ok_e = total(r, xe)
            better = fxe < fxr[expand]
            new = np.where(better[:, None], xe, xr[expand])
            fnew = np.where(better, fxe, fxr[expand])
            sim[r[ok_e], 2], fsim[r[ok_e], 2] = new[ok_e], fnew[ok_e]
        sim[rows[accept], 2], fsim[rows[accept], 2] = xr[accept], fxr[accept]
        shrink = np.zeros(rows.size, dtype=bool)
        for case, point, keep in ((outside, 1.5 * xbar - 0.5 * worst, np.less_equal),
                                  (inner, 0.5 * xbar + 0.5 * worst, None)):
            if not case.any():
                continue
            r = rows[case]
            fc, ok_c = total(r, point[case])
            good = keep(fc, fxr[case]) if keep is not None else fc < fsim[r, 2]
            take = ok_c & good
            sim[r[take], 2], fsim[r[take], 2] = point[case][take], fc[take]
            shrink[np.flatnonzero(case)[ok_c & ~good]] = True
        for j in (1, 2):
            r = rows[shrink]
            sim[r, j] = sim[r, 0] + 0.5 * (sim[r, j] - sim[r, 0])
            values, ok_s = total(r, sim[r, j])
            fsim[r[ok_s], j] = values[ok_s]
            shrink[np.flatnonzero(shrink)[~ok_s]] = False  # out of evaluations: scipy stops mid-shrink
        order()
    alpha, Lambda = sim[:, 0, 0], sim[:, 0, 1]
    return alpha, Lambda * xmin, fsim[:, 0] / n


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
