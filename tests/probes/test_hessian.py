"""The Hessian probe against closed forms (least squares: H = (2/n)XᵀX) and dense float64 Hessians
(``torch.autograd.functional.hessian``) of a small network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from funnelscope import FunnelscopeInputError, hessian_spectrum
from funnelscope.probes.hessian import count_outliers

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
    spectrum = hessian_spectrum(model, loader, loss_fn=squared_error, top_k=3, bottom_k=2, probes=200, seed=0)
    np.testing.assert_allclose(spectrum.top_eigenvalues, exact[:3], rtol=1e-10)
    np.testing.assert_allclose(spectrum.bottom_eigenvalues, exact[::-1][:2], rtol=1e-10)
    np.testing.assert_allclose(spectrum.gauss_newton_top_eigenvalues, exact[:3], rtol=1e-10)  # G = H: linear model
    assert abs(spectrum.trace - exact.sum()) <= 3 * spectrum.trace_stderr
    assert spectrum.n == 103 and spectrum.dim == 6 and spectrum.method == "forward-over-reverse"
    # the mean of batch means (a common mistake) weights the last 7 examples as much as a batch of 16 ones
    weights = torch.cat([torch.full((96,), 1 / (7 * 16)), torch.full((7,), 1 / (7 * 7))]).double()
    wrong = np.linalg.eigvalsh((2 * x.T @ (weights[:, None] * x)).numpy())[::-1]
    assert abs(spectrum.top_eigenvalues[0] - wrong[0]) > 0.1 * wrong[0]


def test_trace_converges_to_the_closed_form() -> None:
    x, y, model = least_squares()
    exact = float(2 / len(x) * (x**2).sum())
    errors = [abs(hessian_spectrum(model, (x, y), loss_fn=squared_error, top_k=1, probes=m, gauss_newton=False,
                                   seed=3).trace - exact) for m in (4, 400)]
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


def test_routes_agree_and_torchscript_falls_back_to_double_backward() -> None:
    model, x, y = tiny_network()
    options = {"top_k": 2, "probes": 4, "lanczos_steps": 30, "seed": 1}
    forward = hessian_spectrum(model, (x, y), **options)
    backward = hessian_spectrum(model, (x, y), hvp="double-backward", **options)
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
    first = hessian_spectrum(model, (x, y), top_k=2, probes=2, lanczos_steps=20, seed=0)
    second = hessian_spectrum(model, (x, y), top_k=2, probes=2, lanczos_steps=20, seed=0)
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


@pytest.mark.parametrize(("options", "needle"), [
    ({"top_k": 0}, "top_k=0"),
    ({"probes": "many"}, "probes='many'"),
    ({"bottom_k": -1}, "bottom_k=-1"),
    ({"loss_fn": "hinge"}, "loss_fn='hinge'"),
    ({"hvp": "finite-differences"}, "hvp='finite-differences'"),
    ({"top_k": 10, "lanczos_steps": 5}, "lanczos_steps=5"),
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
    with pytest.raises(FunnelscopeInputError, match="the loss failed"):
        hessian_spectrum(model, (x, y + 3))  # labels beyond the 3 classes
