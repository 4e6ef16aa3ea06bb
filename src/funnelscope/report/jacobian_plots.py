"""Figures of the Jacobian probe, in the style of :mod:`funnelscope.report.plots`.

:func:`plot_jacobian` draws, side by side,

1. the ESD of ``M = 𝒥𝒥ᵀ`` on log-log axes with its fitted power-law tail (and, for the Lanczos solver, the
   quadrature density it came from);
2. the distribution of the diagonal ``M_ii = ‖J(x_i)‖_F²`` on a logarithmic axis, split into correctly and
   wrongly classified examples when there are labels, with its own fitted tail;
3. the structure between examples: with ``keep_gram``, the Jacobian cosine ``M_ij/√(M_ii M_jj)`` as an image,
   examples ordered by class and class boundaries marked; otherwise, with labels, the mean ``M_ij`` over each
   pair of classes. Without either, the panel is left out.

:func:`plot_jacobian_comparison` overlays several models on the same data (say, trained on true and on
shuffled labels): their ESDs, their sorted spectra ``λ_i/λ_1`` against the rank ``i`` (a funneled landscape
falls off steeply after a few directions, a flat one decays slowly) and their diagonals.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from funnelscope.probes.jacobian import JacobianSpectrum
from funnelscope.report.plots import EDGE_COLOR, ESD_COLOR, FIT_COLOR, new_figure, styled
from funnelscope.spectra.powerlaw import PowerLawFit

__all__ = ["plot_jacobian", "plot_jacobian_comparison"]

SERIES_COLORS = ("#4C72B0", "#C44E52", "#55A868", "#8172B3", "#DD8452", "#64B5CD", "#8C8C8C")

WRONG_COLOR = "#DD8452"
_MAX_IMAGE = 600  # examples drawn in the gram image (evenly subsampled in class order beyond this)


@styled
def plot_jacobian(spectrum: JacobianSpectrum, *, title: str = "") -> Figure:
    """The ESD with its tail fit, the diagonal's distribution, and the Gram (or class-pair) structure.

    Parameters
    ----------
    spectrum : JacobianSpectrum
        From :func:`funnelscope.probes.jacobian.jacobian_spectrum`.
    title : str
        Figure title; default: the route and the sizes.

    Returns
    -------
    matplotlib.figure.Figure
    """
    structure = spectrum.gram is not None or spectrum.class_gram is not None
    figure, axes = new_figure(3 if structure else 2, width=4.0, height=3.3)
    _draw_esd(axes[0], spectrum)
    _draw_diagonal(axes[1], spectrum)
    if spectrum.gram is not None:
        _draw_gram(figure, axes[2], spectrum)
    elif spectrum.class_gram is not None:
        _draw_class_gram(figure, axes[2], spectrum)
    summary = spectrum.summary()
    default = (f"Jacobian Gram ({spectrum.output}, wrt {spectrum.wrt}): {summary['method']}, "
               f"n={spectrum.n}, k={spectrum.k}, d={spectrum.d}")
    figure.suptitle(title or default)
    return figure


def _log_bins(values: np.ndarray) -> np.ndarray | None:
    """About 2√n logarithmic bins (10 to 60) spanning the values."""
    if values.size < 2 or values.max() <= values.min():
        return None
    return np.geomspace(values.min(), values.max(), int(np.clip(2 * np.sqrt(values.size), 10, 60)) + 1)


def _draw_tail(ax: object, fit: PowerLawFit | None, total: int) -> None:
    """The fitted ``p(λ) = (α−1)/xmin·(λ/xmin)^−α`` scaled by the tail's share of the values shown."""
    if fit is None or total == 0:
        return
    grid = np.geomspace(fit.xmin, fit.xmax, 100)
    share = fit.n_tail / total
    ax.plot(grid, share * fit.pdf(grid), color=FIT_COLOR, lw=2, label=f"power law α={fit.alpha:.2f}")
    ax.axvline(fit.xmin, color=FIT_COLOR, ls=":", lw=1, label=f"xmin={fit.xmin:.3g}")


