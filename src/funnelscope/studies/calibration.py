"""The ``calibration`` study: the power-law estimator on known tails, and random-matrix ESDs against MP.

1. Pareto samples: ``n`` values with density :math:`p(x) = (\\alpha-1) x^{-\\alpha}` for ``x ≥ 1`` (drawn by
   inversion, :math:`x = (1-u)^{-1/(\\alpha-1)}`), fitted by :func:`funnelscope.fit_powerlaw` with its default
   (WeightWatcher-compatible) xmin search, repeated ``repetitions`` times per ``(α, n)``: estimate against
   truth, and the error's decay with ``n`` (Clauset, Shalizi & Newman, SIAM Review 51, 2009, Section 3:
   :math:`\\sigma_\\alpha = (\\alpha-1)/\\sqrt{n}`).
2. Random matrices ``N × M``: Gaussian entries (the ESD of ``X = WᵀW/N`` follows Marchenko–Pastur with
   ``σ² = 1``) and Pareto-entry matrices of tail index ``μ`` (Martin & Mahoney, JMLR 2021, Table 1: a
   power-law ESD with :math:`\\alpha \\approx 1 + \\mu/2`, very heavy-tailed for ``μ < 2``), each with its
   power-law and Marchenko–Pastur fits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from funnelscope.studies.common import fmt, load_run_frame
from funnelscope.studies.study import StudyDefinition, StudyOutputs

__all__ = ["CALIBRATION", "matrix_run", "pareto_run", "pareto_sample"]


def pareto_sample(alpha: float, n: int, *, seed: int) -> np.ndarray:
    """``n`` draws from :math:`p(x) = (\\alpha-1)x^{-\\alpha}`, ``x ≥ 1``, by inversion of the CDF."""
    u = np.random.default_rng(seed).random(n)
    return (1.0 - u) ** (-1.0 / (alpha - 1.0))


def pareto_run(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Fit ``repetitions`` Pareto samples of one ``(alpha, n)``; per-sample estimates to ``estimates.parquet``."""
    from funnelscope.spectra.powerlaw import fit_powerlaw

    rows = []
    for repeat in range(spec["repetitions"]):
        fit = fit_powerlaw(pareto_sample(spec["alpha"], spec["n"], seed=spec["seed"] * 100_003 + repeat))
        rows.append({"repeat": repeat, "alpha_hat": fit.alpha, "xmin": fit.xmin, "D": fit.D, "sigma": fit.sigma,
                     "n_tail": fit.n_tail})
    estimates = pd.DataFrame(rows)
    estimates.to_parquet(run_dir / "estimates.parquet", index=False)
    error = estimates["alpha_hat"] - spec["alpha"]
    return {"alpha_hat_median": float(estimates["alpha_hat"].median()), "bias": float(error.mean()),
            "rmse": float(np.sqrt((error**2).mean())), "median_abs_error": float(error.abs().median()),
            "xmin_median": float(estimates["xmin"].median()),
            "sigma_theory": (spec["alpha"] - 1) / math.sqrt(spec["n"])}


