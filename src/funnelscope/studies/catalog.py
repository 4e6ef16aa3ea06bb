"""The studies by name, and one Python function per study.

Each function runs (or resumes) its study in ``out`` and returns a
:class:`~funnelscope.studies.study.StudyResult`; the options are those of
:func:`~funnelscope.studies.study.run_study`. ``funnelscope study NAME --out DIR`` is the same on the command line.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from funnelscope.errors import FunnelscopeInputError
from funnelscope.studies.study import StudyDefinition, StudyResult, run_study

__all__ = ["STUDIES", "get_study", "study_ablation", "study_batch_size", "study_calibration", "study_depth_bn",
           "study_labels", "study_lb_sb", "study_series"]

#: Study name → ``module:DEFINITION``.
STUDIES = {
    "labels": "funnelscope.studies.labels:LABELS",
    "batch-size": "funnelscope.studies.batch_size:BATCH_SIZE",
    "lb-sb": "funnelscope.studies.lb_sb:LB_SB",
    "ablation": "funnelscope.studies.ablation:ABLATION",
    "depth-bn": "funnelscope.studies.depth_bn:DEPTH_BN",
    "calibration": "funnelscope.studies.calibration:CALIBRATION",
    "series": "funnelscope.studies.series:SERIES",
}


def get_study(name: str) -> StudyDefinition:
    """The definition of a study by name (``labels``, ``batch-size``, …)."""
    if name not in STUDIES:
        raise FunnelscopeInputError(f"unknown study {name!r} (choose from {', '.join(STUDIES)})")
    module, _, attribute = STUDIES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def _run(name: str, out: str | Path, options: dict[str, Any]) -> StudyResult:
    return run_study(get_study(name), out, **options)


def study_labels(out: str | Path, **options: Any) -> StudyResult:
    """True vs partially and fully shuffled labels (see :mod:`funnelscope.studies.labels`)."""
    return _run("labels", out, options)


def study_batch_size(out: str | Path, **options: Any) -> StudyResult:
    """A sweep of batch sizes (see :mod:`funnelscope.studies.batch_size`)."""
    return _run("batch-size", out, options)


def study_lb_sb(out: str | Path, **options: Any) -> StudyResult:
    """A large-batch solution continued with small batches (see :mod:`funnelscope.studies.lb_sb`)."""
    return _run("lb-sb", out, options)


def study_ablation(out: str | Path, **options: Any) -> StudyResult:
    """Momentum, weight decay and preprocessing removed (see :mod:`funnelscope.studies.ablation`)."""
    return _run("ablation", out, options)


def study_depth_bn(out: str | Path, **options: Any) -> StudyResult:
    """Deeper nets with and without BatchNorm (see :mod:`funnelscope.studies.depth_bn`)."""
    return _run("depth-bn", out, options)


def study_calibration(out: str | Path, **options: Any) -> StudyResult:
    """The power-law estimator and random-matrix ESDs (see :mod:`funnelscope.studies.calibration`)."""
    return _run("calibration", out, options)


def study_series(out: str | Path, **options: Any) -> StudyResult:
    """Rank correlations of the metrics with accuracy and gap (see :mod:`funnelscope.studies.series`)."""
    return _run("series", out, options)
