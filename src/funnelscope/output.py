"""Writing results: tables in Parquet/CSV/JSON, and files and directories that appear whole or not at all.

* :func:`staged_directory`: files are written into a hidden directory beside the target and moved in only when
  everything succeeded, so an error, a Ctrl-C or a failed check leaves the target as it was. A staging
  directory left by a killed process (``SIGKILL`` runs no clean-up) is removed by the next run into the same
  place.
* :func:`write_text` / :func:`write_json`: a temporary file beside the target, then :func:`os.replace`.
* :func:`write_table`: a DataFrame under one of :data:`TABLE_FORMATS`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from funnelscope.errors import FunnelscopeInputError

__all__ = [
    "TABLE_FORMATS",
    "atomic_write",
    "check_output_directory",
    "staged_directory",
    "write_json",
    "write_table",
    "write_text",
]

TABLE_FORMATS = ("parquet", "csv", "json")
_STAGING_MARK = ".funnelscope-staging-"


def check_output_directory(out: str | Path) -> Path:
    """``out`` as a path that can become a directory: not an existing file, its parent an existing directory.
    Called before any computation, so a bad ``--out`` is reported at once."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FunnelscopeInputError(f"{out}: exists and is not a directory")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise FunnelscopeInputError(f"{parent}: no such directory to write {out.name} into")
    return out


@contextlib.contextmanager
def staged_directory(out: str | Path) -> Iterator[Path]:
    """A hidden directory beside ``out`` whose files are moved into ``out`` only if the block succeeds.

    Files already in ``out`` and not rewritten are kept; the staging directory is removed in every case
    (stale ones of dead processes at the start).
    """
    out = check_output_directory(out)
    parent = out.resolve().parent
    _remove_stale_staging(parent, out.name)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}{_STAGING_MARK}{os.getpid()}-", dir=parent))
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


def _remove_stale_staging(parent: Path, name: str) -> None:
    for candidate in parent.glob(f".{name}{_STAGING_MARK}*"):
        pid_text = candidate.name[len(f".{name}{_STAGING_MARK}"):].split("-", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(candidate, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """``write(temporary_path)`` into a temporary file beside ``path``, then :func:`os.replace` it onto ``path``
    (readable by all, as a normal file would be); the temporary file is removed if ``write`` fails."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FunnelscopeInputError(f"{path}: its directory {path.parent} does not exist")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def write_json(path: str | Path, content: Any) -> Path:
    """``content`` as indented, strict JSON (NaN and ±inf as ``null``; numpy values as numbers, other objects
    by ``str``), written atomically."""
    return write_text(path, json.dumps(_jsonable(content), indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy/torch scalars and arrays
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def write_table(frame: pd.DataFrame, path_without_suffix: str | Path, table_format: str = "parquet") -> Path:
    """Write ``frame`` as ``<path>.parquet``, ``.csv`` or ``.json`` (records), atomically."""
    table_format = getattr(table_format, "value", table_format)
    if table_format not in TABLE_FORMATS:
        raise FunnelscopeInputError(f"format={table_format!r} must be one of {', '.join(map(repr, TABLE_FORMATS))}")
    path = Path(path_without_suffix)
    path = path.with_name(f"{path.name}.{table_format}")
    if table_format == "parquet":
        return atomic_write(path, lambda temporary: frame.to_parquet(temporary, index=False))
    if table_format == "csv":
        return atomic_write(path, lambda temporary: frame.to_csv(temporary, index=False))
    return atomic_write(path, lambda temporary: frame.to_json(temporary, orient="records", indent=1))
