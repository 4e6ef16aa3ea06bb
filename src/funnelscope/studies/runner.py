"""Running a study's independent runs: in process, on a local process pool, or on a Ray cluster — resumably.

Each run is a flat dict (a *run spec*) with a unique ``run_id`` and a ``kind`` (``train``, ``pareto``,
``matrix``). :func:`execute_run` executes one in any worker: it pins torch to one thread and to deterministic
algorithms (so the same spec gives bit-identical metrics on every backend), writes the run's files into
``runs/.<run_id>.partial/`` and moves them to ``runs/<run_id>/`` only when the run has finished.

:func:`run_all` hands the pending runs to a backend and, as each finishes, appends its row to
``runs.parquet`` (rewritten to a temporary file, then ``os.replace``-d, so the table is never half written).
Runs whose ``run_id`` is already in ``runs.parquet`` are skipped: a study killed midway and started again
finishes the missing runs only, and every run appears exactly once.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from funnelscope.errors import FunnelscopeInputError, first_line
from funnelscope.output import write_table
from funnelscope.progress import progress_bar

RAY_CONNECT_SECONDS = 5.0  # a TCP connection to a --ray address that takes longer is called unreachable

__all__ = ["RUN_KINDS", "check_ray_address", "completed_runs", "execute_run", "run_all", "write_runs_table"]

#: Run kind → ``module:function`` that executes it: ``function(spec, run_dir) -> dict`` of scalar results.
RUN_KINDS = {
    "train": "funnelscope.studies.experiment:train_run",
    "pareto": "funnelscope.studies.calibration:pareto_run",
    "matrix": "funnelscope.studies.calibration:matrix_run",
    "pretrained": "funnelscope.studies.pretrained_series:measure_run",
}


@contextlib.contextmanager
def deterministic_torch() -> Iterator[None]:
    """One torch thread and deterministic algorithms inside the block (the previous settings restored)."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def execute_run(spec: dict[str, Any], study_dir: str) -> dict[str, Any]:
    """Execute one run and return its row: the spec's knobs, the results and ``seconds``.

    The run's files go to ``<study_dir>/runs/<run_id>/`` (staged in a hidden directory, moved in at the end,
    replacing what an interrupted earlier attempt may have left).
    """
    module_name, _, function_name = RUN_KINDS[spec["kind"]].partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    runs = Path(study_dir) / "runs"
    staging = runs / f".{spec['run_id']}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    start = time.perf_counter()
    with deterministic_torch():
        results = function(spec, staging)
    seconds = time.perf_counter() - start
    import json

    (staging / "run.json").write_text(json.dumps({"spec": spec, "results": results}, indent=1, default=str) + "\n")
    final = runs / spec["run_id"]
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return {**spec, **results, "seconds": seconds}


def completed_runs(study_dir: str | Path, *, table: str = "runs") -> pd.DataFrame:
    """The rows of ``<table>.parquet`` (an empty frame when there is none yet)."""
    path = Path(study_dir) / f"{table}.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame({"run_id": pd.Series([], dtype=str)})


def write_runs_table(study_dir: str | Path, rows: list[dict[str, Any]], *, table: str = "runs") -> Path:
    """Write ``<table>.parquet`` atomically (a temporary file beside it, then ``os.replace``)."""
    return write_table(pd.DataFrame(rows), Path(study_dir) / table, "parquet")


