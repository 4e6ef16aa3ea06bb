"""The ``ablation`` study: momentum, weight decay and preprocessing removed one at a time and all together.

The baseline trains with momentum, weight decay and preprocessing (per-feature standardisation and random
one-pixel shifts); each variant removes one of them, and ``none`` removes all three. For each variant the
study reports the test accuracy and its change from the baseline beside the spectral metrics — the question
of Martin & Mahoney (JMLR 2021, Section 8) and Zhang et al. (ICLR 2017, Table 1): explicit regularisers change
test accuracy little, and do the spectra notice?
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from funnelscope.studies.common import base_settings, fmt, training_spec
from funnelscope.studies.study import StudyDefinition, StudyOutputs

__all__ = ["ABLATION", "VARIANTS"]

#: Variant → the knobs it changes from the baseline.
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "no momentum": {"momentum": 0.0},
    "no weight decay": {"weight_decay": 0.0},
    "no preprocessing": {"normalize": False, "augment": ""},
    "none": {"momentum": 0.0, "weight_decay": 0.0, "normalize": False, "augment": ""},
}


def _settings(size: str) -> dict[str, Any]:
    epochs = {"tiny": 3, "quick": 12, "demo": 25, "full": 40}[size]
    return {**base_settings(size, epochs=epochs, lr=0.02, momentum=0.9, weight_decay=5e-4, normalize=True,
                            augment="shift", hessian_top_k=0 if size == "quick" else base_settings(size)[
                                "hessian_top_k"]),
            "seeds": {"tiny": 1, "quick": 2, "demo": 2, "full": 3}[size]}


def _runs(settings: dict[str, Any]) -> list[dict[str, Any]]:
    slug = {name: name.replace(" ", "-") for name in VARIANTS}
    return [training_spec(settings, f"{slug[name]}_s{repeat}", seed=settings["seed"] + repeat, group=name, **changes)
            for repeat in range(settings["seeds"]) for name, changes in VARIANTS.items()]


_METRICS = (("test_accuracy", "test accuracy"), ("delta_test_accuracy", "Δ test accuracy vs baseline"),
            ("gap", "generalisation gap"), ("alpha_mean", "weights α (mean)"),
            ("alpha_weighted_mean", "weights α̂ (mean)"), ("log_norm_mean", "log₁₀‖W‖²_F (mean)"),
            ("jac_alpha", "Jacobian α"), ("jac_lambda_max", "Jacobian λ_max"), ("hessian_top1", "Hessian λ_1"))


def _summarize(runs: pd.DataFrame, settings: dict[str, Any], outputs: StudyOutputs) -> None:
    from funnelscope.report.study_plots import plot_bars, plot_histories
    from funnelscope.studies.common import histories

    numeric = [c for c, _ in _METRICS if c in runs and c != "delta_test_accuracy"]
    table = runs.groupby("group", sort=False)[numeric].mean()
    table = table.reindex([name for name in VARIANTS if name in table.index])
    spread = runs.groupby("group", sort=False)["test_accuracy"].std().reindex(table.index)
    table.insert(1, "delta_test_accuracy", table["test_accuracy"] - table.loc["baseline", "test_accuracy"])
    table.insert(2, "test_accuracy_sd", spread)
    table = table.reset_index(names="variant")
    section = "Ablation"
    outputs.table(table, "ablation", section=section, title="Test accuracy deltas beside the spectral metrics",
                  caption=f"Means over {settings['seeds']} seed(s) per variant; Δ is relative to the baseline "
                          "(momentum 0.9, weight decay, standardised inputs with random one-pixel shifts).")
    outputs.figure(plot_bars(table, "variant", _METRICS, reference="baseline",
                             title="what removing momentum, weight decay or preprocessing changes"),
                   "ablation", section=section, title="Ablation: accuracy and spectra per variant",
                   caption="One panel per quantity, one bar per variant (grey, with the dotted line: the baseline). "
                           "Compare the change in test accuracy with the change in each spectral metric.")
    first = runs[runs["seed"] == runs["seed"].min()]
    outputs.figure(plot_histories(histories(outputs.directory, first, list(first["group"]))), "training_curves",
                   section="Training", title="Training curves per variant",
                   caption="Training loss (log scale) and test accuracy per epoch for each variant (first seed).")
    columns = [c for c in ("run_id", "group", "seed", "momentum", "weight_decay", "normalize", "augment",
                           "train_accuracy", "test_accuracy", "gap", *numeric[3:]) if c in runs]
    outputs.table(runs[columns], "runs", section="Runs", title="Runs", caption="Every run of the ablation.")
    worst = table[~table["variant"].isin(["baseline", "none"])].sort_values("delta_test_accuracy").iloc[0]
    everything = table[table["variant"] == "none"].iloc[0]
    outputs.headline_number("baseline test accuracy", fmt(float(table.loc[0, "test_accuracy"])))
    outputs.headline_number(f"largest single-removal drop ({worst['variant']})",
                            f"{float(worst['delta_test_accuracy']):+.3f}")
    base_alpha, none_alpha = fmt(float(table.loc[0, "alpha_mean"])), fmt(float(everything["alpha_mean"]))
    outputs.headline_number("all removed: Δ test accuracy, weights α",
                            f"{float(everything['delta_test_accuracy']):+.3f}, α {base_alpha} → {none_alpha}")


ABLATION = StudyDefinition(
    name="ablation",
    title="Ablation of momentum, weight decay and preprocessing",
    description=(
        "Starts from a baseline trained with momentum, weight decay and preprocessing (standardised inputs, "
        "random one-pixel shifts) and removes each of them in turn, then all three. Each variant's change in "
        "test accuracy is shown beside its weight-ESD metrics (α, α̂, log norm), its Jacobian α and λ_max and "
        "its top Hessian eigenvalue, to see whether the spectra track what the regularisers do."),
    settings=_settings,
    runs=_runs,
    summarize=_summarize,
)
