"""Continuous power-law fit of a spectrum's tail (Clauset, Shalizi & Newman 2009), WeightWatcher-compatible.

For a candidate lower cut-off :math:`x_{\\min} = x_{(i)}` (the i-th smallest value) with tail
:math:`x_{(i)} \\le \\dots \\le x_{(N-1)}` of size :math:`n = N - i`, the maximum-likelihood exponent and
its standard error are (CSN eqs. 3.5 and 3.7)

.. math::

    \\hat\\alpha = 1 + n \\Big/ \\sum_{j \\ge i} \\ln\\frac{x_{(j)}}{x_{\\min}}, \\qquad
    \\sigma = \\frac{\\hat\\alpha - 1}{\\sqrt{n}},

and :math:`x_{\\min}` minimises the Kolmogorov–Smirnov distance between the empirical and fitted CDFs of the
tail (CSN section 3.3), written exactly as WeightWatcher 0.7.7 writes it:

.. math::

    D = \\max_{0 \\le k < n} \\left| 1 - \\left(\\frac{x_{(i+k)}}{x_{\\min}}\\right)^{1-\\hat\\alpha}
        - \\frac{k}{n} \\right|  \\quad (D = 1 \\text{ if } \\hat\\alpha \\le 1).

Every sorted value but the largest is a candidate (duplicates included, by index) and ties in ``D`` go to the
smallest index, so the result equals WeightWatcher's ``WWFit`` and a brute-force loop, bit for bit. The search
is exact but not quadratic in practice: all alphas come from suffix sums of logs (in extended precision); every
candidate's ``D`` is bounded from below by the deviations at 8 quantiles of its tail, evaluated in one
vectorised block, minus a rigorous margin for the difference from the reference floating-point expression.
Then the candidate with the smallest bound is evaluated exactly; the data points where its deviation peaks
(above and below the fit) are where its neighbours peak too, so every remaining candidate's bound is raised
with its deviation there ("cutting planes"), and candidates whose bound exceeds the best exact ``D`` are
dropped. This repeats until the smallest bound exceeds the best ``D``; on eigenvalue spectra and Pareto
samples a handful of exact evaluations suffice.

Reference: A. Clauset, C. R. Shalizi, M. E. J. Newman, "Power-law distributions in empirical data",
SIAM Review 51(4):661–703, 2009.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from funnelscope.errors import FunnelscopeInputError
from funnelscope.options import check_number
from funnelscope.spectra.powerlaw_alternatives import (
    ALTERNATIVES,
    DistributionComparison,
    compare_alternative,
    log_truncation_norm,
    truncated_exponential_cdf,
    truncated_exponential_rate,
    truncated_exponential_variance,
)
from funnelscope.spectra.powerlaw_bootstrap import GoodnessOfFit, sample_power_law, semi_parametric_bootstrap

__all__ = ["DistributionComparison", "GoodnessOfFit", "PowerLawFit", "fit_powerlaw"]

#: WeightWatcher's small-sample rule applies below this many values (``SMALL_N_CUTOFF`` in WW_powerlaw.py).
SMALL_SAMPLE_N = 20

XminSpec = float | tuple[float | None, float | None] | None


@dataclass(frozen=True)
class _FitOptions:
    xmin: XminSpec
    xmax: float | None
    min_value: float
    truncated: bool
    small_sample_rule: bool


@dataclass(frozen=True)
class PowerLawFit:
    """A fitted power-law tail :math:`p(x) \\propto x^{-\\alpha}` for :math:`x \\ge x_{\\min}`.

    Attributes:
        alpha: exponent :math:`\\hat\\alpha`.
        xmin: lower cut-off (a data value).
        xmax: truncation point of the fitted law when ``truncated``, else the largest value used.
        D: Kolmogorov–Smirnov distance of the fit on the tail.
        sigma: standard error of ``alpha``: :math:`(\\hat\\alpha - 1)/\\sqrt{n_{tail}}` (Fisher information of
            the truncated law when ``truncated``).
        n_tail: number of values in the tail (the last ``n_tail`` of ``values``).
        n: number of values used (after ``min_value`` and ``xmax``).
        truncated: whether ``xmax`` was enforced in the likelihood.
        small_sample: whether WeightWatcher's small-sample rule chose this fit.
        values: the sorted float64 values used (read-only).
    """

    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    n_tail: int
    n: int
    truncated: bool
    small_sample: bool = False
    values: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)
    options: _FitOptions | None = field(default=None, repr=False, compare=False)

    def _tail(self) -> np.ndarray:
        return self.values[self.n - self.n_tail :]

    def _log_pdf(self, x: np.ndarray) -> np.ndarray:
        beta = self.alpha - 1.0
        u = np.log(x / self.xmin)
        if not self.truncated:
            return math.log(beta) - math.log(self.xmin) - self.alpha * u
        c = math.log(self.xmax / self.xmin)
        return log_truncation_norm(beta, c) - beta * u - np.log(x)

    def pdf(self, x: Any) -> np.ndarray:
        """Density of the fitted tail law at ``x`` (zero outside ``[xmin, xmax]``; ``xmax`` only if truncated)."""
        x = np.asarray(x, dtype=np.float64)
        inside = x >= self.xmin
        if self.truncated:
            inside &= x <= self.xmax
        safe = np.where(inside, x, self.xmin)
        return np.where(inside, np.exp(self._log_pdf(safe)), 0.0)

    def ccdf(self, x: Any) -> np.ndarray:
        """:math:`P(X > x \\mid X \\ge x_{\\min})` of the fitted law: :math:`(x/x_{\\min})^{1-\\alpha}` untruncated."""
        x = np.asarray(x, dtype=np.float64)
        u = np.log(np.maximum(x, self.xmin) / self.xmin)
        if not self.truncated:
            return np.exp(-(self.alpha - 1.0) * u)
        c = math.log(self.xmax / self.xmin)
        return np.clip(1.0 - truncated_exponential_cdf(self.alpha - 1.0, np.minimum(u, c), c), 0.0, 1.0)

    def compare(self, alternative: str) -> DistributionComparison:
        """Log-likelihood-ratio test of this power law against ``alternative`` on the same tail.

        Args:
            alternative: ``"exponential"``, ``"lognormal"``, ``"stretched_exponential"`` (Vuong's test) or
                ``"truncated_power_law"`` (nested, chi-squared with one degree of freedom).

        Returns:
            :class:`DistributionComparison` with ``R > 0`` favouring the power law (CSN section 5).

        Raises:
            FunnelscopeInputError: unknown alternative or a degenerate tail.
        """
        tail = self._tail()
        upper = self.xmax if self.truncated else math.inf
        return compare_alternative(
            alternative, tail, xmin=self.xmin, upper=upper, alpha=self.alpha, power_law_loglik=self._log_pdf(tail)
        )

    def compare_all(self) -> pd.DataFrame:
        """All comparisons as a DataFrame with columns alternative, R, normalized_R, p_value, nested."""
        rows = [self.compare(name) for name in ALTERNATIVES]
        return pd.DataFrame(
            {
                "alternative": [r.alternative for r in rows],
                "R": [r.R for r in rows],
                "normalized_R": [r.normalized_R for r in rows],
                "p_value": [r.p_value for r in rows],
                "nested": [r.nested for r in rows],
            }
        )

    def goodness_of_fit(
        self, *, n_bootstrap: int = 1000, seed: int | np.random.Generator | None = None
    ) -> GoodnessOfFit:
        """CSN's semi-parametric bootstrap p-value (section 4.1); each synthetic set is refitted the same way.

        Args:
            n_bootstrap: number of synthetic data sets.
            seed: seed or generator for :func:`numpy.random.default_rng`.

        Returns:
            :class:`GoodnessOfFit`; ``p_value <= 0.1`` rules the power law out.
        """
        opts = self.options or _FitOptions(None, None, 0.0, self.truncated, True)
        xmax = self.xmax if self.truncated else opts.xmax

        def refit(data: np.ndarray) -> float:
            return fit_powerlaw(
                data,
                xmin=opts.xmin,
                xmax=xmax,
                min_value=opts.min_value,
                truncated=opts.truncated,
                small_sample_rule=opts.small_sample_rule,
            ).D

        return semi_parametric_bootstrap(
            self.values,
            n_tail=self.n_tail,
            alpha=self.alpha,
            xmin=self.xmin,
            xmax=self.xmax if self.truncated else None,
            D=self.D,
            refit=refit,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )

    def sample(self, size: int, *, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """Draw ``size`` values from the fitted tail law."""
        rng = np.random.default_rng(seed)
        return sample_power_law(rng, size, alpha=self.alpha, xmin=self.xmin, xmax=self.xmax if self.truncated else None)

    def to_dict(self) -> dict[str, float | int | bool]:
        """The scalar fields as plain Python values."""
        return {
            "alpha": float(self.alpha),
            "xmin": float(self.xmin),
            "xmax": float(self.xmax),
            "D": float(self.D),
            "sigma": float(self.sigma),
            "n_tail": int(self.n_tail),
            "n": int(self.n),
            "truncated": bool(self.truncated),
            "small_sample": bool(self.small_sample),
        }


def _as_values(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        tensor = values.detach().cpu()
        if tensor.is_complex():
            raise FunnelscopeInputError(f"values must be real, got a complex tensor of dtype {tensor.dtype}")
        values = tensor.double().numpy() if tensor.is_floating_point() else tensor.numpy()
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as err:
        raise FunnelscopeInputError(f"values could not be read as an array: {err}") from err
    if arr.dtype.kind not in "iuf":
        raise FunnelscopeInputError(f"values must be real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise FunnelscopeInputError(f"values must be 1-D, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise FunnelscopeInputError(
            f"values contain {bad.size} non-finite entries (first: values[{bad[0]}] = {arr[bad[0]]})"
        )
    return arr


def _positive_number(name: str, value: Any, *, allow_zero: bool = False) -> float:
    v = check_number(name, value, positive=False)
    if v < 0 or (v == 0 and not allow_zero):
        raise FunnelscopeInputError(f"{name}={value!r} must be finite and {'>= 0' if allow_zero else '> 0'}")
    return v


def _candidates(x: np.ndarray, xmin: XminSpec) -> np.ndarray:
    """Candidate indices (ascending): all but the last, those in a (lo, hi) range, or the snapped fixed xmin."""
    last = x.size - 2
    if xmin is None:
        return np.arange(last + 1)
    if isinstance(xmin, tuple | list):
        if len(xmin) != 2:
            raise FunnelscopeInputError(f"xmin={xmin!r}: a range must be a (lo, hi) pair")
        lo = -math.inf if xmin[0] is None else _positive_number("xmin[0]", xmin[0], allow_zero=True)
        hi = math.inf if xmin[1] is None else _positive_number("xmin[1]", xmin[1], allow_zero=True)
        if lo > hi:
            raise FunnelscopeInputError(f"xmin={xmin!r}: lo > hi")
        a, b = np.searchsorted(x, lo, "left"), min(np.searchsorted(x, hi, "right") - 1, last)
        if a > b:
            raise FunnelscopeInputError(f"xmin={xmin!r} contains no candidate (values span [{x[0]}, {x[-1]}])")
        return np.arange(a, b + 1)
    v = _positive_number("xmin", xmin)
    i = int(np.argmin(np.abs(x - v)))  # WeightWatcher snaps xmin to the nearest value
    if i > last:
        raise FunnelscopeInputError(f"xmin={xmin!r} snaps to the largest value {x[-1]}: the tail needs 2 values")
    return np.array([i])


def fit_powerlaw(
    values: Any,
    *,
    xmin: XminSpec = None,
    xmax: float | None = None,
    min_value: float = 1e-5,
    truncated: bool = False,
    small_sample_rule: bool = True,
) -> PowerLawFit:
    """Fit a continuous power law to the tail of ``values`` (CSN 2009; WeightWatcher 0.7.7 defaults).

    Values ``<= min_value`` are dropped (WeightWatcher drops eigenvalues ``<= 1e-5``), then, with the
    defaults, every sorted value but the largest is tried as :math:`x_{\\min}` with the MLE
    :math:`\\hat\\alpha = 1 + n / \\sum \\ln(x/x_{\\min})` (CSN eq. 3.5), and the one with the smallest KS
    distance :math:`D` wins (section 3.3; the first on ties); :math:`\\sigma = (\\hat\\alpha-1)/\\sqrt{n}`
    (eq. 3.7). The result is identical to ``weightwatcher.WW_powerlaw.WWFit`` on the same values.

    WeightWatcher's small-sample rule: when fewer than 20 values are searched, tails of fewer than 8 values are
    skipped and the bias-corrected :math:`\\hat\\alpha = 1 + (n-1)/\\sum\\ln(x/x_{\\min})` is used; the candidate
    is still the first minimum of ``D`` (WeightWatcher computes an objective ``J = D - 0.868/sqrt(n)`` but its
    constructor then re-selects by ``argmin(D)``; funnelscope reproduces what it returns). Turn the rule off with
    ``small_sample_rule=False``.

    With ``truncated=True`` the law is :math:`p(x) = (\\alpha-1)x^{-\\alpha}/(x_{\\min}^{1-\\alpha} -
    x_{\\max}^{1-\\alpha})` on :math:`[x_{\\min}, x_{\\max}]` (``xmax`` defaults to the largest value), its MLE
    solved numerically for every candidate at once, ``D`` measured against its CDF, with the same exact search.

    Args:
        values: 1-D array-like or torch tensor of finite values (e.g. eigenvalues).
        xmin: ``None`` to search; a number to fix :math:`x_{\\min}` (snapped to the nearest value, as
            WeightWatcher does); or a ``(lo, hi)`` pair (either may be ``None``) restricting the candidates to
            values in ``[lo, hi]``. Note ``WWFit(data, xmin=x)`` searches from the snapped value upwards, which
            is ``xmin=(snapped, None)`` here.
        xmax: values above it are dropped (WeightWatcher); with ``truncated=True`` also the truncation point.
        min_value: values ``<= min_value`` are dropped first (``>= 0``; non-positive values are always dropped).
        truncated: use the exact truncated MLE instead of WeightWatcher's untruncated one.
        small_sample_rule: apply WeightWatcher's small-sample rule (untruncated fits only).

    Returns:
        :class:`PowerLawFit`.

    Raises:
        FunnelscopeInputError: non-1-D or non-finite values, fewer than 2 values left (or all equal),
            a bad ``xmin``/``xmax``/``min_value``.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).pareto(1.5, 2000) + 1.0   # alpha = 2.5, xmin = 1
        >>> fit = fit_powerlaw(x)
        >>> abs(fit.alpha - 2.5) < 3 * fit.sigma
        True
    """
    arr = _as_values(values)
    min_value = _positive_number("min_value", min_value, allow_zero=True)
    for name, flag in (("truncated", truncated), ("small_sample_rule", small_sample_rule)):
        if not isinstance(flag, bool | np.bool_):
            raise FunnelscopeInputError(f"{name}={flag!r} must be a bool")
    x = np.sort(arr[arr > min_value])
    if xmax is not None:
        xmax = _positive_number("xmax", xmax)
        x = x[x <= xmax]
    if x.size < 2:
        raise FunnelscopeInputError(
            f"need at least 2 values in (min_value={min_value}, xmax={xmax}], got {x.size} of {arr.size}"
        )
    if x[0] == x[-1]:
        raise FunnelscopeInputError(f"all {x.size} values equal {x[0]}: no power law to fit")
    candidates = _candidates(x, xmin)
    N = x.size
    logx = np.log(x)
    small = False
    if truncated:
        top = float(x[-1]) if xmax is None else xmax
        model = _TruncatedTail(x, logx, top)
        i, D, alpha = _exact_search(model, candidates)
        c = math.log(top / x[i])
        with np.errstate(divide="ignore", invalid="ignore"):  # inf/nan only for a degenerate (constant) tail
            sigma = 1.0 / (c * np.sqrt((N - i) * truncated_exponential_variance((alpha - 1.0) * c)))
        fit_xmax = top
    else:
        small = bool(small_sample_rule and N - candidates[0] < SMALL_SAMPLE_N)
        if small:
            i, D, alpha = _small_sample_search(x, logx, candidates)
        else:
            i, D, alpha = _exact_search(_UntruncatedTail(x, logx), candidates)
        sigma = float((alpha - 1.0) / np.sqrt(N - i))
        fit_xmax = float(x[-1])
    x.setflags(write=False)
    return PowerLawFit(
        alpha=float(alpha),
        xmin=float(x[i]),
        xmax=fit_xmax,
        D=float(D),
        sigma=float(sigma),
        n_tail=int(N - i),
        n=int(N),
        truncated=bool(truncated),
        small_sample=small,
        values=x,
        options=_FitOptions(xmin, xmax, min_value, bool(truncated), bool(small_sample_rule)),
    )


# ----------------------------------------------------------------------------------------------------
# The exact xmin search. A "tail model" gives, for candidate i, approximate CDF values on any subset of its
# tail (``cdf_rows``), a per-candidate ``margin`` that bounds how far those approximations can be from the
# reference computation of |F_fit - F_emp| (inf: no usable bound), a ``floor`` that bounds D from below where
# the margin cannot, and ``exact(i) -> (D, alpha, peaks)`` with the data indices where the deviation peaks.

_EPS = float(np.finfo(np.float64).eps)
_LD_EPS = float(np.finfo(np.longdouble).eps)
_BLOCK = 1 << 15  # grid values per vectorised block
_FIRST_GRID = 8  # quantiles per tail for the first lower bounds


def _suffix_log_sums(logx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tail sizes n_i = N - i and s_i = sum_{j >= i} ln(x_j / x_i) for i < N - 1, in extended precision."""
    N = logx.size
    n = N - np.arange(N - 1)
    ld = logx.astype(np.longdouble)
    suffix = np.cumsum(ld[::-1])[::-1][: N - 1]
    return n, (suffix - n * ld[: N - 1]).astype(np.float64)


