"""The ``series`` study: do spectral metrics rank models by test accuracy and generalisation gap?

Across a set of runs, each metric is rank-correlated with test accuracy and with the generalisation gap
``train_accuracy − test_accuracy``: Kendall's τ (the share of concordant minus discordant pairs, τ-b with ties;
Kendall, Biometrika 1938) and Spearman's ρ (Pearson's correlation of the ranks), with their two-sided p-values
from :mod:`scipy.stats` (Kendall's exact for small ``n`` without ties; Spearman's exact by enumeration for
``n ≤ 8``, :func:`spearman_p_value`). This is the test Martin, Peng & Mahoney ("Predicting trends in the quality of
state-of-the-art neural networks without access to training or testing data", Nature Comm. 12, 4122, 2021)
apply to α, α̂ and the log norms across model series.

:func:`rank_correlations` does it for any runs table (every study adds the table when it has enough runs);
the study itself trains a grid over label noise, batch size and width so that test accuracies spread — or,
with the ``source`` setting, analyses another study's ``runs.parquet``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from funnelscope.errors import FunnelscopeInputError
from funnelscope.studies.common import base_settings, fmt, training_spec
from funnelscope.studies.study import StudyDefinition, StudyOutputs

__all__ = ["SERIES_METRICS", "SERIES_TARGETS", "add_rank_correlations", "hessian_metrics", "jacobian_metrics",
           "rank_correlations", "spearman_p_value", "weight_metrics"]

SERIES_METRICS = (
    ("alpha_mean", "weights α (mean)"),
    ("alpha_weighted_mean", "weights α̂ (mean)"),
    ("log_norm_mean", "log₁₀‖W‖²_F (mean)"),
    ("log_spectral_norm_mean", "log₁₀ λ_max(W) (mean)"),
    ("log_alpha_norm_mean", "log₁₀ α-norm (mean)"),
    ("jac_alpha", "Jacobian α"),
    ("jac_lambda_max", "Jacobian λ_max"),
    ("jac_trace", "Jacobian trace"),
    ("jac_effective_rank", "Jacobian effective rank"),
    ("jac_stable_rank", "Jacobian stable rank"),
    ("jac_diagonal_alpha", "Jacobian diagonal α"),
    ("jac_offdiag_ratio", "Jacobian off-diagonal ratio"),
    ("hessian_top1", "Hessian λ_1"),
    ("hessian_trace", "Hessian trace"),
)
SERIES_TARGETS = (("test_accuracy", "test accuracy"), ("gap", "generalisation gap"))

#: The weight summary's means (:func:`funnelscope.summarize_weights`) that become ``<name>_mean`` columns.
WEIGHT_KEYS = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "log_alpha_norm", "stable_rank")
#: The Jacobian summary's keys (:meth:`funnelscope.JacobianSpectrum.summary`) that become ``jac_<key>`` columns.
JACOBIAN_KEYS = ("alpha", "lambda_max", "trace", "effective_rank", "stable_rank", "offdiag_ratio", "diagonal_alpha")


def weight_metrics(details: pd.DataFrame) -> dict[str, float]:
    """The series columns of a weights table (:func:`funnelscope.analyze_weights`): ``<key>_mean`` for every
    key of :data:`WEIGHT_KEYS`, the means over the layers whose fit succeeded (NaN when none did)."""
    from funnelscope.probes.weights import summarize_weights

    metrics = summarize_weights(details).metrics
    return {f"{key}_mean": float(metrics.get(key, np.nan)) for key in WEIGHT_KEYS}


def jacobian_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The series columns of a Jacobian summary: ``jac_<key>`` for every key of :data:`JACOBIAN_KEYS`."""
    return {f"jac_{key}": float(summary[key]) if summary[key] is not None else np.nan for key in JACOBIAN_KEYS}


def hessian_metrics(top_eigenvalues: np.ndarray, trace: float | None) -> dict[str, float]:
    """The series columns of a Hessian result: ``hessian_top<i>`` (descending) and ``hessian_trace``."""
    top = np.sort(np.asarray(top_eigenvalues, dtype=np.float64))[::-1]
    out = {f"hessian_top{i + 1}": float(value) for i, value in enumerate(top)}
    out["hessian_trace"] = float(trace) if trace is not None else np.nan
    return out


