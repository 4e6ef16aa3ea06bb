"""The ``batch-size`` study: a sweep of batch sizes at otherwise fixed settings.

Keskar, Mudigere, Nocedal, Smelyanskiy & Tang ("On large-batch training for deep learning: generalization gap
and sharp minima", ICLR 2017) found that large batches reach sharper minima (larger Hessian eigenvalues) and
generalise worse; Martin & Mahoney (JMLR 2021, Section 7) found that larger batches leave the layers' ESDs
less heavy-tailed (larger α, phases further from heavy-tailed). This study trains the same network with each
batch size for the same number of epochs and the same learning rate, and reports per-layer α and phase, the
generalisation gap and the Hessian's top eigenvalues (outliers) against the batch size.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from funnelscope.studies.common import (
    base_settings,
    hessian_groups,
    histories,
    layer_table,
    training_spec,
)
from funnelscope.studies.headlines import trend
from funnelscope.studies.series import add_rank_correlations
from funnelscope.studies.study import StudyDefinition, StudyOutputs

__all__ = ["BATCH_SIZE"]

_BATCHES = {"tiny": [16, 128], "quick": [8, 32, 128, 512], "demo": [8, 32, 128, 512],
            "full": [4, 8, 16, 32, 64, 128, 256, 512, 1024]}


def _settings(size: str) -> dict[str, Any]:
    epochs = {"tiny": 3, "quick": 10, "demo": 20, "full": 40}[size]
    return {**base_settings(size, epochs=epochs, lr=0.02), "batch_sizes": _BATCHES[size],
            "seeds": 2 if size == "full" else 1}


def _runs(settings: dict[str, Any]) -> list[dict[str, Any]]:
    return [training_spec(settings, f"bs{batch}_s{repeat}", seed=settings["seed"] + repeat, batch_size=batch,
                          group=f"batch {batch}")
            for repeat in range(settings["seeds"]) for batch in settings["batch_sizes"]]


def _summarize(runs: pd.DataFrame, settings: dict[str, Any], outputs: StudyOutputs) -> None:
    from funnelscope.report.study_plots import (
        plot_eigenvalue_strips,
        plot_histories,
        plot_layer_alphas,
        plot_metric_panels,
    )

    directory = outputs.directory
    runs = runs.sort_values(["batch_size", "seed"], kind="stable").reset_index(drop=True)
    section = "Against batch size"
    outputs.figure(
        plot_metric_panels(runs, "batch_size", [("train_accuracy", "train accuracy"), ("test_accuracy",
                           "test accuracy"), ("gap", "generalisation gap"), ("loss_gap", "test − train loss"),
                           ("alpha_mean", "weights α (mean)"), ("alpha_weighted_mean", "weights α̂ (mean)"),
                           ("jac_lambda_max", "Jacobian λ_max"), ("hessian_top1", "Hessian λ_1")],
                           xlabel="batch size", logx=True, title="accuracy and spectra against batch size"),
        "metrics", section=section, title="Accuracy, gap and spectral metrics against batch size",
        caption="Each panel is one quantity against the batch size (log scale), at the same epochs and learning "
                "rate; dots are runs, lines means over seeds. Large batches take fewer steps, and Keskar et al. "
                "(2017) associate them with sharper minima (larger Hessian λ_1) and larger gaps.")
    layers = layer_table(directory, runs, ("batch_size",))
    if len(layers):
        outputs.figure(plot_layer_alphas(layers, "batch_size", xlabel="batch size", logx=True,
                                         title="per-layer α and phase against batch size"),
                       "layer_alphas", section="Weights", title="Per-layer α and phase against batch size",
                       caption="Left: each layer's power-law α (mean over seeds; dotted: α = 2 and 6). Right: the "
                               "phase of each layer at each batch size (Martin & Mahoney 2021, Section 7: smaller "
                               "batches give more heavy-tailed layers).")
        table = layers.groupby(["batch_size", "name"], sort=True).agg(
            alpha=("alpha", "mean"), alpha_weighted=("alpha_weighted", "mean"),
            phase=("phase", lambda p: p.mode().iloc[0])).reset_index()
        outputs.table(table, "layer_alphas", section="Weights", title="Per-layer α and phase by batch size",
                      caption="Mean α and α̂ over seeds and the most frequent phase of each layer.")
    first = runs[runs["seed"] == runs["seed"].min()]
    labels = [f"batch {b}" for b in first["batch_size"]]
    hessian = hessian_groups(directory, first, labels)
    if hessian:
        outputs.figure(plot_eigenvalue_strips(hessian, ylabel="Hessian eigenvalue",
                                              title="top Hessian eigenvalues by batch size"),
                       "hessian_top", section="Hessian", title="Hessian outliers against batch size",
                       caption="The top eigenvalues of the training-loss Hessian of each run (ringed: λ_1). "
                               "Sharper minima have larger outliers.")
    outputs.figure(plot_histories(histories(directory, first, labels)), "training_curves", section="Training",
                   title="Training curves", caption="Training loss (log scale) and test accuracy per epoch for each "
                   "batch size; at a fixed number of epochs large batches take far fewer steps.")
    columns = [c for c in ("run_id", "batch_size", "seed", "train_accuracy", "test_accuracy", "gap", "alpha_mean",
                           "alpha_weighted_mean", "jac_alpha", "jac_lambda_max", "hessian_top1", "hessian_trace",
                           "hessian_outliers") if c in runs]
    outputs.table(runs[columns], "summary", section=section, title="Runs by batch size",
                  caption="Final accuracies, gap and scalar spectral metrics of every run.")
    add_rank_correlations(runs, outputs, section="Rank correlations")
    b_small, b_large = int(runs["batch_size"].min()), int(runs["batch_size"].max())
    column = "hessian_top1" if "hessian_top1" in runs else "jac_lambda_max"
    for metric, label in (("gap", "generalisation gap"), ("alpha_mean", "weights α"),
                          (column, f"{'Hessian' if column == 'hessian_top1' else 'Jacobian'} λ_1")):
        outputs.headline_number(f"{label}: batch {b_small} → {b_large}",
                                trend(runs, "batch_size", metric, levels_name="batch sizes"))


BATCH_SIZE = StudyDefinition(
    name="batch-size",
    title="Batch size: per-layer α, phases, generalisation gap and Hessian outliers",
    description=(
        "Trains the same network on digits with a range of batch sizes, everything else fixed, and reports "
        "each layer's power-law α and phase (Martin & Mahoney 2021: smaller batches give heavier-tailed "
        "layers), the generalisation gap, and the top Hessian eigenvalues (Keskar et al. 2017: large batches "
        "find sharper minima)."),
    settings=_settings,
    runs=_runs,
    summarize=_summarize,
)
