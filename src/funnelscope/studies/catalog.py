"""The studies by name: ``run_study(get_study("labels"), out)`` runs (or resumes) one; ``funnelscope study
NAME --out DIR`` is the same on the command line."""

from __future__ import annotations

import importlib

from funnelscope.errors import FunnelscopeInputError
from funnelscope.studies.study import StudyDefinition

__all__ = ["STUDIES", "get_study"]

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
