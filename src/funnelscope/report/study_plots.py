"""Figures of the studies, in the style of :mod:`funnelscope.report.plots` (``styled``, ``new_figure``).

* :func:`plot_metric_panels`: metrics against one knob (label noise, batch size, …), every run a dot and the
  mean over seeds a line;
* :func:`plot_layer_alphas`: per-layer α against a knob, beside the layers' phases as a grid;
* :func:`plot_histories`: training curves (loss or accuracy per epoch) of several runs;
* :func:`plot_eigenvalue_strips`: sets of eigenvalues (Hessian top eigenvalues) side by side on a log axis;
* :func:`plot_esd_overlay`: several ESDs (a layer in two solutions) as log-binned step histograms;
* :func:`plot_loss_lines`: loss and accuracy along lines in weight space;
* :func:`plot_bars`: one horizontal bar panel per metric, one bar per variant (the ablation);
* :func:`plot_estimates`: estimated against true values, one colour per sample size (the calibration);
* :func:`plot_rank_scatter`: each metric against a target, with Kendall's τ and Spearman's ρ in the titles;
* :func:`plot_spectra_by_score`: many models' spectra (ESD and sorted eigenvalues), coloured by a score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from funnelscope.report.plots import ESD_COLOR, FIT_COLOR, PHASE_COLORS, new_figure, styled

__all__ = [
    "SERIES_COLORS",
    "plot_bars",
    "plot_eigenvalue_strips",
    "plot_esd_overlay",
    "plot_estimates",
    "plot_histories",
    "plot_layer_alphas",
    "plot_loss_lines",
    "plot_metric_panels",
    "plot_rank_scatter",
    "plot_spectra_by_score",
]

SERIES_COLORS = ("#4C72B0", "#C44E52", "#55A868", "#8172B3", "#DD8452", "#64B5CD", "#8C8C8C", "#937860")


def _grid(n: int, *, width: float = 3.6, height: float = 3.0, max_cols: int = 4) -> tuple[Figure, list]:
    cols = min(n, max_cols)
    rows = -(-n // cols)
    figure = Figure(figsize=(width * cols, height * rows), layout="constrained")
    return figure, [figure.add_subplot(rows, cols, i + 1) for i in range(n)]


@styled
def plot_metric_panels(
    runs: pd.DataFrame,
    x: str,
    metrics: Sequence[tuple[str, str]],
    *,
    xlabel: str,
    hue: str | None = None,
    logx: bool = False,
    title: str = "",
) -> Figure:
    """One panel per ``(column, label)`` in ``metrics``: the column against ``x``; dots per run, lines of means.

    With ``hue``, one line per value of that column (say, with and without BatchNorm).
    """
    shown = [(column, label) for column, label in metrics if column in runs and runs[column].notna().any()]
    figure, axes = _grid(max(len(shown), 1))
    groups = [(None, runs)] if hue is None else list(runs.groupby(hue, sort=True))
    for ax, (column, label) in zip(axes, shown, strict=False):
        for index, (value, frame) in enumerate(groups):
            color = SERIES_COLORS[index % len(SERIES_COLORS)]
            ax.scatter(frame[x], frame[column], s=14, color=color, alpha=0.6)
            means = frame.groupby(x, sort=True)[column].mean()
            ax.plot(means.index, means.values, color=color, lw=1.6, marker="o", ms=3,
                    label=None if hue is None else f"{hue}={value}")
        ax.set(xlabel=xlabel, ylabel=label, title=label)
        if logx:
            ax.set_xscale("log", base=2)
        if hue is not None:
            ax.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    return figure


@styled
def plot_layer_alphas(layers: pd.DataFrame, x: str, *, xlabel: str, logx: bool = False, title: str = "") -> Figure:
    """Left: α of each layer against ``x`` (mean over seeds), with the α = 2 and α = 6 lines between which a
    layer counts as well trained. Right: each layer's phase (most frequent over seeds) at each ``x``.

    ``layers`` has one row per (run, layer): columns ``x``, ``name``, ``alpha``, ``phase``.
    """
    figure, (alpha_ax, phase_ax) = new_figure(2, width=4.6, height=3.4)
    names = list(dict.fromkeys(layers["name"]))
    xs = sorted(layers[x].unique())
    for index, name in enumerate(names):
        means = layers[layers["name"] == name].groupby(x)["alpha"].mean()
        alpha_ax.plot(means.index, means.values, marker="o", ms=3, lw=1.6,
                      color=SERIES_COLORS[index % len(SERIES_COLORS)], label=f"layer {name}")
    for limit in (2.0, 6.0):
        alpha_ax.axhline(limit, color="black", ls=":", lw=1)
    alpha_ax.set(xlabel=xlabel, ylabel="α (power-law exponent of the ESD)", title="per-layer α")
    if logx:
        alpha_ax.set_xscale("log", base=2)
    alpha_ax.legend(fontsize=7)
    for row, name in enumerate(names):
        for column, value in enumerate(xs):
            phases = layers[(layers["name"] == name) & (layers[x] == value)]["phase"].dropna()
            phase = str(phases.mode().iloc[0]) if len(phases) else ""
            phase_ax.add_patch(_cell(column, row, PHASE_COLORS.get(phase, "#FFFFFF")))
            phase_ax.text(column, row, phase.replace("-", "-\n", 1) if len(phase) > 10 else phase,
                          ha="center", va="center", fontsize=6)
    phase_ax.set_xlim(-0.5, len(xs) - 0.5)
    phase_ax.set_ylim(len(names) - 0.5, -0.5)
    phase_ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
    phase_ax.set_yticks(range(len(names)), [f"layer {n}" for n in names])
    phase_ax.set(xlabel=xlabel, title="phase of each layer")
    phase_ax.grid(False)
    if title:
        figure.suptitle(title)
    return figure


def _cell(x: float, y: float, color: str) -> object:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=color, edgecolor="white", alpha=0.8)


@styled
def plot_histories(
    histories: dict[str, pd.DataFrame],
    *,
    columns: Sequence[tuple[str, str]] = (("train_loss", "training loss"), ("test_accuracy", "test accuracy")),
    logy: Sequence[bool] = (True, False),
    styles: dict[str, dict] | None = None,
    title: str = "",
) -> Figure:
    """Per-epoch curves of several runs, one panel per ``(column, label)``; ``styles`` maps a run label to
    matplotlib line options (colour, dashes) to group runs."""
    figure, axes = new_figure(len(columns), width=4.4, height=3.3)
    for index, (name, history) in enumerate(histories.items()):
        style = {"color": SERIES_COLORS[index % len(SERIES_COLORS)], **((styles or {}).get(name, {}))}
        for ax, (column, _) in zip(axes, columns, strict=True):
            if column in history:
                ax.plot(history["epoch"], history[column], lw=1.4, label=name, **style)
    for ax, (_, label), log in zip(axes, columns, logy, strict=False):
        ax.set(xlabel="epoch", ylabel=label, title=label)
        if log:
            ax.set_yscale("log")
    handles, labels = axes[-1].get_legend_handles_labels()
    if handles:  # beside the panels: every corner of a training curve is somebody's data
        figure.legend(handles, labels, loc="outside right center", fontsize=7, frameon=False)
    if title:
        figure.suptitle(title)
    return figure


@styled
def plot_eigenvalue_strips(groups: dict[str, np.ndarray], *, ylabel: str, title: str = "") -> Figure:
    """Each group's eigenvalues as a column of points on a log axis (the largest one ringed): outliers stand
    apart from the rest."""
    figure, (ax,) = new_figure(1, width=max(4.0, 0.9 * len(groups) + 1.5), height=3.3)
    for position, values in enumerate(groups.values()):
        values = np.sort(np.asarray(values, dtype=np.float64))[::-1]
        positive = values[values > 0]
        ax.scatter(np.full(len(positive), position), positive, color=ESD_COLOR, s=16, alpha=0.7)
        if len(positive):
            ax.scatter([position], positive[:1], facecolor="none", edgecolor=FIT_COLOR, s=60, lw=1.4)
    ax.set_xticks(range(len(groups)), list(groups), rotation=30 if len(groups) > 4 else 0, fontsize=7)
    ax.set_yscale("log")
    ax.set(ylabel=ylabel, title=title)
    return figure


@styled
def plot_esd_overlay(esds: dict[str, dict[str, np.ndarray]], *, title: str = "") -> Figure:
    """One panel per layer: the ESDs of several solutions as log-binned step histograms.

    ``esds`` maps a layer name to ``{solution label: eigenvalues}``.
    """
    figure, axes = _grid(len(esds), width=3.6, height=3.0, max_cols=3)
    for ax, (layer, series) in zip(axes, esds.items(), strict=True):
        for index, (label, values) in enumerate(series.items()):
            positive = np.asarray(values)[np.asarray(values) > 1e-8]
            if len(positive) > 1 and positive.max() > positive.min():
                bins = np.geomspace(positive.min(), positive.max(), min(40, max(8, len(positive) // 3)))
                ax.hist(positive, bins=bins, density=True, histtype="step", lw=1.6,
                        color=SERIES_COLORS[index % len(SERIES_COLORS)], label=label)
        ax.set(xscale="log", yscale="log", xlabel="eigenvalue λ = σ²", ylabel="density", title=f"layer {layer}")
        ax.legend(fontsize=7, loc="lower left")
    if title:
        figure.suptitle(title)
    return figure


@styled
def plot_loss_lines(lines: dict[str, pd.DataFrame], *, xlabel: str = "t", title: str = "",
                    marks: Sequence[float] = (0.0, 1.0)) -> Figure:
    """Loss (log scale) and accuracy along lines in weight space, one colour per line; solid = train,
    dashed = test when both are there. ``marks`` draws vertical lines at the solutions' positions."""
    figure, (loss_ax, accuracy_ax) = new_figure(2, width=4.4, height=3.3)
    for index, (label, frame) in enumerate(lines.items()):
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        for prefix, dashes in (("train_", "-"), ("test_", "--"), ("", "-")):
            if f"{prefix}loss" in frame:
                loss_ax.plot(frame["t"], frame[f"{prefix}loss"], ls=dashes, color=color, lw=1.5,
                             label=f"{label} {prefix.rstrip('_')}".strip())
            if f"{prefix}accuracy" in frame:
                accuracy_ax.plot(frame["t"], frame[f"{prefix}accuracy"], ls=dashes, color=color, lw=1.5)
    for ax in (loss_ax, accuracy_ax):
        for mark in marks:
            ax.axvline(mark, color="black", ls=":", lw=1)
        ax.set_xlabel(xlabel)
    loss_ax.set(yscale="log", ylabel="loss", title="loss along the line")
    accuracy_ax.set(ylabel="accuracy", title="accuracy along the line")
    loss_ax.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    return figure


