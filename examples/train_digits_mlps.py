"""Train the same MLP on digits with true and with fully shuffled labels, both to 100 % training accuracy.

Writes ``true_labels.pt`` and ``shuffled_labels.pt`` (TorchScript) and ``.safetensors`` weights into OUT
(default ``digits-mlps/``), then compare their Jacobian spectra on the test split::

    python examples/train_digits_mlps.py digits-mlps
    funnelscope jacobian digits-mlps/true_labels.pt digits-mlps/shuffled_labels.pt digits --out jac --plots
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from funnelscope.datasets import LabelledData, load_digits
from funnelscope.studies.models import mlp
from funnelscope.studies.training import shuffle_labels, train_classifier

RUNS = {"true_labels": (0.0, 40), "shuffled_labels": (1.0, 200)}  # label noise, epochs


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    train, test = load_digits(split="train"), load_digits(split="test")
    for name, (noise, epochs) in RUNS.items():
        torch.manual_seed(0)
        model = mlp(width=512, depth=2)
        labels = shuffle_labels(train.y, noise, seed=1)
        result = train_classifier(model, LabelledData(train.x, labels, train.name), test, epochs=epochs,
                                  batch_size=32, lr=0.05, seed=0)
        final = result.final()
        print(f"{name}: {epochs} epochs, train accuracy {final['train_accuracy']:.4f} "
              f"(loss {final['train_loss']:.2e}), test accuracy {final['test_accuracy']:.4f}")
        torch.jit.script(model.eval()).save(str(out / f"{name}.pt"))
        save_file(dict(model.state_dict()), str(out / f"{name}.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "digits-mlps"))
