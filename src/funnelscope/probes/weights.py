"""The weights probe: the ESD of every layer matrix, its power-law tail, Marchenko–Pastur bulk and phase.

Heavy-tailed self-regularisation (Martin & Mahoney, JMLR 22(165), 2021; Martin, Peng & Mahoney, Nature
Communications 12, 4122, 2021): the eigenvalues ``λ = σ(W)²`` of a well-trained layer have a power-law tail
``p(λ) ∝ λ^−α``, with α ≈ 2–4 for well-trained layers, and the phase of the ESD relative to
Marchenko–Pastur tells how much correlation training has put into the layer. The numbers agree with
WeightWatcher 0.7.7's ``analyze()`` on the same layers (same eigenvalues, same fit), under its column names.

Where the numbers differ from WeightWatcher on purpose: WeightWatcher multiplies every Conv2d slice by
``1/√2`` (its ``conv2d_norm``), so its Conv2d eigenvalues and norms are half of ours (α is scale-free and
agrees); we keep ``λ = σ²`` for every layer (``docs/quantities.md#layer-matrices``). Its Marchenko–Pastur
fit rescales the ESD and fits a kernel density; ours is the fixed point of
:func:`~funnelscope.spectra.marchenko_pastur.fit_marchenko_pastur` on ``X = WᵀW/N``, so ``sigma2_mp``/``bulk_max``
are not WeightWatcher's ``sigma_mp``/``bulk_max`` and carry other names where they mean other things.

How it runs: tensors are read one layer at a time (safetensors memory-mapped), same-shaped matrices are
stacked and their float64 Grams eigen-solved in one batched ``torch.linalg.eigvalsh`` call; convolutions are
split into kernel-position slices whose eigenvalues are pooled.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from funnelscope.errors import FunnelscopeInputError
from funnelscope.models.deltas import skip_reason
from funnelscope.models.matrices import layer_shape, weight_slices
from funnelscope.models.sources import TensorRef, open_weights
from funnelscope.options import resolve_device
from funnelscope.probes.describe import layer_row, select_layers
from funnelscope.probes.result import ProbeResult
from funnelscope.probes.weight_deltas import check_derivation, derive_source
from funnelscope.probes.weight_tail import fit_tail, tail_options
from funnelscope.progress import note, progress_bar
from funnelscope.spectra.eigen import gram_eigenvalues
from funnelscope.spectra.marchenko_pastur import MarchenkoPasturFit, fit_marchenko_pastur
from funnelscope.spectra.metrics import esd_metrics
from funnelscope.spectra.phases import classify_phase
from funnelscope.spectra.powerlaw import PowerLawFit

__all__ = ["LayerSpectrum", "WeightsAnalysis", "WeightsSummary", "analyze_weights", "summarize_weights",
           "weight_spectra"]

SUMMARY_METRICS = (
    "log_norm",
    "alpha",
    "alpha_weighted",
    "log_alpha_norm",
    "log_spectral_norm",
    "stable_rank",
    "mp_softrank",
)
_BATCH_BYTES = 256 << 20  # weights stacked for one batched eigen-solve
_BATCH_COUNT = 32


@dataclass(frozen=True)
class LayerSpectrum:
    """One analysed layer: its table row plus the spectra behind it (for plots and further analysis)."""

    row: dict[str, object]
    eigenvalues: np.ndarray | None = field(default=None, repr=False)
    fit: PowerLawFit | None = field(default=None, repr=False)
    marchenko_pastur: MarchenkoPasturFit | None = field(default=None, repr=False)
    randomized_eigenvalues: np.ndarray | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.row["name"])

    @property
    def ok(self) -> bool:
        return self.row["status"] == "success"


@dataclass(frozen=True)
class WeightsSummary:
    """WeightWatcher-style means over the layers whose fit succeeded.

    Attributes
    ----------
    metrics : dict
        Mean of each of ``SUMMARY_METRICS`` over the layers used.
    layers_used : int
    excluded : tuple of str
        Layers left out of the means (failed or skipped), so that a mean is never silently partial.
    """

    metrics: dict[str, float]
    layers_used: int
    excluded: tuple[str, ...]

    @property
    def note(self) -> str:
        if not self.excluded:
            return f"means over all {self.layers_used} layers"
        names = ", ".join(self.excluded[:5]) + (", …" if len(self.excluded) > 5 else "")
        return f"means over {self.layers_used} layers; {len(self.excluded)} excluded (failed or skipped): {names}"

    def to_frame(self) -> pd.DataFrame:
        """One row per metric: ``metric``, ``mean``."""
        return pd.DataFrame({"metric": list(self.metrics), "mean": list(self.metrics.values())})

    def to_dict(self) -> dict[str, object]:
        return {**self.metrics, "layers_used": self.layers_used, "excluded": list(self.excluded)}


def analyze_weights(
    model_or_path: object,
    *,
    layers: Sequence[str | int] | None = None,
    min_evals: int = 8,
    max_evals: int | None = None,
    pool: bool = True,
    randomize: bool = False,
    eig_method: str = "gram",
    xmin: float | None = None,
    xmax: float | None = None,
    fit: str = "PL",
    fix_fingers: str | None = None,
    xmin_max: float | None = None,
    max_fingers: int | None = None,
    finger_thresh: float | None = None,
    tpl_optimizer: str = "exact",
    detX: bool = False,
    base_model: object = None,
    peft: bool | str = False,
    device: torch.device | str | None = None,
    trust_pickle: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Analyse the ESD of every layer matrix of a model: one row per layer.

    Parameters
    ----------
    model_or_path : nn.Module, state_dict, str or Path
        A module, a state_dict, a torch file (weights only unless ``trust_pickle``), a ``.safetensors``
        file, or a directory of (sharded) safetensors or a Hugging Face model directory.
    layers : sequence of str or int, optional
        Names (shell patterns such as ``"encoder.*.query"``) or layer ids to analyse; default all.
    min_evals, max_evals : int
        Layers with fewer (more) eigenvalues than this are listed with ``status="skipped"``. The default
        ``min_evals=8`` is WeightWatcher's; ``max_evals=None`` analyses every layer (the Gram takes
        ``8·M²`` bytes).
    pool : bool, default True
        Pool a convolution's kernel-position slices into one ESD; False gives one row per slice.
    randomize : bool, default False
        Also analyse an element-wise shuffled copy of each matrix: ``rand_distance`` (Jensen–Shannon distance
        between the normalised spectra), ``max_rand_eval``, ``ww_softrank`` and ``num_traps`` (eigenvalues of
        the shuffled matrix above its Marchenko–Pastur edge: correlation traps).
    eig_method : {"gram", "svd"}
        See :func:`funnelscope.spectra.eigen.gram_eigenvalues`.
    xmin, xmax : float, optional
        Passed to :func:`~funnelscope.spectra.powerlaw.fit_powerlaw` (default: WeightWatcher's search over all
        candidates).
    fit : {"PL", "TPL", "E_TPL"}, default "PL"
        The tail law (WeightWatcher's ``fit``). ``"TPL"``: ``alpha`` and ``Lambda`` of the truncated power law
        :math:`p(λ) ∝ λ^{-α} e^{-Λλ}` (see
        :mod:`funnelscope.probes.weight_tail`), with ``pl_alpha``, ``tpl_R`` and ``tpl_p`` (the nested
        likelihood-ratio test against the power law); ``"E_TPL"``: the same with ``fix_fingers="xmin_peak"``.
    fix_fingers : {None, "xmin_peak", "clip_xmax"}
        Repair spuriously large α from a few outlying top eigenvalues, as WeightWatcher defines it
        (:mod:`funnelscope.spectra.fingers`): ``"xmin_peak"`` caps ``xmin`` near the ESD's peak (at ``xmin_max``,
        default 1.5 × the peak); ``"clip_xmax"`` refits without the largest ``k = 2 … max_fingers − 1``
        eigenvalues (default ``max_fingers=10``) and keeps the first clip that lowers α by more than
        ``finger_thresh`` (default 1.0): columns ``num_fingers`` (values clipped) and ``raw_alpha``.
    xmin_max, max_fingers, finger_thresh : optional
        The ``fix_fingers`` parameters above; each needs its mode.
    tpl_optimizer : {"exact", "nelder-mead"}, default "exact"
        How ``fit="TPL"``/``"E_TPL"`` maximise the likelihood at each candidate ``xmin``: exactly
        (:func:`~funnelscope.spectra.truncated_powerlaw.truncated_power_law_mle`), or by powerlaw 1.5's
        Nelder–Mead, step for step, to reproduce WeightWatcher 0.7.7's ``alpha``, ``Lambda`` and ``xmin``
        (:func:`~funnelscope.spectra.truncated_powerlaw.nelder_mead_fits`; it often stops near α = 1 with a lower
        likelihood than the maximum, and the KS search may then choose another ``xmin``).
    detX : bool, default False
        Add ``detX_num``, ``detX_val`` and ``ERG_gap`` (SETOL's det X = 1 condition, as WeightWatcher computes
        it; :mod:`funnelscope.spectra.detx`).
    base_model : nn.Module, state_dict or path, optional
        A base model: each layer is analysed as ``ΔW = W − W_base`` (matched by name, shapes checked; layers
        without a counterpart are listed as ``skipped``). With ``peft="with_base"``, where ``W`` comes from.
    peft : {False, True, "with_base"}
        ``model_or_path`` is a LoRA adapter (``adapter_model.safetensors`` and ``adapter_config.json``): one
        row ``<module>.lora_BA`` per adapted layer for ``B·A`` (its ``r`` eigenvalues, from the ``r × r`` core),
        and with ``"with_base"`` one ``<module>.lora_W_plus_BA`` for ``W + (lora_alpha/r)·B·A``; columns
        ``lora_rank``, ``lora_scale`` (:mod:`funnelscope.models.peft`).
    device : torch device, optional
        Where the Grams are eigen-solved. Default: the module's device for an ``nn.Module``, else the CPU
        (``"cuda"`` uses cuSOLVER's batched ``eigvalsh``).
    trust_pickle : bool, default False
        Allow unpickling a torch file that holds Python objects (runs code from the file).
    seed : int
        Seed of the shuffles when ``randomize``.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer_id, name, layer_type, N, M, Q, rf, num_evals`` then the metrics of
        :mod:`funnelscope.spectra.metrics`, the Marchenko–Pastur columns ``sigma2_mp, bulk_min, bulk_max``
        (for ``X = WᵀW/N``), ``num_spikes, mp_softrank``, ``phase``, ``status`` (``success``, ``failed``,
        ``skipped``) and ``reason``; the options add their columns (above).

    Raises
    ------
    FunnelscopeInputError
        Unreadable input, or no layer matrix in it; a bad option value or combination.

    Examples
    --------
    >>> from torch import nn
    >>> df = analyze_weights(nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 10)))
    >>> df[["name", "N", "M", "status"]].values.tolist()
    [['0', 200, 100, 'success'], ['2', 100, 10, 'success']]
    """
    spectra = weight_spectra(
        model_or_path,
        layers=layers,
        min_evals=min_evals,
        max_evals=max_evals,
        pool=pool,
        randomize=randomize,
        eig_method=eig_method,
        xmin=xmin,
        xmax=xmax,
        fit=fit,
        fix_fingers=fix_fingers,
        xmin_max=xmin_max,
        max_fingers=max_fingers,
        finger_thresh=finger_thresh,
        tpl_optimizer=tpl_optimizer,
        detX=detX,
        base_model=base_model,
        peft=peft,
        device=device,
        trust_pickle=trust_pickle,
        seed=seed,
        progress=progress,
    )
    return pd.DataFrame([spectrum.row for spectrum in spectra])


