"""The top-level package: its public names resolve, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import funnelscope


def test_every_public_name_resolves() -> None:
    missing = [name for name in funnelscope.__all__ if not hasattr(funnelscope, name)]
    assert missing == []
    expected = {"run_study", "get_study", "write_report", "jacobian_spectrum", "analyze_weights"}
    assert expected <= set(funnelscope.__all__)


def test_study_lookup_through_the_top_level() -> None:
    assert set(funnelscope.STUDIES) >= {"labels", "batch-size", "lb-sb", "ablation", "depth-bn"}
    assert funnelscope.get_study("labels") is funnelscope.get_study("labels")


def test_importing_the_package_imports_no_matplotlib() -> None:
    code = "import sys, funnelscope; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