class _UntruncatedTail:
    """WeightWatcher's fit: suffix-sum alphas for the bounds, its exact floating-point expression for finalists."""

    def __init__(self, x: np.ndarray, logx: np.ndarray) -> None:
        self.x, self.logx = x, logx
        n, s = _suffix_log_sums(logx)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            self.alpha = 1.0 + n / s
            # |s_reference - s| is at most numpy's pairwise-summation error plus ours (relative to s: relerr);
            # the CDF moves by at most |d alpha| / (e (alpha - 1)) <= relerr, and evaluating it in log space
            # instead of with ``**`` costs at most (alpha - 1) eps (8 max|ln x| + 2).
            abs_suffix = np.cumsum(np.abs(logx)[::-1])[::-1][:-1]
            gamma = (40.0 + np.log2(n) + n / 8192.0) * _EPS + n * _LD_EPS
            relerr = (1.01 * gamma * (abs_suffix + n * np.abs(logx[:-1])) + 2.0 * _EPS * np.abs(s)) / s
            rounding = 4.0 * _EPS * self.alpha / (self.alpha - 1.0)
            lmax = float(np.max(np.abs(logx)))
            margin = 2.0 * (relerr + rounding) + (self.alpha - 1.0) * _EPS * (8.0 * lmax + 2.0) + 1e-14
            self.margin = np.where((s > 0) & (relerr < 0.1) & np.isfinite(margin), margin, np.inf)
        # a constant tail has F_fit = 1 - 1**(1 - alpha) = 0 whatever alpha is, so D is (n - 1)/n or 1
        self.floor = np.where(x[:-1] == x[-1], (n - 1) / n, -np.inf)

    def cdf_rows(self, i: np.ndarray, k: np.ndarray) -> np.ndarray:
        """F_fit at offsets ``k`` (shape (G, m)) of the tails of candidates ``i`` (shape (m,)), in log space."""
        return 1.0 - np.exp((1.0 - self.alpha[i]) * (self.logx[i + k] - self.logx[i]))

    def exact(self, i: int) -> tuple[float, float, np.ndarray]:
        x, logx = self.x, self.logx
        n = float(x.size - i)
        with np.errstate(divide="ignore"):
            alpha = 1 + n / (np.sum(logx[i:]) - n * logx[i])  # as WW_powerlaw.py writes it
        if not alpha > 1:
            return 1.0, float(alpha), np.empty(0, dtype=np.intp)
        diff = 1 - (x[i:] / x[i]) ** (-alpha + 1) - np.arange(n) / n
        return float(np.max(np.abs(diff))), float(alpha), i + np.array([diff.argmax(), diff.argmin()])


