"""LoRA adapters as layer matrices: ``B·A`` through its ``r × r`` core, and the merged ``W + s·B·A``.

A LoRA adapter (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) replaces a layer's
weight ``W`` (``out × in``) by ``W + s·B·A`` with ``A`` of shape ``r × in``, ``B`` of shape ``out × r`` and the
scale ``s = lora_alpha / r`` (``lora_alpha / √r`` with rsLoRA; Kalajdzievski 2023), eq. (3) of the paper. PEFT
saves them as ``adapter_model.safetensors`` with keys ``<module>.lora_A.weight`` and ``<module>.lora_B.weight``
beside ``adapter_config.json`` (``r``, ``lora_alpha``, ``use_rslora``, ``alpha_pattern``, ``fan_in_fan_out``).

``B·A`` has rank at most ``r``; its non-zero singular values are those of an ``r × r`` core. With the reduced QR
factorisations ``B = Q_B R_B`` and ``Aᵀ = Q_A R_A`` (``Q`` with orthonormal columns, ``R`` of shape ``r × r``),

.. math::

    B A = Q_B \\,(R_B R_A^{\\top})\\, Q_A^{\\top}, \\qquad \\sigma_i(BA) = \\sigma_i(C),\\quad C = R_B R_A^{\\top},

so the ``r`` eigenvalues ``λ = σ²`` of ``B·A`` cost ``O((out + in) r²)`` and ``B·A`` is never formed (when
``r < min(out, in)``; otherwise ``B·A`` is small and formed directly). The merged ``W + s·B·A`` is dense and is
formed from the base weight when it is read.

WeightWatcher 0.7.7 (``analyze(peft=True | "with_base")``) analyses the unscaled ``B·A`` and ``W + B·A``; here
the ``B·A`` row is the unscaled product too, and the merged row uses PEFT's scale (column ``lora_scale``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from funnelscope.errors import FunnelscopeInputError
from funnelscope.models.deltas import DerivedRef, match_layers, placeholder
from funnelscope.models.matrices import layer_name
from funnelscope.models.sources import TensorRef, WeightSource

__all__ = ["LoraAdapter", "adapter_source", "find_adapters", "lora_core", "read_adapter_config"]

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])(?:\.(?P<adapter>[^.]+))?(?:\.weight)?$")
_BASE_LAYER = ".base_layer"


@dataclass(frozen=True)
class LoraAdapter:
    """One adapted layer: its module path, the two factors and the scale ``s`` of ``W + s·B·A``.

    Attributes
    ----------
    module : str
        The adapted module's path as stored (e.g. ``base_model.model.model.layers.0.self_attn.q_proj``).
    A, B : TensorRef
        ``lora_A`` (``r × in``) and ``lora_B`` (``out × r``).
    scale : float
        ``lora_alpha / r`` (``/ √r`` with rsLoRA) from ``adapter_config.json``; NaN when there is none.
    """

    module: str
    A: TensorRef
    B: TensorRef
    scale: float

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(out, in)``: the shape of ``B·A``."""
        return int(self.B.shape[0]), int(self.A.shape[1])


