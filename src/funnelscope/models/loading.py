"""Load a runnable model (not just its weights) from what users have, for the data-dependent probes.

============================================  ==========================================================
MODEL spec                                    how it is loaded
============================================  ==========================================================
``model.pt`` (TorchScript archive)            ``torch.jit.load``: architecture and weights, no pickle
``package.module:factory`` + weights file     ``factory(**kwargs)`` builds the architecture; the weights
                                              (safetensors, state_dict torch file, …) are loaded strictly
``model.pt`` holding a pickled ``nn.Module``  ``torch.load(weights_only=False)`` only with
                                              ``trust_pickle=True``: unpickling runs code from the file
============================================  ==========================================================
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from funnelscope.errors import FunnelscopeInputError, first_line
from funnelscope.models.sources import load_torch_file, open_weights

__all__ = ["load_model", "load_models"]


def load_model(
    spec: str | Path,
    *,
    weights: str | Path | None = None,
    factory_kwargs: Mapping[str, object] | None = None,
    trust_pickle: bool = False,
) -> nn.Module:
    """Build or load a model from a TorchScript file, a ``module:factory`` spec or (trusted) pickle.

    Parameters
    ----------
    spec : str or Path
        A file path, or ``package.module:factory`` naming a callable that returns an ``nn.Module``.
    weights : path, optional
        Weights for a factory-built model (any form :func:`funnelscope.open_weights` reads).
    factory_kwargs : mapping, optional
        Keyword arguments for the factory.
    trust_pickle : bool, default False
        Allow unpickling a full module.

    Raises
    ------
    FunnelscopeInputError
        Missing file, unknown factory, weights that do not fit the architecture, untrusted pickle.
    """
    path = Path(str(spec)).expanduser()
    if not path.exists() and ":" in str(spec):
        return _from_factory(str(spec), weights, dict(factory_kwargs or {}), trust_pickle)
    if factory_kwargs:
        raise FunnelscopeInputError("factory arguments are only for a module:factory spec")
    if weights is not None:
        raise FunnelscopeInputError(f"{spec}: --weights is only for a module:factory spec")
    if not path.exists():
        raise FunnelscopeInputError(f"{path}: no such file (and not a module:factory spec)")
    if path.is_dir() or path.suffix == ".safetensors":
        raise FunnelscopeInputError(
            f"{path}: holds weights only; give the architecture as module:factory with --weights {path}"
        )
    obj = load_torch_file(path, trust_pickle=trust_pickle)
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping):
        raise FunnelscopeInputError(
            f"{path}: holds a state_dict; give the architecture as module:factory with --weights {path}"
        )
    raise FunnelscopeInputError(f"{path}: holds a {type(obj).__name__}, not a model")


def load_models(
    specs: list[str],
    *,
    weights: str | Path | None = None,
    factory_kwargs: Mapping[str, object] | None = None,
    trust_pickle: bool = False,
) -> dict[str, nn.Module]:
    """Several models by :func:`load_model`, each under a unique label (its file stem or factory name;
    ``_2``, ``_3``… for repeats), in the order given. ``weights`` goes with a single factory spec."""
    if not specs:
        raise FunnelscopeInputError("give at least one MODEL")
    if weights is not None and len(specs) > 1:
        raise FunnelscopeInputError("--weights goes with a single module:factory MODEL")
    models: dict[str, nn.Module] = {}
    for spec in specs:
        model = load_model(spec, weights=weights, factory_kwargs=factory_kwargs, trust_pickle=trust_pickle)
        base = Path(spec).stem if Path(spec).exists() else str(spec).rpartition(":")[2]
        base = "".join(c if c.isalnum() or c in "._-" else "_" for c in base) or "model"
        label, suffix = base, 2
        while label in models:
            label, suffix = f"{base}_{suffix}", suffix + 1
        models[label] = model
    return models


def _from_factory(spec: str, weights: str | Path | None, kwargs: dict, trust_pickle: bool) -> nn.Module:
    module_name, _, attribute = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise FunnelscopeInputError(f"{spec}: cannot import the model factory ({first_line(error)})") from error
    try:
        model = factory(**kwargs)
    except TypeError as error:
        raise FunnelscopeInputError(f"{spec}: {first_line(error)}") from error
    if not isinstance(model, nn.Module):
        raise FunnelscopeInputError(f"{spec}: returned a {type(model).__name__}, not an nn.Module")
    if weights is None:
        raise FunnelscopeInputError(f"{spec}: needs --weights (a freshly initialised model has nothing to measure)")
    source = open_weights(weights, trust_pickle=trust_pickle, matrices_only=False)
    state = {ref.name: ref.load() for ref in source}
    full = model.state_dict()
    if source.prefix and not set(state) <= set(full):  # the architecture's own names begin with the prefix
        state = {source.prefix + name: tensor for name, tensor in state.items()}
    missing = sorted(set(full) - set(state))
    unexpected = sorted(set(state) - set(full))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise FunnelscopeInputError(f"{weights}: does not fit {spec} ({detail})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise FunnelscopeInputError(f"{weights}: does not fit {spec} ({first_line(error)})") from error
    return model