EXACT_SPEARMAN_UP_TO = 8  # n! orderings enumerated for the exact p-value (40 320 at n = 8)


def spearman_p_value(x: np.ndarray, y: np.ndarray, rho: float, approximate: float) -> float:
    """The two-sided p-value of Spearman's ρ: exact for ``n ≤ 8`` (the share of the ``n!`` orderings of ``y``'s
    ranks whose ``|ρ|`` is at least the observed one, ties kept as average ranks), else ``approximate`` (scipy's
    Student-t approximation, fine for larger ``n``).

    >>> round(spearman_p_value(np.arange(5.0), np.arange(5.0), 1.0, 1.4e-24), 4)  # 2 of 120 orderings
    0.0167
    """
    from itertools import permutations

    from scipy.stats import rankdata

    n = len(x)
    if n > EXACT_SPEARMAN_UP_TO or not np.isfinite(rho):
        return float(approximate)
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    scale = np.sqrt((rx**2).sum() * (ry**2).sum())
    orderings = ry[np.array(list(permutations(range(n))))]
    null = orderings @ rx / scale
    return float(np.mean(np.abs(null) >= abs(rho) - 1e-12))


def rank_correlations(
    runs: pd.DataFrame,
    *,
    metrics: tuple[tuple[str, str], ...] = SERIES_METRICS,
    targets: tuple[tuple[str, str], ...] = SERIES_TARGETS,
) -> pd.DataFrame:
    """Kendall's τ and Spearman's ρ of every metric with every target, over the runs where both are finite.

    Returns
    -------
    pandas.DataFrame
        Columns ``metric, target, n, kendall_tau, kendall_p, spearman_rho, spearman_p``; metrics missing from
        ``runs`` or with fewer than three finite values are left out.

    Examples
    --------
    >>> frame = pd.DataFrame({"alpha_mean": [1.0, 2.0, 3.0, 4.0], "test_accuracy": [0.9, 0.8, 0.7, 0.6],
    ...                       "gap": [0.0, 0.1, 0.2, 0.3]})
    >>> rank_correlations(frame)[["metric", "target", "kendall_tau"]].values.tolist()
    [['alpha_mean', 'test_accuracy', -1.0], ['alpha_mean', 'gap', 1.0]]
    """
    from scipy.stats import kendalltau, spearmanr

    rows = []
    for metric, _ in metrics:
        if metric not in runs:
            continue
        for target, _ in targets:
            if target not in runs:
                continue
            valid = runs[[metric, target]].apply(pd.to_numeric, errors="coerce").dropna()
            if len(valid) < 3 or valid[metric].nunique() < 2 or valid[target].nunique() < 2:
                continue
            tau = kendalltau(valid[metric], valid[target])
            rho = spearmanr(valid[metric], valid[target])
            rows.append({"metric": metric, "target": target, "n": len(valid),
                         "kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
                         "spearman_rho": float(rho.statistic),
                         "spearman_p": spearman_p_value(valid[metric].to_numpy(), valid[target].to_numpy(),
                                                        float(rho.statistic), float(rho.pvalue))})
    return pd.DataFrame(rows, columns=["metric", "target", "n", "kendall_tau", "kendall_p", "spearman_rho",
                                       "spearman_p"])


def add_rank_correlations(runs: pd.DataFrame, outputs: StudyOutputs, *, section: str, min_runs: int = 4,
                          hue: str | None = None) -> pd.DataFrame:
    """Write the rank-correlation table (and scatter plots) of a study's runs when it has ``min_runs``."""
    from funnelscope.report.study_plots import plot_rank_scatter

    if len(runs) < min_runs:
        return pd.DataFrame()
    table = rank_correlations(runs)
    outputs.table(table, "rank_correlations", section=section, title="Rank correlations with test accuracy and gap",
                  caption="Kendall's τ and Spearman's ρ (with two-sided p-values) of each metric with test accuracy "
                          "and with the generalisation gap (train − test accuracy) across this study's runs. "
                          f"With only {len(runs)} runs, treat the p-values as rough.")
    for target, label in SERIES_TARGETS:
        outputs.figure(
            plot_rank_scatter(runs, SERIES_METRICS, target, target_label=label, hue=hue,
                              title=f"spectral metrics against {label} ({len(runs)} runs)"),
            f"rank_scatter_{target}", section=section, title=f"Metrics against {label}",
            caption=f"Each dot is one run; the panel title gives Kendall's τ and Spearman's ρ of the metric with "
                    f"{label}. A metric that ranks models well has |τ| near 1.")
    return table