def lora_core(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A matrix with the non-zero singular values of ``B·A``, in float64: the ``r × r`` core ``R_B R_Aᵀ``.

    Parameters
    ----------
    A : Tensor of shape (r, in)
    B : Tensor of shape (out, r)

    Returns
    -------
    Tensor
        ``R_B R_Aᵀ`` (``r × r``) from the reduced QR factorisations ``B = Q_B R_B``, ``Aᵀ = Q_A R_A`` when
        ``r < min(out, in)``; else ``B·A`` itself (it is then no larger than the factors).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> A, B = torch.randn(3, 50, generator=g), torch.randn(40, 3, generator=g)
    >>> core = lora_core(A, B)
    >>> core.shape, bool(torch.allclose(torch.linalg.svdvals(core),
    ...                                 torch.linalg.svdvals((B @ A).double())[:3]))
    (torch.Size([3, 3]), True)
    """
    if A.ndim != 2 or B.ndim != 2 or B.shape[1] != A.shape[0]:
        raise FunnelscopeInputError(f"LoRA factors do not multiply: B {tuple(B.shape)} · A {tuple(A.shape)}")
    a, b = A.to(torch.float64), B.to(torch.float64)
    r = a.shape[0]
    if r >= min(b.shape[0], a.shape[1]):
        return b @ a
    r_b = torch.linalg.qr(b, mode="r").R
    r_a = torch.linalg.qr(a.T, mode="r").R
    return r_b @ r_a.T


def read_adapter_config(model_or_path: object) -> dict[str, object] | None:
    """``adapter_config.json`` beside an adapter (in the directory, or beside the file); None when absent.

    Raises
    ------
    FunnelscopeInputError
        The file exists but is not valid JSON.
    """
    if not isinstance(model_or_path, (str, Path)):
        return None
    path = Path(model_or_path).expanduser()
    config = (path if path.is_dir() else path.parent) / "adapter_config.json"
    if not config.exists():
        return None
    try:
        return dict(json.loads(config.read_text()))
    except (ValueError, TypeError) as error:
        raise FunnelscopeInputError(f"{config}: not a valid adapter config ({error})") from error


def find_adapters(
    source: WeightSource, config: dict[str, object] | None
) -> tuple[list[LoraAdapter], list[tuple[TensorRef, str]], dict[str, TensorRef]]:
    """The LoRA pairs of a source, the tensors that are not (with why), and any ``base_layer`` weights in it.

    Keys ``<module>.lora_A[.<adapter name>][.weight]`` and ``<module>.lora_B…`` are paired by module and adapter
    name; a PEFT model's full state_dict also holds ``<module>.base_layer.weight``, returned by module path.

    Raises
    ------
    FunnelscopeInputError
        Two adapters with different names in one source (analyse one at a time), or a bad ``config``.
    """
    factors: dict[tuple[str, str], dict[str, TensorRef]] = {}
    bases: dict[str, TensorRef] = {}
    others: list[tuple[TensorRef, str]] = []
    for ref in source:
        name = layer_name(ref.name)
        found = _LORA_KEY.match(ref.name)
        if found is not None:
            factors.setdefault((found["module"], found["adapter"] or ""), {})[found["factor"]] = ref
        elif name.endswith(_BASE_LAYER):
            bases[name[: -len(_BASE_LAYER)]] = ref
        else:
            others.append((ref, "not a LoRA factor (names ending in lora_A / lora_B)"))
    names = sorted({adapter for _, adapter in factors})
    if len(names) > 1:
        raise FunnelscopeInputError(f"{source.description}: several adapters {names}: analyse one at a time")
    adapters = []
    for (module, _), pair in factors.items():
        if set(pair) != {"A", "B"}:
            (only,) = pair.values()
            others.append((only, f"lora_{next(iter(pair))} without its lora_{'B' if 'A' in pair else 'A'}"))
            continue
        A, B = pair["A"], pair["B"]
        if len(A.shape) != 2 or len(B.shape) != 2:
            others.append((A, f"LoRA of a {len(A.shape)}-D weight (a convolution) is not supported"))
            continue
        if B.shape[1] != A.shape[0]:
            others.append((A, f"LoRA factors do not multiply: B {B.shape} · A {A.shape}"))
            continue
        adapters.append(LoraAdapter(module, A, B, _scale(config, module, int(A.shape[0]))))
    return adapters, others, bases


def adapter_source(
    source: WeightSource,
    *,
    config: dict[str, object] | None,
    base: WeightSource | None = None,
    with_base: bool = False,
) -> WeightSource:
    """The layers of a LoRA adapter: ``<module>.lora_BA`` for each ``B·A`` and, ``with_base``,
    ``<module>.lora_W_plus_BA`` for ``W + s·B·A``.

    Parameters
    ----------
    source : WeightSource
        The adapter (``adapter_model.safetensors``, its directory, or a PEFT model's state_dict).
    config : dict, optional
        ``adapter_config.json`` (:func:`read_adapter_config`); it sets the scale ``s``.
    base : WeightSource, optional
        The base model, for ``W`` (matched to each adapted module by name); not needed when the source holds
        ``<module>.base_layer.weight``.
    with_base : bool
        Also the merged ``W + s·B·A``.

    Returns
    -------
    WeightSource
        :class:`DerivedRef` layers: the ``B·A`` rows load the ``r × r`` core (:func:`lora_core`), with
        ``matrix_shape = (out, in)``; tensors that are no LoRA factor, and merged layers that cannot be formed,
        are placeholders with their ``skip_reason``.

    Raises
    ------
    FunnelscopeInputError
        No LoRA pair in the source; ``with_base`` without a base or without the scale (no config).
    """
    adapters, others, bases = find_adapters(source, config)
    if not adapters:
        raise FunnelscopeInputError(f"{source.description}: no LoRA adapter (keys ending in lora_A / lora_B)")
    if with_base and base is None and not bases:
        raise FunnelscopeInputError("peft='with_base' needs base_model= (or base_layer weights in the adapter)")
    if with_base and config is None:
        raise FunnelscopeInputError(
            f"{source.description}: no adapter_config.json beside it: the scale lora_alpha/r of W + s·B·A is unknown"
        )
    partners: dict[str, TensorRef] = {}
    if with_base and base is not None:
        wanted = [TensorRef(f"{a.module}.weight", a.shape, "linear", a.B.origin, _refuse) for a in adapters]
        partners = {ref.name: other for ref, other in match_layers(wanted, list(base)).pairs}
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False)) if config else False
    refs: list[TensorRef] = []
    for adapter in adapters:
        out, inp = adapter.shape
        core_shape = (adapter.rank, adapter.rank) if adapter.rank < min(out, inp) else (out, inp)
        columns = {"lora_rank": adapter.rank, "lora_scale": adapter.scale}
        refs.append(DerivedRef(f"{adapter.module}.lora_BA", core_shape, "lora", adapter.B.origin,
                               _core_loader(adapter), matrix_shape=(out, inp), columns=columns))
        if not with_base:
            continue
        weight = bases.get(adapter.module) or partners.get(f"{adapter.module}.weight")
        name = f"{adapter.module}.lora_W_plus_BA"
        stand_in = TensorRef(name, (out, inp), "merged", adapter.B.origin, _refuse)
        if weight is None:
            refs.append(placeholder(stand_in, f"no base layer for {adapter.module!r}"))
            continue
        transpose = fan_in_fan_out or (weight.shape == (inp, out) and out != inp)
        if weight.shape != ((inp, out) if transpose else (out, inp)):
            refs.append(placeholder(stand_in, f"base weight {weight.shape} does not fit B·A {(out, inp)}"))
            continue
        refs.append(DerivedRef(name, weight.shape, "merged", weight.origin, _merged_loader(adapter, weight, transpose),
                               columns=columns))
    refs.extend(placeholder(ref, reason) for ref, reason in others)
    return WeightSource(f"LoRA adapter ({source.description})", tuple(refs))


def _scale(config: dict[str, object] | None, module: str, rank: int) -> float:
    """PEFT's ``scaling``: ``alpha / r`` (``alpha / √r`` with ``use_rslora``), ``alpha`` from ``alpha_pattern``
    when one of its keys matches the module path (``(.*\\.)?key`` as PEFT matches it), else ``lora_alpha``."""
    if config is None:
        return math.nan
    alpha = config.get("lora_alpha", 8)
    patterns = config.get("alpha_pattern") or {}
    if not isinstance(patterns, dict):
        raise FunnelscopeInputError(f"adapter_config.json: alpha_pattern={patterns!r} must be a mapping")
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?(?:{key})", module):
            alpha = value
            break
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise FunnelscopeInputError(f"adapter_config.json: lora_alpha={alpha!r} must be a number")
    return float(alpha) / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _refuse() -> torch.Tensor:
    raise FunnelscopeInputError("a name-matching stand-in has no tensor")


def _core_loader(adapter: LoraAdapter) -> Callable[[], torch.Tensor]:
    return lambda: lora_core(adapter.A.load(), adapter.B.load())


def _merged_loader(adapter: LoraAdapter, weight: TensorRef, transpose: bool) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        product = adapter.B.load().to(torch.float64) @ adapter.A.load().to(torch.float64)
        update = product.T if transpose else product
        return weight.load().to(torch.float64, copy=True).add_(update, alpha=adapter.scale)

    return load
