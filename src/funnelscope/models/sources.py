"""Where layer weights come from: modules, state dicts and files, read lazily one tensor at a time.

:func:`open_weights` turns whatever a user has into a :class:`WeightSource`, an ordered list of
:class:`TensorRef` whose tensors are only read when :meth:`TensorRef.load` is called. Supported:

========================================  ===================================================================
what                                      how it is read
========================================  ===================================================================
``torch.nn.Module``                       parameters of Linear, Embedding, Conv1d/2d/3d, Hugging Face Conv1D
                                          and any other module's 2-D ``weight``
``Mapping[str, Tensor]`` (a state_dict)   every tensor whose key ends in ``weight`` (or every ≥2-D tensor
                                          when no key does); a training checkpoint's state dict is found at
                                          any depth (:func:`find_state_dict`)
``.safetensors`` file                     memory-mapped header, one tensor at a time
directory                                 ``model.safetensors.index.json`` (sharded) or ``*.safetensors``; else
                                          ``pytorch_model.bin.index.json`` / ``*.bin`` / ``*.pt``; a Hugging
                                          Face model directory is one of these
``.pt`` / ``.pth`` / ``.bin`` file        ``torch.load(weights_only=True, mmap=True)``; a TorchScript archive
                                          through ``torch.jit.load``; a full pickled module only with
                                          ``trust_pickle=True``
========================================  ===================================================================

A file that is neither a zip archive nor a pickle (random bytes, text) is refused before ``torch.load``
sees it. Tensor names held by two files of a directory are an error naming both files.

Anything unreadable raises :class:`~funnelscope.errors.FunnelscopeInputError` naming the file and the problem.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from funnelscope.errors import FunnelscopeInputError, first_line

__all__ = ["TensorRef", "WeightSource", "open_weights"]

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@dataclass(frozen=True)
class TensorRef:
    """A named weight tensor that is read on demand.

    Attributes
    ----------
    name : str
        The key or parameter path, e.g. ``encoder.layer.0.attention.self.query.weight``.
    shape : tuple of int
    kind : str
        ``linear``, ``embedding``, ``conv1d``, ``conv2d``, ``conv3d`` or ``dense`` (a 2-D tensor of unknown
        module type); ``tensor`` for ≥3-D tensors of unknown type, whose trailing axes are read as a kernel.
    origin : str
        The file it lives in, or ``<module>``; used in error messages.
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    origin: str
    _loader: Callable[[], torch.Tensor] = field(repr=False, compare=False)

    def load(self) -> torch.Tensor:
        """Read the tensor (detached, on the CPU, in its stored dtype)."""
        try:
            tensor = self._loader()
        except FunnelscopeInputError:
            raise
        except Exception as error:  # a corrupted shard surfaces here, one layer at a time
            raise FunnelscopeInputError(f"{self.origin}: cannot read tensor {self.name!r}: {error}") from error
        return tensor.detach().cpu()


@dataclass(frozen=True)
class WeightSource:
    """An ordered collection of weight tensors, with a description of where they came from.

    Attributes
    ----------
    description : str
        What was opened, e.g. ``state_dict (ckpt.pt, at model/state_dict, prefix 'module.' stripped)``.
    tensors : tuple of TensorRef
    location : str
        Key path of the state dict inside a checkpoint (``model/state_dict``); empty when it is the top level.
    prefix : str
        The prefix stripped from every name (``module.`` of DDP, ``model.`` of Lightning); empty when none.
    """

    description: str
    tensors: tuple[TensorRef, ...]
    location: str = ""
    prefix: str = ""

    def __iter__(self) -> Iterator[TensorRef]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


