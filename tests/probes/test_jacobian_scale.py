"""The Jacobian probe at scale: routes under a memory budget, the streamed route against the exact one, the
disk cache's lifetime, and the budget measured.

References: the exact primal route (float64 Gram and ``syevd``) on the same rows, and the process's peak
resident set (``resource.getrusage``) in a fresh subprocess for the budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from funnelscope.errors import FunnelscopeInputError
from funnelscope.memory import parse_memory
from funnelscope.probes.jacobian import jacobian_spectrum
from funnelscope.probes.jacobian_routes import TOP_K_WITH_TAIL

pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(d: int, k: int, hidden: int = 32, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, k)).to(dtype)


def test_memory_sizes() -> None:
    assert parse_memory("4GiB") == 4 << 30
    assert parse_memory("500MB") == 500_000_000
    assert parse_memory(" 2 gb ") == 2_000_000_000
    for bad in ("4 parsecs", "-1GB", 0, True, "GiB"):
        with pytest.raises(FunnelscopeInputError, match="max_memory"):
            parse_memory(bad)


@pytest.mark.parametrize(("n", "d", "operator"), [(300, 48, "n×n"), (900, 12, "r×r")])
def test_streamed_route_agrees_with_exact(n: int, d: int, operator: str) -> None:
    # n ≤ r = 9·d: the n × n operator (two passes per product); n > r: the r × r one
    model = mlp(d, 10)
    x = torch.randn(n, d, dtype=torch.float64)
    exact = jacobian_spectrum(model, x, solver="primal").summary()
    result = jacobian_spectrum(model, x, solver="streamed", seed=0)
    streamed = result.summary()
    assert streamed["method"] == "exact/streamed(device)"
    reference = jacobian_spectrum(model, x, solver="primal").eigenvalues
    # top eigenvalues: converged block Krylov Ritz values (the first run's 8, then the tail refinement's)
    assert result.metrics["streamed_top_accepted"] == TOP_K_WITH_TAIL
    assert result.metrics["streamed_tail_refined"] >= 10
    np.testing.assert_allclose(result.eigenvalues[:10], reference[:10], rtol=1e-6)
    assert abs(streamed["lambda_max"] - exact["lambda_max"]) <= max(streamed["lambda_max_error"], 1e-12)
    assert streamed["trace"] == pytest.approx(exact["trace"], rel=1e-12)  # Σ M_ii: exact on every route
    # the quadrature's effective rank: within 3 % (and within four of its jackknife errors)
    assert streamed["effective_rank"] == pytest.approx(exact["effective_rank"], rel=0.03)
    assert abs(streamed["effective_rank"] - exact["effective_rank"]) <= 4 * streamed["effective_rank_error"] + 1e-9
    assert streamed["offdiag_ratio"] == pytest.approx(exact["offdiag_ratio"], rel=0.02)
    # α reads the quadrature's quantiles below the exact top: within 0.5 here (a few hundred eigenvalues)
    assert streamed["alpha"] == pytest.approx(exact["alpha"], abs=0.5)
    # its stated error (jackknife or the change from half the quadrature steps, the larger) covers the difference
    assert abs(streamed["alpha"] - exact["alpha"]) <= 2 * streamed["alpha_error"] + 1e-6
    assert "alpha" in streamed["approximate"] and exact["approximate"] == ""
    assert np.isnan(streamed["matrix_rank"]) and exact["alpha_error"] == 0.0


@pytest.mark.parametrize(("n", "d"), [(1000, 40), (600, 64)])
def test_tail_refinement_gives_the_exact_alpha(n: int, d: int) -> None:
    # tails of 40–50 eigenvalues, beyond the 32 top pairs: the quadrature's quantiles put α 0.03–0.07 off;
    # the refinement's Ritz values give it to the fit's precision
    model = mlp(d, 10, hidden=64)
    x = torch.randn(n, d, dtype=torch.float64)
    exact = jacobian_spectrum(model, x, solver="primal")
    result = jacobian_spectrum(model, x, solver="streamed", seed=0)
    metrics = result.metrics
    assert metrics["streamed_tail_quadrature"] > metrics["streamed_top_accepted"]
    assert metrics["streamed_tail_covered"] and metrics["streamed_tail_refined"] > metrics["streamed_tail_size"]
    exact_alpha, streamed = exact.summary()["alpha"], result.summary()
    assert abs(metrics["streamed_alpha_quadrature"] - exact_alpha) > 0.02  # what the refinement is for
    assert streamed["alpha"] == pytest.approx(exact_alpha, abs=1e-5)
    assert metrics["streamed_tail_size"] == np.count_nonzero(exact.eigenvalues >= exact.summary()["xmin"])
    tail = metrics["streamed_tail_size"]
    np.testing.assert_allclose(result.eigenvalues[:tail], exact.eigenvalues[:tail], rtol=1e-6)
    assert abs(streamed["alpha"] - exact_alpha) <= streamed["alpha_error"] + 1e-9


def test_auto_takes_the_exact_route_that_fits_and_the_cheaper_one() -> None:
    x = torch.randn(200, 8, dtype=torch.float64)
    model = mlp(8, 10)
    dual = jacobian_spectrum(model, x).summary()  # r = 72 < n = 200: the dual is cheaper
    assert dual["method"] == "exact/dual"
    assert dual["predicted_peak_bytes"] <= dual["max_memory"]
    wide = jacobian_spectrum(mlp(64, 10), torch.randn(100, 64, dtype=torch.float64)).summary()
    assert wide["method"] == "exact/primal"  # r = 576 > n = 100
    # r = 2304, n = 3000: a budget below the dual's 8r² = 42 MB and the primal's 8n² = 72 MB, and below the
    # cache of n·r·8 = 55 MB: streamed from a file
    tight = jacobian_spectrum(mlp(256, 10), torch.randn(3000, 256, dtype=torch.float64), max_memory="34MB").summary()
    assert tight["method"] == "exact/streamed(disk)"
    assert tight["predicted_peak_bytes"] <= 34_000_000


def test_primal_passes_follow_the_budget_and_do_not_change_the_result() -> None:
    model = mlp(64, 10)
    x = torch.randn(120, 64, dtype=torch.float64)
    roomy = jacobian_spectrum(model, x, solver="primal")
    # 8n² + one direction's rows (n·d·8 = 61 kB) and the overheads, but not all nine directions at once
    narrow = jacobian_spectrum(model, x, solver="primal", max_memory=roomy.summary()["predicted_peak_bytes"] - 300_000)
    np.testing.assert_allclose(narrow.eigenvalues, roomy.eigenvalues, rtol=1e-10, atol=1e-14 * roomy.eigenvalues[0])


def test_a_budget_nothing_fits_is_one_line_saying_what_would() -> None:
    with pytest.raises(FunnelscopeInputError, match=r"too small .*pass max_memory='\d+MiB'") as caught:
        jacobian_spectrum(mlp(8, 10), torch.randn(50, 8, dtype=torch.float64), max_memory="1kB")
    assert "\n" not in str(caught.value)
    with pytest.raises(FunnelscopeInputError, match="primal route needs"):
        jacobian_spectrum(mlp(8, 10), torch.randn(50, 8, dtype=torch.float64), solver="primal", max_memory="1MB")


def test_auto_never_uses_output_probes_when_they_are_not_fewer() -> None:
    x = torch.randn(20, 8, dtype=torch.float64)
    assert jacobian_spectrum(mlp(8, 10), x, method="auto", probes=32).summary()["method"].startswith("exact")
    # k = 80 > 64: auto sketches with m = 32 < 79 directions, never with m = 79 (k − 1 for probabilities)
    assert jacobian_spectrum(mlp(8, 80), x, method="auto").summary()["method"].startswith("sketch(m=32)")
    assert jacobian_spectrum(mlp(8, 80), x, method="auto", probes=79).summary()["method"].startswith("exact")
    assert jacobian_spectrum(mlp(8, 80), x, method="auto", probes=80, output="logits"
                             ).summary()["method"].startswith("exact")
    with pytest.raises(FunnelscopeInputError, match="not fewer than the 9 exact directions"):
        jacobian_spectrum(mlp(8, 10), x, method="sketch", probes=9)


# ----------------------------------------------------------------------------------------------------
# The disk cache: a temporary directory, removed after success, error and KeyboardInterrupt


class Failing(nn.Module):
    """An MLP whose forward raises ``error`` on its ``at``-th call, after checking that the cache exists."""

    def __init__(self, at: int, error: BaseException, directory: Path) -> None:
        super().__init__()
        self.net, self.calls, self.at, self.error, self.directory = mlp(16, 10), 0, at, error, directory
        self.saw_cache = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            self.saw_cache = any(self.directory.glob("funnelscope-jacobian-*/rows.bin"))
            raise self.error
        return self.net(x)


DISK = {"solver": "streamed", "max_memory": "12MB", "batch_size": 500}


def _disk_case() -> torch.Tensor:
    return torch.randn(10000, 16, dtype=torch.float64)  # cache 10 000 × 144 × 8 B = 11.5 MB: a file under 12 MB


def test_disk_cache_is_removed_after_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    x = _disk_case()
    on_disk = jacobian_spectrum(mlp(16, 10), x, **DISK)
    assert on_disk.summary()["method"] == "exact/streamed(disk)"
    assert list(tmp_path.iterdir()) == []
    in_memory = jacobian_spectrum(mlp(16, 10), x, solver="streamed")
    assert in_memory.summary()["method"] == "exact/streamed(device)"
    # the same rows read back (the tighter budget reads smaller blocks and may take fewer quadrature steps)
    np.testing.assert_allclose(on_disk.eigenvalues[:10], in_memory.eigenvalues[:10], rtol=1e-10)
    np.testing.assert_array_equal(on_disk.diagonal, in_memory.diagonal)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_disk_cache_is_removed_after_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              error: BaseException) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = Failing(at=12, error=error, directory=tmp_path)  # calls 1–2: shape and activation checks
    with pytest.raises(type(error)):
        jacobian_spectrum(model, _disk_case(), **DISK)
    assert model.saw_cache  # the rows were being written to a file …
    assert list(tmp_path.iterdir()) == []  # … which is gone


def test_disk_cache_reads_back_what_was_written_in_unaligned_blocks(tmp_path: Path) -> None:
    from funnelscope.probes.jacobian_cache import FeatureCache

    rows = torch.randn(1003, 37, dtype=torch.float32)  # 148 B rows: block offsets are not page-aligned
    with FeatureCache(1003, 37, torch.float32, place="disk", device=torch.device("cpu"), block_rows=100,
                      directory=str(tmp_path)) as cache:
        for start in range(0, 1003, 64):  # batches written by the background thread, blocks read by maps
            batch = rows[start : start + 64].clone()
            cache.write(batch)
            batch.fill_(float("nan"))  # the caller reusing its tensor does not change what is written
        read = [(start, block.clone()) for start, block in cache.blocks()]
    assert [start for start, _ in read] == list(range(0, 1003, 100))
    torch.testing.assert_close(torch.cat([block for _, block in read]), rows, rtol=0, atol=0)
    assert list(tmp_path.iterdir()) == []


def test_disk_cache_write_error_is_raised_and_the_file_removed(tmp_path: Path) -> None:
    from funnelscope.probes.jacobian_cache import FeatureCache

    cache = FeatureCache(10, 4, torch.float32, place="disk", device=torch.device("cpu"), block_rows=5,
                         directory=str(tmp_path))

    def full(_: object) -> int:
        raise OSError(28, "No space left on device")

    cache._file.write = full  # type: ignore[union-attr]
    cache.write(torch.ones(5, 4))  # in flight: the error arrives with the next call
    with pytest.raises(OSError, match="No space"):
        cache.write(torch.ones(5, 4))
    cache.close()
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# The budget, measured: peak RSS of a fresh process against the prediction

MEASURE = """
import json, resource, sys, tempfile
import torch
from torch import nn
from funnelscope.probes.jacobian import jacobian_spectrum
torch.set_num_threads(1)
tempfile.tempdir = sys.argv[3]
torch.manual_seed(0)
d = int(sys.argv[4])
model = nn.Sequential(nn.Linear(d, 64), nn.Tanh(), nn.Linear(64, 10)).eval()
x = torch.randn(int(sys.argv[1]), d)
jacobian_spectrum(model, x[:50])  # warm-up: lazy imports and kernels are not the route's memory
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
result = jacobian_spectrum(model, x, max_memory=sys.argv[2], solver=sys.argv[5])
summary = result.summary()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"method": summary["method"], "predicted": summary["predicted_peak_bytes"], "base": base,
                  "peak": peak, "tail_refined": result.metrics.get("streamed_tail_refined", 0)}))
