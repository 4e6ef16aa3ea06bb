"""Data sets that ship with packages, and the DATA argument of the command line.

The built-in data is scikit-learn's digits (1797 8×8 grey-level images of the digits 0–9, pixel values 0–16;
Alpaydin & Kaynak, UCI, 1998), scaled to [0, 1] and split into train and test sets by a fixed, stratified
seed. Nothing is downloaded.

DATA specs: ``digits`` (the test split as flat 64-vectors), ``digits:image`` (the test split as 1×8×8
images), ``digits:train`` / ``digits:train:image`` (the training split), or a ``.npz`` / ``.pt`` file holding
``x`` (and optionally ``y``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from funnelscope.data import LabelledData
from funnelscope.errors import FunnelscopeInputError, first_line

__all__ = ["LabelledData", "load_data", "load_digits"]

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


def load_digits(*, split: str = "test", image: bool = False, seed: int = DIGITS_SPLIT_SEED) -> LabelledData:
    """scikit-learn's digits, scaled to [0, 1], with a fixed stratified train/test split (25 % test).

    Parameters
    ----------
    split : {"train", "test", "all"}
    image : bool
        Shape ``(n, 1, 8, 8)`` instead of ``(n, 64)``.
    seed : int
        Seed of the split (the default is the project's fixed split).
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test", "all"):
        raise FunnelscopeInputError(f"split must be 'train', 'test' or 'all', got {split!r}")
    bunch = sklearn_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    if split != "all":
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=DIGITS_TEST_FRACTION, random_state=seed, stratify=y
        )
        x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    inputs = torch.from_numpy(np.ascontiguousarray(x))
    if image:
        inputs = inputs.reshape(-1, 1, 8, 8)
    return LabelledData(inputs, torch.from_numpy(y), f"digits ({split}{', image' if image else ''})")


def load_data(spec: str | Path, *, limit: int | None = None) -> LabelledData:
    """Read the DATA argument of the command line (see the module docstring).

    Parameters
    ----------
    spec : str or Path
    limit : int, optional
        Keep the first ``limit`` examples.

    Raises
    ------
    FunnelscopeInputError
        Unknown name, missing or unreadable file, no ``x``, mismatched ``y``, an empty data set.
    """
    text = str(spec)
    if text.startswith("digits") and not Path(text).exists():
        parts = text.split(":")[1:]
        unknown = [part for part in parts if part not in ("image", "train", "test", "all")]
        if parts.count("image") > 1 or unknown:
            raise FunnelscopeInputError(f"{text}: unknown data set (try digits, digits:image, digits:train)")
        split = next((part for part in parts if part != "image"), "test")
        data = load_digits(split=split, image="image" in parts)
    else:
        data = _from_file(Path(text).expanduser())
    if limit is not None:
        if limit < 1:
            raise FunnelscopeInputError(f"--n must be at least 1, got {limit}")
        if limit > len(data):
            raise FunnelscopeInputError(f"--n {limit}: {spec} has only {len(data)} examples")
        data = LabelledData(data.x[:limit], None if data.y is None else data.y[:limit], data.name)
    if len(data) == 0:
        raise FunnelscopeInputError(f"{spec}: the data set is empty")
    return data


def _from_file(path: Path) -> LabelledData:
    if not path.exists():
        raise FunnelscopeInputError(f"{path}: no such file (and not a built-in data set such as digits)")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        elif path.suffix in (".pt", ".pth"):
            loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
            if not isinstance(loaded, dict):
                raise FunnelscopeInputError(f"{path}: expected a dict with 'x' (and 'y'), got {type(loaded).__name__}")
            arrays = loaded
        else:
            raise FunnelscopeInputError(f"{path}: unsupported data file (expected .npz or .pt with 'x' and 'y')")
    except FunnelscopeInputError:
        raise
    except Exception as error:
        raise FunnelscopeInputError(f"{path}: unreadable data file ({first_line(error)})") from error
    if "x" not in arrays:
        raise FunnelscopeInputError(f"{path}: no array named 'x' (found {sorted(arrays)})")
    x = torch.as_tensor(np.asarray(arrays["x"]))
    if not x.is_floating_point():
        x = x.to(torch.float32)
    y = arrays.get("y")
    if y is not None:
        y = np.asarray(y).reshape(-1)
        if y.dtype.kind == "f" and not (np.all(np.isfinite(y)) and np.array_equal(y, np.round(y))):
            raise FunnelscopeInputError(f"{path}: 'y' holds non-integer values (class labels must be integers)")
        if y.dtype.kind not in "biuf":
            raise FunnelscopeInputError(f"{path}: 'y' has dtype {y.dtype}, not integer class labels")
        y = torch.as_tensor(y).to(torch.int64)
        if len(y) != len(x):
            raise FunnelscopeInputError(f"{path}: 'y' has {len(y)} labels for {len(x)} inputs")
    return LabelledData(x, y, path.name)
