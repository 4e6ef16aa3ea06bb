"""The one eigen-routine: eigenvalues of Gram matrices in float64.

For a batch of matrices ``A_b`` (rows × cols) the empirical spectral density is the set of eigenvalues of
the smaller Gram matrix, ``AᵀA`` (cols × cols) when rows ≥ cols, else ``AAᵀ``: ``λ_i = σ_i(A)²``
(``docs/quantities.md#layer-matrices``: squared singular values, not divided by N). The Gram is accumulated
in float64 over chunks of rows, so a huge matrix (an embedding table, say) is never copied to float64 at
once, and then solved with a symmetric eigen-solver (values only).

* On CUDA (and other accelerators): ``baddbmm`` and ``torch.linalg.eigvalsh``, batched (cuSOLVER).
* On the CPU: the Gram by ``dsyrk`` (one triangle: half the flops of a matrix product; in row blocks of 1 024
  beside matrix products above that, :func:`add_lower_gram`) and ``syevd`` through
  numpy's LAPACK, one BLAS thread for small Grams (threads cost more than they give there) and every thread
  for large ones.

The Gram squares the condition number: eigenvalues below about ``λ_max · 1e-15`` are rounding noise. Where
small singular values matter (rank collapse), ``method="svd"`` computes ``σ`` directly.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg.blas import dsyrk
from threadpoolctl import ThreadpoolController

__all__ = ["add_lower_gram", "gram_eigenvalues", "symmetric_eigenvalues"]

_CHUNK_ELEMENTS = 1 << 24  # float64 elements converted at a time per batch (128 MiB)
_GRAM_BLOCK = 1024  # row block of add_lower_gram on the CPU (its diagonal blocks are dsyrk calls) …
_GRAM_BLOCK_ACCELERATOR = 256  # … and on an accelerator (its diagonal blocks are full products)
_THREADED_FROM = 1024  # Grams this large use every BLAS thread; smaller ones one thread
_THREADED_WORK = 1 << 31  # a single small Gram with this many multiply-adds still uses every BLAS thread
_controller: ThreadpoolController | None = None


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
        All NaN for a matrix whose float64 Gram is not finite (non-finite entries, or an overflow).

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
        values = torch.stack([_svd_squared(one.to(target, torch.float64)) for one in batch])
    elif target.type == "cpu":
        values = _cpu_gram_eigenvalues(batch)
    else:
        gram = _gram(batch, target)
        finite = torch.isfinite(gram).flatten(1).all(dim=1)
        values = torch.linalg.eigvalsh(torch.where(finite[:, None, None], gram, 0.0))
        values[~finite] = torch.nan
    values = values.clamp_min_(0.0).cpu()
    return values[0] if single else values


def symmetric_eigenvalues(matrix: torch.Tensor, *, overwrite: bool = False) -> torch.Tensor:
    """Eigenvalues of a symmetric matrix (or batch), ascending, in float64 (``syevd``; the lower triangle is
    read), on the matrix's device.

    ``overwrite=True`` lets the solver work in the matrix itself (a C-contiguous float64 matrix on the CPU:
    scipy's ``syevd`` on its Fortran-ordered transpose, whose upper triangle is the lower one): no ``n × n``
    copy, and the matrix's contents are destroyed.
    """
    matrix = matrix.to(torch.float64)
    if matrix.device.type != "cpu":
        return torch.linalg.eigvalsh(matrix)
    if overwrite and matrix.ndim == 2 and matrix.is_contiguous():
        from scipy.linalg import eigh

        values = eigh(matrix.numpy().T, lower=False, eigvals_only=True, overwrite_a=True, check_finite=False,
                      driver="evd")
        return torch.from_numpy(values)
    batch = matrix.reshape(-1, *matrix.shape[-2:])
    values = np.stack([np.linalg.eigvalsh(one.numpy(), UPLO="L") for one in batch])
    return torch.from_numpy(values).reshape(matrix.shape[:-1])


def _cpu_gram_eigenvalues(batch: torch.Tensor) -> torch.Tensor:
    """Gram eigenvalues of a (count, rows ≥ cols, cols) batch on the CPU: ``dsyrk`` (half the flops of a
    product) and numpy's ``syevd``, one matrix after the other.

    A small Gram (``cols < 1024`` and fewer than ``2³¹`` multiply-adds) runs on one BLAS thread: measured on two
    cores, threads cost more than they give there. Small Grams side by side in a thread pool: numpy's and
    scipy's LAPACK wrappers hold the GIL, so only torch's kernels would run in parallel, and torch's
    single-threaded ``eigvalsh`` is slower than numpy's; on 24 Grams of 1536 × 384 the torch pool took 0.24 s
    against 0.31 s here, but over all of all-MiniLM-L6-v2 the two were indistinguishable (0.64–0.77 s each,
    five runs, noisy), so the simpler route stays.
    """
    global _controller
    _, rows, cols = batch.shape
    if cols >= _THREADED_FROM or rows * cols * cols >= _THREADED_WORK:
        return torch.from_numpy(np.stack([_gram_eigenvalues_blas(one) for one in batch]))
    if _controller is None:
        _controller = ThreadpoolController()  # inspecting the loaded BLAS libraries takes a while: once
    with _controller.limit(limits=1, user_api="blas"):
        return torch.from_numpy(np.stack([_gram_eigenvalues_blas(one) for one in batch]))


def add_lower_gram(gram: torch.Tensor, rows: torch.Tensor) -> None:
    """``gram += rows rowsᵀ`` on and below the diagonal, in float64 (about half the flops of a product).

    Parameters
    ----------
    gram : Tensor of shape (n, n), float64, C-contiguous
        Updated in place; only its lower triangle is meaningful (read it with ``eigvalsh(…, UPLO="L")``, or
        mirror it).
    rows : Tensor of shape (n, w), any floating dtype and layout
        Converted to float64 a column chunk at a time (``2²⁴`` elements); a float64 ``rows`` whose rows or
        columns are contiguous is read in place.

    Notes
    -----
    Row blocks ``a:b`` of :data:`_GRAM_BLOCK` (256 on an accelerator): the rectangle left of the diagonal,
    ``gram[a:b, :a] += rows[a:b] rows[:a]ᵀ``, is one matrix product (torch: MKL on the CPU, cuBLAS on a GPU),
    and the diagonal block's lower triangle BLAS ``dsyrk`` on the CPU (the lower triangle of the block's product
    elsewhere). Not one ``dsyrk`` over the whole Gram: the threaded ``dsyrk`` of the OpenBLAS builds that
    numpy and scipy ship writes past its buffer for large ``n`` on AVX-512 (SkylakeX) processors, a
    segmentation fault from ``n`` ≈ 16 000 on two threads here (scipy 1.17.1's OpenBLAS 0.3.30 and numpy
    2.4.6's 0.3.31 alike; numpy issue 19685); blocks of 1 024 run at the speed of the single ``dsyrk``
    (n = 12 000, w = 27 648: 30.5 s against 32.3 s), and a Gram below 1 024 is one ``dsyrk`` as before.
    """
    n, width = rows.shape
    cpu = gram.device.type == "cpu"
    size = _GRAM_BLOCK if cpu else _GRAM_BLOCK_ACCELERATOR
    in_place = rows.dtype == torch.float64 and (rows.stride(-1) == 1 or rows.stride(0) == 1)
    step = max(1, width) if in_place else max(1, _CHUNK_ELEMENTS // max(1, n))
    for first in range(0, width, step):
        chunk = rows[:, first : first + step]
        if not in_place:
            chunk = chunk.to(torch.float64).contiguous()
        for top in range(0, n, size):
            bottom = min(n, top + size)
            block = chunk[top:bottom]
            gram[top:bottom, :top].addmm_(block, chunk[:top].T)
            gram[top:bottom, top:bottom] += _lower_square(block) if cpu else (block @ block.T).tril_()


def _lower_square(block: torch.Tensor) -> torch.Tensor:
    """``block blockᵀ`` on and below the diagonal (zeros above) by BLAS ``dsyrk``, for a float64 CPU block."""
    a = block.numpy()
    # C-ordered a: a.T is Fortran-ordered and aᵀᵀaᵀ = a aᵀ (trans=1); otherwise a Fortran copy, a aᵀ directly
    operand, trans = (a.T, 1) if a.flags.c_contiguous else (np.asfortranarray(a), 0)
    upper = dsyrk(1.0, operand, trans=trans, lower=0)  # Fortran-ordered, its upper triangle set, zeros below
    return torch.from_numpy(upper.T)  # the transpose: the product's lower triangle


def _gram_eigenvalues_blas(matrix: torch.Tensor) -> np.ndarray:
    """``eigvalsh(AᵀA)`` of one (rows ≥ cols) matrix: float64 ``dsyrk``, lower triangle."""
    cols = matrix.shape[1]
    gram = torch.zeros(cols, cols, dtype=torch.float64)
    add_lower_gram(gram, matrix.T)
    values = gram.numpy()
    if not np.isfinite(np.diagonal(values)).all():  # |G_ij| ≤ √(G_ii G_jj): a finite diagonal bounds the rest
        return np.full(cols, np.nan)
    return np.linalg.eigvalsh(values, UPLO="L")


def _svd_squared(matrix: torch.Tensor) -> torch.Tensor:
    if not bool(torch.isfinite(matrix).all()):
        return torch.full((min(matrix.shape),), torch.nan, dtype=torch.float64, device=matrix.device)
    return torch.linalg.svdvals(matrix).flip(-1) ** 2


def _gram(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``AᵀA`` for each matrix of a (batch, rows, cols) tensor with rows ≥ cols, accumulated in float64."""
    count, rows, cols = batch.shape
    gram = torch.zeros(count, cols, cols, dtype=torch.float64, device=device)
    step = max(1, _CHUNK_ELEMENTS // max(1, count * cols))
    for start in range(0, rows, step):
        chunk = batch[:, start : start + step].to(device=device, dtype=torch.float64)
        gram.baddbmm_(chunk.transpose(1, 2), chunk)
    return gram
