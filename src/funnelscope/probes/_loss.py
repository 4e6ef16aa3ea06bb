"""Labelled data in batches and the loss over them, as the curvature probes (hessian, landscape) use them.

The loss over a data set is the example-weighted mean of the per-example loss,

.. math::

    L(\\theta) = \\frac{1}{n} \\sum_{b} \\sum_{i \\in b} \\ell(f_\\theta(x_i), y_i),

never the mean of the batch means (which over-weights a smaller last batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from funnelscope.errors import FunnelscopeInputError

__all__ = ["LOSSES", "Batches", "LossFunction", "accuracy_count", "as_batches", "loss_sum", "resolve_loss"]

LOSSES = ("cross_entropy", "mse")
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DEFAULT_BATCH_SIZE = 256


@dataclass(frozen=True)
class Batches:
    """Inputs and targets held as a list of batches on one device (read once, so every pass sees the same data).

    Attributes
    ----------
    batches : list of (Tensor, Tensor)
        ``(x, y)`` pairs in the data's order.
    n : int
        Number of examples, ``Σ_b |b|``.
    """

    batches: list[tuple[torch.Tensor, torch.Tensor]]
    n: int

    def to(self, device: torch.device) -> Batches:
        return Batches([(x.to(device), y.to(device)) for x, y in self.batches], self.n)


def resolve_loss(loss_fn: str | LossFunction | None) -> LossFunction:
    """``None``/``"cross_entropy"``: per-example cross-entropy on logits; ``"mse"``: per-example mean squared
    error; a callable ``loss_fn(output, target)`` returning per-example losses (shape (b,)) or a batch mean."""
    if loss_fn is None or loss_fn == "cross_entropy":
        return _cross_entropy
    if loss_fn == "mse":
        return _mse
    if isinstance(loss_fn, str) or not callable(loss_fn):
        raise FunnelscopeInputError(
            f"loss_fn={loss_fn!r} must be one of {', '.join(map(repr, LOSSES))}, a callable or None"
        )
    return loss_fn


def _cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if output.ndim != 2 or target.is_floating_point():
        raise FunnelscopeInputError(
            f"cross-entropy needs logits of shape (batch, classes) and integer labels, got outputs of shape "
            f"{tuple(output.shape)} and labels of dtype {target.dtype}: pass loss_fn"
        )
    return nn.functional.cross_entropy(output, target, reduction="none")


def _mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    diff = output - target.reshape(output.shape).to(output.dtype)
    return diff.pow(2).reshape(output.shape[0], -1).mean(dim=1)


def loss_sum(loss_fn: LossFunction, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``Σ_{i∈b} ℓ_i`` of one batch: the sum of per-example losses, or ``|b|·`` a scalar batch mean."""
    value = loss_fn(output, target)
    if not isinstance(value, torch.Tensor):
        raise FunnelscopeInputError(f"loss_fn returned {type(value).__name__}, not a tensor")
    if value.ndim == 0:
        return value * output.shape[0]
    if value.shape != (output.shape[0],):
        raise FunnelscopeInputError(
            f"loss_fn must return one loss per example (shape ({output.shape[0]},)) or a scalar batch mean, "
            f"got shape {tuple(value.shape)}"
        )
    return value.sum()


def accuracy_count(output: torch.Tensor, target: torch.Tensor) -> float:
    """Correct argmax predictions in a batch of logits with integer labels; NaN when that does not apply."""
    if output.ndim != 2 or target.ndim != 1 or target.is_floating_point():
        return float("nan")
    return float((output.argmax(dim=1) == target).sum())


def as_batches(
    data: Any, *, batch_size: int | None = None, max_batches: int | None = None, name: str = "data"
) -> Batches:
    """Read labelled data into batches.

    Parameters
    ----------
    data : DataLoader, (x, y) pair, LabelledData or Dataset of (x, y) items
        A DataLoader is read once in its own batches (a smaller last batch included); tensors and arrays are
        cut into batches of ``batch_size`` (default 256).
    batch_size : int, optional
    max_batches : int, optional
        Keep only the first ``max_batches`` batches.
    name : str
        How errors refer to the data.
    """
    from torch.utils.data import DataLoader, Dataset

    size = batch_size or DEFAULT_BATCH_SIZE
    if hasattr(data, "x") and hasattr(data, "y") and not isinstance(data, torch.Tensor):
        if data.y is None:
            raise FunnelscopeInputError(f"{name}: has no labels (targets are needed for a loss)")
        data = (data.x, data.y)
    if isinstance(data, tuple | list) and len(data) == 2 and not isinstance(data[0], tuple | list):
        x, y = (_as_tensor(part, name) for part in data)
        if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
            raise FunnelscopeInputError(
                f"{name}: inputs and targets must have the same first dimension, got shapes "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        batches = [(x[i : i + size], y[i : i + size]) for i in range(0, x.shape[0], size)]
    elif isinstance(data, DataLoader | Dataset):
        loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=size)
        batches = []
        for item in loader:
            if max_batches is not None and len(batches) >= max_batches:
                break
            if not isinstance(item, tuple | list) or len(item) < 2:
                raise FunnelscopeInputError(f"{name}: the loader must yield (input, target) pairs")
            batches.append((_as_tensor(item[0], name), _as_tensor(item[1], name)))
    else:
        raise FunnelscopeInputError(
            f"{name} must be a DataLoader, an (x, y) pair of tensors or a LabelledData, got {type(data).__name__}"
        )
    if max_batches is not None:
        batches = batches[:max_batches]
    batches = [(x, y) for x, y in batches if x.shape[0] > 0]
    if not batches:
        raise FunnelscopeInputError(f"{name}: the data set is empty")
    for x, _ in batches:
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise FunnelscopeInputError(f"{name}: inputs contain NaN or inf")
    return Batches(batches, sum(int(x.shape[0]) for x, _ in batches))


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(value))
    raise FunnelscopeInputError(f"{name}: expected tensors or numeric arrays, got {type(value).__name__}")
