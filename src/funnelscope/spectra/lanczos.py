"""Lanczos iteration on an implicit symmetric operator: extreme eigenvalues and stochastic Lanczos quadrature.

The operator ``A`` (symmetric, ``dim × dim``) is known only through products: ``matmat(V)`` returns ``A @ V``
for a block ``V`` of shape ``(dim, b)``. A data Gram ``M = ΦΦᵀ`` given by its feature rows, a Hessian given
by Hessian–vector products: anything with a product works, nothing of size ``dim²`` is ever formed.

Lanczos (Lanczos 1950) builds an orthonormal basis ``Q_s = [q_1 … q_s]`` of the Krylov space
``span{q_1, A q_1, …, A^{s-1} q_1}`` in which ``A`` is the tridiagonal

.. math::

    T_s = Q_s^\\top A Q_s =
    \\begin{pmatrix} \\alpha_1 & \\beta_1 & & \\\\ \\beta_1 & \\alpha_2 & \\ddots & \\\\
    & \\ddots & \\ddots & \\beta_{s-1} \\\\ & & \\beta_{s-1} & \\alpha_s \\end{pmatrix}.

Its eigenvalues (Ritz values ``θ_k``, eigenvectors ``y_k``) approximate the extreme eigenvalues of ``A``
first; ``|β_s · y_k[s]|`` bounds the residual ``‖A Q_s y_k − θ_k Q_s y_k‖``. Here every run keeps its whole
basis and re-orthogonalises against it twice per step ("twice is enough"), so there are no ghost copies, at
``O(b·s·dim)`` memory. Several independent runs share each product (the columns of one block).

Stochastic Lanczos quadrature (Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 38(4), 2017; Lin, Saad &
Yang, SIAM Review 58(1), 2016): for a Rademacher vector ``z`` (Hutchinson 1989, ``E[zzᵀ] = I``) and
``q_1 = z/‖z‖``, Gauss quadrature on ``T_s`` gives

.. math::

    \\operatorname{tr} f(A) = \\mathbb E\\, z^\\top f(A) z \\approx
    \\frac{\\dim}{n_v} \\sum_{l=1}^{n_v} \\sum_{k=1}^{s} \\tau_{lk}^2 f(\\theta_{lk}),

with ``τ_{lk}`` the first component of ``y_k`` in run ``l``: the spectral density of ``A`` is estimated by the
point masses ``τ²_{lk}/n_v`` at ``θ_{lk}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from funnelscope.errors import FunnelscopeInputError
from funnelscope.options import check_int, check_number, make_generator

__all__ = [
    "CONVERGED_TOL",
    "ExtremeEigenvalues",
    "LanczosRun",
    "SpectralDensity",
    "converged",
    "extreme_eigenvalues",
    "lanczos",
    "ritz_error_bounds",
    "stochastic_lanczos_quadrature",
    "top_eigenvalues",
]

MatMat = Callable[[torch.Tensor], torch.Tensor]

CONVERGED_TOL = 1e-4  # the default relative tolerance of every Lanczos stopping rule (:func:`converged`)
ABSOLUTE_FLOOR = 1e-6  # eigenvalues below this × max|θ| are converged at tol × that level (absolute)
_BREAKDOWN = 1e-12  # β below this × the operator's scale so far: the Krylov space is invariant


@dataclass(frozen=True)
class LanczosRun:
    """The tridiagonal matrices of ``b`` independent Lanczos runs of ``s`` steps.

    Attributes
    ----------
    alphas : Tensor of shape (b, s)
        Diagonals ``α``, float64 on the CPU.
    betas : Tensor of shape (b, s)
        ``β_1 … β_{s−1}`` (off-diagonals; 0 where a run hit an invariant subspace and restarted with a fresh
        orthogonal vector) and ``β_s``, the norm of the last residual.
    """

    alphas: torch.Tensor
    betas: torch.Tensor

    def tridiagonal(self) -> torch.Tensor:
        """``T_s`` of every run, shape (b, s, s)."""
        off = self.betas[:, :-1]
        return torch.diag_embed(self.alphas) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)

    def ritz(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ritz values (ascending), squared first components ``τ²`` and residual bounds ``|β_s y_k[s]|``.

        ``T_s`` is tiny (``s × s``): its eigenvectors come from ``torch.linalg.eigh``, the one place where
        eigenvectors and not only eigenvalues are needed.
        """
        values, vectors = torch.linalg.eigh(self.tridiagonal())
        first = vectors[:, 0, :] ** 2
        residuals = (self.betas[:, -1:] * vectors[:, -1, :]).abs()
        return values, first, residuals


