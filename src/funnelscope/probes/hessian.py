"""The Hessian probe: extreme eigenvalues, trace and spectral density of the loss Hessian.

Definitions: ``docs/quantities.md#hessian``.

``H = ∇²_θ L(θ)`` for the example-weighted mean loss ``L`` over a data set (eval mode), known only through
Hessian–vector products (:mod:`funnelscope.probes.curvature`):

* top-k and bottom-k eigenvalues: one Lanczos run with full re-orthogonalisation
  (:func:`funnelscope.spectra.lanczos.lanczos`), its extreme Ritz values with residual bounds;
* the Gauss–Newton part ``G = (1/n) Σ_i J_iᵀ ∇²_z ℓ_i J_i``: its top eigenvalues by the same Lanczos on
  ``G``-vector products. Papyan (2019, 2020) found the Hessian's outliers come from ``G``, about one per class;
* the trace by Hutchinson's estimator ``tr H = E[zᵀHz]`` (Rademacher ``z``), with its standard error;
* the spectral density by stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019), broadened by
  Gaussians, integrating to 1.

Outliers (the rule): take the top eigenvalues ``λ_1 ≥ … ≥ λ_K`` and, with a density, the bulk-edge estimate
``e`` = the density's quantile at level ``1 − (K + 1)/p`` (the value that all but ``K + 1`` eigenvalues lie
below). In the sequence ``λ_1, …, λ_K(, e)`` the largest ratio of consecutive positive values
``s_i / s_{i+1}`` marks the edge of the bulk; when it is at least ``OUTLIER_GAP`` (2) the ``i`` values
before it are outliers, else there are none. ``K`` values can report at most ``K`` outliers: a count equal to
``top_k`` means "``top_k`` or more".
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

__all__ = ["HessianDensity", "HessianSpectrum", "hessian_spectrum"]

DEFAULT_PROBES = 16
DEFAULT_STEPS = 64
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
    bottom_eigenvalues, bottom_residuals : ndarray
        Smallest eigenvalues, ascending (empty when ``bottom_k=0``).
    gauss_newton_top_eigenvalues : ndarray
        Largest eigenvalues of the Gauss–Newton part ``G`` (empty when not computed).
    trace, trace_stderr : float
        Hutchinson's estimate of ``tr H`` and its standard error (NaN when ``trace=False``).
    density : HessianDensity or None
    outliers : int or None
        Eigenvalues above the bulk (module docstring: the rule); None with fewer than two values to compare.
    bulk_edge : float
        The density's bulk-edge estimate ``e`` (NaN without a density).
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
    bottom_eigenvalues: np.ndarray
    bottom_residuals: np.ndarray = field(repr=False)
    gauss_newton_top_eigenvalues: np.ndarray
    trace: float
    trace_stderr: float
    density: HessianDensity | None
    outliers: int | None
    bulk_edge: float
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
        """Keys ``n, dim, method, loss, lambda_max, lambda_min, gn_lambda_max, trace, trace_stderr, outliers,
        bulk_edge, products, seconds`` (``lambda_min`` NaN without ``bottom_k``)."""
        return {
            "n": self.n,
            "dim": self.dim,
            "method": self.method,
            "loss": self.loss,
            "lambda_max": float(self.top_eigenvalues[0]) if self.top_eigenvalues.size else np.nan,
            "lambda_min": float(self.bottom_eigenvalues[0]) if self.bottom_eigenvalues.size else np.nan,
            "gn_lambda_max": (float(self.gauss_newton_top_eigenvalues[0])
                              if self.gauss_newton_top_eigenvalues.size else np.nan),
            "trace": self.trace,
            "trace_stderr": self.trace_stderr,
            "outliers": self.outliers,
            "bulk_edge": self.bulk_edge,
            "products": self.products,
            "seconds": self.seconds,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per computed eigenvalue: ``operator`` (hessian, gauss_newton), ``end`` (top, bottom),
        ``rank`` (1 = most extreme), ``eigenvalue``, ``residual`` and ``converged``."""
        rows = []
        for operator, end, values, residuals in (
            ("hessian", "top", self.top_eigenvalues, self.top_residuals),
            ("hessian", "bottom", self.bottom_eigenvalues, self.bottom_residuals),
            ("gauss_newton", "top", self.gauss_newton_top_eigenvalues, None),
        ):
            scale = max(float(np.abs(values).max()), np.finfo(float).tiny) if values.size else 1.0
            for rank, value in enumerate(values, start=1):
                residual = float(residuals[rank - 1]) if residuals is not None else np.nan
                rows.append({"operator": operator, "end": end, "rank": rank, "eigenvalue": float(value),
                             "residual": residual,
                             "converged": bool(residual <= CONVERGED_TOL * scale) if residuals is not None else None})
        return pd.DataFrame(rows, columns=["operator", "end", "rank", "eigenvalue", "residual", "converged"])


