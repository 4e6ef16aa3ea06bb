"""Layer linearity: how much of each piecewise-linear activation acts linearly on the data.

Definitions: ``docs/quantities.md#layer-linearity``.

For an activation ``a = σ(z)`` with a kink at 0 (ReLU, LeakyReLU, PReLU, RReLU in eval mode, and their
functional forms) applied to pre-activations ``z_{ij}`` of examples ``i = 1…n`` and units ``j``:

* ``always_active``: the fraction of units with ``z_{ij} > 0`` for every example — on the data the layer is
  the identity (times the slope) on them: they could be merged into the next layer;
* ``always_inactive``: units with ``z_{ij} ≤ 0`` for every example (dead, for ReLU);
* ``mean_active``: the fraction of (example, unit) pairs with ``z > 0``;
* ``r2``: the coefficient of determination of the best affine map from the block's input ``u_i`` (the output
  of the previous activation, or the model input for the first) to the activation's output ``a_i``,

  .. math::

      R^2 = 1 - \\frac{\\min_{W, b} \\sum_i \\lVert a_i - W u_i - b \\rVert^2}{\\sum_i \\lVert a_i - \\bar a \\rVert^2},

  fitted by least squares in float64. ``R² = 1`` when the block (an affine layer, then σ) is linear on the
  data. With fewer than ``2(d + 1)`` examples for ``d`` input features an in-sample fit would be exact
  whatever the block does, so the fit is then cross-validated (two folds, out-of-fold residuals: ``r2_method``
  says which). Blocks with more than ``max_features`` input features, and data of fewer than four examples,
  get NaN (``skipped``).

Activations are found by tracing the model with :mod:`torch.fx` (modules and functional calls alike); a model
that cannot be traced falls back to forward hooks on activation modules. A TorchScript model takes neither:
its inlined graph is observed instead (:mod:`funnelscope.probes.script_activations`).

References
----------
.. [1] Y. Zhang, Z. Zhang, T. Luo, Z.-Q. J. Xu, "Embedding principle of loss landscape of deep neural
   networks", NeurIPS 2021 (and "… in depth", 2022).
.. [2] B. Hanin, D. Rolnick, "Deep ReLU networks have surprisingly few activation patterns", NeurIPS 2019.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.fx
from torch import nn

from funnelscope.data import read_data
from funnelscope.errors import FunnelscopeInputError, first_line
from funnelscope.models.evaluation import evaluating
from funnelscope.models.outputs import logits_of
from funnelscope.options import DEFAULT_BATCH_SIZE, check_bool, check_int, resolve_device
from funnelscope.probes.result import ProbeResult
from funnelscope.probes.script_activations import scripted_runner
from funnelscope.progress import progress_bar

__all__ = ["COLUMNS", "LayerLinearity", "layer_linearity"]

ACTIVATION_MODULES = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.RReLU)
ACTIVATION_FUNCTIONS = (torch.relu, torch.relu_, nn.functional.relu, nn.functional.relu_, nn.functional.leaky_relu,
                        nn.functional.leaky_relu_, nn.functional.prelu, torch.prelu)
ACTIVATION_METHODS = ("relu", "relu_")
DEFAULT_MAX_FEATURES = 4096
MIN_R2_EXAMPLES = 4  # fewer examples: r2 is NaN ("skipped"), never an in-sample 1.0
COLUMNS = ("layer", "kind", "units", "n", "always_active", "always_inactive", "mean_active", "r2", "r2_method",
           "input_features")


@dataclass(frozen=True, eq=False)
class LayerLinearity(ProbeResult):
    """How linearly each piecewise-linear activation acts on the data.

    Attributes
    ----------
    frame : DataFrame
        One row per activation call, columns ``COLUMNS`` (see :func:`layer_linearity`).
    n : int
        Examples.

    ``save()`` writes ``linearity`` (:meth:`to_frame`), ``summary.json`` and, on request, the figure
    ``linearity``.
    """

    frame: pd.DataFrame
    n: int

    probe = "linearity"

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def summary(self) -> dict[str, Any]:
        """``n``, ``layers`` and the means over the layers of ``always_active``, ``always_inactive``,
        ``mean_active`` and ``r2`` (over the layers where it was fitted)."""
        means = {f"{column}_mean": float(pd.to_numeric(self.frame[column]).mean())
                 for column in ("always_active", "always_inactive", "mean_active", "r2")}
        return {"n": self.n, "layers": len(self.frame), **means}

    def figures(self, title: str | None = None) -> dict[str, Any]:
        from funnelscope.report.curvature_plots import plot_linearity

        return {"linearity": plot_linearity(self.frame, title=title or "")}


def layer_linearity(
    model: nn.Module,
    data: Any,
    *,
    max_features: int = DEFAULT_MAX_FEATURES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> LayerLinearity:
    """Per piecewise-linear activation: fractions of always-active and always-inactive units, and the R² of
    the best affine map across its block (module docstring).

    Parameters
    ----------
    model : nn.Module
        Run in eval mode; its modes are restored afterwards.
    data : Tensor, ndarray, (x, y), LabelledData, Dataset or DataLoader
        ``n`` examples (:func:`funnelscope.data.read_data`; targets are not used).
    max_features : int, default 4096
        Largest block input (features per example) for which ``r2`` is fitted.
    batch_size : int, default 256
        Examples per forward pass; the result does not depend on it.
    device : torch device, optional
        Default: the model's device.
    progress : bool
        A progress bar over the batches on stderr.

    Returns
    -------
    LayerLinearity
        Its frame has one row per activation call, in execution order: ``layer`` (module name, or the traced
        node's name for a functional call; ``#2``… for repeated calls of one module), ``kind``, ``units``
        (features per example), ``n``, ``always_active``, ``always_inactive``, ``mean_active``, ``r2``,
        ``r2_method`` (``in-sample``, ``2-fold`` or ``skipped``), ``input_features``.

    Raises
    ------
    FunnelscopeInputError
        No piecewise-linear activation found, bad inputs or options.

    Examples
    --------
    >>> torch.manual_seed(0) and None
    >>> layer = nn.Linear(3, 4)
    >>> with torch.no_grad():
    ...     _ = layer.bias.fill_(100.0)  # every pre-activation positive: ReLU is the identity on the data
    >>> frame = layer_linearity(nn.Sequential(layer, nn.ReLU()), torch.randn(50, 3)).to_frame()
    >>> frame[["layer", "always_active", "always_inactive", "r2"]].round(6).values.tolist()
    [['1', 1.0, 0.0, 1.0]]
    """
    if not isinstance(model, nn.Module):
        raise FunnelscopeInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    max_features = check_int("max_features", max_features)
    check_bool("progress", progress)
    batches = read_data(data, batch_size=check_int("batch_size", batch_size))
    target = resolve_device(device, model)
    recorder = _Recorder()
    with evaluating(model, target), torch.no_grad(), \
            progress_bar(progress, len(batches.batches), "batches") as advance:
        runner = _runner(model, recorder)
        try:
            for batch, _ in batches.batches:
                batch = batch.to(target)
                recorder.begin(batch)
                try:
                    logits_of(runner(batch))
                except FunnelscopeInputError:
                    raise
                except Exception as error:
                    raise FunnelscopeInputError(
                        f"the model rejected inputs of shape {tuple(batch.shape)}: {first_line(error)}"
                    ) from error
                advance()
        finally:
            getattr(runner, "close", lambda: None)()
    if not recorder.sites:
        raise FunnelscopeInputError(
            "no piecewise-linear activation (ReLU, LeakyReLU, PReLU, RReLU or their functional forms) was called"
        )
    rows = [site.row(max_features) for site in recorder.sites.values()]
    return LayerLinearity(frame=pd.DataFrame(rows, columns=list(COLUMNS)), n=batches.n)


class _Site:
    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind = name, kind
        self.active_counts: torch.Tensor | None = None
        self.n = 0
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def add(self, block_input: torch.Tensor, z: torch.Tensor, a: torch.Tensor) -> None:
        count = z.shape[0]
        active = (z.reshape(count, -1) > 0).sum(dim=0).cpu()
        self.active_counts = active if self.active_counts is None else self.active_counts + active
        self.n += count
        self.inputs.append(block_input.reshape(count, -1).to("cpu", torch.float64))
        self.outputs.append(a.reshape(count, -1).to("cpu", torch.float64))

    def row(self, max_features: int) -> dict[str, Any]:
        counts = self.active_counts.numpy()
        u, a = torch.cat(self.inputs), torch.cat(self.outputs)
        r2, method = _r2(u, a) if u.shape[1] <= max_features else (np.nan, "skipped")
        return {
            "layer": self.name, "kind": self.kind, "units": int(counts.size), "n": self.n,
            "always_active": float(np.mean(counts == self.n)), "always_inactive": float(np.mean(counts == 0)),
            "mean_active": float(counts.sum() / (self.n * counts.size)), "r2": r2, "r2_method": method,
            "input_features": int(u.shape[1]),
        }


class _Recorder:
    """Collects every activation call of a forward pass, in execution order."""

    def __init__(self) -> None:
        self.sites: dict[str, _Site] = {}
        self.previous: torch.Tensor | None = None
        self.calls: dict[str, int] = {}

    def begin(self, batch: torch.Tensor) -> None:
        self.previous, self.calls = batch, {}

    def record(self, name: str, kind: str, z: torch.Tensor, a: torch.Tensor) -> None:
        if not (isinstance(z, torch.Tensor) and isinstance(a, torch.Tensor)) or z.shape != a.shape:
            return
        self.calls[name] = self.calls.get(name, 0) + 1
        key = name if self.calls[name] == 1 else f"{name}#{self.calls[name]}"
        if key not in self.sites:
            self.sites[key] = _Site(key, kind)
        self.sites[key].add(self.previous, z, a)
        self.previous = a


def _runner(model: nn.Module, recorder: _Recorder) -> Callable[[torch.Tensor], Any]:
    """A callable running ``model`` that reports activation calls to ``recorder`` (fx, else hooks; the graph
    of a TorchScript model)."""
    if isinstance(model, torch.jit.ScriptModule):
        return scripted_runner(model, recorder.record)
    try:
        graph_module = torch.fx.symbolic_trace(model)
    except Exception:
        return _hooked(model, recorder)
    modules = dict(graph_module.named_modules())
    interesting = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), ACTIVATION_MODULES):
            interesting[node.name] = (str(node.target), type(modules[node.target]).__name__)
        elif node.op == "call_function" and node.target in ACTIVATION_FUNCTIONS:
            interesting[node.name] = (node.name, getattr(node.target, "__name__", "relu"))
        elif node.op == "call_method" and node.target in ACTIVATION_METHODS:
            interesting[node.name] = (node.name, "relu")
    if not interesting:
        return _hooked(model, recorder)

    class Interpreter(torch.fx.Interpreter):
        def run_node(self, node: torch.fx.Node) -> Any:
            if node.name not in interesting or not isinstance(node.args[0], torch.fx.Node):
                return super().run_node(node)
            z = self.env[node.args[0]].clone()  # before an in-place activation overwrites it
            result = super().run_node(node)
            recorder.record(*interesting[node.name], z, result)
            return result

    return lambda batch: Interpreter(graph_module).run(batch)


def _hooked(model: nn.Module, recorder: _Recorder) -> Callable[[torch.Tensor], Any]:
    """Forward hooks on activation modules (a pre-hook keeps the input of in-place ones); removed by ``close``."""
    handles, pending = [], {}
    for name, module in model.named_modules():
        if not isinstance(module, ACTIVATION_MODULES):
            continue

        def keep(module: nn.Module, args: tuple, name: str = name) -> None:
            pending[name] = args[0].clone()

        def hook(module: nn.Module, args: tuple, output: Any, name: str = name) -> None:
            recorder.record(name, type(module).__name__, pending.pop(name), output)

        try:
            handles += [module.register_forward_pre_hook(keep), module.register_forward_hook(hook)]
        except Exception:  # a module that takes no hooks
            continue

    def run(batch: torch.Tensor) -> Any:
        return model(batch)

    run.close = lambda: [handle.remove() for handle in handles]  # type: ignore[attr-defined]
    return run


def _r2(u: torch.Tensor, a: torch.Tensor) -> tuple[float, str]:
    """R² of the least-squares affine map ``u ↦ a`` (in-sample, or two-fold cross-validated when n < 2(d+1))."""
    n, d = u.shape
    if n < MIN_R2_EXAMPLES:  # two folds of at least two examples each, or nothing to say
        return np.nan, "skipped"
    total = float(((a - a.mean(dim=0)) ** 2).sum())
    if total == 0:
        return 1.0, "in-sample"  # a constant output is an affine function of anything
    design = torch.cat([u, torch.ones(n, 1, dtype=u.dtype)], dim=1)
    if n >= 2 * (d + 1):
        solution = torch.linalg.lstsq(design, a, driver="gelsd").solution
        return 1.0 - float(((a - design @ solution) ** 2).sum()) / total, "in-sample"
    folds = torch.arange(n) % 2 == 0
    residual = 0.0
    for train in (folds, ~folds):
        solution = torch.linalg.lstsq(design[train], a[train], driver="gelsd").solution
        residual += float(((a[~train] - design[~train] @ solution) ** 2).sum())
    return 1.0 - residual / total, "2-fold"