class _TruncatedTail:
    """Truncated power law on [x_i, top]: alpha - 1 = t / c solves the truncated-exponential MLE for u = ln(x/x_i)."""

    def __init__(self, x: np.ndarray, logx: np.ndarray, top: float) -> None:
        self.x, self.logx = x, logx
        n, s = _suffix_log_sums(logx)
        log_top = logx[-1] if top == x[-1] else math.log(top)
        self.c = log_top - logx[:-1]
        ok = (self.c > 0) & (s > 0)
        c_safe = np.where(ok, self.c, 1.0)
        t = truncated_exponential_rate(np.where(ok, s / (n * c_safe), 0.5))
        self.beta = np.where(ok, t / c_safe, np.inf)
        self.margin = np.where(ok, 1e-14, np.inf)
        self.floor = np.where(ok, -np.inf, 1.0)  # degenerate candidates get D = 1

    def cdf_rows(self, i: np.ndarray, k: np.ndarray) -> np.ndarray:
        u = self.logx[i + k] - self.logx[i]
        return np.minimum(truncated_exponential_cdf(self.beta[i], u, self.c[i]), 1.0)

    def exact(self, i: int) -> tuple[float, float, np.ndarray]:
        alpha = 1.0 + float(self.beta[i])
        if not np.isfinite(self.margin[i]):
            return 1.0, alpha, np.empty(0, dtype=np.intp)
        n = self.x.size - i
        diff = self.cdf_rows(np.array([i]), np.arange(n)[:, None])[:, 0] - np.arange(n) / n
        return float(np.max(np.abs(diff))), alpha, i + np.array([diff.argmax(), diff.argmin()])


