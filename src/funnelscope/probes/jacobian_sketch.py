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

Large ``n`` without a sketch: the streamed route, :mod:`funnelscope.probes.jacobian_streamed`.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["CountSketch", "output_probes"]


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