@styled
def plot_bars(table: pd.DataFrame, label: str, metrics: Sequence[tuple[str, str]], *, reference: str | None = None,
              title: str = "") -> Figure:
    """One horizontal bar panel per ``(column, label)``, one bar per row of ``table`` (named by ``label``);
    the ``reference`` row is drawn in grey and its value marked by a dotted line."""
    shown = [(column, name) for column, name in metrics if column in table and table[column].notna().any()]
    figure, axes = _grid(len(shown), width=3.4, height=0.35 * len(table) + 1.6, max_cols=4)
    positions = np.arange(len(table))
    for ax, (column, name) in zip(axes, shown, strict=True):
        colors = ["#8C8C8C" if row == reference else ESD_COLOR for row in table[label]]
        ax.barh(positions, table[column], color=colors)
        if reference is not None and reference in set(table[label]):
            ax.axvline(float(table.loc[table[label] == reference, column].iloc[0]), color="black", ls=":", lw=1)
        ax.set_yticks(positions, table[label] if ax is axes[0] else [""] * len(table), fontsize=7)
        ax.invert_yaxis()
        ax.set(xlabel=name, title=name)
    if title:
        figure.suptitle(title)
    return figure


@styled
def plot_estimates(frame: pd.DataFrame, *, truth: str, estimate: str, group: str, xlabel: str, ylabel: str,
                   title: str = "") -> Figure:
    """Left: ``estimate`` against ``truth`` (median and interquartile range over repetitions), one colour
    per ``group`` (the sample size), the identity dotted. Right: the median absolute error against ``group``."""
    figure, (ax, error_ax) = new_figure(2, width=4.4, height=3.4)
    truths = np.sort(frame[truth].unique())
    ax.plot(truths, truths, color="black", ls=":", lw=1, label="estimate = truth")
    for index, (value, part) in enumerate(frame.groupby(group, sort=True)):
        stats = part.groupby(truth)[estimate].quantile([0.25, 0.5, 0.75]).unstack()
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        ax.errorbar(stats.index, stats[0.5], yerr=[stats[0.5] - stats[0.25], stats[0.75] - stats[0.5]],
                    color=color, marker="o", ms=3, lw=1.4, capsize=2, label=f"{group}={value}")
    ax.set(xlabel=xlabel, ylabel=ylabel, title="estimate vs truth")
    ax.legend(fontsize=7)
    errors = frame.assign(error=(frame[estimate] - frame[truth]).abs())
    for index, (value, part) in enumerate(errors.groupby(truth, sort=True)):
        medians = part.groupby(group)["error"].median()
        error_ax.plot(medians.index, medians.values, marker="o", ms=3, lw=1.4,
                      color=SERIES_COLORS[index % len(SERIES_COLORS)], label=f"{truth}={value:g}")
    error_ax.set(xscale="log", yscale="log", xlabel=group, ylabel=f"median |{estimate} − {truth}|",
                 title="error vs sample size")
    error_ax.legend(fontsize=7, ncols=2)
    if title:
        figure.suptitle(title)
    return figure


