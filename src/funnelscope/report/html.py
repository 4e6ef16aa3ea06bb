"""A study's report: one self-contained HTML file (figures embedded, no external link, no JavaScript).

A study directory holds, by contract with :mod:`funnelscope.studies`:

* ``study.json``: ``{"study", "title", "description", "settings", "versions", "started", "finished",
  "headline": [{"label", "value"}, …]}`` and optionally ``"setting_notes": {key: meaning}`` (what a sentinel
  value such as ``train_size: 0`` stands for, shown beside it) and ``"cautions": [text, …]`` (what the study
  found about its own results that a reader must know, e.g. runs that did not fit their labels: shown in a
  "Read with care" box under the headline);
* ``runs.parquet``: one row per finished run (knobs, final accuracies and losses, scalar metrics);
* ``figures/manifest.json`` and ``tables/manifest.json``: lists of ``{"file", "title", "caption", "section"}``
  whose ``file`` (a PNG, SVG or JPEG figure; a CSV table) is relative to the study directory.

:func:`collect_study` reads and checks that contract; :func:`write_report` turns it into ``report.html``:
the headline numbers as cards, the description, one section per ``section`` name in manifest order (its
figures, each with its title and caption under it, then its tables), the runs, the settings and versions, and
when the report was generated. Figures are base64 ``data:`` URIs; long tables are cut with a note and their
full CSV attached as a ``data:`` download link, so the file reads the same without a network.

A report must never be silently broken: an undecodable figure, a missing or unreadable table or malformed
JSON raises :class:`~funnelscope.errors.FunnelscopeInputError` naming the file, and nothing is written. Figures
that are gone (a listed file deleted, or the whole ``figures/`` folder of a finished study) leave the rest of
the report readable: the page says which are missing, in a warning box and in place of each missing figure,
and :func:`write_report` emits a :class:`UserWarning` naming them (the command line prints it as one
``warning:`` line and exits 0).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import re
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from funnelscope.errors import FunnelscopeInputError
from funnelscope.output import write_text

__all__ = ["ReportItem", "StudyContents", "collect_study", "render_report", "write_report"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FIGURE_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_DEFAULT_SECTION = "Results"


@dataclass(frozen=True)
class ReportItem:
    """One figure or table listed in a manifest.

    Attributes
    ----------
    kind : {"figure", "table"}
        Which manifest it came from.
    file : str
        The path as written in the manifest, relative to the study directory.
    path : Path
        The resolved path of the file (checked to exist inside the study directory).
    title, caption, section : str
        Text shown above and under it, and the section it belongs to.
    """

    kind: Literal["figure", "table"]
    file: str
    path: Path
    title: str
    caption: str
    section: str


@dataclass(frozen=True)
class StudyContents:
    """The parsed contents of a study directory (see the module docstring for the contract).

    Attributes
    ----------
    directory : Path
        The study directory.
    name, title, description : str
        From ``study.json`` (``title`` falls back to ``name``).
    settings, versions : dict
        From ``study.json``.
    setting_notes : dict
        ``study.json``'s ``setting_notes``: the meaning shown beside a setting's value.
    started, finished : str or None
        ISO timestamps; ``finished`` is None for a study that has not finished.
    headline : list of (label, value)
        The headline numbers, as strings.
    figures, tables : list of ReportItem
        The manifests' entries, in manifest order (a figure whose file is gone included).
    runs : pandas.DataFrame or None
        ``runs.parquet``, or None when the study has no such file yet.
    warnings : tuple of str
        What the report lacks: missing figure files, or a finished study's missing ``figures/`` folder.
    cautions : tuple of str
        ``study.json``'s ``cautions``: what the study says about its own results (shown beside the headline).
    """

    directory: Path
    name: str
    title: str
    description: str
    settings: dict[str, Any]
    versions: dict[str, Any]
    started: str | None
    finished: str | None
    headline: list[tuple[str, str]]
    setting_notes: dict[str, str] = field(default_factory=dict)
    figures: list[ReportItem] = field(default_factory=list)
    tables: list[ReportItem] = field(default_factory=list)
    runs: pd.DataFrame | None = None
    warnings: tuple[str, ...] = ()
    cautions: tuple[str, ...] = ()

    @property
    def sections(self) -> list[str]:
        """Section names in order of first appearance (figures' manifest first, then tables')."""
        return list(dict.fromkeys(item.section for item in [*self.figures, *self.tables]))


# --------------------------------------------------------------------------------------------- reading


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise FunnelscopeInputError(f"{path}: malformed JSON ({error})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise FunnelscopeInputError(f"{path}: cannot be read ({error})") from None


def _text(value: object, *, where: str, key: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise FunnelscopeInputError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return str(value)


def _mapping(value: object, *, where: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FunnelscopeInputError(f"{where}: {key!r} must be an object, got {type(value).__name__}")
    return value


def _read_manifest(directory: Path, kind: Literal["figure", "table"]) -> list[ReportItem]:
    manifest = directory / f"{kind}s" / "manifest.json"
    if not manifest.exists():
        return []
    entries = _read_json(manifest)
    if not isinstance(entries, list):
        raise FunnelscopeInputError(f"{manifest}: must be a list of entries, got {type(entries).__name__}")
    root = directory.resolve()
    items = []
    for number, entry in enumerate(entries):
        where = f"{manifest} entry {number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not entry["file"]:
            raise FunnelscopeInputError(f"{where}: must be an object with a 'file' string")
        path = (directory / entry["file"]).resolve()
        if not path.is_relative_to(root):
            raise FunnelscopeInputError(f"{where}: file {entry['file']!r} lies outside the study directory")
        if not path.is_file() and kind == "table":  # a missing figure is shown as missing (collect_study)
            raise FunnelscopeInputError(f"{where}: {kind} file {entry['file']!r} not found in {directory}")
        suffixes = _FIGURE_MIME if kind == "figure" else {".csv": "text/csv"}
        if path.suffix.lower() not in suffixes:
            raise FunnelscopeInputError(
                f"{where}: {entry['file']!r} is not a {kind} file (expected {', '.join(suffixes)})"
            )
        section = _text(entry.get("section"), where=where, key="section").strip() or _DEFAULT_SECTION
        items.append(
            ReportItem(
                kind=kind,
                file=entry["file"],
                path=path,
                title=_text(entry.get("title"), where=where, key="title"),
                caption=_text(entry.get("caption"), where=where, key="caption"),
                section=section,
            )
        )
    return items


def collect_study(study_dir: str | Path) -> StudyContents:
    """Read and check a study directory.

    Parameters
    ----------
    study_dir : str or Path
        A directory written by a study (``study.json``, ``runs.parquet``, ``figures/``, ``tables/``).

    Returns
    -------
    StudyContents
        The parsed ``study.json``, both manifests (every listed file checked to exist) and the runs.

    Raises
    ------
    FunnelscopeInputError
        The directory has no ``study.json``; a JSON file is malformed or has fields of the wrong type; a manifest
        lists a file that is missing, outside the directory or of an unknown type; ``runs.parquet`` is unreadable.

    Examples
    --------
    >>> study = collect_study("studies/batch-size")  # doctest: +SKIP
    >>> study.sections, len(study.figures), study.runs.shape  # doctest: +SKIP
    """
    directory = Path(study_dir)
    if not directory.is_dir():
        raise FunnelscopeInputError(f"{directory}: not a directory (expected a study directory with study.json)")
    study_json = directory / "study.json"
    if not study_json.is_file():
        raise FunnelscopeInputError(f"{directory}: not a study directory (no study.json)")
    meta = _read_json(study_json)
    if not isinstance(meta, dict):
        raise FunnelscopeInputError(f"{study_json}: must be a JSON object, got {type(meta).__name__}")
    where = str(study_json)
    name = _text(meta.get("study"), where=where, key="study")
    if not name:
        raise FunnelscopeInputError(f"{study_json}: 'study' (the study's name) is missing")
    headline_raw = meta.get("headline") or []
    if not isinstance(headline_raw, list):
        raise FunnelscopeInputError(f"{study_json}: 'headline' must be a list of {{label, value}} objects")
    headline = []
    for number, card in enumerate(headline_raw):
        if not isinstance(card, dict) or "label" not in card:
            raise FunnelscopeInputError(f"{study_json}: headline entry {number} must be an object with a 'label'")
        key = f"headline[{number}]"
        headline.append((_text(card["label"], where=where, key=key), _text(card.get("value"), where=where, key=key)))
    cautions_raw = meta.get("cautions") or []
    if not isinstance(cautions_raw, list):
        raise FunnelscopeInputError(f"{study_json}: 'cautions' must be a list of strings")
    cautions = tuple(_text(text, where=where, key=f"cautions[{number}]") for number, text in enumerate(cautions_raw))

    runs = None
    runs_path = directory / "runs.parquet"
    if runs_path.exists():
        try:
            runs = pd.read_parquet(runs_path)
        except Exception as error:  # pyarrow raises several types for a corrupted file
            raise FunnelscopeInputError(f"{runs_path}: cannot be read as Parquet ({error})") from None

    figures = _read_manifest(directory, "figure")
    missing = [item.file for item in figures if not item.path.is_file()]
    notes = []
    if missing:
        notes.append(f"{len(missing)} figure(s) listed in figures/manifest.json are missing: {', '.join(missing)}")
    elif not (directory / "figures" / "manifest.json").exists() and meta.get("finished") and runs is not None:
        what = "figures/manifest.json is missing" if (directory / "figures").is_dir() else "figures/ is missing"
        notes.append(f"{what}: the report has no figures")
    return StudyContents(
        directory=directory,
        name=name,
        title=_text(meta.get("title"), where=where, key="title") or name,
        description=_text(meta.get("description"), where=where, key="description"),
        settings=_mapping(meta.get("settings"), where=where, key="settings"),
        versions=_mapping(meta.get("versions"), where=where, key="versions"),
        started=_text(meta.get("started"), where=where, key="started") or None,
        finished=_text(meta.get("finished"), where=where, key="finished") or None,
        headline=headline,
        setting_notes={str(key): _text(value, where=where, key=f"setting_notes.{key}") for key, value in
                       _mapping(meta.get("setting_notes"), where=where, key="setting_notes").items()},
        figures=figures,
        tables=_read_manifest(directory, "table"),
        runs=runs,
        warnings=tuple(notes),
        cautions=cautions,
    )


# --------------------------------------------------------------------------------------------- rendering


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _anchor(text: str) -> str:
    return "section-" + (re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x")


def _check_figure(item: ReportItem, data: bytes) -> tuple[int, int] | None:
    """Decode a figure (so a broken one fails here, not in a reader's browser); return its pixel size if known."""
    suffix = item.path.suffix.lower()
    if suffix == ".svg":
        try:
            root = ElementTree.fromstring(data)
        except ElementTree.ParseError as error:
            raise FunnelscopeInputError(f"figure {item.file!r}: not a valid SVG ({error})") from None
        if not root.tag.endswith("svg"):
            raise FunnelscopeInputError(f"figure {item.file!r}: not an SVG image (root element {root.tag!r})")
        return None
    if suffix == ".png" and not data.startswith(PNG_SIGNATURE):
        raise FunnelscopeInputError(f"figure {item.file!r}: not a PNG image (bad signature)")
    from PIL import Image  # a matplotlib dependency

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.size
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError… for truncated or corrupt data
        raise FunnelscopeInputError(f"figure {item.file!r}: cannot be decoded ({error})") from None


def _column_formatter(values: pd.Series) -> Callable[[Any], str]:
    """One number format for a whole float column, so its digits line up.

    Integral columns print as integers; columns whose magnitudes fit ``[1e-3, 1e6)`` as fixed-point with four
    significant digits of their largest value; anything else (mixed scales) in scientific notation.
    """
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    finite = numbers[np.isfinite(numbers)]
    magnitudes = np.abs(finite[finite != 0])
    if len(finite) and np.all(finite == np.round(finite)) and np.all(np.abs(finite) < 1e15):
        return lambda value: f"{value:.0f}"
    if len(magnitudes) == 0:
        return lambda value: f"{value:.4g}"
    decimals = int(np.clip(3 - np.floor(np.log10(magnitudes.max())), 0, 6))
    if magnitudes.max() < 1e6 and magnitudes.min() >= 10.0 ** (1 - decimals):
        return lambda value: f"{value:.{decimals}f}"
    return lambda value: f"{value:.3e}"


def _cell(value: Any, formatter: Callable[[Any], str] | None) -> str:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA or value is pd.NaT:
        return "—"
    if formatter is not None:
        return "∞" if value == np.inf else "−∞" if value == -np.inf else formatter(value)
    return str(value)


WIDE_TABLE_COLUMNS = 12  # wider tables scroll sideways with their first column pinned, and say so


def _table_html(frame: pd.DataFrame, *, name: str, max_rows: int) -> str:
    """A DataFrame as an escaped HTML table, cut to ``max_rows`` with a note and the full CSV as a download.
    More than :data:`WIDE_TABLE_COLUMNS` columns scroll sideways inside the page (the note says so, the first
    column stays in view) and wrap to the page's width in print.

    Numeric columns are right-aligned, floats formatted per column (:func:`_column_formatter`), missing values
    shown as an em dash; every header and cell goes through :func:`html.escape`.
    """
    shown = frame.head(max_rows)
    header, columns = [], []
    for column in shown.columns:
        series = shown[column]
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        formatter = _column_formatter(series) if pd.api.types.is_float_dtype(series) else None
        css = ' class="num"' if numeric else ""
        header.append(f"<th{css}>{_esc(column)}</th>")
        columns.append((series.tolist(), formatter, css))
    body = []
    for row in range(len(shown)):
        cells = "".join(f"<td{css}>{_esc(_cell(values[row], fmt))}</td>" for values, fmt, css in columns)
        body.append(f"<tr>{cells}</tr>")
    table = f'<table class="data"><thead><tr>{"".join(header)}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    csv = _data_uri(frame.to_csv(index=False).encode("utf-8"), "text/csv")
    download = f'<a class="download" download="{_esc(name)}" href="{csv}">download {_esc(name)}</a>'
    rows, wide = len(frame), frame.shape[1] > WIDE_TABLE_COLUMNS
    if rows > max_rows:
        note = f"showing the first {max_rows} of {rows} rows; {download} for all of them"
    else:
        note = f"{rows} row{'s' if rows != 1 else ''} × {frame.shape[1]} columns · {download}"
    if wide:  # a scrollbar that hides until touched does not say the table goes on
        note += f" · scroll sideways for all {frame.shape[1]} columns (the first stays in view)"
    return (f'<div class="table-wrap{" wide-table" if wide else ""}">{table}</div>\n'
            f'<p class="table-note">{note}</p>')


def _parse_time(text: str | None) -> _dt.datetime | None:
    try:
        return _dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _pretty_time(text: str) -> str:
    """``2025-01-01T10:00:00+00:00`` as ``2025-01-01 10:00:00 UTC`` (text that is not ISO 8601 as it is)."""
    moment = _parse_time(text)
    if moment is None:
        return text
    zone = "" if moment.tzinfo is None else " UTC" if moment.utcoffset() == _dt.timedelta(0) else moment.strftime(" %z")
    return moment.strftime("%Y-%m-%d %H:%M:%S") + zone


def _duration(started: str | None, finished: str | None) -> str:
    start, end = _parse_time(started), _parse_time(finished)
    if start is None or end is None or (start.tzinfo is None) != (end.tzinfo is None) or end < start:
        return ""
    seconds = (end - start).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _paragraphs(text: str) -> str:
    blocks = [block.strip() for block in re.split(r"\n\s*\n", text) if block.strip()]
    return "\n".join(f"<p>{_esc(block)}</p>" for block in blocks)


def _definition_list(values: dict[str, Any], notes: dict[str, str] | None = None) -> str:
    """``key value`` rows; a note (what a sentinel value means) follows its value, an empty string shows as
    ``""`` rather than a blank."""
    if not values:
        return '<p class="muted">none recorded</p>'
    rows = []
    for key, value in values.items():
        shown = (value or '""') if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
        note = (notes or {}).get(key)
        extra = f' <span class="note">({_esc(note)})</span>' if note else ""
        rows.append(f"<dt>{_esc(key)}</dt><dd>{_esc(shown)}{extra}</dd>")
    return '<dl class="kv">' + "".join(rows) + "</dl>"


def _render_figure(item: ReportItem) -> str:
    if not item.path.exists():
        title = f'<h3 class="figure-title">{_esc(item.title)}</h3>' if item.title else ""
        return (f'<figure class="figure missing">{title}<p class="missing-note">missing: '
                f"<code>{_esc(item.file)}</code> is not in the study directory</p></figure>")
    try:
        data = item.path.read_bytes()
    except OSError as error:
        raise FunnelscopeInputError(f"figure {item.file!r}: cannot be read ({error})") from None
    size = _check_figure(item, data)
    # a multi-panel figure (wide, or simply large) gets the full row: at half width its text would be unreadable
    wide = size is not None and (size[0] > 1.6 * size[1] or size[0] >= 900)
    alt = item.title or Path(item.file).name
    title = f'<h3 class="figure-title">{_esc(item.title)}</h3>' if item.title else ""
    caption = f"<figcaption>{_esc(item.caption)}</figcaption>" if item.caption else ""
    dims = f' width="{size[0]}" height="{size[1]}"' if size is not None else ""
    return (
        f'<figure class="figure{" wide" if wide else ""}">{title}'
        f'<img src="{_data_uri(data, _FIGURE_MIME[item.path.suffix.lower()])}" alt="{_esc(alt)}"{dims}>'
        f"{caption}</figure>"
    )


def _render_table(item: ReportItem, *, max_rows: int) -> str:
    try:
        frame = pd.read_csv(item.path)
    except Exception as error:  # pandas raises ParserError, EmptyDataError, UnicodeDecodeError…
        raise FunnelscopeInputError(f"table {item.file!r}: cannot be read as CSV ({error})") from None
    title = f"<h3>{_esc(item.title)}</h3>" if item.title else ""
    caption = f'<p class="caption">{_esc(item.caption)}</p>' if item.caption else ""
    return (
        f'<div class="table-block">{title}{caption}'
        f"{_table_html(frame, name=Path(item.file).name, max_rows=max_rows)}</div>"
    )


_CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d8dee4; --soft: #f6f8fa; --accent: #2f5d8a; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.5;
       font: 15px/1.55 -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Liberation Sans", sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 28px 48px; }
header { border-bottom: 3px solid var(--accent); padding-bottom: 14px; margin-bottom: 20px; }
header h1 { margin: 0 0 6px; font-size: 28px; line-height: 1.25; }
.meta { color: var(--muted); font-size: 13px; }
.meta span + span::before { content: "·"; margin: 0 8px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; background: var(--soft);
         border: 1px solid var(--line); }
.badge.warn { background: #fff4e5; border-color: #f0c36d; }
.warnings { background: #fff4e5; border: 1px solid #f0c36d; border-radius: 6px; padding: 8px 14px; margin: 14px 0; }
.missing-note { color: #8a5a00; }
h2 { font-size: 21px; margin: 36px 0 12px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 0 0 6px; }
p { margin: 0 0 10px; }
.muted { color: var(--muted); }
nav.toc { font-size: 14px; margin: 6px 0 0; }
nav.toc a { color: var(--accent); text-decoration: none; margin-right: 14px; white-space: nowrap; }
nav.toc a:hover { text-decoration: underline; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 12px; margin: 18px 0; }
.card { border: 1px solid var(--line); border-left: 4px solid var(--accent); border-radius: 6px;
        padding: 10px 14px; background: var(--soft); }
.card .value { font-size: 22px; font-weight: 600; line-height: 1.2; overflow-wrap: anywhere;
               font-variant-numeric: tabular-nums; }
.card .label { color: var(--muted); font-size: 13px; margin-top: 2px; }
.description { max-width: 80ch; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 480px), 1fr)); gap: 18px;
           margin: 12px 0 20px; }
figure.figure { margin: 0; padding: 12px; border: 1px solid var(--line); border-radius: 6px; background: #fff;
                display: flex; flex-direction: column; }
figure.figure.wide { grid-column: 1 / -1; }
figure.figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
.figure-title { font-size: 15px; }
figcaption, .caption { color: var(--muted); font-size: 13.5px; margin-top: 8px; }
.table-block { margin: 16px 0 22px; }
.table-block .caption { margin: 0 0 8px; }
.table-wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; width: fit-content;
              max-width: 100%; }
