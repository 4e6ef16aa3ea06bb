"""Top eigenpairs of a symmetric positive semi-definite operator by randomised block Krylov iteration.

Randomised block Krylov (Musco & Musco, "Randomized block Krylov methods for stronger and faster approximate
singular value decomposition", NeurIPS 2015, Algorithm 2; Halko, Martinsson & Tropp, SIAM Review 53(2), 2011
for the range finder it improves on): from a Gaussian block ``Ω`` (dim × b), the Krylov space

.. math:: \\mathcal K_q = \\operatorname{span}\\{\\Omega, A\\Omega, A^2\\Omega, \\dots, A^{q}\\Omega\\}

is built one block product at a time (each new block orthogonalised against the basis so far, twice), and the
Rayleigh–Ritz values of ``A`` on it, ``T = Qᵀ A Q``, approximate its largest eigenvalues: after ``q`` products
the error of the ``i``-th is of order ``λ_i · exp(−2q·√(gap))`` rather than the ``exp(−q·gap)`` of subspace
iteration, so a block of the size of the wanted count converges in a few products even where the spectrum
decays slowly.

The products ``AQ`` are kept beside ``Q``, so the Ritz pairs' residuals are exact, not bounds:
``r_i = ‖A Q y_i − θ_i Q y_i‖`` (no further product). An eigenvalue lies within ``r_i`` of ``θ_i`` and within
``r_i²/gap_i`` when ``θ_i`` is separated by ``gap_i`` (:func:`funnelscope.spectra.lanczos.ritz_error_bounds`);
the iteration stops when the ``top_k`` largest all meet the relative tolerance
(:func:`funnelscope.spectra.lanczos.converged`), the stopping rule of every Lanczos run in the library.
Memory: ``2·dim·b·(q + 1)`` float64 numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from funnelscope.spectra.lanczos import CONVERGED_TOL, converged, ritz_error_bounds

__all__ = ["BlockKrylovEigen", "block_krylov_bytes", "block_krylov_eigenpairs"]

MatMat = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BlockKrylovEigen:
    """The largest Ritz pairs of a block Krylov run.

    Attributes
    ----------
    values : ndarray of shape (top_k,)
        Descending Ritz values.
    vectors : Tensor of shape (dim, top_k)
        The Ritz vectors, orthonormal, float64 on the operator's device.
    residuals, errors : ndarray of shape (top_k,)
        ``‖A v_i − θ_i v_i‖`` and the error bound ``min(r_i, r_i²/gap_i)``.
    converged : ndarray of bool, shape (top_k,)
        Whether each error bound meets ``tol`` (relative).
    products : int
        Columns multiplied by ``A`` in all (``block`` per step).
    steps : int
        Block products.
    """

    values: np.ndarray
    vectors: torch.Tensor
    residuals: np.ndarray
    errors: np.ndarray
    converged: np.ndarray
    products: int
    steps: int


def block_krylov_bytes(dim: int, block: int, steps: int) -> int:
    """Bytes of the basis and its products after ``steps`` block products: ``2·8·dim·block·steps``, plus the
    Rayleigh–Ritz matrices."""
    width = block * steps
    return 16 * dim * width + 24 * width * width


def block_krylov_eigenpairs(
    matmat: MatMat,
    dim: int,
    *,
    top_k: int,
    block: int,
    max_steps: int,
    tol: float = CONVERGED_TOL,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    on_step: Callable[[], None] | None = None,
    stop: Callable[[np.ndarray, Callable[[int], BlockKrylovEigen]], bool] | None = None,
) -> BlockKrylovEigen:
    """The ``top_k`` largest eigenpairs of a symmetric operator by randomised block Krylov iteration.

    Parameters
    ----------
    matmat : callable
        ``V ↦ A V`` for ``V`` of shape (dim, b), float64 on ``device``.
    dim : int
    top_k : int
        Eigenpairs wanted (at most ``dim``).
    block : int
        Columns of the start block (``≥ top_k`` is best; Musco & Musco take the wanted rank).
    max_steps : int
        The most block products (the space has at most ``dim`` columns).
    tol : float
        Relative tolerance of the stopping rule; ``0`` runs ``max_steps``.
    generator : torch.Generator
        Draws the Gaussian start block (CPU).
    device : torch device, optional
    on_step : callable, optional
        Called after every block product (a progress bar).
    stop : callable, optional
        A caller's stopping rule in place of ``tol``: ``stop(values, pairs)`` after every block product with the
        descending Ritz values of the space so far (all of them; an eigenvalue solve of the small matrix, no
        residuals) and ``pairs(k)``, which computes the top ``k`` Ritz pairs of the space so far with their
        residuals when the rule needs them (a :class:`BlockKrylovEigen`); ``True`` ends the iteration. The
        ``top_k`` pairs returned are computed at the end.

    Returns
    -------
    BlockKrylovEigen

    Examples
    --------
    >>> a = torch.diag(torch.arange(1.0, 501.0, dtype=torch.float64) ** 3)
    >>> found = block_krylov_eigenpairs(lambda v: a @ v, 500, top_k=5, block=8, max_steps=40,
    ...                                 generator=torch.Generator().manual_seed(0))
    >>> bool(np.allclose(found.values, np.arange(500.0, 495.0, -1) ** 3, rtol=1e-6)), bool(found.converged.all())
    (True, True)
    """
    target = torch.device(device) if device is not None else torch.device("cpu")
    top_k, block = min(top_k, dim), max(1, min(block, dim))
    capacity = min(dim, block * max(1, max_steps))
    # the basis Q, its image AQ and T = QᵀAQ grow in place (no concatenation: at thousands of columns the
    # copies and a recomputed QᵀAQ would cost more than the products)
    basis = torch.empty(dim, capacity, dtype=torch.float64, device=target)
    image = torch.empty(dim, capacity, dtype=torch.float64, device=target)
    small = torch.zeros(capacity, capacity, dtype=torch.float64, device=target)
    q = torch.randn(dim, block, generator=generator, dtype=torch.float64).to(target)
    width, result, projection = 0, None, None
    for step in range(max(1, max_steps)):
        q = _orthonormal_against(q, basis[:, :width], projection)[:, : capacity - width]
        if q.shape[1] == 0:
            break
        added = q.shape[1]
        basis[:, width : width + added] = q
        image[:, width : width + added] = matmat(q).to(torch.float64)
        fresh = image[:, width : width + added]
        column = basis[:, : width + added].T @ fresh
        small[: width + added, width : width + added] = column
        small[width : width + added, : width + added] = column.T
        width += added
        if on_step is not None:
            on_step()
        exhausted = width >= dim or width >= capacity
        if stop is not None:
            def pairs(k: int, width: int = width, steps: int = step + 1) -> BlockKrylovEigen:
                return _rayleigh_ritz(basis[:, :width], image[:, :width], small[:width, :width], k, tol, steps)

            if stop(_ritz_values(small[:width, :width]), pairs) or exhausted:
                break
            q, projection = fresh, column
            continue
        result = _rayleigh_ritz(basis[:, :width], image[:, :width], small[:width, :width], top_k, tol, step + 1)
        if (tol > 0 and result.converged.all()) or exhausted:
            break
        q, projection = fresh, column  # the next block is AQ_j, whose coefficients QᵀAQ_j are T's new columns
    if stop is not None or result is None:
        result = _rayleigh_ritz(basis[:, :width], image[:, :width], small[:width, :width], top_k, tol, step + 1)
    return result


def _orthonormal_against(block: torch.Tensor, basis: torch.Tensor,
                         projection: torch.Tensor | None = None) -> torch.Tensor:
    """``block`` orthogonalised against the orthonormal columns of ``basis`` (twice: "twice is enough") and
    orthonormalised; columns that vanish (the space is exhausted) are dropped.

    ``projection``: ``basisᵀ block`` when the caller has it already (the first pass then skips that product)."""
    scale = torch.linalg.vector_norm(block, dim=0).clamp_min(torch.finfo(torch.float64).tiny)
    block = block / scale
    for sweep in range(2):
        if basis.shape[1]:
            coefficients = projection / scale if sweep == 0 and projection is not None else basis.T @ block
            block = block - basis @ coefficients
    q, r = torch.linalg.qr(block)
    keep = r.diagonal().abs() > 1e-10
    return q[:, keep]


def _ritz_values(small: torch.Tensor) -> np.ndarray:
    matrix = small.cpu().numpy()
    return np.linalg.eigvalsh((matrix + matrix.T) / 2)[::-1].copy()


def _rayleigh_ritz(basis: torch.Tensor, image: torch.Tensor, small: torch.Tensor, top_k: int, tol: float,
                   steps: int) -> BlockKrylovEigen:
    matrix = small.cpu().numpy()
    # numpy's syevd for the small (width × width) problem: torch's eigh took 1.6 s on 288 × 288 on a busy
    # 2-core machine (MKL threads), numpy's about 10 ms
    eigen_values, eigen_vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    all_values = eigen_values
    order = np.argsort(eigen_values)[::-1][:top_k].copy()
    values = torch.from_numpy(eigen_values[order].copy()).to(basis.device)
    vectors = torch.from_numpy(eigen_vectors[:, order].copy()).to(basis.device)
    ritz = basis @ vectors
    residuals = torch.linalg.vector_norm(image @ vectors - ritz * values, dim=0)
    theta, res = values.cpu().numpy(), residuals.cpu().numpy()
    # gaps from every Ritz value of the space, not only the top_k returned
    errors = _errors_with_neighbours(theta, res, all_values)
    scale = float(np.abs(all_values).max()) if all_values.size else 0.0
    return BlockKrylovEigen(values=theta, vectors=ritz, residuals=res, errors=errors,
                            converged=converged(theta, errors, scale, tol),
                            products=int(basis.shape[1]), steps=steps)


def _errors_with_neighbours(theta: np.ndarray, residuals: np.ndarray, all_values: np.ndarray) -> np.ndarray:
    """:func:`ritz_error_bounds` of the returned values, their gaps measured to every other Ritz value."""
    others = np.sort(all_values)[::-1][theta.size:]
    values = np.concatenate([theta, others])
    padded = np.concatenate([residuals, np.full(others.size, np.inf)])
    return ritz_error_bounds(values, padded)[: theta.size]