@styled
def plot_rank_scatter(runs: pd.DataFrame, metrics: Sequence[tuple[str, str]], target: str, *, target_label: str,
                      hue: str | None = None, labels: str | None = None, title: str = "") -> Figure:
    """Each metric against ``target`` over the runs, Kendall's τ and Spearman's ρ in each panel's title;
    colour by ``hue`` when given, each point annotated with its ``labels`` column when given."""
    from scipy.stats import kendalltau, spearmanr

    shown = [(c, n) for c, n in metrics if c in runs and runs[c].notna().sum() >= 3]
    figure, axes = _grid(max(len(shown), 1), width=3.2, height=2.9)
    hues = sorted(runs[hue].unique()) if hue is not None else [None]
    for ax, (column, name) in zip(axes, shown, strict=False):
        for index, value in enumerate(hues):
            part = runs if value is None else runs[runs[hue] == value]
            ax.scatter(part[column], part[target], s=16, alpha=0.75, color=SERIES_COLORS[index % len(SERIES_COLORS)],
                       label=None if value is None else f"{hue}={value:g}" if isinstance(value, float) else value)
            if labels is not None:
                for x, y, text in zip(part[column], part[target], part[labels], strict=True):
                    if np.isfinite(x) and np.isfinite(y):
                        ax.annotate(str(text), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6,
                                    alpha=0.8)
        if labels is not None:
            ax.margins(x=0.18, y=0.1)  # room for the labels of the outermost points
        valid = runs[[column, target]].dropna()
        tau = kendalltau(valid[column], valid[target]).statistic
        rho = spearmanr(valid[column], valid[target]).statistic
        ax.set(xlabel=name, ylabel=target_label, title=f"τ={tau:+.2f}  ρ={rho:+.2f}")
    if hue is not None and shown:
        axes[0].legend(fontsize=6)
    if title:
        figure.suptitle(title)
    return figure