def _settings(size: str) -> dict[str, Any]:
    grids = {
        "tiny": {"label_noises": [0.0, 0.5], "batch_sizes": [32, 128], "widths": [32], "seeds": 1},
        "quick": {"label_noises": [0.0, 0.3, 0.6], "batch_sizes": [32, 256], "widths": [32, 96], "seeds": 1},
        "demo": {"label_noises": [0.0, 0.3, 0.6], "batch_sizes": [32, 256], "widths": [32, 128], "seeds": 1},
        "full": {"label_noises": [0.0, 0.2, 0.4, 0.6], "batch_sizes": [16, 64, 256], "widths": [32, 128], "seeds": 2},
    }
    settings = base_settings(size, hessian_top_k=0, **({"epochs": 8} if size == "quick" else {}))
    return {**settings, **grids[size], "source": ""}


def _runs(settings: dict[str, Any]) -> list[dict[str, Any]]:
    if settings["source"]:
        return []
    specs = []
    for repeat in range(settings["seeds"]):
        for noise in settings["label_noises"]:
            for batch in settings["batch_sizes"]:
                for width in settings["widths"]:
                    specs.append(training_spec(
                        settings, f"noise{noise:g}_bs{batch}_w{width}_s{repeat}", seed=settings["seed"] + repeat,
                        label_noise=noise, batch_size=batch, width=width, group=f"noise {noise:g}"))
    return specs


def _summarize(runs: pd.DataFrame, settings: dict[str, Any], outputs: StudyOutputs) -> None:
    if settings["source"]:
        path = Path(settings["source"]) / "runs.parquet"
        if not path.exists():
            raise FunnelscopeInputError(f"{settings['source']}: no runs.parquet to analyse")
        runs = pd.read_parquet(path)
    hue = "label_noise" if "label_noise" in runs and runs["label_noise"].nunique() > 1 else None
    table = add_rank_correlations(runs, outputs, section="Rank correlations", min_runs=3, hue=hue)
    knobs = ("run_id", "label_noise", "batch_size", "width", "train_accuracy", "test_accuracy", "gap")
    columns = [c for c in (*knobs, *(m for m, _ in SERIES_METRICS)) if c in runs]
    outputs.table(runs[columns], "runs", section="Runs", title="Runs",
                  caption="One row per run: its knobs, final accuracies, gap and the spectral metrics.")
    test = table[table["target"] == "test_accuracy"] if len(table) else table
    gap = table[table["target"] == "gap"] if len(table) else table
    best = test.loc[test["kendall_tau"].abs().idxmax()] if len(test) else None
    outputs.headline_number("runs", str(len(runs)))
    outputs.headline_number(
        "best rank correlation with test accuracy",
        "n/a" if best is None else f"{best['metric']}: τ={fmt(best['kendall_tau'], 2)}")
    alpha_gap = gap[gap["metric"] == "alpha_mean"]["kendall_tau"] if len(gap) else []
    outputs.headline_number("τ(weights α, gap)", fmt(float(alpha_gap.iloc[0]), 2) if len(alpha_gap) else "n/a")


SERIES = StudyDefinition(
    name="series",
    title="Spectral metrics as predictors of test accuracy and the generalisation gap",
    description=(
        "Trains a grid of small networks on digits that differ in label noise, batch size and width, so that "
        "their test accuracies and generalisation gaps spread, and asks how well each spectral metric ranks "
        "them: Kendall's τ and Spearman's ρ of weight-based metrics (α, α̂, log norms; Martin, Peng & Mahoney "
        "2021) and Jacobian-based metrics (α, λ_max, trace, effective rank of the data Gram) with test "
        "accuracy and with the gap. None of the metrics uses test labels."),
    settings=_settings,
    runs=_runs,
    summarize=_summarize,
)