@dataclass(frozen=True)
class SpectralDensity:
    """A spectral density estimated by stochastic Lanczos quadrature: point masses at Ritz values.

    Attributes
    ----------
    nodes : ndarray of shape (probes, s)
        Ritz values ``θ_{lk}`` of each run, ascending.
    weights : ndarray of shape (probes, s)
        ``τ²_{lk}``; each row sums to 1 (the mass of the run's unit start vector).
    residuals : ndarray of shape (probes, s)
        ``|β_s y_k[s]|``: a Ritz value with a small residual is an eigenvalue of the operator.
    dim : int
        Size of the operator.
    run : LanczosRun, optional
        The tridiagonals the nodes come from (:meth:`truncated`).
    """

    nodes: np.ndarray
    weights: np.ndarray
    residuals: np.ndarray = field(repr=False)
    dim: int
    run: LanczosRun | None = field(default=None, repr=False)

    @classmethod
    def from_run(cls, run: LanczosRun, dim: int) -> SpectralDensity:
        """Gauss quadrature of the runs' tridiagonals: nodes the Ritz values, weights their ``τ²``."""
        values, first, residuals = run.ritz()
        return cls(nodes=values.numpy(), weights=first.numpy(), residuals=residuals.numpy(), dim=dim, run=run)

    def truncated(self, steps: int) -> SpectralDensity:
        """The density from the first ``steps`` Lanczos steps of the same runs (a coarser quadrature, for free:
        the tridiagonals of fewer steps are the leading blocks of these); needs :attr:`run`."""
        if self.run is None:
            raise ValueError("this density keeps no Lanczos run to truncate")
        steps = max(1, min(int(steps), int(self.run.alphas.shape[1])))
        return SpectralDensity.from_run(
            LanczosRun(alphas=self.run.alphas[:, :steps], betas=self.run.betas[:, :steps]), self.dim)

    def trace(self, fn: Callable[[np.ndarray], np.ndarray]) -> float:
        """``tr f(A) ≈ dim · mean_l Σ_k τ²_{lk} f(θ_{lk})`` (unbiased in the probes, exact in ``f`` for
        polynomials of degree < 2s)."""
        return float(self.dim * np.mean(np.sum(self.weights * fn(self.nodes), axis=1)))

    def density(self, grid: np.ndarray, *, width: float) -> np.ndarray:
        """The estimated density on ``grid``, each point mass broadened into a Gaussian of std ``width``."""
        grid = np.asarray(grid, dtype=np.float64)[:, None]
        nodes, weights = self.nodes.reshape(-1), self.weights.reshape(-1) / self.nodes.shape[0]
        kernel = np.exp(-0.5 * ((grid - nodes) / width) ** 2) / (width * np.sqrt(2 * np.pi))
        return kernel @ weights

    def quantiles(self, levels: np.ndarray) -> np.ndarray:
        """The inverse of the estimated cumulative distribution at ``levels`` in (0, 1).

        The point masses are sorted and the distribution function is interpolated linearly between their
        mid-points, so that quantiles fill the gaps between Ritz values instead of repeating them.
        """
        nodes = self.nodes.reshape(-1)
        order = np.argsort(nodes, kind="stable")
        nodes = nodes[order]
        mass = self.weights.reshape(-1)[order] / self.nodes.shape[0]
        middle = np.cumsum(mass) - mass / 2
        return np.interp(np.asarray(levels, dtype=np.float64), middle, nodes)


