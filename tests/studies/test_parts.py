"""Parts of the study harness: data, augmentation, models, schedules, rank correlations, and every study's
smallest run (its figures, tables and three headline numbers)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from funnelscope.errors import FunnelscopeInputError
from funnelscope.studies.catalog import STUDIES, get_study
from funnelscope.studies.data import Augmentation, prepare_data
from funnelscope.studies.models import build_model
from funnelscope.studies.series import rank_correlations
from funnelscope.studies.study import run_study
from funnelscope.studies.training import learning_rate


def test_prepare_data_split_by_seed_and_normalised_on_train_statistics() -> None:
    train, test = prepare_data(seed=0)
    again, _ = prepare_data(seed=0)
    other, _ = prepare_data(seed=1)
    assert len(train) + len(test) == 1797 and torch.equal(train.x, again.x) and not torch.equal(train.x, other.x)
    images, _ = prepare_data(image=True)
    assert images.x.shape[1:] == (1, 8, 8)
    normed, normed_test = prepare_data(normalize=True)
    assert torch.allclose(normed.x.mean(0), torch.zeros(64), atol=1e-5)
    varying = train.x.std(0) > 1e-3
    assert torch.allclose(normed.x.std(0, unbiased=False)[varying], torch.ones(int(varying.sum())), atol=1e-4)
    assert not torch.allclose(normed_test.x.mean(0), torch.zeros(64), atol=1e-3)  # test statistics not used
    x, y = np.random.default_rng(0).standard_normal((40, 5)), np.arange(40) % 2
    user_train, user_test = prepare_data(x=x, y=y, seed=3)
    assert len(user_train) == 30 and len(user_test) == 10 and user_train.x.dtype == torch.float32
    with pytest.raises(FunnelscopeInputError, match="both"):
        prepare_data(x=x)
    with pytest.raises(FunnelscopeInputError, match="labels"):
        prepare_data(x=x, y=y[:5])


def test_augmentation_shifts_and_flips_deterministically() -> None:
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 3, 2] = 1.0
    batch = image.repeat(200, 1, 1, 1)
    shifted = Augmentation(shift=1, image_shape=(1, 8, 8))(batch, torch.Generator().manual_seed(0))
    positions = {tuple(torch.nonzero(example[0]).flatten().tolist()) for example in shifted}
    assert positions == {(3 + dy, 2 + dx) for dy, dx in itertools.product((-1, 0, 1), repeat=2)}  # all 9 shifts
    again = Augmentation(shift=1, image_shape=(1, 8, 8))(batch, torch.Generator().manual_seed(0))
    assert torch.equal(shifted, again)
    flipped = Augmentation(flip=True)(batch.reshape(200, 64), torch.Generator().manual_seed(1)).reshape(200, 8, 8)
    columns = {int(torch.nonzero(example)[0, 1]) for example in flipped}
    assert columns == {2, 5}  # 8 − 1 − 2 = 5
    assert Augmentation.from_name("") is None
    with pytest.raises(FunnelscopeInputError, match="unknown"):
        Augmentation.from_name("rotate")


@pytest.mark.parametrize(("arch", "batch_norm"), [("mlp", False), ("mlp", True), ("cnn", True), ("resnet", True),
                                                  ("resnet", False)])
def test_models_build_for_digits(arch: str, batch_norm: bool) -> None:
    model = build_model(arch, input_shape=(1, 8, 8), num_classes=10, width=8, depth=3, batch_norm=batch_norm)
    assert model(torch.zeros(4, 1, 8, 8)).shape == (4, 10)
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert has_bn == batch_norm


def test_model_errors() -> None:
    with pytest.raises(FunnelscopeInputError, match="unknown architecture"):
        build_model("vit", input_shape=(64,), num_classes=10, width=8, depth=1, batch_norm=False)
    with pytest.raises(FunnelscopeInputError, match="image"):
        build_model("cnn", input_shape=(64,), num_classes=10, width=8, depth=1, batch_norm=False)


def test_learning_rate_schedules() -> None:
    # closed forms of the schedules at t = 0, 1/2, 3/4 of 100 steps
    assert [learning_rate(1.0, "constant", s, 100) for s in (0, 50, 75)] == [1.0, 1.0, 1.0]
    assert [learning_rate(1.0, "step", s, 100) for s in (0, 50, 75)] == [1.0, 0.1, 0.01]
    assert [learning_rate(1.0, "linear", s, 100) for s in (0, 50, 75)] == [1.0, 0.5, 0.25]
    assert learning_rate(1.0, "cosine", 50, 100) == pytest.approx(0.5)
    assert learning_rate(1.0, "cosine", 75, 100) == pytest.approx((1 + math.cos(0.75 * math.pi)) / 2)


def _naive_kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall (1938): (concordant − discordant pairs) / pairs, for data without ties."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    signs = [np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs]
    return float(sum(signs) / len(pairs))


def test_rank_correlations_match_the_definitions() -> None:
    rng = np.random.default_rng(0)
    runs = pd.DataFrame({"alpha_mean": rng.standard_normal(9), "jac_alpha": rng.standard_normal(9),
                         "test_accuracy": rng.random(9), "gap": rng.random(9)})
    table = rank_correlations(runs).set_index(["metric", "target"])
    for metric in ("alpha_mean", "jac_alpha"):
        for target in ("test_accuracy", "gap"):
            row = table.loc[(metric, target)]
            assert row["kendall_tau"] == pytest.approx(_naive_kendall_tau(runs[metric].values, runs[target].values))
            ranks = runs[[metric, target]].rank()
            assert row["spearman_rho"] == pytest.approx(np.corrcoef(ranks[metric], ranks[target])[0, 1])
    assert len(table) == 4  # metrics absent from the runs are left out


# each study at a size smaller than "tiny": a couple of runs, two epochs
SMALLEST = {
    "labels": {"label_noises": [0.0, 1.0]},
    "batch-size": {"batch_sizes": [32, 256]},
    "lb-sb": {"line_points": 5, "line_n": 100, "continue_epochs": 1},
    "ablation": {},
    "depth-bn": {"depths": [2, 3]},
    "calibration": {"alphas": [2.0], "sizes": [100], "repetitions": 2, "matrix_shape": [60, 30], "mus": [1.5]},
    "series": {"label_noises": [0.0, 1.0], "batch_sizes": [32], "widths": [8, 16]},
}
TRAINING = {"epochs": 2, "train_size": 150, "width": 12, "jacobian_n": 30, "hessian_n": 48, "hessian_top_k": 2}


@pytest.mark.parametrize("name", list(STUDIES))
def test_each_study_writes_figures_tables_and_three_headline_numbers(name: str, tmp_path: Path) -> None:
    definition = get_study(name)
    settings = definition.settings("tiny")
    overrides = {**{k: v for k, v in TRAINING.items() if k in settings}, **SMALLEST[name]}
    if name == "depth-bn":
        overrides["hessian_top_k"] = 0
    result = run_study(definition, tmp_path, size="tiny", overrides=overrides, report=False)
    assert len(result.headline) == 3 and all(item["value"] for item in result.headline)
    figures = json.loads((tmp_path / "figures" / "manifest.json").read_text())
    tables = json.loads((tmp_path / "tables" / "manifest.json").read_text())
    assert len(figures) >= 2 and tables
    for entry in figures + tables:
        assert (tmp_path / entry["file"]).stat().st_size > 0
        assert entry["caption"] and entry["section"] and entry["title"]
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert runs["run_id"].is_unique and len(runs) == len(result.runs)
    if name != "calibration":
        assert {"train_accuracy", "test_accuracy", "gap", "alpha_mean", "jac_lambda_max"} <= set(runs)
        history = pd.read_parquet(tmp_path / "runs" / runs["run_id"].iloc[0] / "history.parquet")
        assert {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"} <= set(history)


def test_a_runs_hessian_columns_are_the_probes_own_numbers(tmp_path: Path) -> None:
    # the run records what hessian_spectrum reports: its top eigenvalues and its outlier count (an int)
    from funnelscope import hessian_spectrum
    from funnelscope.datasets import LabelledData
    from funnelscope.studies.experiment import _hessian

    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(64,), num_classes=10, width=8, depth=1, batch_norm=False)
    x, y = torch.rand(64, 64), torch.arange(64) % 10
    recorded = _hessian(model, LabelledData(x, y, "tiny"), {"hessian_top_k": 3, "seed": 0}, tmp_path)
    direct = hessian_spectrum(model, (x, y), top_k=3, trace=True, seed=0, device="cpu")
    assert recorded["hessian_outliers"] == (direct.outliers if direct.outliers is not None else -1)
    assert recorded["hessian_top1"] == pytest.approx(float(np.max(direct.top_eigenvalues)), rel=1e-9)
