"""The layer table of a model without any eigen-solve: which matrices the weights probe would analyse.

Each row describes one layer matrix (DESIGN 2.1): ``N = max(rows, cols)``, ``M = min(rows, cols)``,
``Q = N / M``, ``rf`` kernel positions (1 for dense layers) and ``num_evals = M · rf`` pooled eigenvalues
(``M`` per slice with ``pool=False``). Only tensor headers are read (a safetensors file is not even
memory-mapped), so describing all-MiniLM-L6-v2 takes milliseconds.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import pandas as pd

from funnelscope.errors import FunnelscopeInputError
from funnelscope.models.deltas import DerivedRef
from funnelscope.models.matrices import layer_name, layer_shape
from funnelscope.models.sources import TensorRef, open_weights

__all__ = ["describe_weights", "layer_row", "select_layers"]

DESCRIBE_COLUMNS = ("layer_id", "name", "layer_type", "shape", "N", "M", "Q", "rf", "num_evals")


def describe_weights(
    model_or_path: object,
    *,
    layers: Sequence[str | int] | None = None,
    pool: bool = True,
    trust_pickle: bool = False,
) -> pd.DataFrame:
    """The layer table of :func:`~funnelscope.probes.weights.analyze_weights`, without computing anything.

    Parameters
    ----------
    model_or_path : nn.Module, state_dict, str or Path
        Any source :func:`~funnelscope.models.sources.open_weights` reads.
    layers : sequence of str or int, optional
        Shell patterns of layer names, or layer ids, as in ``analyze_weights``.
    pool : bool, default True
        ``num_evals = M · rf`` (a convolution's slices pooled); False gives ``M`` (per slice).
    trust_pickle : bool, default False
        Allow unpickling a torch file that holds Python objects.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer_id, name, layer_type, shape, N, M, Q, rf, num_evals``; ``shape`` is the stored tensor's
        shape (a tuple).

    Raises
    ------
    FunnelscopeInputError
        Unreadable input, no layer matrix in it, or no layer matching ``layers``.

    Examples
    --------
    >>> from torch import nn
    >>> describe_weights(nn.Sequential(nn.Linear(20, 10), nn.Conv2d(3, 8, 3)))[["name", "N", "M", "rf",
    ...                                                                     "num_evals"]].values.tolist()
    [['0', 20, 10, 1, 10], ['1', 8, 3, 9, 27]]
    """
    if not isinstance(pool, bool):
        raise FunnelscopeInputError(f"pool={pool!r} must be a bool")
    source = open_weights(model_or_path, trust_pickle=trust_pickle)
    rows = []
    for layer_id, ref in select_layers(list(source), layers, source.description):
        row = layer_row(layer_id, ref, pool=pool)
        row["shape"] = tuple(ref.shape)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(DESCRIBE_COLUMNS))


def layer_row(layer_id: int, ref: TensorRef, *, pool: bool) -> dict[str, object]:
    """The leading columns of a layer's row: ``layer_id, name, layer_type, N, M, Q, rf, num_evals``.

    ``N, M`` come from the matrix the tensor stands for (a :class:`~funnelscope.models.deltas.DerivedRef`'s
    ``matrix_shape``, e.g. the dense ``B·A`` of a LoRA adapter whose loaded tensor is its ``r × r`` core),
    ``num_evals`` from the tensor that is eigen-solved (``r`` for that core); a derived layer's extra
    ``columns`` (``lora_rank``, ``lora_scale``) follow.
    """
    derived = ref if isinstance(ref, DerivedRef) else None
    N, M, rf = layer_shape((derived and derived.matrix_shape) or ref.shape)
    _, solved, _ = layer_shape(ref.shape)
    row: dict[str, object] = {
        "layer_id": layer_id,
        "name": layer_name(ref.name),
        "layer_type": ref.kind,
        "N": N,
        "M": M,
        "Q": N / M,
        "rf": rf,
        "num_evals": solved * rf if pool else solved,
    }
    if derived is not None:
        row.update(derived.columns)
    return row


def select_layers(
    refs: list[TensorRef], layers: Sequence[str | int] | None, description: str
) -> list[tuple[int, TensorRef]]:
    """``(layer_id, ref)`` of the layers chosen by ``layers`` (names as shell patterns, or ids); all by default.

    Raises
    ------
    FunnelscopeInputError
        ``refs`` is empty, or nothing matches ``layers``.
    """
    numbered = list(enumerate(refs))
    if not numbered:
        raise FunnelscopeInputError(f"{description}: no layer matrices (2-D or convolution weights) found")
    if layers is None:
        return numbered
    if isinstance(layers, (str, int)):
        layers = [layers]
    chosen = []
    for layer_id, ref in numbered:
        name = layer_name(ref.name)
        for selector in layers:
            if isinstance(selector, int) and selector == layer_id:
                chosen.append((layer_id, ref))
                break
            if isinstance(selector, str) and (fnmatch.fnmatchcase(name, selector) or selector == ref.name):
                chosen.append((layer_id, ref))
                break
    if not chosen:
        raise FunnelscopeInputError(f"{description}: no layer matches {list(layers)}")
    return chosen
