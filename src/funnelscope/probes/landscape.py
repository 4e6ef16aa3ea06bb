"""Loss-landscape cross-sections: lines and planes in weight space.

Definitions: ``docs/quantities.md#loss-landscape``.

* :func:`landscape_line`: the linear interpolation ``θ(t) = (1 − t)θ_A + tθ_B`` between two solutions
  (Goodfellow, Vinyals & Saxe 2015), or the line ``θ_A + t·d`` along a filter-normalised random direction
  ``d`` (Li et al. 2018). For interpolations the barrier height is
  ``B = max_{t∈[0,1]} L(θ(t)) − max(L(θ_A), L(θ_B))`` (the grid always holds ``t = 0`` and ``t = 1``).
* :func:`landscape_plane`: ``θ(α, β) = θ_0 + α d_1 + β d_2`` for two filter-normalised random directions,
  the plane through three models (``d_1 = θ_B − θ_A`` and ``θ_C − θ_A`` made orthogonal to it and scaled to
  the same norm, Garipov et al. 2018), or the two leading principal directions of a checkpoint trajectory.

Loss (example-weighted mean) and accuracy are evaluated in eval mode on every data set given. BatchNorm
running statistics are either kept (those of the model — interpolated linearly along a line between two
models, the variance clipped at 0 — or of the plane's origin) or recomputed at every point from the
training data (``bn="recompute"``: a cumulative average over one pass, train mode for the BatchNorm layers
only). Grid points are spread over worker processes (the ``spawn`` context, one torch thread each).

References
----------
.. [1] I. J. Goodfellow, O. Vinyals, A. M. Saxe, "Qualitatively characterizing neural network optimization
   problems", ICLR 2015.
.. [2] H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the loss landscape of neural nets",
   NeurIPS 2018.
.. [3] T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov, A. G. Wilson, "Loss surfaces, mode connectivity,
   and fast ensembling of DNNs", NeurIPS 2018.
"""

from __future__ import annotations

import io
import os
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from funnelscope.data import Batches, read_data
from funnelscope.errors import FunnelscopeInputError, first_line
from funnelscope.models.evaluation import MODEL_ERRORS, evaluating, forward
from funnelscope.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SEED,
    check_bool,
    check_choice,
    check_int,
    check_number,
    make_generator,
    resolve_device,
)
from funnelscope.probes.directions import (
    Direction,
    difference,
    dot,
    filter_normalized_direction,
    norm,
    parameters_of,
    pca_directions,
)
from funnelscope.probes.loss import accuracy_count, loss_sum, resolve_loss
from funnelscope.probes.result import ProbeResult
from funnelscope.progress import progress_bar

__all__ = ["BN_MODES", "LandscapeLine", "LandscapePlane", "landscape_line", "landscape_plane"]

BN_MODES = ("keep", "recompute")
PLANE_DIRECTIONS = ("filter", "pca")
AUTO_POOL_SECONDS = 30.0  # workers=None: processes only when the rest of the grid would take longer inline
_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


@dataclass(frozen=True, eq=False)
class LandscapeLine(ProbeResult):
    """Loss and accuracy along a line in weight space.

    ``save()`` writes ``landscape_line`` (:meth:`to_frame`), ``summary.json`` and, on request, the figure
    ``landscape_line``.

    Attributes
    ----------
    frame : DataFrame
        One row per (t, data set): ``t, dataset, loss, accuracy``.
    kind : str
        ``interpolation`` (between two models) or ``random`` (a filter-normalised direction from one).
    barrier : dict
        Per data set, ``max_{t∈[0,1]} L(t) − max(L(0), L(1))`` (interpolations only; empty otherwise).
    bn : str
        ``keep`` or ``recompute``.
    seconds_per_point : float
        Wall-clock time per grid point (all data sets), including the workers' start-up.
    """

    frame: pd.DataFrame
    kind: str
    barrier: dict[str, float]
    bn: str
    seconds_per_point: float = field(repr=False)

    probe = "landscape_line"

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def figures(self, title: str | None = None) -> dict[str, Any]:
        from funnelscope.report.curvature_plots import plot_landscape_line

        return {"landscape_line": plot_landscape_line(self, title=title or "")}

    def summary(self) -> dict[str, Any]:
        """Per data set: the loss at ``t = 0`` and ``t = 1`` and the barrier height; and ``bn``, ``kind``."""
        out: dict[str, Any] = {"kind": self.kind, "bn": self.bn, "seconds_per_point": self.seconds_per_point}
        for name, rows in self.frame.groupby("dataset", sort=False):
            by_t = rows.set_index("t")["loss"]
            out[f"{name}_loss_0"] = float(by_t.loc[0.0])
            if 1.0 in by_t.index:
                out[f"{name}_loss_1"] = float(by_t.loc[1.0])
            if name in self.barrier:
                out[f"{name}_barrier"] = self.barrier[name]
        return out