def matrix_run(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """ESD of one random matrix (Gaussian or Pareto entries) with its power-law and Marchenko–Pastur fits."""
    from funnelscope.spectra.marchenko_pastur import fit_marchenko_pastur
    from funnelscope.spectra.powerlaw import fit_powerlaw
    from funnelscope.spectra.synthetic import gaussian_matrix, pareto_matrix

    N, M = spec["N"], spec["M"]
    if spec["ensemble"] == "gaussian":
        matrix = gaussian_matrix(N, M, seed=spec["seed"])
    else:
        matrix = pareto_matrix(N, M, mu=spec["mu"], seed=spec["seed"])
    eigenvalues = np.linalg.eigvalsh(matrix.T @ matrix)
    pd.DataFrame({"eigenvalue": eigenvalues}).to_parquet(run_dir / "eigenvalues.parquet", index=False)
    fit = fit_powerlaw(eigenvalues)
    mp = fit_marchenko_pastur(eigenvalues, N=N, M=M)
    return {"alpha_hat": fit.alpha, "xmin": fit.xmin, "D": fit.D, "sigma2_mp": mp.sigma2, "bulk_max": mp.bulk_max,
            "num_spikes": mp.num_spikes, "lambda_max": float(eigenvalues[-1]),
            "alpha_expected": 1 + spec["mu"] / 2 if spec["ensemble"] == "pareto" else math.nan}


def _settings(size: str) -> dict[str, Any]:
    sizes = {"tiny": [100, 1000], "quick": [100, 1000, 10000], "demo": [100, 1000, 10000],
             "full": [100, 300, 1000, 3000, 10000, 30000]}
    return {"alphas": [1.5, 2.0, 3.0, 4.0, 6.0] if size != "tiny" else [2.0, 4.0], "sizes": sizes[size],
            "repetitions": {"tiny": 3, "quick": 10, "demo": 10, "full": 40}[size],
            "matrix_shape": [300, 150] if size == "tiny" else [1000, 500] if size != "full" else [2000, 1000],
            "mus": [1.5, 2.5, 3.5]}


def _runs(settings: dict[str, Any]) -> list[dict[str, Any]]:
    seed = settings["seed"]
    specs = [{"kind": "pareto", "run_id": f"pareto_a{alpha:g}_n{n}", "alpha": alpha, "n": n,
              "repetitions": settings["repetitions"], "seed": seed + index}
             for index, (alpha, n) in enumerate((a, n) for a in settings["alphas"] for n in settings["sizes"])]
    N, M = settings["matrix_shape"]
    specs.append({"kind": "matrix", "run_id": "matrix_gaussian", "ensemble": "gaussian", "mu": math.nan, "N": N,
                  "M": M, "seed": seed})
    specs += [{"kind": "matrix", "run_id": f"matrix_pareto_mu{mu:g}", "ensemble": "pareto", "mu": mu, "N": N, "M": M,
               "seed": seed + 1 + i} for i, mu in enumerate(settings["mus"])]
    return specs


def _summarize(runs: pd.DataFrame, settings: dict[str, Any], outputs: StudyOutputs) -> None:
    from funnelscope.report.plots import plot_layer_esd
    from funnelscope.report.study_plots import plot_estimates
    from funnelscope.spectra.marchenko_pastur import fit_marchenko_pastur
    from funnelscope.spectra.powerlaw import fit_powerlaw

    directory = outputs.directory
    pareto = runs[runs["kind"] == "pareto"]
    estimates = pd.concat([load_run_frame(directory, row["run_id"], "estimates").assign(alpha=row["alpha"], n=row["n"])
                           for row in pareto.to_dict("records")], ignore_index=True)
    section = "Power-law estimator"
    outputs.figure(plot_estimates(estimates, truth="alpha", estimate="alpha_hat", group="n", xlabel="true α",
                                  ylabel="estimated α̂", title="power-law fits of Pareto samples"),
                   "pareto_estimates", section=section, title="Estimated against true exponent",
                   caption=f"Left: median and interquartile range of α̂ over {settings['repetitions']} samples per "
                           "true α and sample size n (dotted: α̂ = α). Right: the median absolute error against n; "
                           "it should fall roughly as (α−1)/√n.")
    columns = ["alpha", "n", "alpha_hat_median", "bias", "rmse", "median_abs_error", "sigma_theory", "xmin_median"]
    outputs.table(pareto[columns], "pareto", section=section, title="Power-law estimator on Pareto samples",
                  caption="Per true α and sample size n: median estimate, bias, RMSE and median absolute error over "
                          "the repetitions, beside the asymptotic standard error (α−1)/√n of the MLE with known xmin.")
    matrices = runs[runs["kind"] == "matrix"]
    for row in matrices.to_dict("records"):
        eigenvalues = load_run_frame(directory, row["run_id"], "eigenvalues")["eigenvalue"].to_numpy()
        name = "Gaussian" if row["ensemble"] == "gaussian" else f"Pareto entries, μ={row['mu']:g}"
        figure = plot_layer_esd(eigenvalues, fit=fit_powerlaw(eigenvalues),
                                marchenko_pastur=fit_marchenko_pastur(eigenvalues, N=int(row["N"]), M=int(row["M"])),
                                N=int(row["N"]), title=f"{name} {int(row['N'])}×{int(row['M'])}")
        outputs.figure(figure, row["run_id"], section="Random matrices", title=f"ESD of a {name} random matrix",
                       caption="Left: the ESD of WᵀW on log-log axes with the fitted power-law tail. Right: the ESD "
                               "of X = WᵀW/N with the fitted Marchenko–Pastur density and its bulk edge λ₊. Gaussian "
                               "matrices sit inside MP; Pareto-entry ones have a power-law tail, α ≈ 1 + μ/2.")
    outputs.table(matrices[["run_id", "ensemble", "mu", "N", "M", "alpha_hat", "alpha_expected", "sigma2_mp",
                            "bulk_max", "num_spikes", "lambda_max"]], "matrices", section="Random matrices",
                  title="Random-matrix ESDs", caption="Power-law α̂ of each ESD beside Martin & Mahoney's 1 + μ/2, "
                  "the fitted MP variance and bulk edge (for X = WᵀW/N), and the eigenvalues above the edge.")
    largest = pareto[pareto["n"] == pareto["n"].max()]
    outputs.headline_number(f"median |α̂ − α| at n={int(largest['n'].iloc[0])}",
                            fmt(float(largest["median_abs_error"].median()), 2))
    smallest = pareto[pareto["n"] == pareto["n"].min()]
    outputs.headline_number(f"median |α̂ − α| at n={int(smallest['n'].iloc[0])}",
                            fmt(float(smallest["median_abs_error"].median()), 2))
    heavy = matrices[matrices["ensemble"] == "pareto"].sort_values("mu").iloc[0]
    outputs.headline_number(f"ESD α̂, Pareto entries μ={heavy['mu']:g} (expected {heavy['alpha_expected']:g})",
                            fmt(float(heavy["alpha_hat"])))


CALIBRATION = StudyDefinition(
    name="calibration",
    title="Calibration: the power-law estimator and random-matrix ESDs",
    description=(
        "Checks the measuring instrument before it is used on networks. The power-law fitter is run on Pareto "
        "samples of known exponent across exponents and sample sizes (estimate vs truth, error vs n), and the "
        "ESDs of Gaussian and Pareto-entry random matrices are shown against their Marchenko–Pastur fits: "
        "Gaussian matrices are random-like, Pareto entries give heavy power-law tails (α ≈ 1 + μ/2)."),
    settings=_settings,
    runs=_runs,
    summarize=_summarize,
)
