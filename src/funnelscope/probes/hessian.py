"""The Hessian probe: extreme eigenvalues, trace and spectral density of the loss Hessian.

Definitions: ``docs/quantities.md#hessian``.

``H = ∇²_θ L(θ)`` for the example-weighted mean loss ``L`` over a data set (eval mode), known only through
Hessian–vector products (:mod:`funnelscope.probes.curvature`):

* top-k and bottom-k eigenvalues: one Lanczos run with full re-orthogonalisation
  (:func:`funnelscope.spectra.lanczos.extreme_eigenvalues`), stopped as soon as every requested Ritz value's
  error bound ``min(r, r²/gap)`` is below ``tol`` relative to it, each value with its bound and flag;
* on request, the Gauss–Newton part ``G = (1/n) Σ_i J_iᵀ ∇²_z ℓ_i J_i``: its top eigenvalues by the same
  Lanczos on ``G``-vector products. Papyan (2019, 2020) found the Hessian's outliers come from ``G``, about one
  per class;
* the trace within a budget of products (:mod:`funnelscope.spectra.trace`: XTrace, Hutch++ or Hutchinson, or
  exact when the budget covers ``p``), with its standard error;
* the spectral density by stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019), broadened by
  Gaussians, integrating to 1.

Outliers (the rule, :func:`outlier_edge`): take the top eigenvalues ``λ_1 ≥ … ≥ λ_K`` and, with a density,
its bulk-edge estimate ``e_ρ`` = the density's quantile at level ``1 − (K + 1)/p`` (the value that all but
``K + 1`` eigenvalues lie below). In the sequence ``s = (λ_1, …, λ_K(, e_ρ))`` the largest ratio of consecutive
values ``s_i / s_{i+1}`` (``s_i > 0``) is the gap; when it is at least ``OUTLIER_GAP`` (2) the bulk edge is
``s_{i+1}``, else it is ``λ_1`` (no gap: all of it is bulk). The outliers are the top eigenvalues strictly above
the edge, and the figure draws that edge. When the gap is at ``e_ρ`` all ``K`` values are outliers: the answer
is "at least ``K``" (``outliers_at_least``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from funnelscope.data import read_data
from funnelscope.errors import FunnelscopeInputError
from funnelscope.models.evaluation import evaluating
from funnelscope.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SEED,
    check_bool,
    check_choice,
    check_int,
    check_number,
    make_generator,
    resolve_device,
)
from funnelscope.probes.curvature import HVP_METHODS, CurvatureProducts
from funnelscope.probes.loss import loss_value, resolve_loss
from funnelscope.probes.result import ProbeResult
from funnelscope.progress import progress_bar
from funnelscope.spectra.lanczos import (
    CONVERGED_TOL,
    SpectralDensity,
    extreme_eigenvalues,
    stochastic_lanczos_quadrature,
)
from funnelscope.spectra.trace import TRACE_METHODS, trace_estimate

__all__ = ["HessianDensity", "HessianSpectrum", "count_outliers", "hessian_spectrum", "outlier_edge"]

DEFAULT_PROBES = 16
DEFAULT_STEPS = 64
DEFAULT_TRACE_PRODUCTS = 64
OUTLIER_GAP = 2.0
DENSITY_POINTS = 2001


@dataclass(frozen=True)
class HessianDensity:
    """The spectral density of ``H`` by stochastic Lanczos quadrature, broadened on a grid.

    Attributes
    ----------
    grid, values : ndarray
        ``ρ(x) = (1/n_v) Σ_{l,k} τ²_{lk} N(x; θ_{lk}, width²)`` on an even grid covering every node ±6 widths:
        ``∫ρ = 1`` (``np.trapezoid(values, grid)`` to ~1e-10).
    width : float
        Standard deviation of the Gaussians.
    quadrature : SpectralDensity
        The Ritz values and weights of every probe.
    """

    grid: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)
    width: float
    quadrature: SpectralDensity = field(repr=False)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"eigenvalue": self.grid, "density": self.values})


@dataclass(frozen=True, eq=False)
class HessianSpectrum(ProbeResult):
    """Curvature of the loss at the model's parameters, all computed when the probe ran.

    ``save()`` writes ``eigenvalues`` (:meth:`to_frame`), ``density`` (with a density), ``summary.json`` and,
    on request, the figure ``hessian``.

    Attributes
    ----------
    top_eigenvalues : ndarray
        Largest eigenvalues of ``H``, descending (Ritz values; see ``top_residuals``).
    top_residuals : ndarray
        Residual bounds ``‖H u − λ u‖``: an eigenvalue of ``H`` lies within each of its Ritz value.
    top_errors, top_converged : ndarray
        Error bounds ``min(r, r²/gap)`` and whether each is within ``tol`` relative to its value.
    bottom_eigenvalues, bottom_residuals, bottom_errors, bottom_converged : ndarray
        Smallest eigenvalues, ascending (empty when ``bottom_k=0``).
    gauss_newton_top_eigenvalues, gauss_newton_converged : ndarray
        Largest eigenvalues of the Gauss–Newton part ``G`` and their flags (empty when not computed).
    trace, trace_stderr : float
        The estimate of ``tr H`` and its standard error (NaN when ``trace=False``; 0 when exact).
    trace_method : str
        ``xtrace``, ``hutch++``, ``hutchinson``, ``exact`` or ``none``.
    trace_products : int
        Products the trace used.
    density : HessianDensity or None
    outliers : int or None
        Top eigenvalues above ``bulk_edge`` (module docstring: the rule); None with fewer than two values.
    outliers_at_least : bool
        All ``top_k`` values are above the edge: there may be more outliers than were computed.
    bulk_edge : float
        The rule's edge (drawn in the figure); NaN when ``outliers`` is None.
    density_edge : float
        The density's bulk-edge estimate ``e_ρ`` (NaN without a density).
    lanczos_steps : int
        Products of the Hessian's Lanczos run (fewer than the option when it converged first).
    tol : float
        The relative tolerance of the stopping rule.
    max_batches : int or None
        The option: products over the first batches only (``n`` counts the examples used).
    n, dim : int
        Examples and parameters.
    method : str
        How Hessian–vector products ran: ``forward-over-reverse`` or ``double-backward``.
    products : int
        Hessian (and Gauss–Newton) vector products computed, each one pass over the data.
    loss : float
        ``L(θ)`` on the data.
    seconds : float
        Wall-clock time of the probe.
    """

    top_eigenvalues: np.ndarray
    top_residuals: np.ndarray = field(repr=False)
    top_errors: np.ndarray = field(repr=False)
    top_converged: np.ndarray = field(repr=False)
    bottom_eigenvalues: np.ndarray
    bottom_residuals: np.ndarray = field(repr=False)
    bottom_errors: np.ndarray = field(repr=False)
    bottom_converged: np.ndarray = field(repr=False)
    gauss_newton_top_eigenvalues: np.ndarray
    gauss_newton_converged: np.ndarray = field(repr=False)
    trace: float
    trace_stderr: float
    trace_method: str
    trace_products: int
    density: HessianDensity | None
    outliers: int | None
    outliers_at_least: bool
    bulk_edge: float
    density_edge: float
    lanczos_steps: int
    tol: float
    max_batches: int | None
    n: int
    dim: int
    method: str
    products: int
    loss: float
    seconds: float = field(repr=False)

    probe = "hessian"

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = {"eigenvalues": self.to_frame()}
        if self.density is not None:
            tables["density"] = self.density.to_frame()
        return tables

    def figures(self, title: str | None = None) -> dict[str, Any]:
        from funnelscope.report.curvature_plots import plot_hessian

        return {"hessian": plot_hessian(self, title=title or "")}

    def comparison_figure(self, results: Any) -> Any:
        from funnelscope.report.curvature_plots import plot_hessian_comparison

        return plot_hessian_comparison(dict(results))

    def summary(self) -> dict[str, Any]:
        """Keys ``n, max_batches, dim, method, loss, lambda_max, lambda_min, gn_lambda_max, converged (e.g.
        "5/5"), lanczos_steps, tol, trace, trace_stderr, trace_method, trace_products, outliers,
        outliers_at_least, bulk_edge, products, seconds`` (``lambda_min`` NaN without ``bottom_k``;
        ``converged`` counts the top and bottom values within ``tol``)."""
        flags = np.concatenate([self.top_converged, self.bottom_converged]).astype(bool)
        return {
            "n": self.n,
            "max_batches": self.max_batches,
            "dim": self.dim,
            "method": self.method,
            "loss": self.loss,
            "lambda_max": float(self.top_eigenvalues[0]) if self.top_eigenvalues.size else np.nan,
            "lambda_min": float(self.bottom_eigenvalues[0]) if self.bottom_eigenvalues.size else np.nan,
            "gn_lambda_max": (float(self.gauss_newton_top_eigenvalues[0])
                              if self.gauss_newton_top_eigenvalues.size else np.nan),
            "converged": f"{int(flags.sum())}/{flags.size}",
            "lanczos_steps": self.lanczos_steps,
            "tol": self.tol,
            "trace": self.trace,
            "trace_stderr": self.trace_stderr,
            "trace_method": self.trace_method,
            "trace_products": self.trace_products,
            "outliers": self.outliers,
            "outliers_at_least": self.outliers_at_least,
            "bulk_edge": self.bulk_edge,
            "products": self.products,
            "seconds": self.seconds,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per computed eigenvalue: ``operator`` (hessian, gauss_newton), ``end`` (top, bottom),
        ``rank`` (1 = most extreme), ``eigenvalue``, ``residual`` (``r``), ``error_bound`` (``min(r, r²/gap)``)
        and ``converged`` (within ``tol``; for ``G`` only the flag is kept)."""
        rows = []
        nothing = np.array([])
        for operator, end, values, residuals, errors, flags in (
            ("hessian", "top", self.top_eigenvalues, self.top_residuals, self.top_errors, self.top_converged),
            ("hessian", "bottom", self.bottom_eigenvalues, self.bottom_residuals, self.bottom_errors,
             self.bottom_converged),
            ("gauss_newton", "top", self.gauss_newton_top_eigenvalues, nothing, nothing, self.gauss_newton_converged),
        ):
            for rank, value in enumerate(values, start=1):
                i = rank - 1
                rows.append({"operator": operator, "end": end, "rank": rank, "eigenvalue": float(value),
                             "residual": float(residuals[i]) if residuals.size else np.nan,
                             "error_bound": float(errors[i]) if errors.size else np.nan,
                             "converged": bool(flags[i])})
        return pd.DataFrame(rows, columns=["operator", "end", "rank", "eigenvalue", "residual", "error_bound",
                                           "converged"])


