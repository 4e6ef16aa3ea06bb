"""The command line as a user meets it: outputs on success; one line, exit 2, nothing written on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import assert_png, assert_user_error, run_cli, small_mlp


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
    assert_png(out / "overview.png")
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


def test_help_states_the_defaults_the_api_uses() -> None:
    """Every option named like a parameter of the command's API function has that function's default, and the
    help text states it (``[default: …]``)."""
    import inspect

    import click
    import typer

    from funnelscope.cli import common
    from funnelscope.cli import probes as cli
    from funnelscope.probes.weights import analyze_weights

    apis = {"weights": [analyze_weights], "jacobian": [cli.jacobian_spectrum], "hessian": [cli.hessian_spectrum],
            "landscape": [cli.landscape_line, cli.landscape_plane], "linearity": [cli.layer_linearity]}
    group = typer.main.get_command(common.app)
    checked = 0
    for name, functions in apis.items():
        command = group.commands[name]
        context = click.Context(command, info_name=name)
        for parameter in command.params:
            defaults = {inspect.signature(f).parameters[parameter.name].default for f in functions
                        if parameter.name in inspect.signature(f).parameters}
            if parameter.name == "t_range":
                defaults = {cli.landscape_line.__kwdefaults__["t"]}
            if not defaults:
                continue
            assert len(defaults) == 1 or parameter.name == "points", (name, parameter.name)
            default = defaults.pop()
            cli_default = tuple(parameter.default) if isinstance(parameter.default, list) else parameter.default
            help_text = parameter.get_help_record(context)[1]
            if parameter.name == "points":  # one CLI option for two API defaults: both stated
                assert cli_default is None and all(str(f.__kwdefaults__["points"]) in help_text for f in functions)
            else:
                assert cli_default == default, (name, parameter.name, cli_default, default)
                plain_flag = getattr(parameter, "is_flag", False) and not parameter.secondary_opts  # off unless given
                assert plain_flag or "[default:" in help_text, (name, parameter.name, help_text)
            checked += 1
    assert checked >= 25


def test_format_help_of_the_probes_with_several_tables() -> None:
    """jacobian, hessian and landscape write several tables (not a per-layer one): --format says "tables"."""
    import click
    import typer

    from funnelscope.cli import common

    group = typer.main.get_command(common.app)
    for name in ("jacobian", "hessian", "landscape", "linearity", "weights"):
        command = group.commands[name]
        option = next(parameter for parameter in command.params if parameter.name == "table_format")
        help_text = option.get_help_record(click.Context(command, info_name=name))[1]
        assert help_text.startswith("Format of the tables: parquet, csv or json."), (name, help_text)


def test_demo_runs_at_the_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), "--size", "tiny", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "Jacobian λ_max: true → shuffled labels" in result.stdout
    runs = pd.read_parquet(out / "runs.parquet")
    assert sorted(runs["label_noise"]) == [0.0, 1.0]
    report = (out / "report.html").read_text()
    assert report.count("<img") >= 4 and "data:image/png;base64" in report


def test_weights_of_a_nested_checkpoint_names_where_the_state_dict_was(tmp_path: Path, mlp: torch.nn.Module) -> None:
    from tests.models.test_sources import chgnet_checkpoint

    path = tmp_path / "chgnet_0.3.0_e29f68s314m37.pth.tar"
    torch.save(chgnet_checkpoint(mlp), path)
    result = run_cli("weights", str(path), "--out", str(tmp_path / "out"), "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert f"reading state_dict ({path}, at model/state_dict)" in result.stderr
    table = pd.read_csv(tmp_path / "out" / "weights.csv", dtype={"name": str})
    assert list(table["name"]) == ["0", "2", "4"]
