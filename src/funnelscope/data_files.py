"""Data from files a user has, for the DATA argument: arrays, tables and folders of images.

=======================================  ==================================================================
DATA spec                                what is read
=======================================  ==================================================================
``d.npz`` / ``d.pt``                     arrays (tensors) ``x`` and optionally ``y``
``x.npy`` / ``x.npy:y=labels.npy``       inputs (and labels) from ``.npy`` files, memory-mapped: the
                                         examples are read from disk as the probes use them, never copied
                                         whole (a float array keeps its dtype; others become float32)
``t.parquet`` / ``t.csv[:label=COL]``    one example per row: every other column is a feature (numbers
                                         only); labels from ``COL`` (default: a column named ``label``
                                         if there is one, else no labels); text labels become the indices
                                         of their sorted values
``DIR[:size=S][:mean=…][:std=…]``        an image folder, ``DIR/<class>/<image>`` (torchvision's
``[:mode=RGB|L]``                        ImageFolder layout): classes are the sub-folders in sorted order,
                                         labels their indices; each image read with Pillow, converted to
                                         ``mode`` (default RGB), resized to ``S`` × ``S`` (or ``S=HxW``;
                                         bilinear; default: the images' common size), scaled to [0, 1],
                                         then normalised per channel, ``(x − mean) / std`` (comma-separated,
                                         one value per channel or one for all; default: not normalised);
                                         shape ``(n, channels, H, W)``, float32
=======================================  ==================================================================

Options follow the path after ``:`` as ``key=value``. Labels must be integers (a float label such as 2.5 is
an error, not truncated). Every problem is a :class:`~funnelscope.errors.FunnelscopeInputError` naming the file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from funnelscope.data import LabelledData
from funnelscope.errors import FunnelscopeInputError, first_line

__all__ = ["IMAGE_SUFFIXES", "read_data_file", "split_spec"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
OPTIONS = {"npy": ("y",), "table": ("label",), "images": ("size", "mean", "std", "mode")}


def split_spec(spec: str) -> tuple[Path, dict[str, str]]:
    """The path and the ``key=value`` options of a DATA spec; the longest prefix that exists is the path
    (a path may hold ``:``).

    >>> split_spec("no/such/file.csv:label=target")
    (PosixPath('no/such/file.csv'), {'label': 'target'})
    """
    parts = spec.split(":")
    for end in range(len(parts), 0, -1):
        path, options = Path(":".join(parts[:end])).expanduser(), parts[end:]
        if path.exists() and all("=" in option for option in options):
            return path, dict(option.split("=", 1) for option in options)
    if len(parts) > 1 and all("=" in option for option in parts[1:]):
        return Path(parts[0]).expanduser(), dict(option.split("=", 1) for option in parts[1:])
    return Path(spec).expanduser(), {}


def read_data_file(spec: str) -> LabelledData:
    """Read a DATA spec naming a file or folder (module docstring).

    Raises
    ------
    FunnelscopeInputError
        A missing or unreadable file, an unknown option, no ``x``, labels that are not integers or do not match
        the inputs in number, non-numeric features, a folder without images, images of different sizes and no
        ``size``.
    """
    path, options = split_spec(spec)
    if not path.exists():
        raise FunnelscopeInputError(f"{path}: no such file (and not a built-in data set such as digits)")
    if path.is_dir():
        kind = "images"
    elif path.suffix == ".npy":
        kind = "npy"
    elif path.suffix in (".parquet", ".csv"):
        kind = "table"
    elif path.suffix in (".npz", ".pt", ".pth"):
        kind = "arrays"
    else:
        raise FunnelscopeInputError(f"{path}: unsupported data file (expected .npz, .pt, .npy, .parquet, .csv or a "
                                    "folder of class folders of images)")
    allowed = OPTIONS.get(kind, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        hint = f"expected {', '.join(f'{key}=' for key in allowed)}" if allowed else "it takes no options"
        raise FunnelscopeInputError(f"{spec}: unknown option {unknown[0]!r} for {path.name} ({hint})")
    if kind == "images":
        return _images(path, options)
    if kind == "npy":
        x = _npy(path)
        y = None if "y" not in options else _labels(_npy(_beside(path, options["y"])), f"{path}:y", len(x))
        return LabelledData(x, y, path.name)
    if kind == "table":
        return _table(path, options.get("label"))
    return _arrays(path)


def _beside(path: Path, name: str) -> Path:
    """``name`` as given, else relative to the folder of ``path``."""
    given = Path(name).expanduser()
    return given if given.exists() or given.is_absolute() else path.parent / given


def _npy(path: Path) -> torch.Tensor:
    if not path.exists():
        raise FunnelscopeInputError(f"{path}: no such file")
    try:
        array = np.load(path, mmap_mode="c", allow_pickle=False)  # copy-on-write map: pages read on demand
    except Exception as error:
        raise FunnelscopeInputError(f"{path}: unreadable .npy file ({first_line(error)})") from error
    return _inputs(array, path)


def _inputs(array: np.ndarray | torch.Tensor, path: Path) -> torch.Tensor:
    """The inputs as a tensor sharing the array's memory (a memory map stays one); floats keep their dtype,
    integers and booleans become float32."""
    if isinstance(array, torch.Tensor):
        tensor = array.detach()
    else:
        if array.dtype.kind not in "biuf":
            raise FunnelscopeInputError(f"{path}: holds {array.dtype} values, not numbers")
        tensor = torch.from_numpy(array if array.flags.c_contiguous else np.ascontiguousarray(array))
    if tensor.ndim == 0 or tensor.is_complex():
        raise FunnelscopeInputError(f"{path}: holds a {'complex array' if tensor.ndim else 'scalar'}, not inputs")
    return tensor if tensor.is_floating_point() else tensor.to(torch.float32)


def _labels(values: object, where: str, n: int) -> torch.Tensor:
    """Class labels: integers (integer-valued floats accepted), one per example."""
    y = np.asarray(values).reshape(-1)
    if y.dtype.kind == "f" and not (np.all(np.isfinite(y)) and np.array_equal(y, np.round(y))):
        raise FunnelscopeInputError(f"{where}: holds non-integer labels (class labels must be integers)")
    if y.dtype.kind not in "biuf":
        raise FunnelscopeInputError(f"{where}: has dtype {y.dtype}, not integer class labels")
    if len(y) != n:
        raise FunnelscopeInputError(f"{where}: {len(y)} labels for {n} inputs")
    return torch.as_tensor(np.array(y)).to(torch.int64)


def _arrays(path: Path) -> LabelledData:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        else:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
            if not isinstance(loaded, dict):
                raise FunnelscopeInputError(f"{path}: expected a dict with 'x' (and 'y'), got {type(loaded).__name__}")
            arrays = loaded
    except FunnelscopeInputError:
        raise
    except Exception as error:
        raise FunnelscopeInputError(f"{path}: unreadable data file ({first_line(error)})") from error
    if "x" not in arrays:
        raise FunnelscopeInputError(f"{path}: no array named 'x' (found {sorted(arrays)})")
    x = arrays["x"]
    x = _inputs(x if isinstance(x, torch.Tensor) else np.asarray(x), path)
    y = None if arrays.get("y") is None else _labels(arrays["y"], f"{path}: 'y'", len(x))
    return LabelledData(x, y, path.name)


def _table(path: Path, label: str | None) -> LabelledData:
    import pandas as pd

    try:
        frame = pd.read_parquet(path, memory_map=True) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as error:
        raise FunnelscopeInputError(f"{path}: unreadable table ({first_line(error)})") from error
    if label is not None and label not in frame.columns:
        raise FunnelscopeInputError(f"{path}: no column {label!r} for label= (columns: "
                                    f"{', '.join(map(str, frame.columns[:8]))})")
    label = label if label is not None else ("label" if "label" in frame.columns else None)
    features = frame.drop(columns=[label]) if label is not None else frame
    text = [str(column) for column in features.columns if not pd.api.types.is_numeric_dtype(features[column])]
    if text:
        raise FunnelscopeInputError(f"{path}: feature column {text[0]!r} is not numeric (give the label column "
                                    "as label=COLUMN; drop other text columns)")
    if features.shape[1] == 0:
        raise FunnelscopeInputError(f"{path}: no feature columns besides the label {label!r}")
    x = torch.from_numpy(np.require(features.to_numpy(dtype=np.float32), requirements=["C", "W"]))
    y = None
    if label is not None:
        column = frame[label]
        values = column if pd.api.types.is_numeric_dtype(column) else pd.Categorical(column).codes
        y = _labels(values, f"{path}: column {label!r}", len(x))
    return LabelledData(x, y, path.name)


def _images(folder: Path, options: dict[str, str]) -> LabelledData:
    from PIL import Image

    classes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
    files = [(path, label) for label, name in enumerate(classes)
             for path in sorted((folder / name).rglob("*")) if path.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise FunnelscopeInputError(f"{folder}: no images in class sub-folders (the layout is {folder.name}/<class>/"
                                    f"<image>, e.g. .png or .jpg)")
    mode = options.get("mode", "RGB")
    if mode not in ("RGB", "L"):
        raise FunnelscopeInputError(f"{folder}: mode={mode!r} must be RGB or L")
    size = _size(options["size"], folder) if "size" in options else None
    images = []
    for path, _ in files:
        try:
            with Image.open(path) as image:
                image = image.convert(mode)
                if size is None:
                    size = image.size[::-1]
                if image.size[::-1] != size:
                    if "size" not in options:
                        raise FunnelscopeInputError(f"{path}: {image.size[1]}×{image.size[0]}, but the first image is "
                                                    f"{size[0]}×{size[1]}: pass size=S (e.g. {folder}:size=32)")
                    image = image.resize(size[::-1], Image.Resampling.BILINEAR)
                images.append(np.asarray(image, dtype=np.float32) / 255.0)
        except FunnelscopeInputError:
            raise
        except Exception as error:
            raise FunnelscopeInputError(f"{path}: unreadable image ({first_line(error)})") from error
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    channels = x.shape[1]
    for key, default in (("mean", 0.0), ("std", 1.0)):
        values = _per_channel(options.get(key), default, channels, f"{folder}:{key}")
        if key == "std" and np.any(values <= 0):
            raise FunnelscopeInputError(f"{folder}: std={options[key]} must be positive")
        x = x - values[None, :, None, None] if key == "mean" else x / values[None, :, None, None]
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return LabelledData(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), labels,
                        f"{folder.name} ({len(classes)} classes)")


def _size(text: str, folder: Path) -> tuple[int, int]:
    try:
        sizes = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        sizes = ()
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise FunnelscopeInputError(f"{folder}: size={text} must be S or HxW in pixels, e.g. 32 or 32x48")
    return (sizes[0], sizes[0]) if len(sizes) == 1 else (sizes[0], sizes[1])


def _per_channel(text: str | None, default: float, channels: int, where: str) -> np.ndarray:
    if text is None:
        return np.full(channels, default, dtype=np.float32)
    try:
        values = np.array([float(part) for part in text.split(",")], dtype=np.float32)
    except ValueError:
        raise FunnelscopeInputError(f"{where}={text}: expected numbers separated by commas") from None
    if len(values) == 1:
        return np.full(channels, values[0], dtype=np.float32)
    if len(values) != channels:
        raise FunnelscopeInputError(f"{where}={text}: {len(values)} values for {channels} channels")
    return values
