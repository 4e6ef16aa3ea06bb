"""Lanczos and stochastic Lanczos quadrature against dense float64 eigen-decompositions (torch.linalg / numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from funnelscope.errors import FunnelscopeInputError
from funnelscope.spectra.lanczos import lanczos, stochastic_lanczos_quadrature, top_eigenvalues

pytestmark = pytest.mark.usefixtures("one_thread")


def random_psd(dim: int, rank: int, seed: int) -> torch.Tensor:
    factor = torch.randn(dim, rank, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return factor @ factor.T


def test_tridiagonal_is_the_projected_operator() -> None:
    # T_s = Q_sᵀ A Q_s: Gauss quadrature with s nodes is exact for polynomials of degree < 2s, so
    # Σ_k τ_k² θ_k^j = qᵀ A^j q for j < 2s (q the unit start vector)
    a = random_psd(60, 60, seed=0)
    a = a / torch.linalg.eigvalsh(a)[-1]
    start = torch.randn(60, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    run = lanczos(lambda v: a @ v, start, steps=6)
    values, first, _ = run.ritz()
    q = start / start.norm(dim=0)
    for j in range(12):
        moment = (q * (torch.linalg.matrix_power(a, j) @ q)).sum(0)
        torch.testing.assert_close((first * values**j).sum(1), moment, rtol=1e-9, atol=1e-12)


def test_top_eigenvalues_equal_dense_eigenvalues() -> None:
    a = random_psd(200, 40, seed=2)
    expected = torch.linalg.eigvalsh(a).flip(0).numpy()
    found = top_eigenvalues(lambda v: a @ v, 200, count=5, steps=60, tol=1e-12, seed=0)
    assert len(found) == 5
    np.testing.assert_allclose(found, expected[:5], rtol=1e-10)  # converged: error ≤ residual²/gap


def test_only_converged_values_are_returned() -> None:
    # eigenvalues 1 … 1000 evenly spaced: 5 steps cannot resolve the top ones to 1e-6
    a = torch.diag(torch.arange(1.0, 1001.0, dtype=torch.float64))
    found = top_eigenvalues(lambda v: a @ v, 1000, count=5, steps=5, seed=0)
    assert len(found) == 1  # the largest Ritz value is always returned


def test_invariant_subspace_restarts_cleanly() -> None:
    # rank 2: the Krylov space of a generic start is invariant after 2 steps (β₂ = 0); the run continues
    # with a fresh orthogonal vector and finds the zero eigenvalues, no NaN
    u = torch.randn(50, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = u @ torch.diag(torch.tensor([5.0, 2.0], dtype=torch.float64)) @ torch.linalg.qr(u)[0].T
    a = (a + a.T) / 2
    expected = torch.linalg.eigvalsh(a).flip(0).numpy()
    found = top_eigenvalues(lambda v: a @ v, 50, count=3, steps=10, seed=0)
    np.testing.assert_allclose(found[:2], expected[:2], rtol=1e-10)
    sld = stochastic_lanczos_quadrature(lambda v: a @ v, 50, steps=10, probes=3, seed=0)
    assert np.all(np.isfinite(sld.nodes)) and np.allclose(sld.weights.sum(1), 1.0)


@pytest.mark.parametrize("name", ["log", "sqrt", "identity"])
def test_quadrature_trace_error_is_hutchinson_sampling_error(name: str) -> None:
    # Wishart with aspect ratio 2: eigenvalues in about [0.09, 2.9], where log is smooth, so 30 nodes
    # integrate exactly to many digits and what is left is Hutchinson's error: for Rademacher probes
    # Var(zᵀFz) = 2 Σ_{i≠j} F_ij² (Hutchinson 1989), so the mean of p probes is within 3σ = 3√(2‖F − diag F‖²/p)
    fn, torch_fn = {"log": (np.log, torch.log), "sqrt": (np.sqrt, torch.sqrt),
                    "identity": (lambda x: x, lambda x: x)}[name]
    a = random_psd(200, 400, seed=4) / 400
    evals, vectors = torch.linalg.eigh(a)
    f_of_a = (vectors * torch_fn(evals)) @ vectors.T
    offdiagonal_sq = float((f_of_a**2).sum() - (f_of_a.diagonal() ** 2).sum())
    exact = float(torch_fn(evals).sum())
    for probes in (4, 64):
        sld = stochastic_lanczos_quadrature(lambda v: a @ v, 200, steps=30, probes=probes, seed=0)
        assert abs(sld.trace(fn) - exact) <= 3 * np.sqrt(2 * offdiagonal_sq / probes) + 1e-9 * abs(exact)


def test_density_quantiles_recover_a_known_spectrum() -> None:
    # eigenvalues uniform on [1, 2]: the quantile at level u is 1 + u
    values = torch.linspace(1.0, 2.0, 400, dtype=torch.float64)
    sld = stochastic_lanczos_quadrature(lambda v: values[:, None] * v, 400, steps=60, probes=16, seed=0)
    levels = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    np.testing.assert_allclose(sld.quantiles(levels), 1.0 + levels, atol=0.03)
    grid = np.linspace(0.5, 2.5, 2001)
    density = sld.density(grid, width=0.05)
    assert np.sum(density) * (grid[1] - grid[0]) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: stochastic_lanczos_quadrature(lambda v: v, 10, probes=0), "probes=0"),
        (lambda: stochastic_lanczos_quadrature(lambda v: v, 10, steps=-1), "steps=-1"),
        (lambda: top_eigenvalues(lambda v: v, 10, count=0), "count=0"),
        (lambda: top_eigenvalues(lambda v: v, 10, seed="a"), "seed='a'"),
        (lambda: lanczos(lambda v: v, torch.ones(5, 1, dtype=torch.float64), steps=6), r"steps=6 must be in \[1, "),
    ],
)
def test_bad_arguments(call: object, message: str) -> None:
    with pytest.raises(FunnelscopeInputError, match=message):
        call()