def lanczos(
    matmat: MatMat,
    starts: torch.Tensor,
    *,
    steps: int,
    generator: torch.Generator | None = None,
    stop: Callable[[LanczosRun], bool] | None = None,
) -> LanczosRun:
    """Run ``b`` independent Lanczos iterations with full re-orthogonalisation, sharing each product.

    Parameters
    ----------
    matmat : callable
        ``V ↦ A V`` for ``V`` of shape (dim, b), float64, on the device of ``starts``.
    starts : Tensor of shape (dim, b)
        Start vectors (normalised here), one column per run.
    steps : int
        Number of products (the most, with ``stop``), at most ``dim``.
    generator : torch.Generator, optional
        Draws the fresh vector a run restarts from after an invariant subspace (``β ≈ 0``); a CPU generator.
    stop : callable, optional
        ``stop(run)`` is called after every step with the tridiagonals so far; ``True`` ends the iteration
        there (convergence), so the run may hold fewer than ``steps`` columns.

    Returns
    -------
    LanczosRun
    """
    dim, count = starts.shape
    if not 1 <= steps <= dim:
        raise FunnelscopeInputError(f"steps={steps} must be in [1, dim={dim}]")
    device = starts.device
    basis = torch.zeros(count, steps, dim, dtype=torch.float64, device=device)
    alphas = torch.zeros(count, steps, dtype=torch.float64)
    betas = torch.zeros(count, steps, dtype=torch.float64)
    q = starts.to(torch.float64)
    q = q / torch.linalg.vector_norm(q, dim=0).clamp_min(torch.finfo(torch.float64).tiny)
    scale = torch.zeros(count, dtype=torch.float64, device=device)
    for j in range(steps):
        basis[:, j] = q.T
        w = matmat(q).to(torch.float64)
        alpha = (q * w).sum(0)
        for _ in range(2):  # full re-orthogonalisation, twice
            coefficients = torch.einsum("bsd,db->bs", basis[:, : j + 1], w)
            w = w - torch.einsum("bsd,bs->db", basis[:, : j + 1], coefficients)
        beta = torch.linalg.vector_norm(w, dim=0)
        scale = torch.maximum(scale, alpha.abs() + beta)
        alphas[:, j], betas[:, j] = alpha.cpu(), beta.cpu()
        if j + 1 == steps:
            break
        if stop is not None and stop(LanczosRun(alphas=alphas[:, : j + 1], betas=betas[:, : j + 1])):
            return LanczosRun(alphas=alphas[:, : j + 1].clone(), betas=betas[:, : j + 1].clone())
        broken = beta <= _BREAKDOWN * scale.clamp_min(torch.finfo(torch.float64).tiny)
        if bool(broken.any()):
            fresh = torch.randn(dim, count, generator=generator, dtype=torch.float64).to(device)
            for _ in range(2):
                coefficients = torch.einsum("bsd,db->bs", basis[:, : j + 1], fresh)
                fresh = fresh - torch.einsum("bsd,bs->db", basis[:, : j + 1], coefficients)
            fresh = fresh / torch.linalg.vector_norm(fresh, dim=0)
            w = torch.where(broken, fresh, w)
            betas[:, j] = torch.where(broken, torch.zeros_like(beta), beta).cpu()
            beta = torch.where(broken, torch.ones_like(beta), beta)
        q = w / beta
    return LanczosRun(alphas=alphas, betas=betas)


