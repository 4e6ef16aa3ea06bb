"""The ``depth-bn`` study: deeper networks with and without BatchNorm.

Without normalisation, deep ReLU stacks train slowly and many of their units end up always on or always off
on the data, so that layers act (piecewise) linearly — the embedding principle in depth; BatchNorm (Ioffe &
Szegedy, ICML 2015) keeps the pre-activations centred and the loss decaying. For each depth, with and without
BatchNorm, the study reports the training-loss decay (the per-epoch curve, its log-linear slope
``d log L / d epoch`` and the epochs needed to reach ``loss_target``) and, when
:func:`funnelscope.layer_linearity` is available, each layer's linearity on test inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from funnelscope.studies.common import base_settings, fmt, histories, load_run_frame, training_spec
from funnelscope.studies.study import StudyDefinition, StudyOutputs

__all__ = ["DEPTH_BN", "loss_decay"]

_DEPTHS = {"tiny": [2, 4], "quick": [2, 4, 8], "demo": [2, 4, 8], "full": [2, 4, 8, 16]}


def loss_decay(history: pd.DataFrame, *, target: float) -> tuple[float, float]:
    """The least-squares slope of ``log₁₀ train_loss`` against the epoch, and the first epoch whose training
    loss is at most ``target`` (NaN when never reached)."""
    loss = history["train_loss"].to_numpy(dtype=np.float64)
    epochs = history["epoch"].to_numpy(dtype=np.float64)
    slope = float(np.polyfit(epochs, np.log10(np.maximum(loss, 1e-12)), 1)[0]) if len(loss) > 1 else float("nan")
    reached = np.flatnonzero(loss <= target)
    return slope, float(epochs[reached[0]]) if len(reached) else float("nan")


def _settings(size: str) -> dict[str, Any]:
    epochs = {"tiny": 3, "quick": 12, "demo": 25, "full": 40}[size]
    return {**base_settings(size, epochs=epochs, lr=0.02, hessian_top_k=0), "depths": _DEPTHS[size],
            "loss_target": 0.1, "seeds": 2 if size == "full" else 1}


def _runs(settings: dict[str, Any]) -> list[dict[str, Any]]:
    return [training_spec(settings, f"depth{depth}_{'bn' if bn else 'plain'}_s{repeat}", seed=settings["seed"] + repeat,
                          depth=depth, batch_norm=bn, linearity=True, group=f"depth {depth}{' BN' if bn else ''}")
            for repeat in range(settings["seeds"]) for depth in settings["depths"] for bn in (False, True)]


def _summarize(runs: pd.DataFrame, settings: dict[str, Any], outputs: StudyOutputs) -> None:
    from funnelscope.report.study_plots import SERIES_COLORS, plot_histories, plot_metric_panels

    directory = outputs.directory
    runs = runs.sort_values(["depth", "batch_norm", "seed"], kind="stable").reset_index(drop=True)
    found = histories(directory, runs, list(runs["run_id"]))
    decay = [loss_decay(found[run_id], target=settings["loss_target"]) for run_id in runs["run_id"]]
    runs = runs.assign(loss_slope=[d[0] for d in decay], epochs_to_target=[d[1] for d in decay])
    first = runs[runs["seed"] == runs["seed"].min()]
    depths = sorted(first["depth"].unique())
    labels, styles = {}, {}
    for row in first.to_dict("records"):
        label = f"depth {row['depth']}, {'BN' if row['batch_norm'] else 'no BN'}"
        labels[label] = found[row["run_id"]]
        styles[label] = {"color": SERIES_COLORS[depths.index(row["depth"]) % len(SERIES_COLORS)],
                         "ls": "-" if row["batch_norm"] else "--"}
    section = "Training-loss decay"
    outputs.figure(plot_histories(labels, styles=styles, title="training curves by depth (dashed: no BatchNorm)"),
                   "training_curves", section=section, title="Training loss by depth, with and without BatchNorm",
                   caption="Training loss (log scale) and test accuracy per epoch; colour = depth, solid = with "
                           "BatchNorm, dashed = without. Without BatchNorm deeper nets start slower.")
    outputs.figure(
        plot_metric_panels(runs, "depth", [("train_loss", "final training loss"), ("loss_slope", "d log₁₀ L / d epoch"),
                                           ("epochs_to_target", f"epochs to loss ≤ {settings['loss_target']:g}"),
                                           ("test_accuracy", "test accuracy"), ("alpha_mean", "weights α (mean)"),
                                           ("linearity_always_active_mean", "units always active (mean)")],
                           xlabel="depth (hidden layers)", hue="batch_norm", logx=True,
                           title="loss decay and linearity against depth"),
        "depth_metrics", section=section, title="Loss decay against depth",
        caption="Final training loss, the log-linear decay rate of the loss, the epochs to reach the target loss "
                "(missing when never reached), test accuracy and mean weights α against depth, one line with and "
                "one without BatchNorm.")
    linearity = []
    for row in first.to_dict("records"):
        frame = load_run_frame(directory, row["run_id"], "linearity")
        if frame is not None:
            linearity.append(frame.assign(depth=row["depth"], batch_norm=row["batch_norm"],
                                          layer_index=np.arange(1, len(frame) + 1)))
    if linearity:
        layers = pd.concat(linearity, ignore_index=True)
        deepest = layers[layers["depth"] == layers["depth"].max()]
        metrics = [("always_active", "units always active"), ("always_inactive", "units always inactive (dead)"),
                   ("mean_active", "mean share of units active"), ("r2", "R² of a linear fit across the block")]
        outputs.figure(plot_metric_panels(deepest, "layer_index", metrics, xlabel="activation layer", hue="batch_norm",
                                          title=f"layer linearity at depth {int(deepest['depth'].max())}"),
                       "linearity", section="Layer linearity", title="Layer linearity, with and without BatchNorm",
                       caption="Per activation layer of the deepest nets: the share of units always active (the "
                               "layer acts linearly on them), always inactive (dead), and the R² of the best "
                               "linear map across the block, with and without BatchNorm.")
        outputs.table(layers, "linearity", section="Layer linearity", title="Layer linearity",
                      caption="The linearity probe's table of every activation layer of every net (first seed).")
    columns = [c for c in ("run_id", "depth", "batch_norm", "seed", "train_loss", "loss_slope", "epochs_to_target",
                           "test_accuracy", "gap", "alpha_mean", "jac_lambda_max", "linearity_always_active_mean",
                           "linearity_always_inactive_mean", "linearity_r2_mean") if c in runs]
    outputs.table(runs[columns], "summary", section=section, title="Runs by depth and BatchNorm",
                  caption="Final training loss, its decay rate and epochs to target, accuracies and spectral metrics.")
    deepest = runs[runs["depth"] == runs["depth"].max()]
    plain, normed = deepest[~deepest["batch_norm"]], deepest[deepest["batch_norm"]]
    d = int(runs["depth"].max())
    outputs.headline_number(f"final training loss at depth {d}: no BN vs BN",
                            f"{fmt(plain['train_loss'].mean())} vs {fmt(normed['train_loss'].mean())}")
    outputs.headline_number(f"loss decay d log₁₀L/d epoch at depth {d}: no BN vs BN",
                            f"{fmt(plain['loss_slope'].mean())} vs {fmt(normed['loss_slope'].mean())}")
    if "linearity_always_active_mean" in runs:
        outputs.headline_number(f"units always active at depth {d}: no BN vs BN",
                                f"{fmt(plain['linearity_always_active_mean'].mean())} vs "
                                f"{fmt(normed['linearity_always_active_mean'].mean())}")
    else:
        outputs.headline_number(f"test accuracy at depth {d}: no BN vs BN",
                                f"{fmt(plain['test_accuracy'].mean())} vs {fmt(normed['test_accuracy'].mean())}")


DEPTH_BN = StudyDefinition(
    name="depth-bn",
    title="Depth and BatchNorm: layer linearity and training-loss decay",
    description=(
        "Trains networks of growing depth on digits, each with and without BatchNorm, and compares how fast "
        "their training loss decays and how linearly their layers act on the data (units always active or "
        "always inactive, the R² of a linear fit across each block). Without BatchNorm deep stacks train "
        "slowly and many units stop switching; BatchNorm keeps the loss decaying at every depth."),
    settings=_settings,
    runs=_runs,
    summarize=_summarize,
)