def hessian_spectrum(
    model: nn.Module,
    data: Any,
    *,
    loss_fn: Any = None,
    top_k: int = 5,
    bottom_k: int = 0,
    trace: bool = True,
    density: bool = False,
    gauss_newton: bool = True,
    probes: int = DEFAULT_PROBES,
    lanczos_steps: int = DEFAULT_STEPS,
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
        \\operatorname{tr} H \\approx \\frac1m \\sum_{j=1}^m z_j^\\top H z_j \\ (z_j \\in \\{\\pm1\\}^p), \\quad
        \\operatorname{se} = \\frac{\\operatorname{std}_j(z_j^\\top H z_j)}{\\sqrt m}.

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
        Estimate ``tr H`` (``probes`` products; free with ``density``: each quadrature run's first Lanczos
        coefficient is ``qᵀHq`` for its Rademacher start ``z = √p q``).
    density : bool
        Estimate the spectral density (``probes × lanczos_steps`` products).
    gauss_newton : bool
        Also the top ``top_k`` eigenvalues of the Gauss–Newton part ``G`` (``lanczos_steps`` products).
    probes : int, default 16
        Rademacher vectors for the trace and the density.
    lanczos_steps : int, default 64
        Lanczos steps (products) per run, capped at ``p``.
    density_width : float, optional
        Std of the Gaussian broadening; default ``0.005 × (θ_max − θ_min)`` over the Ritz values.
    max_batches : int, optional
        Use only the first batches of the data.
    batch_size : int, default 256
        Batch size for tensor data (a DataLoader keeps its own).
    hvp : {"auto", "forward-over-reverse", "double-backward"}
        How products are computed; ``auto`` prefers forward-over-reverse and falls back to double backward
        (TorchScript modules, operations without forward-mode rules).
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
        planned = steps * (1 + gauss_newton) + (probes * min(lanczos_steps, dim) if density else probes * trace)
        with progress_bar(progress, planned, "Hessian-vector products") as advance:
            ops.on_product = advance
            extremes = extreme_eigenvalues(ops.hessian_matmat, dim, top_k=top_k, bottom_k=bottom_k, steps=steps,
                                           generator=generator, device=target)
            top = extremes.top
            gn_top = np.array([])
            if gauss_newton:
                gn_top = extreme_eigenvalues(ops.gauss_newton_matmat, dim, top_k=top_k, steps=steps,
                                             generator=generator, device=target).top
            trace_value = trace_se = np.nan
            hessian_density = None
            if density:
                sld = stochastic_lanczos_quadrature(ops.hessian_matmat, dim, steps=lanczos_steps, probes=probes,
                                                    seed=int(torch.randint(0, 2**62, (1,), generator=generator)),
                                                    device=target)
                hessian_density = _broaden(sld, density_width)
                if trace:  # zᵀHz = p·Σ_k τ²_k θ_k = p·α_1 of each run (exact: the first Lanczos coefficient)
                    trace_value, trace_se = _mean_se(dim * np.sum(sld.weights * sld.nodes, axis=1))
            elif trace:
                trace_value, trace_se = _hutchinson(ops.hessian_matmat, dim, probes, generator, target)
    edge = np.nan
    if hessian_density is not None:
        level = max(0.5, 1.0 - (top.size + 1) / dim)
        edge = float(hessian_density.quadrature.quantiles(np.array([level]))[0])
    return HessianSpectrum(
        top_eigenvalues=top, top_residuals=extremes.top_residuals, bottom_eigenvalues=extremes.bottom,
        bottom_residuals=extremes.bottom_residuals,
        gauss_newton_top_eigenvalues=gn_top, trace=float(trace_value), trace_stderr=float(trace_se),
        density=hessian_density, outliers=count_outliers(top, edge), bulk_edge=edge, n=batches.n, dim=dim,
        method=ops.method, products=ops.products, loss=value, seconds=time.perf_counter() - start_time,
    )


def count_outliers(top: np.ndarray, edge: float = np.nan, *, gap: float = OUTLIER_GAP) -> int | None:
    """Eigenvalues above the bulk by the largest-gap rule (module docstring).

    >>> count_outliers(np.array([50.0, 10.0, 9.0, 8.0]), 0.5)
    4
    >>> count_outliers(np.array([50.0, 10.0, 9.0, 8.0]))
    1
    >>> count_outliers(np.array([3.0, 2.9, 2.8]), 2.7)
    0
    """
    sequence = np.append(np.asarray(top, dtype=np.float64), edge) if np.isfinite(edge) else np.asarray(top, float)
    if sequence.size < 2:
        return None
    tiny = np.finfo(np.float64).tiny
    ratios = np.where(sequence[:-1] > 0, sequence[:-1] / np.maximum(sequence[1:], tiny), 0.0)
    best = int(np.argmax(ratios))
    return best + 1 if ratios[best] >= gap else 0


def _hutchinson(matmat, dim: int, probes: int, generator: torch.Generator,
                device: torch.device) -> tuple[float, float]:
    z = (torch.randint(0, 2, (dim, probes), generator=generator, dtype=torch.float64) * 2 - 1).to(device)
    samples = (z * matmat(z)).sum(0).cpu().numpy()
    return _mean_se(samples)


def _mean_se(samples: np.ndarray) -> tuple[float, float]:
    se = float(np.std(samples, ddof=1) / np.sqrt(samples.size)) if samples.size > 1 else np.nan
    return float(np.mean(samples)), se


def _broaden(sld: SpectralDensity, width: float | None) -> HessianDensity:
    lo, hi = float(sld.nodes.min()), float(sld.nodes.max())
    if width is None:
        width = 0.005 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 1e-3
    grid = np.linspace(lo - 6 * width, hi + 6 * width, DENSITY_POINTS)
    return HessianDensity(grid=grid, values=sld.density(grid, width=width), width=float(width), quadrature=sld)
