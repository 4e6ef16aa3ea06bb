"""Settings and helpers shared by the training studies.

Every training study starts from :func:`base_settings` at its size and derives its run specs with
:func:`training_spec`, which fills the remaining knobs from
:data:`~funnelscope.studies.experiment.TRAINING_DEFAULTS`. Sizes (MLP on digits, 1347 training examples):

=======  =====  ======  ===========  ==========  =========
size     width  epochs  train_size   jacobian_n  hessian_n
=======  =====  ======  ===========  ==========  =========
tiny     32     3       300          60          128
quick    64     12      all          200         256
demo     128    40      all          300         512
full     128    60      all          450         1024
=======  =====  ======  ===========  ==========  =========
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from funnelscope.studies.experiment import TRAINING_DEFAULTS

__all__ = ["SENTINELS", "base_settings", "fmt", "load_run_frame", "setting_notes", "training_spec"]

_SIZES = {
    "tiny": {"width": 32, "epochs": 3, "train_size": 300, "jacobian_n": 60, "hessian_n": 128, "hessian_top_k": 3},
    "quick": {"width": 64, "epochs": 12, "train_size": 0, "jacobian_n": 200, "hessian_n": 256, "hessian_top_k": 5},
    "demo": {"width": 128, "epochs": 40, "train_size": 0, "jacobian_n": 300, "hessian_n": 512, "hessian_top_k": 5},
    "full": {"width": 128, "epochs": 60, "train_size": 0, "jacobian_n": 450, "hessian_n": 1024, "hessian_top_k": 10},
}
#: Knobs of the base run every study varies from.
_BASE = ("data", "arch", "depth", "batch_norm", "batch_size", "lr", "schedule", "momentum", "weight_decay",
         "normalize", "augment", "label_noise", "checkpoints")


#: Knob values that stand for something else (0 or "" meaning "all" or "off"), as the report explains them.
SENTINELS: dict[str, tuple[Any, str]] = {
    "train_size": (0, "all: the whole training split"),
    "augment": ("", "none"),
    "continue_batch_size": (0, "no second training phase"),
    "continue_epochs": (0, "no second training phase"),
    "continue_lr": (0.0, "the first phase's lr"),
    "jacobian_n": (0, "no Jacobian"),
    "jacobian_train_n": (0, "no Jacobian on the training split"),
    "hessian_top_k": (0, "no Hessian"),
}


def setting_notes(settings: dict[str, Any]) -> dict[str, str]:
    """What each setting holding a sentinel value (:data:`SENTINELS`) means, for the report.

    >>> setting_notes({"train_size": 0, "augment": "", "width": 64, "hessian_top_k": 5})
    {'train_size': 'all: the whole training split', 'augment': 'none'}
    """
    return {key: note for key, (value, note) in SENTINELS.items()
            if key in settings and type(settings[key]) is type(value) and settings[key] == value}


def base_settings(size: str, **changes: Any) -> dict[str, Any]:
    """The training knobs at a size, with ``changes`` applied (a study's own defaults)."""
    settings = {key: TRAINING_DEFAULTS[key] for key in _BASE}
    settings.update(_SIZES[size])
    settings.update(changes)
    return settings


def training_spec(settings: dict[str, Any], run_id: str, **changes: Any) -> dict[str, Any]:
    """A run spec: the defaults, then the study's settings that are run knobs, then ``changes``."""
    spec = dict(TRAINING_DEFAULTS)
    spec.update({key: value for key, value in settings.items() if key in TRAINING_DEFAULTS})
    spec.update(changes)
    spec["run_id"] = run_id
    return spec


def load_run_frame(directory: Path, run_id: str, name: str) -> pd.DataFrame | None:
    """``runs/<run_id>/<name>.parquet`` of a finished run, or None when the run did not write it."""
    path = directory / "runs" / run_id / f"{name}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a headline: ``digits`` significant figures, ``n/a`` for missing values."""
    if value is None or (isinstance(value, float | np.floating) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def layer_table(directory: Path, runs: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """The per-layer weights tables of all runs, with the runs' ``columns`` (knobs) attached."""
    frames = []
    for row in runs.to_dict("records"):
        weights = load_run_frame(directory, row["run_id"], "weights")
        if weights is not None:
            frames.append(weights[weights["status"] == "success"].assign(
                run_id=row["run_id"], **{column: row[column] for column in columns}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def recompute_jacobians(directory: Path, runs: pd.DataFrame, labels: list[str]) -> dict[str, Any]:
    """The Jacobian spectra of finished runs (rebuilt from ``model.pt`` on the run's own test subset), by label."""
    from funnelscope.probes.jacobian import jacobian_spectrum
    from funnelscope.studies.data import subsample
    from funnelscope.studies.experiment import load_run_model, run_data, spec_from_row

    spectra = {}
    for label, row in zip(labels, runs.to_dict("records"), strict=True):
        run_dir = directory / "runs" / row["run_id"]
        if not (run_dir / "model.pt").exists() or row.get("jacobian_n", 0) <= 0:
            continue
        _, test = run_data(spec_from_row(row))
        data = subsample(test, int(row["jacobian_n"]), seed=int(row["seed"]))
        spectra[label] = jacobian_spectrum(load_run_model(run_dir), data, seed=int(row["seed"]),
                                           device="cpu")
    return spectra


def run_frames(directory: Path, runs: pd.DataFrame, labels: list[str], name: str) -> dict[str, pd.DataFrame]:
    """``runs/<run_id>/<name>.parquet`` of each run that wrote it, by label."""
    found = {}
    for label, row in zip(labels, runs.to_dict("records"), strict=True):
        frame = load_run_frame(directory, row["run_id"], name)
        if frame is not None:
            found[label] = frame
    return found


def hessian_groups(directory: Path, runs: pd.DataFrame, labels: list[str]) -> dict[str, np.ndarray]:
    """The Hessian top eigenvalues of the runs that measured them, by label."""
    return {label: frame["eigenvalue"].to_numpy()
            for label, frame in run_frames(directory, runs, labels, "hessian").items()}


def histories(directory: Path, runs: pd.DataFrame, labels: list[str]) -> dict[str, pd.DataFrame]:
    """The per-epoch histories of the runs, by label."""
    return run_frames(directory, runs, labels, "history")
