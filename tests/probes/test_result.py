"""The probe protocol: every probe is ``probe(model, (x, y), *, ...)`` and its result has ``summary()``,
``to_frame()`` and ``save()``; several results save side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import funnelscope as fs
from funnelscope.errors import FunnelscopeInputError
from tests.conftest import gaussian_classification, relu_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def small_data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    return gaussian_classification(n, 6)


def small_model(seed: int = 0) -> nn.Module:
    return relu_classifier(6, 16, seed=seed)


PROBES = {
    "jacobian": lambda model, data: fs.jacobian_spectrum(model, data),
    "hessian": lambda model, data: fs.hessian_spectrum(model, data, top_k=2, probes=2, lanczos_steps=6),
    "landscape_line": lambda model, data: fs.landscape_line(model, data, points=3, workers=1),
    "landscape_plane": lambda model, data: fs.landscape_plane(model, data, points=3, workers=1),
    "linearity": lambda model, data: fs.layer_linearity(model, data),
}


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return b is None
    if isinstance(a, float):
        return b == pytest.approx(a, rel=1e-12)
    if isinstance(a, list | tuple):
        return list(a) == list(b)
    return a == b


@pytest.mark.parametrize("name", list(PROBES))
def test_every_probe_takes_an_x_y_pair_and_saves(name: str, tmp_path: Path) -> None:
    result = PROBES[name](small_model(), small_data())
    assert isinstance(result, fs.ProbeResult)
    summary = result.summary()
    assert summary and all(isinstance(key, str) for key in summary)
    frame = result.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) > 0
    out = result.save(tmp_path / "out", figures=True)
    saved = json.loads((out / "summary.json").read_text())  # strict JSON: NaN written as null
    assert saved.keys() == summary.keys()
    assert all(same(summary[key], saved[key]) for key in summary), (summary, saved)
    for stem, table in result.tables().items():
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{stem}.parquet"), table.reset_index(drop=True),
                                      check_dtype=False)
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(result.figures())
    assert not list(tmp_path.glob(".out*")), "staging directory left behind"


def test_every_data_form_gives_the_same_numbers() -> None:
    model = small_model()
    x, y = small_data()
    reference = fs.jacobian_spectrum(model, (x, y)).summary()
    forms = [(x.numpy(), y.numpy()), fs.LabelledData(x, y, "small"), TensorDataset(x, y),
             DataLoader(TensorDataset(x, y), batch_size=7)]
    for data in forms:
        summary = fs.jacobian_spectrum(model, data).summary()
        assert summary["lambda_max"] == pytest.approx(reference["lambda_max"], rel=1e-5)
        assert summary["accuracy"] == reference["accuracy"]
    hessians = [fs.hessian_spectrum(model, data, top_k=1, probes=2, lanczos_steps=6).top_eigenvalues[0]
                for data in ((x, y), DataLoader(TensorDataset(x, y), batch_size=7))]
    assert hessians[0] == pytest.approx(hessians[1], rel=1e-5)


def test_inputs_alone_where_targets_are_needed_name_the_problem() -> None:
    model = small_model()
    x, _ = small_data()
    assert fs.jacobian_spectrum(model, x).labels is None
    assert fs.layer_linearity(model, x).n == len(x)
    for probe in (lambda: fs.hessian_spectrum(model, x), lambda: fs.landscape_line(model, x, points=3)):
        with pytest.raises(FunnelscopeInputError, match="no targets"):
            probe()


PROBE_FUNCTIONS = (fs.jacobian_spectrum, fs.hessian_spectrum, fs.landscape_line, fs.landscape_plane,
                   fs.layer_linearity)


@pytest.mark.parametrize("device", ["cuda:7", "warp", "mps"])
@pytest.mark.parametrize("probe", PROBE_FUNCTIONS, ids=lambda f: f.__name__)
def test_a_device_this_machine_lacks_is_a_one_line_error(probe, device: str) -> None:
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has eight GPUs")
    with pytest.raises(FunnelscopeInputError, match="device=") as caught:
        probe(small_model(), small_data(), device=device)
    assert "\n" not in str(caught.value)


def test_shared_options_have_one_default_everywhere() -> None:
    import inspect

    from funnelscope.options import DEFAULT_BATCH_SIZE, DEFAULT_SEED

    for function in PROBE_FUNCTIONS:
        parameters = inspect.signature(function).parameters
        assert list(parameters)[:2] == ["model", "data"], function.__name__
        assert all(p.kind is p.KEYWORD_ONLY for p in list(parameters.values())[2:]), function.__name__
        assert parameters["batch_size"].default == DEFAULT_BATCH_SIZE
        assert parameters["device"].default is None and parameters["progress"].default is False
        if "seed" in parameters:
            assert parameters["seed"].default == DEFAULT_SEED


def test_results_save_side_by_side(tmp_path: Path) -> None:
    data = small_data()
    results = {f"m{seed}": fs.jacobian_spectrum(small_model(seed), data) for seed in (0, 1)}
    table = fs.compare(results)
    assert list(table.index) == ["m0", "m1"] and table.loc["m1", "lambda_max"] == results["m1"].summary()["lambda_max"]
    out = fs.save_comparison(results, tmp_path / "side", format="csv", figures=True)
    assert pd.read_csv(out / "summary.csv")["model"].tolist() == ["m0", "m1"]
    for label in results:
        assert len(pd.read_csv(out / label / "examples.csv")) == 40
        assert (out / label / "jacobian.png").exists()
    assert (out / "comparison.png").exists()


def test_a_failed_save_leaves_nothing(tmp_path: Path) -> None:
    result = fs.layer_linearity(small_model(), small_data()[0])
    with pytest.raises(FunnelscopeInputError, match="format='xlsx'"):
        result.save(tmp_path / "out", format="xlsx")
    (tmp_path / "file").write_text("")
    with pytest.raises(FunnelscopeInputError, match="not a directory"):
        result.save(tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_weights_analysis_follows_the_protocol(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(60, 40), nn.ReLU(), nn.Linear(40, 20))
    analysis = fs.WeightsAnalysis.from_spectra(fs.weight_spectra(model), source="mlp", keep_spectra=True)
    pd.testing.assert_frame_equal(analysis.to_frame(), fs.analyze_weights(model))
    summary = analysis.summary()
    assert summary["layers_used"] == 2 and summary["alpha"] == pytest.approx(analysis.details["alpha"].mean())
    out = analysis.save(tmp_path / "w", figures=True)
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == ["000_0.png", "001_2.png"]
    assert json.loads((out / "summary.json").read_text())["layers"] == 2
    nan_model = nn.Linear(30, 20)
    with torch.no_grad():
        nan_model.weight[0, 0] = float("nan")
    with pytest.raises(FunnelscopeInputError, match="no layer could be analysed"):
        fs.WeightsAnalysis.from_spectra(fs.weight_spectra(nan_model), source="nan")
    assert np.isfinite(summary["alpha"])
