"""What the probes' figures draw: the axes, the lines and bars with the result's own numbers, the labels
(not the size of a PNG)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from torch import nn

import funnelscope as fs
from funnelscope.report.curvature_plots import plot_hessian, plot_landscape_line, plot_linearity
from funnelscope.report.plots import EDGE_COLOR, plot_weights_overview
from tests.conftest import gaussian_classification, relu_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def data(n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    return gaussian_classification(n, 5)


def model(seed: int = 0) -> nn.Module:
    return relu_classifier(5, 12, seed=seed)


def test_hessian_figure_draws_the_top_eigenvalues_and_the_rules_edge() -> None:
    spectrum = fs.hessian_spectrum(model(), data(), top_k=4, density=True, gauss_newton=True, probes=3,
                                   lanczos_steps=12)
    figure = plot_hessian(spectrum)
    density_ax, rank_ax = figure.axes
    assert density_ax.get_xlabel() == "eigenvalue of the Hessian" and density_ax.get_yscale() == "log"
    vertical = [line for line in density_ax.get_lines() if len(set(line.get_xdata())) == 1]
    edges = [line for line in vertical if to_hex(line.get_color()) == EDGE_COLOR.lower()]
    assert len(edges) == 1 and edges[0].get_xdata()[0] == pytest.approx(spectrum.bulk_edge)
    marked = sorted(line.get_xdata()[0] for line in vertical if line not in edges)
    np.testing.assert_allclose(marked, np.sort(spectrum.top_eigenvalues))
    hessian_line = rank_ax.get_lines()[0]
    np.testing.assert_array_equal(hessian_line.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_allclose(hessian_line.get_ydata(), spectrum.top_eigenvalues)
    labels = [text.get_text() for text in rank_ax.get_legend().get_texts()]
    assert "Gauss–Newton G" in labels and any(label.startswith("trace = ") for label in labels)


def test_landscape_line_draws_each_data_set_against_t() -> None:
    train, test = data(60), data(30)
    line = fs.landscape_line(model(0), {"train": train, "test": test}, other=model(1), points=5, workers=1)
    figure = plot_landscape_line(line, labels=("A", "B"))
    loss_ax, accuracy_ax = figure.axes
    assert (loss_ax.get_ylabel(), accuracy_ax.get_ylabel()) == ("loss", "accuracy")
    curves = [curve for curve in loss_ax.get_lines() if len(curve.get_xdata()) > 2]
    assert [curve.get_label().split(" ")[0] for curve in curves] == ["train", "test"]
    for curve, name in zip(curves, ("train", "test"), strict=True):
        rows = line.frame[line.frame["dataset"] == name]
        np.testing.assert_allclose(curve.get_xdata(), rows["t"])
        np.testing.assert_allclose(curve.get_ydata(), rows["loss"])
        assert f"barrier {line.barrier[name]:.3g}" in curve.get_label()
    assert [text.get_text() for text in loss_ax.texts] == ["A", "B"]


def test_linearity_figure_has_one_bar_pair_per_activation() -> None:
    frame = fs.layer_linearity(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU()),
                               data()[0]).to_frame()
    figure = plot_linearity(frame)
    (ax,) = figure.axes
    widths = [patch.get_width() for patch in ax.patches]
    np.testing.assert_allclose(widths, [*frame["always_active"], *frame["always_inactive"]])
    assert [label.get_text() for label in ax.get_yticklabels()] == ["1 (ReLU)", "3 (ReLU)"]
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), frame["r2"])


def test_weights_overview_draws_alpha_per_layer_between_the_guides() -> None:
    details = fs.analyze_weights(nn.Sequential(nn.Linear(80, 60), nn.ReLU(), nn.Linear(60, 40)))
    figure = plot_weights_overview(details, title="mlp")
    alpha_ax, weighted_ax = figure.axes[:2]
    np.testing.assert_allclose([patch.get_width() for patch in alpha_ax.patches], details["alpha"])
    np.testing.assert_allclose([patch.get_width() for patch in weighted_ax.patches], details["alpha_weighted"])
    assert sorted(line.get_xdata()[0] for line in alpha_ax.get_lines()) == [2.0, 6.0]
    assert [label.get_text() for label in alpha_ax.get_yticklabels()] == ["0", "2"]
    assert figure.get_suptitle() == "mlp"


def test_layer_esd_panel_states_the_tables_num_spikes() -> None:
    """The Marchenko–Pastur panel's legend gives the table's ``num_spikes`` under that name, whatever part of
    the spectrum the axis cuts off (the count cut off is not a second, differently labelled number)."""
    from funnelscope.report.plots import plot_layer_esd

    weights = fs.analyze_weights(nn.Sequential(spiked_layer()), min_evals=4)
    row = weights.iloc[0]
    spectrum = next(fs.weight_spectra(nn.Sequential(spiked_layer()), min_evals=4))
    figure = plot_layer_esd(spectrum.eigenvalues, fit=spectrum.fit, marchenko_pastur=spectrum.marchenko_pastur,
                            N=int(row["N"]))
    mp_ax = figure.axes[1]
    labels = [text.get_text() for text in mp_ax.get_legend().get_texts()]
    assert f"num_spikes = {int(row['num_spikes'])} (above λ₊)" in labels
    assert int(row["num_spikes"]) >= 3  # the three planted spikes at least
    assert not any("beyond" in label for label in labels)
    assert mp_ax.get_xlabel() == "eigenvalue of X = WᵀW/N (shown up to 2λ₊)"


def spiked_layer() -> nn.Linear:
    """A 300×200 Gaussian layer plus three strong rank-one spikes (far beyond 2λ₊), seeded."""
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(200, 300, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(300, 200, generator=generator))
        for strength in (40.0, 30.0, 20.0):
            u, v = torch.randn(300, 1, generator=generator), torch.randn(1, 200, generator=generator)
            layer.weight.add_(strength * (u / u.norm()) @ (v / v.norm()) * 10)
    return layer
