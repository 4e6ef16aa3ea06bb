"""The models of a pretrained series: a manifest CSV, model specs or modules, checked before anything runs.

A manifest has the columns ``name, model`` and optionally ``weights, factory_args, accuracy, step``
(:data:`MANIFEST_COLUMNS`); :func:`read_manifest` reads it into :class:`SeriesModel` entries and
:func:`series_entries` turns whatever :func:`funnelscope.analyze_series` accepts into the same entries. Every
mistake (a missing file, an unknown column, an accuracy that is not a fraction, a duplicate name) is one
:class:`~funnelscope.errors.FunnelscopeInputError` line naming the manifest's line.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from funnelscope.errors import FunnelscopeInputError

__all__ = ["IN_MEMORY", "MANIFEST_COLUMNS", "SeriesModel", "check_entries", "read_manifest", "series_entries",
           "step_from_name"]

#: The columns a manifest may have (``name`` and ``model`` are required).
MANIFEST_COLUMNS = ("name", "model", "weights", "factory_args", "accuracy", "step")
#: Models given as objects, by the placeholder spec of their entry (measured in this process only).
IN_MEMORY: dict[str, nn.Module] = {}
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class SeriesModel:
    """One model of a series.

    Attributes
    ----------
    name : str
        Unique in the series; letters, digits, ``.``, ``_`` and ``-`` (it names the model's directory).
    model : str
        A TorchScript file, a ``package.module:factory`` spec (then ``weights``), or a pickled module.
    weights : str, optional
        Weights for a factory-built model.
    factory_args : dict
        Keyword arguments of the factory.
    accuracy : float, optional
        The reported (test) accuracy, a fraction in ``[0, 1]``.
    step : int, optional
        The training step of a checkpoint.
    """

    name: str
    model: str
    weights: str | None = None
    factory_args: dict[str, Any] = field(default_factory=dict)
    accuracy: float | None = None
    step: int | None = None


def read_manifest(path: str | Path) -> list[SeriesModel]:
    """The models of a manifest CSV with columns ``name, model`` and optionally ``weights, factory_args,
    accuracy, step``.

    Relative paths are relative to the manifest's directory. ``factory_args`` is a JSON object
    (``{"width": 32}``) or ``key=value`` pairs separated by ``;`` (values read as JSON). ``accuracy`` is the
    reported accuracy as a fraction in ``[0, 1]``; percentages are refused rather than guessed (is 0.9 a
    fraction or 0.9 %?). ``step`` is a non-negative integer.

    Raises
    ------
    FunnelscopeInputError
        An unreadable file, a missing or unknown column, an empty or duplicate or unusable name, a model or
        weights file that does not exist, bad factory arguments, a bad accuracy or step — in one line naming
        the row.

    Examples
    --------
    >>> read_manifest("series.csv")  # doctest: +SKIP
    [SeriesModel(name='w32', model='/data/w32.pt', weights=None, factory_args={}, accuracy=0.91, step=None)]
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FunnelscopeInputError(f"{path}: no such manifest file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise FunnelscopeInputError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    columns = [str(column).strip() for column in frame.columns]
    unknown = [column for column in columns if column not in MANIFEST_COLUMNS]
    if unknown:
        raise FunnelscopeInputError(f"{path}: unknown column(s) {unknown}; the columns are "
                                    f"{', '.join(MANIFEST_COLUMNS)}")
    missing = [column for column in ("name", "model") if column not in columns]
    if missing:
        raise FunnelscopeInputError(f"{path}: missing column(s) {missing}")
    frame.columns = columns
    if frame.empty:
        raise FunnelscopeInputError(f"{path}: lists no models")
    base = path.resolve().parent
    entries = []
    for number, row in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
        where = f"{path} line {number}"
        cell = {key: str(value).strip() for key, value in row.items()}
        entries.append(SeriesModel(
            name=cell["name"], model=_resolve_model(cell["model"], base, where),
            weights=_resolve_file(cell.get("weights", ""), base, where, "weights") or None,
            factory_args=_factory_args(cell.get("factory_args", ""), where),
            accuracy=_accuracy(cell.get("accuracy", ""), where), step=_step(cell.get("step", ""), where)))
    return check_entries(entries, where=str(path))


def check_entries(entries: Sequence[SeriesModel], *, where: str = "series") -> list[SeriesModel]:
    """The entries, checked: at least one, names usable as directory names and unique, model files present,
    a factory spec with weights."""
    if not entries:
        raise FunnelscopeInputError(f"{where}: no models")
    seen: set[str] = set()
    for entry in entries:
        if not _NAME.match(entry.name):
            raise FunnelscopeInputError(f"{where}: model name {entry.name!r} must be letters, digits, '.', '_' "
                                        f"or '-'")
        if entry.name in seen:
            raise FunnelscopeInputError(f"{where}: duplicate model name {entry.name!r}")
        seen.add(entry.name)
        if entry.accuracy is not None:
            _check_accuracy(entry.accuracy, f"{where}: model {entry.name!r}")
        if entry.model in IN_MEMORY:
            continue
        is_file = Path(entry.model).exists()
        if not is_file and ":" not in entry.model:
            raise FunnelscopeInputError(f"{where}: model {entry.name!r}: {entry.model}: no such file (and not a "
                                        f"module:factory spec)")
        if not is_file and entry.weights is None:
            raise FunnelscopeInputError(f"{where}: model {entry.name!r}: {entry.model} needs weights")
        if is_file and (entry.weights is not None or entry.factory_args):
            raise FunnelscopeInputError(f"{where}: model {entry.name!r}: weights and factory arguments are only for "
                                        f"a module:factory model, not the file {entry.model}")
        if entry.weights is not None and not Path(entry.weights).exists():
            raise FunnelscopeInputError(f"{where}: model {entry.name!r}: weights {entry.weights}: no such file")
    return list(entries)


def _resolve_model(text: str, base: Path, where: str) -> str:
    if not text:
        raise FunnelscopeInputError(f"{where}: empty model")
    candidate = (base / Path(text).expanduser()).resolve()
    if candidate.exists():
        return str(candidate)
    if ":" in text and not text.endswith((".pt", ".pth", ".ts")):
        return text
    raise FunnelscopeInputError(f"{where}: model file {text} not found (looked in {base})")


def _resolve_file(text: str, base: Path, where: str, what: str) -> str:
    if not text:
        return ""
    candidate = (base / Path(text).expanduser()).resolve()
    if not candidate.exists():
        raise FunnelscopeInputError(f"{where}: {what} file {text} not found (looked in {base})")
    return str(candidate)


def _factory_args(text: str, where: str) -> dict[str, Any]:
    from funnelscope.options import parse_assignments

    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise FunnelscopeInputError(f"{where}: factory_args is not valid JSON ({error})") from None
        if not isinstance(value, dict):
            raise FunnelscopeInputError(f"{where}: factory_args must be a JSON object")
        return value
    try:
        return parse_assignments([part.strip() for part in text.split(";") if part.strip()], option="factory_args")
    except FunnelscopeInputError as error:
        raise FunnelscopeInputError(f"{where}: {error}") from None


def _check_accuracy(value: float, where: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise FunnelscopeInputError(f"{where}: accuracy {value:g} must be a fraction in [0, 1]")
    if value > 1:
        hint = " (a percentage? give fractions: 0.91, not 91)" if value <= 100 else ""
        raise FunnelscopeInputError(f"{where}: accuracy {value:g} must be a fraction in [0, 1]{hint}")
    return value


def _accuracy(text: str, where: str) -> float | None:
    if not text:
        return None
    if text.endswith("%"):
        raise FunnelscopeInputError(f"{where}: accuracy {text!r}: give fractions in [0, 1], not percentages")
    try:
        value = float(text)
    except ValueError:
        raise FunnelscopeInputError(f"{where}: accuracy {text!r} is not a number") from None
    return _check_accuracy(value, where)


def _step(text: str, where: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise FunnelscopeInputError(f"{where}: step {text!r} must be a non-negative integer")
    return int(text)


def step_from_name(name: str) -> int | None:
    """The training step in a checkpoint's file name: its last run of digits (``epoch_012.pt`` → 12,
    ``ckpt-step1200`` → 1200), or None.

    >>> step_from_name("run3/epoch_012.pt"), step_from_name("final.pt")
    (12, None)
    """
    found = re.findall(r"\d+", Path(name).stem)
    return int(found[-1]) if found else None


def series_entries(models: Any, *, weights: str | Path | None = None,
                   factory_args: Mapping[str, Any] | None = None) -> list[SeriesModel]:
    """The series' models from what :func:`analyze_series` accepts (see there), checked."""
    if isinstance(models, str | Path) and str(models).endswith(".csv"):
        return read_manifest(models)
    if isinstance(models, str | Path | nn.Module):
        models = [models]
    if isinstance(models, Mapping):
        items = list(models.items())
    elif isinstance(models, Sequence) and all(isinstance(item, SeriesModel) for item in models):
        return check_entries(list(models))
    elif isinstance(models, Sequence):
        items = [(None, item) for item in models]
    else:
        raise FunnelscopeInputError(f"models: expected a manifest path, model specs or a name → model mapping, "
                                    f"got {type(models).__name__}")
    if weights is not None and len(items) > 1:
        raise FunnelscopeInputError("weights go with a single module:factory model")
    entries, taken = [], set()
    for name, item in items:
        if isinstance(item, nn.Module):
            label = str(name) if name is not None else f"model_{len(entries) + 1}"
            spec = f"<in-memory {label}>"
            IN_MEMORY[spec] = item
        else:
            spec = str(Path(str(item)).expanduser().resolve()) if Path(str(item)).exists() else str(item)
            label = str(name) if name is not None else _label(str(item))
        if name is None:
            base, suffix = label, 2
            while label in taken:
                label, suffix = f"{base}_{suffix}", suffix + 1
        taken.add(label)
        entries.append(SeriesModel(label, spec, None if weights is None else str(weights), dict(factory_args or {})))
    return check_entries(entries)


def _label(spec: str) -> str:
    """A model's default name, as :func:`funnelscope.models.loading.load_models` labels it."""
    base = Path(spec).stem if Path(spec).exists() else spec.rpartition(":")[2]
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in base) or "model"
