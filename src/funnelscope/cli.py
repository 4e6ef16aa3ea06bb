"""The ``funnelscope`` command line: a thin view over the public API.

A user mistake (a missing or corrupted file, an unusable model, a bad option) prints one line naming the
file and the problem and exits with code 2, without a traceback; output directories are written only once
everything succeeded (files are staged in a temporary directory beside the target and moved in at the end).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from funnelscope.errors import FunnelscopeInputError

app = typer.Typer(
    name="funnelscope",
    help="Spectra of trained neural networks: weight ESDs, data Jacobians, Hessians and loss landscapes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# piped output (a log, a notebook cell) gets a width that fits the tables instead of rich's 80 columns
console = Console(width=None if sys.stdout.isatty() else 160)
error_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
Command = TypeVar("Command", bound=Callable[..., None])


class TableFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"
    json = "json"


def user_errors(command: Command) -> Command:
    """Turn a :class:`FunnelscopeInputError` into ``error: …`` on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        try:
            command(*args, **kwargs)
        except FunnelscopeInputError as error:
            error_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def staged_output(out: Path | None) -> Iterator[Path | None]:
    """A temporary directory beside ``out`` whose files are moved into ``out`` only if the block succeeds."""
    if out is None:
        yield None
        return
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise FunnelscopeInputError(f"{out}: exists and is not a directory")
    parent = out.resolve().parent
    if not parent.exists():
        raise FunnelscopeInputError(f"{parent}: no such directory to write {out.name} into")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        yield staging
        out.mkdir(exist_ok=True)
        for path in sorted(staging.rglob("*")):
            target = out / path.relative_to(staging)
            if path.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(path, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_table(frame: object, path_without_suffix: Path, table_format: TableFormat) -> Path:
    """Write a DataFrame as Parquet, CSV or JSON (records)."""
    path = path_without_suffix.with_suffix(f".{table_format.value}")
    if table_format is TableFormat.parquet:
        frame.to_parquet(path, index=False)
    elif table_format is TableFormat.csv:
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", indent=1)
    return path


def _fmt(value: object, digits: int = 2) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.{digits}f}"
    return "" if value is None else str(value)