def _draw_esd(ax: object, spectrum: JacobianSpectrum) -> None:
    values = spectrum.eigenvalues
    shown = values[values > spectrum.zero_tolerance]
    bins = _log_bins(shown)
    if bins is not None:
        ax.hist(shown, bins=bins, density=True, color=ESD_COLOR, alpha=0.75, label=f"ESD ({shown.size} values)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        if spectrum.density is not None:
            grid = np.geomspace(bins[0], bins[-1], 400)
            ax.plot(grid, _log_kernel_density(spectrum, grid) * spectrum.density.dim / shown.size,
                    color=EDGE_COLOR, lw=1.2, label="quadrature density")
            ax.set_ylim(bottom=0.1 * _smallest_bar(ax))
    _draw_tail(ax, spectrum.fit, shown.size)
    zeros = values.size - shown.size
    if zeros:
        ax.plot([], [], " ", label=f"{zeros} numerical zeros (≤ {spectrum.zero_tolerance:.1e}) not shown")
    ax.set_xlabel("eigenvalue λ of M = JJᵀ")
    ax.set_ylabel("density")
    ax.set_title("ESD")
    ax.legend(loc="lower left", fontsize=7)


def _log_kernel_density(spectrum: JacobianSpectrum, grid: np.ndarray, *, width: float = 0.15) -> np.ndarray:
    """The quadrature's point masses ``τ²/probes`` at ``θ``, each broadened by a Gaussian of ``width`` in
    ``ln λ`` (so that it reads right on a log axis), as a density in ``λ``."""
    nodes = spectrum.density.nodes.reshape(-1)
    weights = spectrum.density.weights.reshape(-1) / spectrum.density.nodes.shape[0]
    keep = nodes > spectrum.zero_tolerance
    z = (np.log(grid)[:, None] - np.log(nodes[keep])[None, :]) / width
    return (np.exp(-0.5 * z**2) @ weights[keep]) / (width * np.sqrt(2 * np.pi) * grid)


def _smallest_bar(ax: object) -> float:
    heights = [patch.get_height() for patch in ax.patches if patch.get_height() > 0]
    return min(heights) if heights else 1e-12


def _draw_diagonal(ax: object, spectrum: JacobianSpectrum) -> None:
    """Counts per logarithmic bin (a lone example reads as 1, not as a tall density spike)."""
    diagonal = spectrum.diagonal
    positive = diagonal > 0
    bins = _log_bins(diagonal[positive])
    if bins is None:
        ax.text(0.5, 0.5, "diagonal constant or zero", ha="center", transform=ax.transAxes)
        return
    if spectrum.labels is not None:
        correct = (spectrum.predicted == spectrum.labels)[positive]
        ax.hist([diagonal[positive][correct], diagonal[positive][~correct]], bins=bins, stacked=True,
                color=[ESD_COLOR, WRONG_COLOR], alpha=0.8,
                label=[f"correct ({correct.sum()})", f"misclassified ({(~correct).sum()})"])
    else:
        ax.hist(diagonal[positive], bins=bins, color=ESD_COLOR, alpha=0.8, label=f"{positive.sum()} examples")
    fit = spectrum.diagonal_fit
    if fit is not None:  # expected count in a bin of log-width w around x: n_tail · pdf(x) · x · w
        grid = np.geomspace(fit.xmin, fit.xmax, 100)
        expected = fit.n_tail * fit.pdf(grid) * grid * np.log(bins[1] / bins[0])
        ax.plot(grid, expected, color=FIT_COLOR, lw=2, label=f"power law α={fit.alpha:.2f}")
        ax.axvline(fit.xmin, color=FIT_COLOR, ls=":", lw=1, label=f"xmin={fit.xmin:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)
    ax.set_xlabel("M_ii = ‖J(x_i)‖²_F")
    ax.set_ylabel("examples per bin")
    ax.set_title("diagonal (per-example sensitivity)")
    ax.legend(loc="upper left", fontsize=7)


def _draw_gram(figure: Figure, ax: object, spectrum: JacobianSpectrum) -> None:
    gram = spectrum.gram
    order = np.argsort(spectrum.labels, kind="stable") if spectrum.labels is not None else np.arange(spectrum.n)
    if order.size > _MAX_IMAGE:
        order = order[np.linspace(0, order.size - 1, _MAX_IMAGE).round().astype(int)]
    scale = np.sqrt(np.clip(np.diag(gram)[order], np.finfo(np.float64).tiny, None))
    cosine = gram[np.ix_(order, order)] / np.outer(scale, scale)
    image = ax.imshow(cosine, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8, label="M_ij / √(M_ii M_jj)")
    if spectrum.labels is not None:
        sorted_labels = spectrum.labels[order]
        edges = np.flatnonzero(np.diff(sorted_labels)) + 0.5
        for edge in edges:
            ax.axhline(edge, color="black", lw=0.6)
            ax.axvline(edge, color="black", lw=0.6)
        starts = np.concatenate([[-0.5], edges, [order.size - 0.5]])
        centres = (starts[:-1] + starts[1:]) / 2
        classes = sorted_labels[np.concatenate([[0], (edges + 0.5).astype(int)])]
        if classes.size <= 20:
            ax.set_xticks(centres, [str(c) for c in classes], fontsize=7)
            ax.set_yticks(centres, [str(c) for c in classes], fontsize=7)
        ax.set_xlabel("examples by class")
    else:
        ax.set_xlabel("examples (input order)")
    ax.grid(False)
    shown = f", {order.size} of {spectrum.n} shown" if order.size < spectrum.n else ""
    ax.set_title(f"Jacobian cosine{shown}")


def _draw_class_gram(figure: Figure, ax: object, spectrum: JacobianSpectrum) -> None:
    counts = np.array([np.sum(spectrum.labels == c) for c in spectrum.classes], dtype=np.float64)
    mean = spectrum.class_gram / np.outer(counts, counts)
    image = ax.imshow(mean, cmap="viridis", interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8, label="mean M_ij over the class pair")
    if spectrum.classes.size <= 20:
        ticks = np.arange(spectrum.classes.size)
        ax.set_xticks(ticks, [str(c) for c in spectrum.classes], fontsize=7)
        ax.set_yticks(ticks, [str(c) for c in spectrum.classes], fontsize=7)
    ax.set_xlabel("class")
    ax.set_ylabel("class")
    ax.grid(False)
    ax.set_title("class-pair mean of M_ij")


@styled
def plot_jacobian_comparison(spectra: dict[str, JacobianSpectrum], *, title: str = "") -> Figure:
    """Several models' Jacobian spectra on one set of axes: ESD, scree (``λ_i/λ_1`` vs ``i``) and diagonal.

    Parameters
    ----------
    spectra : dict of str to JacobianSpectrum
        Label → result, drawn in order (at most seven colours, then they repeat).
    title : str
        Figure title; default: the sizes of the first result.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not spectra:
        raise ValueError("plot_jacobian_comparison needs at least one spectrum")
    figure, (esd_ax, scree_ax, diagonal_ax) = new_figure(3, width=4.0, height=3.3)
    peak = 1.0
    for index, (label, spectrum) in enumerate(spectra.items()):
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        values = spectrum.eigenvalues[spectrum.eigenvalues > spectrum.zero_tolerance]
        alpha = f"α={spectrum.fit.alpha:.2f}" if spectrum.fit is not None else "no fit"
        bins = _log_bins(values)
        if bins is not None:
            esd_ax.hist(values, bins=bins, density=True, histtype="step", lw=1.6, color=color,
                        label=f"{label} ({alpha})")
        if spectrum.fit is not None:
            fit = spectrum.fit
            grid = np.geomspace(fit.xmin, fit.xmax, 100)
            esd_ax.plot(grid, fit.n_tail / values.size * fit.pdf(grid), color=color, ls="--", lw=1)
        if values.size:
            scree_ax.plot(np.arange(1, values.size + 1), values / values[0], color=color, lw=1.6,
                          label=f"{label} (λ₁={values[0]:.3g})")
        positive = spectrum.diagonal[spectrum.diagonal > 0]
        diagonal_bins = _log_bins(positive)
        if diagonal_bins is not None:
            counts, _, _ = diagonal_ax.hist(positive, bins=diagonal_bins, histtype="step", lw=1.6, color=color,
                                            label=f"{label} (median {np.median(positive):.3g})")
            peak = max(peak, float(np.max(counts)))
    esd_ax.set(xscale="log", yscale="log", xlabel="eigenvalue λ of M = JJᵀ", ylabel="density",
               title="ESD (dashed: fitted tails)")
    scree_ax.set(xscale="log", yscale="log", xlabel="rank i", ylabel="λ_i / λ_1", title="sorted spectrum")
    diagonal_ax.set(xscale="log", yscale="log", xlabel="M_ii = ‖J(x_i)‖²_F", ylabel="examples per bin",
                    title="diagonal (per-example sensitivity)")
    # headroom above the tallest bar for the legend: it takes about 0.07 of the axis height per entry
    legend_share = min(0.6, 0.1 + 0.07 * len(spectra))
    diagonal_ax.set_ylim(0.5, 0.5 * (2 * peak) ** (1 / (1 - legend_share)))
    esd_ax.legend(loc="upper right", fontsize=7)  # the ESDs fall to the right: that corner stays empty
    scree_ax.legend(loc="lower left", fontsize=7)
    diagonal_ax.legend(loc="upper left", fontsize=7)
    first = next(iter(spectra.values()))
    figure.suptitle(title or f"Jacobian Gram ({first.output}): n={first.n}, k={first.k}, d={first.d}")
    return figure