@dataclass(frozen=True, eq=False)
class LandscapePlane(ProbeResult):
    """Loss and accuracy on a 2-D grid in weight space.

    ``save()`` writes ``landscape_plane`` (:meth:`to_frame`), ``markers`` (when there are any),
    ``summary.json`` and, on request, the figure ``landscape_plane``.

    Attributes
    ----------
    frame : DataFrame
        One row per (grid point, data set): ``x, y, dataset, loss, accuracy``.
    x, y : ndarray
        The grid's coordinates along the two directions.
    directions : str
        ``filter``, ``models`` or ``pca``.
    bn : str
    markers : DataFrame
        Points to draw on the plane: ``label, x, y`` (the models of a three-model plane, the checkpoints of a
        trajectory in order).
    seconds_per_point : float
    """

    frame: pd.DataFrame
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    directions: str
    bn: str
    markers: pd.DataFrame = field(repr=False)
    seconds_per_point: float = field(repr=False)

    probe = "landscape_plane"

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = {"landscape_plane": self.to_frame()}
        if len(self.markers):
            tables["markers"] = self.markers.copy()
        return tables

    def figures(self, title: str | None = None) -> dict[str, Any]:
        from funnelscope.report.curvature_plots import plot_landscape_plane

        return {"landscape_plane": plot_landscape_plane(self, title=title or "")}

    def grid(self, dataset: str | None = None, metric: str = "loss") -> np.ndarray:
        """The metric as a (len(y), len(x)) array (rows: y) for one data set (default: the first)."""
        names = list(dict.fromkeys(self.frame["dataset"]))
        dataset = names[0] if dataset is None else dataset
        if dataset not in names:
            raise FunnelscopeInputError(f"dataset={dataset!r} must be one of {names}")
        rows = self.frame[self.frame["dataset"] == dataset]
        return rows.pivot(index="y", columns="x", values=metric).to_numpy()

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"directions": self.directions, "bn": self.bn, "points": self.x.size * self.y.size,
                               "seconds_per_point": self.seconds_per_point}
        for name, rows in self.frame.groupby("dataset", sort=False):
            centre = rows.loc[(rows["x"].abs() + rows["y"].abs()).idxmin()]
            out[f"{name}_loss_origin"] = float(centre["loss"])
            out[f"{name}_loss_min"] = float(rows["loss"].min())
            out[f"{name}_loss_max"] = float(rows["loss"].max())
        return out


