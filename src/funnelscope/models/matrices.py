"""Layer tensors as matrices (``docs/quantities.md#layer-matrices``).

* Linear, Embedding, Hugging Face Conv1D and other 2-D weights: the matrix itself.
* Conv1d/2d/3d with weight of shape ``(out, in, *kernel)``: one ``out × in`` slice per kernel position,
  ``rf = prod(kernel)`` slices, whose eigenvalues are pooled into one ESD per layer (or analysed per slice).

Orientation follows WeightWatcher: ``N = max(rows, cols)``, ``M = min(rows, cols)``, ``Q = N / M``; each
matrix has ``M`` eigenvalues ``λ = σ²``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["layer_name", "layer_shape", "weight_slices"]


def layer_name(key: str) -> str:
    """The module path of a weight key: ``encoder.layer.0.query.weight`` → ``encoder.layer.0.query``."""
    return key[: -len(".weight")] if key.endswith(".weight") else key


def layer_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(N, M, rf)`` of a weight tensor: the slice dimensions (N ≥ M) and the number of slices."""
    rows, cols = shape[0], shape[1]
    rf = math.prod(shape[2:]) if len(shape) > 2 else 1
    return max(rows, cols), min(rows, cols), rf


def weight_slices(weight: torch.Tensor) -> torch.Tensor:
    """The matrices of a layer as a batch of shape ``(rf, rows, cols)``.

    A 2-D weight gives a batch of one. A convolution weight ``(out, in, *kernel)`` gives the ``out × in``
    slice at every kernel position, ``W[:, :, p]``, in row-major order of the positions.

    Examples
    --------
    >>> w = torch.arange(2 * 3 * 2 * 2.0).reshape(2, 3, 2, 2)
    >>> weight_slices(w).shape
    torch.Size([4, 2, 3])
    >>> bool((weight_slices(w)[1] == w[:, :, 0, 1]).all())
    True
    """
    if weight.ndim < 2:
        raise ValueError(f"a layer matrix needs at least 2 dimensions, got shape {tuple(weight.shape)}")
    if weight.ndim == 2:
        return weight.unsqueeze(0)
    out_channels, in_channels = weight.shape[:2]
    return weight.reshape(out_channels, in_channels, -1).permute(2, 0, 1)
