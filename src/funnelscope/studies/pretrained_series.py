"""A series of pretrained models ranked by their spectra, without training: :func:`analyze_series`.

Given models that someone else trained (an architecture series, or the checkpoints of one run) and data, each
model is measured once, as the single-model probes would measure it:

* weights: :func:`funnelscope.analyze_weights`, and the means of :func:`funnelscope.summarize_weights`
  (``alpha_mean``, ``alpha_weighted_mean``, ``log_norm_mean``, ``log_spectral_norm_mean``,
  ``log_alpha_norm_mean``, ``stable_rank_mean``);
* the data Jacobian Gram ``M = 𝒥𝒥ᵀ`` on the data: :func:`funnelscope.jacobian_spectrum` (``jac_alpha``,
  ``jac_lambda_max``, ``jac_trace``, ``jac_effective_rank``, ``jac_stable_rank``, ``jac_diagonal_alpha``,
  ``jac_offdiag_ratio``) and, when the data has labels, the measured ``accuracy`` and mean cross-entropy
  ``loss``;
* with ``hessian=True``: :func:`funnelscope.hessian_spectrum`'s ``λ₁`` and trace (``hessian_top1``,
  ``hessian_trace``);
* the ``reported_accuracy`` when it is given (a manifest's ``accuracy`` column).

Each model is one run of :func:`funnelscope.studies.runner.run_all` (process pool, Ray, resume): its row is
appended to ``OUT/series.parquet`` as soon as it finishes, its files go to ``OUT/runs/<name>/``, and a series
started again in the same directory measures only the models missing from the table. Then Kendall's τ and
Spearman's ρ of every metric with the measured and the reported accuracy
(:func:`funnelscope.studies.series.rank_correlations`; Martin, Peng & Mahoney, "Predicting trends in the
quality of state-of-the-art neural networks without access to training or testing data", Nature Comm. 12,
4122, 2021) go to ``OUT/correlations.parquet``, the figures to ``OUT/figures/`` and the report to
``OUT/report.html`` (the studies' layout, :mod:`funnelscope.report.html`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from funnelscope.errors import FunnelscopeInputError
from funnelscope.output import atomic_write, check_output_directory, write_json, write_table
from funnelscope.probes.result import ProbeResult
from funnelscope.studies.series import SERIES_METRICS, rank_correlations
from funnelscope.studies.series_manifest import IN_MEMORY, SeriesModel, series_entries, step_from_name

__all__ = ["ORDERS", "SERIES_ACCURACIES", "SeriesResult", "analyze_series", "measure_run"]

#: The targets of the rank correlations: the accuracy measured on the data, and the reported one.
SERIES_ACCURACIES = (("accuracy", "measured accuracy"), ("reported_accuracy", "reported accuracy"))
#: ``given``: the models in the order given; ``step``: checkpoints ordered by their training step.
ORDERS = ("given", "step")
STUDY_NAME = "pretrained-series"


# --------------------------------------------------------------------------------------------- one model


def measure_run(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Measure one model of a series (a run of kind ``pretrained``): its row of metrics; writes
    ``weights.parquet``, ``jacobian_eigenvalues.parquet`` and ``jacobian_summary.json`` into ``run_dir``."""
    from funnelscope.datasets import load_data
    from funnelscope.models.loading import load_model
    from funnelscope.probes.hessian import hessian_spectrum
    from funnelscope.probes.jacobian import jacobian_spectrum
    from funnelscope.probes.weights import analyze_weights
    from funnelscope.studies.series import hessian_metrics, jacobian_metrics, weight_metrics

    options = json.loads(spec["options"])
    if spec["model"] in IN_MEMORY:
        model = IN_MEMORY[spec["model"]]
    else:
        model = load_model(spec["model"], weights=spec["weights"] or None,
                           factory_kwargs=json.loads(spec["factory_args"]), trust_pickle=options["trust_pickle"])
    data = load_data(options["data"], limit=options["n"])
    common = {"batch_size": options["batch_size"], "device": options["device"], "seed": options["seed"]}
    details = analyze_weights(model, device=options["device"])
    details.to_parquet(run_dir / "weights.parquet", index=False)
    row: dict[str, Any] = weight_metrics(details)
    spectrum = jacobian_spectrum(model, data, output=options["output"], method=options["method"],
                                 probes=options["probes"], **common)
    summary = spectrum.summary()
    pd.DataFrame({"eigenvalue": spectrum.eigenvalues, "zero": spectrum.eigenvalues <= spectrum.zero_tolerance}
                 ).to_parquet(run_dir / "jacobian_eigenvalues.parquet")
    write_json(run_dir / "jacobian_summary.json", summary)
    row.update(jacobian_metrics(summary))
    row["accuracy"] = float(summary["accuracy"])
    row["loss"] = float(np.mean(spectrum.loss)) if spectrum.loss is not None else math.nan
    if options["hessian"]:
        hessian = hessian_spectrum(model, data, top_k=1, trace=True, **common)
        row.update(hessian_metrics(hessian.top_eigenvalues, hessian.trace))
    return row


