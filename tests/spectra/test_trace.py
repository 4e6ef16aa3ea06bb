"""Trace estimators against exact traces of dense float64 matrices (torch.linalg): unbiased within their standard
errors over seeds, and Hutch++/XTrace tighter than Hutchinson at equal products on a decaying spectrum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from funnelscope.errors import FunnelscopeInputError
from funnelscope.options import make_generator
from funnelscope.spectra.trace import hutchinson, hutchpp, trace_estimate, xtrace

pytestmark = pytest.mark.usefixtures("one_thread")

DIM = 300


def decaying(dim: int = DIM, *, power: float = 1.0, negative: bool = False) -> torch.Tensor:
    """``U diag(k^-power) Uᵀ`` (a few negative eigenvalues when ``negative``), U Haar-like from a QR."""
    u, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    values = torch.arange(1, dim + 1, dtype=torch.float64) ** -power
    if negative:
        values[1::7] *= -0.3  # an indefinite spectrum, as a Hessian away from a minimum
    return (u * values) @ u.T


@pytest.mark.parametrize("estimator", [hutchinson, hutchpp, xtrace])
@pytest.mark.parametrize("negative", [False, True])
def test_within_three_standard_errors_over_seeds(estimator, negative: bool) -> None:
    a = decaying(negative=negative)
    exact = float(torch.trace(a))  # closed form: Σ k^-power (signs as built)
    z = []
    for seed in range(40):
        estimate = estimator(lambda v: a @ v, DIM, products=48, generator=make_generator(seed))
        assert estimate.products <= 48 and np.isfinite(estimate.stderr) and estimate.stderr > 0
        z.append((estimate.value - exact) / estimate.stderr)
    z = np.abs(np.array(z))
    assert np.mean(z <= 3) >= 0.9  # a normal z exceeds 3 with probability 0.27 %; t-tails with few samples more
    assert np.median(z) <= 1.5  # standard errors are not inflated (|N(0,1)| has median 0.67) nor collapsed


def test_standard_errors_smaller_than_hutchinsons_at_equal_products() -> None:
    a = decaying()
    exact = float(torch.trace(a))
    for products in (24, 96):
        se, errors = {}, {}
        for estimator in (hutchinson, hutchpp, xtrace):
            runs = [estimator(lambda v: a @ v, DIM, products=products, generator=make_generator(seed))
                    for seed in range(20)]
            se[estimator.__name__] = np.median([r.stderr for r in runs])
            errors[estimator.__name__] = np.sqrt(np.mean([(r.value - exact) ** 2 for r in runs]))
        assert se["hutchpp"] < se["hutchinson"] and se["xtrace"] < se["hutchinson"]
        assert errors["xtrace"] < errors["hutchinson"] and errors["hutchpp"] < errors["hutchinson"]
        assert se["xtrace"] <= se["hutchpp"]


def test_error_falls_with_the_budget() -> None:
    a = decaying(power=1.5)
    exact = float(torch.trace(a))
    errors = [np.mean([abs(xtrace(lambda v: a @ v, DIM, products=m, generator=make_generator(s)).value - exact)
                       for s in range(10)]) for m in (8, 32, 128)]
    assert errors[0] > errors[1] > errors[2]


def test_auto_choice_and_exact() -> None:
    a = decaying(dim=40)
    exact = float(torch.trace(a))
    full = trace_estimate(lambda v: a @ v, 40, products=40)
    assert full.method == "exact" and full.products == 40 and full.stderr == 0
    assert full.value == pytest.approx(exact, rel=1e-12)
    assert trace_estimate(lambda v: a @ v, 40, products=10).method == "xtrace"
    assert trace_estimate(lambda v: a @ v, 40, products=3).method == "hutchinson"
    odd = trace_estimate(lambda v: a @ v, 40, products=11, method="xtrace")
    assert odd.products == 10


def test_low_rank_operator_is_exact() -> None:
    u = torch.randn(80, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = u @ u.T
    estimate = xtrace(lambda v: a @ v, 80, products=12)
    assert estimate.value == pytest.approx(float(torch.trace(a)), rel=1e-9)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: trace_estimate(lambda v: v, 10, products=8, method="hutch"), "trace_method='hutch'"),
    (lambda: trace_estimate(lambda v: v, 10, products=0), "trace_products=0"),
    (lambda: hutchpp(lambda v: v, 10, products=2), "products=2 must be at least 3"),
    (lambda: xtrace(lambda v: v, 10, products=3), "products=3 must be at least 4"),
])
def test_bad_arguments(call, message: str) -> None:
    with pytest.raises(FunnelscopeInputError, match=message):
        call()
