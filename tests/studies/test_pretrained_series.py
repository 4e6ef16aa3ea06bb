"""A series of pretrained models (``analyze_series``, ``funnelscope series``): each row equals the single-model
probes on the same inputs, the correlations equal scipy's on the table, a killed series resumes with every
model once, and a bad manifest is one line before anything runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import kendalltau, permutation_test, spearmanr

from funnelscope.datasets import LabelledData, load_digits
from funnelscope.errors import FunnelscopeInputError
from funnelscope.probes.hessian import hessian_spectrum
from funnelscope.probes.jacobian import jacobian_spectrum
from funnelscope.probes.weights import analyze_weights, summarize_weights
from funnelscope.studies.models import mlp
from funnelscope.studies.pretrained_series import SERIES_ACCURACIES, analyze_series
from funnelscope.studies.runner import deterministic_torch
from funnelscope.studies.series import SERIES_METRICS
from funnelscope.studies.training import train_classifier
from tests.conftest import assert_png, assert_user_error, run_cli

WIDTHS_EPOCHS = ((8, 1), (16, 2), (24, 3), (32, 5))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four digits MLPs of several widths and epochs as TorchScript files, a manifest with their (made-up)
    reported accuracies and steps, 200 labelled test examples and the same inputs without labels."""
    root = tmp_path_factory.mktemp("zoo")
    train, test = load_digits(split="train"), load_digits(split="test")
    train = LabelledData(train.x[:400], train.y[:400], train.name)
    lines = ["name,model,accuracy,step"]
    for index, (width, epochs) in enumerate(WIDTHS_EPOCHS):
        torch.manual_seed(index)
        model = mlp(width=width, depth=1)
        train_classifier(model, train, epochs=epochs, batch_size=32, lr=0.05, seed=index)
        torch.jit.script(model.eval()).save(str(root / f"w{width}_epoch{epochs}.pt"))
        lines.append(f"w{width},w{width}_epoch{epochs}.pt,{0.5 + 0.1 * index},{epochs}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    x, y = test.x[:200].numpy(), test.y[:200].numpy()
    np.savez(root / "data.npz", x=x, y=y)
    np.savez(root / "inputs.npz", x=x)
    return {"root": root, "manifest": root / "manifest.csv", "data": root / "data.npz",
            "inputs": root / "inputs.npz"}


@pytest.fixture(scope="module")
def measured(zoo: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> object:
    out = tmp_path_factory.mktemp("series") / "out"
    return analyze_series(zoo["manifest"], zoo["data"], out=out, hessian=True, report=True)


def test_each_row_equals_the_single_model_probes(measured: object, zoo: dict[str, Path]) -> None:
    with np.load(zoo["data"]) as arrays:
        x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    manifest = pd.read_csv(zoo["manifest"])
    table = measured.table
    assert list(table["name"]) == list(manifest["name"])
    for row, entry in zip(table.to_dict("records"), manifest.to_dict("records"), strict=True):
        model = torch.jit.load(str(zoo["root"] / entry["model"]))
        with deterministic_torch():  # as the series' runs measure
            weights = summarize_weights(analyze_weights(model)).metrics
            jacobian = jacobian_spectrum(model, (x, y)).summary()
            hessian = hessian_spectrum(model, (x, y), top_k=1, trace=True)
            logits = model(x).detach()
        for key in ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "log_alpha_norm"):
            assert row[f"{key}_mean"] == pytest.approx(weights[key], rel=1e-12), key
        for key in ("alpha", "lambda_max", "trace", "effective_rank", "stable_rank", "diagonal_alpha",
                    "offdiag_ratio"):
            assert row[f"jac_{key}"] == pytest.approx(jacobian[key], rel=1e-12), key
        assert row["hessian_top1"] == pytest.approx(hessian.top_eigenvalues[0], rel=1e-12)
        assert row["hessian_trace"] == pytest.approx(hessian.trace, rel=1e-12)
        # measured accuracy and loss, computed here from the logits
        assert row["accuracy"] == pytest.approx(float((logits.argmax(1) == y).double().mean()), abs=1e-12)
        assert row["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5)
        assert row["reported_accuracy"] == pytest.approx(entry["accuracy"])
        assert row["step"] == entry["step"]


def test_correlations_equal_scipys_on_the_table(measured: object) -> None:
    table, correlations = measured.table, measured.correlations
    metrics = [m for m, _ in SERIES_METRICS if m in table]
    assert set(zip(correlations["metric"], correlations["target"], strict=True)) == {
        (m, t) for m in metrics for t, _ in SERIES_ACCURACIES if table[m].nunique() > 1}
    for row in correlations.to_dict("records"):
        a, b = table[row["metric"]].to_numpy(float), table[row["target"]].to_numpy(float)
        tau, rho = kendalltau(a, b), spearmanr(a, b)
        assert row["n"] == len(table)
        assert row["kendall_tau"] == pytest.approx(tau.statistic, abs=1e-12)
        assert row["kendall_p"] == pytest.approx(tau.pvalue, abs=1e-12)
        assert row["spearman_rho"] == pytest.approx(rho.statistic, abs=1e-12)
        exact = permutation_test((a,), lambda s, b=b: spearmanr(s, b).statistic, permutation_type="pairings",
                                 n_resamples=np.inf, alternative="two-sided").pvalue  # the 4! orderings
        assert row["spearman_p"] == pytest.approx(exact, abs=1e-12)
    saved = pd.read_parquet(measured.directory / "correlations.parquet")
    pd.testing.assert_frame_equal(saved, correlations)


def test_the_directory_holds_the_table_figures_and_report(measured: object) -> None:
    out = measured.directory
    assert len(pd.read_parquet(out / "series.parquet")) == len(WIDTHS_EPOCHS)
    manifest = json.loads((out / "figures" / "manifest.json").read_text())
    assert {entry["file"] for entry in manifest} == {
        "figures/metrics_vs_accuracy.png", "figures/metrics_vs_reported_accuracy.png", "figures/jacobian_esds.png"}
    for entry in manifest:
        assert_png(out / entry["file"])
    saved = measured.save(out.parent / "saved", figures=True)  # the probe protocol's save()
    assert {path.name for path in saved.iterdir()} == {
        "series.parquet", "correlations.parquet", "summary.json", "metrics_vs_accuracy.png",
        "metrics_vs_reported_accuracy.png", "jacobian_esds.png"}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "jac_offdiag_ratio" in html and "hessian_trace" in html
    assert measured.summary()["models"] == len(WIDTHS_EPOCHS)


def test_a_killed_series_resumes_with_every_model_once(zoo: dict[str, Path], tmp_path: Path,
                                                       measured: object) -> None:
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from funnelscope.studies.pretrained_series import analyze_series
        analyze_series({str(zoo['manifest'])!r}, {str(zoo['data'])!r}, out={str(out)!r}, report=False,
                       on_result=lambda row: os.kill(os.getpid(), signal.SIGKILL))
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    first = pd.read_parquet(out / "series.parquet")
    assert len(first) == 1  # the row was saved before the kill
    measured_now: list[str] = []
    result = analyze_series(zoo["manifest"], zoo["data"], out=out, report=False, workers=2,
                            on_result=lambda row: measured_now.append(row["name"]))
    names = list(pd.read_parquet(out / "series.parquet")["name"])
    assert sorted(names) == sorted(pd.read_csv(zoo["manifest"])["name"])
    assert len(set(names)) == len(names) == len(result.table)
    assert first["name"].iloc[0] not in measured_now and len(measured_now) == len(names) - 1
    again = result.table.set_index("name").loc[first["name"].iloc[0]]
    assert again["seconds"] == first["seconds"].iloc[0]  # kept, not measured again
    # the pool's workers measure as this process does (one thread, deterministic algorithms)
    columns = [c for c in result.table if c != "seconds" and not c.startswith("hessian")]
    pd.testing.assert_frame_equal(result.table[columns], measured.table[columns])


def test_resuming_with_other_options_is_refused(measured: object, zoo: dict[str, Path]) -> None:
    with pytest.raises(FunnelscopeInputError, match="other options"):
        analyze_series(zoo["manifest"], zoo["data"], out=measured.directory, seed=1)


def test_checkpoints_in_step_order_from_file_names(zoo: dict[str, Path], tmp_path: Path) -> None:
    files = [str(path) for path in sorted(zoo["root"].glob("w*_epoch*.pt"), reverse=True)]
    result = analyze_series(files, zoo["data"], out=tmp_path / "out", order="step")
    assert list(result.table["step"]) == sorted(epochs for _, epochs in WIDTHS_EPOCHS)
    assert_png(tmp_path / "out" / "figures" / "metrics_vs_step.png")


BAD_MANIFESTS = {
    "a missing file": ("name,model,accuracy\na,nowhere.pt,0.5\n", ["line 2", "nowhere.pt", "not found"]),
    "an unknown column": ("name,model,acc\na,{model},0.5\n", ["unknown column", "acc"]),
    "no model column": ("name,accuracy\na,0.5\n", ["missing column", "model"]),
    "a non-number accuracy": ("name,model,accuracy\na,{model},high\n", ["line 2", "'high' is not a number"]),
    "a percentage": ("name,model,accuracy\na,{model},91.5\n", ["91.5", "[0, 1]", "percentage"]),
    "a percent sign": ("name,model,accuracy\na,{model},91%\n", ["91%", "not percentages"]),
    "a negative accuracy": ("name,model,accuracy\na,{model},-0.1\n", ["-0.1", "[0, 1]"]),
    "duplicate names": ("name,model\na,{model}\na,{model}\n", ["duplicate model name 'a'"]),
    "a bad name": ("name,model\na/b,{model}\n", ["'a/b'", "letters, digits"]),
    "a bad step": ("name,model,step\na,{model},late\n", ["step 'late'"]),
    "weights for a file": ("name,model,weights\na,{model},{model}\n", ["only for a module:factory"]),
    "bad factory_args": ("name,model,weights,factory_args\na,pkg:make,{model},{{width: 3\n", ["not valid JSON"]),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_a_bad_manifest_is_one_line_before_anything_runs(case: str, zoo: dict[str, Path], tmp_path: Path) -> None:
    text, needles = BAD_MANIFESTS[case]
    model = next(zoo["root"].glob("w8_*.pt"))
    manifest = tmp_path / "bad.csv"
    manifest.write_text(text.format(model=model))
    with pytest.raises(FunnelscopeInputError) as error:
        analyze_series(manifest, zoo["data"], out=tmp_path / "out")
    message = str(error.value)
    assert len(message.splitlines()) == 1, message
    for needle in needles:
        assert needle in message, (needle, message)
    assert not (tmp_path / "out").exists()


def test_cli_series_on_unlabelled_data_and_a_bad_manifest(zoo: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("series", str(zoo["manifest"]), "--data", str(zoo["inputs"]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "rank correlations" in result.stdout and "jac_alpha ~ reported_accuracy" in result.stdout
    table = pd.read_parquet(out / "series.parquet")
    assert len(table) == len(WIDTHS_EPOCHS) and table["accuracy"].isna().all()  # no labels, no accuracy
    correlations = pd.read_parquet(out / "correlations.parquet")
    assert set(correlations["target"]) == {"reported_accuracy"}
    assert (out / "report.html").is_file()
    bad = tmp_path / "bad.csv"
    bad.write_text("name,model,accuracy\na,missing.pt,0.5\n")
    assert_user_error(run_cli("series", str(bad), "--data", "digits", "--out", str(tmp_path / "other")),
                      "missing.pt", "not found")
    assert not (tmp_path / "other").exists()


def test_the_hessian_without_labels_is_refused_before_anything_runs(zoo: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FunnelscopeInputError, match="needs data with labels"):
        analyze_series(zoo["manifest"], zoo["inputs"], out=tmp_path / "out", hessian=True)
    assert not (tmp_path / "out").exists()


def test_modules_in_memory_are_measured_in_process_only(zoo: dict[str, Path], tmp_path: Path) -> None:
    models = {f"m{i}": torch.jit.load(str(path)) for i, path in enumerate(sorted(zoo["root"].glob("w*.pt")))}
    with pytest.raises(FunnelscopeInputError, match="objects in this process"):
        analyze_series(models, zoo["data"], out=tmp_path / "pool", workers=2)
    with np.load(zoo["data"]) as arrays:
        data = (torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]))
    result = analyze_series(models, data, out=tmp_path / "out", report=False)
    assert list(result.table["name"]) == list(models)
    assert not math.isnan(result.table["jac_alpha"].iloc[0])