def weight_spectra(
    model_or_path: object,
    *,
    layers: Sequence[str | int] | None = None,
    min_evals: int = 8,
    max_evals: int | None = None,
    pool: bool = True,
    randomize: bool = False,
    eig_method: str = "gram",
    xmin: float | None = None,
    xmax: float | None = None,
    fit: str = "PL",
    fix_fingers: str | None = None,
    xmin_max: float | None = None,
    max_fingers: int | None = None,
    finger_thresh: float | None = None,
    tpl_optimizer: str = "exact",
    detX: bool = False,
    base_model: object = None,
    peft: bool | str = False,
    device: torch.device | str | None = None,
    trust_pickle: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> Iterator[LayerSpectrum]:
    """Like :func:`analyze_weights`, but yields each layer's :class:`LayerSpectrum` (row and eigenvalues)
    as soon as it is done, in the model's order. The options are those of :func:`analyze_weights`."""
    if min_evals < 1 or (max_evals is not None and max_evals < min_evals):
        raise FunnelscopeInputError(f"need 1 ≤ min_evals ≤ max_evals, got {min_evals} and {max_evals}")
    if eig_method not in ("gram", "svd"):
        raise FunnelscopeInputError(f"eig_method must be 'gram' or 'svd', got {eig_method!r}")
    tail = tail_options(fit=fit, fix_fingers=fix_fingers, xmin_max=xmin_max, max_fingers=max_fingers,
                        finger_thresh=finger_thresh, detX=detX, xmin=xmin, xmax=xmax,
                        tpl_optimizer=tpl_optimizer)
    check_derivation(base_model, peft, randomize)
    source = open_weights(model_or_path, trust_pickle=trust_pickle)
    source = derive_source(model_or_path, source, base_model=base_model, peft=peft, trust_pickle=trust_pickle)
    refs = select_layers(list(source), layers, source.description)
    if source.location or source.prefix:
        note(progress, f"reading {source.description}")
    target = resolve_device(device, model_or_path if isinstance(model_or_path, torch.nn.Module) else None)
    generator = torch.Generator().manual_seed(seed)
    options = {"tail": tail, "eig_method": eig_method}

    cache: dict[int, torch.Tensor | str] = {}
    with progress_bar(progress, len(refs), "layers") as advance:
        for index, (layer_id, ref) in enumerate(refs):
            base = layer_row(layer_id, ref, pool=pool)
            M = int(base["M"])
            count = base["num_evals"]
            if skip_reason(ref):
                cache.pop(index, None)
                yield LayerSpectrum({**base, "status": "skipped", "reason": skip_reason(ref)})
                advance()
                continue
            if count < min_evals or (max_evals is not None and count > max_evals):
                limit = f"< min_evals {min_evals}" if count < min_evals else f"> max_evals {max_evals}"
                yield LayerSpectrum({**base, "status": "skipped", "reason": f"{count} eigenvalues {limit}"})
                advance()
                continue
            if index not in cache:
                cache.update(_eigenvalue_batch(refs, index, target, eig_method, min_evals, max_evals, pool))
            outcome = cache.pop(index)
            if isinstance(outcome, str):
                yield LayerSpectrum({**base, "status": "failed", "reason": outcome})
            elif pool:
                shuffled = _shuffled_eigenvalues(ref, target, eig_method, generator) if randomize else None
                yield _analyse(base, outcome.reshape(-1).numpy(), shuffled, options)
            else:
                shuffled = _shuffled_eigenvalues(ref, target, eig_method, generator) if randomize else None
                for position, values in enumerate(outcome):
                    row = {**base, "name": f"{base['name']}[{position}]", "rf": 1}
                    other = None if shuffled is None else shuffled[position * M : (position + 1) * M]
                    yield _analyse(row, values.numpy(), other, options)
            advance()


def summarize_weights(details: pd.DataFrame) -> WeightsSummary:
    """Means of the summary metrics over the layers whose analysis succeeded (as WeightWatcher's
    ``get_summary``), with the excluded layers named rather than silently dropped."""
    if "status" not in details or "name" not in details:
        raise FunnelscopeInputError("expected the DataFrame returned by analyze_weights")
    used = details[details["status"] == "success"]
    metrics = {name: float(used[name].mean()) for name in SUMMARY_METRICS if name in used and len(used)}
    excluded = tuple(str(name) for name in details.loc[details["status"] != "success", "name"])
    return WeightsSummary(metrics=metrics, layers_used=len(used), excluded=excluded)


def _eigenvalue_batch(
    refs: list[tuple[int, TensorRef]],
    start: int,
    device: torch.device,
    eig_method: str,
    min_evals: int,
    max_evals: int | None,
    pool: bool,
) -> dict[int, torch.Tensor | str]:
    """Eigenvalues of the layer at ``start`` and of the later layers of the same shape that fit in one batch.

    Returns index → eigenvalues of shape (rf, M), or index → the reason the layer failed.
    """
    shape = refs[start][1].shape
    members = [start]
    itemsize = 4
    for index in range(start + 1, len(refs)):
        if len(members) >= _BATCH_COUNT or (len(members) + 1) * np.prod(shape) * itemsize > _BATCH_BYTES:
            break
        _, M, rf = layer_shape(refs[index][1].shape)
        count = M * rf if pool else M
        if refs[index][1].shape == shape and count >= min_evals and (max_evals is None or count <= max_evals):
            members.append(index)
    results: dict[int, torch.Tensor | str] = {}
    stacked = []
    for index in members:
        try:
            tensor = refs[index][1].load()
        except FunnelscopeInputError as error:
            results[index] = str(error)
            continue
        if not tensor.is_floating_point():
            results[index] = f"weights of dtype {tensor.dtype} are not floating point"
            continue
        stacked.append((index, weight_slices(tensor)))
    if not stacked:
        return results
    if device.type == "cpu":  # the CPU route solves one matrix after the other: stacking would only copy
        per_layer = [gram_eigenvalues(slices, method=eig_method, device=device) for _, slices in stacked]
    else:
        values = gram_eigenvalues(torch.cat([slices for _, slices in stacked]), method=eig_method, device=device)
        per_layer = list(values.split(stacked[0][1].shape[0]))
    for (index, slices), layer_values in zip(stacked, per_layer, strict=True):
        # a non-finite weight makes its Gram non-finite: the (costly) element scan runs only then
        results[index] = _weight_problem(slices) if layer_values.isnan().any() else layer_values
    return results


def _weight_problem(tensor: torch.Tensor) -> str:
    """Why a floating-point tensor's Gram is not finite: NaN/inf entries, or an overflow of the float64 Gram."""
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return "the float64 Gram overflows: weights too large"
    nans = int(torch.isnan(tensor).sum())
    infs = int((~finite).sum()) - nans
    return f"non-finite weights ({nans} NaN, {infs} inf)"


def _shuffled_eigenvalues(
    ref: TensorRef, device: torch.device, eig_method: str, generator: torch.Generator
) -> np.ndarray:
    """Eigenvalues of each slice after shuffling its elements (a random matrix with the same entries)."""
    slices = weight_slices(ref.load())
    flat = slices.reshape(slices.shape[0], -1)
    shuffled = torch.stack([row[torch.randperm(row.numel(), generator=generator)] for row in flat])
    values = gram_eigenvalues(shuffled.reshape(slices.shape), method=eig_method, device=device)
    return values.reshape(-1).numpy()


def _analyse(
    base: dict[str, object],
    eigenvalues: np.ndarray,
    shuffled: np.ndarray | None,
    options: dict[str, object],
) -> LayerSpectrum:
    N, M = int(base["N"]), int(base["M"])
    from_gram = options["eig_method"] == "gram"
    row = dict(base)
    if float(eigenvalues.max(initial=0.0)) <= 0.0:
        return LayerSpectrum({**row, "status": "failed", "reason": "all eigenvalues are zero"}, eigenvalues)
    try:
        fit, tail_columns = fit_tail(eigenvalues, options["tail"])
    except FunnelscopeInputError as error:
        row.update(esd_metrics(eigenvalues, N=N, M=M, from_gram=from_gram))
        return LayerSpectrum({**row, "status": "failed", "reason": f"power-law fit: {error}"}, eigenvalues)
    row.update(esd_metrics(eigenvalues, N=N, M=M, fit=fit, from_gram=from_gram))
    row.update(tail_columns)
    mp = fit_marchenko_pastur(eigenvalues, N=N, M=M)
    row.update(
        sigma2_mp=mp.sigma2,
        bulk_min=mp.bulk_min,
        bulk_max=mp.bulk_max,
        num_spikes=mp.num_spikes,
        mp_softrank=mp.mp_softrank,
    )
    if shuffled is not None:
        shuffled_mp = fit_marchenko_pastur(shuffled, N=N, M=M)
        row.update(
            rand_distance=_jensen_shannon_distance(eigenvalues, shuffled),
            max_rand_eval=float(shuffled.max()),
            ww_softrank=float(shuffled.max() / eigenvalues.max()),
            num_traps=shuffled_mp.num_spikes,
        )
    # a degenerate tail (e.g. equal eigenvalues) can leave α = 1: the phase is then read without an exponent
    row["phase"] = classify_phase(eigenvalues, N=N, M=M, alpha=fit.alpha if fit.alpha > 1 else np.nan, mp_fit=mp)
    row.update(status="success", reason="")
    return LayerSpectrum(row, eigenvalues, fit, mp, shuffled)


def _jensen_shannon_distance(eigenvalues: np.ndarray, shuffled: np.ndarray) -> float:
    """WeightWatcher's ``rand_distance``: the Jensen–Shannon distance (natural log) between the sorted
    spectra normalised to sum 1, ``p_i = λ_i / Σλ`` and ``q_i = λ'_i / Σλ'``."""
    p = np.sort(eigenvalues) / eigenvalues.sum()
    q = np.sort(shuffled) / shuffled.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / m[mask])))

    return float(np.sqrt((kl(p) + kl(q)) / 2))


