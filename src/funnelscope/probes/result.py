"""The protocol every probe result follows: ``summary()``, ``to_frame()``, ``save()``.

A probe is a function ``probe(model, data, *, ...)`` returning a :class:`ProbeResult`:

* ``summary() -> dict``: every scalar the probe reports (what the command line prints is this dict);
* ``to_frame() -> DataFrame``: the probe's main table, with stable column names;
* ``tables() -> dict[str, DataFrame]``: every table ``save`` writes (``to_frame()`` under the probe's name,
  and any others);
* ``figures(title=None) -> dict[str, Figure]``: the probe's figures (drawn on request: matplotlib is imported
  only then);
* ``save(directory, *, format="parquet", figures=False)``: the tables, ``summary.json`` and, on request, the
  figures, written atomically (:func:`funnelscope.output.staged_directory`).

:func:`compare` and :func:`save_comparison` do the same for several models' results side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from funnelscope.errors import FunnelscopeInputError
from funnelscope.output import TABLE_FORMATS, staged_directory, write_json, write_table

__all__ = ["FIGURE_FORMATS", "ProbeResult", "compare", "save_comparison"]

FIGURE_FORMATS = ("png", "svg")


class ProbeResult:
    """Base of the probes' result classes (frozen dataclasses): the saving protocol over ``summary``,
    ``tables`` and ``figures``."""

    probe: ClassVar[str] = "probe"

    def summary(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_frame(self) -> pd.DataFrame:
        raise NotImplementedError

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table :meth:`save` writes, by file stem."""
        return {self.probe: self.to_frame()}

    def figures(self, title: str | None = None) -> dict[str, Any]:
        """The result's figures by file stem (none by default)."""
        return {}

    def comparison_figure(self, results: Mapping[str, ProbeResult]) -> Any | None:
        """A figure of several results of this kind side by side (None: no such figure)."""
        return None

    def save(self, directory: str | Path, *, format: str = "parquet", figures: bool = False,
             figure_format: str = "png", title: str | None = None) -> Path:
        """Write :meth:`tables` as ``<stem>.<format>``, ``summary.json`` and, with ``figures``, every figure
        as ``<stem>.<figure_format>`` into ``directory``, atomically (all or nothing).

        Parameters
        ----------
        directory : str or Path
            Created if needed; files already there that are not rewritten are kept.
        format : {"parquet", "csv", "json"}
        figures : bool
        figure_format : {"png", "svg"}
        title : str, optional
            Title of the figures.
        """
        _check_formats(format, figure_format)
        with staged_directory(directory) as staging:
            self._write(staging, format=format, figures=figures, figure_format=figure_format, title=title)
        return Path(directory)

    def _write(self, directory: Path, *, format: str, figures: bool, figure_format: str,
               title: str | None) -> None:
        for stem, frame in self.tables().items():
            write_table(frame, directory / stem, format)
        write_json(directory / "summary.json", self.summary())
        if figures:
            from funnelscope.report.plots import save_figure

            for stem, figure in self.figures(title).items():
                (directory / stem).parent.mkdir(parents=True, exist_ok=True)
                save_figure(figure, directory / f"{stem}.{figure_format}")


def compare(results: Mapping[str, ProbeResult]) -> pd.DataFrame:
    """One row per model (the index, named ``model``), one column per summary key."""
    frame = pd.DataFrame([result.summary() for result in results.values()], index=list(results))
    frame.index.name = "model"
    return frame


def save_comparison(results: Mapping[str, ProbeResult], directory: str | Path, *, format: str = "parquet",
                    figures: bool = False, figure_format: str = "png") -> Path:
    """Several models' results of one probe: each saved into ``directory/<label>/``, the table of
    :func:`compare` as ``directory/summary.<format>`` and, with ``figures`` and more than one model, the
    comparison figure; atomically."""
    if not results:
        raise FunnelscopeInputError("no results to save")
    _check_formats(format, figure_format)
    with staged_directory(directory) as staging:
        for label, result in results.items():
            (staging / label).mkdir()
            result._write(staging / label, format=format, figures=figures, figure_format=figure_format, title=label)
        write_table(compare(results).reset_index(), staging / "summary", format)
        if figures and len(results) > 1:
            figure = next(iter(results.values())).comparison_figure(results)
            if figure is not None:
                from funnelscope.report.plots import save_figure

                save_figure(figure, staging / f"comparison.{figure_format}")
    return Path(directory)


def _check_formats(table_format: str, figure_format: str) -> None:
    from funnelscope.options import check_choice

    check_choice("format", getattr(table_format, "value", table_format), TABLE_FORMATS)
    check_choice("figure_format", figure_format, FIGURE_FORMATS)
