"""Data sets that ship with packages, and the DATA argument of the command line.

The built-in data is scikit-learn's digits (1797 8×8 grey-level images of the digits 0–9, pixel values 0–16;
Alpaydin & Kaynak, UCI, 1998), scaled to [0, 1] and split into train and test sets by a fixed, stratified
seed. Nothing is downloaded.

DATA specs: ``digits`` (the test split as flat 64-vectors), ``digits:image`` (the test split as 1×8×8
images), ``digits:train`` / ``digits:train:image`` (the training split), or a file a user has
(:mod:`funnelscope.data_files`): a ``.npz`` / ``.pt`` with ``x`` (and ``y``), ``x.npy[:y=y.npy]``
(memory-mapped), a table ``t.parquet`` / ``t.csv[:label=COLUMN]``, or an image folder
``DIR[:size=S][:mean=…][:std=…][:mode=RGB|L]`` of class sub-folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from funnelscope.data import LabelledData
from funnelscope.data_files import read_data_file, split_spec
from funnelscope.errors import FunnelscopeInputError

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
    if text.startswith("digits") and not split_spec(text)[0].exists():
        parts = text.split(":")[1:]
        unknown = [part for part in parts if part not in ("image", "train", "test", "all")]
        if parts.count("image") > 1 or unknown:
            raise FunnelscopeInputError(f"{text}: unknown data set (try digits, digits:image, digits:train)")
        split = next((part for part in parts if part != "image"), "test")
        data = load_digits(split=split, image="image" in parts)
    else:
        data = read_data_file(text)
    if limit is not None:
        if limit < 1:
            raise FunnelscopeInputError(f"--n must be at least 1, got {limit}")
        if limit > len(data):
            raise FunnelscopeInputError(f"--n {limit}: {spec} has only {len(data)} examples")
        data = LabelledData(data.x[:limit], None if data.y is None else data.y[:limit], data.name)
    if len(data) == 0:
        raise FunnelscopeInputError(f"{spec}: the data set is empty")
    return data
