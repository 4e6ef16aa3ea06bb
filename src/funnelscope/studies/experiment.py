"""One training run of a study: prepare the data, train, measure, and write the run's directory.

A run is described by a flat dict of knobs (a *run spec*, see :data:`TRAINING_DEFAULTS`), so that it pickles to
a process pool or a Ray worker and becomes one row of ``runs.parquet``. :func:`train_run` trains the model,
then measures it:

* weights: :func:`funnelscope.analyze_weights` per layer (``weights.parquet``) and the means over layers
  (``alpha_mean``, ``alpha_weighted_mean``, ``log_norm_mean``, ``log_spectral_norm_mean``, …: the columns of
  :func:`funnelscope.studies.series.weight_metrics`);
* Jacobian: :func:`funnelscope.jacobian_spectrum` on ``jacobian_n`` test examples (``jacobian.parquet`` per
  example, ``jacobian_eigenvalues.parquet``; ``jac_alpha``, ``jac_lambda_max``, ``jac_trace``,
  ``jac_effective_rank``, ``jac_stable_rank``, ``jac_offdiag_ratio``, ``jac_diagonal_alpha``; the columns of
  :func:`funnelscope.studies.series.jacobian_metrics`); with ``jacobian_train_n > 0`` the same on that many
  training inputs (``jacobian_train*.parquet``, columns ``jac_train_*``);
* Hessian (``hessian_top_k > 0``): the top eigenvalues and trace of the training loss on ``hessian_n``
  training examples (``hessian_top1``, …, ``hessian_trace``), when :func:`funnelscope.hessian_spectrum` exists;
* linearity (``linearity``): :func:`funnelscope.layer_linearity` on the test inputs, when it exists.

The generalisation gap is ``train_accuracy − test_accuracy`` (on the labels the model was trained on, noisy
ones included) and ``loss_gap = test_loss − train_loss``. ``fitted`` says whether the run fitted those labels
(final train accuracy ≥ :data:`FIT_THRESHOLD`, :func:`is_fitted`): Zhang et al. (ICLR 2017) compare networks that
reach ~100 % train accuracy on true and on random labels; one that stops short is under-trained, not memorising.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from funnelscope.datasets import LabelledData
from funnelscope.studies.data import Augmentation, prepare_data, subsample
from funnelscope.studies.models import ARCHITECTURES, build_model
from funnelscope.studies.training import shuffle_labels, train_classifier

__all__ = ["FIT_THRESHOLD", "TRAINING_DEFAULTS", "is_fitted", "load_run_model", "run_data", "spec_from_row",
           "train_run"]

#: Every knob of a training run and its default. ``continue_*`` (batch size > 0) adds a second training phase
#: from the first one's solution (the large-batch → small-batch study); ``data`` is ``"digits"`` or the path of
#: an ``.npz`` with ``x`` and ``y``.
TRAINING_DEFAULTS: dict[str, Any] = {
    "kind": "train",
    "group": "",
    "seed": 0,
    "data": "digits",
    "train_size": 0,
    "normalize": False,
    "augment": "",
    "label_noise": 0.0,
    "arch": "mlp",
    "width": 128,
    "depth": 2,
    "batch_norm": False,
    "epochs": 30,
    "batch_size": 32,
    "lr": 0.05,
    "schedule": "constant",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "continue_batch_size": 0,
    "continue_epochs": 0,
    "continue_lr": 0.0,
    "checkpoints": False,
    "jacobian_n": 300,
    "jacobian_train_n": 0,
    "hessian_top_k": 0,
    "hessian_n": 512,
    "linearity": False,
}


#: The final train accuracy (on the labels trained on, shuffled ones included) from which a run counts as having
#: fitted its training labels.
FIT_THRESHOLD = 0.95


def is_fitted(train_accuracy: float) -> bool:
    """Whether a run with this final train accuracy fitted its training labels (``≥`` :data:`FIT_THRESHOLD`).

    >>> is_fitted(0.99), is_fitted(0.54)
    (True, False)
    """
    return bool(train_accuracy >= FIT_THRESHOLD)


def spec_from_row(row: dict[str, Any] | pd.Series) -> dict[str, Any]:
    """The training knobs of a row of ``runs.parquet`` as plain Python values (a run spec)."""
    return {key: (row[key].item() if hasattr(row[key], "item") else row[key]) for key in TRAINING_DEFAULTS
            if key in row}


def run_data(spec: dict[str, Any]) -> tuple[LabelledData, LabelledData]:
    """The run's training set (subsampled to ``train_size``, labels shuffled by ``label_noise``) and test set."""
    image = ARCHITECTURES[spec["arch"]][1] if spec["arch"] in ARCHITECTURES else False
    if spec["data"] == "digits":
        train, test = prepare_data(image=image, normalize=spec["normalize"], seed=spec["seed"])
    else:
        with np.load(spec["data"], allow_pickle=False) as arrays:
            train, test = prepare_data(x=arrays["x"], y=arrays["y"], normalize=spec["normalize"], seed=spec["seed"])
    train = subsample(train, spec["train_size"] or None, seed=spec["seed"])
    if spec["label_noise"] > 0:
        noisy = shuffle_labels(train.y, spec["label_noise"], seed=spec["seed"] + 1)
        train = LabelledData(train.x, noisy, f"{train.name}, {spec['label_noise']:.0%} shuffled labels")
    return train, test


