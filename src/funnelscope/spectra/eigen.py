"""The one eigen-routine: eigenvalues of Gram matrices in float64 through ``torch.linalg``.

For a batch of matrices ``A_b`` (rows × cols) the empirical spectral density is the set of eigenvalues of
the smaller Gram matrix, ``AᵀA`` (cols × cols) when rows ≥ cols, else ``AAᵀ``: ``λ_i = σ_i(A)²``
(DESIGN 2.1: squared singular values, not divided by N). The Gram is accumulated in float64 over chunks of
rows, so a huge matrix (an embedding table, say) is never copied to float64 at once, and solved with
``torch.linalg.eigvalsh``, batched over same-shaped matrices; on the CPU this is MKL/LAPACK, on CUDA
cuSOLVER.

The Gram squares the condition number: eigenvalues below about ``λ_max · 1e-15`` are rounding noise. Where
small singular values matter (rank collapse), ``method="svd"`` computes ``σ`` directly.
"""

from __future__ import annotations

import torch

__all__ = ["gram_eigenvalues", "symmetric_eigenvalues"]

_CHUNK_ELEMENTS = 1 << 24  # float64 elements converted at a time per batch (128 MiB)


def gram_eigenvalues(
    matrices: torch.Tensor,
    *,
    method: str = "gram",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Squared singular values of each matrix in a batch, ascending, as float64 on the CPU.

    Parameters
    ----------
    matrices : Tensor of shape (batch, rows, cols) or (rows, cols)
        Any floating dtype (half precision included); converted to float64 chunk by chunk.
    method : {"gram", "svd"}
        ``gram``: ``eigvalsh`` of the float64 Gram (fast; the default). ``svd``: ``svdvals`` of the float64
        matrix, accurate for tiny singular values.
    device : torch device, optional
        Where to compute; default: where the matrices are.

    Returns
    -------
    Tensor of shape (batch, min(rows, cols)) or (min(rows, cols),)
        ``λ = σ²``, ascending, clamped at 0 (the Gram's rounding can make zero eigenvalues slightly negative).

    Examples
    --------
    >>> a = torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    >>> gram_eigenvalues(a).tolist()
    [4.0, 9.0]
    """
    if method not in ("gram", "svd"):
        raise ValueError(f"method must be 'gram' or 'svd', got {method!r}")
    single = matrices.ndim == 2
    batch = matrices.unsqueeze(0) if single else matrices
    if batch.ndim != 3:
        raise ValueError(f"expected a matrix or a batch of matrices, got shape {tuple(matrices.shape)}")
    target = torch.device(device) if device is not None else batch.device
    if batch.shape[1] < batch.shape[2]:
        batch = batch.transpose(1, 2)  # rows ≥ cols from here on: the Gram is cols × cols
    if method == "svd":
        values = torch.cat(
            [torch.linalg.svdvals(one.to(target, torch.float64)).flip(-1) ** 2 for one in batch.split(1)]
        )
    else:
        values = symmetric_eigenvalues(_gram(batch, target))
    values = values.clamp_min_(0.0).cpu()
    return values[0] if single else values


def symmetric_eigenvalues(matrix: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a symmetric matrix (or batch), ascending, computed in float64 with ``eigvalsh``."""
    return torch.linalg.eigvalsh(matrix.to(torch.float64))


def _gram(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``AᵀA`` for each matrix of a (batch, rows, cols) tensor with rows ≥ cols, accumulated in float64."""
    count, rows, cols = batch.shape
    gram = torch.zeros(count, cols, cols, dtype=torch.float64, device=device)
    step = max(1, _CHUNK_ELEMENTS // max(1, count * cols))
    for start in range(0, rows, step):
        chunk = batch[:, start : start + step].to(device=device, dtype=torch.float64)
        gram.baddbmm_(chunk.transpose(1, 2), chunk)
    return gram
