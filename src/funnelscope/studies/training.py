"""A seeded, deterministic training loop for small classifiers on the CPU (or any torch device).

Plain mini-batch SGD with momentum, weight decay and a learning-rate schedule (constant, cosine, step or
linear decay), on cross-entropy, with an optional seeded batch augmentation and per-epoch checkpoints in memory
or on disk. The data order comes from a ``torch.Generator`` seeded by ``seed``, the initialisation from
``torch.manual_seed(seed)`` before the factory is called, so the same seed gives the same model.
Label noise follows Zhang et al., "Understanding deep learning requires rethinking generalization" (ICLR 2017):
a fraction of the training labels is shuffled among themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from funnelscope.datasets import LabelledData
from funnelscope.errors import FunnelscopeInputError

__all__ = ["SCHEDULES", "TrainingResult", "evaluate", "learning_rate", "shuffle_labels", "train_classifier"]

SCHEDULES = ("constant", "cosine", "step", "linear")


def learning_rate(lr: float, schedule: str, step: int, total_steps: int) -> float:
    """The learning rate at ``step`` of ``total_steps`` (``t = step/total_steps``).

    ``constant``: ``lr``; ``cosine``: ``lr·(1 + cos πt)/2`` (Loshchilov & Hutter, ICLR 2017, without restarts);
    ``step``: ``lr``, ``lr/10`` from ``t = 1/2``, ``lr/100`` from ``t = 3/4``; ``linear``: ``lr·(1 − t)``.
    """
    t = step / max(total_steps, 1)
    if schedule == "cosine":
        return lr * (1 + math.cos(math.pi * t)) / 2
    if schedule == "step":
        return lr * (0.01 if t >= 0.75 else 0.1 if t >= 0.5 else 1.0)
    if schedule == "linear":
        return lr * (1.0 - t)
    return lr


@dataclass(frozen=True)
class TrainingResult:
    """The trained model, its per-epoch history and (optionally) a state_dict per epoch."""

    model: nn.Module = field(repr=False)
    history: pd.DataFrame
    checkpoints: tuple[dict[str, torch.Tensor], ...] = field(default=(), repr=False)

    def final(self) -> dict[str, float]:
        """The last epoch's row as a dict."""
        return {key: float(value) for key, value in self.history.iloc[-1].items()}


def shuffle_labels(labels: torch.Tensor, fraction: float, *, seed: int = 0) -> torch.Tensor:
    """Shuffle exactly ``round(fraction·n)`` labels among themselves (chosen uniformly at random).

    ``fraction=1`` is a random permutation of all labels ("random labels", class balance kept); labels that
    a shuffle happens to put back in place count as shuffled too, as in Zhang et al. (2017).
    """
    if not 0.0 <= fraction <= 1.0:
        raise FunnelscopeInputError(f"label noise fraction must be in [0, 1], got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    count = round(fraction * len(labels))
    chosen = torch.randperm(len(labels), generator=generator)[:count]
    noisy = labels.clone()
    noisy[chosen] = labels[chosen][torch.randperm(count, generator=generator)]
    return noisy


@torch.no_grad()
def evaluate(model: nn.Module, data: LabelledData, *, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) on ``data``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss, correct = 0.0, 0
    for start in range(0, len(data), batch_size):
        x = data.x[start : start + batch_size].to(device)
        y = data.y[start : start + batch_size].to(device)
        logits = model(x)
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    return loss / len(data), correct / len(data)


def train_classifier(
    model: nn.Module,
    train: LabelledData,
    test: LabelledData | None = None,
    *,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    seed: int = 0,
    keep_checkpoints: bool = False,
    checkpoint_dir: str | Path | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> TrainingResult:
    """Train ``model`` on ``train`` with SGD; evaluate on both sets after every epoch.

    Parameters
    ----------
    model : nn.Module
        Trained in place (and returned in the result).
    train, test : LabelledData
        ``test`` is optional; its columns are left out without it.
    epochs, batch_size, lr, momentum, weight_decay
        The usual SGD knobs; the last, smaller batch of an epoch is kept.
    schedule : {"constant", "cosine", "step", "linear"}
        Set per step by :func:`learning_rate`; cosine: ``lr_t = lr·(1 + cos(π t/T))/2``.
    seed : int
        Seeds the data order and the augmentation.
    keep_checkpoints : bool
        Keep a copy of the state_dict after every epoch.
    checkpoint_dir : path, optional
        Also save the state_dict after every epoch as ``epoch_001.pt``, … in this directory (created).
    augment : callable, optional
        ``augment(x, generator)`` transforms each training batch (e.g. :class:`~funnelscope.studies.data.
        Augmentation`); it draws from the trainer's seeded generator.

    Returns
    -------
    TrainingResult
        ``history`` columns: epoch, lr, train_loss, train_accuracy, test_loss, test_accuracy.
    """
    if train.y is None:
        raise FunnelscopeInputError(f"{train.name}: training needs labels")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise FunnelscopeInputError(f"need epochs ≥ 1, batch_size ≥ 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    if schedule not in SCHEDULES:
        raise FunnelscopeInputError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    if not (momentum >= 0 and weight_decay >= 0):
        raise FunnelscopeInputError(f"need momentum ≥ 0 and weight_decay ≥ 0, got {momentum} and {weight_decay}")
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = epochs * steps_per_epoch
    rows, checkpoints = [], []
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), batch_size):
            if schedule != "constant":
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(lr, schedule, step, total_steps)
            index = order[start : start + batch_size]
            x, y = train.x[index], train.y[index]
            if augment is not None:
                x = augment(x, generator)
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            step += 1
        train_loss, train_accuracy = evaluate(model, train)
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
               "train_accuracy": train_accuracy}
        if test is not None and test.y is not None:
            row["test_loss"], row["test_accuracy"] = evaluate(model, test)
        rows.append(row)
        if keep_checkpoints:
            checkpoints.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        if checkpoint_dir is not None:
            torch.save(model.state_dict(), checkpoint_dir / f"epoch_{epoch:03d}.pt")
    model.eval()
    return TrainingResult(model, pd.DataFrame(rows), tuple(checkpoints))
