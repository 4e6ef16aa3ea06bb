"""Per-layer distances between a fine-tune and its base model.

For each pair of layers matched by name (:func:`~funnelscope.models.deltas.match_layers`), with
``ΔW = W − W_base``:

.. math::

    \\lVert\\Delta W\\rVert_F = \\Big(\\sum_i \\sigma_i(\\Delta W)^2\\Big)^{1/2}, \\qquad
    \\lVert\\Delta W\\rVert_2 = \\sigma_{\\max}(\\Delta W), \\qquad
    \\Delta\\alpha = \\alpha(W) - \\alpha(W_{\\mathrm{base}}),

and the relative change :math:`\\lVert\\Delta W\\rVert_F / \\lVert W_{\\mathrm{base}}\\rVert_F`. The singular values
come from the one eigen-routine (:func:`~funnelscope.spectra.eigen.gram_eigenvalues` of ``ΔW`` in float64), the
α from :func:`~funnelscope.probes.weights.analyze_weights` of each model. For a convolution, ``ΔW``'s norms are
those of its kernel-position slices pooled: the Frobenius norm of the whole tensor and the largest slice σ.

WeightWatcher 0.7.7's ``distances(model_1, model_2)`` reports the Frobenius distance alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from funnelscope.errors import FunnelscopeInputError
from funnelscope.models.deltas import delta_source, match_layers, skip_reason
from funnelscope.models.matrices import layer_name, weight_slices
from funnelscope.models.sources import WeightSource, open_weights
from funnelscope.options import resolve_device
from funnelscope.probes.describe import select_layers
from funnelscope.probes.weights import analyze_weights
from funnelscope.spectra.eigen import gram_eigenvalues

__all__ = ["distances"]


def distances(
    model: object,
    base: object,
    *,
    layers: Sequence[str | int] | None = None,
    device: torch.device | str | None = None,
    trust_pickle: bool = False,
) -> pd.DataFrame:
    """Per-layer distances between a model and its base: ``‖ΔW‖_F``, ``‖ΔW‖₂`` and the change of α.

    Parameters
    ----------
    model, base : nn.Module, state_dict or path
        A fine-tune and its base (any source :func:`~funnelscope.models.sources.open_weights` reads), matched
        layer by layer by name.
    layers : sequence of str or int, optional
        The model's layers to compare (names as shell patterns, or ids), as in ``analyze_weights``.
    device : torch device, optional
        Where the Grams of ``ΔW`` are eigen-solved.
    trust_pickle : bool, default False
        Allow unpickling torch files that hold Python objects.

    Returns
    -------
    pandas.DataFrame
        One row per chosen model layer, then (when all layers are compared) one per base layer left unmatched:
        ``layer_id, name, layer_type, N, M, frobenius`` (‖ΔW‖_F), ``spectral`` (‖ΔW‖₂), ``relative_frobenius``
        (‖ΔW‖_F / ‖W_base‖_F), ``alpha``, ``alpha_base``, ``delta_alpha`` (α − α_base; NaN where a layer has
        no fit), ``status`` (``success`` or ``skipped``) and ``reason`` (no counterpart, another shape).

    Raises
    ------
    FunnelscopeInputError
        Unreadable input, or no layer in common.

    Examples
    --------
    >>> w = torch.zeros(30, 20); w[0, 0] = 3.0; w[1, 1] = 4.0
    >>> table = distances({"fc.weight": w}, {"fc.weight": torch.zeros(30, 20)})
    >>> table[["frobenius", "spectral"]].values.tolist()
    [[5.0, 4.0]]
    """
    model_source = open_weights(model, trust_pickle=trust_pickle)
    base_source = open_weights(base, trust_pickle=trust_pickle)
    chosen = select_layers(list(model_source), layers, model_source.description)
    refs = [ref for _, ref in chosen]
    match = match_layers(refs, list(base_source))
    if not match.pairs:
        raise FunnelscopeInputError(
            f"{model_source.description}: no layer name matches one of {base_source.description}"
        )
    target = resolve_device(device, model if isinstance(model, torch.nn.Module) else None)
    deltas = delta_source(WeightSource(model_source.description, tuple(refs)), base_source).tensors
    partner = {ref.name: other for ref, other in match.pairs}
    base_ids = {ref.name: index for index, ref in enumerate(base_source)}
    alphas = _alphas(analyze_weights(model, layers=[layer_id for layer_id, _ in chosen], device=device,
                                     trust_pickle=trust_pickle))
    base_alphas = _alphas(analyze_weights(base, layers=[base_ids[other.name] for other in partner.values()],
                                          device=device, trust_pickle=trust_pickle))
    rows = []
    for (layer_id, ref), delta in zip(chosen, deltas, strict=False):
        row = {"layer_id": layer_id, "name": layer_name(ref.name), "layer_type": ref.kind,
               "N": max(ref.shape[:2]), "M": min(ref.shape[:2])}
        if skip_reason(delta):
            rows.append({**row, "status": "skipped", "reason": skip_reason(delta)})
            continue
        other = partner[ref.name]
        values = gram_eigenvalues(weight_slices(delta.load()), device=target).reshape(-1).numpy()
        frobenius = float(np.sqrt(values.sum()))
        base_norm = float(torch.linalg.vector_norm(other.load().to(torch.float64)))
        alpha, alpha_base = alphas.get(layer_id, np.nan), base_alphas.get(base_ids[other.name], np.nan)
        rows.append({**row, "frobenius": frobenius, "spectral": float(np.sqrt(values.max())),
                     "relative_frobenius": frobenius / base_norm if base_norm > 0 else np.nan,
                     "alpha": alpha, "alpha_base": alpha_base, "delta_alpha": alpha - alpha_base,
                     "status": "success", "reason": ""})
    if layers is None:
        for other in match.base_only:
            rows.append({"layer_id": -1, "name": layer_name(other.name), "layer_type": other.kind,
                         "N": max(other.shape[:2]), "M": min(other.shape[:2]), "status": "skipped",
                         "reason": "only in the base model"})
    return pd.DataFrame(rows)


def _alphas(details: pd.DataFrame) -> dict[int, float]:
    """layer_id → α of the layers whose fit succeeded."""
    ok = details[details["status"] == "success"]
    if "alpha" not in ok:  # no layer could be fitted (an all-zero base, say)
        return {}
    return dict(zip(ok["layer_id"].astype(int), ok["alpha"].astype(float), strict=True))
