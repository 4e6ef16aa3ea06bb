"""Layer linearity against hand-built cases (fully linear, dead units) and a naive reference
(activation patterns from explicit pre-activations, R² from scikit-learn's LinearRegression)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from torch import nn

from funnelscope import FunnelscopeInputError, layer_linearity


def test_relu_fed_only_positive_preactivations_is_fully_linear() -> None:
    torch.manual_seed(0)
    first = nn.Linear(5, 8)
    with torch.no_grad():
        first.weight.abs_()
        first.bias.fill_(0.1)
    model = nn.Sequential(first, nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(200, 5)  # positive inputs, positive weights and biases: every pre-activation > 0
    frame = layer_linearity(model, x, batch_size=64).to_frame()
    row = frame.iloc[0]
    assert row["layer"] == "1" and row["kind"] == "ReLU" and row["units"] == 8 and row["n"] == 200
    assert (row["always_active"], row["always_inactive"], row["mean_active"]) == (1.0, 0.0, 1.0)
    assert row["r2"] == pytest.approx(1.0, abs=1e-10) and row["r2_method"] == "in-sample"


class FunctionalNet(nn.Module):
    """ReLU as a function call and an in-place LeakyReLU module: found by tracing."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 10), nn.Linear(10, 7), nn.Linear(7, 2)
        self.leaky = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.leaky(self.fc2(nn.functional.relu(self.fc1(x)))))


class Untraceable(FunctionalNet):
    """Data-dependent control flow: torch.fx cannot trace it, hooks on modules take over."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.relu(self.fc1(x))
        if float(h.sum()) > -1:  # always true, but not traceable
            h = self.leaky(self.fc2(h))
        return self.fc3(h)


def naive(model: FunctionalNet, x: torch.Tensor, *, see_relu: bool = True) -> list[dict]:
    """Pre-activations computed explicitly; R² by scikit-learn (variance-weighted over outputs = 1 − SSres/SStot).
    Without ``see_relu`` the second block starts at the model input (the functional ReLU is not seen)."""
    with torch.no_grad():
        z1 = model.fc1(x)
        a1 = torch.relu(z1)
        z2 = model.fc2(a1)
        a2 = nn.functional.leaky_relu(z2, 0.1)
    rows = []
    for u, z, a in ((x, z1, a1), (a1 if see_relu else x, z2, a2)):
        active = (z > 0).numpy()
        fit = LinearRegression().fit(u.double().numpy(), a.double().numpy())
        r2 = r2_score(a.double().numpy(), fit.predict(u.double().numpy()), multioutput="variance_weighted")
        rows.append({"always_active": active.all(0).mean(), "always_inactive": (~active).all(0).mean(),
                     "mean_active": active.mean(), "r2": r2})
    return rows


def test_against_a_naive_reference_traced_and_hooked() -> None:
    torch.manual_seed(1)
    model = FunctionalNet()
    with torch.no_grad():
        model.fc1.bias[:3] = -50.0  # three dead units
        model.fc2.bias[:2] = 50.0  # two always active
    x = torch.randn(300, 6)
    expected = naive(model, x)
    traced = layer_linearity(model, x, batch_size=70).to_frame()
    assert list(traced["layer"]) == ["relu", "leaky"] and list(traced["kind"]) == ["relu", "LeakyReLU"]
    untraceable = Untraceable()
    untraceable.load_state_dict(model.state_dict())
    hooked = layer_linearity(untraceable, x).to_frame()
    assert list(hooked["layer"]) == ["leaky"]  # hooks see modules only: the functional relu is invisible
    for frame, rows in ((traced, expected), (hooked, naive(model, x, see_relu=False)[1:])):
        for (_, got), want in zip(frame.iterrows(), rows, strict=True):
            for key, value in want.items():
                assert got[key] == pytest.approx(value, abs=1e-9), key
    assert traced.loc[0, "always_inactive"] == pytest.approx(0.3)
    assert traced.loc[1, "always_active"] >= 2 / 7
    assert model.training  # mode restored


def test_few_examples_are_cross_validated_and_wide_blocks_skipped() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 2))
    frame = layer_linearity(model, torch.randn(40, 30)).to_frame()  # 40 < 2·(30 + 1): an in-sample fit would be exact
    assert frame.loc[0, "r2_method"] == "2-fold" and frame.loc[0, "r2"] < 0.999
    skipped = layer_linearity(model, torch.randn(40, 30), max_features=16).to_frame()
    assert skipped.loc[0, "r2_method"] == "skipped" and np.isnan(skipped.loc[0, "r2"])


def test_conv_units_are_channel_positions() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(48, 2))
    frame = layer_linearity(model, torch.randn(20, 1, 4, 4)).to_frame()
    assert frame.loc[0, "units"] == 48 and frame.loc[0, "input_features"] == 16


def test_errors() -> None:
    with pytest.raises(FunnelscopeInputError, match="no piecewise-linear activation"):
        layer_linearity(nn.Sequential(nn.Linear(3, 2), nn.Tanh()), torch.randn(5, 3))
    with pytest.raises(FunnelscopeInputError, match="rejected inputs of shape"):
        layer_linearity(nn.Sequential(nn.Linear(3, 2), nn.ReLU()), torch.randn(5, 4))
    with pytest.raises(FunnelscopeInputError, match="max_features=0"):
        layer_linearity(nn.Sequential(nn.Linear(3, 2), nn.ReLU()), torch.randn(5, 3), max_features=0)


class Nested(nn.Module):
    """Activation modules at depth and a functional ReLU inside a submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten())
        self.head = FunctionalNet()
        self.proj = nn.Linear(108, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.proj(self.block(x)))


class TwoFunctional(nn.Module):
    """Two functional ReLUs: torch.fx names them ``relu`` and ``relu_1``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(nn.functional.relu(self.fc1(x)))))


@pytest.mark.parametrize(("build", "shape", "layers"), [
    (FunctionalNet, (90, 6), ["relu", "leaky"]),
    (Nested, (90, 1, 8, 8), ["block.1", "relu", "head.leaky"]),
    (TwoFunctional, (90, 6), ["relu", "relu_1"]),
    (lambda: nn.Sequential(nn.Linear(6, 9), nn.PReLU(), nn.Linear(9, 2)), (90, 6), ["1"]),
])
@pytest.mark.parametrize("compiled", ["script", "trace"])
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")  # torch 2.13 deprecates tracing
def test_torchscript_model_gives_the_eager_frame(build: object, shape: tuple[int, ...], layers: list[str],
                                                 compiled: str) -> None:
    """A scripted or traced model takes no hooks and no fx tracing: its inlined graph is observed, with the
    eager model's layer names and values."""
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(*shape)
    eager = layer_linearity(model, x, batch_size=32).to_frame()
    torchscript = torch.jit.script(model) if compiled == "script" else torch.jit.trace(model, x[:2])
    scripted = layer_linearity(torchscript, x, batch_size=32).to_frame()
    assert list(eager["layer"]) == layers
    pd.testing.assert_frame_equal(scripted, eager)


def test_torchscript_model_whose_activations_sit_in_control_flow() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool(x.sum() > 0):
                return torch.relu(self.fc(x))
            return self.fc(x)

    with pytest.raises(FunnelscopeInputError, match=r"TorchScript model: .*\(1 inside if/for blocks"):
        layer_linearity(torch.jit.script(Branchy()), torch.randn(8, 4))
