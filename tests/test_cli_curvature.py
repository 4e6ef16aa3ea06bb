"""``funnelscope hessian``, ``landscape`` and ``linearity`` as a user meets them: tables and figures on success;
one line, exit code 2 and nothing written on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from funnelscope.studies.models import mlp
from tests.conftest import assert_png, assert_user_error, run_cli


@pytest.fixture
def scripted_models(tmp_path: Path) -> list[Path]:
    paths = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        path = tmp_path / f"m{seed}.pt"
        torch.jit.script(mlp(width=12).eval()).save(str(path))
        paths.append(path)
    return paths


def test_hessian_two_models_side_by_side(tmp_path: Path, scripted_models: list[Path]) -> None:
    out = tmp_path / "out"
    result = run_cli("hessian", str(scripted_models[0]), str(scripted_models[1]), "digits", "--n", "60",
                     "--top-k", "3", "--probes", "2", "--lanczos-steps", "8", "--density", "--out", str(out), "--plots",
                     "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert "lambda_max" in result.stdout and "gn_lambda_max" in result.stdout
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["model"]) == ["m0", "m1"] and (summary["method"] == "double-backward").all()
    eigenvalues = pd.read_csv(out / "m0" / "eigenvalues.csv")
    assert (eigenvalues["operator"] == "hessian").sum() == 3
    density = pd.read_csv(out / "m0" / "density.csv")
    assert np.trapezoid(density["density"], density["eigenvalue"]) == pytest.approx(1.0, abs=1e-6)
    for name in ("m0/hessian.png", "m1/hessian.png", "comparison.png"):
        assert_png(out / name)


def test_factory_model_linearity_and_landscape(tmp_path: Path, scripted_models: list[Path]) -> None:
    torch.manual_seed(0)
    model = mlp(width=12)
    save_file(dict(model.state_dict()), str(tmp_path / "w.safetensors"))
    out = tmp_path / "lin"
    result = run_cli("linearity", "funnelscope.studies.models:mlp", "digits", "--weights",
                     str(tmp_path / "w.safetensors"), "--factory-arg", "width=12", "--n", "300", "--out", str(out),
                     "--plots")
    assert result.returncode == 0, result.stderr
    frame = pd.read_parquet(out / "mlp" / "linearity.parquet")
    assert list(frame["layer"]) == ["2", "4"] and frame["r2"].between(0, 1).all()  # in-sample: n ≥ 2(64 + 1)
    assert_png(out / "mlp" / "linearity.png")

    out = tmp_path / "line"
    result = run_cli("landscape", str(scripted_models[0]), str(scripted_models[1]), "digits", "--also",
                     "digits:train", "--n", "50", "--points", "5", "--workers", "1", "--out", str(out), "--plots")
    assert result.returncode == 0, result.stderr
    line = pd.read_parquet(out / "m0+m1" / "landscape_line.parquet")
    assert set(line["dataset"]) == {"digits", "digits:train"} and len(line) == 2 * 5
    summary = json.loads((out / "m0+m1" / "summary.json").read_text())
    assert summary["kind"] == "interpolation" and summary["digits_barrier"] >= 0
    assert pd.read_parquet(out / "summary.parquet")["model"].tolist() == ["m0+m1"]
    assert_png(out / "m0+m1" / "landscape_line.png")

    out = tmp_path / "plane"
    result = run_cli("landscape", *map(str, scripted_models), "digits", "--n", "30", "--points", "3",
                     "--workers", "1", "--out", str(out), "--plots")
    assert result.returncode == 0, result.stderr
    plane = out / "m0+m1+m2"
    assert len(pd.read_parquet(plane / "landscape_plane.parquet")) == 9
    assert list(pd.read_parquet(plane / "markers.parquet")["label"]) == ["A", "B", "C"]
    assert_png(plane / "landscape_plane.png")


def test_bad_inputs(tmp_path: Path, scripted_models: list[Path]) -> None:
    model = str(scripted_models[0])
    out = tmp_path / "out"
    np.savez(tmp_path / "unlabelled.npz", x=np.zeros((10, 64), np.float32))
    cases = [
        (("hessian", str(tmp_path / "missing.pt"), "digits"), ("missing.pt", "no such file")),
        (("hessian", model, str(tmp_path / "unlabelled.npz")), ("unlabelled.npz", "no targets")),
        (("hessian", model, "digits", "--top-k", "0"), ("top_k=0",)),
        (("hessian", model, "digits", "--plots"), ("--plots needs --out",)),
        (("landscape", model, model, "digits", "--bn", "freeze"), ("bn='freeze'",)),
    ]
    for args, needles in cases:
        assert_user_error(run_cli(*args, "--out", str(out)) if "--plots" not in args else run_cli(*args), *needles)
        assert not out.exists(), args
    narrow = tmp_path / "narrow.pt"
    torch.jit.script(nn.Sequential(nn.Linear(10, 3), nn.ReLU())).save(str(narrow))
    assert_user_error(run_cli("linearity", str(narrow), "digits", "--out", str(out)), "rejected inputs of shape")
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))


def test_linearity_of_a_torchscript_file(tmp_path: Path, scripted_models: list[Path]) -> None:
    out = tmp_path / "out"
    result = run_cli("linearity", str(scripted_models[0]), "digits", "--n", "100", "--out", str(out), "--format", "csv")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out / "m0" / "linearity.csv", dtype={"layer": str})
    assert list(frame["layer"]) == ["2", "4"] and (frame["kind"] == "ReLU").all() and (frame["n"] == 100).all()