def print_weights_table(details: object, summary: object, *, title: str) -> None:
    """The per-layer table and the summary means, readable in a terminal."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for column, justify in (
        ("layer", "left"),
        ("N×M×rf", "right"),
        ("α", "right"),
        ("α̂", "right"),
        ("log‖W‖²_F", "right"),
        ("spikes", "right"),
        ("phase", "left"),
        ("status", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column in ("layer", "N×M×rf", "phase"))
    for row in details.to_dict("records"):
        status = row["status"] if row["status"] == "success" else f"[yellow]{row['status']}[/]: {row['reason']}"
        warning = row.get("warning") or ""
        alpha = _fmt(row.get("alpha"))
        table.add_row(
            str(row["name"]),
            f"{row['N']}×{row['M']}" + (f"×{row['rf']}" if row.get("rf", 1) != 1 else ""),
            f"[red]{alpha}[/]" if warning else alpha,
            _fmt(row.get("alpha_weighted")),
            _fmt(row.get("log_norm")),
            _fmt(row.get("num_spikes"), 0),
            str(row.get("phase") or ""),
            status,
        )
    console.print(table)
    means = "  ".join(f"{name}={value:.3f}" for name, value in summary.metrics.items())
    console.print(f"[bold]summary[/] ({summary.note}): {means}", highlight=False)


WeightsPath = Annotated[
    Path, typer.Argument(help="A .safetensors file, a directory (sharded, Hugging Face) or a torch file.")
]
OutDir = Annotated[Path | None, typer.Option("--out", "-o", help="Directory for the tables, summary and plots.")]
FormatOption = Annotated[TableFormat, typer.Option("--format", help="Format of the per-layer table.")]
PlotsFlag = Annotated[bool, typer.Option("--plots", help="Write figures too (needs --out).")]
LayersOption = Annotated[
    list[str] | None, typer.Option("--layers", "-l", help="Layer name or shell pattern; repeatable.")
]
RandomizeFlag = Annotated[
    bool, typer.Option(help="Also analyse element-shuffled matrices (rand_distance, correlation traps).")
]
PoolFlag = Annotated[bool, typer.Option(help="Pool convolution slices into one ESD per layer.")]
MinEvalsOption = Annotated[int, typer.Option(help="Skip layers with fewer eigenvalues.")]
DeviceOption = Annotated[str | None, typer.Option(help="torch device (default: cuda if available, else cpu).")]
TrustPickleFlag = Annotated[
    bool, typer.Option("--trust-pickle", help="Allow unpickling a torch file (runs code from the file).")
]
StrictFlag = Annotated[bool, typer.Option(help="Exit with code 2 if any layer failed.")]


@app.command()
@user_errors
def weights(
    path: WeightsPath,
    out: OutDir = None,
    table_format: FormatOption = TableFormat.parquet,
    plots: PlotsFlag = False,
    layers: LayersOption = None,
    randomize: RandomizeFlag = False,
    pool: PoolFlag = True,
    min_evals: MinEvalsOption = 8,
    device: DeviceOption = None,
    trust_pickle: TrustPickleFlag = False,
    strict: StrictFlag = False,
) -> None:
    """Analyse the ESD of every layer matrix: power-law α, norms, ranks, Marchenko–Pastur bulk, phase."""
    if plots and out is None:
        raise FunnelscopeInputError("--plots needs --out DIR to write the figures to")
    run_weights(
        path,
        out=out,
        table_format=table_format,
        plots=plots,
        layers=layers,
        randomize=randomize,
        pool=pool,
        min_evals=min_evals,
        device=device,
        trust_pickle=trust_pickle,
        strict=strict,
    )


def run_weights(
    path: Path | str,
    *,
    out: Path | None,
    table_format: TableFormat = TableFormat.parquet,
    plots: bool = False,
    layers: list[str] | None = None,
    randomize: bool = False,
    pool: bool = True,
    min_evals: int = 8,
    device: str | None = None,
    trust_pickle: bool = False,
    strict: bool = False,
    title: str | None = None,
) -> None:
    """The ``weights`` command's work, shared with ``demo``."""
    import pandas as pd

    from funnelscope.probes.weights import summarize_weights, weight_spectra

    with staged_output(out) as staging:
        plot_dir = None
        if plots and staging is not None:
            plot_dir = staging / "plots"
            plot_dir.mkdir()
        rows = []
        for spectrum in weight_spectra(
            path,
            layers=layers,
            min_evals=min_evals,
            pool=pool,
            randomize=randomize,
            device=device,
            trust_pickle=trust_pickle,
            progress=True,
        ):
            rows.append(spectrum.row)
            if plot_dir is not None and spectrum.ok:
                _plot_layer(spectrum, plot_dir)
        details = pd.DataFrame(rows)
        failed = details[details["status"] == "failed"]
        if not (details["status"] == "success").any():
            reasons = "; ".join(f"{n}: {r}" for n, r in zip(details["name"], details["reason"], strict=True))
            raise FunnelscopeInputError(f"{path}: no layer could be analysed ({_truncate(reasons)})")
        if strict and len(failed):
            raise FunnelscopeInputError(
                f"{path}: {len(failed)} layer(s) failed, e.g. {failed['name'].iloc[0]}: {failed['reason'].iloc[0]}"
            )
        summary = summarize_weights(details)
        print_weights_table(details, summary, title=title or f"weights of {path}")
        if staging is not None:
            write_table(details, staging / "weights", table_format)
            (staging / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1) + "\n")
            if plot_dir is not None:
                from funnelscope.report.plots import plot_weights_overview, save_figure

                save_figure(plot_weights_overview(details, title=title or Path(path).name), staging / "overview.png")
    if out is not None:
        console.print(f"wrote {out}/ ({'table, summary' + (', plots' if plots else '')})", highlight=False)


