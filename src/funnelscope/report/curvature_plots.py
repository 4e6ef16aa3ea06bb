"""Figures of the curvature probes (Hessian, landscape, linearity), in the style of :mod:`funnelscope.report.plots`.

* :func:`plot_hessian`: the spectral density (log scale) with the top eigenvalues, outliers marked, and the
  top eigenvalues of ``H`` beside those of its Gauss–Newton part.
* :func:`plot_hessian_comparison`: the top eigenvalues and densities of several models (say, large- and
  small-batch solutions) on shared axes.
* :func:`plot_landscape_line`: loss and accuracy along a line, one curve per data set, barrier marked.
* :func:`plot_landscape_plane`: contour lines and a surface of the loss on a plane, with models or a
  trajectory drawn on it.
* :func:`plot_linearity`: per activation, the fractions of always-active and always-inactive units and R².
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from funnelscope.probes.hessian import HessianSpectrum
from funnelscope.probes.landscape import LandscapeLine, LandscapePlane
from funnelscope.report.plots import EDGE_COLOR, ESD_COLOR, FIT_COLOR, new_figure, styled

__all__ = ["plot_hessian", "plot_hessian_comparison", "plot_landscape_line", "plot_landscape_plane",
           "plot_linearity"]

SERIES_COLORS = ("#4C72B0", "#C44E52", "#55A868", "#8172B3", "#DD8452", "#64B5CD", "#8C8C8C")
GN_COLOR = "#55A868"


@styled
def plot_hessian(spectrum: HessianSpectrum, *, title: str = "") -> Figure:
    """Density (if computed) with the top eigenvalues marked; top eigenvalues of ``H`` and ``G`` by rank.

    The bulk edge drawn (in both panels) is the outlier rule's ``spectrum.bulk_edge``: the eigenvalues marked as
    outliers are exactly those above it."""
    panels = 2 if spectrum.density is not None else 1
    figure, axes = new_figure(panels, width=4.4, height=3.3)
    outliers = spectrum.outliers or 0
    if spectrum.density is not None:
        ax = axes[0]
        density = spectrum.density
        floor = max(float(density.values.max()) * 1e-7, 1e-300)
        ax.fill_between(density.grid, floor, np.maximum(density.values, floor), color=ESD_COLOR, alpha=0.6,
                        label=f"SLQ density ({density.quadrature.nodes.shape[0]} probes)")
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
        for rank, value in enumerate(spectrum.top_eigenvalues):
            color = FIT_COLOR if rank < outliers else "#8C8C8C"
            ax.axvline(value, color=color, lw=0.8, ls="--",
                       label=(f"outliers ({outliers})" if rank == 0 and outliers else
                              ("top eigenvalues" if rank == outliers else None)))
        if np.isfinite(spectrum.bulk_edge):
            ax.axvline(spectrum.bulk_edge, color=EDGE_COLOR, lw=1.2, ls=":", label="bulk edge (outlier rule)")
        ax.set_xlabel("eigenvalue of the Hessian")
        ax.set_ylabel("density (log)")
        ax.legend(loc="upper right", fontsize=7)
    ax = axes[-1]
    ranks = np.arange(1, spectrum.top_eigenvalues.size + 1)
    ax.plot(ranks, spectrum.top_eigenvalues, "o-", color=ESD_COLOR, label="Hessian H")
    if spectrum.gauss_newton_top_eigenvalues.size:
        gn = spectrum.gauss_newton_top_eigenvalues
        ax.plot(np.arange(1, gn.size + 1), gn, "s--", color=GN_COLOR, mfc="none", label="Gauss–Newton G")
    if np.isfinite(spectrum.bulk_edge):
        at_least = "≥ " if spectrum.outliers_at_least else ""
        ax.axhline(spectrum.bulk_edge, color=EDGE_COLOR, lw=1.2, ls=":",
                   label=f"bulk edge: {at_least}{spectrum.outliers} outliers")
    if spectrum.bottom_eigenvalues.size:
        ax.plot([], [], " ", label=f"λ_min = {spectrum.bottom_eigenvalues[0]:.3g}")
    if np.isfinite(spectrum.trace):
        ax.plot([], [], " ", label=f"trace = {spectrum.trace:.3g} ± {spectrum.trace_stderr:.2g}")
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue")
    ax.set_xticks(ranks)
    positive = spectrum.top_eigenvalues[spectrum.top_eigenvalues > 0]
    if positive.size and positive.max() / positive.min() > 30:
        ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=7)
    figure.suptitle(title or f"Hessian of the loss (n={spectrum.n}, p={spectrum.dim}, {spectrum.method})")
    return figure


@styled
def plot_hessian_comparison(spectra: dict[str, HessianSpectrum], *, title: str = "") -> Figure:
    """Top eigenvalues of ``H`` (and ``G``) of several models by rank; their densities when computed."""
    with_density = {label: s for label, s in spectra.items() if s.density is not None}
    figure, axes = new_figure(2 if with_density else 1, width=4.4, height=3.3)
    ax = axes[0]
    for index, (label, spectrum) in enumerate(spectra.items()):
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        ranks = np.arange(1, spectrum.top_eigenvalues.size + 1)
        ax.plot(ranks, spectrum.top_eigenvalues, "o-", color=color, label=f"{label}: H")
        gn = spectrum.gauss_newton_top_eigenvalues
        if gn.size:
            ax.plot(np.arange(1, gn.size + 1), gn, "s--", color=color, mfc="none", alpha=0.7, label=f"{label}: G")
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    if with_density:
        ax = axes[1]
        for index, (label, spectrum) in enumerate(spectra.items()):
            if spectrum.density is None:
                continue
            density = spectrum.density
            floor = max(float(density.values.max()) * 1e-7, 1e-300)
            ax.plot(density.grid, np.maximum(density.values, floor), color=SERIES_COLORS[index % 7], lw=1,
                    label=label)
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue of the Hessian")
        ax.set_ylabel("density (log)")
        ax.legend(fontsize=7)
    figure.suptitle(title or "Hessian spectra")
    return figure


@styled
def plot_landscape_line(line: LandscapeLine, *, title: str = "", labels: tuple[str, str] = ("A", "B")) -> Figure:
    """Loss (left, log scale when it spans more than a decade) and accuracy (right) along ``t``."""
    figure, (loss_ax, acc_ax) = new_figure(2, width=4.4, height=3.2)
    frame = line.frame
    for index, (name, rows) in enumerate(frame.groupby("dataset", sort=False)):
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        text = f"{name}" + (f" (barrier {line.barrier[name]:.3g})" if name in line.barrier else "")
        loss_ax.plot(rows["t"], rows["loss"], "-", color=color, lw=1.6, label=text)
        if rows["accuracy"].notna().any():
            acc_ax.plot(rows["t"], rows["accuracy"], "-", color=color, lw=1.6, label=str(name))
    if frame["loss"].max() > 10 * max(frame["loss"].min(), 1e-12):
        loss_ax.set_yscale("log")
    ends = (0.0, 1.0) if line.kind == "interpolation" else (0.0,)
    for ax in (loss_ax, acc_ax):
        for end, label in zip(ends, labels, strict=False):
            ax.axvline(end, color="black", lw=0.8, ls=":")
            ax.annotate(label, (end, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom",
                        fontsize=8)
        ax.set_xlabel("t" + (" (θ = (1−t)θ_A + tθ_B)" if line.kind == "interpolation" else " (θ = θ_A + t·d)"))
    loss_ax.set_ylabel("loss")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(-0.02, 1.02)
    loss_ax.legend(fontsize=7)
    acc_ax.legend(fontsize=7, loc="lower center")
    kind = "interpolation" if line.kind == "interpolation" else "filter-normalised random direction"
    figure.suptitle(title or f"loss along a line ({kind}, BatchNorm: {line.bn})")
    return figure


@styled
def plot_landscape_plane(plane: LandscapePlane, *, dataset: str | None = None, title: str = "") -> Figure:
    """Contours of the loss (left, with the models or trajectory drawn on the plane) and its surface (right)."""
    loss = plane.grid(dataset, "loss")
    name = dataset or str(plane.frame["dataset"].iloc[0])
    figure = Figure(figsize=(9.2, 3.9), layout="constrained")
    contour_ax = figure.add_subplot(1, 2, 1)
    surface_ax = figure.add_subplot(1, 2, 2, projection="3d")
    xx, yy = np.meshgrid(plane.x, plane.y)
    log_loss = np.log10(np.maximum(loss, 1e-12))
    levels = np.linspace(log_loss.min(), np.percentile(log_loss, 98), 20)
    filled = contour_ax.contourf(xx, yy, log_loss, levels=levels, cmap="viridis", extend="max")
    contour_ax.contour(xx, yy, log_loss, levels=levels, colors="white", linewidths=0.4, alpha=0.6)
    figure.colorbar(filled, ax=contour_ax, label=f"log₁₀ loss ({name})", shrink=0.9)
    markers = plane.markers
    if len(markers):
        trail = markers[markers["label"].str.startswith("checkpoint")]
        points = markers[~markers["label"].str.startswith("checkpoint")]
        if len(trail):
            contour_ax.plot(trail["x"], trail["y"], "o-", color=FIT_COLOR, ms=3, lw=1, label="trajectory")
            contour_ax.legend(fontsize=7, loc="upper right")
        for row in points.itertuples():
            contour_ax.plot(row.x, row.y, "o", color=FIT_COLOR, ms=5)
            contour_ax.annotate(row.label, (row.x, row.y), xytext=(4, 4), textcoords="offset points",
                                color="white", fontsize=9, fontweight="bold")
    elif plane.x[0] < 0 < plane.x[-1]:
        contour_ax.plot(0, 0, "*", color=FIT_COLOR, mec="white", ms=12)
        contour_ax.annotate("model", (0, 0), xytext=(6, 6), textcoords="offset points", color="white", fontsize=8,
                            fontweight="bold")
    contour_ax.grid(False)
    axis_names = {"filter": ("d₁ (filter-normalised)", "d₂ (filter-normalised)"), "pca": ("PC 1", "PC 2"),
                  "models": ("towards B", "towards C (orthogonalised)")}[plane.directions]
    contour_ax.set_xlabel(axis_names[0])
    contour_ax.set_ylabel(axis_names[1])
    contour_ax.set_aspect("auto")
    clipped = np.minimum(log_loss, levels[-1])  # the contour's scale: log₁₀ loss, the top 2 % clipped
    surface_ax.plot_surface(xx, yy, clipped, cmap="viridis", vmin=levels[0], vmax=levels[-1], linewidth=0,
                            antialiased=True, alpha=0.95)
    surface_ax.set_xlabel(axis_names[0], fontsize=7, labelpad=-2)
    surface_ax.set_ylabel(axis_names[1], fontsize=7, labelpad=-2)
    surface_ax.set_zlabel("log₁₀ loss", fontsize=7, labelpad=-2)
    surface_ax.tick_params(labelsize=6, pad=0)
    surface_ax.set_box_aspect(None, zoom=0.88)
    surface_ax.view_init(elev=35, azim=-60)
    figure.suptitle(title or f"loss on a plane ({plane.directions} directions, {len(plane.x)}×{len(plane.y)} "
                             f"points, BatchNorm: {plane.bn})")
    return figure


@styled
def plot_linearity(frame: pd.DataFrame, *, title: str = "") -> Figure:
    """Per activation (in execution order): always-active and always-inactive fractions (bars) and R² (dots)."""
    height = max(2.8, 0.32 * len(frame) + 1.3)
    figure, (ax,) = new_figure(1, width=6.0, height=height)
    positions = np.arange(len(frame))
    ax.barh(positions - 0.2, frame["always_active"], height=0.38, color=ESD_COLOR, label="always active")
    ax.barh(positions + 0.2, frame["always_inactive"], height=0.38, color="#8C8C8C", label="always inactive")
    ax.plot(frame["r2"], positions, "D", color=FIT_COLOR, ms=5, label="R² of the best affine map")
    ax.plot(frame["mean_active"], positions, "|", color="black", ms=12, mew=1.5, label="mean active")
    ax.set_yticks(positions, [f"{layer} ({kind})" for layer, kind in zip(frame["layer"], frame["kind"],
                                                                          strict=True)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("fraction of units / R²")
    figure.legend(loc="outside lower center", ncols=4, fontsize=7)
    figure.suptitle(title or "layer linearity")
    return figure
