"""The frame every study shares: settings by size, the study directory, resumable runs, figures and tables.

A study is a :class:`StudyDefinition`: its settings at each size (``tiny`` for tests, ``quick`` for
``--quick``, ``demo``, ``full``), the run specs it derives from them, and a ``summarize`` step that reads the
finished runs and writes figures and tables. :func:`run_study` creates the study directory (the layout the
HTML report reads)::

    study.json               name, title, description, settings, versions, started/finished, headline,
                             cautions (what a reader must know before trusting the headline)
    runs.parquet             one row per finished run (knobs, accuracies, gap, scalar spectral metrics)
    runs/<run_id>/           the run's own files (history.parquet, weights.parquet, jacobian.parquet, …)
    figures/*.png            figures/manifest.json: [{file, title, caption, section}, …]
    tables/*.csv             tables/manifest.json: the same fields

and writes the HTML report at the end when :mod:`funnelscope.report.html` is available. Running a study
again in the same directory with the same settings resumes it; other settings are refused.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from funnelscope.errors import FunnelscopeInputError
from funnelscope.output import write_json
from funnelscope.report.html import write_report
from funnelscope.studies.common import setting_notes
from funnelscope.studies.runner import check_ray_address, run_all

__all__ = ["SIZES", "StudyDefinition", "StudyOutputs", "StudyResult", "run_study"]

SIZES = ("tiny", "quick", "demo", "full")


@dataclass
class StudyOutputs:
    """Collects a study's figures and tables with their manifests, its headline numbers and its cautions."""

    directory: Path
    figures: list[dict[str, str]] = field(default_factory=list)
    tables: list[dict[str, str]] = field(default_factory=list)
    headline: list[dict[str, str]] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)

    def figure(self, figure: Any, name: str, *, title: str, caption: str, section: str) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` and list it in the manifest."""
        from funnelscope.report.plots import save_figure

        path = save_figure(figure, self.directory / "figures" / f"{name}.png")
        self.figures.append({"file": f"figures/{name}.png", "title": title, "caption": caption, "section": section})
        return path

    def table(self, frame: pd.DataFrame, name: str, *, title: str, caption: str, section: str) -> Path:
        """Save a DataFrame as ``tables/<name>.csv`` and list it in the manifest."""
        path = self.directory / "tables" / f"{name}.csv"
        frame.to_csv(path, index=False, float_format="%.6g")
        self.tables.append({"file": f"tables/{name}.csv", "title": title, "caption": caption, "section": section})
        return path

    def headline_number(self, label: str, value: str) -> None:
        """One of the study's headline numbers (three per study)."""
        self.headline.append({"label": label, "value": value})

    def caution(self, text: str) -> None:
        """A warning the report shows in a box above the results (e.g. runs that did not fit their labels)."""
        self.cautions.append(text)

    def write_manifests(self) -> None:
        for kind, entries in (("figures", self.figures), ("tables", self.tables)):
            (self.directory / kind / "manifest.json").write_text(json.dumps(entries, indent=1, ensure_ascii=False))


@dataclass(frozen=True)
class StudyDefinition:
    """What a study is: its text, its settings at each size, its runs and how to summarise them.

    ``settings(size)`` returns the defaults at that size; ``runs(settings)`` the run specs (dicts with a
    unique ``run_id``); ``summarize(runs, settings, outputs)`` draws the figures, writes the tables and sets
    the headline, reading run files from ``outputs.directory / "runs"``.
    """

    name: str
    title: str
    description: str
    settings: Callable[[str], dict[str, Any]]
    runs: Callable[[dict[str, Any]], list[dict[str, Any]]]
    summarize: Callable[[pd.DataFrame, dict[str, Any], StudyOutputs], None]


@dataclass(frozen=True)
class StudyResult:
    """A finished study: its directory, the runs table, the headline numbers, the report (if written) and the
    cautions the study raised about its own results."""

    directory: Path
    runs: pd.DataFrame = field(repr=False)
    headline: list[dict[str, str]]
    report: Path | None = None
    cautions: tuple[str, ...] = ()


def run_study(
    definition: StudyDefinition,
    out: str | Path,
    *,
    size: str = "full",
    workers: int = 1,
    ray: str | None = None,
    seed: int = 0,
    data: tuple[Any, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    report: bool = True,
) -> StudyResult:
    """Run (or resume) a study in ``out`` and summarise it.

    Parameters
    ----------
    definition : StudyDefinition
    out : path
        The study directory (created; an existing one with the same study and settings is resumed).
    size : {"tiny", "quick", "demo", "full"}
        Preset sizes: ``quick`` finishes in a minute or two on two cores, ``tiny`` is for tests.
    workers : int
        Runs in parallel in a local process pool (1: in this process).
    ray : str, optional
        A Ray address (``"local"`` starts a local instance) to run on instead of the pool.
    seed : int
        Base seed: the run seeds, the data split and the probes derive from it.
    data : (x, y), optional
        Arrays to train on instead of digits (saved as ``data.npz`` in the study directory).
    overrides : dict, optional
        Settings to change from the size's defaults (unknown names are refused).
    progress : bool
        Progress bar on stderr.
    on_result : callable, optional
        Called with each finished run's row (see :func:`~funnelscope.studies.runner.run_all`).
    report : bool
        Write the HTML report at the end (when the report module is available).

    Raises
    ------
    FunnelscopeInputError
        An unknown size or setting, ``out`` holding another study or other settings.
    """
    if size not in SIZES:
        raise FunnelscopeInputError(f"size must be one of {', '.join(SIZES)}; got {size!r}")
    settings = {**definition.settings(size), "seed": seed}
    unknown = sorted(set(overrides or {}) - set(settings))
    if unknown:
        raise FunnelscopeInputError(f"study {definition.name}: unknown settings {unknown} (known: {sorted(settings)})")
    for key, value in (overrides or {}).items():
        check_setting(key, value, settings[key])
    settings.update(overrides or {})
    check_ray_address(ray)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FunnelscopeInputError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("runs", "figures", "tables"):
        (out / sub).mkdir(exist_ok=True)
    if data is not None:
        if "data" not in settings:
            raise FunnelscopeInputError(f"study {definition.name} does not train on data")
        settings["data"] = _save_data(out, data)
    meta_path = out / "study.json"
    settings = json.loads(json.dumps(settings))  # the settings as they are stored (tuples become lists)
    if meta_path.exists():
        previous = json.loads(meta_path.read_text())
        if previous.get("study") != definition.name or previous.get("settings") != settings:
            raise FunnelscopeInputError(
                f"{out}: holds study {previous.get('study')!r} with other settings; choose another --out to start anew"
            )
        meta = previous
    else:
        meta = {
            "study": definition.name, "title": definition.title, "description": definition.description,
            "settings": settings, "size": size, "versions": _versions(), "started": _now(), "finished": None,
            "headline": [],
        }
    meta.update(finished=None, setting_notes=setting_notes(settings))
    write_json(meta_path, meta)
    specs = definition.runs(settings)
    runs = run_all(specs, out, workers=workers, ray_address=ray, on_result=on_result, progress=progress)
    outputs = StudyOutputs(out)
    definition.summarize(runs, settings, outputs)
    outputs.write_manifests()
    meta.update(finished=_now(), headline=outputs.headline, cautions=outputs.cautions)
    write_json(meta_path, meta)
    report_path = write_report(out) if report else None
    return StudyResult(out, runs, outputs.headline, report_path, tuple(outputs.cautions))


def check_setting(key: str, value: Any, default: Any) -> None:
    """A changed setting must have its default's type (an int for an int, a number for a float, a bool for a
    bool, a list for a list, a string for a string) and range (≥ 0, and ≥ 1 or > 0 where the default is
    positive); the names of architectures, schedules, augmentations and data are checked against the known
    ones."""
    from funnelscope.studies.data import Augmentation
    from funnelscope.studies.models import ARCHITECTURES
    from funnelscope.studies.training import SCHEDULES

    where = f"--set {key}={json.dumps(value)}"
    if isinstance(default, list | tuple):
        if not isinstance(value, list) or not value:
            raise FunnelscopeInputError(f"{where}: must be a non-empty list like {json.dumps(list(default))}")
        for item in value if default else ():
            check_setting(key, item, default[0])
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise FunnelscopeInputError(f"{where}: must be true or false")
    elif isinstance(default, int | float):
        kind = "an integer" if isinstance(default, int) else "a number"
        if isinstance(value, bool) or not isinstance(value, int if isinstance(default, int) else int | float):
            raise FunnelscopeInputError(f"{where}: must be {kind}")
        if not math.isfinite(value) or value < 0 or (default > 0 and value <= 0):
            raise FunnelscopeInputError(f"{where}: must be {kind} {'> 0' if default > 0 else '≥ 0'}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise FunnelscopeInputError(f"{where}: must be a string")
        known = {"arch": tuple(ARCHITECTURES), "schedule": SCHEDULES}.get(key)
        if known is not None and value not in known:
            raise FunnelscopeInputError(f"{where}: must be one of {', '.join(known)}")
        if key == "augment":
            Augmentation.from_name(value)
        if key == "data" and value != "digits" and not (value.endswith(".npz") and Path(value).is_file()):
            raise FunnelscopeInputError(f"{where}: must be digits or an existing .npz file with x and y")


def _save_data(out: Path, data: tuple[Any, Any]) -> str:
    from funnelscope.studies.data import prepare_data

    x, y = (np.asarray(a.detach().cpu() if hasattr(a, "detach") else a) for a in data)
    prepare_data(x=x, y=y)  # validates
    path = out / "data.npz"
    if not path.exists():
        np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))
    return str(path.resolve())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import importlib.metadata

    import torch

    versions = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
                "numpy": np.__version__, "pandas": pd.__version__}
    for package in ("funnelscope", "scikit-learn", "scipy", "matplotlib"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions
