"""Running a model for a probe: eval mode on a device with everything restored, and a checked forward pass.

A probe never leaves a trace on the model it was given: :func:`evaluating` puts every submodule in eval mode
(BatchNorm on running statistics, no dropout) and, if needed, moves the model to the probe's device, and
restores both afterwards, also on error. :func:`forward` calls the model and returns its logits
(:func:`funnelscope.models.outputs.logits_of`), turning a model that rejects its inputs into a
:class:`~funnelscope.errors.FunnelscopeInputError` that names the input shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from funnelscope.errors import FunnelscopeInputError, first_line
from funnelscope.models.outputs import logits_of

__all__ = ["MODEL_ERRORS", "evaluating", "forward"]

# what a model raises when the inputs do not fit it (shapes, dtypes, TorchScript's checks)
MODEL_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, AssertionError)


@contextmanager
def evaluating(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode (and ``device``) for the block; every submodule's mode (and the device) restored after."""
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


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The logits ``model(x)``; a :class:`FunnelscopeInputError` naming the input shape if the model rejects
    ``x``."""
    try:
        output = model(x)
    except MODEL_ERRORS as error:
        raise FunnelscopeInputError(f"the model rejected inputs of shape {tuple(x.shape)}: {first_line(error)}") \
            from error
    return logits_of(output)