@dataclass(frozen=True, eq=False)
class WeightsAnalysis(ProbeResult):
    """The weights probe's result: the per-layer table, its summary and (optionally) the spectra behind it.

    Build it with :meth:`from_spectra` over :func:`weight_spectra`; :func:`analyze_weights` returns its
    table alone, the DataFrame WeightWatcher users know.

    Attributes
    ----------
    details : DataFrame
        One row per layer (see :func:`analyze_weights`).
    source : str
        What was analysed.
    spectra : tuple of LayerSpectrum
        The analysed layers' eigenvalues and fits, for the per-layer figures (empty unless kept).

    ``save()`` writes ``weights`` (:meth:`to_frame`), ``summary.json`` and, on request, the figure
    ``overview`` (α and α̂ per layer) and one ``plots/<id>_<name>`` figure per kept layer spectrum.
    """

    details: pd.DataFrame
    source: str
    spectra: tuple[LayerSpectrum, ...] = field(default=(), repr=False)

    probe = "weights"

    @classmethod
    def from_spectra(cls, spectra: Iterator[LayerSpectrum] | Sequence[LayerSpectrum], *, source: str,
                     strict: bool = False, keep_spectra: bool = False) -> WeightsAnalysis:
        """Collect :func:`weight_spectra`'s layers.

        Raises
        ------
        FunnelscopeInputError
            No layer could be analysed; or, with ``strict``, any layer failed.
        """
        kept, rows = [], []
        for spectrum in spectra:
            rows.append(spectrum.row)
            if keep_spectra and spectrum.ok:
                kept.append(spectrum)
        details = pd.DataFrame(rows)
        if not (details["status"] == "success").any():
            reasons = "; ".join(f"{name}: {reason}" for name, reason in zip(details["name"], details["reason"],
                                                                           strict=True))
            reasons = reasons if len(reasons) <= 300 else reasons[:299] + "…"
            raise FunnelscopeInputError(f"{source}: no layer could be analysed ({reasons})")
        failed = details[details["status"] == "failed"]
        if strict and len(failed):
            raise FunnelscopeInputError(f"{source}: {len(failed)} layer(s) failed, e.g. {failed['name'].iloc[0]}: "
                                        f"{failed['reason'].iloc[0]}")
        return cls(details=details, source=str(source), spectra=tuple(kept))

    def to_frame(self) -> pd.DataFrame:
        return self.details.copy()

    def summary(self) -> dict[str, object]:
        """The means of :func:`summarize_weights` (``log_norm``, ``alpha``, ``alpha_weighted``, …) and
        ``layers``, ``layers_used``, ``failed``, ``skipped``, ``excluded`` (the names left out of the means)."""
        status = self.details["status"]
        summary = summarize_weights(self.details)
        return {**summary.metrics, "layers": len(self.details), "layers_used": summary.layers_used,
                "failed": int((status == "failed").sum()), "skipped": int((status == "skipped").sum()),
                "excluded": list(summary.excluded)}

    def figures(self, title: str | None = None) -> dict[str, object]:
        from funnelscope.report.plots import plot_layer_esd, plot_weights_overview

        figures = {"overview": plot_weights_overview(self.details, title=title or self.source)}
        for spectrum in self.spectra:
            row = spectrum.row
            safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in str(row["name"]))
            figures[f"plots/{int(row['layer_id']):03d}_{safe}"] = plot_layer_esd(
                spectrum.eigenvalues, fit=spectrum.fit, marchenko_pastur=spectrum.marchenko_pastur, N=int(row["N"]),
                title=f"{row['layer_id']}: {row['name']} ({row['N']}×{row['M']}) — {row.get('phase', '')}",
            )
        return figures