def hessian_spectrum(
    model: nn.Module,
    data: Any,
    *,
    loss_fn: Any = None,
    top_k: int = 5,
    bottom_k: int = 0,
    trace: bool = True,
    density: bool = False,
    gauss_newton: bool = False,
    probes: int = DEFAULT_PROBES,
    lanczos_steps: int = DEFAULT_STEPS,
    tol: float = CONVERGED_TOL,
    trace_method: str = "auto",
    trace_products: int = DEFAULT_TRACE_PRODUCTS,
    density_width: float | None = None,
    max_batches: int | None = None,
    hvp: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    seed: int | None = DEFAULT_SEED,
    progress: bool = False,
) -> HessianSpectrum:
    """Top/bottom eigenvalues, trace and spectral density of the loss Hessian ``H = ∇²_θ L``.

    .. math::

        L(\\theta) = \\frac1n \\sum_{i=1}^n \\ell(f_\\theta(x_i), y_i), \\qquad
        H = \\nabla^2_\\theta L, \\qquad
        \\text{stop when } \\min(r_k, r_k^2/\\mathrm{gap}_k) \\le \\mathrm{tol}\\,|\\theta_k| \\text{ for every
        requested Ritz value } \\theta_k.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode (BatchNorm on running statistics, no dropout); its modes are restored afterwards.
        ``θ``: its parameters with ``requires_grad``.
    data : (x, y), LabelledData, Dataset or DataLoader
        With targets (:func:`funnelscope.data.read_data`). Read once into memory (so every product sees the
        same examples in the same batches); the loss is the example-weighted mean, so a smaller last batch
        counts by its size.
    loss_fn : None, "cross_entropy", "mse" or callable
        ``loss_fn(output, target)`` returning per-example losses (or a batch mean); default cross-entropy.
    top_k, bottom_k : int
        How many of the largest / smallest eigenvalues (``bottom_k=0``: none); at most ``lanczos_steps``.
    trace : bool
        Estimate ``tr H`` within ``trace_products`` products (:func:`funnelscope.spectra.trace.trace_estimate`).
    density : bool
        Estimate the spectral density (``probes × lanczos_steps`` products).
    gauss_newton : bool, default False
        Also the top ``top_k`` eigenvalues of the Gauss–Newton part ``G`` (a second Lanczos run, stopped by the
        same rule).
    probes : int, default 16
        Rademacher start vectors of the density's quadrature runs.
    lanczos_steps : int, default 64
        The most Lanczos steps (products) of the eigenvalue runs, and the steps of each quadrature run; capped
        at ``p``.
    tol : float, default 1e-4
        Relative tolerance at which the eigenvalue runs stop (:func:`funnelscope.spectra.lanczos.converged`;
        0 runs all ``lanczos_steps``). Each value's bound and flag are in the result.
    trace_method : {"auto", "xtrace", "hutch++", "hutchinson", "exact"}
        ``auto``: exact when ``trace_products ≥ p``, else XTrace (Epperly, Tropp & Webber 2024); Hutch++
        (Meyer et al. 2021) and Hutchinson on request.
    trace_products : int, default 64
        Products the trace may use.
    density_width : float, optional
        Std of the Gaussian broadening; default ``0.005 × (θ_max − θ_min)`` over the Ritz values.
    max_batches : int, optional
        Use only the first batches of the data (the result's ``n`` and ``max_batches`` say so).
    batch_size : int, default 256
        Batch size for tensor data (a DataLoader keeps its own).
    hvp : {"auto", "forward-over-reverse", "double-backward"}
        How products are computed; ``auto``: double backward on gradient graphs kept between products (one
        backward pass a product while they fit a quarter of the available memory), forward-over-reverse
        where double backward fails (:class:`~funnelscope.probes.curvature.CurvatureProducts`).
    seed : int or None, default 0
        Seed of the Lanczos start vector and the probes (None: fresh randomness).
    device : torch device, optional
        Where to compute (default: where the parameters are).
    progress : bool
        Show a progress bar over the products on stderr.

    Returns
    -------
    HessianSpectrum

    Raises
    ------
    FunnelscopeInputError
        Bad options, empty or unlabelled data, a model without trainable parameters, a loss that does not fit
        the outputs.

    Examples
    --------
    Linear least squares ``L(w) = (1/n)‖Xw − y‖²`` has ``H = (2/n)XᵀX``:

    >>> torch.manual_seed(0) and None
    >>> x, y = torch.randn(50, 3, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    >>> model = nn.Linear(3, 1, bias=False).double()
    >>> mse = lambda out, target: (out[:, 0] - target) ** 2
    >>> spectrum = hessian_spectrum(model, (x, y), loss_fn=mse, top_k=3, gauss_newton=False)
    >>> exact = torch.linalg.eigvalsh(2 * x.T @ x / 50).flip(0).numpy()
    >>> bool(np.allclose(spectrum.top_eigenvalues, exact))
    True

    References
    ----------
    .. [1] C. Lanczos, "An iteration method for the solution of the eigenvalue problem of linear differential
       and integral operators", J. Res. Nat. Bur. Standards 45, 1950.
    .. [2] M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
       smoothing splines", Comm. Statist. Simul. Comput. 18(3), 1989.
    .. [3] B. Ghorbani, S. Krishnan, Y. Xiao, "An investigation into neural net optimization via Hessian
       eigenvalue density", ICML 2019 (stochastic Lanczos quadrature of Hessians).
    .. [4] V. Papyan, "Measurements of three-level hierarchical structure in the outliers in the spectrum of
       deepnet Hessians", ICML 2019; "Traces of class/cross-class structure pervade deep learning spectra",
       JMLR 21, 2020.
    .. [5] Z. Yao, A. Gholami, K. Keutzer, M. Mahoney, "PyHessian: neural networks through the lens of the
       Hessian", IEEE BigData 2020.
    .. [6] R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: optimal stochastic trace estimation",
       SOSA 2021; E. N. Epperly, J. A. Tropp, R. J. Webber, "XTrace: making the most of every sample in
       stochastic trace estimation", SIAM J. Matrix Anal. Appl. 45(1), 2024.
    .. [7] L. Sagun, U. Evci, V. U. Guney, Y. Dauphin, L. Bottou, "Empirical analysis of the Hessian of
       over-parametrized neural networks", ICLR workshop 2018 (outliers: about one per class).
    """
    start_time = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise FunnelscopeInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    top_k = check_int("top_k", top_k)
    bottom_k = check_int("bottom_k", bottom_k, minimum=0)
    probes = check_int("probes", probes)
    lanczos_steps = check_int("lanczos_steps", lanczos_steps)
    for name, flag in (("trace", trace), ("density", density), ("gauss_newton", gauss_newton),
                       ("progress", progress)):
        check_bool(name, flag)
    check_choice("hvp", hvp, HVP_METHODS)
    check_choice("trace_method", trace_method, TRACE_METHODS)
    trace_products = check_int("trace_products", trace_products)
    tol = check_number("tol", tol, positive=False)
    if tol < 0:
        raise FunnelscopeInputError(f"tol={tol} must be non-negative")
    max_batches = check_int("max_batches", max_batches, optional=True)
    density_width = check_number("density_width", density_width, optional=True)
    if max(top_k, bottom_k) > lanczos_steps:
        raise FunnelscopeInputError(
            f"top_k={top_k} and bottom_k={bottom_k} must not exceed lanczos_steps={lanczos_steps}"
        )
    generator = make_generator(seed)
    loss = resolve_loss(loss_fn)
    batches = read_data(data, batch_size=batch_size, max_batches=max_batches).require_targets("the loss needs them")
    target = resolve_device(device, model)

    with evaluating(model, target):
        batches = batches.to(target)
        value = loss_value(model, batches, loss)
        ops = CurvatureProducts(model, batches, loss, method=hvp)
        dim = ops.dim
        steps = min(lanczos_steps, dim)
        trace_budget = min(trace_products, dim) if trace else 0
        planned = steps * (1 + gauss_newton) + probes * steps * density + trace_budget
        with progress_bar(progress, planned, "Hessian-vector products") as advance:
            ops.on_product = advance
            extremes = extreme_eigenvalues(ops.hessian_matmat, dim, top_k=top_k, bottom_k=bottom_k, steps=steps,
                                           tol=tol, generator=generator, device=target)
            gn = None
            if gauss_newton:
                gn = extreme_eigenvalues(ops.gauss_newton_matmat, dim, top_k=top_k, steps=steps, tol=tol,
                                         generator=generator, device=target)
            estimate = None
            if trace:
                estimate = trace_estimate(ops.hessian_matmat, dim, products=trace_products, method=trace_method,
                                          generator=generator, device=target)
            hessian_density = None
            if density:
                sld = stochastic_lanczos_quadrature(ops.hessian_matmat, dim, steps=lanczos_steps, probes=probes,
                                                    seed=int(torch.randint(0, 2**62, (1,), generator=generator)),
                                                    device=target)
                hessian_density = _broaden(sld, density_width)
    top = extremes.top
    density_edge = np.nan
    if hessian_density is not None:
        level = max(0.5, 1.0 - (top.size + 1) / dim)
        density_edge = float(hessian_density.quadrature.quantiles(np.array([level]))[0])
    edge = outlier_edge(top, density_edge)
    outliers = None if not np.isfinite(edge) else int(np.sum(top > edge))
    return HessianSpectrum(
        top_eigenvalues=top, top_residuals=extremes.top_residuals, top_errors=extremes.top_errors,
        top_converged=extremes.top_converged, bottom_eigenvalues=extremes.bottom,
        bottom_residuals=extremes.bottom_residuals, bottom_errors=extremes.bottom_errors,
        bottom_converged=extremes.bottom_converged,
        gauss_newton_top_eigenvalues=gn.top if gn is not None else np.array([]),
        gauss_newton_converged=gn.top_converged if gn is not None else np.array([], dtype=bool),
        trace=estimate.value if estimate is not None else np.nan,
        trace_stderr=estimate.stderr if estimate is not None else np.nan,
        trace_method=estimate.method if estimate is not None else "none",
        trace_products=estimate.products if estimate is not None else 0,
        density=hessian_density, outliers=outliers,
        outliers_at_least=outliers is not None and outliers == top.size and top.size > 0,
        bulk_edge=edge, density_edge=density_edge, lanczos_steps=extremes.steps, tol=tol, max_batches=max_batches,
        n=batches.n, dim=dim, method=ops.method, products=ops.products, loss=value,
        seconds=time.perf_counter() - start_time,
    )


