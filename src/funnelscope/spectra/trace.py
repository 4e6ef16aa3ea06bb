"""Trace estimators for an implicit symmetric operator: Hutchinson, Hutch++ and XTrace, each with a standard error.

The operator ``A`` (symmetric, ``dim × dim``) is known only through block products ``matmat(V) = A V``; every
estimator here is given a budget of ``products`` (columns multiplied by ``A``) and says how many it used.

* Hutchinson (1989): ``tr A = E[zᵀAz]`` for Rademacher ``z`` (``E[zzᵀ] = I``),

  .. math:: \\hat t = \\frac1m \\sum_{j=1}^m z_j^\\top A z_j, \\qquad
     \\operatorname{Var}(z^\\top A z) = 2 \\sum_{i \\ne j} A_{ij}^2.

* Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021, Algorithm 1): a third of the budget sketches the range
  of ``A`` (``Q = orth(A S)``), a third computes ``tr(QᵀAQ)`` exactly, the last third applies Hutchinson to the
  deflated ``(I − QQᵀ)A(I − QQᵀ)``:

  .. math:: \\hat t = \\operatorname{tr}(Q^\\top A Q) + \\frac1{m'} \\sum_j g_j^\\top P A P g_j, \\ P = I - QQ^\\top.

  Its standard error is the Hutchinson one of the residual part (the sketch part has none given ``Q``).

* XTrace (Epperly, Tropp & Webber, SIAM J. Matrix Anal. Appl. 45(1), 2024, Section 2): half the budget gives
  ``Y = AΩ`` for ``s`` Rademacher vectors, the other half ``Z = AQ`` for ``Q = orth(Y)``; each vector ``ω_i``
  in turn is left out of the sketch and used as the Hutchinson probe of what the other ``s − 1`` miss,

  .. math:: \\hat t_i = \\operatorname{tr}(Q_{(i)}^\\top A Q_{(i)}) + \\omega_i^\\top (I - Q_{(i)}Q_{(i)}^\\top)
     A (I - Q_{(i)}Q_{(i)}^\\top) \\omega_i, \\qquad \\hat t = \\frac1s \\sum_i \\hat t_i,

  ``Q_{(i)}`` an orthonormal basis of ``Y`` without its column ``i``. Each ``\\hat t_i`` is unbiased and the
  standard error is ``std_i(\\hat t_i)/√s`` (their Eq. 2.4). With ``Y = QR``, ``Q_{(i)}Q_{(i)}^\\top =
  QQ^\\top − \\tilde q_i \\tilde q_i^\\top`` where ``\\tilde q_i = Q s_i`` and ``s_i`` is the normalised column
  ``i`` of ``R^{-\\top}``, so no further products are needed.

``trace_estimate(..., method="auto")`` picks: the exact trace (unit vectors) when ``products ≥ dim``,
XTrace from 4 products (it is never worse than Hutch++ at equal products in the paper's experiments and
exploits a decaying spectrum the same way), Hutchinson below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from funnelscope.errors import FunnelscopeInputError
from funnelscope.options import check_choice, check_int, make_generator

__all__ = ["TRACE_METHODS", "TraceEstimate", "exact_trace", "hutchinson", "hutchpp", "trace_estimate", "xtrace"]

MatMat = Callable[[torch.Tensor], torch.Tensor]
TRACE_METHODS = ("auto", "hutchinson", "hutch++", "xtrace", "exact")
BLOCK = 32  # columns per product call (vmapped together over one data pass)


@dataclass(frozen=True)
class TraceEstimate:
    """A trace estimate.

    Attributes
    ----------
    value, stderr : float
        The estimate and its standard error (0 for ``exact``; NaN with a single sample).
    method : str
        ``hutchinson``, ``hutch++``, ``xtrace`` or ``exact``.
    products : int
        Columns multiplied by the operator.
    """

    value: float
    stderr: float
    method: str
    products: int


def _blocks(matmat: MatMat, v: torch.Tensor) -> torch.Tensor:
    return torch.cat([matmat(v[:, i : i + BLOCK]).to(torch.float64) for i in range(0, v.shape[1], BLOCK)], dim=1)


def _rademacher(dim: int, count: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.randint(0, 2, (dim, count), generator=generator, dtype=torch.float64) * 2 - 1).to(device)


def _mean_se(samples: torch.Tensor) -> tuple[float, float]:
    samples = samples.detach().cpu().double()
    se = float(samples.std() / np.sqrt(samples.numel())) if samples.numel() > 1 else float("nan")
    return float(samples.mean()), se


def _setup(products: int, dim: int, generator: torch.Generator | None,
           device: torch.device | str | None) -> tuple[int, torch.Generator, torch.device]:
    products = check_int("products", products)
    dim = check_int("dim", dim)
    target = torch.device(device) if device is not None else torch.device("cpu")
    return products, generator if generator is not None else make_generator(0), target


def hutchinson(matmat: MatMat, dim: int, *, products: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> TraceEstimate:
    """Hutchinson's estimate ``(1/m) Σ z_jᵀ A z_j`` over ``m = products`` Rademacher vectors (module docstring).

    >>> a = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    >>> hutchinson(lambda v: a @ v, 10, products=4).value  # diagonal A: zᵀAz = tr A for every z
    55.0
    """
    products, generator, target = _setup(products, dim, generator, device)
    z = _rademacher(dim, products, generator, target)
    value, se = _mean_se((z * _blocks(matmat, z)).sum(0))
    return TraceEstimate(value=value, stderr=se, method="hutchinson", products=products)


def hutchpp(matmat: MatMat, dim: int, *, products: int, generator: torch.Generator | None = None,
            device: torch.device | str | None = None) -> TraceEstimate:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021) with ``products ≥ 3``: ``k = products // 3`` sketch
    columns, ``k`` products for ``tr(QᵀAQ)``, the rest for Hutchinson on the deflated operator.

    >>> a = torch.diag(torch.tensor([100.0, 10.0, 1.0] + [0.0] * 47, dtype=torch.float64))
    >>> round(hutchpp(lambda v: a @ v, 50, products=9).value, 6)  # rank 3: the sketch holds all of it
    111.0
    """
    products, generator, target = _setup(products, dim, generator, device)
    if products < 3:
        raise FunnelscopeInputError(f"products={products} must be at least 3 for Hutch++")
    k = products // 3
    q, _ = torch.linalg.qr(_blocks(matmat, _rademacher(dim, k, generator, target)))
    sketch = float(torch.trace(q.T @ _blocks(matmat, q)))
    g = _rademacher(dim, products - 2 * k, generator, target)
    g = g - q @ (q.T @ g)
    residual, se = _mean_se((g * _blocks(matmat, g)).sum(0))
    return TraceEstimate(value=sketch + residual, stderr=se, method="hutch++", products=products)


