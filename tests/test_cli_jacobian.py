"""``funnelscope jacobian`` as a user meets it: side-by-side reports, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from torch import nn

from funnelscope.studies.models import mlp
from tests.conftest import assert_png, assert_user_error, run_cli


class ArgmaxHead(nn.Module):
    """A classifier that returns class indices: no floating-point output to differentiate."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).argmax(dim=1)


def scripted(model: nn.Module, path: Path) -> Path:
    torch.jit.script(model.eval()).save(str(path))
    return path


def test_two_models_side_by_side(tmp_path: Path) -> None:
    torch.manual_seed(0)
    first = scripted(mlp(width=16), tmp_path / "first.pt")
    second = mlp(width=16)
    save_file(dict(second.state_dict()), str(tmp_path / "second.safetensors"))
    out = tmp_path / "out"
    result = run_cli("jacobian", str(first), str(tmp_path / "first.pt"), "digits", "--n", "60", "--out", str(out),
                     "--plots", "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert "lambda_max" in result.stdout and "offdiag_ratio" in result.stdout
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["model"]) == ["first", "first_2"]
    assert summary["lambda_max"].iloc[0] == summary["lambda_max"].iloc[1]  # the same model twice
    assert json.loads((out / "first" / "summary.json").read_text())["lambda_max"] == summary["lambda_max"].iloc[0]
    assert_png(out / "first" / "jacobian.png")
    assert_png(out / "comparison.png")
    assert len(pd.read_csv(out / "first" / "examples.csv")) == 60
    assert len(pd.read_csv(out / "first" / "per_class.csv")) == 10
    factory = run_cli("jacobian", "funnelscope.studies.models:mlp", "digits", "--weights",
                      str(tmp_path / "second.safetensors"), "--factory-arg", "width=16", "--n", "30")
    assert factory.returncode == 0, factory.stderr


def test_bad_inputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    narrow = scripted(nn.Linear(10, 3), tmp_path / "narrow.pt")
    assert_user_error(run_cli("jacobian", str(narrow), "digits"), "rejected inputs of shape")
    model = scripted(mlp(width=8), tmp_path / "mlp.pt")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 64), np.float32))
    assert_user_error(run_cli("jacobian", str(model), str(tmp_path / "empty.npz")), "empty")
    x = np.random.default_rng(0).random((20, 64)).astype(np.float32)
    x[3, 5] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    assert_user_error(run_cli("jacobian", str(model), str(tmp_path / "nan.npz")), "NaN or inf")
    argmax = scripted(ArgmaxHead(), tmp_path / "argmax.pt")
    assert_user_error(run_cli("jacobian", str(argmax), "digits"), "floating")
    single = scripted(nn.Linear(64, 1), tmp_path / "single.pt")
    assert_user_error(run_cli("jacobian", str(single), "digits"), "single output")
    assert_user_error(run_cli("jacobian", str(model), "digits:rgb"), "unknown data set")
    assert_user_error(run_cli("jacobian", str(model), "digits", "--method", "magic"), "magic")
    torch.save(mlp(width=8), tmp_path / "pickled.pt")
    assert_user_error(run_cli("jacobian", str(tmp_path / "pickled.pt"), "digits"), "--trust-pickle")