def outlier_edge(top: np.ndarray, density_edge: float = np.nan, *, gap: float = OUTLIER_GAP) -> float:
    """The bulk edge of the outlier rule (module docstring): the value just below the largest ratio gap of at
    least ``gap`` in ``(λ_1, …, λ_K(, e_ρ))``, else ``λ_1``; NaN with fewer than two values.

    >>> float(outlier_edge(np.array([50.0, 10.0, 9.0, 8.0]), 0.5))  # the gap is at the density's edge
    0.5
    >>> float(outlier_edge(np.array([50.0, 10.0, 9.0, 8.0])))
    10.0
    >>> float(outlier_edge(np.array([3.0, 2.9, 2.8]), 2.7))  # no gap: all bulk
    3.0
    """
    top = np.asarray(top, dtype=np.float64)
    sequence = np.append(top, density_edge) if np.isfinite(density_edge) else top
    if sequence.size < 2:
        return np.nan
    tiny = np.finfo(np.float64).tiny
    ratios = np.where(sequence[:-1] > 0, sequence[:-1] / np.maximum(sequence[1:], tiny), 0.0)
    best = int(np.argmax(ratios))
    return float(sequence[best + 1]) if ratios[best] >= gap else float(sequence[0])


def count_outliers(top: np.ndarray, edge: float = np.nan, *, gap: float = OUTLIER_GAP) -> int | None:
    """The top eigenvalues above :func:`outlier_edge` (``edge``: the density's bulk-edge estimate).

    >>> count_outliers(np.array([50.0, 10.0, 9.0, 8.0]), 0.5)
    4
    >>> count_outliers(np.array([50.0, 10.0, 9.0, 8.0]))
    1
    >>> count_outliers(np.array([3.0, 2.9, 2.8]), 2.7)
    0
    """
    bulk = outlier_edge(top, edge, gap=gap)
    return None if not np.isfinite(bulk) else int(np.sum(np.asarray(top, dtype=np.float64) > bulk))


def _broaden(sld: SpectralDensity, width: float | None) -> HessianDensity:
    lo, hi = float(sld.nodes.min()), float(sld.nodes.max())
    if width is None:
        width = 0.005 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 1e-3
    grid = np.linspace(lo - 6 * width, hi + 6 * width, DENSITY_POINTS)
    return HessianDensity(grid=grid, values=sld.density(grid, width=width), width=float(width), quadrature=sld)