def stochastic_lanczos_quadrature(
    matmat: MatMat,
    dim: int,
    *,
    steps: int = 64,
    probes: int = 8,
    seed: int | None = None,
    device: torch.device | str | None = None,
    deflate: torch.Tensor | None = None,
    on_step: Callable[[], None] | None = None,
) -> SpectralDensity:
    """Estimate the spectral density of a symmetric operator by stochastic Lanczos quadrature.

    Parameters
    ----------
    matmat : callable
        ``V ↦ A V`` for ``V`` of shape (dim, probes), float64 on ``device``.
    dim : int
        Size of ``A``.
    steps : int, default 64
        Lanczos steps per probe (capped at ``dim``); quadrature is exact for polynomials of degree ``< 2·steps``.
    probes : int, default 8
        Number of Rademacher start vectors; the trace estimates' error falls as ``1/√probes``.
    seed : int, optional
        Seed of the start vectors.
    device : torch device, optional
        Where the basis lives; default CPU.
    deflate : Tensor of shape (dim, K), optional
        Orthonormal vectors ``U`` spanning an invariant subspace already known (converged top eigenvectors):
        the density is then that of ``A`` restricted to ``range(U)⊥``, of size ``dim − K``. With
        ``P = I − UUᵀ`` the start vectors are ``Pz/‖Pz‖`` and every product is ``P A P V``, so the runs never
        see the deflated eigenvalues; the quadrature's nodes then resolve the rest of the spectrum (the bulk),
        and the Hutchinson variance that large outliers cause is gone (as in Hutch++: Meyer, Musco, Musco &
        Woodruff, SOSA 2021). ``tr f(A) = Σ_{deflated} f(λ_i) + tr f(A|_{U⊥})``.
    on_step : callable, optional
        Called after every product (a progress bar).

    Returns
    -------
    SpectralDensity

    Examples
    --------
    >>> a = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    >>> sld = stochastic_lanczos_quadrature(lambda v: a @ v, 100, steps=20, probes=4, seed=0)
    >>> round(sld.trace(lambda x: x ** 0) / 100, 10)  # the masses of each run sum to one
    1.0
    """
    probes, steps = check_int("probes", probes), check_int("steps", steps)
    generator = make_generator(seed)
    target = torch.device(device) if device is not None else torch.device("cpu")
    starts = (torch.randint(0, 2, (dim, probes), generator=generator, dtype=torch.float64) * 2 - 1).to(target)
    size = int(dim)
    if deflate is not None and deflate.shape[1] > 0:
        basis = deflate.to(target, torch.float64)

        def project(v: torch.Tensor) -> torch.Tensor:
            return v - basis @ (basis.T @ v)

        starts, operator, size = project(starts), (lambda v: project(matmat(project(v)))), size - basis.shape[1]
    else:
        operator = matmat

    def stop(_: LanczosRun) -> bool:
        if on_step is not None:
            on_step()
        return False

    run = lanczos(operator, starts, steps=min(steps, size), generator=generator, stop=stop)
    return SpectralDensity.from_run(run, size)


@dataclass(frozen=True)
class ExtremeEigenvalues:
    """The extreme Ritz values of one Lanczos run, with their residual and error bounds.

    Attributes
    ----------
    top, top_residuals, top_errors, top_converged : ndarray
        The largest Ritz values, descending; ``r_k = |β_s y_k[s]|`` (an eigenvalue of ``A`` lies within
        ``r_k`` of ``θ_k``); the error bound ``min(r_k, r_k²/gap_k)`` (:func:`ritz_error_bounds`); whether
        that bound meets the tolerance (:func:`converged`).
    bottom, bottom_residuals, bottom_errors, bottom_converged : ndarray
        The smallest, ascending (empty when none were asked for).
    scale : float
        ``max |θ|`` over all Ritz values.
    steps : int
        Products used (fewer than the most allowed when the run stopped at convergence).
    tol : float
        The relative tolerance the flags refer to.
    """

    top: np.ndarray
    top_residuals: np.ndarray
    top_errors: np.ndarray
    top_converged: np.ndarray
    bottom: np.ndarray
    bottom_residuals: np.ndarray
    bottom_errors: np.ndarray
    bottom_converged: np.ndarray
    scale: float
    steps: int
    tol: float

    @property
    def all_converged(self) -> bool:
        """Every requested value met the tolerance."""
        return bool(np.all(self.top_converged) and np.all(self.bottom_converged))