# --------------------------------------------------------------------------------------------- the series


@dataclass(frozen=True)
class SeriesResult(ProbeResult):
    """A measured series: one row per model, the rank correlations, the Jacobian ESDs.

    ``save()`` writes ``series`` (:meth:`to_frame`), ``correlations``, ``summary.json`` and, on request, the
    figures (:meth:`figures`).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per model (``name, model, step, reported_accuracy, accuracy, loss``, the metrics, ``seconds``),
        in the order given (``order="step"``: by step).
    correlations : pandas.DataFrame
        :func:`~funnelscope.studies.series.rank_correlations` of every metric with each accuracy.
    eigenvalues : dict of str to ndarray
        Each model's Jacobian Gram eigenvalues above its numerical zero (the probe's ``zero_tolerance``).
    directory : Path
        The series directory.
    order : str
    report : Path or None
        ``report.html``, when written.
    """

    probe: ClassVar[str] = "series"
    table: pd.DataFrame = field(repr=False)
    correlations: pd.DataFrame = field(repr=False)
    eigenvalues: dict[str, np.ndarray] = field(repr=False)
    directory: Path
    order: str = "given"
    report: Path | None = None

    def summary(self) -> dict[str, Any]:
        """``models``, and for each accuracy (``accuracy``, ``reported_accuracy``) the metric with the largest
        ``|τ|`` (``best_<target>``) and that ``τ`` (``tau_<target>``); None where there is no correlation."""
        out: dict[str, Any] = {"models": len(self.table), "order": self.order}
        for target, _ in SERIES_ACCURACIES:
            best = _best(self.correlations, target)
            out[f"best_{target}"] = None if best is None else best["metric"]
            out[f"tau_{target}"] = None if best is None else float(best["kendall_tau"])
        return out

    def to_frame(self) -> pd.DataFrame:
        return self.table

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"series": self.table, "correlations": self.correlations}

    def figures(self, title: str | None = None) -> dict[str, Any]:
        """``metrics_vs_<target>`` (each metric against each accuracy, models labelled), ``jacobian_esds`` (the
        ESDs overlaid) and, with ``order="step"``, ``metrics_vs_step``."""
        from funnelscope.report.study_plots import plot_metric_panels, plot_rank_scatter, plot_spectra_by_score

        metrics = _metrics(self.table)
        figures: dict[str, Any] = {}
        for target, label in SERIES_ACCURACIES:
            if target in self.table and self.table[target].notna().sum() >= 3:
                figures[f"metrics_vs_{target}"] = plot_rank_scatter(
                    self.table, metrics, target, target_label=label, labels="name",
                    title=title or f"metrics against {label} ({len(self.table)} models)")
        if self.eigenvalues:
            target, label = next(((c, n) for c, n in SERIES_ACCURACIES[::-1]
                                  if c in self.table and self.table[c].notna().any()), (None, ""))
            scores = None if target is None else dict(zip(self.table["name"], self.table[target], strict=True))
            figures["jacobian_esds"] = plot_spectra_by_score(
                self.eigenvalues, scores, score_label=label, xlabel="eigenvalue λ of M = JJᵀ",
                title=title or f"Jacobian Gram spectra of {len(self.eigenvalues)} models")
        if self.order == "step":
            accuracies = [(c, n) for c, n in SERIES_ACCURACIES if c in self.table and self.table[c].notna().any()]
            figures["metrics_vs_step"] = plot_metric_panels(
                self.table, "step", [*accuracies, *metrics], xlabel="step",
                title=title or "metrics along the checkpoints")
        return figures