def landscape_line(
    model: nn.Module,
    data: Any,
    *,
    other: nn.Module | None = None,
    t: tuple[float, float] = (-0.5, 1.5),
    points: int = 41,
    bn: str = "keep",
    loss_fn: Any = None,
    bn_data: Any = None,
    include_1d: bool = False,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    seed: int | None = DEFAULT_SEED,
    progress: bool = False,
) -> LandscapeLine:
    """Loss and accuracy along ``θ(t) = (1 − t)θ_A + tθ_B``, or along ``θ_A + t·d`` for a random ``d``.

    Parameters
    ----------
    model : nn.Module
        Model A, at ``t = 0``. It is not modified.
    data : data set or dict of them
        Each with targets: ``(x, y)``, a LabelledData, a Dataset or a DataLoader
        (:func:`funnelscope.data.read_data`); a dict names them (``{"train": …, "test": …}``), a single data
        set is called ``data``.
    other : nn.Module, optional
        Model B, of the same architecture, at ``t = 1`` (not modified). ``None``: the line along a
        filter-normalised Gaussian direction ``d`` from ``model`` (:mod:`funnelscope.probes.directions`).
    t : (float, float)
        Range of ``t``; ``points`` evenly spaced values, plus ``t = 0`` and ``t = 1`` where they fall inside.
    points : int
    bn : {"keep", "recompute"}
        BatchNorm running statistics: the models' (interpolated), or recomputed at each point on ``bn_data``.
    seed : int or None, default 0
        Seed of the random direction (None: fresh randomness).
    loss_fn : None, "cross_entropy", "mse" or callable
        Per-example loss (default cross-entropy); it must be picklable when ``workers > 1``.
    bn_data : data set, optional
        Data for ``bn="recompute"``; default: ``data["train"]`` or the first data set.
    include_1d : bool
        Random direction on 1-D parameters too (biases, norms); default zero there.
    batch_size : int, default 256
        Batch size for tensor data (a DataLoader keeps its own).
    workers : int, optional
        Processes evaluating grid points (``spawn``, one torch thread each); 1 runs inline. Default: inline,
        unless timing the first points predicts more than 30 s for the rest of the grid; then one process per
        usable core (always inline on a non-CPU device, and when the main script was read from stdin, which
        spawned processes cannot re-import). On 2 cores a 21 × 21 plane of the digits CNN runs faster inline
        (``benchmarks/hessian.py``): starting the processes costs more than they save.
    device : torch device, optional
        Default: the model's device.
    progress : bool
        A progress bar over the grid points on stderr.

    Returns
    -------
    LandscapeLine

    Examples
    --------
    >>> torch.manual_seed(0) and None
    >>> a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    >>> x, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    >>> line = landscape_line(a, (x, y), other=b, points=5, workers=1)
    >>> line.frame["t"].tolist()
    [-0.5, 0.0, 0.5, 1.0, 1.5]
    """
    if not isinstance(model, nn.Module):
        raise FunnelscopeInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if other is not None and not isinstance(other, nn.Module):
        raise FunnelscopeInputError(f"other must be a torch.nn.Module or None, got {type(other).__name__}")
    points = check_int("points", points, minimum=2)
    check_bool("include_1d", include_1d)
    lo, hi = _range("t", t)
    grid = np.unique(np.concatenate([np.linspace(lo, hi, points), [v for v in (0.0, 1.0) if lo <= v <= hi]]))
    grid = np.round(grid, 12) + 0.0
    spec = _Spec.build(model, data, bn=bn, bn_data=bn_data, loss_fn=loss_fn, batch_size=batch_size)
    origin = parameters_of(model)
    if other is not None:
        direction = difference(parameters_of(other, names=list(origin)), origin)
        buffer_direction = _buffer_difference(model, other)
        kind = "interpolation"
    else:
        generator = make_generator(seed)
        direction = filter_normalized_direction(origin, include_1d=include_1d, generator=generator)
        buffer_direction, kind = {}, "random"
    spec.origin, spec.directions, spec.buffer_directions = origin, [direction], [buffer_direction]
    coordinates = [(float(v),) for v in grid]
    start = time.perf_counter()
    rows = _evaluate(spec, coordinates, workers=workers, device=resolve_device(device, model), progress=progress)
    elapsed = (time.perf_counter() - start) / len(coordinates)
    frame = pd.DataFrame([{"t": c[0], **row} for c, point_rows in zip(coordinates, rows, strict=True)
                          for row in point_rows])
    barrier = {}
    if kind == "interpolation" and lo <= 0.0 and hi >= 1.0:
        for name, part in frame.groupby("dataset", sort=False):
            inside = part[(part["t"] >= 0) & (part["t"] <= 1)].set_index("t")["loss"]
            barrier[name] = float(inside.max() - max(inside.loc[0.0], inside.loc[1.0]))
    return LandscapeLine(frame=frame, kind=kind, barrier=barrier, bn=bn, seconds_per_point=elapsed)


