"""The layers a fine-tune is analysed by: ``ΔW = W − W_base`` against its base, or a LoRA adapter's.

``analyze_weights(model, base_model=base)`` analyses ``ΔW`` layer by layer
(:func:`~funnelscope.models.deltas.delta_source`); ``analyze_weights(adapter, peft=True)`` the ``B·A`` of each
LoRA pair, and ``peft="with_base"`` also ``W + s·B·A`` (:func:`~funnelscope.models.peft.adapter_source`).
:func:`derive_source` chooses among them; :func:`check_derivation` validates the options on entry.
"""

from __future__ import annotations

from funnelscope.errors import FunnelscopeInputError
from funnelscope.models.deltas import delta_source
from funnelscope.models.peft import adapter_source, read_adapter_config
from funnelscope.models.sources import WeightSource, open_weights

__all__ = ["PEFT_MODES", "check_derivation", "derive_source"]

PEFT_MODES = (False, True, "with_base")


def check_derivation(base_model: object, peft: bool | str, randomize: bool) -> None:
    """Validate ``base_model=`` and ``peft=`` on entry.

    Raises
    ------
    FunnelscopeInputError
        ``peft`` not one of False, True, ``"with_base"``; ``peft=True`` with a ``base_model`` (it would be
        unused); ``randomize`` with ``peft`` (shuffling the ``r × r`` core is not shuffling ``B·A``).
    """
    if not any(peft is mode or (isinstance(mode, str) and peft == mode) for mode in PEFT_MODES):
        raise FunnelscopeInputError(f"peft={peft!r} must be False, True or 'with_base'")
    if peft is True and base_model is not None:
        raise FunnelscopeInputError("peft=True analyses the adapter alone: pass peft='with_base' to use base_model")
    if peft and randomize:
        raise FunnelscopeInputError("randomize=True is not available with peft (the adapter is analysed by its core)")


def derive_source(
    model_or_path: object,
    source: WeightSource,
    *,
    base_model: object = None,
    peft: bool | str = False,
    trust_pickle: bool = False,
) -> WeightSource:
    """The layers ``analyze_weights`` analyses: ``source`` itself, its difference from ``base_model``, or its
    LoRA layers (``peft``).

    Parameters
    ----------
    model_or_path : object
        What ``source`` was opened from (an adapter directory holds ``adapter_config.json``).
    source : WeightSource
        The opened model or adapter.
    base_model : nn.Module, state_dict or path, optional
        The base model: ``ΔW = W − W_base`` without ``peft``, the ``W`` of ``W + s·B·A`` with ``peft="with_base"``.
    peft : False, True or "with_base"
    trust_pickle : bool
        Passed to :func:`~funnelscope.models.sources.open_weights` for the base.

    Raises
    ------
    FunnelscopeInputError
        An unreadable base, no layer in common, no LoRA pair in an adapter, or a merge without its scale.
    """
    base = None if base_model is None else open_weights(base_model, trust_pickle=trust_pickle)
    if peft:
        return adapter_source(source, config=read_adapter_config(model_or_path), base=base,
                              with_base=peft == "with_base")
    if base is not None:
        return delta_source(source, base)
    return source