def analyze_series(
    models: Any,
    data: Any,
    *,
    out: str | Path,
    hessian: bool = False,
    output: str = "probs",
    method: str = "exact",
    probes: int | None = None,
    n: int | None = None,
    order: str = "given",
    weights: str | Path | None = None,
    factory_args: Mapping[str, Any] | None = None,
    trust_pickle: bool = False,
    workers: int = 1,
    ray: str | None = None,
    batch_size: int = 256,
    device: str | None = None,
    seed: int = 0,
    report: bool = True,
    progress: bool = False,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> SeriesResult:
    """Measure every model of a series on ``data`` and rank-correlate the metrics with accuracy (module
    docstring); resumable in ``out``.

    Kendall's τ (τ-b) and Spearman's ρ of metric ``m`` with accuracy ``a`` over the ``n`` models,

    .. math::

        \\tau = \\frac{n_c - n_d}{\\sqrt{(n_0 - n_1)(n_0 - n_2)}}, \\qquad
        \\rho = 1 - \\frac{6 \\sum_i (r(m_i) - r(a_i))^2}{n(n^2 - 1)} \\ \\text{(without ties)},

    with two-sided p-values (Spearman's exact by enumeration for ``n ≤ 8``).

    Parameters
    ----------
    models : manifest path, sequence of model specs, sequence of SeriesModel, or mapping
        A manifest CSV (:func:`read_manifest`); model specs (TorchScript files, ``module:factory`` with
        ``weights``), named by their file stems; :class:`SeriesModel` entries; or a mapping name → spec or
        ``nn.Module`` (modules are measured in this process: ``workers=1``, no Ray).
    data : str or Path or data
        A DATA spec (``digits``, ``digits:image``, an ``.npz``/``.pt`` file) or anything
        :func:`funnelscope.read_data` reads; with labels, accuracy and loss are measured.
    out : path
        The series directory (an existing one with the same options is resumed).
    hessian : bool
        Also the loss Hessian's λ₁ and trace (needs labels).
    output, method, probes : see :func:`funnelscope.jacobian_spectrum`.
    n : int, optional
        Use the first ``n`` examples.
    order : {"given", "step"}
        ``step``: checkpoints ordered by step (the manifest's ``step``, else the number in the file name),
        with every metric drawn against the step.
    weights, factory_args : for a single ``module:factory`` spec.
    trust_pickle : bool
        Allow unpickling a pickled module.
    workers : int
        Models measured at once in a local process pool.
    ray : str, optional
        A Ray address (``"local"`` starts one) to run on instead.
    batch_size, device, seed : the probes' shared options.
    report : bool
        Write figures and ``report.html``.
    progress : bool
        Progress bar on stderr.
    on_result : callable, optional
        Called with each model's row after it was saved.

    Returns
    -------
    SeriesResult

    Raises
    ------
    FunnelscopeInputError
        Bad models (see :func:`read_manifest`), data, options, ``hessian`` without labels, ``order="step"``
        without steps, ``out`` holding another series or other options — before anything is measured.

    Examples
    --------
    >>> result = analyze_series("series.csv", "digits", out="series-out")  # doctest: +SKIP
    >>> result.correlations[["metric", "target", "kendall_tau"]]  # doctest: +SKIP
    """
    from funnelscope.options import check_choice, check_int

    check_choice("order", order, ORDERS)
    check_int("workers", workers)
    entries = series_entries(models, weights=weights, factory_args=factory_args)
    try:
        return _analyze(entries, data, out=out, hessian=hessian, n=n, order=order, workers=workers, ray=ray,
                        report=report, progress=progress, on_result=on_result,
                        options={"output": output, "method": method, "probes": probes, "hessian": bool(hessian),
                                 "batch_size": batch_size, "device": device, "seed": seed,
                                 "trust_pickle": bool(trust_pickle)})
    finally:
        for entry in entries:
            IN_MEMORY.pop(entry.model, None)


def _analyze(entries: list[SeriesModel], data: Any, *, out: str | Path, hessian: bool, n: int | None, order: str,
             workers: int, ray: str | None, report: bool, progress: bool,
             on_result: Callable[[dict[str, Any]], None] | None, options: dict[str, Any]) -> SeriesResult:
    from funnelscope.studies.runner import run_all

    in_memory = [entry.name for entry in entries if entry.model in IN_MEMORY]
    if in_memory and (workers > 1 or ray is not None):
        raise FunnelscopeInputError(f"models {in_memory[:3]} are objects in this process: give files (TorchScript "
                                    f"or module:factory) to measure them in workers or on Ray")
    if order == "step":
        entries = _with_steps(entries)
    out = check_output_directory(out)
    data_spec, fingerprint, arrays = _data_source(data, n, out)
    if hessian and "y" not in arrays:
        raise FunnelscopeInputError("hessian=True (--hessian) needs data with labels (y)")
    options = {"data": data_spec, "n": n if isinstance(data, str | Path) else None, "data_sha256": fingerprint,
               **options}
    specs = [_spec(entry, options) for entry in entries]
    _check_resume(out, options, specs)
    out.mkdir(exist_ok=True)
    if not isinstance(data, str | Path) and not ((out / "study.json").exists() and (out / "data.npz").exists()):
        atomic_write(out / "data.npz", lambda temporary: _save_npz(temporary, arrays))
    meta = _study_meta(out, options, len(entries))
    runs = run_all(specs, out, workers=workers, ray_address=ray, on_result=on_result, progress=progress,
                   table="series")
    table = _table(runs, order)
    correlations = rank_correlations(table, metrics=SERIES_METRICS, targets=SERIES_ACCURACIES)
    write_table(correlations, out / "correlations", "parquet")
    eigenvalues = {}
    for name in table["name"]:
        path = out / "runs" / name / "jacobian_eigenvalues.parquet"
        if path.exists():
            frame = pd.read_parquet(path)
            eigenvalues[name] = frame.loc[~frame["zero"], "eigenvalue"].to_numpy()
    result = SeriesResult(table, correlations, eigenvalues, out, order)
    if report:
        result = _write_report(result, meta)
    return result


def _with_steps(entries: list[SeriesModel]) -> list[SeriesModel]:
    stepped = []
    for entry in entries:
        step = entry.step if entry.step is not None else step_from_name(entry.model if Path(entry.model).exists()
                                                                         else entry.name)
        if step is None:
            raise FunnelscopeInputError(f"order='step': model {entry.name!r} has no step (give a step column or a "
                                        f"number in its file name)")
        stepped.append(SeriesModel(entry.name, entry.model, entry.weights, entry.factory_args, entry.accuracy, step))
    return stepped


def _data_source(data: Any, n: int | None, out: Path) -> tuple[str, str, dict[str, np.ndarray]]:
    """Where the workers read the data (a DATA spec, or ``out/data.npz`` for data given as objects), its
    SHA-256 and its arrays ``x`` (and ``y``); the data are read and checked here, before any model runs."""
    from funnelscope.data import read_data
    from funnelscope.datasets import load_data

    if isinstance(data, str | Path):
        loaded = load_data(data, limit=n)
        x, y = loaded.x, loaded.y
        spec = str(Path(data).resolve()) if Path(str(data)).exists() else str(data)
    else:
        if n is not None:
            raise FunnelscopeInputError("n is for a DATA spec; pass the examples you want as data")
        batches = read_data(data)
        x, y = batches.inputs(), batches.targets()
        spec = str((out / "data.npz").resolve())
    arrays = {"x": x.detach().cpu().numpy()} | ({} if y is None else {"y": y.detach().cpu().numpy()})
    digest = hashlib.sha256()
    for array in arrays.values():
        digest.update(np.ascontiguousarray(array).tobytes())
    return spec, digest.hexdigest(), arrays


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:  # a file object: np.savez would append .npz to a temporary name
        np.savez(handle, **arrays)


def _spec(entry: SeriesModel, options: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "pretrained", "run_id": entry.name, "name": entry.name, "model": entry.model,
            "weights": entry.weights or "", "factory_args": json.dumps(entry.factory_args, sort_keys=True),
            "reported_accuracy": math.nan if entry.accuracy is None else float(entry.accuracy),
            "step": math.nan if entry.step is None else float(entry.step),
            "options": json.dumps(options, sort_keys=True)}


def _check_resume(out: Path, options: dict[str, Any], specs: list[dict[str, Any]]) -> None:
    """An existing series directory is resumed only with the same options and the same files per name."""
    from funnelscope.studies.runner import completed_runs

    meta_path = out / "study.json"
    if meta_path.exists():
        previous = json.loads(meta_path.read_text())
        if previous.get("study") != STUDY_NAME or previous.get("settings") != json.loads(json.dumps(options)):
            raise FunnelscopeInputError(f"{out}: holds a study or series with other options; choose another --out")
    done = completed_runs(out, table="series")
    known = {row["run_id"]: row for row in done.to_dict("records")}
    for spec in specs:
        row = known.get(spec["run_id"])
        if row is not None and (row["model"], row["weights"], row["factory_args"]) != (
                spec["model"], spec["weights"], spec["factory_args"]):
            raise FunnelscopeInputError(f"{out}: model {spec['name']!r} was measured from {row['model']}, now "
                                        f"{spec['model']}; choose another --out or another name")


def _study_meta(out: Path, options: dict[str, Any], count: int) -> dict[str, Any]:
    from funnelscope.studies.study import _versions

    meta_path = out / "study.json"
    data = options["data"] if options["n"] is None else f"the first {options['n']} examples of {options['data']}"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {
        "study": STUDY_NAME, "title": "A series of pretrained models ranked by their spectra",
        "description": (
            f"{count} pretrained models measured on {data} without training: the weight ESDs' "
            "power-law metrics (Martin, Peng & Mahoney 2021), the data Jacobian Gram's spectrum and, when given, "
            "the Hessian's λ₁ and trace; Kendall's τ and Spearman's ρ of each metric with the measured and the "
            "reported accuracy."),
        "settings": options, "versions": _versions(), "started": _now(), "headline": []}
    meta["finished"] = None
    write_json(meta_path, meta)
    return json.loads(meta_path.read_text())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _table(runs: pd.DataFrame, order: str) -> pd.DataFrame:
    front = ["name", "model", "step", "reported_accuracy", "accuracy", "loss"]
    metrics = [column for column, _ in SERIES_METRICS if column in runs]
    table = runs[[c for c in (*front, *metrics, "seconds") if c in runs]].copy()
    table = table.drop(columns=[c for c in ("step", "reported_accuracy") if table[c].isna().all()])
    if "step" in table and table["step"].notna().all():
        table["step"] = table["step"].astype("Int64")
    if order == "step":
        table = table.sort_values("step", kind="stable")
    return table.reset_index(drop=True)


def _metrics(table: pd.DataFrame) -> list[tuple[str, str]]:
    return [(column, label) for column, label in SERIES_METRICS if column in table and table[column].notna().any()]


def _best(correlations: pd.DataFrame, target: str) -> pd.Series | None:
    part = correlations[correlations["target"] == target].dropna(subset=["kendall_tau"])
    return part.loc[part["kendall_tau"].abs().idxmax()] if len(part) else None


def _write_report(result: SeriesResult, meta: dict[str, Any]) -> SeriesResult:
    """Figures and tables into the studies' layout, the headline, and ``report.html``."""
    from dataclasses import replace

    from funnelscope.report.html import write_report
    from funnelscope.studies.common import fmt
    from funnelscope.studies.study import StudyOutputs

    out = result.directory
    for sub in ("figures", "tables"):
        (out / sub).mkdir(exist_ok=True)
    outputs = StudyOutputs(out)
    captions = {
        "metrics_vs_accuracy": ("Metrics against the measured accuracy", "Each dot is one model (labelled); the "
                                "panel title gives Kendall's τ and Spearman's ρ with the accuracy on the data."),
        "metrics_vs_reported_accuracy": ("Metrics against the reported accuracy", "Each dot is one model "
                                         "(labelled), against the accuracy the manifest reports."),
        "jacobian_esds": ("Jacobian ESDs", "Each model's Jacobian Gram spectrum on the same data, coloured by its "
                          "reported (else measured) accuracy: the density over the top six decades (left) and the "
                          "sorted eigenvalues (right)."),
        "metrics_vs_step": ("Metrics along the checkpoints", "Every metric against the checkpoint's step."),
    }
    for stem, figure in result.figures().items():
        title, caption = captions[stem]
        outputs.figure(figure, stem, title=title, caption=caption, section="Figures")
    outputs.table(result.correlations, "correlations", section="Rank correlations", title="Rank correlations",
                  caption=f"Kendall's τ and Spearman's ρ (two-sided p; Spearman's exact for n ≤ 8) of each metric "
                          f"with each accuracy over the {len(result.table)} models.")
    outputs.table(result.table, "series", section="Models", title="Models",
                  caption="One row per model: its reported and measured accuracy, loss and metrics.")
    outputs.headline_number("models", str(len(result.table)))
    summary = result.summary()
    for target, label in SERIES_ACCURACIES:
        if summary[f"best_{target}"] is not None:
            outputs.headline_number(f"best rank correlation with {label}",
                                    f"{summary[f'best_{target}']}: τ={fmt(summary[f'tau_{target}'], 2)}")
    outputs.write_manifests()
    meta.update(finished=_now(), headline=outputs.headline)
    write_json(out / "study.json", meta)
    return replace(result, report=write_report(out))