def open_weights(source: object, *, trust_pickle: bool = False, matrices_only: bool = True) -> WeightSource:
    """Open a model or a weights file for lazy, tensor-by-tensor reading.

    Parameters
    ----------
    source : nn.Module, Mapping[str, Tensor], str or Path
        A module, a state_dict, a ``.safetensors`` / torch file, or a directory of them (sharded or a
        Hugging Face model directory).
    trust_pickle : bool, default False
        Allow full unpickling of a torch file that is not a plain tensor archive. Unpickling runs arbitrary
        code: only for files you trust.
    matrices_only : bool, default True
        List only layer matrices (weights with ≥ 2 dimensions); False lists every tensor (biases, norms,
        buffers), as needed to load a state_dict into a model.

    Returns
    -------
    WeightSource

    Raises
    ------
    FunnelscopeInputError
        Missing path, unreadable or corrupted file, pickle without ``trust_pickle``, unsupported object.
    """
    if isinstance(source, nn.Module):
        if not matrices_only:
            return _from_state_dict(dict(source.state_dict()), "<module>", matrices_only=False, strip_prefix=False)
        return _from_module(source, "<module>")
    if isinstance(source, Mapping):
        return _from_state_dict(source, "<state_dict>", matrices_only=matrices_only)
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.exists():
            raise FunnelscopeInputError(f"{path}: no such file or directory")
        if path.is_dir():
            return _from_directory(path, trust_pickle=trust_pickle, matrices_only=matrices_only)
        if path.suffix == ".safetensors":
            return _from_safetensors([path], matrices_only=matrices_only)
        return _from_torch_file(path, trust_pickle=trust_pickle, matrices_only=matrices_only)
    raise FunnelscopeInputError(
        f"cannot read weights from a {type(source).__name__}: pass an nn.Module, a state_dict or a path"
    )


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``layer.2`` before ``layer.10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def kind_from_module(module: nn.Module) -> str | None:
    """The matrix kind of a module's ``weight``, or None when it is not a layer matrix (norms, biases)."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
        return "conv1d"
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        return "conv2d"
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
        return "conv3d"
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.ndim == 2:
        return "dense"  # Hugging Face's Conv1D (in × out) and other custom 2-D layers
    return None


def kind_from_shape(shape: tuple[int, ...]) -> str | None:
    """Guess the kind of a state-dict tensor from its rank: 2-D dense, 3/4/5-D convolution."""
    return {2: "dense", 3: "conv1d", 4: "conv2d", 5: "conv3d"}.get(len(shape))


def _from_module(module: nn.Module, origin: str) -> WeightSource:
    refs = []
    for module_name, child in module.named_modules():
        kind = kind_from_module(child)
        weight = getattr(child, "weight", None)
        if kind is None or not isinstance(weight, torch.Tensor) or weight.ndim < 2:
            continue
        name = f"{module_name}.weight" if module_name else "weight"
        if isinstance(child, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            tensor = weight.transpose(0, 1)  # stored (in, out, *k): make it (out, in, *k)
        else:
            tensor = weight
        refs.append(TensorRef(name, tuple(tensor.shape), kind, origin, _constant(tensor)))
    return WeightSource(f"{type(module).__name__} module", tuple(refs))


def _constant(tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: tensor


def _weight_keys(keys: list[str], shapes: Mapping[str, tuple[int, ...]], matrices_only: bool) -> list[str]:
    if not matrices_only:
        return keys
    matrices = [key for key in keys if len(shapes[key]) >= 2]
    named = [key for key in matrices if key.endswith("weight")]
    return named if any(key.endswith("weight") for key in keys) else matrices


def _from_state_dict(state_dict: Mapping[str, object], origin: str, *, matrices_only: bool = True,
                     strip_prefix: bool = True) -> WeightSource:
    """A state dict's weight tensors; a checkpoint's state dict is found first (:func:`find_state_dict`) and,
    with ``strip_prefix`` (not for a module's own state dict), its wrapper prefix (:func:`common_prefix`)
    stripped."""
    location, tensors = find_state_dict(state_dict)
    if not tensors:
        keys = ", ".join(map(str, list(state_dict)[:8])) + (", …" if len(state_dict) > 8 else "")
        raise FunnelscopeInputError(f"{origin}: holds no tensors at any depth (top-level keys: {keys or 'none'})")
    prefix = common_prefix(list(tensors)) if strip_prefix else ""
    tensors = {key[len(prefix):]: value for key, value in tensors.items()}
    shapes = {key: tuple(value.shape) for key, value in tensors.items()}
    refs = []
    for key in _weight_keys(list(tensors), shapes, matrices_only):
        kind = kind_from_shape(shapes[key]) or "tensor"
        refs.append(TensorRef(key, shapes[key], kind, origin, _constant(tensors[key])))
    where = "".join([f", at {location}" if location else "", f", prefix {prefix!r} stripped" if prefix else ""])
    return WeightSource(f"state_dict ({origin}{where})", tuple(refs), location=location, prefix=prefix)


STRIPPED_PREFIXES = ("module.", "model.")  # DDP / DataParallel wrap the model as .module; Lightning as .model
_SKIPPED_KEYS = ("optim", "sched")  # optimizer and scheduler state: per-parameter dicts of tensors, not weights


def find_state_dict(checkpoint: object) -> tuple[str, dict[str, torch.Tensor]]:
    """The state dict inside a (possibly nested) checkpoint: the mapping holding the most tensors.

    Searched breadth-first at any depth through mappings, lists and tuples (of equal sizes the shallower, then
    the earlier wins), but not under keys containing ``optim`` or ``sched`` (an optimizer's per-parameter
    state is a dict of tensors too). chgnet's ``{"model": {"state_dict": …, "model_args": …}, "optimizer": …}`` gives
    ``model/state_dict``; Lightning's ``{"state_dict": …, "epoch": …}`` gives ``state_dict``.

    Returns
    -------
    location : str
        The key path, ``/``-separated (empty for the top level).
    tensors : dict
        Its tensor values under string keys (empty when the checkpoint holds no tensor).

    >>> find_state_dict({"epoch": 3, "model": {"state_dict": {"w": torch.ones(2, 2)}, "args": {}}})[0]
    'model/state_dict'
    """
    best: tuple[str, dict[str, torch.Tensor]] = ("", {})
    pending: deque[tuple[str, object]] = deque([("", checkpoint)])
    seen: set[int] = set()
    while pending:
        path, node = pending.popleft()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Mapping):
            tensors = {str(k): v for k, v in node.items() if isinstance(v, torch.Tensor)}
            if len(tensors) > len(best[1]):
                best = (path, tensors)
            children = [(str(k), v) for k, v in node.items()
                        if not any(word in str(k).lower() for word in _SKIPPED_KEYS)]
        elif isinstance(node, (list, tuple)):
            children = [(str(i), v) for i, v in enumerate(node)]
        else:
            continue
        pending.extend((f"{path}/{key}" if path else key, value) for key, value in children
                       if isinstance(value, (Mapping, list, tuple)))
    return best


def common_prefix(names: list[str]) -> str:
    """The wrapper prefixes (:data:`STRIPPED_PREFIXES`, repeated: ``module.model.``) that every name shares.

    >>> common_prefix(["module.fc.weight", "module.fc.bias"]), common_prefix(["model.a", "b"])
    ('module.', '')
    """
    prefix = ""
    while True:
        rest = [name[len(prefix):] for name in names]
        step = next((p for p in STRIPPED_PREFIXES if all(r.startswith(p) and len(r) > len(p) for r in rest)), None)
        if step is None or not names:
            return prefix
        prefix += step


def _from_safetensors(
    paths: list[Path], order: list[str] | None = None, *, matrices_only: bool = True
) -> WeightSource:
    from safetensors import safe_open

    located: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for path in paths:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    shape = tuple(handle.get_slice(key).get_shape())
                    if order is None and key in located:  # an index names the shard of each tensor
                        raise _duplicate(key, located[key][0], path)
                    located[key] = (path, shape)
        except FunnelscopeInputError:
            raise
        except Exception as error:
            raise FunnelscopeInputError(f"{path}: not a readable safetensors file ({first_line(error)})") from error
        _check_safetensors_size(path)
    keys = order if order is not None else sorted(located, key=natural_key)
    missing = [key for key in keys if key not in located]
    if missing:
        raise FunnelscopeInputError(f"{paths[0].parent}: index names tensors no shard holds, e.g. {missing[0]!r}")
    shapes = {key: located[key][1] for key in keys}
    refs = []
    for key in _weight_keys(keys, shapes, matrices_only):
        path, shape = located[key]
        kind = kind_from_shape(shape) or "tensor"
        refs.append(TensorRef(key, shape, kind, str(path), _safetensors_loader(path, key)))
    origin = str(paths[0] if len(paths) == 1 else paths[0].parent)
    return WeightSource(f"safetensors ({origin}, {len(paths)} file{'s' * (len(paths) > 1)})", tuple(refs))


def _duplicate(name: str, first: Path | str, second: Path | str) -> FunnelscopeInputError:
    return FunnelscopeInputError(f"tensor {name!r} is in both {first} and {second}: keep one of the files")


def _check_safetensors_size(path: Path) -> None:
    """A truncated safetensors file still opens (the header is intact): compare sizes with the header."""
    with path.open("rb") as stream:
        header_length = int.from_bytes(stream.read(8), "little")
        header = json.loads(stream.read(header_length))
    end = max((info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"), default=0)
    expected = 8 + header_length + end
    actual = path.stat().st_size
    if actual < expected:
        raise FunnelscopeInputError(
            f"{path}: truncated safetensors file ({actual} bytes, its header describes {expected})"
        )


def _safetensors_loader(path: Path, key: str) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return handle.get_tensor(key)

    return load


def _from_directory(directory: Path, *, trust_pickle: bool, matrices_only: bool) -> WeightSource:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as error:
            raise FunnelscopeInputError(f"{index}: not a valid safetensors index ({first_line(error)})") from error
        shards = sorted({directory / name for name in weight_map.values()})
        for shard in shards:
            if not shard.exists():
                raise FunnelscopeInputError(f"{index}: shard {shard.name} is missing")
        return _from_safetensors(shards, order=sorted(weight_map, key=natural_key), matrices_only=matrices_only)
    safetensors_files = sorted(directory.glob("*.safetensors"), key=lambda p: natural_key(p.name))
    if safetensors_files:
        return _from_safetensors(safetensors_files, matrices_only=matrices_only)
    torch_files = sorted(
        (p for p in directory.iterdir() if p.suffix in _TORCH_SUFFIXES and p.is_file()),
        key=lambda p: natural_key(p.name),
    )
    if not torch_files:
        raise FunnelscopeInputError(f"{directory}: no .safetensors, .bin or .pt weights in this directory")
    refs: dict[str, TensorRef] = {}
    for path in torch_files:
        for ref in _from_torch_file(path, trust_pickle=trust_pickle, matrices_only=matrices_only):
            if ref.name in refs:
                raise _duplicate(ref.name, refs[ref.name].origin, path)
            refs[ref.name] = ref
    return WeightSource(f"torch files ({directory}, {len(torch_files)} files)", tuple(refs.values()))


def _from_torch_file(path: Path, *, trust_pickle: bool, matrices_only: bool = True) -> WeightSource:
    if not zipfile.is_zipfile(path) and path.suffix not in _TORCH_SUFFIXES:
        raise FunnelscopeInputError(
            f"{path}: unsupported file type {path.suffix!r} (expected .safetensors, .pt, .pth, .bin or a directory)"
        )
    obj = load_torch_file(path, trust_pickle=trust_pickle)
    if isinstance(obj, torch.jit.ScriptModule):
        return _from_state_dict(dict(obj.state_dict()), str(path), matrices_only=matrices_only, strip_prefix=False)
    if isinstance(obj, nn.Module):
        if not matrices_only:
            return _from_state_dict(dict(obj.state_dict()), str(path), matrices_only=False, strip_prefix=False)
        return _from_module(obj, str(path))
    if isinstance(obj, (Mapping, list, tuple)):
        return _from_state_dict(obj if isinstance(obj, Mapping) else {"": obj}, str(path),
                                matrices_only=matrices_only)
    raise FunnelscopeInputError(f"{path}: holds a {type(obj).__name__}, not a model or a state_dict")


def load_torch_file(path: Path, *, trust_pickle: bool) -> object:
    """What a torch file holds, loaded safely: a TorchScript archive as its ``ScriptModule``, anything else with
    ``torch.load(weights_only=True)`` (memory-mapped when it is a zip archive); a full pickle only with
    ``trust_pickle``, since unpickling runs code from the file.

    Raises
    ------
    FunnelscopeInputError
        An unreadable archive or file, or a pickle without ``trust_pickle``.
    """
    _check_torch_format(path)
    if _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as error:
            raise FunnelscopeInputError(f"{path}: unreadable TorchScript archive ({first_line(error)})") from error
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:
        if not _is_pickle_refusal(error):
            raise FunnelscopeInputError(f"{path}: not a readable torch file ({first_line(error)})") from error
        if not trust_pickle:
            raise FunnelscopeInputError(
                f"{path}: holds pickled Python objects, not just tensors; loading it runs code from the file. "
                "Pass trust_pickle=True (--trust-pickle) only if you trust it"
            ) from error
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as inner:
        raise FunnelscopeInputError(f"{path}: cannot unpickle ({first_line(inner)})") from inner


def _check_torch_format(path: Path) -> None:
    """Refuse what ``torch.save`` never writes: a torch file is a zip archive or (the legacy format) a pickle
    of protocol ≥ 2, whose first byte is ``0x80``.

    Raises
    ------
    FunnelscopeInputError
        An empty file, a text file, or other bytes.
    """
    with path.open("rb") as stream:
        head = stream.read(512)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        return
    if not head:
        raise FunnelscopeInputError(f"{path}: empty file, not a torch file")
    text = head.decode("utf-8", errors="replace")
    if "\x00" not in text and text.count("\ufffd") <= 3:  # a character cut at byte 512 is not binary
        start = text.strip().splitlines()[0][:40] if text.strip() else ""
        raise FunnelscopeInputError(f"{path}: a text file ({start!r}…), not a torch file (torch.save writes a zip "
                                    "archive)")
    raise FunnelscopeInputError(f"{path}: not a torch file (neither a zip archive nor a pickle; starts with "
                                f"{head[:4].hex(' ')})")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def _is_pickle_refusal(error: Exception) -> bool:
    text = str(error)
    return "weights_only" in text or "Unsupported global" in text or "WeightsUnpickler" in text