def landscape_plane(
    model: nn.Module,
    data: Any,
    *,
    directions: str | tuple[nn.Module, nn.Module] = "filter",
    trajectory: Sequence[nn.Module | Mapping[str, torch.Tensor]] | None = None,
    span: float = 1.0,
    points: int = 21,
    bn: str = "keep",
    loss_fn: Any = None,
    bn_data: Any = None,
    include_1d: bool = False,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    seed: int | None = DEFAULT_SEED,
    progress: bool = False,
) -> LandscapePlane:
    """Loss and accuracy on a ``points × points`` grid of ``θ(α, β) = θ_0 + α d_1 + β d_2``.

    Parameters
    ----------
    model : nn.Module
        The origin ``θ_0`` (model A of a three-model plane, the final point of a trajectory).
    data : data set or dict of them
        As in :func:`landscape_line`.
    directions : "filter", "pca" or (model_b, model_c)
        ``filter``: two independent filter-normalised Gaussian directions, grid ``[−span, span]²``.
        ``(model_b, model_c)``: the plane through three models; ``d_1 = θ_B − θ_A`` and ``d_2`` the part of
        ``θ_C − θ_A`` orthogonal to it, scaled to ``‖d_1‖``, so that ``A = (0, 0)``, ``B = (1, 0)``; the grid
        covers the three models with a margin of ``span/2`` on every side.
        ``pca``: the two leading principal directions of ``θ_i − θ_0`` over ``trajectory`` (unit norm),
        the grid ``[−span·h_k, span·h_k]`` with ``h_k = 1.25 × max_i |coordinate_k|``.
    trajectory : sequence of models or state_dicts, optional
        Checkpoints; needed for ``pca``, drawn on the plane otherwise (projected onto the directions by least
        squares).
    span : float
        Size of the grid, in units of the directions (see ``directions``).
    points : int
        Grid points per axis (default 21: 441 points).
    bn, loss_fn, bn_data, include_1d, workers, batch_size, device, seed, progress
        As in :func:`landscape_line`.

    Returns
    -------
    LandscapePlane
    """
    if not isinstance(model, nn.Module):
        raise FunnelscopeInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    points = check_int("points", points, minimum=2)
    span = check_number("span", span)
    check_bool("include_1d", include_1d)
    spec = _Spec.build(model, data, bn=bn, bn_data=bn_data, loss_fn=loss_fn, batch_size=batch_size)
    origin = parameters_of(model)
    names = list(origin)
    checkpoints = None
    if trajectory is not None:
        if isinstance(trajectory, nn.Module | Mapping) or not isinstance(trajectory, Sequence):
            raise FunnelscopeInputError("trajectory must be a sequence of models or state_dicts")
        checkpoints = [parameters_of(point, names=names) for point in trajectory]
    markers = pd.DataFrame(columns=["label", "x", "y"])
    if isinstance(directions, tuple | list):
        if len(directions) != 2 or not all(isinstance(m, nn.Module) for m in directions):
            raise FunnelscopeInputError("directions=(model_b, model_c) needs two nn.Modules")
        kind = "models"
        d1 = difference(parameters_of(directions[0], names=names), origin)
        to_c = difference(parameters_of(directions[1], names=names), origin)
        scale = norm(d1)
        if scale == 0:
            raise FunnelscopeInputError("model_b has the same parameters as model: no direction")
        c1 = dot(to_c, d1) / scale**2
        rest = {name: to_c[name] - c1 * d1[name] for name in names}
        if norm(rest) <= 1e-12 * scale:
            raise FunnelscopeInputError("the three models lie on one line: no plane through them")
        c2 = norm(rest) / scale
        d2 = {name: rest[name] / c2 for name in names}
        markers = pd.DataFrame({"label": ["A", "B", "C"], "x": [0.0, 1.0, c1], "y": [0.0, 0.0, c2]})
        margin = span / 2
        xs = np.linspace(min(0.0, c1) - margin, max(1.0, c1) + margin, points)
        ys = np.linspace(-margin, c2 + margin, points)
    elif directions == "pca":
        if checkpoints is None:
            raise FunnelscopeInputError("directions='pca' needs a trajectory of checkpoints")
        kind = "pca"
        d1, d2, coords = pca_directions(checkpoints, origin)
        h = 1.25 * np.abs(coords).max(axis=0) * span
        xs, ys = np.linspace(-h[0], h[0], points), np.linspace(-h[1], h[1], points)
    elif directions == "filter":
        kind = "filter"
        generator = make_generator(seed)
        d1 = filter_normalized_direction(origin, include_1d=include_1d, generator=generator)
        d2 = filter_normalized_direction(origin, include_1d=include_1d, generator=generator)
        xs = ys = np.linspace(-span, span, points)
    else:
        raise FunnelscopeInputError(
            f"directions={directions!r} must be 'filter', 'pca' or a (model_b, model_c) pair"
        )
    if checkpoints is not None:
        if kind == "pca":
            coords_xy = coords
        else:
            coords_xy = _project(checkpoints, origin, d1, d2)
        trail = pd.DataFrame({"label": [f"checkpoint {i}" for i in range(len(checkpoints))],
                              "x": coords_xy[:, 0], "y": coords_xy[:, 1]})
        markers = pd.concat([markers, trail], ignore_index=True) if len(markers) else trail
    spec.origin, spec.directions, spec.buffer_directions = origin, [d1, d2], [{}, {}]
    coordinates = [(float(a), float(b)) for b in ys for a in xs]
    start = time.perf_counter()
    rows = _evaluate(spec, coordinates, workers=workers, device=resolve_device(device, model), progress=progress)
    elapsed = (time.perf_counter() - start) / len(coordinates)
    frame = pd.DataFrame([{"x": c[0], "y": c[1], **row} for c, point_rows in zip(coordinates, rows, strict=True)
                          for row in point_rows])
    return LandscapePlane(frame=frame, x=xs, y=ys, directions=kind, bn=bn, markers=markers,
                          seconds_per_point=elapsed)


