"""The command line as a user meets it: outputs on success; one line, exit 2, nothing written on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import run_cli, small_mlp


def assert_user_error(result, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    message = result.stderr.strip()
    assert message.startswith("error:"), message
    for needle in needles:
        assert needle in message, (needle, message)


def test_weights_writes_table_summary_and_plots(tmp_path: Path, safetensors_file: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("weights", str(safetensors_file), "--out", str(out), "--plots", "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert "summary" in result.stdout and "alpha=" in result.stdout
    table = pd.read_csv(out / "weights.csv", dtype={"name": str})
    assert list(table["name"]) == ["0", "2", "4"]
    assert (table["status"] == "success").all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layers_used"] == 3
    assert summary["alpha"] == pytest.approx(table["alpha"].mean())
    assert len(list((out / "plots").glob("*.png"))) == 3
    assert (out / "overview.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".out.*")), "staging directory left behind"


def test_missing_path(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("weights", str(tmp_path / "missing.safetensors"), "--out", str(out))
    assert_user_error(result, "missing.safetensors", "no such file")
    assert not out.exists()


def test_truncated_safetensors(tmp_path: Path, safetensors_file: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(safetensors_file.read_bytes()[:-64])
    out = tmp_path / "out"
    assert_user_error(run_cli("weights", str(broken), "--out", str(out), "--plots"), "broken.safetensors", "truncated")
    assert not out.exists()


def test_corrupted_safetensors_header(tmp_path: Path) -> None:
    broken = tmp_path / "corrupt.safetensors"
    broken.write_bytes((200).to_bytes(8, "little") + b"{\"a\": [1, 2" + bytes(300))
    assert_user_error(run_cli("weights", str(broken)), "corrupt.safetensors", "not a readable safetensors")


def test_pickle_without_trust_flag(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(small_mlp(), path)
    out = tmp_path / "out"
    assert_user_error(run_cli("weights", str(path), "--out", str(out)), "model.pt", "--trust-pickle")
    assert not out.exists()
    trusted = run_cli("weights", str(path), "--trust-pickle")
    assert trusted.returncode == 0, trusted.stderr


def test_no_analysable_layers(tmp_path: Path) -> None:
    path = tmp_path / "norms.safetensors"
    save_file({"norm.weight": torch.ones(16), "norm.bias": torch.zeros(16)}, str(path))
    assert_user_error(run_cli("weights", str(path)), "norms.safetensors", "no layer matrices")


def test_non_finite_weights(tmp_path: Path) -> None:
    path = tmp_path / "nan.safetensors"
    weight = torch.randn(32, 16)
    weight[3, 4] = float("nan")
    save_file({"fc.weight": weight}, str(path))
    out = tmp_path / "out"
    assert_user_error(run_cli("weights", str(path), "--out", str(out)), "nan.safetensors", "non-finite weights (1 NaN")
    assert not out.exists()


def test_one_bad_layer_in_a_good_model(tmp_path: Path) -> None:
    state = dict(small_mlp().state_dict())
    state["2.weight"] = state["2.weight"].clone()
    state["2.weight"][0, 0] = float("inf")
    path = tmp_path / "partly.safetensors"
    save_file(state, str(path))
    out = tmp_path / "out"
    result = run_cli("weights", str(path), "--out", str(out), "--format", "json")
    assert result.returncode == 0, result.stderr
    table = pd.read_json(out / "weights.json")
    assert dict(zip(table["name"].astype(str), table["status"], strict=True)) == {
        "0": "success", "2": "failed", "4": "success"}
    assert "1 inf" in table.loc[table["status"] == "failed", "reason"].iloc[0]
    assert_user_error(run_cli("weights", str(path), "--strict"), "1 layer(s) failed")


def test_plots_need_an_output_directory(safetensors_file: Path) -> None:
    assert_user_error(run_cli("weights", str(safetensors_file), "--plots"), "--plots needs --out")
