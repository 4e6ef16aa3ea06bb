"""The det X = 1 condition on an ESD's tail (SETOL's ERG condition), as WeightWatcher 0.7.7 computes it.

SETOL (Martin & Hinrichs, "SETOL: A Semi-Empirical Theory of (Deep) Learning", arXiv:2507.17912, 2025) argues
that in an ideally trained layer the effective correlation matrix ``X`` restricted to the power-law tail has
``det X = 1`` (the Exact Renormalisation Group condition): the product of the tail's normalised eigenvalues
is one. With the eigenvalues ``λ_1 ≤ … ≤ λ_n`` normalised to mean one,

.. math::

    \\tilde\\lambda_i = \\frac{n\\,\\lambda_i}{\\sum_j \\lambda_j}, \\qquad
    k^\\star = \\min\\Big\\{k \\ge 1 : \\prod_{i > n-k} \\tilde\\lambda_i < 1\\Big\\},

the tail of the ``k*`` largest eigenvalues is where the product first falls below one: ``detX_num = k*``
(WeightWatcher's ``detX_num``, also its ``num_ERG_spikes``; the largest tail whose product is still ``≥ 1``
has ``k* − 1`` values) and ``detX_val = λ_{n−k*+1}``, the smallest eigenvalue of that tail, in the units of the
input. When no tail of fewer than ``n`` values falls below one, ``detX_num = n`` and ``detX_val = λ_2``, as in
WeightWatcher's ``detX_constraint`` (its loop stops at the second value).

The products are taken as sums of logarithms, so a long tail of large values cannot overflow (WeightWatcher
multiplies them with ``np.prod``; the two agree wherever that does not overflow).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from funnelscope.errors import FunnelscopeInputError

__all__ = ["DetX", "detx_constraint"]


@dataclass(frozen=True)
class DetX:
    """The det X = 1 tail of an ESD.

    Attributes:
        num: ``detX_num``, the number of largest eigenvalues at which the product of the normalised eigenvalues
            first falls below one (0 for fewer than two or all-equal eigenvalues).
        value: ``detX_val``, the smallest eigenvalue of that tail, in the input's units (NaN when ``num`` is 0).
        index: its index in the ascending eigenvalues.
    """

    num: int
    value: float
    index: int


def detx_constraint(eigenvalues: np.ndarray) -> DetX:
    """The det X = 1 tail of an ESD (see the module docstring for the definition).

    Args:
        eigenvalues: 1-D array of non-negative eigenvalues ``λ = σ²`` (any order; all of a layer's, zeros
            included, as WeightWatcher passes them).

    Returns:
        :class:`DetX`.

    Raises:
        FunnelscopeInputError: not 1-D, non-finite or negative values.

    Example:
        >>> detx_constraint(np.array([0.1, 0.2, 0.3, 3.4]))  # mean 1; products 3.4, 1.02, 0.204 < 1
        DetX(num=3, value=0.2, index=1)
        >>> detx_constraint(np.array([0.5, 1.0, 1.0, 1.5]))  # products 1.5, 1.5, 1.5: never below 1
        DetX(num=4, value=1.0, index=1)
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    if values.ndim != 1 or not np.isfinite(values).all() or (values < 0).any():
        raise FunnelscopeInputError("detx_constraint: eigenvalues must be a 1-D array of finite values >= 0")
    n = values.size
    x = np.sort(values)
    if n < 2 or not x[0] < x[-1]:
        return DetX(0, float("nan"), 0)
    with np.errstate(divide="ignore"):
        logs = np.log(x * (n / x.sum()))
    # log of the product of the k largest, k = 1 … n − 1 (WeightWatcher's loop: idx = n − 1 down to 1)
    tail_logs = np.cumsum(logs[::-1])[: n - 1]
    below = np.flatnonzero(tail_logs < 0.0)
    if below.size == 0:
        return DetX(n, float(x[1]), 1)
    num = int(below[0]) + 1
    index = n - num
    return DetX(num, float(x[index]), index)
