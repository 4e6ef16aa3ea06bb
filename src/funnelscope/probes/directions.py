"""Directions in weight space for loss-landscape cross-sections (``docs/quantities.md#loss-landscape``).

A direction is a dict ``name → tensor`` over a model's trainable parameters (float64, on the CPU).

Filter normalisation (Li, Xu, Taylor, Studer & Goldstein, "Visualizing the loss landscape of neural nets",
NeurIPS 2018, §4): draw ``d ~ N(0, I)`` and rescale every filter of it to the norm of the same filter of
the weights,

.. math::

    d_{i,j} \\leftarrow \\frac{d_{i,j}}{\\lVert d_{i,j} \\rVert} \\lVert \\theta_{i,j} \\rVert ,

where ``θ_{i,j}`` is the ``j``-th filter (the slice along the first, output dimension: a row of a Linear
weight, an output channel of a convolution) of layer ``i``. The scale invariance of ReLU networks (a layer's
weights times ``c``, the next layer's divided by ``c``) then no longer distorts the picture. Parameters with
at most one dimension (biases, normalisation weights) get a zero direction unless ``include_1d``; then each
entry is a filter of its own (``|d| = |θ|`` with a random sign).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from funnelscope.errors import FunnelscopeInputError

__all__ = [
    "Direction",
    "difference",
    "dot",
    "filter_normalized_direction",
    "norm",
    "parameters_of",
    "pca_directions",
]

Direction = dict[str, torch.Tensor]


def parameters_of(model: nn.Module | Mapping[str, torch.Tensor], names: Sequence[str] | None = None) -> Direction:
    """The trainable parameters of a model (or the same names from a state_dict) as float64 CPU tensors."""
    if isinstance(model, nn.Module):
        values = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
        if names is not None:
            state = model.state_dict()
            values = {name: (values[name] if name in values else state.get(name)) for name in names}
    else:
        values = dict(model)
    if names is not None:
        missing = [name for name in names if values.get(name) is None]
        if missing:
            raise FunnelscopeInputError(f"the models do not share parameters: missing {missing[:3]}")
        values = {name: values[name] for name in names}
    return {name: torch.as_tensor(value).detach().to("cpu", torch.float64).clone() for name, value in values.items()}


def filter_normalized_direction(
    weights: Direction, *, include_1d: bool = False, generator: torch.Generator | None = None
) -> Direction:
    """A Gaussian direction with every filter rescaled to the norm of the same filter of ``weights``.

    Parameters
    ----------
    weights : dict
        ``name → tensor``, the point the direction starts from (see :func:`parameters_of`).
    include_1d : bool
        Give parameters with at most one dimension a direction too (each entry its own filter);
        by default they get zeros.
    generator : torch.Generator, optional
        Source of the Gaussian draws (a CPU generator).

    Returns
    -------
    dict
        ``name → tensor`` shaped like ``weights``.

    Examples
    --------
    >>> w = {"weight": torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64), "bias": torch.ones(2)}
    >>> d = filter_normalized_direction(w, generator=torch.Generator().manual_seed(0))
    >>> d["weight"].norm(dim=1).round(decimals=12).tolist(), d["bias"].tolist()
    ([5.0, 1.0], [0.0, 0.0])
    """
    direction = {}
    for name, w in weights.items():
        w = w.to(torch.float64)
        draw = torch.randn(w.shape, generator=generator, dtype=torch.float64)
        if w.ndim <= 1:
            direction[name] = draw.sign() * w.abs() if include_1d else torch.zeros_like(w)
            continue
        rows, w_rows = draw.reshape(w.shape[0], -1), w.reshape(w.shape[0], -1)
        scale = w_rows.norm(dim=1, keepdim=True) / rows.norm(dim=1, keepdim=True).clamp_min(1e-300)
        direction[name] = (rows * scale).reshape(w.shape)
    return direction


def difference(a: Direction, b: Direction) -> Direction:
    """``a − b``."""
    return {name: a[name] - b[name] for name in a}


def dot(a: Direction, b: Direction) -> float:
    return float(sum((a[name] * b[name]).sum() for name in a))


def norm(a: Direction) -> float:
    return dot(a, a) ** 0.5


def pca_directions(trajectory: Sequence[Direction], final: Direction) -> tuple[Direction, Direction, Any]:
    """The two leading principal directions of ``θ_i − θ_final`` over a checkpoint trajectory (Li et al. 2018,
    §7), unit-norm, and the trajectory's coordinates ``(θ_i − θ_final)·u_k``, shape (checkpoints, 2)."""
    if len(trajectory) < 2:
        raise FunnelscopeInputError(f"trajectory has {len(trajectory)} checkpoints: PCA directions need at least 2")
    names = list(final)
    rows = torch.stack([torch.cat([(point[name] - final[name]).reshape(-1) for name in names])
                        for point in trajectory])
    _, singular, vh = torch.linalg.svd(rows, full_matrices=False)
    if singular.numel() < 2 or float(singular[1]) <= 1e-12 * float(singular[0]):
        raise FunnelscopeInputError("the trajectory spans fewer than two directions: PCA needs two")
    basis = []
    for k in range(2):
        vector, start, direction = vh[k], 0, {}
        for name in names:
            size = final[name].numel()
            direction[name] = vector[start : start + size].reshape(final[name].shape).clone()
            start += size
        basis.append(direction)
    return basis[0], basis[1], (rows @ vh[:2].T).numpy()
