"""Landscape lines and planes: filter normalisation, endpoints equal to the models' own losses, BatchNorm
recomputation against a hand-computed one, worker processes against the inline evaluation."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from funnelscope import FunnelscopeInputError, landscape_line, landscape_plane
from funnelscope.probes.directions import filter_normalized_direction, norm, parameters_of

pytestmark = pytest.mark.usefixtures("one_thread")


def cnn(seed: int, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1)] + ([nn.BatchNorm2d(4)] if batch_norm else []) + [nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))


def data(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=generator) + 0.5, torch.randint(0, 3, (n,), generator=generator)


def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


def test_filter_normalised_direction_has_the_weights_filter_norms() -> None:
    weights = parameters_of(cnn(0))
    direction = filter_normalized_direction(weights, generator=torch.Generator().manual_seed(1))
    for name, w in weights.items():
        d = direction[name]
        if w.ndim <= 1:
            assert torch.count_nonzero(d) == 0, name  # biases: zero unless asked
            continue
        np.testing.assert_allclose(d.reshape(d.shape[0], -1).norm(dim=1), w.reshape(w.shape[0], -1).norm(dim=1),
                                   rtol=1e-12)
        assert not torch.allclose(d, w)  # a random direction, not the weights
    with_1d = filter_normalized_direction(weights, include_1d=True, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(with_1d["0.bias"].abs(), weights["0.bias"].abs())


def test_line_endpoints_are_the_models_own_losses_and_barrier() -> None:
    model_a, model_b = cnn(0), cnn(1)
    train, test = data(0, 37), data(1, 23)
    loader = DataLoader(TensorDataset(*train), batch_size=8)  # last batch of 5
    line = landscape_line(model_a, {"train": loader, "test": test}, other=model_b, points=9, workers=1)
    frame = line.to_frame()
    assert sorted(frame["t"].unique()) == pytest.approx(np.linspace(-0.5, 1.5, 9))
    for name, (x, y) in (("train", train), ("test", test)):
        rows = frame[frame["dataset"] == name].set_index("t")
        assert rows.loc[0.0, "loss"] == pytest.approx(mean_loss(model_a, x, y), rel=1e-6)
        assert rows.loc[1.0, "loss"] == pytest.approx(mean_loss(model_b, x, y), rel=1e-6)
        inside = rows.loc[0.0:1.0, "loss"]
        assert line.barrier[name] == pytest.approx(inside.max() - max(inside.loc[0.0], inside.loc[1.0]))
        assert line.barrier[name] >= 0
        accuracy = (model_a(x).argmax(1) == y).float().mean().item()
        assert rows.loc[0.0, "accuracy"] == pytest.approx(accuracy)
    assert line.kind == "interpolation" and line.summary()["train_barrier"] == line.barrier["train"]
    random_line = landscape_line(model_a, test, t=(-1, 1), points=5, seed=0, workers=1)
    assert random_line.kind == "random" and random_line.barrier == {}
    at_zero = random_line.frame.set_index("t").loc[0.0, "loss"]
    assert at_zero == pytest.approx(mean_loss(model_a, *test), rel=1e-6)


def test_batch_norm_recomputed_at_each_point() -> None:
    model_a, model_b = cnn(0, batch_norm=True), cnn(1, batch_norm=True)
    train, test = data(0, 40), data(1, 20)
    kept = landscape_line(model_a, {"train": train, "test": test}, other=model_b, points=3, t=(0, 1), workers=1)
    recomputed = landscape_line(model_a, {"train": train, "test": test}, other=model_b, points=3, t=(0, 1),
                                bn="recompute", workers=1)
    # by hand: the running statistics of model_a from one pass over the training data (cumulative average)
    reference = copy.deepcopy(model_a)
    norm_layer = reference[1]
    norm_layer.reset_running_stats()
    norm_layer.momentum = None
    norm_layer.train()
    with torch.no_grad():
        reference(train[0])
    expected = mean_loss(reference, *test)
    rows = recomputed.frame[recomputed.frame["dataset"] == "test"].set_index("t")
    assert rows.loc[0.0, "loss"] == pytest.approx(expected, rel=1e-5)
    kept_rows = kept.frame[kept.frame["dataset"] == "test"].set_index("t")
    assert kept_rows.loc[0.0, "loss"] == pytest.approx(mean_loss(model_a, *test), rel=1e-6)
    assert abs(kept_rows.loc[0.0, "loss"] - expected) > 1e-3  # fresh running stats (0, 1) are not the data's
    assert model_a[1].running_mean.abs().max() == 0  # the models are not modified


def test_plane_in_worker_processes_equals_inline_and_three_model_plane() -> None:
    model = cnn(0)
    test = data(1, 30)
    inline = landscape_plane(model, test, points=5, seed=0, workers=1)
    parallel = landscape_plane(model, test, points=5, seed=0, workers=2)
    pd.testing.assert_frame_equal(inline.frame, parallel.frame)
    assert inline.grid().shape == (5, 5)
    centre = inline.frame[(inline.frame["x"] == 0) & (inline.frame["y"] == 0)]["loss"].item()
    assert centre == pytest.approx(mean_loss(model, *test), rel=1e-6)

    plane = landscape_plane(model, {"test": test}, directions=(cnn(1), cnn(2)), points=3, workers=1)
    markers = plane.markers.set_index("label")
    assert (markers.loc["B", "x"], markers.loc["B", "y"]) == (1.0, 0.0)
    assert plane.x[0] == pytest.approx(min(0, markers.loc["C", "x"]) - 0.5)


def test_automatic_workers_stay_inline_for_a_quick_grid_and_without_a_main_file(monkeypatch) -> None:
    import sys

    from funnelscope.probes import landscape

    model, test = cnn(0), data(1, 10)
    monkeypatch.setattr(landscape, "_worker_init", None)  # a pool would fail: the grid must run inline
    quick = landscape_plane(model, test, points=3, seed=0)
    monkeypatch.setattr(sys.modules["__main__"], "__file__", "<stdin>", raising=False)
    assert not landscape._spawn_can_start()
    from_stdin = landscape_plane(model, test, points=3, seed=0, workers=2)
    pd.testing.assert_frame_equal(quick.frame, from_stdin.frame)


def test_pca_plane_from_a_trajectory() -> None:
    model = cnn(0)
    trajectory = [cnn(seed).state_dict() for seed in (3, 4, 5)] + [model.state_dict()]
    plane = landscape_plane(model, data(1, 10), directions="pca", trajectory=trajectory, points=3, workers=1)
    trail = plane.markers
    assert len(trail) == 4 and trail.iloc[-1][["x", "y"]].abs().max() < 1e-6  # the final point is the origin
    assert np.abs(trail[["x", "y"]].to_numpy()).max(axis=0) * 1.25 == pytest.approx([plane.x[-1], plane.y[-1]])
    weights = parameters_of(model)
    assert norm({k: parameters_of(trajectory[0])[k] - v for k, v in weights.items()}) > 0


@pytest.mark.parametrize(("call", "needle"), [
    (lambda m, d: landscape_line(m, d, other=m, bn="freeze"), "bn='freeze'"),
    (lambda m, d: landscape_line(m, d, other=m, points=1), "points=1"),
    (lambda m, d: landscape_line(m, d, other=m, t=(1, 0)), "low < high"),
    (lambda m, d: landscape_line(m, None), "data is required"),
    (lambda m, d: landscape_plane(m, d, directions="eigen"), "directions='eigen'"),
    (lambda m, d: landscape_plane(m, d, directions="pca"), "needs a trajectory"),
    (lambda m, d: landscape_plane(m, d, span=-1), "span=-1"),
    (lambda m, d: landscape_line(m, (torch.randn(6, 2, 6, 6), d[1]), other=m), "rejected inputs of shape"),
    (lambda m, d: landscape_plane(m, d, points=4, workers=2, loss_fn=lambda o, t: (o[:, 0] - t) ** 2),
     "use workers=1"),
])
def test_bad_options_name_the_value(call, needle: str) -> None:
    with pytest.raises(FunnelscopeInputError, match=needle.replace("(", r"\(")):
        call(cnn(0), data(0, 6))