"""


@pytest.mark.parametrize(("n", "budget", "d", "solver", "method"), [
    (2000, "120MB", 256, "auto", "exact/primal"),
    (6000, "34MB", 256, "auto", "exact/streamed(disk)"),
    (6000, "30MB", 64, "streamed", "exact/streamed(device)"),  # with the tail refinement (checked below)
])
def test_measured_peak_stays_within_the_prediction(tmp_path: Path, n: int, budget: str, d: int, solver: str,
                                                   method: str) -> None:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(n), budget, str(tmp_path), str(d), solver],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["method"] == method
    assert (measured["tail_refined"] > 0) == method.startswith("exact/streamed")  # the refinement's basis counted
    assert measured["predicted"] <= parse_memory(budget)
    # the increase of the high-water mark over the warmed-up process: at most the prediction (allocator
    # slack of 16 MiB allowed), so the budget holds
    assert measured["peak"] - measured["base"] <= measured["predicted"] + (16 << 20), measured
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_density_is_the_quadrature_of_fewer_steps() -> None:
    from funnelscope.spectra.lanczos import stochastic_lanczos_quadrature

    a = torch.diag(torch.linspace(0.0, 1.0, 300, dtype=torch.float64) ** 3)
    full = stochastic_lanczos_quadrature(lambda v: a @ v, 300, steps=40, probes=4, seed=3)
    short = stochastic_lanczos_quadrature(lambda v: a @ v, 300, steps=20, probes=4, seed=3)
    half = full.truncated(20)
    np.testing.assert_allclose(half.nodes, short.nodes, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(half.weights, short.weights, rtol=1e-7, atol=1e-12)
    assert half.dim == full.dim == 300


def test_tail_refinement_grows_in_one_run_when_its_start_is_short() -> None:
    # a known spectrum (uniform bulk on [0.2, 1] and a Pareto tail of exponent 3) whose fit has a tail of 61;
    # the values outside the refined ranks are a moving average of the exact ones (smooth and biased, as the
    # quadrature's quantiles); the refinement starts at 16 ranks and must grow, in the same Krylov space,
    # past 1.5 × the tail, without spending its column budget
    from funnelscope.probes.jacobian_streamed import TAIL_GROW, _tail_fit, refine_tail

    rng = np.random.default_rng(0)
    n = 1000
    spectrum = np.concatenate([rng.uniform(0.2, 1.0, n), (1 - rng.uniform(size=60)) ** -0.5])
    exact = np.sort(spectrum)[::-1][:n].copy()
    exact_alpha, exact_tail = _tail_fit(exact, 1e-12)
    assert exact_tail == 61
    smoothed = np.convolve(np.pad(exact, 25, mode="edge"), np.ones(51) / 51, mode="valid")
    assert abs(_tail_fit(smoothed, 1e-12)[0] - exact_alpha) > 0.3  # what the refinement is for

    diagonal = torch.tensor(exact)
    deflated = []

    def bulk(top: object) -> tuple[np.ndarray, np.ndarray, float]:
        deflated.append(top)
        return smoothed, exact[:1], 1e-12

    tail = refine_tail(lambda v: diagonal[:, None] * v, n, bulk, deflate=1, start=16, columns=n,
                       generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    # the quadrature's input is asked for once, with the space's converged top pair
    assert len(deflated) == 1 and deflated[0].values[0] == pytest.approx(exact[0], rel=1e-4)
    assert tail.covered and not tail.capped and tail.wanted >= TAIL_GROW * exact_tail
    assert tail.tail == exact_tail and tail.columns < n // 2
    assert tail.alpha == pytest.approx(exact_alpha, abs=1e-3)
    # the per-product change bounds the stop, not the error: the last tail value (at the bulk's edge) is 3.5e-5 low
    np.testing.assert_allclose(tail.values[:exact_tail], exact[:exact_tail], rtol=1e-4)
