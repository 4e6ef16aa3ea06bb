"""The loss over a data set, as the curvature probes (hessian, landscape) use it.

The loss over a data set is the example-weighted mean of the per-example loss,

.. math::

    L(\\theta) = \\frac{1}{n} \\sum_{b} \\sum_{i \\in b} \\ell(f_\\theta(x_i), y_i),

never the mean of the batch means (which over-weights a smaller last batch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from funnelscope.data import Batches
from funnelscope.errors import FunnelscopeInputError, first_line
from funnelscope.models.evaluation import MODEL_ERRORS, forward

__all__ = ["LOSSES", "LossFunction", "accuracy_count", "loss_sum", "loss_value", "resolve_loss"]

LOSSES = ("cross_entropy", "mse")
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    classes = output.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise FunnelscopeInputError(f"labels must be class indices in [0, {classes}) for a model with {classes} "
                                    f"outputs, got values in [{int(target.min())}, {int(target.max())}]")
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


@torch.no_grad()
def loss_value(model: nn.Module, batches: Batches, loss_fn: LossFunction) -> float:
    """``L(θ)``, the example-weighted mean loss over ``batches``: also the first place where a model that
    rejects the data, or a loss that does not fit its outputs, becomes a one-line error."""
    total = 0.0
    for x, y in batches.batches:
        output = forward(model, x)
        try:
            total += float(loss_sum(loss_fn, output, y).double())
        except FunnelscopeInputError:
            raise
        except MODEL_ERRORS as error:
            raise FunnelscopeInputError(
                f"{batches.name}: the loss failed on outputs of shape {tuple(output.shape)} and targets of shape "
                f"{tuple(y.shape)}: {first_line(error)}"
            ) from error
    return total / batches.n
