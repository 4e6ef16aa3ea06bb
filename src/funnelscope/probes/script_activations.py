"""Piecewise-linear activations of a TorchScript model, observed without hooks.

A scripted module keeps its submodules, but TorchScript accepts no forward hooks and :mod:`torch.fx` cannot
trace it. Its ``forward`` graph is copied instead, submodule calls inlined (:func:`torch._C._jit_pass_inline`)
and constant branches folded (``if inplace:`` of ``F.relu``), and every activation node of the top-level
block (``aten::relu``, ``aten::leaky_relu``, ``aten::prelu``, ``aten::rrelu`` and their in-place forms) gets a
copy of its input and output appended to the graph's result. The copy is compiled as a function of the
module, so the model itself is not changed.

Each activation is named as :func:`~funnelscope.probes.linearity.layer_linearity` names it in the eager
model: the path of the activation module it belongs to (``2``, ``encoder.act``), or for a functional call the
name :mod:`torch.fx` gives its node (``relu``, ``relu_1``, …). Activations inside control flow (``if`` or
``for`` on data) are not seen: when there are only those, the error says so.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import torch

from funnelscope.errors import FunnelscopeInputError

__all__ = ["ACTIVATION_OPS", "scripted_runner"]

ACTIVATION_OPS = {"aten::relu": "relu", "aten::relu_": "relu_", "aten::leaky_relu": "leaky_relu",
                  "aten::leaky_relu_": "leaky_relu_", "aten::prelu": "prelu", "aten::rrelu": "rrelu",
                  "aten::rrelu_": "rrelu_"}
ACTIVATION_MODULE_NAMES = ("ReLU", "LeakyReLU", "PReLU", "RReLU")
_FUNCTION_NAMES = {name.rstrip("_") for name in ACTIVATION_OPS.values()}
_COUNTER = itertools.count()

Record = Callable[[str, str, torch.Tensor, torch.Tensor], None]


def scripted_runner(model: torch.jit.ScriptModule, record: Record) -> Callable[[torch.Tensor], Any]:
    """A callable running ``model`` on a batch that calls ``record(name, kind, z, a)`` for every top-level
    activation, in execution order, and returns the model's output.

    Raises
    ------
    FunnelscopeInputError
        No activation in the top-level code (none at all, or only inside control flow).
    """
    graph = _inlined(_method_graph(model, "forward"))
    nodes = [node for node in graph.nodes() if node.kind() in ACTIVATION_OPS]
    if not nodes:
        nested = sum(_count_nested(block) for node in graph.nodes() for block in node.blocks())
        where = (f"{nested} inside if/for blocks on data, which cannot be observed in a TorchScript model; "
                 "pass the architecture as module:factory with --weights instead") if nested else "none was found"
        raise FunnelscopeInputError(f"TorchScript model: no piecewise-linear activation in its top-level code "
                                    f"({where})")
    names = _site_names(model)
    if names is None or len(names) != len(nodes):  # a call this walk does not resolve: name by the op
        names = [(ACTIVATION_OPS[node.kind()], ACTIVATION_OPS[node.kind()]) for node in nodes]
    captured = []
    for node in nodes:
        z, a = node.inputsAt(0), node.output()
        captured += [_clone_beside(graph, z, node, after=False), _clone_beside(graph, a, node, after=True)]
    result = graph.return_node()
    values = [result.inputsAt(0), *captured]
    pack = graph.create("prim::TupleConstruct", values)
    pack.output().setType(torch._C.TupleType([value.type() for value in values]))
    pack.insertBefore(result)
    result.replaceInput(0, pack.output())
    graph.lint()
    function = torch._C._create_function_from_graph(f"funnelscope_activations_{next(_COUNTER)}", graph)

    def run(batch: torch.Tensor) -> Any:
        output, *pairs = function(model._c, batch)
        for (name, kind), z, a in zip(names, pairs[0::2], pairs[1::2], strict=True):
            record(name, kind, z, a)
        return output

    return run


def _inlined(graph: torch._C.Graph) -> torch._C.Graph:
    copy = graph.copy()
    torch._C._jit_pass_inline(copy)
    torch._C._jit_pass_constant_propagation(copy)
    return copy


def _count_nested(block: torch._C.Block) -> int:
    return sum((node.kind() in ACTIVATION_OPS) + sum(_count_nested(inner) for inner in node.blocks())
               for node in block.nodes())


def _clone_beside(graph: torch._C.Graph, value: torch._C.Value, node: torch._C.Node, *,
                  after: bool) -> torch._C.Value:
    """``value.clone()`` just before ``node`` (an in-place activation overwrites its input) or just after it
    (later in-place operations may change its output)."""
    none = graph.insertConstant(None)
    clone = graph.create("aten::clone", [value, none])
    clone.output().setType(value.type())
    if after:
        clone.insertAfter(node)
    else:
        clone.insertBefore(node)
    none.node().moveBefore(clone)
    return clone.output()


def _site_names(model: torch.jit.ScriptModule) -> list[tuple[str, str]] | None:
    """``(name, kind)`` of each top-level activation of the inlined forward, in order, from a walk of the
    module's own graphs; None when a call cannot be resolved."""

    functional: dict[str, int] = {}

    def fx_name(op: str) -> str:  # torch.fx names repeated calls relu, relu_1, relu_2, …
        functional[op] = functional.get(op, -1) + 1
        return op if functional[op] == 0 else f"{op}_{functional[op]}"

    def walk(graph: torch._C.Graph, prefix: str) -> list[tuple[str, str]] | None:
        paths = {next(iter(graph.inputs())).unique(): prefix}
        sites: list[tuple[str, str]] = []
        for node in graph.nodes():
            kind = node.kind()
            if kind == "prim::GetAttr" and node.inputsAt(0).unique() in paths:
                parent = paths[node.inputsAt(0).unique()]
                paths[node.output().unique()] = f"{parent}.{node.s('name')}" if parent else node.s("name")
            elif kind == "prim::CallMethod":
                path = paths.get(node.inputsAt(0).unique())
                if path is None:
                    return None
                sub = functools.reduce(getattr, path.split("."), model) if path else model
                sub_graph = _method_graph(sub, node.s("name"))
                if sub.original_name in ACTIVATION_MODULE_NAMES:
                    count = sum(n.kind() in ACTIVATION_OPS for n in _inlined(sub_graph).nodes())
                    sites += [(path, sub.original_name)] * count
                else:
                    inner = walk(sub_graph, path)
                    if inner is None:
                        return None
                    sites += inner
            elif kind == "prim::CallFunction":
                function = node.inputsAt(0).node()
                name = function.s("name") if function.hasAttribute("name") else ""
                if name.rstrip("_") in _FUNCTION_NAMES:
                    sites.append((fx_name(name), name))
            elif kind in ACTIVATION_OPS:
                op = ACTIVATION_OPS[kind]
                sites.append((fx_name(op), op))
        return sites

    try:
        return walk(_method_graph(model, "forward"), "")
    except (AttributeError, RuntimeError):  # a submodule or method this walk cannot reach
        return None


def _method_graph(module: torch.jit.ScriptModule, name: str) -> torch._C.Graph:
    """The graph of a compiled method (scripted or traced; a traced submodule's Python ``forward`` has none)."""
    return module._c._get_method(name).graph