def _plot_layer(spectrum: object, plot_dir: Path) -> None:
    from funnelscope.report.plots import plot_layer_esd, save_figure

    row = spectrum.row
    figure = plot_layer_esd(
        spectrum.eigenvalues,
        fit=spectrum.fit,
        marchenko_pastur=spectrum.marchenko_pastur,
        N=int(row["N"]),
        title=f"{row['layer_id']}: {row['name']} ({row['N']}×{row['M']}) — {row.get('phase', '')}",
    )
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in str(row["name"]))
    save_figure(figure, plot_dir / f"{int(row['layer_id']):03d}_{safe}.png")


def _truncate(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


GRAM_IMAGE_LIMIT = 4096  # --plots keeps M (8n² bytes) for the Gram image up to this many examples
JACOBIAN_ROWS = (
    "n", "k", "d", "method", "lambda_max", "trace", "alpha", "xmin", "D", "stable_rank", "effective_rank",
    "matrix_rank", "offdiag_ratio", "diagonal_alpha", "accuracy", "spearman_confidence", "mean_diagonal_correct",
    "mean_diagonal_incorrect", "auroc_incorrect",
)


@app.command()
@user_errors
def jacobian(
    models_and_data: Annotated[
        list[str],
        typer.Argument(
            metavar="MODEL... DATA",
            help="One or more models (TorchScript file, module:factory with --weights, or a pickle with "
            "--trust-pickle), then the data: digits, digits:image, digits:train, or a .npz/.pt with x (and y).",
        ),
    ],
    weights_file: Annotated[Path | None, typer.Option("--weights", help="Weights for a module:factory MODEL.")] = None,
    factory_args: Annotated[
        list[str] | None, typer.Option("--factory-arg", help="key=value for the factory (JSON value); repeatable.")
    ] = None,
    output: Annotated[str, typer.Option(help="Differentiate probs (softmax), logits or log_probs.")] = "probs",
    method: Annotated[str, typer.Option(help="exact, sketch (with --probes) or auto.")] = "exact",
    probes: Annotated[int | None, typer.Option(help="Output probes for --method sketch.")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Use the first N examples.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per batch (default: automatic).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sketches.")] = 0,
    device: DeviceOption = None,
    out: OutDir = None,
    table_format: FormatOption = TableFormat.parquet,
    plots: PlotsFlag = False,
    trust_pickle: TrustPickleFlag = False,
) -> None:
    """The ESD of the data Jacobian Gram M = 𝒥𝒥ᵀ of each model over DATA.

    Power-law α, λ_max, ranks, the diagonal and its link to confidence; several models side by side."""
    from funnelscope.probes.jacobian import jacobian_spectrum

    models, data = _models_and_data(models_and_data, weights_file=weights_file, factory_args=factory_args, n=n,
                                    trust_pickle=trust_pickle, plots=plots, out=out, labelled=False)
    results = {}
    for label, model in models.items():
        console.print(f"[bold]{label}[/]: Jacobian Gram of {data.name}, n={len(data)}", highlight=False)
        results[label] = jacobian_spectrum(
            model, data.x, data.y, output=output, method=method, probes=probes, seed=seed,
            batch_size=batch_size, device=device, keep_gram=plots and len(data) <= GRAM_IMAGE_LIMIT,
        )
    table = _jacobian_table(results)
    print_comparison(table, title=f"Jacobian spectra on {data.name} (output: {output})")
    with staged_output(out) as staging:
        if staging is None:
            return
        write_table(table.reset_index(names="model"), staging / "jacobian_summary", table_format)
        for label, spectrum in results.items():
            write_table(spectrum.to_frame(), staging / f"{label}_examples", table_format)
            if spectrum.labels is not None:
                write_table(spectrum.per_class(), staging / f"{label}_per_class", table_format)
        if plots:
            from funnelscope.report.jacobian_plots import plot_jacobian, plot_jacobian_comparison
            from funnelscope.report.plots import save_figure

            for label, spectrum in results.items():
                save_figure(plot_jacobian(spectrum, title=label), staging / f"{label}_jacobian.png")
            if len(results) > 1:
                save_figure(plot_jacobian_comparison(results), staging / "jacobian_comparison.png")
    console.print(f"wrote {out}/", highlight=False)


def _parse_factory_args(pairs: list[str]) -> dict[str, object]:
    kwargs: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise FunnelscopeInputError(f"--factory-arg expects key=value, got {pair!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


def _unique_label(spec: str, taken: dict) -> str:
    base = Path(spec).stem if Path(spec).exists() else spec.rpartition(":")[2]
    label = "".join(c if c.isalnum() or c in "._-" else "_" for c in base) or "model"
    suffix = 2
    while label in taken:
        label = f"{base}_{suffix}"
        suffix += 1
    return label


def _jacobian_table(results: dict) -> object:
    """One column per model, one row per metric (JACOBIAN_ROWS)."""
    import pandas as pd

    columns = {}
    for label, spectrum in results.items():
        values = dict(spectrum.summary())
        values["diagonal_alpha"] = spectrum.diagonal_fit.alpha if spectrum.diagonal_fit is not None else float("nan")
        values.update(spectrum.confidence_relation())
        columns[label] = {row: values.get(row) for row in JACOBIAN_ROWS}
    return pd.DataFrame(columns).T


def print_comparison(table: object, *, title: str) -> None:
    """A metrics × models table (the transpose of ``table``) in the terminal."""
    grid = Table(title=title, title_justify="left", header_style="bold")
    grid.add_column("metric", no_wrap=True)
    for label in table.index:
        grid.add_column(str(label), justify="right", no_wrap=True)
    for metric in table.columns:
        cells = []
        for value in table[metric]:
            if isinstance(value, float):
                cells.append("" if value != value else (f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.3e}"))
            else:
                cells.append(str(value))
        grid.add_row(metric, *cells)
    console.print(grid)


# --------------------------------------------------------------------------------------------------------
# Curvature: hessian, landscape, linearity (one block)

ModelsAndData = Annotated[
    list[str],
    typer.Argument(
        metavar="MODEL... DATA",
        help="One or more models (TorchScript file, module:factory with --weights, or a pickle with "
        "--trust-pickle), then the data: digits, digits:image, digits:train, or a .npz/.pt with x and y.",
    ),
]
WeightsFileOption = Annotated[Path | None, typer.Option("--weights", help="Weights for a module:factory MODEL.")]
FactoryArgsOption = Annotated[
    list[str] | None, typer.Option("--factory-arg", help="key=value for the factory (JSON value); repeatable.")
]
LimitOption = Annotated[int | None, typer.Option("--n", help="Use the first N examples.")]
HESSIAN_ROWS = ("n", "dim", "method", "loss", "lambda_max", "lambda_min", "gn_lambda_max", "trace", "trace_stderr",
                "outliers", "bulk_edge", "products", "seconds")


def _models_and_data(models_and_data: list[str], *, weights_file: Path | None, factory_args: list[str] | None,
                      n: int | None, trust_pickle: bool, plots: bool, out: Path | None,
                      labelled: bool = True) -> tuple[dict, object]:
    """Models (label → module) and data of a ``MODEL... DATA`` command, checked before any work (``labelled``:
    the data must have labels)."""
    from funnelscope.datasets import load_data
    from funnelscope.models.loading import load_model

    if len(models_and_data) < 2:
        raise FunnelscopeInputError("give at least one MODEL and then DATA")
    if plots and out is None:
        raise FunnelscopeInputError("--plots needs --out DIR to write the figures to")
    specs, data_spec = models_and_data[:-1], models_and_data[-1]
    if weights_file is not None and len(specs) > 1:
        raise FunnelscopeInputError("--weights goes with a single module:factory MODEL")
    kwargs = _parse_factory_args(factory_args or [])
    data = load_data(data_spec, limit=n)
    if labelled and data.y is None:
        raise FunnelscopeInputError(f"{data_spec}: no labels ('y'): the loss needs them")
    models: dict = {}
    for spec in specs:
        model = load_model(spec, weights=weights_file, factory_kwargs=kwargs, trust_pickle=trust_pickle)
        models[_unique_label(spec, models)] = model
    return models, data


def _print_frame(frame: object, *, title: str) -> None:
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in frame.columns:
        grid.add_column(str(column), justify="left" if frame[column].dtype == object else "right", no_wrap=True)
    for row in frame.itertuples(index=False):
        grid.add_row(*[_fmt(value, 4) if isinstance(value, float) else str(value) for value in row])
    console.print(grid)


@app.command()
@user_errors
def hessian(
    models_and_data: ModelsAndData,
    weights_file: WeightsFileOption = None,
    factory_args: FactoryArgsOption = None,
    top_k: Annotated[int, typer.Option(help="Largest eigenvalues to compute.")] = 5,
    bottom_k: Annotated[int, typer.Option(help="Smallest eigenvalues to compute.")] = 0,
    density: Annotated[bool, typer.Option(help="Estimate the spectral density (probes × steps products).")] = True,
    gauss_newton: Annotated[bool, typer.Option(help="Also the Gauss–Newton part's top eigenvalues.")] = True,
    probes: Annotated[int, typer.Option(help="Rademacher probes for the trace and the density.")] = 8,
    lanczos_steps: Annotated[int, typer.Option(help="Lanczos steps (products) per run.")] = 64,
    n: LimitOption = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per batch (default 256).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the start vectors and probes.")] = 0,
    device: DeviceOption = None,
    out: OutDir = None,
    table_format: FormatOption = TableFormat.parquet,
    plots: PlotsFlag = False,
    trust_pickle: TrustPickleFlag = False,
) -> None:
    """Top eigenvalues, trace and spectral density of the loss Hessian of each model over DATA.

    Cross-entropy in eval mode, with the Gauss–Newton part's top eigenvalues; several models side by side."""
    import pandas as pd

    from funnelscope.probes.hessian import hessian_spectrum

    models, data = _models_and_data(models_and_data, weights_file=weights_file, factory_args=factory_args, n=n,
                                     trust_pickle=trust_pickle, plots=plots, out=out)
    results = {}
    for label, model in models.items():
        console.print(f"[bold]{label}[/]: Hessian of the loss on {data.name}, n={len(data)}", highlight=False)
        results[label] = hessian_spectrum(
            model, (data.x, data.y), top_k=top_k, bottom_k=bottom_k, density=density, gauss_newton=gauss_newton,
            probes=probes, lanczos_steps=lanczos_steps, batch_size=batch_size, seed=seed, device=device,
            progress=True,
        )
    table = pd.DataFrame({label: {row: s.summary()[row] for row in HESSIAN_ROWS} for label, s in results.items()}).T
    print_comparison(table, title=f"Hessian spectra on {data.name}")
    for label, spectrum in results.items():
        top = ", ".join(f"{v:.4g}" for v in spectrum.top_eigenvalues)
        console.print(f"{label}: top eigenvalues {top}", highlight=False)
    with staged_output(out) as staging:
        if staging is None:
            return
        write_table(table.reset_index(names="model"), staging / "hessian_summary", table_format)
        for label, spectrum in results.items():
            write_table(spectrum.to_frame(), staging / f"{label}_eigenvalues", table_format)
            if spectrum.density is not None:
                write_table(spectrum.density.to_frame(), staging / f"{label}_density", table_format)
        if plots:
            from funnelscope.report.curvature_plots import plot_hessian, plot_hessian_comparison
            from funnelscope.report.plots import save_figure

            for label, spectrum in results.items():
                save_figure(plot_hessian(spectrum, title=f"{label}: Hessian on {data.name}"),
                            staging / f"{label}_hessian.png")
            if len(results) > 1:
                save_figure(plot_hessian_comparison(results), staging / "hessian_comparison.png")
    console.print(f"wrote {out}/", highlight=False)


@app.command()
@user_errors
def landscape(
    models_and_data: Annotated[
        list[str],
        typer.Argument(
            metavar="MODEL [MODEL_B [MODEL_C]] DATA",
            help="One model: a random line from it (or --plane); two: the interpolation line between them; "
            "three: the plane through them. Models and DATA as for 'funnelscope hessian'.",
        ),
    ],
    weights_file: WeightsFileOption = None,
    factory_args: FactoryArgsOption = None,
    plane: Annotated[bool, typer.Option("--plane", help="One model: a plane of two random directions.")] = False,
    points: Annotated[int | None, typer.Option(help="Grid points (per axis for a plane; default 41 / 21).")] = None,
    t_range: Annotated[
        tuple[float, float], typer.Option("--t", help="Range of t along a line.")
    ] = (-0.5, 1.5),
    span: Annotated[float, typer.Option(help="Size of a plane, in units of its directions.")] = 1.0,
    bn: Annotated[str, typer.Option(help="BatchNorm running statistics: keep or recompute (on DATA).")] = "keep",
    extra_data: Annotated[
        list[str] | None, typer.Option("--also", help="Another data set to evaluate on; repeatable.")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Processes for the grid (default: automatic).")] = None,
    n: LimitOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the random directions.")] = 0,
    device: DeviceOption = None,
    out: OutDir = None,
    table_format: FormatOption = TableFormat.parquet,
    plots: PlotsFlag = False,
    trust_pickle: TrustPickleFlag = False,
) -> None:
    """Loss and accuracy along a line or on a plane in weight space.

    Filter-normalised directions (Li et al. 2018), or the line between two models with its barrier height."""
    from funnelscope.datasets import load_data
    from funnelscope.probes.landscape import landscape_line, landscape_plane

    models, data = _models_and_data(models_and_data, weights_file=weights_file, factory_args=factory_args, n=n,
                                     trust_pickle=trust_pickle, plots=plots, out=out)
    if len(models) > 3:
        raise FunnelscopeInputError(f"give one, two or three models, got {len(models)}")
    if plane and len(models) != 1:
        raise FunnelscopeInputError("--plane goes with one model (three models always give a plane)")
    datasets = {models_and_data[-1]: (data.x, data.y)}
    for spec in extra_data or []:
        extra = load_data(spec, limit=n)
        if extra.y is None:
            raise FunnelscopeInputError(f"{spec}: no labels ('y'): the loss needs them")
        datasets[spec] = (extra.x, extra.y)
    labels, modules = list(models), list(models.values())
    common = {"bn": bn, "seed": seed, "workers": workers, "device": device, "progress": True}
    if len(modules) == 3 or plane:
        directions = (modules[1], modules[2]) if len(modules) == 3 else "filter"
        result = landscape_plane(modules[0], datasets, directions=directions, span=span, points=points or 21,
                                 **common)
    else:
        result = landscape_line(modules[0], modules[1] if len(modules) == 2 else None, datasets, t=t_range,
                                points=points or 41, **common)
    summary = {key: (float(value) if isinstance(value, int | float) else value)
               for key, value in result.summary().items()}
    grid = Table(title=f"landscape of {', '.join(labels)}", title_justify="left", header_style="bold")
    grid.add_column("quantity")
    grid.add_column("value", justify="right")
    for key, value in summary.items():
        grid.add_row(key, _fmt(value, 4) if isinstance(value, float) else str(value))
    console.print(grid)
    with staged_output(out) as staging:
        if staging is None:
            return
        kind = "plane" if len(modules) == 3 or plane else "line"
        write_table(result.to_frame(), staging / f"landscape_{kind}", table_format)
        (staging / "landscape_summary.json").write_text(
            json.dumps({"models": labels, **summary}, indent=1, default=str) + "\n"
        )
        if plots:
            from funnelscope.report.curvature_plots import plot_landscape_line, plot_landscape_plane
            from funnelscope.report.plots import save_figure

            if kind == "line":
                names = (labels[0], labels[1] if len(labels) > 1 else "")
                save_figure(plot_landscape_line(result, labels=names), staging / "landscape_line.png")
            else:
                save_figure(plot_landscape_plane(result), staging / "landscape_plane.png")
    console.print(f"wrote {out}/", highlight=False)


@app.command()
@user_errors
def linearity(
    models_and_data: ModelsAndData,
    weights_file: WeightsFileOption = None,
    factory_args: FactoryArgsOption = None,
    n: LimitOption = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per batch (default 256).")] = None,
    device: DeviceOption = None,
    out: OutDir = None,
    table_format: FormatOption = TableFormat.parquet,
    plots: PlotsFlag = False,
    trust_pickle: TrustPickleFlag = False,
) -> None:
    """How linearly each piecewise-linear activation of each model acts on DATA.

    Fractions of always-active and always-inactive units, and the R² of the best affine map across the block."""
    from funnelscope.probes.linearity import layer_linearity

    models, data = _models_and_data(models_and_data, weights_file=weights_file, factory_args=factory_args, n=n,
                                     trust_pickle=trust_pickle, plots=plots, out=out, labelled=False)
    frames = {}
    for label, model in models.items():
        frames[label] = layer_linearity(model, data.x, batch_size=batch_size, device=device)
        _print_frame(frames[label], title=f"{label}: layer linearity on {data.name}")
    with staged_output(out) as staging:
        if staging is None:
            return
        for label, frame in frames.items():
            write_table(frame, staging / f"{label}_linearity", table_format)
            if plots:
                from funnelscope.report.curvature_plots import plot_linearity
                from funnelscope.report.plots import save_figure

                save_figure(plot_linearity(frame, title=f"{label}: layer linearity on {data.name}"),
                            staging / f"{label}_linearity.png")
    console.print(f"wrote {out}/", highlight=False)


@app.command()
@user_errors
def report(
    study_dir: Annotated[Path, typer.Argument(help="A study directory (with study.json, runs.parquet, figures/).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the HTML (default: DIR/report.html).")
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="Page title (default: the study's title).")] = None,
) -> None:
    """Write a study's self-contained HTML report: figures embedded, tables, settings and versions."""
    from funnelscope.report.html import write_report

    path = write_report(study_dir, output=output, title=title)
    console.print(f"report written to {path} ({path.stat().st_size / 1e6:.2f} MB)", highlight=False)


@app.command()
@user_errors
def study(
    name: Annotated[str, typer.Argument(help="labels, batch-size, lb-sb, ablation, depth-bn, calibration or series.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The study directory (an existing one is resumed).")],
    workers: Annotated[int, typer.Option(help="Runs in parallel in a local process pool.")] = 1,
    ray: Annotated[
        str | None, typer.Option("--ray", help="Run on Ray: an address, or 'local' to start a local instance.")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A small version that finishes in a minute or two.")] = False,
    seed: Annotated[int, typer.Option(help="Base seed of the runs, the data split and the probes.")] = 0,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="key=value (JSON value) to change a setting; repeatable.")
    ] = None,
) -> None:
    """Run (or resume) a study: controlled training runs on digits, their spectra, figures, tables and report."""
    from funnelscope.studies.catalog import get_study
    from funnelscope.studies.study import run_study

    definition = get_study(name)
    overrides = {key.replace("-", "_"): value for key, value in _parse_factory_args(settings or []).items()}
    console.print(f"[bold]study {name}[/] ({'quick' if quick else 'full'}) → {out}/", highlight=False)
    result = run_study(definition, out, size="quick" if quick else "full", workers=workers, ray=ray, seed=seed,
                       overrides=overrides, progress=True)
    _print_headline(result, title=definition.title)


def _print_headline(result: object, *, title: str) -> None:
    grid = Table(title=title, title_justify="left", header_style="bold")
    grid.add_column("headline")
    grid.add_column("value", justify="right")
    for item in result.headline:
        grid.add_row(item["label"], item["value"])
    console.print(grid)
    where = result.report if result.report is not None else result.directory
    console.print(f"{len(result.runs)} runs; results in {result.directory}/; report: {where}", highlight=False)


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the demo's outputs.")] = Path(
        "funnelscope-demo"
    ),
    workers: Annotated[int, typer.Option(help="Runs in parallel in a local process pool.")] = 2,
) -> None:
    """The labels study on digits: true vs shuffled labels, their spectra, and the report.

    Trains the same MLP with 0, 25, 50, 75 and 100 % of its labels shuffled (under three minutes on two cores),
    probes every network and writes DIR/report.html."""
    from funnelscope.studies.catalog import get_study
    from funnelscope.studies.study import run_study

    definition = get_study("labels")
    console.print(f"[bold]funnelscope demo[/]: the labels study on digits → {out}/", highlight=False)
    result = run_study(definition, out, size="demo", workers=workers, progress=True)
    _print_headline(result, title=definition.title)


def main() -> None:
    """Entry point of the ``funnelscope`` console script."""
    app()


if __name__ == "__main__":
    main()
