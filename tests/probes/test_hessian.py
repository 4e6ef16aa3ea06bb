"""The Hessian probe against closed forms (least squares: H = (2/n)XᵀX) and dense float64 Hessians
(``torch.autograd.functional.hessian``) of a small network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from funnelscope import FunnelscopeInputError, hessian_spectrum
from funnelscope.probes.hessian import count_outliers, outlier_edge

pytestmark = pytest.mark.usefixtures("one_thread")


def squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output[:, 0] - target) ** 2


def least_squares(n: int = 103, d: int = 6) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    generator = torch.Generator().manual_seed(0)
    scales = torch.linspace(0.3, 3.0, d, dtype=torch.float64)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64) * scales
    x[-7:] *= 4  # the examples of the smaller last batch stand out: weighting them wrongly shows
    y = torch.randn(n, generator=generator, dtype=torch.float64)
    torch.manual_seed(1)
    return x, y, nn.Linear(d, 1, bias=False).double()


def test_least_squares_closed_form_with_a_smaller_last_batch() -> None:
    x, y, model = least_squares()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)  # 103 = 6·16 + 7: the last batch is smaller
    assert len(x) % 16 == 7
    exact = np.linalg.eigvalsh((2 / len(x) * x.T @ x).numpy())[::-1]  # closed form, L = (1/n)‖Xw − y‖²
    spectrum = hessian_spectrum(model, loader, loss_fn=squared_error, top_k=3, bottom_k=2, gauss_newton=True,
                                trace_method="hutchinson", trace_products=200, tol=0, seed=0)
    np.testing.assert_allclose(spectrum.top_eigenvalues, exact[:3], rtol=1e-10)
    np.testing.assert_allclose(spectrum.bottom_eigenvalues, exact[::-1][:2], rtol=1e-10)
    np.testing.assert_allclose(spectrum.gauss_newton_top_eigenvalues, exact[:3], rtol=1e-10)  # G = H: linear model
    assert abs(spectrum.trace - exact.sum()) <= 3 * spectrum.trace_stderr
    assert spectrum.n == 103 and spectrum.dim == 6 and spectrum.method == "double-backward"
    # the mean of batch means (a common mistake) weights the last 7 examples as much as a batch of 16 ones
    weights = torch.cat([torch.full((96,), 1 / (7 * 16)), torch.full((7,), 1 / (7 * 7))]).double()
    wrong = np.linalg.eigvalsh((2 * x.T @ (weights[:, None] * x)).numpy())[::-1]
    assert abs(spectrum.top_eigenvalues[0] - wrong[0]) > 0.1 * wrong[0]


def test_trace_converges_to_the_closed_form() -> None:
    x, y, model = least_squares()
    exact = float(2 / len(x) * (x**2).sum())
    errors = [abs(hessian_spectrum(model, (x, y), loss_fn=squared_error, top_k=1, trace_products=m,
                                   trace_method="hutchinson", gauss_newton=False, seed=3).trace - exact)
              for m in (4, 400)]
    assert errors[1] < errors[0] and errors[1] < 0.05 * exact


def tiny_network() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(40, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    return model, x, y


def dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """``torch.autograd.functional.hessian`` of the mean cross-entropy over the flat parameters (float64)."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            params[name] = theta[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        return nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat).numpy()


