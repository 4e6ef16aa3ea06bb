"""Goodness of fit of a power-law tail by the semi-parametric bootstrap of Clauset, Shalizi & Newman (2009).

CSN, SIAM Review 51(4), 2009, section 4.1: build synthetic data sets of the same size ``n`` in which each
value is, with probability ``n_tail / n``, drawn from the fitted power law above ``xmin`` and otherwise drawn
uniformly (with replacement) from the observed values below ``xmin``; refit each synthetic set with the same
procedure (including the ``xmin`` search) and report

.. math::

    p = \\frac{\\#\\{b : D_b \\ge D\\}}{B}.

A small ``p`` (CSN use ``p <= 0.1``) rules the power law out; a large one only says it is plausible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from funnelscope.options import check_int

__all__ = ["GoodnessOfFit", "sample_power_law", "semi_parametric_bootstrap"]


@dataclass(frozen=True)
class GoodnessOfFit:
    """Bootstrap goodness of fit.

    Attributes:
        p_value: fraction of synthetic data sets whose refitted KS distance is ``>= D``.
        D: the KS distance of the original fit.
        n_bootstrap: number of synthetic data sets.
        synthetic_D: the refitted KS distances (length ``n_bootstrap``).
    """

    p_value: float
    D: float
    n_bootstrap: int
    synthetic_D: np.ndarray = field(repr=False, compare=False)


def sample_power_law(
    rng: np.random.Generator, size: int, *, alpha: float, xmin: float, xmax: float | None
) -> np.ndarray:
    """Draw from the continuous power law on ``[xmin, inf)`` (or ``[xmin, xmax]``) by inverting its CDF.

    Untruncated: :math:`x = x_{\\min} (1 - U)^{-1/(\\alpha - 1)}`. Truncated: :math:`\\ln(x / x_{\\min})` is an
    exponential with rate :math:`\\beta = \\alpha - 1` truncated to :math:`[0, \\ln(x_{\\max}/x_{\\min})]`.
    """
    u = rng.random(size)
    beta = alpha - 1.0
    if xmax is None:
        return xmin * np.exp(-np.log1p(-u) / beta)
    c = float(np.log(xmax / xmin))
    b = abs(beta)
    if b == 0.0:
        logs = u * c
    else:
        logs = -np.log1p(u * np.expm1(-b * c)) / b
        if beta < 0:
            logs = c - logs
    return np.minimum(xmin * np.exp(logs), xmax)


def semi_parametric_bootstrap(
    values: np.ndarray,
    *,
    n_tail: int,
    alpha: float,
    xmin: float,
    xmax: float | None,
    D: float,
    refit: Callable[[np.ndarray], float],
    n_bootstrap: int,
    seed: int | np.random.Generator | None,
) -> GoodnessOfFit:
    """CSN's semi-parametric bootstrap p-value of a fitted power law.

    Args:
        values: the sorted values the fit used; the last ``n_tail`` form the tail.
        n_tail: size of the tail.
        alpha: fitted exponent.
        xmin: fitted lower cut-off.
        xmax: truncation point of the fitted law, or ``None`` for an untruncated law.
        D: KS distance of the fit.
        refit: maps a synthetic data set to its refitted KS distance (same options as the original fit).
        n_bootstrap: number of synthetic data sets (CSN suggest ~2500 for p to be accurate to 0.01).
        seed: seed or generator for :func:`numpy.random.default_rng`.

    Returns:
        The :class:`GoodnessOfFit`.

    Raises:
        FunnelscopeInputError: ``n_bootstrap`` not a positive integer.

    Example:
        >>> import numpy as np
        >>> from funnelscope import fit_powerlaw
        >>> x = np.random.default_rng(0).pareto(2.0, 500) + 1.0
        >>> fit_powerlaw(x).goodness_of_fit(n_bootstrap=20, seed=0).p_value > 0.1
        True
    """
    n_bootstrap = check_int("n_bootstrap", n_bootstrap)
    rng = np.random.default_rng(seed)
    n = values.size
    body = values[: n - n_tail]
    synthetic = np.empty(int(n_bootstrap), dtype=np.float64)
    for b in range(int(n_bootstrap)):
        k_tail = int(rng.binomial(n, n_tail / n)) if body.size else n
        sample = np.concatenate(
            [
                sample_power_law(rng, k_tail, alpha=alpha, xmin=xmin, xmax=xmax),
                body[rng.integers(0, body.size, n - k_tail)] if body.size else np.empty(0),
            ]
        )
        synthetic[b] = refit(sample)
    p = float(np.mean(synthetic >= D))
    return GoodnessOfFit(p_value=p, D=float(D), n_bootstrap=int(n_bootstrap), synthetic_D=synthetic)