def _project(checkpoints: list[Direction], origin: Direction, d1: Direction, d2: Direction) -> np.ndarray:
    """Least-squares coordinates of ``θ_i − θ_0`` in ``span{d_1, d_2}``."""
    gram = np.array([[dot(d1, d1), dot(d1, d2)], [dot(d2, d1), dot(d2, d2)]])
    rhs = np.array([[dot(difference(p, origin), d1), dot(difference(p, origin), d2)] for p in checkpoints])
    return np.linalg.lstsq(gram, rhs.T, rcond=None)[0].T


# --------------------------------------------------------------------------------------------------------
# Evaluation (inline or in worker processes)


@dataclass
class _Spec:
    """Everything a worker needs to evaluate grid points: picklable."""

    model_bytes: bytes
    scripted: bool
    datasets: dict[str, Batches]
    bn: str
    bn_batches: Batches | None
    loss_fn: Any
    origin: Direction = field(default_factory=dict)
    directions: list[Direction] = field(default_factory=list)
    buffer_directions: list[Direction] = field(default_factory=list)
    origin_buffers: Direction = field(default_factory=dict)
    model: nn.Module | None = None

    @classmethod
    def build(cls, model: nn.Module, data: Any, *, bn: str, bn_data: Any, loss_fn: Any,
              batch_size: int | None) -> _Spec:
        check_choice("bn", bn, BN_MODES)
        resolve_loss(loss_fn)
        if data is None:
            raise FunnelscopeInputError("data is required: a data set or a dict of named data sets")
        named = dict(data) if isinstance(data, Mapping) else {"data": data}
        if not named:
            raise FunnelscopeInputError("data is an empty dict")
        datasets = {str(name): read_data(value, batch_size=batch_size, name=str(name)).require_targets(
            "the loss needs them") for name, value in named.items()}
        _check_model(model, datasets, resolve_loss(loss_fn))
        bn_batches = None
        if bn == "recompute":
            source = bn_data if bn_data is not None else named.get("train", next(iter(named.values())))
            bn_batches = read_data(source, batch_size=batch_size, name="bn_data")
        buffer = io.BytesIO()
        scripted = isinstance(model, torch.jit.ScriptModule)
        try:
            if scripted:
                torch.jit.save(model, buffer)
            else:
                torch.save(model, buffer)
        except Exception as error:
            raise FunnelscopeInputError(f"the model cannot be copied ({error})") from error
        origin_buffers = {name: value.detach().to("cpu", torch.float64).clone()
                          for name, value in model.named_buffers() if value.is_floating_point()}
        return cls(buffer.getvalue(), scripted, datasets, bn, bn_batches, loss_fn, origin_buffers=origin_buffers)

    def fresh_model(self, device: torch.device) -> nn.Module:
        buffer = io.BytesIO(self.model_bytes)
        if self.scripted:
            return torch.jit.load(buffer, map_location=device)
        return torch.load(buffer, map_location=device, weights_only=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["model"] = None
        return state


@torch.no_grad()
def _check_model(model: nn.Module, datasets: dict[str, Batches], loss_fn: Any) -> None:
    """The model takes every data set's inputs and the loss fits its outputs (a clean error before any work)."""
    device = resolve_device(None, model)
    with evaluating(model, device):
        for name, batches in datasets.items():
            x, y = batches.batches[0]
            output = forward(model, x[:2].to(device))
            try:
                loss_sum(loss_fn, output, y[:2].to(device))
            except FunnelscopeInputError:
                raise
            except MODEL_ERRORS as error:
                raise FunnelscopeInputError(f"{name}: the loss failed on the model's outputs of shape "
                                            f"{tuple(output.shape)}: {first_line(error)}") from error


def _buffer_difference(model_a: nn.Module, model_b: nn.Module) -> Direction:
    buffers_a, buffers_b = dict(model_a.named_buffers()), dict(model_b.named_buffers())
    return {name: (buffers_b[name].double().cpu() - value.double().cpu()) for name, value in buffers_a.items()
            if value.is_floating_point() and name in buffers_b and buffers_b[name].shape == value.shape}


def _evaluate(spec: _Spec, coordinates: list[tuple[float, ...]], *, workers: int | None,
              device: torch.device, progress: bool) -> list[list[dict]]:
    workers = check_int("workers", workers, optional=True)
    target = device
    auto = workers is None
    if auto:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = usable if target.type == "cpu" else 1
    workers = min(workers, len(coordinates))
    if workers > 1 and not _spawn_can_start():
        workers = 1
    if auto and workers > 1 and not _picklable(spec.loss_fn):
        workers = 1
    results: list[list[dict] | None] = [None] * len(coordinates)
    with progress_bar(progress, len(coordinates), "grid points") as advance:
        done = 0
        if workers == 1 or auto:
            spec.model = spec.fresh_model(target)
            for index, point in enumerate(coordinates):
                started = time.perf_counter()
                results[index] = _evaluate_point(spec, point, target)
                advance()
                done = index + 1
                # auto: the second point (the first warms up) times the rest of the grid inline; worker
                # processes (a few seconds to start, one thread each) only pay off beyond AUTO_POOL_SECONDS
                if auto and workers > 1 and index == 1:
                    if (time.perf_counter() - started) * (len(coordinates) - done) > AUTO_POOL_SECONDS:
                        break
                    workers = 1
            if done == len(coordinates):
                return results  # type: ignore[return-value]
        if not _picklable(spec.loss_fn):
            raise FunnelscopeInputError(
                f"loss_fn={spec.loss_fn!r} cannot be sent to worker processes (it cannot be pickled): use workers=1"
            )
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        rest = list(range(done, len(coordinates)))
        chunks = [rest[i :: workers * 4] for i in range(workers * 4)]
        chunks = [chunk for chunk in chunks if chunk]
        context = multiprocessing.get_context("spawn")
        from concurrent.futures.process import BrokenProcessPool

        try:
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                     initargs=(pickle.dumps(spec),)) as pool:
                futures = {pool.submit(_worker_run, [coordinates[i] for i in chunk]): chunk for chunk in chunks}
                for future in as_completed(futures):
                    for index, rows in zip(futures[future], future.result(), strict=True):
                        results[index] = rows
                    advance(len(futures[future]))
        except BrokenProcessPool as error:
            raise FunnelscopeInputError(
                "the worker processes could not load the model (a class defined in a notebook or in __main__ "
                "cannot be imported by a fresh process): use workers=1"
            ) from error
        return results  # type: ignore[return-value]


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


