"""What every command shares: the app, options declared once with the API's defaults, user errors as one line."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from funnelscope.errors import FunnelscopeInputError
from funnelscope.probes.jacobian import DEFAULT_PROBES, jacobian_spectrum
from funnelscope.probes.weight_tail import DEFAULT_FINGER_THRESH, DEFAULT_MAX_FINGERS

app = typer.Typer(name="funnelscope", no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  help="Spectra of trained neural networks: weight ESDs, data Jacobians, Hessians and loss landscapes.")
Command = TypeVar("Command", bound=Callable[..., None])
NONE_MEANS = {"device": "the model's device", "probes": f"{DEFAULT_PROBES} for the sketch", "workers": "automatic",
              "max_evals": "no limit", "fix_fingers": "none", "xmin_max": "1.5 × the ESD's peak",
              "max_fingers": str(DEFAULT_MAX_FINGERS), "finger_thresh": str(DEFAULT_FINGER_THRESH)}


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
         "then the data: digits, digits:image, digits:train; a .npz/.pt with x (and y); x.npy or x.npy:y=y.npy "
         "(memory-mapped); a table t.parquet or t.csv with label=COLUMN (default: a column named label), e.g. "
         "t.csv:label=target; or a folder of class folders of images, DIR[:size=S][:mean=M][:std=D][:mode=L] "
         "(resized to S×S, scaled to [0, 1], then (x − mean)/std per channel).")]


def check_out(out: Path | None, plots: bool) -> None:
    from funnelscope.output import check_output_directory

    if plots and out is None:
        raise FunnelscopeInputError("--plots needs --out DIR to write the figures to")
    if out is not None:
        check_output_directory(out)


def read_inputs(arguments: list[str], *, weights: Path | None, factory_args: list[str] | None, n: int | None,
            trust_pickle: bool, out: Path | None, plots: bool) -> tuple[dict, Any]:
    """Models (label → module) and data of a ``MODEL... DATA`` command, and ``--out`` checked, before any work."""
    from funnelscope.datasets import load_data
    from funnelscope.models.loading import load_models
    from funnelscope.options import parse_assignments

    if len(arguments) < 2:
        raise FunnelscopeInputError("give at least one MODEL and then DATA")
    check_out(out, plots)
    data = load_data(arguments[-1], limit=n)
    kwargs = parse_assignments(factory_args or [], option="--factory-arg")
    return load_models(arguments[:-1], weights=weights, factory_kwargs=kwargs, trust_pickle=trust_pickle), data


def report_results(results: dict, *, title: str, out: Path | None, table_format: str, plots: bool) -> None:
    """Print the results' summaries side by side and save them (``out/<model>/``, ``out/summary``)."""
    from funnelscope.probes.result import compare, save_comparison
    from funnelscope.report.terminal import console, print_comparison

    print_comparison(compare(results), title=title)
    if out is not None:
        save_comparison(results, out, format=table_format, figures=plots)
        console.print(f"wrote {out}/", highlight=False)


