"""Per-example Jacobian rows by the sum trick, and the three ways to the spectrum of their Gram.

**Rows.** For an output direction ``u ∈ ℝᵏ`` (a class ``e_c``, or a random probe), the row of example ``i`` is
``g_{iu} = J(x_i)ᵀu = ∇_x (u·f(x_i))``. In eval mode the examples of a batch do not interact, so

.. math:: \nabla_{X} \\sum_i u \\cdot f(x_i) = \big[\\, J(x_1)^\top u, \\;\\dots,\\; J(x_b)^\top u \\,\big]

is one backward pass for the whole batch: one forward and one backward per direction per batch, no
per-example loop (``torch.autograd.grad`` with ``grad_outputs = u`` broadcast; ``retain_graph`` between the
directions). ``torch.autograd.grad`` with respect to the batch alone builds no weight gradient and touches
no ``.grad``; the model is called as it is, so TorchScript modules work. With respect to the parameters the
rows are per-example gradients by ``torch.func.vmap(torch.func.grad(...))`` (the sum trick does not apply:
the parameters are shared).

**Gram.** ``M = Σ_u G_u G_uᵀ`` for the ``q`` directions, ``r = q·d'`` feature columns in all:

* :func:`solve_primal` (n × n): passes over the data, each keeping the rows of as many directions as fit in
  ``ROW_BUFFER_BYTES``; ``M`` accumulated in float64 on and below the diagonal blocks.
* :func:`solve_dual` (r × r, for ``r < n``): ``ΦᵀΦ = Σ_batches Φ_bᵀΦ_b`` in one pass, the diagonal
  ``M_ii = ‖φ_i‖²`` and the class sums ``S_a = Σ_{i∈a} φ_i`` (so ``Σ_{i∈a,j∈b} M_ij = S_a·S_b``) on the way.
* the streamed route (:mod:`funnelscope.probes.jacobian_streamed`): ``Φ`` cached, the spectrum from products.

Finiteness is checked on the diagonal alone: a NaN or infinite entry of a row makes its ``M_ii = ‖φ_i‖²``
non-finite, and ``|M_ij| ≤ √(M_ii M_jj)`` bounds the rest (a full ``isfinite`` of an ``n × n`` matrix would
allocate another ``n²`` bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from funnelscope.errors import FunnelscopeInputError, first_line
from funnelscope.models.evaluation import MODEL_ERRORS
from funnelscope.models.outputs import logits_of
from funnelscope.probes import jacobian_sketch
from funnelscope.probes.jacobian_routes import RoutePlan
from funnelscope.spectra.eigen import add_lower_gram, symmetric_eigenvalues
from funnelscope.spectra.lanczos import SpectralDensity

__all__ = ["GramSolution", "JacobianRows", "check_finite", "class_index", "solve_dual", "solve_primal"]

_MIRROR_BLOCK = 1024  # rows of M mirrored at a time
_MEASURED_EXAMPLES = 4  # examples of the first batch whose saved activations are measured


class JacobianRows:
    """Per-example rows ``J(x_i)ᵀu`` for a set of output directions, a batch at a time, plus predictions."""

    def __init__(self, model: nn.Module, x: torch.Tensor, *, output: str, wrt: str, batch_size: int,
                 device: torch.device) -> None:
        self.model, self.x, self.output, self.wrt = model, x, output, wrt
        self.n, self.batch_size, self.device = x.shape[0], min(batch_size, x.shape[0]), device
        self.params = {name: p.detach() for name, p in model.named_parameters()}
        self.trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        floating = [p.dtype for p in self.params.values() if p.is_floating_point()]
        self.dtype = floating[0] if floating else (x.dtype if x.is_floating_point() else torch.float32)
        if wrt == "inputs" and not x.is_floating_point():
            raise FunnelscopeInputError(
                f"inputs have dtype {x.dtype}: input Jacobians need floating-point inputs (for token ids use "
                "wrt='params')"
            )
        if wrt == "params" and not self.trainable:
            raise FunnelscopeInputError("wrt='params' but the model has no trainable parameters")
        self.labels: np.ndarray | None = None
        self.on_rows: Callable[[], None] = lambda: None  # called once per backward pass (a progress bar)
        self.sketch: jacobian_sketch.CountSketch | None = None
        self.keep_gram = False  # the primal route keeps a copy of M
        first = self._batch(0, self.batch_size)
        try:
            with torch.no_grad():
                out = model(first)
        except MODEL_ERRORS as err:
            raise FunnelscopeInputError(
                f"the model rejected inputs of shape {tuple(first.shape)} (examples of shape "
                f"{tuple(x.shape[1:])}): {first_line(err)}"
            ) from err
        self.k = _logits(out, first.shape[0]).shape[1]
        if self.k == 1 and output != "logits":
            raise FunnelscopeInputError(
                f"the model has a single output: its {output} are constant (softmax of one value), use "
                "output='logits'"
            )
        if wrt == "inputs":
            self.dim = int(np.prod(x.shape[1:], dtype=np.int64))
        else:
            self.dim = int(sum(self.params[name].numel() for name in self.trainable))
        self.predicted = np.zeros(self.n, dtype=np.int64)
        self.confidence = np.zeros(self.n)
        self.loss = np.zeros(self.n)

    def activation_bytes(self) -> int:
        """Bytes one batch's forward keeps for the backward passes, measured: the tensors autograd saves
        (``torch.autograd.graph.saved_tensors_hooks``, each storage counted once) on the first few examples,
        scaled to the batch, doubled for the gradients of the backward pass, plus the batch's input."""
        count = min(self.batch_size, _MEASURED_EXAMPLES)
        xb = self._batch(0, count)
        seen: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
            return tensor

        if self.wrt == "inputs":
            xb.requires_grad_(True)
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                _transform(self._forward(xb), self.output)
        saved = sum(seen.values()) / count
        per_example = 2 * saved + xb[0].numel() * xb.element_size()
        if self.wrt == "params":
            per_example += 8 * self.dim  # vmap's per-example gradients
        return int(per_example * self.batch_size)

    def _batch(self, start: int, stop: int) -> torch.Tensor:
        dtype = self.dtype if self.x.is_floating_point() else self.x.dtype
        return self.x[start:stop].to(self.device, dtype, copy=True)

    def _forward(self, xb: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of a batch: the model called as it is (TorchScript too), or with ``params`` swapped in
        by ``torch.func.functional_call`` (the parameter route)."""
        out = self.model(xb) if params is None else torch.func.functional_call(self.model, params, (xb,))
        return _logits(out, xb.shape[0])

    def _record(self, start: int, logits: torch.Tensor) -> None:
        stop = start + logits.shape[0]
        if not bool(torch.isfinite(logits).all()):
            raise FunnelscopeInputError(f"the model's outputs are not finite for examples {start}..{stop - 1}")
        log_probs = torch.log_softmax(logits.detach().double(), dim=1)
        confidence, predicted = log_probs.max(dim=1)
        self.predicted[start:stop] = predicted.cpu().numpy()
        self.confidence[start:stop] = confidence.exp().cpu().numpy()
        if self.labels is not None:
            y = torch.as_tensor(self.labels[start:stop], device=log_probs.device)
            self.loss[start:stop] = -log_probs.gather(1, y[:, None])[:, 0].cpu().numpy()

    def batches(self, directions: torch.Tensor, *, record: bool) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(start, j, rows)``: rows ``J(x_i)ᵀ u_j`` (b × d', sketched when a sketch is set)."""
        for start in range(0, self.n, self.batch_size):
            xb = self._batch(start, min(self.n, start + self.batch_size))
            if self.wrt == "params":
                if record:
                    with torch.no_grad():
                        self._record(start, self._forward(xb))
                for j, u in enumerate(directions):
                    yield start, j, self._project(self._parameter_rows(xb, u))
                    self.on_rows()
                continue
            xb.requires_grad_(True)
            logits = self._forward(xb)
            if record:
                self._record(start, logits)
            f = _transform(logits, self.output)
            if not f.requires_grad:
                raise FunnelscopeInputError("the model's output does not depend differentiably on its inputs")
            for j, u in enumerate(directions):
                (rows,) = torch.autograd.grad(f, xb, u.expand_as(f), retain_graph=j + 1 < len(directions))
                self.on_rows()
                yield start, j, self._project(rows.reshape(rows.shape[0], -1))

    def _project(self, rows: torch.Tensor) -> torch.Tensor:
        return rows if self.sketch is None else self.sketch(rows)

    def _parameter_rows(self, xb: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Per-example ``∇_θ (u·f(x_i))`` by ``vmap(grad)``, flattened over the trainable parameters."""
        trainable = {name: self.params[name] for name in self.trainable}

        def one(weights: dict[str, torch.Tensor], example: torch.Tensor) -> torch.Tensor:
            logits = self._forward(example.unsqueeze(0), {**self.params, **weights})
            return (_transform(logits, self.output)[0] * u).sum()

        try:
            grads = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0))(trainable, xb)
        except (RuntimeError, ValueError, TypeError) as err:
            raise FunnelscopeInputError(
                f"wrt='params' needs a model torch.func.vmap can run: {first_line(err)}"
            ) from err
        return torch.cat([grads[name].reshape(xb.shape[0], -1) for name in self.trainable], dim=1)


def _logits(out: Any, batch: int) -> torch.Tensor:
    out = logits_of(out)
    if not out.is_floating_point():
        raise FunnelscopeInputError(f"the model's output has dtype {out.dtype}: it must be floating point")
    if out.ndim != 2 or out.shape[0] != batch:
        raise FunnelscopeInputError(
            f"the model's output has shape {tuple(out.shape)} for {batch} examples: it must be (n, k) = ({batch}, k)"
        )
    return out


def _transform(logits: torch.Tensor, output: str) -> torch.Tensor:
    if output == "probs":
        return torch.softmax(logits, dim=1)
    if output == "log_probs":
        return torch.log_softmax(logits, dim=1)
    return logits


@dataclass
class GramSolution:
    """What a solver returns: eigenvalues (descending, n of them), ``M_ii``, ``‖M‖_F²``, the class Gram
    ``[Σ_{i∈a,j∈b} M_ij]`` (with labels), ``M`` itself (primal), the quadrature density (implicit), and
    whether the eigenvalues are exact."""

    eigenvalues: np.ndarray
    diagonal: np.ndarray
    frobenius_sq: float
    class_gram: np.ndarray | None
    gram: torch.Tensor | None = None
    density: SpectralDensity | None = None
    exact: bool = True
    effective_rank: float | None = None  # an estimate replacing the one from ``eigenvalues`` (streamed route)
    errors: dict[str, float] | None = None  # error estimates of the approximate quantities
    details: dict[str, object] | None = None  # route details for the summary (products, cache, …)


def solve_primal(engine: JacobianRows, directions: torch.Tensor, width: int, plan: RoutePlan) -> GramSolution:
    """``M`` (n × n) from passes over the data, each keeping the rows of ``plan.directions_per_pass``
    directions; with ``keep_gram`` a copy of ``M`` is kept, else the eigen-solve overwrites it."""
    n = engine.n
    # On the CPU the buffer is float64, so the rows are converted as they are copied in and add_lower_gram reads
    # the buffer in place (a separate conversion pass cost about a tenth of the route); an accelerator keeps the
    # model's dtype and converts column chunks (its memory is scarcer, its conversions cheap).
    dtype = torch.float64 if engine.device.type == "cpu" else engine.dtype
    per_pass = max(1, plan.directions_per_pass)
    gram = torch.zeros(n, n, dtype=torch.float64, device=engine.device)
    for first in range(0, len(directions), per_pass):
        group = directions[first : first + per_pass]
        rows = torch.empty(n, len(group) * width, dtype=dtype, device=engine.device)
        for start, j, block in engine.batches(group, record=first == 0):
            rows[start : start + block.shape[0], j * width : (j + 1) * width] = block
        add_lower_gram(gram, rows)
        del rows
    _mirror_lower(gram)
    diagonal = gram.diagonal().clone()
    check_finite(diagonal)
    class_gram = None
    if engine.labels is not None:
        onehot = _onehot(engine.labels, engine.device)
        class_gram = (onehot.T @ (gram @ onehot)).cpu().numpy()
    frobenius_sq = float(torch.linalg.vector_norm(gram)) ** 2
    kept = gram.clone() if engine.keep_gram else None
    values = symmetric_eigenvalues(gram, overwrite=True).clamp_min(0.0).flip(0).cpu().numpy()
    del gram
    return GramSolution(values, diagonal.cpu().numpy(), frobenius_sq, class_gram, gram=kept)


def _mirror_lower(gram: torch.Tensor) -> None:
    """Copy the lower triangle onto the upper one in place, a block of rows at a time (no ``n × n``
    temporary)."""
    n = gram.shape[0]
    for top in range(0, n, _MIRROR_BLOCK):
        bottom = min(n, top + _MIRROR_BLOCK)
        gram[top:bottom, bottom:] = gram[bottom:, top:bottom].T
        square = gram[top:bottom, top:bottom]
        square.copy_(square.tril() + square.tril(-1).T)


def solve_dual(engine: JacobianRows, directions: torch.Tensor, width: int, plan: RoutePlan) -> GramSolution:
    """``ΦᵀΦ`` (r × r, r < n) accumulated batch by batch in one pass; ``M``'s other ``n − r`` eigenvalues
    are zero."""
    del plan  # one pass, nothing to choose
    n, r = engine.n, len(directions) * width
    dual = torch.zeros(r, r, dtype=torch.float64, device=engine.device)
    diagonal = torch.zeros(n, dtype=torch.float64, device=engine.device)
    labels = None if engine.labels is None else class_index(engine.labels, engine.device)
    sums = None if labels is None else torch.zeros(int(labels.max()) + 1, r, dtype=torch.float64,
                                                   device=engine.device)
    block = None
    for start, j, rows in engine.batches(directions, record=True):
        if j == 0:
            block = torch.empty(rows.shape[0], r, dtype=torch.float64, device=engine.device)
        block[:, j * width : (j + 1) * width] = rows
        if j + 1 == len(directions):
            dual.addmm_(block.T, block)
            diagonal[start : start + block.shape[0]] = (block * block).sum(1)
            if sums is not None:
                sums.index_add_(0, labels[start : start + block.shape[0]], block)
    del block
    check_finite(diagonal)
    class_gram = None if sums is None else (sums @ sums.T).cpu().numpy()
    frobenius_sq = float(torch.linalg.vector_norm(dual)) ** 2
    values = symmetric_eigenvalues(dual, overwrite=True).clamp_min(0.0).flip(0).cpu().numpy()
    values = np.concatenate([values, np.zeros(n - r)])
    return GramSolution(values, diagonal.cpu().numpy(), frobenius_sq, class_gram)


def check_finite(diagonal: torch.Tensor) -> None:
    """A :class:`FunnelscopeInputError` unless every ``M_ii`` is finite (which bounds every ``M_ij``)."""
    if not bool(torch.isfinite(diagonal).all()):
        raise FunnelscopeInputError("the Jacobian is not finite: the model's gradients overflow on these inputs")


def class_index(labels: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.unique(labels, return_inverse=True)[1].reshape(-1), device=device)


def _onehot(labels: np.ndarray, device: torch.device) -> torch.Tensor:
    index = class_index(labels, device)
    return torch.nn.functional.one_hot(index, int(index.max()) + 1).to(torch.float64)