def ritz_error_bounds(values: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Error bounds of Ritz values: ``min(r_k, r_k² / gap_k)``, ``gap_k`` the distance to the nearest other
    Ritz value.

    ``r_k`` bounds the distance to an eigenvalue of ``A`` (Parlett, *The Symmetric Eigenvalue Problem*, 1998,
    Thm 11.5.1); when ``θ_k`` is separated from the rest of the spectrum by ``gap_k`` the error is at most
    ``r_k²/gap_k`` (Kato–Temple; Parlett Thm 11.7.1), with the gap estimated by the other Ritz values.

    >>> ritz_error_bounds(np.array([1.0, 2.0, 4.0]), np.array([1e-3, 1e-3, 1.0])).round(8).tolist()
    [1e-06, 1e-06, 0.5]
    """
    values, residuals = np.asarray(values, np.float64), np.asarray(residuals, np.float64)
    if values.size < 2:
        return residuals.copy()
    order = np.argsort(values)
    ordered = values[order]
    gaps = np.full(values.size, np.inf)
    step = np.diff(ordered)
    gaps[1:] = step
    gaps[:-1] = np.minimum(gaps[:-1], step)
    gap = np.empty_like(gaps)
    gap[order] = gaps
    with np.errstate(divide="ignore", invalid="ignore"):
        quadratic = np.where(gap > 0, residuals**2 / gap, np.inf)
    return np.minimum(residuals, quadratic)


def converged(values: np.ndarray, errors: np.ndarray, scale: float, tol: float) -> np.ndarray:
    """``errors ≤ tol · max(|θ|, ABSOLUTE_FLOOR · scale)``: relative error at most ``tol`` (eigenvalues
    below ``ABSOLUTE_FLOOR`` × the largest one are held to that absolute level instead).

    >>> converged(np.array([10.0, 1e-9]), np.array([1e-4, 1e-6]), 10.0, 1e-4).tolist()
    [True, False]
    """
    floor = max(ABSOLUTE_FLOOR * scale, np.finfo(np.float64).tiny)
    return np.asarray(errors) <= tol * np.maximum(np.abs(values), floor)


def _extremes_of(run: LanczosRun, top_k: int, bottom_k: int, tol: float) -> ExtremeEigenvalues:
    values, _, residuals = run.ritz()
    values, residuals = values[0].numpy(), residuals[0].numpy()
    errors = ritz_error_bounds(values, residuals)
    scale = float(np.abs(values).max()) if values.size else 0.0
    flags = converged(values, errors, scale, tol)
    top, bottom = slice(None, None, -1), slice(None)
    pick = {"top": (top, top_k), "bottom": (bottom, bottom_k)}
    fields = {}
    for end, (order, k) in pick.items():
        fields[end] = values[order][:k].copy()
        fields[f"{end}_residuals"] = residuals[order][:k].copy()
        fields[f"{end}_errors"] = errors[order][:k].copy()
        fields[f"{end}_converged"] = flags[order][:k].copy()
    return ExtremeEigenvalues(**fields, scale=scale, steps=int(run.alphas.shape[1]), tol=float(tol))


def extreme_eigenvalues(
    matmat: MatMat,
    dim: int,
    *,
    top_k: int,
    bottom_k: int = 0,
    steps: int,
    tol: float = CONVERGED_TOL,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> ExtremeEigenvalues:
    """The ``top_k`` largest and ``bottom_k`` smallest Ritz values of one Lanczos run (full
    re-orthogonalisation) from a Gaussian start vector drawn from ``generator``, stopped as soon as all of them
    meet the relative tolerance or after ``steps`` products.

    Stopping rule: after step ``s ≥ top_k + bottom_k + 1``, the requested Ritz values ``θ_k`` all satisfy
    ``min(r_k, r_k²/gap_k) ≤ tol · max(|θ_k|, ABSOLUTE_FLOOR · max|θ|)`` (:func:`ritz_error_bounds`,
    :func:`converged`). ``tol=0`` runs all ``steps``.

    The one routine behind the Hessian's extreme eigenvalues, its Gauss–Newton part's, the Jacobian's
    large-``n`` route and :func:`top_eigenvalues`.

    Parameters
    ----------
    matmat : callable
        ``V ↦ A V`` for ``V`` of shape (dim, 1), float64 on ``device``.
    dim : int
    top_k, bottom_k : int
        How many of the largest / smallest.
    steps : int
        The most products (capped at ``dim``).
    tol : float, default 1e-4
        Relative tolerance of the stopping rule.
    generator : torch.Generator
    device : torch device, optional

    Returns
    -------
    ExtremeEigenvalues

    Examples
    --------
    >>> a = torch.diag(torch.arange(1.0, 301.0, dtype=torch.float64) ** 2)
    >>> found = extreme_eigenvalues(lambda v: a @ v, 300, top_k=3, steps=300, generator=make_generator(0))
    >>> exact = np.array([300.0, 299.0, 298.0]) ** 2
    >>> bool(np.all(np.abs(found.top - exact) <= 1e-4 * exact)), bool(found.all_converged), found.steps < 300
    (True, True, True)
    """
    steps = min(int(steps), int(dim))
    tol = check_number("tol", tol, positive=False)
    if tol < 0:
        raise FunnelscopeInputError(f"tol={tol} must be non-negative")
    target = torch.device(device) if device is not None else torch.device("cpu")
    start = torch.randn(dim, 1, generator=generator, dtype=torch.float64).to(target)
    wanted = top_k + bottom_k

    def stop(run: LanczosRun) -> bool:
        if tol == 0 or run.alphas.shape[1] <= wanted:
            return False
        return _extremes_of(run, top_k, bottom_k, tol).all_converged

    run = lanczos(matmat, start, steps=steps, generator=generator, stop=stop)
    return _extremes_of(run, top_k, bottom_k, tol)


def top_eigenvalues(
    matmat: MatMat,
    dim: int,
    *,
    count: int = 10,
    steps: int | None = None,
    tol: float = CONVERGED_TOL,
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """The largest eigenvalues of a symmetric operator by Lanczos (:func:`extreme_eigenvalues`), only those
    that have converged.

    The top values are returned while they are converged (stopping at the first that is not), at most
    ``count`` of them.

    Parameters
    ----------
    matmat : callable
        ``V ↦ A V`` for ``V`` of shape (dim, 1), float64 on ``device``.
    dim : int
        Size of ``A``.
    count : int, default 10
        How many of the largest eigenvalues are wanted.
    steps : int, optional
        The most Lanczos steps; default ``min(dim, max(3·count, 30))``.
    tol : float, default 1e-4
        Relative error bound below which a Ritz value counts as converged (:func:`converged`); the run stops
        when all ``count`` have.
    seed : int, optional
        Seed of the start vector.
    device : torch device, optional
        Where the basis lives; default CPU.

    Returns
    -------
    ndarray
        Converged eigenvalues, descending (at least the largest one, converged or not).

    Examples
    --------
    >>> a = torch.diag(torch.arange(1.0, 201.0, dtype=torch.float64))
    >>> top_eigenvalues(lambda v: a @ v, 200, count=3, steps=200, tol=1e-12, seed=0).round(8).tolist()
    [200.0, 199.0, 198.0]
    """
    count = check_int("count", count)
    steps = min(dim, max(3 * count, 30)) if steps is None else min(steps, dim)
    found = extreme_eigenvalues(matmat, dim, top_k=count, steps=steps, tol=tol, generator=make_generator(seed),
                                device=device)
    flags = found.top_converged
    keep = 1 if not flags[0] else int(np.argmin(np.append(flags, False)))
    return found.top[:keep]
