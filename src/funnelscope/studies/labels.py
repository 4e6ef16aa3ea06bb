"""The ``labels`` study: networks trained on true, partially and fully shuffled labels.

Zhang, Bengio, Hardt, Recht & Vinyals ("Understanding deep learning requires rethinking generalization",
ICLR 2017) showed that the same network fits random labels, only more slowly and without generalising. This
study trains one architecture on digits with a fraction ``p`` of the training labels shuffled among themselves
(``p = 0`` true labels, ``p = 1`` random labels; exactly ``round(p·n)`` labels move, see
:func:`~funnelscope.studies.training.shuffle_labels`) and compares what the probes see:

* the weights' ESDs: per-layer power-law α and phase (Martin & Mahoney, JMLR 2021: memorising noise leaves
  layers less heavy-tailed than learning structure);
* the data Jacobian Gram ``M = 𝒥𝒥ᵀ`` on test inputs: α, λ_max, trace, effective rank and the diagonal
  ``M_ii`` (a funneled landscape concentrates in a few directions); on request also on training inputs
  (``--set jacobian_train_n=1347``: the whole digits training split; 0, the default: none);
* the top Hessian eigenvalues of the training loss, and train/test accuracy.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from funnelscope.studies.common import (
    base_settings,
    fmt,
    hessian_groups,
    histories,
    layer_table,
    recompute_jacobians,
    training_spec,
)
from funnelscope.studies.headlines import trend, unfit_caution, unfit_note
from funnelscope.studies.series import add_rank_correlations
from funnelscope.studies.study import StudyDefinition, StudyOutputs

__all__ = ["LABELS"]

_NOISE = {"tiny": [0.0, 1.0], "quick": [0.0, 0.5, 1.0], "demo": [0.0, 0.25, 0.5, 0.75, 1.0],
          "full": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]}
_EPOCHS = {"tiny": 3, "quick": 120, "demo": 150, "full": 200}
_DEMO = {"width": 256, "jacobian_n": 450}  # the demo: ~3 minutes on two cores, random labels mostly memorised
# quick: wide and long enough that random labels are memorised (train accuracy ≥ 0.999 at seed 0, ~1 CPU-minute);
# at width 64 and 15 epochs they stopped at 0.54 and 0.16 and the headline reversed the full study's
_QUICK = {"width": 256}


def _settings(size: str) -> dict[str, Any]:
    extra = {"demo": _DEMO, "quick": _QUICK}.get(size, {})
    # jacobian_train_n = 0: no Jacobian on training inputs; --set jacobian_train_n=1347 for the whole split
    return {**base_settings(size, epochs=_EPOCHS[size], lr=0.05, jacobian_train_n=0, **extra),
            "label_noises": _NOISE[size], "seeds": 2 if size == "full" else 1}


def _runs(settings: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        training_spec(settings, f"noise{noise:g}_s{repeat}", seed=settings["seed"] + repeat, label_noise=noise,
                      group=f"{noise:.0%} shuffled")
        for repeat in range(settings["seeds"])
        for noise in settings["label_noises"]
    ]


def _summarize(runs: pd.DataFrame, settings: dict[str, Any], outputs: StudyOutputs) -> None:
    from funnelscope.report.jacobian_plots import plot_jacobian_comparison
    from funnelscope.report.study_plots import (
        plot_eigenvalue_strips,
        plot_histories,
        plot_layer_alphas,
        plot_metric_panels,
    )

    directory = outputs.directory
    runs = runs.sort_values(["label_noise", "seed"], kind="stable").reset_index(drop=True)
    section = "Accuracy and spectra against label noise"
    outputs.figure(
        plot_metric_panels(runs, "label_noise", [("train_accuracy", "train accuracy (noisy labels)"),
                                                 ("test_accuracy", "test accuracy"),
                                                 ("gap", "generalisation gap")],
                           xlabel="fraction of shuffled labels", title="accuracy against label noise"),
        "accuracy", section=section, title="Accuracy against label noise",
        caption="Final train accuracy (on the labels trained on, shuffled ones included), test accuracy and their "
                "gap for each fraction of shuffled training labels; dots are runs, lines means over seeds.")
    metrics = [("alpha_mean", "weights α (mean over layers)"), ("alpha_weighted_mean", "weights α̂ (mean)"),
               ("log_norm_mean", "log₁₀‖W‖²_F (mean)"), ("jac_alpha", "Jacobian α"),
               ("jac_lambda_max", "Jacobian λ_max"), ("jac_trace", "Jacobian trace"),
               ("jac_effective_rank", "Jacobian effective rank"), ("hessian_top1", "Hessian λ_1")]
    outputs.figure(
        plot_metric_panels(runs, "label_noise", metrics, xlabel="fraction of shuffled labels",
                           title="spectral metrics against label noise"),
        "metrics", section=section, title="Spectral metrics against label noise",
        caption="Weight-ESD metrics (mean over layers), the Jacobian Gram's tail exponent, top eigenvalue, trace "
                "and effective rank on test inputs, and the top Hessian eigenvalue, for each fraction of shuffled "
                "labels. None of them uses test labels.")
    train_metrics = [(f"jac_train_{key}", f"Jacobian {label} (training inputs)") for key, label in
                     (("alpha", "α"), ("lambda_max", "λ_max"), ("trace", "trace"), ("effective_rank", "eff. rank"))]
    if all(column in runs for column, _ in train_metrics):
        outputs.figure(
            plot_metric_panels(runs, "label_noise", train_metrics, xlabel="fraction of shuffled labels",
                               title="Jacobian on training inputs against label noise"),
            "jacobian_train_metrics", section="Jacobian", title="Jacobian Gram on training inputs",
            caption="The Jacobian Gram's tail exponent, top eigenvalue, trace and effective rank on training inputs "
                    "(the examples the network was fitted to, shuffled labels included), beside the test-input "
                    "figures above: memorised examples leave their own mark on the training split.")
    layers = layer_table(directory, runs, ("label_noise",))
    if len(layers):
        outputs.figure(
            plot_layer_alphas(layers, "label_noise", xlabel="fraction of shuffled labels",
                              title="per-layer α and phase against label noise"),
            "layer_alphas", section="Weights", title="Per-layer α and phase",
            caption="Left: the power-law exponent α of each layer's ESD (dotted: α = 2 and 6, WeightWatcher's "
                    "well-trained range). Right: the phase each layer is assigned (Martin & Mahoney 2021).")
    first = runs[runs["seed"] == runs["seed"].min()]
    labels = [f"{noise:.0%} shuffled" for noise in first["label_noise"]]
    spectra = recompute_jacobians(directory, first, labels)
    if spectra:
        outputs.figure(
            plot_jacobian_comparison(spectra, title="Jacobian Gram on test inputs: true vs shuffled labels"),
            "jacobian_comparison", section="Jacobian", title="Jacobian ESDs, true vs shuffled labels",
            caption="Left: ESDs of M = JJᵀ (dashed: fitted power-law tails). Middle: sorted eigenvalues λ_i/λ_1 — "
                    "a funneled landscape falls off steeply after a few directions. Right: the diagonal "
                    "M_ii = ‖J(x_i)‖², each example's input sensitivity.")
        diagonal = pd.concat([pd.DataFrame({"label": label, "diagonal": spectrum.diagonal})
                              for label, spectrum in spectra.items()])
        stats = diagonal.groupby("label", sort=False)["diagonal"].describe().reset_index()
        outputs.table(stats, "jacobian_diagonal", section="Jacobian", title="Jacobian diagonal by label noise",
                      caption="Distribution of the per-example sensitivities M_ii = ‖J(x_i)‖²_F on the test inputs.")
    hessian = hessian_groups(directory, first, labels)
    if hessian:
        outputs.figure(plot_eigenvalue_strips(hessian, ylabel="Hessian eigenvalue", title="top Hessian eigenvalues"),
                       "hessian_top", section="Hessian", title="Top Hessian eigenvalues",
                       caption="The largest eigenvalues of the training-loss Hessian for each label-noise level "
                               "(ringed: λ_1); isolated points above the rest are outliers.")
    outputs.figure(plot_histories(histories(directory, first, labels)), "training_curves", section="Training",
                   title="Training curves", caption="Training loss (log scale) and test accuracy per epoch; random "
                   "labels are fitted more slowly and never generalise.")
    columns = [c for c in ("run_id", "label_noise", "seed", "train_accuracy", "test_accuracy", "gap", "alpha_mean",
                           "alpha_weighted_mean", "log_norm_mean", "jac_alpha", "jac_lambda_max", "jac_trace",
                           "jac_effective_rank", "jac_train_alpha", "jac_train_lambda_max", "jac_train_trace",
                           "jac_train_effective_rank", "hessian_top1", "hessian_trace") if c in runs]
    outputs.table(runs[columns], "summary", section=section, title="Runs by label noise",
                  caption="Final accuracies and scalar spectral metrics of every run.")
    add_rank_correlations(runs, outputs, section="Rank correlations")
    _headline(runs, outputs)


def _headline(runs: pd.DataFrame, outputs: StudyOutputs) -> None:
    """Test accuracy on true labels, then weights α and Jacobian λ_max from true to shuffled labels with their
    rank correlation against the noise level, and a note (and a report warning) for runs that did not fit."""
    true = runs[runs["label_noise"] == runs["label_noise"].min()]
    outputs.headline_number("test accuracy, true labels", fmt(true["test_accuracy"].mean()))
    note = unfit_note(runs, _describe)
    for metric, label in (("alpha_mean", "weights α"), ("jac_lambda_max", "Jacobian λ_max")):
        outputs.headline_number(f"{label}: true → shuffled labels",
                                trend(runs, "label_noise", metric, levels_name="noise levels") + note)
    caution = unfit_caution(runs, _describe)
    if caution is not None:
        outputs.caution(caution)


def _describe(row: pd.Series) -> str:
    return f"{float(row['label_noise']):.0%} shuffled"


LABELS = StudyDefinition(
    name="labels",
    title="True vs shuffled labels: weights, Jacobian and Hessian spectra",
    description=(
        "Trains the same network on digits with a growing fraction of its training labels shuffled (0 = true "
        "labels, 1 = random labels; Zhang et al. 2017), and compares the layer weight ESDs (power-law α, phase), "
        "the data Jacobian Gram on test inputs (α, λ_max, trace, effective rank, per-example diagonal), the top "
        "Hessian eigenvalues and train/test accuracy. A network that learns structure ends with heavy-tailed "
        "layers and a funneled Jacobian; one that memorises noise does not, though it may fit its training set."),
    settings=_settings,
    runs=_runs,
    summarize=_summarize,
)
