"""The study commands: study, demo and report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from funnelscope.cli.common import command


@command
def report(
    study_dir: Annotated[Path, typer.Argument(help="A study directory (with study.json, runs.parquet, figures/).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the HTML.",
                                                show_default="DIR/report.html")] = None,
    title: Annotated[str | None, typer.Option("--title", help="Page title.", show_default="the study's")] = None,
) -> None:
    """Write a study's self-contained HTML report: figures embedded, tables, settings and versions."""
    import warnings

    from funnelscope.report.html import write_report
    from funnelscope.report.terminal import error_console

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        path = write_report(study_dir, output=output, title=title)
    for warning in caught:
        error_console.print(f"[bold yellow]warning:[/] {warning.message}", highlight=False, soft_wrap=True)
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
    from funnelscope.report.terminal import console, error_console, print_headline
    from funnelscope.studies.catalog import get_study
    from funnelscope.studies.study import run_study

    definition = get_study(name)
    console.print(f"[bold]study {name}[/] ({size}) → {out}/", highlight=False)
    result = run_study(definition, out, size=size, progress=True, **options)
    where = result.report if result.report is not None else result.directory
    print_headline(result.headline, title=definition.title,
                   footer=f"{len(result.runs)} runs; results in {result.directory}/; report: {where}")
    for caution in result.cautions:  # what the study says about its own results (also in the report)
        error_console.print(f"[bold yellow]warning:[/] {caution}", highlight=False, soft_wrap=True)
