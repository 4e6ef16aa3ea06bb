"""The study harness: determinism, resume after an interruption, the Ray backend, exact label noise."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from funnelscope.errors import FunnelscopeInputError
from funnelscope.studies.catalog import get_study
from funnelscope.studies.experiment import TRAINING_DEFAULTS, run_data
from funnelscope.studies.runner import completed_runs
from funnelscope.studies.study import run_study
from funnelscope.studies.training import shuffle_labels

# the smallest labels study that still trains, measures the Jacobian and the Hessian
TINY_LABELS = {"label_noises": [0.0, 1.0], "epochs": 2, "train_size": 200, "width": 16, "jacobian_n": 40,
               "hessian_n": 64, "hessian_top_k": 2}
TINY_CALIBRATION = {"alphas": [2.0, 3.0], "sizes": [100], "repetitions": 2, "matrix_shape": [80, 40], "mus": [1.5]}


def _metrics(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.drop(columns=["seconds"]).sort_values("run_id").reset_index(drop=True)


def test_same_seed_gives_the_same_metrics_in_process_and_in_a_pool(tmp_path: Path) -> None:
    labels = get_study("labels")
    serial = run_study(labels, tmp_path / "a", size="tiny", overrides=TINY_LABELS, report=False)
    pooled = run_study(labels, tmp_path / "b", size="tiny", workers=2, overrides=TINY_LABELS, report=False)
    assert len(serial.runs) == 2
    pd.testing.assert_frame_equal(_metrics(serial.runs), _metrics(pooled.runs))  # bit-identical, every metric
    for column in ("alpha_mean", "jac_lambda_max", "test_accuracy", "hessian_top1"):
        assert serial.runs[column].notna().all(), column
    other = run_study(labels, tmp_path / "c", size="tiny", seed=1, overrides=TINY_LABELS, report=False)
    assert not _metrics(other.runs)["alpha_mean"].equals(_metrics(serial.runs)["alpha_mean"])


def test_labels_study_measures_the_jacobian_on_the_training_split_on_request(tmp_path: Path) -> None:
    labels = get_study("labels")
    on = run_study(labels, tmp_path / "on", size="tiny", overrides={**TINY_LABELS, "label_noises": [0.0],
                                                                       "jacobian_train_n": 50}, report=True)
    for column in ("jac_train_alpha", "jac_train_lambda_max", "jac_train_trace", "jac_train_effective_rank"):
        assert on.runs[column].notna().all(), column
    assert not np.isclose(on.runs["jac_train_trace"], on.runs["jac_trace"]).any()  # other inputs, other M
    run_dir = tmp_path / "on" / "runs" / on.runs["run_id"].iloc[0]
    assert len(pd.read_parquet(run_dir / "jacobian_train.parquet")) == 50
    assert "Jacobian Gram on training inputs" in (tmp_path / "on" / "report.html").read_text()
    off = run_study(labels, tmp_path / "off", size="tiny", overrides={**TINY_LABELS, "label_noises": [0.0]},
                    report=False)  # the default: jacobian_train_n = 0
    assert "jac_train_alpha" not in off.runs


class Interrupted(Exception):
    pass


def test_an_interrupted_study_resumes_and_runs_everything_exactly_once(tmp_path: Path) -> None:
    calibration = get_study("calibration")
    finished: list[str] = []

    def stop_after_two(row: dict) -> None:
        finished.append(row["run_id"])
        if len(finished) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_study(calibration, tmp_path, size="tiny", overrides=TINY_CALIBRATION, on_result=stop_after_two)
    partial = completed_runs(tmp_path)
    assert list(partial["run_id"]) == finished
    assert json.loads((tmp_path / "study.json").read_text())["finished"] is None
    resumed: list[str] = []
    result = run_study(calibration, tmp_path, size="tiny", overrides=TINY_CALIBRATION,
                       on_result=lambda row: resumed.append(row["run_id"]), report=False)
    expected = [spec["run_id"] for spec in calibration.runs({**calibration.settings("tiny"), **TINY_CALIBRATION,
                                                             "seed": 0})]
    assert sorted(result.runs["run_id"]) == sorted(expected)  # every run exactly once
    assert set(resumed) == set(expected) - set(finished)  # only the missing ones ran again
    saved = completed_runs(tmp_path).set_index("run_id")
    for run_id in finished:  # the rows from before the interruption are kept as they were
        assert saved.loc[run_id, "seconds"] == partial.set_index("run_id").loc[run_id, "seconds"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(expected)  # no partial directories
    meta = json.loads((tmp_path / "study.json").read_text())
    assert meta["finished"] is not None and len(meta["headline"]) == 3
    with pytest.raises(FunnelscopeInputError, match="other settings"):
        run_study(calibration, tmp_path, size="tiny", overrides={**TINY_CALIBRATION, "repetitions": 3})


def test_a_study_runs_on_a_local_ray_instance(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    calibration = get_study("calibration")
    on_ray = run_study(calibration, tmp_path / "ray", size="tiny", ray="local", overrides=TINY_CALIBRATION,
                       report=False)
    local = run_study(calibration, tmp_path / "local", size="tiny", overrides=TINY_CALIBRATION, report=False)
    assert len(on_ray.runs) == len(local.runs) == 4
    pd.testing.assert_frame_equal(_metrics(on_ray.runs), _metrics(local.runs))


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1.0])
def test_a_runs_label_noise_is_applied_exactly(fraction: float) -> None:
    spec = {**TRAINING_DEFAULTS, "run_id": "x", "seed": 4}
    clean, _ = run_data(spec)
    noisy, _ = run_data({**spec, "label_noise": fraction})
    assert torch.equal(noisy.x, clean.x)
    # exactly round(f·n) labels are shuffled among themselves: the trainer's labels are shuffle_labels' output
    assert torch.equal(noisy.y, shuffle_labels(clean.y, fraction, seed=spec["seed"] + 1))
    generator = torch.Generator().manual_seed(spec["seed"] + 1)
    chosen = torch.randperm(len(clean), generator=generator)[: round(fraction * len(clean))]
    untouched = torch.ones(len(clean), dtype=torch.bool)
    untouched[chosen] = False
    assert torch.equal(noisy.y[untouched], clean.y[untouched])
    assert torch.equal(torch.bincount(noisy.y), torch.bincount(clean.y))
    if fraction == 1.0:  # random labels: about 90 % of the digits change class
        assert 0.8 < float((noisy.y != clean.y).float().mean()) < 1.0


def test_user_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    from funnelscope.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["study", "nonsense", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown study" in result.output
    result = runner.invoke(app, ["study", "labels", "--out", str(tmp_path / "x"), "--set", "wings=3"])
    assert result.exit_code == 2 and "unknown settings" in result.output
    with pytest.raises(FunnelscopeInputError, match="size"):
        run_study(get_study("labels"), tmp_path / "y", size="huge")


def test_cli_study_writes_the_contracted_directory(tmp_path: Path) -> None:
    from funnelscope.cli import app

    settings = [arg for key, value in TINY_CALIBRATION.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    result = CliRunner().invoke(app, ["study", "calibration", "--out", str(tmp_path), "--quick", *settings])
    assert result.exit_code == 0, result.output
    assert "median |α̂ − α|" in result.output
    meta = json.loads((tmp_path / "study.json").read_text())
    assert {"study", "title", "description", "settings", "versions", "started", "finished", "headline"} <= set(meta)
    assert meta["study"] == "calibration" and len(meta["headline"]) == 3
    for kind in ("figures", "tables"):
        entries = json.loads((tmp_path / kind / "manifest.json").read_text())
        assert entries and all({"file", "title", "caption", "section"} <= set(e) for e in entries)
        assert all((tmp_path / e["file"]).exists() for e in entries)
    assert len(pd.read_parquet(tmp_path / "runs.parquet")) == 4


def test_an_unroutable_ray_address_is_refused_within_the_timeout() -> None:
    pytest.importorskip("ray")
    from funnelscope.studies.runner import check_ray_address

    start = time.perf_counter()
    with pytest.raises(FunnelscopeInputError, match=r"--ray ray://192\.0\.2\.1:10001: no Ray cluster reachable"):
        check_ray_address("ray://192.0.2.1:10001", timeout=0.5)  # TEST-NET-1 (RFC 5737): never answers
    assert time.perf_counter() - start < 5
    check_ray_address(None)
    check_ray_address("local")