def _grid_bounds(
    model: _UntruncatedTail | _TruncatedTail, rows: np.ndarray, margin: np.ndarray, grid: int
) -> np.ndarray:
    """Lower bounds of D for each candidate in ``rows`` (ascending) from ``grid`` quantiles of its tail.

    At offsets k_0 = 0 < ... < k_{G-1} = n - 1 (rounded multiples of (n - 1)/(G - 1)) the values
    |F(k) - k/n| are lower bounds of D. Arrays are laid out grid-major so that reductions are vectorised.
    """
    n = model.x.size - rows
    lb = np.empty(rows.size)
    start = 0
    while start < rows.size:  # n decreases along rows; small tails get a full grid of their own size
        g = int(min(grid, n[start]))
        threshold = grid if n[start] >= grid else max(g // 2, 1)
        end = min(rows.size, start + max(1, _BLOCK // g), int(np.searchsorted(-n, -threshold, "right")))
        end = max(end, start + 1)
        r, nn = rows[start:end], n[start:end]
        fk = np.rint(np.linspace(0.0, 1.0, g)[:, None] * (nn - 1))
        diff = model.cdf_rows(r, fk.astype(np.intp)) - fk / nn
        lb[start:end] = np.maximum(diff.max(axis=0), -diff.min(axis=0))
        start = end
    return lb - margin


def _point_bounds(
    model: _UntruncatedTail | _TruncatedTail, rows: np.ndarray, margin: np.ndarray, positions: np.ndarray
) -> np.ndarray:
    """Lower bounds of D for candidates ``rows`` from the data points ``positions`` (those inside each tail)."""
    k = np.maximum(positions[:, None] - rows[None, :], 0)  # outside a tail: offset 0, where |F - 0| = 0
    with np.errstate(invalid="ignore", over="ignore"):
        diff = model.cdf_rows(rows, k) - k / (model.x.size - rows)
        bound = np.maximum(diff.max(axis=0), -diff.min(axis=0)) - margin
    return np.where(np.isfinite(margin), bound, -np.inf)  # no bound where the approximation is unusable


def _exact_search(model: _UntruncatedTail | _TruncatedTail, candidates: np.ndarray) -> tuple[int, float, float]:
    """argmin of the exact D over ``candidates`` (first index on ties), its D and alpha; equals brute force.

    1. Lower bounds for every candidate from a quantile grid of its tail (:func:`_grid_bounds`).
    2. Repeatedly evaluate exactly the unvisited candidate with the smallest bound (smallest index on ties);
       the data points where its deviation peaks (above and below) are where neighbouring candidates peak
       too, so every candidate's bound is raised with its deviation there ("cutting planes"); candidates whose
       bound exceeds the best exact D are dropped. Stop when the smallest bound exceeds the best D.
    """
    N = model.x.size
    best: list[Any] = [math.inf, -1, math.nan]  # D, index, alpha

    def visit(i: int) -> np.ndarray:
        D, alpha, peaks = model.exact(i)
        if D < best[0] or (D == best[0] and i < best[1]):
            best[:] = [D, i, alpha]
        return peaks

    alive, margin = candidates, model.margin[candidates]
    lb = model.floor[candidates].copy()
    sure = np.isfinite(margin)
    n = N - alive[sure]
    if 3 * np.minimum(n, _FIRST_GRID).sum() <= n.sum():
        lb[sure] = np.maximum(lb[sure], _grid_bounds(model, alive[sure], margin[sure], _FIRST_GRID))
    known: set[int] = set()
    exact_work, bound_work = 0, 0  # bounding never costs much more than the evaluations it could save
    while alive.size:
        j = int(np.argmin(lb))  # alive is ascending, so ties go to the smallest index
        if lb[j] > best[0]:
            break
        peaks = visit(int(alive[j]))
        exact_work += N - int(alive[j])
        lb[j] = np.inf  # visited
        new = sorted({int(q) for p in peaks for q in (p - 1, p, p + 1) if 0 <= q < N} - known)
        keep = lb <= best[0]
        alive, margin, lb = alive[keep], margin[keep], lb[keep]
        if new and alive.size and bound_work <= exact_work + 16 * N:
            known.update(new)
            bound_work += len(new) * alive.size
            lb = np.maximum(lb, _point_bounds(model, alive, margin, np.array(new)))
    return int(best[1]), float(best[0]), float(best[2])


def _small_sample_search(x: np.ndarray, logx: np.ndarray, candidates: np.ndarray) -> tuple[int, float, float]:
    """WeightWatcher 0.7.7's small-N branch as it behaves (``WWFit.fit_powerlaw_smallN`` then ``WWFit.__init__``).

    Tails of fewer than 8 values, or with s = sum ln(x/xmin) <= 1e-12, are skipped (their D stays 1); the others
    get alpha = 1 + (n - 1)/s and their D. ``fit_powerlaw_smallN`` picks the minimum of J = D - 0.868/sqrt(n), but
    ``__init__`` then re-selects ``argmin(Ds)``, so the effective choice is the first minimum of D. With no usable
    tail, WW fits the lowest candidate with the same alpha (its reported sigma is then meaningless).
    """
    N = x.size
    best: tuple[float, int, float] | None = None  # D, index, alpha
    for i in (int(c) for c in candidates):
        n = float(N - i)
        s = np.sum(logx[i:]) - n * logx[i]
        if N - i < 8 or s <= 1e-12 or not 1.0 + (n - 1.0) / s > 1.0:
            continue
        alpha = 1.0 + (n - 1.0) / s
        D = float(np.max(np.abs(np.arange(N - i, dtype=np.float64) / n - (1.0 - (x[i:] / x[i]) ** (1.0 - alpha)))))
        if best is None or D < best[0]:
            best = (D, i, alpha)
    if best is not None:
        return best[1], best[0], float(best[2])
    i = int(candidates[0])
    n = float(N - i)
    s = np.sum(logx[i:]) - n * logx[i]
    if s <= 1e-12:
        return i, 1.0, 1.0
    alpha = 1.0 + (n - 1.0) / s
    F_fit = 1.0 - (x[i:] / x[i]) ** (1.0 - alpha)
    return i, float(np.max(np.abs(np.arange(N - i, dtype=np.float64) / n - F_fit))), float(alpha)