def _model(spec: dict[str, Any], train: LabelledData) -> torch.nn.Module:
    num_classes = int(max(int(train.y.max()) + 1, 2))
    return build_model(spec["arch"], input_shape=tuple(train.x.shape[1:]), num_classes=num_classes,
                       width=spec["width"], depth=spec["depth"], batch_norm=spec["batch_norm"])


def load_run_model(run_dir: str | Path) -> torch.nn.Module:
    """Rebuild a finished run's trained model from ``run.json`` and ``model.pt`` (eval mode)."""
    run_dir = Path(run_dir)
    spec = json.loads((run_dir / "run.json").read_text())["spec"]
    train, _ = run_data(spec)
    model = _model(spec, train)
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    return model.eval()


def train_run(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train and measure one run, writing its files into ``run_dir``; return its row of scalar metrics."""
    train, test = run_data(spec)
    torch.manual_seed(spec["seed"])
    model = _model(spec, train)
    augment = Augmentation.from_name(spec["augment"], image_shape=(1, 8, 8)) if spec["augment"] else None
    if augment is not None and math.prod(train.x.shape[1:]) != 64:
        augment = Augmentation.from_name(spec["augment"], image_shape=tuple(train.x.shape[1:]))
    options = {"momentum": spec["momentum"], "weight_decay": spec["weight_decay"], "augment": augment}
    result = train_classifier(
        model, train, test, epochs=spec["epochs"], batch_size=spec["batch_size"], lr=spec["lr"],
        schedule=spec["schedule"], seed=spec["seed"], **options,
        checkpoint_dir=run_dir / "checkpoints" if spec["checkpoints"] else None,
    )
    history = result.history.assign(phase="main")
    if spec["continue_batch_size"] > 0:
        torch.save(model.state_dict(), run_dir / "model_first_phase.pt")
        second = train_classifier(
            model, train, test, epochs=spec["continue_epochs"], batch_size=spec["continue_batch_size"],
            lr=spec["continue_lr"] or spec["lr"], schedule=spec["schedule"], seed=spec["seed"] + 1, **options,
        )
        history = pd.concat([history, second.history.assign(phase="continued", epoch=second.history["epoch"]
                                                             + spec["epochs"])], ignore_index=True)
    model.eval()
    torch.save(model.state_dict(), run_dir / "model.pt")
    history.to_parquet(run_dir / "history.parquet", index=False)
    final = history.iloc[-1]
    row: dict[str, Any] = {
        "train_loss": float(final["train_loss"]), "train_accuracy": float(final["train_accuracy"]),
        "test_loss": float(final["test_loss"]), "test_accuracy": float(final["test_accuracy"]),
    }
    row["gap"] = row["train_accuracy"] - row["test_accuracy"]
    row["fitted"] = is_fitted(row["train_accuracy"])
    row["loss_gap"] = row["test_loss"] - row["train_loss"]
    row.update(_weights(model, run_dir))
    if spec["jacobian_n"] > 0:
        row.update(_jacobian(model, subsample(test, spec["jacobian_n"], seed=spec["seed"]), spec, run_dir))
    if spec["jacobian_train_n"] > 0:  # the same probe on training inputs (with the labels trained on)
        train_part = subsample(train, spec["jacobian_train_n"], seed=spec["seed"])
        row.update(_jacobian(model, train_part, spec, run_dir, split="train"))
    if spec["hessian_top_k"] > 0:
        row.update(_hessian(model, subsample(train, spec["hessian_n"], seed=spec["seed"]), spec, run_dir))
    if spec["linearity"]:
        row.update(_linearity(model, subsample(test, spec["jacobian_n"] or 300, seed=spec["seed"]), run_dir))
    return row


def _weights(model: torch.nn.Module, run_dir: Path) -> dict[str, float]:
    from funnelscope.probes.weights import analyze_weights
    from funnelscope.studies.series import weight_metrics

    details = analyze_weights(model, device="cpu")
    details.to_parquet(run_dir / "weights.parquet", index=False)
    return weight_metrics(details)


def _jacobian(model: torch.nn.Module, data: LabelledData, spec: dict[str, Any], run_dir: Path, *,
              split: str = "test") -> dict[str, float]:
    """The Jacobian probe on ``data``: files ``jacobian*.parquet`` and columns ``jac_*`` for the test split,
    ``jacobian_train*.parquet`` and ``jac_train_*`` for the training split."""
    from funnelscope.probes.jacobian import jacobian_spectrum
    from funnelscope.studies.series import jacobian_metrics

    spectrum = jacobian_spectrum(model, data, seed=spec["seed"], device="cpu")
    summary = spectrum.summary()
    name = "jacobian" if split == "test" else f"jacobian_{split}"
    spectrum.to_frame().to_parquet(run_dir / f"{name}.parquet", index=False)
    pd.DataFrame({"eigenvalue": spectrum.eigenvalues}).to_parquet(run_dir / f"{name}_eigenvalues.parquet")
    pd.DataFrame([summary]).to_parquet(run_dir / f"{name}_summary.parquet", index=False)
    out = jacobian_metrics(summary)
    out["jac_diagonal_median"] = float(np.median(spectrum.diagonal))
    if split == "test":
        return out
    return {key.replace("jac_", f"jac_{split}_", 1): value for key, value in out.items()}


def _hessian(model: torch.nn.Module, data: LabelledData, spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    from funnelscope.probes.hessian import hessian_spectrum
    from funnelscope.studies.series import hessian_metrics

    k = spec["hessian_top_k"]
    result = hessian_spectrum(model, data, top_k=k, trace=True, seed=spec["seed"], device="cpu")
    top = np.sort(np.asarray(result.top_eigenvalues, dtype=np.float64))[::-1]
    pd.DataFrame({"rank": np.arange(1, len(top) + 1), "eigenvalue": top}).to_parquet(run_dir / "hessian.parquet")
    out: dict[str, Any] = {f"hessian_top{i + 1}": math.nan for i in range(k)}
    out.update(hessian_metrics(top, result.trace))
    # outliers: the count above the bulk (None when the probe could not tell); -1 keeps the column integer
    out["hessian_outliers"] = int(result.outliers) if result.outliers is not None else -1
    out["hessian_status"] = "ok"
    return out


def _linearity(model: torch.nn.Module, data: LabelledData, run_dir: Path) -> dict[str, Any]:
    from funnelscope.probes.linearity import layer_linearity

    frame = layer_linearity(model, data.x).to_frame()
    frame.to_parquet(run_dir / "linearity.parquet", index=False)
    out: dict[str, Any] = {"linearity_status": "ok"}
    for column in ("always_active", "always_inactive", "r2"):
        if column in frame:
            out[f"linearity_{column}_mean"] = float(pd.to_numeric(frame[column], errors="coerce").mean())
    return out
