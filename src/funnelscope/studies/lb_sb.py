"""The ``lb-sb`` study: a large-batch solution continued with small batches.

Keskar et al. (ICLR 2017) contrast large-batch (LB) and small-batch (SB) solutions; Martin & Mahoney (JMLR
2021, Section 7) see the ESDs become heavier-tailed as the batch shrinks. Here the SB solution *starts from*
the LB one: the same network is trained with a large batch, then trained further with a small batch. The
study compares the two solutions' weight ESDs (per layer), Jacobian Grams and Hessian top eigenvalues, and —
when :func:`funnelscope.landscape_line` is available — the loss along the line through both,
``θ(t) = (1−t)θ_LB + tθ_SB`` for ``t ∈ [−0.5, 1.5]`` (interpolation inside ``[0, 1]``, extrapolation
outside), and along random filter-normalised lines outward from each solution (Li et al., NeurIPS 2018).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from funnelscope.studies.common import (
    base_settings,
    fmt,
    hessian_groups,
    histories,
    recompute_jacobians,
    training_spec,
)
from funnelscope.studies.study import StudyDefinition, StudyOutputs

__all__ = ["LB_SB"]


def _settings(size: str) -> dict[str, Any]:
    epochs = {"tiny": 3, "quick": 15, "demo": 30, "full": 60}[size]
    return {**base_settings(size, epochs=epochs, lr=0.05, batch_size=512 if size != "tiny" else 128),
            "continue_batch_size": 16, "continue_epochs": {"tiny": 1, "quick": 5, "demo": 10, "full": 20}[size],
            "continue_lr": 0.02, "line_points": 11 if size == "tiny" else 31, "line_n": 300 if size == "tiny" else 0}


def _runs(settings: dict[str, Any]) -> list[dict[str, Any]]:
    seed = settings["seed"]
    return [
        training_spec(settings, "large_batch", seed=seed, group="LB", continue_batch_size=0, continue_epochs=0),
        training_spec(settings, "large_then_small_batch", seed=seed, group="LB→SB"),
    ]


def _lines(directory: Any, runs: pd.DataFrame, settings: dict[str, Any]) -> tuple[dict[str, pd.DataFrame], float]:
    from funnelscope.probes.landscape import landscape_line
    from funnelscope.studies.data import subsample
    from funnelscope.studies.experiment import load_run_model, run_data, spec_from_row

    train, test = run_data(spec_from_row(runs.set_index("run_id").loc["large_batch"]))
    limit = settings["line_n"] or None
    train, test = subsample(train, limit, seed=settings["seed"]), subsample(test, limit, seed=settings["seed"])
    lb = load_run_model(directory / "runs" / "large_batch")
    sb = load_run_model(directory / "runs" / "large_then_small_batch")
    data = {"train": (train.x, train.y), "test": (test.x, test.y)}
    options = {"points": settings["line_points"], "seed": settings["seed"], "workers": 1}

    def both(model_a: Any, model_b: Any, t: tuple[float, float]) -> tuple[pd.DataFrame, float]:
        line = landscape_line(model_a, data, other=model_b, t=t, **options)
        frame = line.frame.pivot_table(index="t", columns="dataset", values=["loss", "accuracy"])
        frame.columns = [f"{dataset}_{metric}" for metric, dataset in frame.columns]
        return frame.reset_index(), float(line.barrier.get("train", math.nan))

    between, barrier = both(lb, sb, (-0.5, 1.5))
    lines = {"LB → SB": between, "outward from LB": both(lb, None, (0.0, 1.0))[0],
             "outward from SB": both(sb, None, (0.0, 1.0))[0]}
    return lines, barrier


def _summarize(runs: pd.DataFrame, settings: dict[str, Any], outputs: StudyOutputs) -> None:
    from funnelscope.probes.weights import weight_spectra
    from funnelscope.report.jacobian_plots import plot_jacobian_comparison
    from funnelscope.report.study_plots import (
        plot_eigenvalue_strips,
        plot_esd_overlay,
        plot_histories,
        plot_loss_lines,
    )
    from funnelscope.studies.experiment import load_run_model

    directory = outputs.directory
    runs = runs.set_index("run_id").loc[["large_batch", "large_then_small_batch"]].reset_index()
    labels = ["LB", "LB→SB"]
    esds: dict[str, dict[str, Any]] = {}
    for label, run_id in zip(labels, runs["run_id"], strict=True):
        for spectrum in weight_spectra(load_run_model(directory / "runs" / run_id), device="cpu"):
            if spectrum.ok:
                esds.setdefault(str(spectrum.row["name"]), {})[f"{label} (α={spectrum.row['alpha']:.2f})"] = \
                    spectrum.eigenvalues
    outputs.figure(plot_esd_overlay(esds, title="layer ESDs: large batch vs continued with small batches"),
                   "weight_esds", section="Spectra", title="Layer ESDs of both solutions",
                   caption="Each panel is one layer's ESD (eigenvalues of WᵀW) in the large-batch solution and after "
                           "continuing it with small batches; the legend gives each fitted α. A heavier tail (smaller "
                           "α) after small batches is the trend Martin & Mahoney (2021) report.")
    spectra = recompute_jacobians(directory, runs, labels)
    if spectra:
        outputs.figure(plot_jacobian_comparison(spectra, title="Jacobian Gram on test inputs: LB vs LB→SB"),
                       "jacobian_comparison", section="Spectra", title="Jacobian ESDs of both solutions",
                       caption="ESD, sorted spectrum λ_i/λ_1 and diagonal M_ii of the data Jacobian Gram of each "
                               "solution on the same test inputs.")
    hessian = hessian_groups(directory, runs, labels)
    if hessian:
        outputs.figure(plot_eigenvalue_strips(hessian, ylabel="Hessian eigenvalue",
                                              title="top Hessian eigenvalues"),
                       "hessian_top", section="Spectra", title="Hessian top eigenvalues of both solutions",
                       caption="The largest eigenvalues of the training-loss Hessian (ringed: λ_1): the large-batch "
                               "solution is expected to be sharper.")
    lines, barrier = _lines(directory, runs, settings)
    if lines:
        outputs.figure(plot_loss_lines({"LB → SB": lines["LB → SB"]}, xlabel="t (0 = LB, 1 = LB→SB)",
                                       title="interpolation and extrapolation between the solutions"),
                       "line_between", section="Landscape", title="Loss along the line through both solutions",
                       caption="θ(t) = (1−t)θ_LB + tθ_SB: t in [0, 1] interpolates, outside it extrapolates. "
                               "Solid: training data, dashed: test data. A bump between the dotted lines is a barrier.")
        outputs.figure(plot_loss_lines({k: v for k, v in lines.items() if k != "LB → SB"}, marks=(0.0,),
                                       xlabel="distance along a random filter-normalised direction",
                                       title="lines outward from each solution"),
                       "lines_outward", section="Landscape", title="Lines outward from each solution",
                       caption="Loss along a random filter-normalised direction from each solution (t = 0); the "
                               "faster the loss rises, the sharper the minimum in that direction.")
        outputs.table(pd.concat([frame.assign(line=name) for name, frame in lines.items()]), "lines",
                      section="Landscape", title="Loss along the lines", caption="The values drawn in the line "
                      "figures, per line and t.")
    outputs.figure(plot_histories(histories(directory, runs.iloc[[1]], ["LB then SB"])), "training_curve",
                   section="Training", title="Training curve",
                   caption="Training loss and test accuracy per epoch: large batches first, then the small-batch "
                           "continuation (from the epoch where the loss drops again).")
    columns = [c for c in ("run_id", "batch_size", "continue_batch_size", "train_accuracy", "test_accuracy", "gap",
                           "alpha_mean", "alpha_weighted_mean", "jac_alpha", "jac_lambda_max", "hessian_top1",
                           "hessian_trace") if c in runs]
    outputs.table(runs[columns].assign(barrier=[math.nan, barrier]), "summary", section="Spectra",
                  title="Both solutions", caption="Accuracies and spectral metrics of the two solutions; barrier = "
                  "highest training loss on the segment between them minus the higher of its ends.")
    lb, sb = runs.iloc[0], runs.iloc[1]
    outputs.headline_number("test accuracy: LB → LB→SB", f"{fmt(lb['test_accuracy'])} → {fmt(sb['test_accuracy'])}")
    column = "hessian_top1" if "hessian_top1" in runs else "jac_lambda_max"
    outputs.headline_number(f"{'Hessian' if column == 'hessian_top1' else 'Jacobian'} λ_1: LB → LB→SB",
                            f"{fmt(lb[column])} → {fmt(sb[column])}")
    outputs.headline_number("loss barrier between the solutions" if lines else "weights α: LB → LB→SB",
                            fmt(barrier) if lines else f"{fmt(lb['alpha_mean'])} → {fmt(sb['alpha_mean'])}")


LB_SB = StudyDefinition(
    name="lb-sb",
    title="Large batch, then small batches: spectra and lines in weight space",
    description=(
        "Trains a network on digits with a large batch, then continues from that solution with small batches, "
        "and compares the two solutions: layer ESDs and their α, the data Jacobian Gram, the top Hessian "
        "eigenvalues (Keskar et al. 2017: large-batch minima are sharper), and the loss along the straight line "
        "through both (interpolation and extrapolation) and along random lines outward from each."),
    settings=_settings,
    runs=_runs,
    summarize=_summarize,
)
