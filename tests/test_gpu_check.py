"""``scripts/gpu_check.py`` runs every probe on a device and compares with the CPU: checked here CPU against
CPU (the numbers must then agree), so that the script is ready for a machine with a GPU."""

from __future__ import annotations

import pytest

from tests.conftest import load_script


@pytest.mark.usefixtures("one_thread")
def test_cpu_against_cpu_agrees_and_a_difference_is_flagged() -> None:
    script = load_script("gpu_check")
    first, second = script.run_probes("cpu"), script.run_probes("cpu")
    rows = script.compare(first, second)
    assert {row["probe"] for row in rows} >= {"jacobian/exact", "hessian", "landscape_line", "linearity", "weights"}
    assert all(row["ok"] for row in rows), [row for row in rows if not row["ok"]]
    second["hessian"]["lambda_max"] *= 1 + 1e-6
    flagged = [row for row in script.compare(first, second) if not row["ok"]]
    assert [(row["probe"], row["quantity"]) for row in flagged] == [("hessian", "lambda_max")]