def dense_gauss_newton(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """``(1/n) Σ J_iᵀ (diag p_i − p_i p_iᵀ) J_i`` from per-example Jacobians (``torch.func.jacrev``)."""
    params = {name: p.detach() for name, p in model.named_parameters()}

    def logits(theta: dict, xi: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, theta, (xi[None],))[0]

    total = 0
    for xi in x:
        jac = torch.func.jacrev(logits)(params, xi)
        j = torch.cat([jac[name].reshape(3, -1) for name in params], dim=1)
        p = torch.softmax(logits(params, xi), dim=0)
        total = total + j.T @ (torch.diag(p) - torch.outer(p, p)) @ j
    return (total / len(x)).numpy()


def test_small_network_against_its_dense_hessian() -> None:
    model, x, y = tiny_network()
    hessian = dense_hessian(model, x, y)
    exact = np.linalg.eigvalsh(hessian)
    dim = exact.size
    spectrum = hessian_spectrum(model, (x, y), top_k=3, bottom_k=2, density=True, probes=48, lanczos_steps=dim,
                                gauss_newton=True, tol=0, trace_method="hutchinson", trace_products=48,
                                batch_size=16, seed=0)
    np.testing.assert_allclose(spectrum.top_eigenvalues, exact[::-1][:3], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(spectrum.bottom_eigenvalues, exact[:2], rtol=1e-8, atol=1e-10)
    gn_exact = np.linalg.eigvalsh(dense_gauss_newton(model, x))[::-1]
    np.testing.assert_allclose(spectrum.gauss_newton_top_eigenvalues, gn_exact[:3], rtol=1e-8)
    assert abs(spectrum.trace - exact.sum()) <= 3 * spectrum.trace_stderr

    density = spectrum.density
    assert np.trapezoid(density.values, density.grid) == pytest.approx(1.0, abs=1e-8)
    # moments of the broadened density: E[λ^j] of the quadrature (per probe, exact for j < 2s), plus the
    # Gaussian's contribution (+ width² to the second moment)
    quad = density.quadrature
    for power in (1, 2):
        per_probe = np.sum(quad.weights * quad.nodes**power, axis=1)
        se = per_probe.std(ddof=1) / np.sqrt(per_probe.size)
        exact_moment = np.mean(exact**power)
        assert abs(per_probe.mean() - exact_moment) <= 4 * se
        broadened = np.trapezoid(density.grid**power * density.values, density.grid)
        assert broadened == pytest.approx(per_probe.mean() + (density.width**2 if power == 2 else 0), rel=1e-6)


def tiny_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).double()
    x = torch.randn(30, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (30,))
    return model, x, y


@pytest.mark.parametrize("network", [tiny_network, tiny_cnn])
@pytest.mark.parametrize("tol", [1e-4, 1e-8])
def test_early_stopping_reaches_tol_against_the_dense_hessian(network, tol: float) -> None:
    model, x, y = network()
    exact = np.linalg.eigvalsh(dense_hessian(model, x, y))  # torch.autograd.functional.hessian, float64
    spectrum = hessian_spectrum(model, (x, y), top_k=4, bottom_k=1, lanczos_steps=exact.size, tol=tol, trace=False,
                                seed=0)
    assert spectrum.top_converged.all() and spectrum.bottom_converged.all()
    assert spectrum.lanczos_steps < exact.size and spectrum.products == spectrum.lanczos_steps  # it stopped early
    top = exact[::-1][:4]
    np.testing.assert_array_less(np.abs(spectrum.top_eigenvalues - top), tol * np.abs(top))
    np.testing.assert_array_less(np.abs(spectrum.top_eigenvalues - top), spectrum.top_errors + 1e-12 * top[0])
    assert abs(spectrum.bottom_eigenvalues[0] - exact[0]) <= tol * max(abs(exact[0]), 1e-6 * top[0])
    summary = spectrum.summary()
    assert summary["converged"] == "5/5" and summary["lanczos_steps"] == spectrum.lanczos_steps
    assert summary["tol"] == tol and summary["products"] == spectrum.products


def test_max_steps_without_convergence_says_so() -> None:
    model, x, y = tiny_cnn()
    spectrum = hessian_spectrum(model, (x, y), top_k=4, lanczos_steps=5, trace=False, seed=0)
    assert spectrum.lanczos_steps == 5 and not spectrum.top_converged.all()
    assert spectrum.to_frame()["converged"].tolist() == spectrum.top_converged.tolist()


def test_trace_methods_against_the_dense_hessian() -> None:
    model, x, y = tiny_cnn()
    exact = float(np.trace(dense_hessian(model, x, y)))
    for method, products in (("exact", 1), ("auto", 500)):
        spectrum = hessian_spectrum(model, (x, y), top_k=1, trace_method=method, trace_products=products, seed=0)
        assert spectrum.trace_method == "exact" and spectrum.trace_products == spectrum.dim
        assert spectrum.trace == pytest.approx(exact, rel=1e-10)
    for method in ("xtrace", "hutch++", "hutchinson"):
        spectrum = hessian_spectrum(model, (x, y), top_k=1, trace_method=method, trace_products=30, seed=0)
        assert spectrum.trace_method == method and spectrum.trace_products == 30
        assert abs(spectrum.trace - exact) <= 4 * spectrum.trace_stderr
        assert spectrum.products == spectrum.lanczos_steps + 30
        assert spectrum.summary()["trace_method"] == method


def spiked_least_squares(spikes: tuple[float, ...], bulk: int = 30, n: int = 400):
    """``H = (2/n)XᵀX`` with eigenvalues ``spikes`` above a bulk in [1, 2] (X built from its SVD)."""
    generator = torch.Generator().manual_seed(4)
    d = len(spikes) + bulk
    values = torch.cat([torch.tensor(spikes, dtype=torch.float64), torch.linspace(1.0, 2.0, bulk, dtype=torch.float64)])
    u, _ = torch.linalg.qr(torch.randn(n, d, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    x = u * torch.sqrt(values * n / 2) @ v.T
    torch.manual_seed(0)
    return x, torch.randn(n, dtype=torch.float64), nn.Linear(d, 1, bias=False).double(), values


def test_outliers_are_the_eigenvalues_above_the_drawn_edge() -> None:
    from matplotlib.colors import to_hex

    from funnelscope.report.curvature_plots import plot_hessian
    from funnelscope.report.plots import EDGE_COLOR

    x, y, model, _ = spiked_least_squares((100.0, 50.0, 20.0))
    spectrum = hessian_spectrum(model, (x, y), loss_fn=squared_error, top_k=6, density=True, probes=4, seed=0)
    assert spectrum.outliers == 3 and not spectrum.outliers_at_least  # closed form: three spikes above [1, 2]
    assert spectrum.bulk_edge == pytest.approx(2.0, rel=1e-6)  # λ₄, the top of the bulk
    assert spectrum.outliers == int(np.sum(spectrum.top_eigenvalues > spectrum.bulk_edge))
    assert spectrum.summary()["outliers"] == 3
    figure = plot_hessian(spectrum)
    for ax in figure.axes:  # the edge drawn in each panel is the rule's
        lines = [line for line in ax.get_lines() if to_hex(line.get_color()) == EDGE_COLOR.lower()]
        assert len(lines) == 1
        drawn = lines[0].get_xdata()[0] if ax is figure.axes[0] else lines[0].get_ydata()[0]
        assert drawn == pytest.approx(spectrum.bulk_edge)
        assert int(np.sum(spectrum.top_eigenvalues > drawn)) == spectrum.outliers
    # two computed values, both above the density's edge: "at least 2", not 0
    few = hessian_spectrum(model, (x, y), loss_fn=squared_error, top_k=2, density=True, probes=4, seed=0)
    assert few.outliers == 2 and few.outliers_at_least and few.summary()["outliers_at_least"]


def test_forward_over_reverse_double_backward_and_torchscript_agree() -> None:
    model, x, y = tiny_network()
    options = {"top_k": 2, "trace_products": 8, "lanczos_steps": 30, "gauss_newton": True, "seed": 1}
    forward = hessian_spectrum(model, (x, y), hvp="forward-over-reverse", **options)
    backward = hessian_spectrum(model, (x, y), **options)
    scripted = hessian_spectrum(torch.jit.script(model), (x, y), **options)
    assert forward.method == "forward-over-reverse"
    assert backward.method == scripted.method == "double-backward"
    for other in (backward, scripted):
        np.testing.assert_allclose(other.top_eigenvalues, forward.top_eigenvalues, rtol=1e-9)
        np.testing.assert_allclose(other.gauss_newton_top_eigenvalues, forward.gauss_newton_top_eigenvalues,
                                   rtol=1e-9)
        assert other.trace == pytest.approx(forward.trace, rel=1e-9)


def test_eval_mode_restored_and_frame() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    first = hessian_spectrum(model, (x, y), top_k=2, lanczos_steps=20, gauss_newton=True, seed=0)
    second = hessian_spectrum(model, (x, y), top_k=2, lanczos_steps=20, gauss_newton=True, seed=0)
    assert all(module.training for module in model.modules())
    np.testing.assert_array_equal(first.top_eigenvalues, second.top_eigenvalues)  # no dropout, running stats
    assert all(p.grad is None for p in model.parameters())
    frame = first.to_frame()
    assert list(frame["operator"]) == ["hessian", "hessian", "gauss_newton", "gauss_newton"]
    assert set(first.summary()) >= {"lambda_max", "trace", "trace_stderr", "outliers", "gn_lambda_max"}


def test_outlier_rule() -> None:
    assert count_outliers(np.array([40.0, 35.0, 1.0, 0.9])) == 2
    assert count_outliers(np.array([40.0, 35.0, 30.0]), 1.0) == 3  # all top_k above the bulk edge
    assert count_outliers(np.array([1.0, 0.9, 0.8]), 0.7) == 0
    assert count_outliers(np.array([5.0])) is None
    assert outlier_edge(np.array([40.0, 35.0, 1.0, 0.9])) == 1.0
    assert np.isnan(outlier_edge(np.array([5.0])))


@pytest.mark.parametrize(("options", "needle"), [
    ({"top_k": 0}, "top_k=0"),
    ({"probes": "many"}, "probes='many'"),
    ({"bottom_k": -1}, "bottom_k=-1"),
    ({"loss_fn": "hinge"}, "loss_fn='hinge'"),
    ({"hvp": "finite-differences"}, "hvp='finite-differences'"),
    ({"top_k": 10, "lanczos_steps": 5}, "lanczos_steps=5"),
    ({"tol": -1.0}, "tol=-1.0"),
    ({"trace_method": "hutch"}, "trace_method='hutch'"),
    ({"trace_products": 0}, "trace_products=0"),
    ({"max_batches": 0}, "max_batches=0"),
])
def test_bad_options_name_the_value(options: dict, needle: str) -> None:
    model, x, y = tiny_network()
    with pytest.raises(FunnelscopeInputError, match=needle.replace("(", r"\(")):
        hessian_spectrum(model, (x, y), **options)


def test_bad_data() -> None:
    model, x, y = tiny_network()
    with pytest.raises(FunnelscopeInputError, match="same first dimension"):
        hessian_spectrum(model, (x, y[:5]))
    with pytest.raises(FunnelscopeInputError, match="empty"):
        hessian_spectrum(model, (x[:0], y[:0]))
    with pytest.raises(FunnelscopeInputError, match="integer labels"):
        hessian_spectrum(model, (x, y.double()))
    with pytest.raises(FunnelscopeInputError, match=r"rejected inputs of shape \(40, 5\)"):
        hessian_spectrum(model, (torch.randn(40, 5, dtype=torch.float64), y))
    with pytest.raises(FunnelscopeInputError, match=r"the loss failed|class indices"):
        hessian_spectrum(model, (x, y + 3))  # labels beyond the 3 classes


def test_kept_gradient_graphs_give_the_dense_hessian_within_their_memory() -> None:
    from funnelscope.data import read_data
    from funnelscope.probes.curvature import CurvatureProducts
    from funnelscope.probes.loss import resolve_loss

    model, x, y = tiny_network()
    dense = dense_hessian(model, x, y)
    batches = read_data((x, y), batch_size=16)  # 3 batches
    block = torch.eye(dense.shape[0], dtype=torch.float64)[:, :5]
    kept = CurvatureProducts(model, batches, resolve_loss(None))
    rebuilt = CurvatureProducts(model, batches, resolve_loss(None), graph_memory=0)
    for _ in range(2):  # the second pass runs on the kept graphs
        columns = [kept.hessian_matmat(block[:, [j]]) for j in range(5)]
        np.testing.assert_allclose(torch.cat(columns, 1).numpy(), dense[:, :5], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rebuilt.hessian_matmat(block[:, [0]]).numpy(), dense[:, :1], rtol=1e-10, atol=1e-12)
    assert len(kept._graphs) == 3 and 0 < kept._graph_bytes <= kept.graph_memory
    assert not rebuilt._graphs and rebuilt._graph_bytes == 0
    one = CurvatureProducts(model, batches, resolve_loss(None), graph_memory=kept._graph_bytes // 2)
    one.hessian_matmat(block[:, [0]])
    assert 0 < len(one._graphs) < 3 and one._graph_bytes <= one.graph_memory
    assert kept.method == "double-backward" and kept._functional_runs is None  # auto never tried torch.func
