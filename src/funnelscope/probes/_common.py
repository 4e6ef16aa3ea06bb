"""Helpers shared by the data-dependent probes (jacobian, hessian, landscape, linearity).

Reading inputs (tensors, arrays, Datasets, DataLoaders), validating options with errors that name the bad
value, choosing the device, and running a model in eval mode with every submodule's mode restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from funnelscope.errors import FunnelscopeInputError

__all__ = [
    "_check_choice",
    "_check_count",
    "_collect",
    "_evaluating",
    "_forward_checked",
    "_load_inputs",
    "_progress_bar",
    "_short_error",
    "_target_device",
]


def _load_inputs(inputs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    from torch.utils.data import DataLoader, Dataset

    found = None
    if isinstance(inputs, torch.Tensor):
        x = inputs.detach()
    elif isinstance(inputs, np.ndarray):
        if inputs.dtype.kind not in "biuf":
            raise FunnelscopeInputError(f"inputs have numpy dtype {inputs.dtype}: need numbers")
        x = torch.from_numpy(np.ascontiguousarray(inputs))
    elif isinstance(inputs, DataLoader | Dataset):
        loader = inputs if isinstance(inputs, DataLoader) else DataLoader(inputs, batch_size=256)
        x, found = _collect(loader)
    else:
        raise FunnelscopeInputError(
            f"inputs must be a tensor, a numpy array, a torch Dataset or a DataLoader, got {type(inputs).__name__}"
        )
    if x.ndim == 0 or x.shape[0] == 0:
        raise FunnelscopeInputError(f"the data set is empty (inputs of shape {tuple(x.shape)})")
    if x.is_complex():
        raise FunnelscopeInputError(f"inputs have complex dtype {x.dtype}")
    if x.is_floating_point():
        finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite)[:, 0]
            raise FunnelscopeInputError(
                f"inputs contain NaN or inf in {bad.numel()} of {x.shape[0]} examples (first: example {int(bad[0])})"
            )
    return x, found


def _collect(loader: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    inputs, labels = [], []
    for batch in loader:
        if isinstance(batch, dict):
            raise FunnelscopeInputError(
                f"the data yield dicts (keys {sorted(batch)}): pass a tensor, or (input, label) items"
            )
        if isinstance(batch, tuple | list):
            if not batch:
                raise FunnelscopeInputError("the data yield empty items")
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            x, y = batch, None
        inputs.append(torch.as_tensor(x))
        labels.append(y)
    if not inputs:
        raise FunnelscopeInputError("the data set is empty")
    shapes = {tuple(x.shape[1:]) for x in inputs}
    if len(shapes) > 1:
        raise FunnelscopeInputError(f"the examples have different shapes: {sorted(shapes)[:3]}")
    found = None
    if all(isinstance(y, torch.Tensor) and y.ndim == 1 for y in labels):
        found = torch.cat(labels)
    return torch.cat(inputs), found


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise FunnelscopeInputError(f"{name}={value!r} must be one of {', '.join(map(repr, choices))}")


def _check_count(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise FunnelscopeInputError(f"{name}={value!r} must be a positive integer")
    return int(value)


def _target_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise FunnelscopeInputError(f"device={device!r} is not a torch device") from err
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


@contextmanager
def _evaluating(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode (and ``device``) for the computation; every submodule's mode (and the device) restored."""
    modes = [(module, module.training) for module in model.modules()]
    devices = {p.device for p in model.parameters()} | {b.device for b in model.buffers()}
    move = len(devices) == 1 and devices != {device}
    original = next(iter(devices)) if move else None
    model.eval()
    if move:
        model.to(device)
    try:
        yield
    finally:
        if move:
            model.to(original)
        for module, mode in modes:
            module.training = mode


@contextmanager
def _progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A transient rich progress bar on stderr when ``enabled`` (else a no-op); yields ``advance(steps=1)``."""
    if not enabled:
        yield lambda steps=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task(label, total=total)
    bar.start()
    try:
        yield lambda steps=1: bar.advance(task, steps)
    finally:
        bar.stop()


def _short_error(error: BaseException) -> str:
    """One line of an exception's message: the last ``…Error: …`` line of a TorchScript traceback, else the first."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    errors = [line for line in lines if line.split(":", 1)[0].endswith(("Error", "Exception"))]
    return (errors[-1] if errors else lines[0]).rstrip(".")


def _forward_checked(model: nn.Module, x: torch.Tensor) -> Any:
    """``model(x)``, a :class:`FunnelscopeInputError` naming the input shape if the model rejects it."""
    try:
        return model(x)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as error:
        raise FunnelscopeInputError(
            f"the model rejected inputs of shape {tuple(x.shape)}: {_short_error(error)}"
        ) from error