def _spawn_can_start() -> bool:
    """A spawned process re-imports the parent's ``__main__`` from its file: impossible when it was read from
    stdin (``python -``); then the grid is evaluated inline."""
    import sys

    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.exists(main_file)


_WORKER_SPEC: _Spec | None = None


def _worker_init(payload: bytes) -> None:
    global _WORKER_SPEC
    torch.set_num_threads(1)
    spec = pickle.loads(payload)
    spec.model = spec.fresh_model(torch.device("cpu"))
    _WORKER_SPEC = spec


def _worker_run(coordinates: list[tuple[float, ...]]) -> list[list[dict]]:
    assert _WORKER_SPEC is not None
    return [_evaluate_point(_WORKER_SPEC, point, torch.device("cpu")) for point in coordinates]


@torch.no_grad()
def _evaluate_point(spec: _Spec, point: tuple[float, ...], device: torch.device) -> list[dict]:
    model = spec.model
    assert model is not None
    params = dict(model.named_parameters())
    for name, base in spec.origin.items():
        value = base.clone()
        for coefficient, direction in zip(point, spec.directions, strict=True):
            value += coefficient * direction[name]
        params[name].copy_(value.to(params[name].dtype))
    buffers = dict(model.named_buffers())
    if spec.bn == "recompute":
        _recompute_batch_norm(model, spec.bn_batches, device)
    else:
        for coefficient, direction in zip(point, spec.buffer_directions, strict=True):
            for name, delta in direction.items():
                value = spec.origin_buffers[name] + coefficient * delta
                if name.endswith("running_var"):
                    value = value.clamp_min(0.0)
                buffers[name].copy_(value.to(buffers[name].dtype))
    rows = []
    with evaluating(model, device):
        loss_fn = resolve_loss(spec.loss_fn)
        for dataset, batches in spec.datasets.items():
            total, correct = 0.0, 0.0
            for x, y in batches.batches:
                x, y = x.to(device), y.to(device)
                output = forward(model, x)
                total += float(loss_sum(loss_fn, output, y).double())
                correct += accuracy_count(output, y)
            rows.append({"dataset": dataset, "loss": total / batches.n, "accuracy": correct / batches.n})
    return rows


def _recompute_batch_norm(model: nn.Module, batches: Batches | None, device: torch.device) -> None:
    """Running statistics from one pass over ``batches``: a cumulative average (``momentum=None``)."""
    norms = [m for m in model.modules() if isinstance(m, _BN_TYPES) and m.track_running_stats]
    if not norms or batches is None:
        return
    saved = [(m, m.momentum) for m in norms]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for x, _ in batches.batches:
            model(x.to(device))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        for m, mode in modes:
            m.training = mode


def _range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise FunnelscopeInputError(f"{name}={value!r} must be a pair of numbers (low, high)") from err
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise FunnelscopeInputError(f"{name}={value!r} must be finite with low < high")
    return lo, hi
