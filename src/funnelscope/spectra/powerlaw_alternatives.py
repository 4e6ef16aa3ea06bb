"""Likelihood-ratio tests of a power-law tail against alternative distributions.

Clauset, Shalizi & Newman, "Power-law distributions in empirical data", SIAM Review 51(4), 2009,
section 5 and appendix C. Every alternative is fitted by maximum likelihood to the same tail
``xmin <= x`` (``<= xmax`` when the power law itself was truncated), normalised on that interval, so the
log-likelihoods are comparable point by point:

.. math::

    R = \\sum_{i=1}^{n} \\left[\\ln p_{\\mathrm{PL}}(x_i) - \\ln p_{\\mathrm{alt}}(x_i)\\right].

Non-nested alternatives (exponential, log-normal, stretched exponential) use Vuong's test:
:math:`R_{\\mathrm{norm}} = R / (\\sqrt{n}\\,\\sigma)` with :math:`\\sigma` the standard deviation of the
pointwise differences, :math:`p = \\operatorname{erfc}(|R_{\\mathrm{norm}}| / \\sqrt{2})` (CSN eq. C.6).
The truncated power law :math:`p(x) \\propto x^{-a} e^{-\\lambda x}` contains the power law
(:math:`\\lambda \\to 0`), so that comparison is nested: :math:`p = P(\\chi^2_1 > 2|R|)`.

This module also holds the truncated-exponential helpers shared with the truncated power-law fitter:
:math:`u = \\ln(x / x_{\\min})` of a power law truncated at :math:`x_{\\max}` is an exponential with rate
:math:`\\beta = \\alpha - 1` truncated to :math:`[0, c]`, :math:`c = \\ln(x_{\\max}/x_{\\min})`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special

from funnelscope.errors import FunnelscopeInputError
from funnelscope.spectra.truncated_powerlaw import truncated_power_law_logpdf, truncated_power_law_mle

__all__ = [
    "ALTERNATIVES",
    "DistributionComparison",
    "compare_alternative",
    "log_truncation_norm",
    "truncated_exponential_cdf",
    "truncated_exponential_rate",
    "truncated_exponential_variance",
]

ALTERNATIVES: tuple[str, ...] = ("exponential", "lognormal", "stretched_exponential", "truncated_power_law")


@dataclass(frozen=True)
class DistributionComparison:
    """Result of a log-likelihood-ratio test of the power law against one alternative.

    Attributes:
        alternative: name of the alternative distribution (one of :data:`ALTERNATIVES`).
        R: summed log-likelihood ratio, power law minus alternative (positive favours the power law).
        p_value: significance of the sign of ``R`` (Vuong) or of the improvement (nested, chi-squared).
        normalized_R: ``R / (sqrt(n) * sd)`` of the pointwise differences.
        nested: whether the power law is a special case of the alternative.
        parameters: the alternative's maximum-likelihood parameters.
    """

    alternative: str
    R: float
    p_value: float
    normalized_R: float
    nested: bool
    parameters: dict[str, float] = field(default_factory=dict, compare=False)


# ----------------------------------------------------------------------------------------------------
# Truncated exponential on [0, c] with rate beta (any real): density beta e^{-beta u} / (1 - e^{-beta c}).


def _phi(t: np.ndarray) -> np.ndarray:
    """Mean of the truncated exponential in units of c, as a function of t = beta c: 1/t - 1/(e^t - 1)."""
    t = np.asarray(t, dtype=np.float64)
    small = np.abs(t) < 0.1
    ts = np.where(small, 1.0, t)
    with np.errstate(over="ignore"):
        direct = 1.0 / ts - 1.0 / np.expm1(ts)
    t2 = t * t
    series = 0.5 - t * (1.0 / 12.0 - t2 * (1.0 / 720.0 - t2 * (1.0 / 30240.0 - t2 / 1209600.0)))
    return np.where(small, series, direct)


def _psi(t: np.ndarray) -> np.ndarray:
    """Variance of the truncated exponential in units of c**2: 1/t**2 - 1/(4 sinh(t/2)**2) (= -phi')."""
    t = np.asarray(t, dtype=np.float64)
    small = np.abs(t) < 0.1
    ts = np.where(small, 1.0, t)
    with np.errstate(over="ignore"):
        sh = np.sinh(ts / 2.0)
        direct = 1.0 / (ts * ts) - 1.0 / (4.0 * sh * sh)
    t2 = t * t
    series = 1.0 / 12.0 - t2 * (1.0 / 240.0 - t2 * (1.0 / 6048.0 - t2 / 172800.0))
    return np.where(small, series, direct)


def truncated_exponential_rate(mean_over_c: np.ndarray) -> np.ndarray:
    """Solve the truncated-exponential likelihood equation for ``t = beta * c``, vectorised.

    The MLE of the rate of an exponential truncated to :math:`[0, c]` matches the mean:
    :math:`\\varphi(t) = 1/t - 1/(e^t - 1) = \\bar u / c`. :math:`\\varphi` decreases from 1 to 0, so the root
    is unique for :math:`0 < \\bar u / c < 1`; it is bracketed by
    :math:`[-(1/(1-\\mu) + 1),\\ 1/\\mu + 1]` and found by safeguarded Newton steps.

    Args:
        mean_over_c: :math:`\\mu = \\bar u / c`, values in (0, 1).

    Returns:
        ``t`` with the same shape (``+inf`` where ``mu <= 0``, ``-inf`` where ``mu >= 1``).
    """
    mu = np.atleast_1d(np.asarray(mean_over_c, dtype=np.float64))
    out = np.where(mu <= 0.0, np.inf, -np.inf)
    ok = (mu > 0.0) & (mu < 1.0)
    m = mu[ok]
    lo = -(1.0 / (1.0 - m) + 1.0)
    hi = 1.0 / m + 1.0
    t = np.clip(1.0 / m - 1.0 / (1.0 - m), lo, hi)  # right asymptotes at both ends, 0 at mu = 1/2
    active = np.arange(m.size)
    for _it in range(100):
        ta, ma = t[active], m[active]
        f = _phi(ta) - ma
        lo_a = np.where(f > 0.0, ta, lo[active])
        hi_a = np.where(f > 0.0, hi[active], ta)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = ta + f / _psi(ta)
        new = np.where((step > lo_a) & (step < hi_a), step, 0.5 * (lo_a + hi_a))
        new = np.where(f == 0.0, ta, new)
        t[active], lo[active], hi[active] = new, lo_a, hi_a
        moving = np.abs(new - ta) > 2e-16 * np.maximum(1.0, np.abs(ta))
        active = active[moving & (f != 0.0)]
        if not active.size:
            break
    out[ok] = t
    return out.reshape(np.shape(mean_over_c))


def truncated_exponential_variance(t: np.ndarray) -> np.ndarray:
    """Variance of ``u / c`` under the truncated exponential with ``t = beta c`` (the Fisher information)."""
    return _psi(t)


def log_truncation_norm(beta: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``log(beta / (1 - exp(-beta c)))``, the log normaliser of the truncated exponential, for any real beta."""
    beta = np.asarray(beta, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    b = np.abs(beta)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        pos = np.log(b) - np.log(-np.expm1(-b * c))
        neg = np.log(b) - (b * c + np.log(-np.expm1(-b * c)))
        out = np.where(beta > 0, pos, neg)
    return np.where(beta == 0, -np.log(c), out)


def truncated_exponential_cdf(beta: np.ndarray, u: np.ndarray, c: np.ndarray) -> np.ndarray:
    """CDF of the exponential with rate ``beta`` (any real) truncated to ``[0, c]``, evaluated at ``u``.

    :math:`F(u) = (1 - e^{-\\beta u}) / (1 - e^{-\\beta c})`, written so that it neither overflows for
    large negative rates nor loses precision near :math:`\\beta = 0`.
    """
    b = np.abs(beta)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pos = np.expm1(-b * u) / np.expm1(-b * c)
        neg = (np.exp(b * (u - c)) - np.exp(-b * c)) / -np.expm1(-b * c)
        out = np.where(beta > 0, pos, neg)
    return np.where(beta == 0, u / c, out)


# ----------------------------------------------------------------------------------------------------
# Alternatives: each returns (parameters, pointwise log-likelihood) on the tail, normalised on [xmin, upper).


def _fit_exponential(x: np.ndarray, xmin: float, upper: float) -> tuple[dict[str, float], np.ndarray]:
    y = x - xmin
    if math.isinf(upper):
        rate = 1.0 / float(np.mean(y))
        return {"lambda": rate}, math.log(rate) - rate * y
    width = upper - xmin
    rate = float(truncated_exponential_rate(np.mean(y) / width)) / width
    return {"lambda": rate}, log_truncation_norm(rate, width) - rate * y


def _log_normal_mass(a: float, b: float) -> float:
    """log(Phi(b) - Phi(a)) for a < b, without cancellation in either tail."""
    if a > 0.0:
        la, lb = special.log_ndtr(-a), special.log_ndtr(-b)
        return float(la + np.log1p(-np.exp(lb - la)))
    la, lb = special.log_ndtr(a), special.log_ndtr(b)
    return float(lb + np.log1p(-np.exp(la - lb)))


_INVALID = 1e100  # objective outside the parameter box (finite, so Nelder-Mead's simplex arithmetic stays clean)


def _minimise(objective: Callable[[np.ndarray], float], starts: list[np.ndarray]) -> np.ndarray:
    """Nelder-Mead from each start; the best end point."""
    best = None
    for start in starts:
        with np.errstate(all="ignore"):
            res = optimize.minimize(
                objective, start, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000}
            )
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    return np.asarray(best.x)


def _fit_lognormal(x: np.ndarray, xmin: float, upper: float) -> tuple[dict[str, float], np.ndarray]:
    v = np.log(x)
    lo, hi = math.log(xmin), math.log(upper) if math.isfinite(upper) else math.inf

    def loglik(p: np.ndarray) -> np.ndarray:
        mu, sigma = p[0], math.exp(p[1])
        z = (v - mu) / sigma
        mass = _log_normal_mass((lo - mu) / sigma, (hi - mu) / sigma)
        return -v - math.log(sigma) - 0.5 * math.log(2 * math.pi) - 0.5 * z * z - mass

    def objective(p: np.ndarray) -> float:
        if not (abs(p[0] - lo) < 1e4 and -30.0 < p[1] < 10.0):
            return _INVALID
        with np.errstate(all="ignore"):
            val = -float(np.mean(loglik(p)))
        return val if math.isfinite(val) else _INVALID

    sd = max(float(np.std(v)), 1e-3)
    starts = [np.array([float(np.mean(v)), math.log(sd)]), np.array([lo, math.log(2 * sd)])]
    p = _minimise(objective, starts)
    return {"mu": float(p[0]), "sigma": math.exp(p[1])}, loglik(p)


def _fit_stretched_exponential(x: np.ndarray, xmin: float, upper: float) -> tuple[dict[str, float], np.ndarray]:
    """Weibull tail p(x) = b l^b x^(b-1) e^{-(l x)^b}, conditional on xmin <= x; fitted as (log A, log b).

    With y = x / xmin and A = (l xmin)^b: ln p = ln b + ln A + (b - 1) ln y - ln xmin - A (y^b - 1). As b -> 0
    with A b fixed this tends to a power law, so the parameters are kept in a box to stop the search there.
    """
    logy = np.log(x / xmin)
    log_top = math.log(upper / xmin) if math.isfinite(upper) else math.inf

    def loglik(p: np.ndarray) -> np.ndarray:
        scale, beta = math.exp(p[0]), math.exp(p[1])
        out = p[1] + p[0] + (beta - 1.0) * logy - math.log(xmin) - scale * np.expm1(beta * logy)
        if math.isfinite(log_top):
            out = out - math.log(-math.expm1(-scale * math.expm1(beta * log_top)))
        return out

    def objective(p: np.ndarray) -> float:
        if not (-50.0 < p[0] < 50.0 and -30.0 < p[1] < 5.0):
            return _INVALID
        with np.errstate(all="ignore"):
            try:
                val = -float(np.mean(loglik(p)))
            except (OverflowError, ValueError):
                return _INVALID
        return val if math.isfinite(val) else _INVALID

    scale0 = 1.0 / max(float(np.mean(np.expm1(logy))), 1e-12)  # the exponential (b = 1)
    p = _minimise(objective, [np.array([math.log(scale0), 0.0]), np.array([0.0, math.log(0.5)])])
    beta = math.exp(p[1])
    log_rate = p[0] / beta - math.log(xmin)
    rate = math.exp(log_rate) if log_rate < 700 else math.inf
    return {"lambda": rate, "beta": beta}, loglik(p)


def _fit_truncated_power_law(x: np.ndarray, xmin: float, upper: float) -> tuple[dict[str, float], np.ndarray]:
    """The truncated power law's MLE on the tail (any real α, Λ ≥ 0), from
    :func:`~funnelscope.spectra.truncated_powerlaw.truncated_power_law_mle`, and its pointwise log-likelihood."""
    y = x / xmin
    c = math.log(upper / xmin) if math.isfinite(upper) else math.inf
    a, L, _, _ = truncated_power_law_mle(np.array([np.mean(np.log(y))]), np.array([np.mean(y)]), c=c)
    params = {"alpha": float(a[0]), "lambda": float(L[0]) / xmin}
    return params, truncated_power_law_logpdf(x, alpha=params["alpha"], Lambda=params["lambda"], xmin=xmin,
                                              xmax=upper)


def compare_alternative(
    alternative: str, tail: np.ndarray, *, xmin: float, upper: float, alpha: float, power_law_loglik: np.ndarray
) -> DistributionComparison:
    """Fit ``alternative`` by maximum likelihood to ``tail`` and test it against the power law.

    Args:
        alternative: one of :data:`ALTERNATIVES`.
        tail: the tail values (all ``>= xmin``), float64.
        xmin: lower end of the tail.
        upper: upper end of the support (``inf`` for an untruncated power law).
        alpha: the power-law exponent (the nested fit's when it is the power law itself).
        power_law_loglik: pointwise log-likelihood of the fitted power law on ``tail``.

    Returns:
        The :class:`DistributionComparison`.

    Raises:
        FunnelscopeInputError: unknown ``alternative`` or a tail with fewer than two distinct values.
    """
    if alternative not in ALTERNATIVES:
        raise FunnelscopeInputError(f"alternative={alternative!r} is not one of {ALTERNATIVES}")
    if tail.size < 2 or tail[-1] <= tail[0]:
        raise FunnelscopeInputError("the power-law tail needs at least two distinct values to compare fits")
    nested = alternative == "truncated_power_law"
    if alternative == "exponential":
        params, alt = _fit_exponential(tail, xmin, upper)
    elif alternative == "lognormal":
        params, alt = _fit_lognormal(tail, xmin, upper)
    elif alternative == "stretched_exponential":
        params, alt = _fit_stretched_exponential(tail, xmin, upper)
    else:
        params, alt = _fit_truncated_power_law(tail, xmin, upper)
        if not alt.sum() >= power_law_loglik.sum():
            # the lambda -> 0 limit is the power law itself: the nested MLE is never worse
            params, alt = {"alpha": alpha, "lambda": 0.0}, power_law_loglik.copy()
    diff = power_law_loglik - alt
    R = float(diff.sum())
    sd = float(diff.std())
    normalized = R / (math.sqrt(diff.size) * sd) if sd > 0 else 0.0
    if nested:
        p_value = float(special.chdtrc(1, 2.0 * abs(R)))  # chi-squared survival, 1 dof
    else:
        p_value = float(special.erfc(abs(normalized) / math.sqrt(2.0)))
    return DistributionComparison(alternative, R, p_value, normalized, nested, params)
