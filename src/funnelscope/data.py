"""The data argument of every probe, read by one function: :func:`read_data`.

``data`` may be

* a tensor or a numpy array: inputs only (the first axis indexes the examples);
* an ``(x, y)`` pair (tuple or list) of tensors or arrays, or a :class:`LabelledData`: inputs and targets;
* a torch ``Dataset`` or ``DataLoader`` whose items are inputs, ``(input,)`` or ``(input, target, …)``.

It is read once into memory as a list of batches (a DataLoader keeps its own batches, a smaller last one
included; everything else is cut into ``batch_size`` examples), so that every pass of a probe sees the same
examples in the same order. Inputs must be real numbers and finite; targets, when there are any, one per
example. What a probe needs of the targets (class indices, any numbers, none) it checks itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from funnelscope.errors import FunnelscopeInputError
from funnelscope.options import DEFAULT_BATCH_SIZE, check_int

__all__ = ["Batches", "LabelledData", "read_data"]


@dataclass(frozen=True)
class LabelledData:
    """Inputs ``x`` (first axis = examples) and optional targets ``y``, with a name for messages."""

    x: torch.Tensor
    y: torch.Tensor | None
    name: str

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Batches:
    """A data set held as a list of ``(x, y)`` batches (``y`` None without targets).

    Attributes
    ----------
    batches : list of (Tensor, Tensor or None)
    n : int
        Number of examples, ``Σ_b |b|``.
    name : str
        How messages refer to the data.
    """

    batches: list[tuple[torch.Tensor, torch.Tensor | None]]
    n: int
    name: str = "data"

    @property
    def has_targets(self) -> bool:
        return self.batches[0][1] is not None

    def inputs(self) -> torch.Tensor:
        """All inputs, concatenated along the first axis."""
        return self.batches[0][0] if len(self.batches) == 1 else torch.cat([x for x, _ in self.batches])

    def targets(self) -> torch.Tensor | None:
        """All targets, concatenated (None without targets)."""
        if not self.has_targets:
            return None
        return self.batches[0][1] if len(self.batches) == 1 else torch.cat([y for _, y in self.batches])

    def to(self, device: torch.device) -> Batches:
        moved = [(x.to(device), None if y is None else y.to(device)) for x, y in self.batches]
        return Batches(moved, self.n, self.name)

    def require_targets(self, why: str) -> Batches:
        """``self``, or an error saying the data have no targets and why they are needed."""
        if not self.has_targets:
            raise FunnelscopeInputError(f"{self.name}: has no targets (y): {why}; pass (x, y)")
        return self


def read_data(
    data: Any,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
    name: str = "data",
) -> Batches:
    """Read a probe's ``data`` argument (module docstring) into :class:`Batches`.

    Parameters
    ----------
    data : Tensor, ndarray, (x, y), LabelledData, Dataset or DataLoader
    batch_size : int, default 256
        Batch size for everything but a DataLoader.
    max_batches : int, optional
        Keep only the first ``max_batches`` batches.
    name : str
        How errors refer to the data.

    Raises
    ------
    FunnelscopeInputError
        An unsupported type, no examples, inputs that are not real numbers or not finite (the count and the
        first bad example are named), targets whose count differs from the inputs', batches of different
        example shapes, or dict items.

    Examples
    --------
    >>> batches = read_data((torch.zeros(5, 3), torch.arange(5)), batch_size=2)
    >>> batches.n, [tuple(x.shape) for x, _ in batches.batches], batches.targets().tolist()
    (5, [(2, 3), (2, 3), (1, 3)], [0, 1, 2, 3, 4])
    """
    from torch.utils.data import DataLoader, Dataset

    size = check_int("batch_size", batch_size)
    max_batches = check_int("max_batches", max_batches, optional=True)
    if isinstance(data, LabelledData) or (hasattr(data, "x") and hasattr(data, "y")
                                          and not isinstance(data, torch.Tensor | np.ndarray)):
        name = getattr(data, "name", name) if name == "data" else name
        data = data.x if data.y is None else (data.x, data.y)
    if isinstance(data, torch.Tensor | np.ndarray):
        x = _tensor(data, name, "inputs")
        batches = [(x[i : i + size], None) for i in range(0, x.shape[0], size)] if x.ndim else []
    elif isinstance(data, tuple | list) and len(data) == 2 and not isinstance(data[0], tuple | list):
        x, y = _tensor(data[0], name, "inputs"), _tensor(data[1], name, "targets")
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
            batches.append(_item(item, name))
    else:
        raise FunnelscopeInputError(
            f"{name} must be a tensor or array of inputs, an (x, y) pair, a LabelledData, a Dataset or a "
            f"DataLoader, got {type(data).__name__}"
        )
    if max_batches is not None:
        batches = batches[:max_batches]
    batches = [(x, y) for x, y in batches if x.shape[0] > 0]
    if not batches:
        raise FunnelscopeInputError(f"{name}: the data set is empty")
    _check_batches(batches, name)
    return Batches(batches, sum(int(x.shape[0]) for x, _ in batches), name)


def _item(item: Any, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(item, dict):
        raise FunnelscopeInputError(f"{name}: the data yield dicts (keys {sorted(item)}): yield (input, target)")
    if isinstance(item, tuple | list):
        if not item:
            raise FunnelscopeInputError(f"{name}: the data yield empty items")
        x = _tensor(item[0], name, "inputs")
        y = _tensor(item[1], name, "targets") if len(item) > 1 else None
    else:
        x, y = _tensor(item, name, "inputs"), None
    if y is not None and (y.ndim == 0 or x.ndim == 0 or y.shape[0] != x.shape[0]):
        raise FunnelscopeInputError(f"{name}: a batch has {x.shape[0] if x.ndim else 0} inputs and targets of "
                                    f"shape {tuple(y.shape)}")
    return x, y


def _tensor(value: Any, name: str, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    elif isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise FunnelscopeInputError(f"{name}: {what} have numpy dtype {value.dtype}: need numbers")
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    elif isinstance(value, int | float) and what == "targets":
        tensor = torch.as_tensor(value)
    else:
        raise FunnelscopeInputError(f"{name}: {what} must be tensors or numeric arrays, got {type(value).__name__}")
    if tensor.is_complex():
        raise FunnelscopeInputError(f"{name}: {what} have complex dtype {tensor.dtype}")
    return tensor


def _check_batches(batches: list[tuple[torch.Tensor, torch.Tensor | None]], name: str) -> None:
    shapes = {tuple(x.shape[1:]) for x, _ in batches}
    if len(shapes) > 1:
        raise FunnelscopeInputError(f"{name}: the examples have different shapes: {sorted(shapes)[:3]}")
    if len({y is None for _, y in batches}) > 1:
        raise FunnelscopeInputError(f"{name}: some batches have targets and others do not")
    seen = 0
    for x, _ in batches:
        if x.ndim == 0:
            raise FunnelscopeInputError(f"{name}: inputs must have a first axis of examples, got a scalar")
        if x.is_floating_point():
            finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
            if not bool(finite.all()):
                total = sum(int((~torch.isfinite(b.reshape(b.shape[0], -1)).all(dim=1)).sum())
                            for b, _ in batches if b.is_floating_point())
                first = seen + int(torch.nonzero(~finite)[0, 0])
                raise FunnelscopeInputError(
                    f"{name}: inputs contain NaN or inf in {total} of "
                    f"{sum(int(b.shape[0]) for b, _ in batches)} examples (first: example {first})"
                )
        seen += int(x.shape[0])
