"""Figures, all drawn in one style through ``matplotlib.figure.Figure`` (no pyplot, no global backend state).

* :func:`plot_layer_esd`: a layer's ESD on log-log axes with the fitted power-law tail, beside the linear
  ESD of ``X = WᵀW/N`` with the fitted Marchenko–Pastur density and its bulk edge.
* :func:`plot_weights_overview`: α and α̂ of every layer, coloured by phase.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from funnelscope.spectra.marchenko_pastur import MarchenkoPasturFit, marchenko_pastur_pdf
from funnelscope.spectra.powerlaw import PowerLawFit

__all__ = ["PHASE_COLORS", "new_figure", "plot_layer_esd", "plot_weights_overview", "save_figure", "styled"]

ESD_COLOR = "#4C72B0"
FIT_COLOR = "#C44E52"
EDGE_COLOR = "#DD8452"
PHASE_COLORS = {
    "random-like": "#8C8C8C",
    "bleeding-out": "#64B5CD",
    "bulk+spikes": "#4C72B0",
    "bulk-decay": "#55A868",
    "heavy-tailed": "#C44E52",
    "rank-collapse": "#8172B3",
}
_STYLE = {
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "font.size": 9,
    "axes.titlesize": 10,
    "legend.frameon": False,
}


def styled(plot: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw a figure function's output in the project's style (a local rc context, nothing global)."""

    @functools.wraps(plot)
    def wrapper(*args: object, **kwargs: object) -> Figure:
        import matplotlib

        with matplotlib.rc_context(_STYLE):
            return plot(*args, **kwargs)

    return wrapper


def new_figure(ncols: int = 1, *, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list]:
    """A figure with ``ncols`` axes side by side (call inside a :func:`styled` function)."""
    figure = Figure(figsize=(width * ncols, height), layout="constrained")
    return figure, [figure.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def save_figure(figure: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Write a figure (format from the suffix: .png or .svg) and return its path."""
    path = Path(path)
    figure.savefig(path, dpi=dpi)
    return path


@styled
def plot_layer_esd(
    eigenvalues: np.ndarray,
    *,
    fit: PowerLawFit | None = None,
    marchenko_pastur: MarchenkoPasturFit | None = None,
    N: int | None = None,
    title: str = "",
) -> Figure:
    """The ESD of one layer: log-log density with the fitted tail, and linear density with Marchenko–Pastur.

    The log-log panel shows the density of λ in logarithmic bins and, from ``xmin`` on, the fitted
    ``p(λ) = (n_tail/n)(α−1)/xmin · (λ/xmin)^−α`` (scaled by the tail's share of the eigenvalues so that it
    sits on the histogram). The linear panel shows ``X = λ/N`` with the Marchenko–Pastur density of the fitted
    ``σ²``, the bulk edge ``λ₊`` and ``num_spikes`` (the eigenvalues above ``λ₊``, the table's column) in the
    legend; the axis stops at ``2λ₊`` (said in its label) when the spikes reach further.
    """
    values = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    # as WeightWatcher: the log-log panel starts two decades below xmin, where the tail's story is
    floor = fit.xmin / 100 if fit is not None else 0.004 * values[-1]
    positive = values[values > floor]
    figure, (log_ax, lin_ax) = new_figure(2)
    if len(positive) > 1 and positive[-1] > positive[0]:
        bins = np.geomspace(positive[0], positive[-1], min(100, max(10, len(positive) // 5)))
        log_ax.hist(positive, bins=bins, density=True, color=ESD_COLOR, alpha=0.75, label="ESD")
        log_ax.set_xscale("log")
        log_ax.set_yscale("log")
    if fit is not None:
        grid = np.geomspace(fit.xmin, fit.xmax, 100)
        share = fit.n_tail / len(positive) if len(positive) else 1.0  # the histogram's own normalisation
        density = share * (fit.alpha - 1) / fit.xmin * (grid / fit.xmin) ** (-fit.alpha)
        log_ax.plot(grid, density, color=FIT_COLOR, lw=2, label=f"power law α={fit.alpha:.2f}")
        log_ax.axvline(fit.xmin, color=FIT_COLOR, ls=":", lw=1, label=f"xmin={fit.xmin:.3g}")
    log_ax.set_xlabel(f"eigenvalue λ = σ² (above {floor:.2g})")
    log_ax.set_ylabel("density")
    log_ax.legend(loc="lower left")

    scale = float(N) if N else 1.0
    x = values / scale
    if marchenko_pastur is not None:
        upper = min(x[-1], 2.0 * marchenko_pastur.bulk_max)
        shown = x[x <= upper]
        lin_ax.hist(shown, bins=60, density=True, color=ESD_COLOR, alpha=0.75, label="ESD")
        grid = np.linspace(marchenko_pastur.bulk_min, marchenko_pastur.bulk_max, 400)[1:-1]
        curve = marchenko_pastur_pdf(grid, sigma2=marchenko_pastur.sigma2, Q=marchenko_pastur.Q)
        # the histogram is normalised over the shown eigenvalues: scale the law to the same mass
        lin_ax.plot(grid, curve * len(x) / max(len(shown), 1), color=EDGE_COLOR, lw=2, label="Marchenko–Pastur")
        lin_ax.axvline(marchenko_pastur.bulk_max, color=EDGE_COLOR, ls=":", lw=1,
                       label=f"bulk edge λ₊ = {marchenko_pastur.bulk_max:.3g}")
        # the count above the edge under the table's name (num_spikes), not the count cut off the plot
        lin_ax.plot([], [], " ", label=f"num_spikes = {marchenko_pastur.num_spikes} (above λ₊)")
    else:
        lin_ax.hist(x, bins=60, density=True, color=ESD_COLOR, alpha=0.75, label="ESD")
    cut = marchenko_pastur is not None and x[-1] > upper
    lin_ax.set_xlabel(("eigenvalue of X = WᵀW/N" if N else "eigenvalue") + (" (shown up to 2λ₊)" if cut else ""))
    lin_ax.set_ylabel("density")
    lin_ax.legend(loc="upper right")
    if title:
        figure.suptitle(title)
    return figure


@styled
def plot_weights_overview(details: pd.DataFrame, *, title: str = "") -> Figure:
    """α (left) and α̂ = α·log₁₀λ_max (right) per layer, in model order, coloured by phase, with the
    α = 2 and α = 6 lines between which WeightWatcher calls a layer well trained."""
    ok = details[details["status"] == "success"].reset_index(drop=True)
    height = max(3.0, 0.16 * len(ok) + 1.2)
    figure, (alpha_ax, weighted_ax) = new_figure(2, width=4.6, height=height)
    colors = [PHASE_COLORS.get(str(phase), ESD_COLOR) for phase in ok.get("phase", [])]
    positions = np.arange(len(ok))
    alpha_ax.barh(positions, ok["alpha"], color=colors)
    weighted_ax.barh(positions, ok["alpha_weighted"], color=colors)
    for limit in (2.0, 6.0):
        alpha_ax.axvline(limit, color="black", ls=":", lw=1)
    for ax, label in ((alpha_ax, "α (power-law exponent)"), (weighted_ax, "α̂ = α·log₁₀ λ_max")):
        ax.set_yticks(positions, ok["name"], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel(label)
    weighted_ax.set_yticklabels([])
    phases = [p for p in PHASE_COLORS if p in set(ok.get("phase", []))]
    if phases:
        from matplotlib.patches import Patch

        handles = [Patch(color=PHASE_COLORS[phase], label=phase) for phase in phases]
        figure.legend(handles=handles, loc="outside upper center", ncols=len(handles))
    if title:
        figure.suptitle(title)
    return figure