table.data { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: 5px 14px; border-bottom: 1px solid var(--line); text-align: left;
                               white-space: nowrap; }
table.data .num { text-align: right; }
.wide-table { overflow-x: scroll; scrollbar-width: thin; scrollbar-color: #8c959f var(--soft); }
.wide-table table.data th:first-child, .wide-table table.data td:first-child { position: sticky; left: 0;
  background: #fff; box-shadow: 1px 0 0 var(--line); }
.wide-table table.data thead th:first-child { background: var(--soft); }
table.data thead th { background: var(--soft); font-weight: 600; border-bottom: 2px solid var(--line); }
table.data tbody tr:nth-child(even) { background: #fbfcfd; }
table.data tbody tr:last-child td { border-bottom: none; }
.table-note { color: var(--muted); font-size: 12.5px; margin-top: 6px; }
a.download { color: var(--accent); }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; font-size: 13.5px; margin: 8px 0; }
dl.kv dt { font-weight: 600; }
dl.kv dd { margin: 0; font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
           overflow-wrap: anywhere; }
dl.kv dd .note { font-family: -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Liberation Sans", sans-serif;
              color: var(--muted); }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 420px), 1fr)); gap: 24px; }
footer { margin-top: 40px; padding-top: 10px; border-top: 1px solid var(--line); color: var(--muted);
         font-size: 12.5px; }