@styled
def plot_spectra_by_score(spectra: dict[str, np.ndarray], scores: dict[str, float] | None = None, *,
                          score_label: str = "accuracy", xlabel: str = "eigenvalue λ", decades: float = 6.0,
                          title: str = "") -> Figure:
    """Many models' spectra on two panels, each model coloured by its score (viridis, with a colour bar):
    the ESD as log-binned step histograms over the top ``decades`` decades of the largest eigenvalue, and the
    sorted eigenvalues ``λ_i`` against their rank ``i`` (log-log). Without scores, one colour per model and a
    legend. With many models the colour reads as a trend where a legend of repeated colours would not.
    """
    import matplotlib as mpl

    figure, (esd_ax, scree_ax) = new_figure(2, width=4.6, height=3.6)
    values = {label: np.sort(np.asarray(v, dtype=np.float64)[np.asarray(v) > 0])[::-1] for label, v in spectra.items()}
    top = max((v[0] for v in values.values() if v.size), default=1.0)
    floor = top * 10.0 ** (-decades)
    known = {label: score for label, score in (scores or {}).items() if np.isfinite(score)}
    norm = mpl.colors.Normalize(min(known.values()), max(known.values())) if len(known) > 1 else None
    cmap = mpl.colormaps["viridis"]
    for index, (label, sorted_values) in enumerate(values.items()):
        color = cmap(norm(known[label])) if norm is not None and label in known else \
            SERIES_COLORS[index % len(SERIES_COLORS)]
        shown = sorted_values[sorted_values >= floor]
        if shown.size > 1 and shown[0] > shown[-1]:
            bins = np.geomspace(shown[-1], shown[0], min(40, max(8, shown.size // 3)))
            esd_ax.hist(shown, bins=bins, density=True, histtype="step", lw=1.3, color=color,
                        label=None if norm is not None else label)
        if sorted_values.size:
            scree_ax.plot(np.arange(1, sorted_values.size + 1), sorted_values, color=color, lw=1.3)
    esd_ax.set(xscale="log", yscale="log", xlabel=f"{xlabel} (top {decades:g} decades)", ylabel="density",
               title="ESD")
    scree_ax.set(xscale="log", yscale="log", xlabel="rank i", ylabel="λ_i", title="sorted spectrum")
    if norm is not None:
        figure.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=scree_ax, label=score_label)
    else:
        esd_ax.legend(fontsize=7, loc="lower left")
    if title:
        figure.suptitle(title)
    return figure
