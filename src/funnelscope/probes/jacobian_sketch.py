"""Randomised parts of the Jacobian probe: output probes, a CountSketch of the input side, the implicit route.

* **Output probes** (Hutchinson 1989): ``m`` Rademacher vectors ``v_p ∈ {±1}ᵏ`` with ``E[v vᵀ] = I``, the
  same for every example. With ``g_{ip} = J(x_i)ᵀ v_p / √m``,

  .. math:: \\hat M_{ij} = \\sum_p g_{ip} \\cdot g_{jp}, \\qquad
            \\mathbb E \\hat M_{ij} = \\operatorname{tr}\\big(J(x_j)^\\top \\,\\mathbb E[v v^\\top]\\, J(x_i)\\big)
            = M_{ij},

  so ``M̂`` is unbiased at ``m`` backward passes instead of ``k``.
* **CountSketch** of the input side (Charikar, Chen & Farach-Colton 2002; as a sparse Johnson–Lindenstrauss
  transform: Clarkson & Woodruff 2013): coordinate ``a`` of a row goes, with a random sign ``s(a)``, to bucket
  ``h(a)`` of ``p``: ``S = [s(a)·1{h(a)=b}]``, ``E[S Sᵀ] = I``, so inner products (hence ``M``) are kept in
  expectation with variance ``≈ (‖x‖²‖y‖² + (x·y)²)/p``, at ``O(d)`` cost per row and ``O(d)`` memory.
* **Implicit route** for large ``n``: the feature rows ``Φ`` (``M = ΦΦᵀ``) are kept and the spectrum is read
  through products ``V ↦ Φ(ΦᵀV)`` (or ``ΦᵀΦ`` when it is the smaller side): the largest eigenvalues by
  Lanczos and the bulk by stochastic Lanczos quadrature (:mod:`funnelscope.spectra.lanczos`; Ubaru, Chen &
  Saad 2017). The same Krylov runs give both; randomised range finding (Halko, Martinsson & Tropp, SIAM
  Review 53(2), 2011) would need its own products for the top eigenvalues, and a block Krylov space reaches
  a given accuracy in fewer products than subspace iteration (Musco & Musco, NeurIPS 2015).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from funnelscope.spectra.lanczos import SpectralDensity, stochastic_lanczos_quadrature

__all__ = ["CountSketch", "ImplicitSpectrum", "implicit_spectrum", "output_probes"]

LANCZOS_STEPS = 80
SLQ_PROBES = 8
RITZ_TOLERANCE = 1e-6  # relative residual of a Ritz value kept as an eigenvalue
_CHUNK_ELEMENTS = 1 << 24  # float64 elements of Φ converted at a time


def output_probes(k: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """``m`` Rademacher output directions scaled by ``1/√m``: shape (m, k), float64 on the CPU."""
    signs = torch.randint(0, 2, (m, k), generator=generator, dtype=torch.float64) * 2 - 1
    return signs / np.sqrt(m)


class CountSketch:
    """A random linear map ``ℝᵈ → ℝᵖ`` with ``E[S Sᵀ] = I``: bucket ``h(a)`` and sign ``s(a)`` per coordinate.

    Parameters
    ----------
    dim : int
        Input dimension ``d``.
    size : int
        Output dimension ``p``.
    generator : torch.Generator
        CPU generator the hash and signs are drawn from.
    """

    def __init__(self, dim: int, size: int, generator: torch.Generator) -> None:
        self.dim, self.size = dim, size
        self._buckets = torch.randint(0, size, (dim,), generator=generator)
        self._signs = torch.randint(0, 2, (dim,), generator=generator).mul_(2).sub_(1)
        self._on: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """Sketch each row of a (b, d) tensor: (b, p), same dtype and device."""
        key = (rows.device, rows.dtype)
        if key not in self._on:
            self._on[key] = (self._buckets.to(rows.device), self._signs.to(rows.device, rows.dtype))
        buckets, signs = self._on[key]
        out = rows.new_zeros(rows.shape[0], self.size)
        return out.index_add_(1, buckets, rows * signs)


@dataclass(frozen=True)
class ImplicitSpectrum:
    """What the implicit route returns.

    Attributes
    ----------
    eigenvalues : ndarray of shape (n,)
        Descending: the ``converged`` largest are eigenvalues (Ritz values with relative residual
        ``≤ RITZ_TOLERANCE``); the rest are quantiles of the quadrature density at levels ``(i − ½)/n``, and
        zeros for the ``n − r`` structural zeros when ``r < n``.
    converged : int
    frobenius_sq : float
        ``‖M‖_F² = tr M²`` estimated by the quadrature.
    density : SpectralDensity
        Of the operator that was iterated (size ``min(n, r)``).
    """

    eigenvalues: np.ndarray
    converged: int
    frobenius_sq: float
    density: SpectralDensity


def implicit_spectrum(
    features: torch.Tensor,
    *,
    steps: int = LANCZOS_STEPS,
    probes: int = SLQ_PROBES,
    seed: int | None = None,
) -> ImplicitSpectrum:
    """Spectrum of ``M = ΦΦᵀ`` from its feature rows ``Φ`` (n × r) through products only.

    The operator iterated is the smaller of ``ΦΦᵀ`` (n × n) and ``ΦᵀΦ`` (r × r) (same non-zero eigenvalues);
    ``Φ`` is converted to float64 a column chunk at a time, so a product costs ``4·n·r·b`` flops and
    ``O((n + r)·b)`` extra memory for a block of ``b`` vectors.
    """
    n, r = features.shape
    dim = min(n, r)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))

    def matmat(v: torch.Tensor) -> torch.Tensor:
        if n > r:
            return _dual_product(features, v, chunk)
        out = torch.zeros_like(v)
        for start in range(0, r, chunk):
            block = features[:, start : start + chunk].to(torch.float64)
            out.addmm_(block, block.T @ v)
        return out

    density = stochastic_lanczos_quadrature(matmat, dim, steps=steps, probes=probes, seed=seed,
                                            device=features.device)
    nodes, residuals = density.nodes[0][::-1], density.residuals[0][::-1]
    scale = max(float(np.abs(nodes).max()), np.finfo(np.float64).tiny)
    good = np.append(residuals <= RITZ_TOLERANCE * scale, False)
    converged = max(1, int(np.argmin(good)))
    top = np.clip(nodes[:converged], 0.0, None)
    bulk = np.clip(density.quantiles((np.arange(dim - converged) + 0.5) / dim), 0.0, None)
    values = np.concatenate([top, np.sort(bulk)[::-1], np.zeros(n - dim)])
    return ImplicitSpectrum(
        eigenvalues=values,
        converged=converged,
        frobenius_sq=max(density.trace(np.square), float(np.sum(top**2))),
        density=density,
    )


def _dual_product(features: torch.Tensor, v: torch.Tensor, chunk: int) -> torch.Tensor:
    """``ΦᵀΦ v`` with Φ (n × r, any dtype) converted to float64 a column chunk at a time."""
    n, r = features.shape
    middle = torch.zeros(n, v.shape[1], dtype=torch.float64, device=v.device)
    for start in range(0, r, chunk):
        middle.addmm_(features[:, start : start + chunk].to(torch.float64), v[start : start + chunk])
    out = torch.empty_like(v)
    for start in range(0, r, chunk):
        out[start : start + chunk] = features[:, start : start + chunk].to(torch.float64).T @ middle
    return out
