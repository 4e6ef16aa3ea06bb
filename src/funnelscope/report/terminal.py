"""Tables in the terminal (rich): what the command line prints, drawn from the results' ``summary()``.

One printer for every probe (:func:`print_comparison`: a metrics × models table) and the weights probe's
per-layer table. Piped output (a log, a notebook cell) gets a fixed width that fits the tables instead of
rich's 80 columns.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from funnelscope.probes.weights import WeightsSummary

__all__ = ["console", "error_console", "format_value", "print_comparison", "print_frame", "print_headline",
           "print_weights_table"]

console = Console(width=None if sys.stdout.isatty() else 160)
error_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def format_value(value: Any, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant digits (scientific below 1e-3), NaN and None blank."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3e}"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(item, digits) for item in value)
    return str(value)


def print_comparison(table: pd.DataFrame, *, title: str) -> None:
    """A metrics × models table: one column per row of ``table`` (its index names the models)."""
    grid = Table(title=title, title_justify="left", header_style="bold")
    grid.add_column("metric", no_wrap=True)
    for label in table.index:
        grid.add_column(str(label), justify="right", no_wrap=True)
    for metric in table.columns:
        grid.add_row(str(metric), *[format_value(value) for value in table[metric]])
    console.print(grid)


def print_frame(frame: pd.DataFrame, *, title: str) -> None:
    """Any table, one row per row of ``frame`` (numbers right-aligned)."""
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column])
        grid.add_column(str(column), justify="right" if numeric else "left", no_wrap=not numeric)
    for row in frame.itertuples(index=False):
        grid.add_row(*[format_value(value) for value in row])
    console.print(grid)


# columns the weights options add, shown when present: column → header
OPTION_COLUMNS = {"Lambda": "Λ", "num_fingers": "fingers", "detX_num": "detX", "lora_rank": "r"}


def print_weights_table(details: pd.DataFrame, summary: WeightsSummary, *, title: str) -> None:
    """The per-layer table of the weights probe, and the summary means under it."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for column, justify in (("layer", "left"), ("N×M×rf", "right"), ("α", "right"), ("α̂", "right"),
                            ("log‖W‖²_F", "right"), ("spikes", "right")):
        table.add_column(column, justify=justify, no_wrap=column in ("layer", "N×M×rf"))
    extra = [column for column in OPTION_COLUMNS if column in details.columns]
    for column in extra:
        table.add_column(OPTION_COLUMNS[column], justify="right")
    table.add_column("phase", no_wrap=True)
    table.add_column("status")
    for row in details.to_dict("records"):
        status = row["status"] if row["status"] == "success" else f"[yellow]{row['status']}[/]: {row['reason']}"
        alpha = format_value(row.get("alpha"), 3)
        table.add_row(
            str(row["name"]),
            f"{row['N']}×{row['M']}" + (f"×{row['rf']}" if row.get("rf", 1) != 1 else ""),
            f"[red]{alpha}[/]" if row.get("warning") else alpha,
            format_value(row.get("alpha_weighted"), 3),
            format_value(row.get("log_norm"), 3),
            format_value(row.get("num_spikes")),
            *[format_value(row.get(column), 3) for column in extra],
            str(row.get("phase") or ""),
            status,
        )
    console.print(table)
    means = "  ".join(f"{name}={value:.3f}" for name, value in summary.metrics.items())
    console.print(f"[bold]summary[/] ({summary.note}): {means}", highlight=False)


def print_headline(headline: list[dict[str, str]], *, title: str, footer: str) -> None:
    """A study's headline: label, value rows, then one line (where the results are)."""
    grid = Table(title=title, title_justify="left", header_style="bold")
    grid.add_column("headline")
    grid.add_column("value", justify="right")
    for item in headline:
        grid.add_row(item["label"], item["value"])
    console.print(grid)
    console.print(footer, highlight=False)
