"""Layer matrices derived from other tensors: a fine-tune's change ``ΔW = W − W_base`` against its base model.

A fine-tuned model and its base are matched layer by layer by name (:func:`match_layers`): the same weight key,
else the unique layer whose dotted name is a suffix of the other's (``bert.encoder.layer.0.…`` against
``encoder.layer.0.…``, or a PEFT wrapper's ``base_model.model.…``). Matched layers must have the same shape.
:func:`delta_source` turns the pair into a :class:`~funnelscope.models.sources.WeightSource` whose tensors are
the differences, computed in float64 when a layer is read, so the weights probe analyses ``ΔW`` exactly as it
analyses a model; layers that cannot be formed (no counterpart, another shape) are kept as
:class:`DerivedRef` placeholders with a ``skip_reason``, listed rather than dropped.

Fine-tuning deltas and their spectra: WeightWatcher 0.7.7's ``analyze(base_model=…)``; see also Martin &
Mahoney's discussion of fine-tuned LLMs (WeightWatcher issue #300).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from funnelscope.errors import FunnelscopeInputError
from funnelscope.models.matrices import layer_name
from funnelscope.models.sources import TensorRef, WeightSource

__all__ = ["DerivedRef", "LayerMatch", "delta_source", "match_layers", "skip_reason"]


@dataclass(frozen=True)
class DerivedRef(TensorRef):
    """A layer matrix computed from other tensors when it is read.

    Attributes
    ----------
    matrix_shape : tuple of int, optional
        The shape of the matrix this stands for when the loaded tensor is a smaller one with the same non-zero
        singular values (the ``r × r`` core of a LoRA product ``B·A``); None when the loaded tensor is the matrix.
    skip_reason : str
        Why the layer cannot be formed (no counterpart in the base, a shape mismatch); empty when it can. Its
        loader then raises :class:`~funnelscope.errors.FunnelscopeInputError` with that reason.
    columns : dict
        Extra columns of the layer's row (e.g. ``lora_scale``).
    """

    matrix_shape: tuple[int, ...] | None = None
    skip_reason: str = ""
    columns: dict[str, object] = field(default_factory=dict, compare=False)


def skip_reason(ref: TensorRef) -> str:
    """The reason a layer cannot be analysed (a :class:`DerivedRef` placeholder), or ``""``."""
    return ref.skip_reason if isinstance(ref, DerivedRef) else ""


@dataclass(frozen=True)
class LayerMatch:
    """Layers of a model paired with those of a base model by name.

    Attributes
    ----------
    pairs : tuple of (TensorRef, TensorRef)
        ``(model layer, base layer)`` in the model's order, shapes not yet compared.
    model_only : tuple of TensorRef
        Model layers with no counterpart in the base (e.g. a new classification head).
    base_only : tuple of TensorRef
        Base layers no model layer was matched to.
    """

    pairs: tuple[tuple[TensorRef, TensorRef], ...]
    model_only: tuple[TensorRef, ...] = field(default=())
    base_only: tuple[TensorRef, ...] = field(default=())


def match_layers(model: list[TensorRef], base: list[TensorRef]) -> LayerMatch:
    """Pair each model layer with the base layer of the same name.

    The rule, in order: the same key; else the one base layer whose name (``layer_name`` of the key, split at
    the dots) ends with the model layer's name; else the longest suffix of the model layer's name that is one
    base layer's whole name. A name that fits several base layers is left unmatched rather than guessed.

    Examples
    --------
    >>> ref = lambda name: TensorRef(name, (2, 2), "dense", "<test>", lambda: torch.zeros(2, 2))
    >>> match = match_layers([ref("bert.encoder.q.weight"), ref("head.weight")], [ref("encoder.q.weight")])
    >>> [(a.name, b.name) for a, b in match.pairs], [r.name for r in match.model_only]
    ([('bert.encoder.q.weight', 'encoder.q.weight')], ['head.weight'])
    """
    by_key = {ref.name: ref for ref in base}
    by_name: dict[tuple[str, ...], list[TensorRef]] = {}
    by_suffix: dict[tuple[str, ...], list[TensorRef]] = {}
    for ref in base:
        parts = tuple(layer_name(ref.name).split("."))
        by_name.setdefault(parts, []).append(ref)
        for start in range(len(parts)):
            by_suffix.setdefault(parts[start:], []).append(ref)
    used: set[str] = set()
    pairs, model_only = [], []
    for ref in model:
        partner = by_key.get(ref.name)
        if partner is None:
            parts = tuple(layer_name(ref.name).split("."))
            candidates = by_suffix.get(parts, [])
            if len(candidates) != 1:
                candidates = next((by_name[parts[start:]] for start in range(1, len(parts))
                                   if parts[start:] in by_name), [])
            partner = candidates[0] if len(candidates) == 1 else None
        if partner is None or partner.name in used:
            model_only.append(ref)
            continue
        used.add(partner.name)
        pairs.append((ref, partner))
    base_only = tuple(ref for ref in base if ref.name not in used)
    return LayerMatch(tuple(pairs), tuple(model_only), base_only)


def delta_source(model: WeightSource, base: WeightSource) -> WeightSource:
    """The layers ``ΔW = W − W_base`` of a model against its base, matched by :func:`match_layers`.

    Parameters
    ----------
    model, base : WeightSource
        From :func:`~funnelscope.models.sources.open_weights`.

    Returns
    -------
    WeightSource
        In the model's order: one :class:`DerivedRef` per model layer (its difference from the base layer, read in
        float64; or a placeholder whose ``skip_reason`` says there is no base layer of that name or the shapes
        differ), then placeholders for the base layers that no model layer matched.

    Raises
    ------
    FunnelscopeInputError
        No model layer has a counterpart in the base.
    """
    match = match_layers(list(model), list(base))
    if not match.pairs:
        raise FunnelscopeInputError(
            f"{model.description}: no layer name matches one of {base.description} "
            f"(e.g. {model.tensors[0].name!r} against {base.tensors[0].name!r})"
        )
    partner = {ref.name: other for ref, other in match.pairs}
    refs: list[TensorRef] = []
    for ref in model:
        other = partner.get(ref.name)
        if other is None:
            refs.append(placeholder(ref, f"no layer {layer_name(ref.name)!r} in the base model"))
        elif other.shape != ref.shape:
            refs.append(placeholder(ref, f"shape {ref.shape} differs from the base layer's {other.shape}"))
        else:
            refs.append(DerivedRef(ref.name, ref.shape, ref.kind, ref.origin, _difference(ref, other)))
    refs.extend(placeholder(ref, "only in the base model") for ref in match.base_only)
    return WeightSource(f"{model.description} − base {base.description}", tuple(refs))


def placeholder(ref: TensorRef, reason: str) -> DerivedRef:
    """A :class:`DerivedRef` standing for ``ref`` that cannot be formed, for ``reason``."""

    def refuse() -> torch.Tensor:
        raise FunnelscopeInputError(reason)

    return DerivedRef(ref.name, ref.shape, ref.kind, ref.origin, refuse, skip_reason=reason)


def _difference(ref: TensorRef, base: TensorRef) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        weight, base_weight = ref.load(), base.load()
        for tensor in (weight, base_weight):
            if not tensor.is_floating_point():
                raise FunnelscopeInputError(f"weights of dtype {tensor.dtype} are not floating point")
        return weight.to(torch.float64, copy=True).sub_(base_weight)  # never the caller's tensor

    return load