@media (max-width: 640px) { main { padding: 16px; } header h1 { font-size: 22px; } }
@media print {
  @page { margin: 14mm; }
  body { font-size: 11pt; }
  main { max-width: none; padding: 0; }
  nav.toc, a.download { display: none; }
  h2 { break-after: avoid; }
  figure.figure, .card, .table-block { break-inside: avoid; }
  .table-wrap { overflow: visible; border: none; }
  table.data { font-size: 8.5pt; }
  table.data th, table.data td { white-space: normal; padding: 2px 5px; }
  .wide-table table.data { width: 100%; table-layout: fixed; font-size: 6pt; }
  .wide-table table.data th, .wide-table table.data td { overflow-wrap: anywhere; padding: 1px 2px; position: static; }
}
"""


def render_report(study: StudyContents, *, title: str | None = None, max_rows: int = 30) -> str:
    """The report of a collected study as one HTML string (see :func:`write_report`)."""
    if max_rows < 1:
        raise FunnelscopeInputError(f"max_rows must be at least 1, got {max_rows}")
    page_title = title or study.title
    generated = _pretty_time(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    sections = study.sections
    anchors = {name: f"{_anchor(name)}-{number}" for number, name in enumerate(sections, start=1)}
    toc = [(anchors[name], name) for name in sections]
    if study.runs is not None:
        toc.append(("runs", "All runs" if "Runs" in sections else "Runs"))
    toc.append(("settings", "Settings and versions"))

    status = (
        f"<span>finished {_esc(_pretty_time(study.finished))}</span>"
        if study.finished
        else '<span class="badge warn">not finished</span>'
    )
    started = f"<span>started {_esc(_pretty_time(study.started))}</span>" if study.started else ""
    took = _duration(study.started, study.finished)
    if took:
        status += f"<span>took {_esc(took)}</span>"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(page_title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<header>",
        f"<h1>{_esc(page_title)}</h1>",
        f'<div class="meta"><span>study <span class="badge">{_esc(study.name)}</span></span>{started}{status}'
        + (f"<span>{len(study.runs)} runs</span>" if study.runs is not None else "") + "</div>",
        '<nav class="toc">' + "".join(f'<a href="#{a}">{_esc(n)}</a>' for a, n in toc) + "</nav>",
        "</header>",
    ]
    if study.headline:
        cards = "".join(
            f'<div class="card"><div class="value">{_esc(value)}</div><div class="label">{_esc(label)}</div></div>'
            for label, value in study.headline
        )
        parts.append(f'<section class="cards" aria-label="headline numbers">{cards}</section>')
    if study.warnings:
        items = "".join(f"<li>{_esc(text)}</li>" for text in study.warnings)
        parts.append(f'<section class="warnings" role="alert"><strong>Incomplete report</strong><ul>{items}</ul>'
                     "</section>")
    if study.cautions:
        items = "".join(f"<li>{_esc(text)}</li>" for text in study.cautions)
        parts.append(f'<section class="warnings cautions" role="alert"><strong>Read with care</strong><ul>{items}'
                     "</ul></section>")
    if study.description:
        parts.append(f'<section class="description">{_paragraphs(study.description)}</section>')

    for name in sections:
        parts.append(f'<section id="{anchors[name]}"><h2>{_esc(name)}</h2>')
        figures = [_render_figure(item) for item in study.figures if item.section == name]
        if figures:
            parts.append('<div class="figures">' + "\n".join(figures) + "</div>")
        parts.extend(_render_table(item, max_rows=max_rows) for item in study.tables if item.section == name)
        parts.append("</section>")

    if study.runs is not None:
        parts.append(f'<section id="runs"><h2>{"All runs" if "Runs" in sections else "Runs"}</h2>')
        parts.append(
            '<p class="caption">One row per finished run: its knobs, final accuracies and losses, and '
            "scalar metrics.</p>"
        )
        runs = study.runs
        if "run_id" in runs.columns:  # the key first, whatever order the study wrote
            runs = runs[["run_id", *(column for column in runs.columns if column != "run_id")]]
        parts.append(_table_html(runs, name="runs.csv", max_rows=max_rows))
        parts.append("</section>")

    parts.append('<section id="settings"><h2>Settings and versions</h2><div class="columns">')
    parts.append(f"<div><h3>Settings</h3>{_definition_list(study.settings, study.setting_notes)}</div>")
    parts.append(f"<div><h3>Versions</h3>{_definition_list(study.versions)}</div>")
    parts.append("</div></section>")

    from importlib.metadata import version

    __version__ = version("funnelscope")

    parts.append(
        f"<footer>Generated {_esc(generated)} by funnelscope {_esc(__version__)} from "
        f"<code>{_esc(study.directory.name or study.directory)}</code>. "
        "Self-contained: every figure and table is embedded in this file.</footer>"
    )
    parts.extend(["</main>", "</body>", "</html>", ""])
    return "\n".join(parts)


def write_report(
    study_dir: str | Path,
    *,
    output: str | Path | None = None,
    title: str | None = None,
    max_rows: int = 30,
) -> Path:
    """Write a study's self-contained HTML report.

    Parameters
    ----------
    study_dir : str or Path
        A study directory (see the module docstring for what it holds).
    output : str or Path, optional
        Where to write the report; ``study_dir/report.html`` by default. Written atomically (a temporary file
        beside it, then :func:`os.replace`), so a reader never sees half a report.
    title : str, optional
        The page title; the study's ``title`` by default.
    max_rows : int, default 30
        Tables longer than this show their first ``max_rows`` rows with a note; the full CSV is attached.

    Returns
    -------
    Path
        The report's path.

    Warns
    -----
    UserWarning
        Figures are missing (each named; see the module docstring): the report is written without them.

    Raises
    ------
    FunnelscopeInputError
        The directory is not a study (no ``study.json``), a JSON file is malformed, a listed table is missing, a
        listed figure or table cannot be decoded (the error names the file), or the output's directory does
        not exist. Nothing is written then.

    Examples
    --------
    >>> write_report("studies/batch-size")  # doctest: +SKIP
    PosixPath('studies/batch-size/report.html')
    """
    study = collect_study(study_dir)
    path = Path(output) if output is not None else study.directory / "report.html"
    text = render_report(study, title=title, max_rows=max_rows)
    write_text(path, text)
    for note in study.warnings:
        warnings.warn(f"{study.directory}: {note}", UserWarning, stacklevel=2)
    return path