def xtrace(matmat: MatMat, dim: int, *, products: int, generator: torch.Generator | None = None,
           device: torch.device | str | None = None) -> TraceEstimate:
    """XTrace (Epperly, Tropp & Webber 2024) with ``s = products // 2 ≥ 2`` test vectors (module docstring).

    >>> u = torch.linalg.qr(torch.randn(60, 60, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    >>> a = u @ torch.diag(0.5 ** torch.arange(60.0, dtype=torch.float64)) @ u.T   # trace 2 − 2⁻⁵⁹
    >>> estimate = xtrace(lambda v: a @ v, 60, products=40)
    >>> abs(estimate.value - 2.0) < 1e-5, estimate.products
    (True, 40)
    """
    products, generator, target = _setup(products, dim, generator, device)
    s = products // 2
    if s < 2:
        raise FunnelscopeInputError(f"products={products} must be at least 4 for XTrace")
    omega = _rademacher(dim, s, generator, target)
    y = _blocks(matmat, omega)
    q, r = torch.linalg.qr(y)
    z = _blocks(matmat, q)  # A Q
    h = q.T @ z  # QᵀAQ
    w = q.T @ omega  # coordinates of each ω in range(Q)
    rank_ok = torch.linalg.matrix_rank(r) == s
    if not bool(rank_ok):  # A Ω rank deficient (a low-rank A): the sketch captured range(A) already
        value = float(torch.trace(h))
        return TraceEstimate(value=value, stderr=0.0, method="xtrace", products=2 * s)
    left = torch.linalg.inv(r).T  # columns ⟂ every column of R but their own
    left = left / torch.linalg.vector_norm(left, dim=0)
    base = torch.trace(h)
    estimates = []
    for i in range(s):
        si = left[:, i]
        wi = w[:, i] - si * (si @ w[:, i])  # coordinates of ω_i in range(Q_(i))
        v = omega[:, i] - q @ wi  # (I − Q_(i)Q_(i)ᵀ) ω_i
        av = y[:, i] - z @ wi  # A v
        estimates.append(base - si @ h @ si + v @ av)
    value, se = _mean_se(torch.stack(estimates))
    return TraceEstimate(value=value, stderr=se, method="xtrace", products=2 * s)


def exact_trace(matmat: MatMat, dim: int, *, device: torch.device | str | None = None) -> TraceEstimate:
    """``Σ_i e_iᵀ A e_i`` over the ``dim`` unit vectors (``dim`` products)."""
    target = torch.device(device) if device is not None else torch.device("cpu")
    total = 0.0
    for start in range(0, dim, BLOCK):
        columns = torch.arange(start, min(start + BLOCK, dim), device=target)
        block = torch.zeros(dim, columns.numel(), dtype=torch.float64, device=target)
        block[columns, torch.arange(columns.numel(), device=target)] = 1.0
        total += float(matmat(block).to(torch.float64)[columns, torch.arange(columns.numel(), device=target)].sum())
    return TraceEstimate(value=total, stderr=0.0, method="exact", products=dim)


def trace_estimate(matmat: MatMat, dim: int, *, products: int, method: str = "auto",
                   generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> TraceEstimate:
    """The trace of ``A`` within a budget of ``products``, by ``method`` (one of :data:`TRACE_METHODS`).

    ``auto``: ``exact`` when ``products ≥ dim``, ``xtrace`` from 4 products, else ``hutchinson``. XTrace and
    Hutch++ use an even number / a multiple of three of the budget at most (the result's ``products``).

    Raises
    ------
    FunnelscopeInputError
        An unknown method, or a budget below what the method needs (3 for Hutch++, 4 for XTrace).
    """
    check_choice("trace_method", method, TRACE_METHODS)
    products = check_int("trace_products", products)
    if method == "auto":
        method = "exact" if products >= dim else "xtrace" if products >= 4 else "hutchinson"
    if method == "exact":
        return exact_trace(matmat, dim, device=device)
    estimator = {"hutchinson": hutchinson, "hutch++": hutchpp, "xtrace": xtrace}[method]
    return estimator(matmat, dim, products=products, generator=generator, device=device)
