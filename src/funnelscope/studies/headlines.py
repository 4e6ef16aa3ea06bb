"""Headline numbers that carry their caveats: the trend behind "A → B", and runs that did not fit their labels.

A headline "weights α 1.99 → 2.91" compares the two ends of an ordered sweep (label noise, batch size) and
reads as a trend even where the metric is not monotone in between. :func:`trend` writes the endpoints with
Spearman's rank correlation of the metric against the swept variable over every run,

.. math::

    \\rho = \\operatorname{corr}\\bigl(\\operatorname{rank}(v_i), \\operatorname{rank}(m_i)\\bigr),

ties as average ranks (Spearman, Am. J. Psychol. 15, 1904), and its two-sided p-value (exact by enumeration for
``n ≤ 8``: :func:`funnelscope.studies.series.spearman_p_value`). A comparison of runs that never fitted their
training labels (final train accuracy below :data:`~funnelscope.studies.experiment.FIT_THRESHOLD`, the runs
table's ``fitted`` column) measures an under-trained network rather than a memorised one: :func:`unfit_note`
says so beside the numbers and :func:`unfit_caution` names those runs for the report's warning box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from funnelscope.studies.common import fmt
from funnelscope.studies.experiment import FIT_THRESHOLD, is_fitted

__all__ = ["SweepCorrelation", "fitted_mask", "sweep_correlation", "trend", "unfit_caution", "unfit_note"]


@dataclass(frozen=True)
class SweepCorrelation:
    """Spearman's ρ of a metric against a swept variable.

    Attributes
    ----------
    rho, p : float
        The correlation and its two-sided p-value (NaN when fewer than three runs or a constant column).
    runs, levels : int
        The runs with a finite metric, and the distinct values of the variable among them.
    """

    rho: float
    p: float
    runs: int
    levels: int


def sweep_correlation(runs: pd.DataFrame, variable: str, metric: str) -> SweepCorrelation:
    """Spearman's ρ of ``runs[metric]`` against ``runs[variable]`` over the runs where both are finite.

    Examples
    --------
    >>> frame = pd.DataFrame({"noise": [0.0, 0.5, 1.0, 1.5], "alpha": [1.0, 3.0, 2.0, 4.0]})
    >>> result = sweep_correlation(frame, "noise", "alpha")
    >>> round(result.rho, 2), round(result.p, 3), result.runs, result.levels
    (0.8, 0.333, 4, 4)
    """
    from scipy.stats import spearmanr

    from funnelscope.studies.series import spearman_p_value

    if metric not in runs or variable not in runs:
        return SweepCorrelation(float("nan"), float("nan"), 0, 0)
    valid = runs[[variable, metric]].apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
    levels = int(valid[variable].nunique())
    if len(valid) < 3 or levels < 2 or valid[metric].nunique() < 2:
        return SweepCorrelation(float("nan"), float("nan"), len(valid), levels)
    x, y = valid[variable].to_numpy(np.float64), valid[metric].to_numpy(np.float64)
    result = spearmanr(x, y)
    rho = float(result.statistic)
    return SweepCorrelation(rho, spearman_p_value(x, y, rho, float(result.pvalue)), len(valid), levels)


def trend(runs: pd.DataFrame, variable: str, metric: str, *, levels_name: str) -> str:
    """``"A → B (ρ = …, p = …, n levels)"``: the metric's mean at the lowest and highest value of ``variable``
    and its rank correlation with ``variable`` over all runs (``levels_name`` names the variable's values, e.g.
    ``"noise levels"``; with several runs per level the count reads "12 runs at 6 noise levels").

    Examples
    --------
    >>> frame = pd.DataFrame({"noise": [0.0, 0.25, 0.5, 0.75, 1.0], "alpha": [1.99, 5.68, 3.0, 2.5, 2.91]})
    >>> trend(frame, "noise", "alpha", levels_name="noise levels")
    '1.99 → 2.91 (ρ = 0.10, p = 0.95, 5 noise levels)'
    """
    low = runs[runs[variable] == runs[variable].min()]
    high = runs[runs[variable] == runs[variable].max()]
    mean = (lambda frame: frame[metric].mean()) if metric in runs else (lambda frame: float("nan"))
    ends = f"{fmt(mean(low))} → {fmt(mean(high))}"
    result = sweep_correlation(runs, variable, metric)
    count = (f"{result.levels} {levels_name}" if result.runs == result.levels
             else f"{result.runs} runs at {result.levels} {levels_name}")
    if not np.isfinite(result.rho):
        return f"{ends} (no rank correlation: {count})" if result.runs else ends
    return f"{ends} (ρ = {result.rho:.2f}, p = {fmt(result.p, 2)}, {count})"


def fitted_mask(runs: pd.DataFrame) -> pd.Series:
    """Whether each run fitted its training labels: the runs table's ``fitted`` column, or (for a table written
    before the column existed) :func:`~funnelscope.studies.experiment.is_fitted` of its ``train_accuracy``."""
    if "fitted" in runs:
        return runs["fitted"].astype(bool)
    if "train_accuracy" not in runs:
        return pd.Series(True, index=runs.index)
    return runs["train_accuracy"].map(lambda value: is_fitted(float(value))).astype(bool)


def _unfit(runs: pd.DataFrame, describe: Callable[[pd.Series], str]) -> list[str]:
    unfit = runs[~fitted_mask(runs)]
    return [f"{fmt(float(row['train_accuracy']), 2)} at {describe(row)}" for _, row in unfit.iterrows()]


def unfit_note(runs: pd.DataFrame, describe: Callable[[pd.Series], str]) -> str:
    """``""`` when every run fitted its labels, else ``"; did not fit their training labels: train acc 0.54 at
    50% shuffled, …"`` to append beside a headline's numbers (``describe(row)`` names a run's setting).

    Examples
    --------
    >>> frame = pd.DataFrame({"noise": [0.0, 1.0], "train_accuracy": [1.0, 0.16]})
    >>> unfit_note(frame, lambda row: f"{row['noise']:.0%} shuffled")
    ' (did not fit their training labels: train acc 0.16 at 100% shuffled)'
    """
    unfit = _unfit(runs, describe)
    return f" (did not fit their training labels: train acc {', '.join(unfit)})" if unfit else ""


def unfit_caution(runs: pd.DataFrame, describe: Callable[[pd.Series], str]) -> str | None:
    """The report's warning naming every run that did not fit its training labels (None when all did)."""
    unfit = runs[~fitted_mask(runs)]
    if not len(unfit):
        return None
    names = ", ".join(f"{row['run_id']} ({describe(row)}, train accuracy {fmt(float(row['train_accuracy']), 2)})"
                      for _, row in unfit.iterrows())
    return (f"{len(unfit)} of {len(runs)} runs did not fit their training labels (final train accuracy below "
            f"{FIT_THRESHOLD:g}): {names}. Their spectra describe an under-trained network, not one that memorised "
            "its labels, so comparisons with them (the headline's included) can point the other way from a "
            "study whose runs all fit; train longer or wider (--set epochs=…, width=…).")
