"""What a model's forward returned, as the tensor the probes differentiate: the logits.

A plain tensor is used as it is; a Hugging Face ``ModelOutput`` (or any object with a ``logits`` tensor) and
a dict with a ``"logits"`` key give that tensor. Anything else is a
:class:`~funnelscope.errors.FunnelscopeInputError` that says what came back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from funnelscope.errors import FunnelscopeInputError

__all__ = ["logits_of"]


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor in a model's output.

    >>> logits_of(torch.zeros(2, 3)).shape, logits_of({"logits": torch.ones(2, 3), "loss": None}).shape
    (torch.Size([2, 3]), torch.Size([2, 3]))
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        logits = output.get("logits")
        if isinstance(logits, torch.Tensor):
            return logits
        raise FunnelscopeInputError(
            f"the model returned a dict without a 'logits' tensor (keys {sorted(map(str, output))[:6]})"
        )
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise FunnelscopeInputError(f"the model returned {type(output).__name__}, not a tensor (or logits)")