def run_all(
    specs: list[dict[str, Any]],
    study_dir: str | Path,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    table: str = "runs",
) -> pd.DataFrame:
    """Execute the runs not yet in ``runs.parquet`` and return the whole table, in the order of ``specs``.

    Parameters
    ----------
    specs : list of dict
        Run specs with unique ``run_id`` values.
    study_dir : path
        The study directory (``runs.parquet`` and ``runs/`` live there).
    workers : int
        Runs at once: 1 runs them in this process; more use a process pool (spawned workers).
    ray_address : str, optional
        Run on Ray instead: ``"local"`` starts a local instance, anything else is passed to ``ray.init``
        (``"auto"``, ``"ray://host:10001"``). Needs the ``ray`` extra.
    on_result : callable, optional
        Called with each finished row after it has been saved (an exception it raises stops the study; the
        saved rows stay).
    progress : bool
        Show a progress bar on stderr.
    table : str
        The table's file stem (``<table>.parquet`` in ``study_dir``): ``runs`` for the studies, ``series``
        for :func:`funnelscope.analyze_series`.

    Raises
    ------
    FunnelscopeInputError
        Duplicate run ids, ``workers < 1``, Ray asked for but not installed.
    """
    ids = [spec["run_id"] for spec in specs]
    if len(set(ids)) != len(ids):
        raise FunnelscopeInputError("run ids must be unique")
    if workers < 1:
        raise FunnelscopeInputError(f"--workers must be at least 1, got {workers}")
    check_ray_address(ray_address)
    study_dir = Path(study_dir)
    done = completed_runs(study_dir, table=table)
    rows = [row for row in done.to_dict("records") if row["run_id"] in set(ids)]
    finished = {row["run_id"] for row in rows}
    pending = [spec for spec in specs if spec["run_id"] not in finished]
    order = {run_id: index for index, run_id in enumerate(ids)}
    if ray_address is not None:
        results = _ray_backend(pending, study_dir, ray_address)
    elif workers == 1 or len(pending) <= 1:
        results = (execute_run(spec, str(study_dir)) for spec in pending)
    else:
        results = _pool_backend(pending, study_dir, workers)
    with progress_bar(progress, len(specs), "runs", completed=len(finished), transient=False) as advance:
        try:
            for row in results:
                rows.append(row)
                rows.sort(key=lambda r: order[r["run_id"]])
                write_runs_table(study_dir, rows, table=table)
                advance(note=f"last: {row['run_id']} ({row['seconds']:.0f} s)")
                if on_result is not None:
                    on_result(row)
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
    return pd.DataFrame(rows)


def _pool_backend(pending: list[dict[str, Any]], study_dir: Path, workers: int) -> Iterator[dict[str, Any]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    executor = ProcessPoolExecutor(max_workers=min(workers, len(pending)),
                                   mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [executor.submit(execute_run, spec, str(study_dir)) for spec in pending]
        for future in as_completed(futures):
            yield future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def check_ray_address(address: str | None, *, timeout: float = RAY_CONNECT_SECONDS) -> None:
    """Refuse a Ray address that cannot work, before anything is written or started: Ray not installed, an
    address that is not ``local``, ``auto``, ``host:port`` or ``ray://host:port``, or a host and port that
    accept no TCP connection within ``timeout`` seconds (``ray.init`` would retry for minutes).

    Raises
    ------
    FunnelscopeInputError
        One line naming the address and the problem.
    """
    if address is None:
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise FunnelscopeInputError("--ray needs Ray: pip install 'funnelscope[ray]'") from None
    if address in ("local", "auto"):
        return
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit():
        raise FunnelscopeInputError(f"--ray {address!r}: expected local, auto, host:port or ray://host:port")
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise FunnelscopeInputError(f"--ray {address}: no Ray cluster reachable there ({reason})") from None


def _ray_backend(pending: list[dict[str, Any]], study_dir: Path, address: str) -> Iterator[dict[str, Any]]:
    import ray

    started_here = False
    if not ray.is_initialized():
        try:
            if address == "local":
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:  # e.g. auto with no cluster running
            raise FunnelscopeInputError(f"--ray {address}: cannot connect ({first_line(error)})") from None
        started_here = True
    remote = ray.remote(num_cpus=1)(execute_run)
    refs = [remote.remote(spec, str(study_dir.resolve())) for spec in pending]
    try:
        while refs:
            ready, refs = ray.wait(refs, num_returns=1)
            yield ray.get(ready[0])
    finally:
        for ref in refs:
            ray.cancel(ref)
        if started_here and address == "local":
            ray.shutdown()
