"""Data for the studies: digits (or the user's arrays) split by seed, normalised, and augmented on the fly.

* :func:`prepare_data` returns the train and test :class:`~funnelscope.datasets.LabelledData`. Digits by default
  (scikit-learn's 1797 8×8 images, as flat 64-vectors or ``1×8×8`` images), or any ``(x, y)`` arrays; the
  stratified train/test split is fixed by ``seed``. ``normalize`` standardises every input feature with the
  training set's statistics, :math:`x' = (x - \\mu_{\\text{train}}) / \\sigma_{\\text{train}}` (constant features
  are only centred), so the test set never informs the preprocessing.
* :class:`Augmentation` is a batch transform for :func:`~funnelscope.studies.training.train_classifier`: random
  integer shifts of up to ``shift`` pixels in each direction (zero fill) and horizontal flips with probability
  1/2, drawn from the trainer's seeded generator, so augmented training stays deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from funnelscope.datasets import DIGITS_TEST_FRACTION, LabelledData
from funnelscope.errors import FunnelscopeInputError

__all__ = ["Augmentation", "prepare_data", "subsample"]


@dataclass(frozen=True)
class Augmentation:
    """Random shifts and horizontal flips of image batches (flat inputs are viewed as ``image_shape``).

    Parameters
    ----------
    shift : int
        Largest shift in pixels along each axis; each example gets ``(dy, dx)`` uniform in ``[-shift, shift]²``.
    flip : bool
        Mirror each example left–right with probability 1/2.
    image_shape : (C, H, W)
        The image layout of one example (digits: ``(1, 8, 8)``).

    Examples
    --------
    >>> augment = Augmentation(shift=1, flip=True, image_shape=(1, 8, 8))
    >>> augment(torch.ones(4, 64), torch.Generator().manual_seed(0)).shape
    torch.Size([4, 64])
    """

    shift: int = 0
    flip: bool = False
    image_shape: tuple[int, int, int] = (1, 8, 8)

    def __post_init__(self) -> None:
        if self.shift < 0 or len(self.image_shape) != 3:
            raise FunnelscopeInputError(
                f"Augmentation: need shift ≥ 0 and a (C, H, W) image shape, got {self.shift}, {self.image_shape}"
            )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shape = x.shape
        images = x.reshape(len(x), *self.image_shape)
        if self.shift:
            s = self.shift
            offsets = torch.randint(-s, s + 1, (len(x), 2), generator=generator)
            padded = torch.nn.functional.pad(images, (s, s, s, s))
            height, width = self.image_shape[1:]
            shifted = torch.empty_like(images)
            for dy, dx in torch.unique(offsets, dim=0).tolist():
                rows = ((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).nonzero().flatten()
                shifted[rows] = padded[rows, :, s + dy : s + dy + height, s + dx : s + dx + width]
            images = shifted
        if self.flip:
            mirrored = torch.rand(len(x), generator=generator) < 0.5
            images = torch.where(mirrored[:, None, None, None], images.flip(-1), images)
        return images.reshape(shape)

    @classmethod
    def from_name(cls, name: str, *, image_shape: tuple[int, int, int] = (1, 8, 8)) -> Augmentation | None:
        """Parse ``""``/``"none"``, ``"shift"``, ``"flip"`` or ``"shift+flip"`` (a one-pixel shift)."""
        parts = {part for part in name.split("+") if part and part != "none"}
        unknown = parts - {"shift", "flip"}
        if unknown:
            raise FunnelscopeInputError(f"augment: unknown {sorted(unknown)} (use none, shift, flip, shift+flip)")
        if not parts:
            return None
        return cls(shift=1 if "shift" in parts else 0, flip="flip" in parts, image_shape=image_shape)


def prepare_data(
    *,
    x: np.ndarray | torch.Tensor | None = None,
    y: np.ndarray | torch.Tensor | None = None,
    image: bool = False,
    normalize: bool = False,
    test_fraction: float = DIGITS_TEST_FRACTION,
    seed: int = 0,
) -> tuple[LabelledData, LabelledData]:
    """The training and test sets of a study run.

    Parameters
    ----------
    x, y : arrays, optional
        The user's inputs (first axis = examples) and integer labels; default: scikit-learn's digits scaled to
        ``[0, 1]``.
    image : bool
        Digits as ``(n, 1, 8, 8)`` images instead of 64-vectors (user arrays keep their shape).
    normalize : bool
        Standardise each feature with the training set's mean and standard deviation.
    test_fraction : float
        Share of examples held out, stratified by label.
    seed : int
        Seed of the split.

    Returns
    -------
    (LabelledData, LabelledData)
        Train and test sets, float32 inputs and int64 labels.

    Raises
    ------
    FunnelscopeInputError
        Only one of ``x``/``y``, mismatched lengths, non-finite inputs, labels that are not class indices,
        a ``test_fraction`` outside ``(0, 1)``.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise FunnelscopeInputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if (x is None) != (y is None):
        raise FunnelscopeInputError("give both x and y (or neither, for digits)")
    if x is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        inputs = (bunch.data / 16.0).astype(np.float32)
        labels = bunch.target.astype(np.int64)
        if image:
            inputs = inputs.reshape(-1, 1, 8, 8)
        name = "digits"
    else:
        inputs = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
        labels = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
        if len(inputs) != len(labels) or len(inputs) < 4:
            raise FunnelscopeInputError(f"x has {len(inputs)} examples and y {len(labels)} labels (need ≥ 4, equal)")
        if not np.all(np.isfinite(inputs)):
            raise FunnelscopeInputError("x has non-finite values")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise FunnelscopeInputError("y must hold class indices 0, 1, …")
        labels = labels.astype(np.int64)
        name = "user data"
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        inputs, labels, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    if normalize:
        mean = x_train.mean(axis=0, keepdims=True)
        std = x_train.std(axis=0, keepdims=True)
        std[std < 1e-6] = 1.0
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    train = LabelledData(torch.from_numpy(np.ascontiguousarray(x_train)), torch.from_numpy(y_train), f"{name} (train)")
    test = LabelledData(torch.from_numpy(np.ascontiguousarray(x_test)), torch.from_numpy(y_test), f"{name} (test)")
    return train, test


def subsample(data: LabelledData, size: int | None, *, seed: int = 0) -> LabelledData:
    """The first ``size`` examples of a seeded permutation (all of them when ``size`` is None or larger)."""
    if size is None or size >= len(data):
        return data
    if size < 1:
        raise FunnelscopeInputError(f"subsample size must be positive, got {size}")
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return LabelledData(data.x[index], None if data.y is None else data.y[index], data.name)
