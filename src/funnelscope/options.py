"""The options every probe shares, defined once, and the validation of option values.

Shared options (same name, same default, same meaning in every probe and on the command line):

* ``batch_size`` (default :data:`DEFAULT_BATCH_SIZE` = 256): examples per forward pass for tensor data; a
  DataLoader keeps its own batches. No probe's numbers depend on it beyond rounding.
* ``device`` (default ``None``): where to compute. ``None`` is the device of the model's parameters (the CPU
  for a model without parameters); a device that this machine does not have is a
  :class:`~funnelscope.errors.FunnelscopeInputError`, never a traceback deep inside torch.
* ``seed`` (default :data:`DEFAULT_SEED` = 0): seed of every random choice of a probe (start vectors, probes,
  directions, sketches); ``None`` draws fresh randomness.
* ``progress`` (default ``False``): a progress bar on stderr (:mod:`funnelscope.progress`).

Every check raises :class:`~funnelscope.errors.FunnelscopeInputError` with a message that names the option
and the bad value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from funnelscope.errors import FunnelscopeInputError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SEED",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_seed",
    "make_generator",
    "parse_assignments",
    "resolve_device",
]

DEFAULT_BATCH_SIZE = 256
DEFAULT_SEED = 0
Choice = TypeVar("Choice")


def check_choice(name: str, value: Choice, choices: Iterable[Any]) -> Choice:
    """``value`` if it is one of ``choices``.

    >>> check_choice("bn", "keep", ("keep", "recompute"))
    'keep'
    """
    choices = tuple(choices)
    if isinstance(value, list | dict | set) or value not in choices:
        raise FunnelscopeInputError(f"{name}={value!r} must be one of {', '.join(map(repr, choices))}")
    return value


def check_int(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> int | None:
    """``value`` as an int ≥ ``minimum`` (bools are not integers here); ``None`` only when ``optional``.

    >>> check_int("top_k", 5), check_int("bottom_k", 0, minimum=0), check_int("n", None, optional=True)
    (5, 0, None)
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
        raise FunnelscopeInputError(f"{name}={value!r} must be {kind}" + (" or None" if optional else ""))
    return int(value)


def check_number(name: str, value: Any, *, positive: bool = True, optional: bool = False) -> float | None:
    """``value`` as a finite float (``> 0`` when ``positive``); ``None`` only when ``optional``."""
    if value is None and optional:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating)
            or not math.isfinite(value) or (positive and value <= 0)):
        kind = "a positive number" if positive else "a finite number"
        raise FunnelscopeInputError(f"{name}={value!r} must be {kind}" + (" or None" if optional else ""))
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool (a truthy string such as ``"no"`` is not)."""
    if not isinstance(value, bool | np.bool_):
        raise FunnelscopeInputError(f"{name}={value!r} must be True or False")
    return bool(value)


def check_seed(seed: Any) -> int:
    """The seed as an int; ``None`` draws one from fresh OS randomness."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise FunnelscopeInputError(f"seed={seed!r} must be an integer or None")
    return int(seed)


def make_generator(seed: Any) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded by :func:`check_seed`."""
    return torch.Generator().manual_seed(check_seed(seed))


def resolve_device(device: Any, model: nn.Module | None = None) -> torch.device:
    """The device to compute on: ``device`` if given and available, else the model's (else the CPU).

    >>> resolve_device(None), resolve_device("cpu")
    (device(type='cpu'), device(type='cpu'))
    """
    if device is None:
        first = next(iter(model.parameters()), None) if model is not None else None
        return first.device if first is not None else torch.device("cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise FunnelscopeInputError(f"device={device!r} is not a torch device (try 'cpu' or 'cuda')") from error
    if target.type == "cpu":
        return target
    backend = getattr(torch, target.type, None)
    if target.type == "mps":
        backend = getattr(torch.backends, "mps", None)
    available = bool(backend is not None and getattr(backend, "is_available", lambda: False)())
    if not available:
        raise FunnelscopeInputError(f"device={device!r}: this machine has no {target.type.upper()} device")
    count = getattr(backend, "device_count", lambda: 1)()
    if target.index is not None and target.index >= count:
        raise FunnelscopeInputError(f"device={device!r}: this machine has {count} {target.type} device(s)")
    return target


def parse_assignments(pairs: Iterable[str], *, option: str) -> dict[str, Any]:
    """``key=value`` strings as a dict, each value read as JSON when it parses (``lr=0.1``, ``depth=3``,
    ``name=wide``: a plain string otherwise); ``option`` names the command-line option in errors.

    >>> parse_assignments(["lr=0.1", "name=wide", "flag=true"], option="--set")
    {'lr': 0.1, 'name': 'wide', 'flag': True}
    """
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise FunnelscopeInputError(f"{option} expects key=value, got {pair!r}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed
