"""The ``funnelscope`` command line: a thin view over the public API.

Each command parses its arguments, calls the API, prints the result's ``summary()`` and ``save()``-s it. Options
shared with the API take their defaults from the API's signatures (:func:`api_option`), so the help states
the defaults the library uses. A user mistake (a missing or corrupted file, an unusable model, a bad option)
prints one line naming the file and the problem and exits with code 2, without a traceback; ``--out`` is
checked before any computation and written only once everything succeeded.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from funnelscope.errors import FunnelscopeInputError
from funnelscope.probes.hessian import hessian_spectrum
from funnelscope.probes.jacobian import DEFAULT_PROBES, METHODS, OUTPUTS, jacobian_spectrum
from funnelscope.probes.landscape import BN_MODES, landscape_line, landscape_plane
from funnelscope.probes.linearity import layer_linearity
from funnelscope.probes.weights import analyze_weights
from funnelscope.spectra.trace import TRACE_METHODS

app = typer.Typer(name="funnelscope", no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  help="Spectra of trained neural networks: weight ESDs, data Jacobians, Hessians and loss landscapes.")
Command = TypeVar("Command", bound=Callable[..., None])
NONE_MEANS = {"device": "the model's device", "probes": f"{DEFAULT_PROBES} for the sketch", "workers": "automatic"}


def api_option(function: Callable, name: str, help: str, *flags: str) -> Any:
    """A typer option whose default is ``function``'s default for ``name``, stated in the help."""
    default = inspect.signature(function).parameters[name].default
    shown = NONE_MEANS.get(name, "none") if default is None else (", ".join(map(str, default))
                                                                  if isinstance(default, tuple) else True)
    return typer.Option(default, *flags, help=help, show_default=shown)


def user_errors(command: Command) -> Command:
    """Turn a :class:`FunnelscopeInputError` into ``error: …`` on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        from funnelscope.report.terminal import error_console

        try:
            command(*args, **kwargs)
        except FunnelscopeInputError as error:
            error_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def command(function: Command) -> Command:
    """A command of the app, with user errors turned into one line and exit code 2."""
    return app.command()(user_errors(function))


# options of several commands, declared once
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Directory for the tables, summary and figures.")]
Format = Annotated[str, typer.Option("--format", help="Format of the tables: parquet, csv or json.")]
Plots = Annotated[bool, typer.Option("--plots", help="Write figures too (needs --out).")]
TrustPickle = Annotated[bool, typer.Option("--trust-pickle",
                                           help="Allow unpickling a torch file (runs code from the file).")]
# the shared options of every probe (funnelscope.options): one default, one meaning
DEVICE = api_option(jacobian_spectrum, "device", "torch device, e.g. cpu or cuda.")
SEED = api_option(jacobian_spectrum, "seed", "Seed of every random choice.")
BATCH_SIZE = api_option(jacobian_spectrum, "batch_size", "Examples per forward pass.")
Limit = Annotated[int | None, typer.Option("--n", help="Use the first N examples.", show_default="all examples")]
WeightsFile = Annotated[Path | None, typer.Option("--weights", help="Weights for a module:factory MODEL.")]
FactoryArgs = Annotated[list[str] | None, typer.Option(
    "--factory-arg", help="key=value for the factory (JSON value); repeatable.")]
ModelsAndData = Annotated[list[str], typer.Argument(
    metavar="MODEL... DATA",
    help="One or more models (TorchScript file, module:factory with --weights, or a pickle with --trust-pickle), "
         "then the data: digits, digits:image, digits:train, or a .npz/.pt with x (and y).")]


def _check_out(out: Path | None, plots: bool) -> None:
    from funnelscope.output import check_output_directory

    if plots and out is None:
        raise FunnelscopeInputError("--plots needs --out DIR to write the figures to")
    if out is not None:
        check_output_directory(out)


def _inputs(arguments: list[str], *, weights: Path | None, factory_args: list[str] | None, n: int | None,
            trust_pickle: bool, out: Path | None, plots: bool) -> tuple[dict, Any]:
    """Models (label → module) and data of a ``MODEL... DATA`` command, and ``--out`` checked, before any work."""
    from funnelscope.datasets import load_data
    from funnelscope.models.loading import load_models
    from funnelscope.options import parse_assignments

    if len(arguments) < 2:
        raise FunnelscopeInputError("give at least one MODEL and then DATA")
    _check_out(out, plots)
    data = load_data(arguments[-1], limit=n)
    kwargs = parse_assignments(factory_args or [], option="--factory-arg")
    return load_models(arguments[:-1], weights=weights, factory_kwargs=kwargs, trust_pickle=trust_pickle), data


def _report(results: dict, *, title: str, out: Path | None, table_format: str, plots: bool) -> None:
    """Print the results' summaries side by side and save them (``out/<model>/``, ``out/summary``)."""
    from funnelscope.probes.result import compare, save_comparison
    from funnelscope.report.terminal import console, print_comparison

    print_comparison(compare(results), title=title)
    if out is not None:
        save_comparison(results, out, format=table_format, figures=plots)
        console.print(f"wrote {out}/", highlight=False)


@command
def weights(
    path: Annotated[Path, typer.Argument(help="A .safetensors file, a directory (sharded, Hugging Face) or a "
                                              "torch file.")],
    out: Out = None,
    table_format: Format = "parquet",
    plots: Plots = False,
    layers: Annotated[list[str] | None, typer.Option("--layers", "-l", help="Layer name or shell pattern; repeatable.",
                                                     show_default="all layers")] = None,
    randomize: bool = api_option(analyze_weights, "randomize", "Also analyse element-shuffled matrices "
                                 "(rand_distance, correlation traps)."),
    pool: bool = api_option(analyze_weights, "pool", "Pool convolution slices into one ESD per layer."),
    min_evals: int = api_option(analyze_weights, "min_evals", "Skip layers with fewer eigenvalues."),
    device: str | None = DEVICE,
    trust_pickle: TrustPickle = False,
    strict: Annotated[bool, typer.Option(help="Exit with code 2 if any layer failed.")] = False,
) -> None:
    """Analyse the ESD of every layer matrix: power-law α, norms, ranks, Marchenko–Pastur bulk, phase."""
    from funnelscope.probes.weights import WeightsAnalysis, summarize_weights, weight_spectra
    from funnelscope.report.terminal import console, print_weights_table

    _check_out(out, plots)
    spectra = weight_spectra(path, layers=layers, min_evals=min_evals, pool=pool, randomize=randomize,
                             device=device, trust_pickle=trust_pickle, progress=True)
    result = WeightsAnalysis.from_spectra(spectra, source=str(path), strict=strict, keep_spectra=plots)
    print_weights_table(result.details, summarize_weights(result.details), title=f"weights of {path}")
    if out is not None:
        result.save(out, format=table_format, figures=plots, title=path.name)
        console.print(f"wrote {out}/ (table, summary{', figures' if plots else ''})", highlight=False)


@command
def jacobian(
    models_and_data: ModelsAndData,
    weights_file: WeightsFile = None,
    factory_args: FactoryArgs = None,
    output: str = api_option(jacobian_spectrum, "output", f"Differentiate {', '.join(OUTPUTS)}."),
    method: str = api_option(jacobian_spectrum, "method", f"Rows: {', '.join(METHODS)}."),
    probes: int | None = api_option(jacobian_spectrum, "probes", "Output probes for --method sketch."),
    n: Limit = None,
    batch_size: int = BATCH_SIZE,
    seed: int = SEED,
    device: str | None = DEVICE,
    out: Out = None,
    table_format: Format = "parquet",
    plots: Plots = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """The ESD of the data Jacobian Gram M = 𝒥𝒥ᵀ of each model over DATA.

    Power-law α, λ_max, ranks, the diagonal and its link to confidence; several models side by side."""
    models, data = _inputs(models_and_data, weights=weights_file, factory_args=factory_args, n=n,
                           trust_pickle=trust_pickle, out=out, plots=plots)
    options = {"output": output, "method": method, "probes": probes, "batch_size": batch_size, "seed": seed,
               "device": device, "keep_gram": plots and len(data) <= 4096, "progress": True}
    results = {label: jacobian_spectrum(model, data, **options) for label, model in models.items()}
    _report(results, title=f"Jacobian spectra on {data.name} (output: {output})", out=out,
            table_format=table_format, plots=plots)


@command
def hessian(
    models_and_data: ModelsAndData,
    weights_file: WeightsFile = None,
    factory_args: FactoryArgs = None,
    top_k: int = api_option(hessian_spectrum, "top_k", "Largest eigenvalues to compute."),
    bottom_k: int = api_option(hessian_spectrum, "bottom_k", "Smallest eigenvalues to compute."),
    density: bool = api_option(hessian_spectrum, "density", "Estimate the spectral density."),
    gauss_newton: bool = api_option(hessian_spectrum, "gauss_newton", "Also the Gauss–Newton part's top k."),
    probes: int = api_option(hessian_spectrum, "probes", "Rademacher probes for the density."),
    lanczos_steps: int = api_option(hessian_spectrum, "lanczos_steps", "Most Lanczos steps (products) per run."),
    tol: float = api_option(hessian_spectrum, "tol", "Relative accuracy at which Lanczos stops."),
    trace_method: str = api_option(hessian_spectrum, "trace_method", f"Trace: {', '.join(TRACE_METHODS)}."),
    trace_products: int = api_option(hessian_spectrum, "trace_products", "Products for the trace."),
    n: Limit = None,
    batch_size: int = BATCH_SIZE,
    seed: int = SEED,
    device: str | None = DEVICE,
    out: Out = None,
    table_format: Format = "parquet",
    plots: Plots = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """Top eigenvalues, trace and spectral density of the loss Hessian of each model over DATA.

    Cross-entropy in eval mode; several models side by side."""
    models, data = _inputs(models_and_data, weights=weights_file, factory_args=factory_args, n=n,
                           trust_pickle=trust_pickle, out=out, plots=plots)
    options = {"top_k": top_k, "bottom_k": bottom_k, "density": density, "gauss_newton": gauss_newton, "tol": tol,
               "probes": probes, "lanczos_steps": lanczos_steps, "trace_method": trace_method, "seed": seed,
               "trace_products": trace_products, "batch_size": batch_size, "device": device, "progress": True}
    results = {label: hessian_spectrum(model, data, **options) for label, model in models.items()}
    _report(results, title=f"Hessian spectra on {data.name}", out=out, table_format=table_format, plots=plots)


@command
def landscape(
    models_and_data: Annotated[list[str], typer.Argument(
        metavar="MODEL [MODEL_B [MODEL_C]] DATA",
        help="One model: a random line from it (or --plane); two: the interpolation line between them; three: "
             "the plane through them. Models and DATA as for 'funnelscope hessian'.")],
    weights_file: WeightsFile = None,
    factory_args: FactoryArgs = None,
    plane: Annotated[bool, typer.Option("--plane", help="One model: a plane of two random directions.")] = False,
    points: Annotated[int | None, typer.Option(help="Grid points (per axis for a plane).", show_default=(
        f"{landscape_line.__kwdefaults__['points']} along a line, "
        f"{landscape_plane.__kwdefaults__['points']} on a plane"))] = None,
    t_range: tuple[float, float] = api_option(landscape_line, "t", "Range of t along a line.", "--t"),
    span: float = api_option(landscape_plane, "span", "Size of a plane, in units of its directions."),
    bn: str = api_option(landscape_line, "bn", f"BatchNorm running statistics: {', '.join(BN_MODES)} (on DATA)."),
    extra_data: Annotated[list[str] | None, typer.Option("--also",
                                                         help="Another data set to evaluate on; repeatable.")] = None,
    workers: int | None = api_option(landscape_line, "workers", "Processes for the grid."),
    n: Limit = None,
    seed: int = SEED,
    device: str | None = DEVICE,
    out: Out = None,
    table_format: Format = "parquet",
    plots: Plots = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """Loss and accuracy along a line or on a plane in weight space.

    Filter-normalised directions (Li et al. 2018), or the line between two models with its barrier height."""
    from funnelscope.datasets import load_data

    models, data = _inputs(models_and_data, weights=weights_file, factory_args=factory_args, n=n,
                           trust_pickle=trust_pickle, out=out, plots=plots)
    if len(models) > 3 or (plane and len(models) != 1):
        raise FunnelscopeInputError(f"give one, two or three models (--plane: one), got {len(models)}")
    datasets = {models_and_data[-1]: data, **{spec: load_data(spec, limit=n) for spec in extra_data or []}}
    labels, modules = list(models), list(models.values())
    common = {"bn": bn, "seed": seed, "workers": workers, "device": device, "progress": True}
    if len(modules) == 3 or plane:
        directions = (modules[1], modules[2]) if len(modules) == 3 else "filter"
        result = landscape_plane(modules[0], datasets, directions=directions, span=span,
                                 **({"points": points} if points is not None else {}), **common)
    else:
        result = landscape_line(modules[0], datasets, other=modules[1] if len(modules) == 2 else None, t=t_range,
                                **({"points": points} if points is not None else {}), **common)
    _report({"+".join(labels): result}, title=f"landscape of {', '.join(labels)}", out=out,
            table_format=table_format, plots=plots)


@command
def linearity(
    models_and_data: ModelsAndData,
    weights_file: WeightsFile = None,
    factory_args: FactoryArgs = None,
    n: Limit = None,
    batch_size: int = BATCH_SIZE,
    max_features: int = api_option(layer_linearity, "max_features", "Largest block input for which R² is fitted."),
    device: str | None = DEVICE,
    out: Out = None,
    table_format: Format = "parquet",
    plots: Plots = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """How linearly each piecewise-linear activation of each model acts on DATA.

    Fractions of always-active and always-inactive units, and the R² of the best affine map across the block."""
    models, data = _inputs(models_and_data, weights=weights_file, factory_args=factory_args, n=n,
                           trust_pickle=trust_pickle, out=out, plots=plots)
    results = {label: layer_linearity(model, data, batch_size=batch_size, max_features=max_features,
                                      device=device, progress=True) for label, model in models.items()}
    _report(results, title=f"layer linearity on {data.name}", out=out, table_format=table_format, plots=plots)


@command
def report(
    study_dir: Annotated[Path, typer.Argument(help="A study directory (with study.json, runs.parquet, figures/).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the HTML.",
                                                show_default="DIR/report.html")] = None,
    title: Annotated[str | None, typer.Option("--title", help="Page title.", show_default="the study's")] = None,
) -> None:
    """Write a study's self-contained HTML report: figures embedded, tables, settings and versions."""
    from funnelscope.report.html import write_report

    path = write_report(study_dir, output=output, title=title)
    typer.echo(f"report written to {path} ({path.stat().st_size / 1e6:.2f} MB)")


@command
def study(
    name: Annotated[str, typer.Argument(help="labels, batch-size, lb-sb, ablation, depth-bn, calibration or series.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The study directory (an existing one is resumed).")],
    workers: Annotated[int, typer.Option(help="Runs in parallel in a local process pool.")] = 1,
    ray: Annotated[str | None, typer.Option("--ray", help="Run on Ray: an address, or 'local' to start a local "
                                                          "instance.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A small version that finishes in a minute or two.")] = False,
    seed: Annotated[int, typer.Option(help="Base seed of the runs, the data split and the probes.")] = 0,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="key=value (JSON value) to change a setting; repeatable.")] = None,
) -> None:
    """Run (or resume) a study: controlled training runs on digits, their spectra, figures, tables and report."""
    from funnelscope.options import parse_assignments

    overrides = parse_assignments(settings or [], option="--set")
    _run_study(name, out, size="quick" if quick else "full", workers=workers, ray=ray, seed=seed,
               overrides=overrides)


@command
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes.")] = Path("funnelscope-demo"),
    workers: Annotated[int, typer.Option(help="Runs in parallel in a local process pool.")] = 2,
    size: Annotated[str, typer.Option(help="demo (the README's figures), quick, or tiny (a smoke test).")] = "demo",
) -> None:
    """The labels study on digits: true vs shuffled labels, their spectra, and the report.

    Trains the same MLP with 0, 25, 50, 75 and 100 % of its labels shuffled (under three minutes on two cores),
    probes every network and writes DIR/report.html."""
    _run_study("labels", out, size=size, workers=workers)


def _run_study(name: str, out: Path, *, size: str, **options: Any) -> None:
    from funnelscope.report.terminal import console, print_headline
    from funnelscope.studies.catalog import get_study
    from funnelscope.studies.study import run_study

    definition = get_study(name)
    console.print(f"[bold]study {name}[/] ({size}) → {out}/", highlight=False)
    result = run_study(definition, out, size=size, progress=True, **options)
    where = result.report if result.report is not None else result.directory
    print_headline(result.headline, title=definition.title,
                   footer=f"{len(result.runs)} runs; results in {result.directory}/; report: {where}")


main = app  # the ``funnelscope`` console script

if __name__ == "__main__":
    app()
