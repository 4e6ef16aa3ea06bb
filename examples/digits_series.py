"""A series of pretrained digits models, ranked by their spectra without training (``funnelscope series``).

The seeds' experiment in miniature: someone trained a zoo of models and reported their test accuracies; we have
the model files and the training data. This script plays the someone — it trains MLPs (widths 16, 64, 256;
1, 4 and 16 epochs at learning rate 0.01, so that the short runs stay underfitted) and CNNs (widths 8, 16; 5
and 20 epochs at 0.1) on the digits training split, 13 models, saves each as TorchScript and writes
``manifest.csv`` with the test accuracy it reached (columns ``name, model, accuracy``). It also keeps the
per-epoch state_dicts of one width-64 MLP run (``checkpoints/epoch_*.pt``) with a second manifest that names
the architecture as ``funnelscope.studies.models:mlp`` and the weights file of each checkpoint. Then it runs::

    funnelscope series OUT/manifest.csv --data digits:train:image --n 600 --hessian --workers 2 --out OUT/series
    funnelscope series OUT/checkpoints.csv --data digits:train:image --n 600 --order step --workers 2 \
        --out OUT/trajectory

(every metric on the first 600 training images, which all the models accept: the MLPs flatten them), so the
correlations answer: does a metric computed on training data rank the models by their reported *test*
accuracy? About three minutes on two cores. Usage::

    python examples/digits_series.py [OUT]      # default OUT: digits-series/
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

from funnelscope.datasets import load_digits
from funnelscope.studies.models import mlp, small_cnn
from funnelscope.studies.training import train_classifier

#: architecture → (factory, widths, epochs, learning rate): the MLPs at a small rate, so that the short runs
#: stay underfitted; the CNNs (global average pooling over 8×8 images learns slowly) at a larger one
ARCHITECTURES = {"mlp": (mlp, (16, 64, 256), (1, 4, 16), 0.01), "cnn": (small_cnn, (8, 16), (5, 20), 0.1)}
TRAJECTORY = {"width": 64, "epochs": 16, "lr": 0.01, "kept": (1, 2, 3, 4, 6, 8, 11, 16)}
EXAMPLES = "600"  # the first 600 training images


def train_zoo(out: Path) -> None:
    """The 15 models as TorchScript files and ``manifest.csv`` with their test accuracies."""
    train, test = load_digits(split="train", image=True), load_digits(split="test", image=True)
    lines = ["name,model,accuracy"]
    for arch, (factory, widths, epochs_grid, lr) in ARCHITECTURES.items():
        for width in widths:
            for epochs in epochs_grid:
                torch.manual_seed(0)
                model = factory(width=width)
                result = train_classifier(model, train, test, epochs=epochs, batch_size=32, lr=lr, seed=0)
                name = f"{arch}_w{width}_e{epochs}"
                torch.jit.script(model.eval()).save(str(out / f"{name}.pt"))
                lines.append(f"{name},{name}.pt,{result.final()['test_accuracy']:.4f}")
                print(f"{name}: test accuracy {result.final()['test_accuracy']:.4f}", flush=True)
    (out / "manifest.csv").write_text("\n".join(lines) + "\n")


def train_trajectory(out: Path) -> None:
    """One MLP's per-epoch checkpoints (state_dicts) and ``checkpoints.csv`` naming its factory."""
    train, test = load_digits(split="train", image=True), load_digits(split="test", image=True)
    torch.manual_seed(1)
    model = mlp(width=TRAJECTORY["width"])
    result = train_classifier(model, train, test, epochs=TRAJECTORY["epochs"], batch_size=32, lr=TRAJECTORY["lr"],
                              seed=1, checkpoint_dir=out / "checkpoints")
    accuracy = result.history.set_index("epoch")["test_accuracy"]
    lines = ["name,model,weights,factory_args,accuracy,step"]
    for epoch in TRAJECTORY["kept"]:
        lines.append(f"epoch{epoch},funnelscope.studies.models:mlp,checkpoints/epoch_{epoch:03d}.pt,"
                     f"width={TRAJECTORY['width']},{accuracy[epoch]:.4f},{epoch}")
    (out / "checkpoints.csv").write_text("\n".join(lines) + "\n")


def series(*arguments: str) -> None:
    command = [sys.executable, "-m", "funnelscope.cli", "series", *arguments]
    print("$ funnelscope series " + " ".join(arguments), flush=True)
    subprocess.run(command, check=True)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # tiny models: one thread is faster than two that wait for each other
    start = time.perf_counter()
    train_zoo(out)
    train_trajectory(out)
    print(f"trained in {time.perf_counter() - start:.0f} s", flush=True)
    series(str(out / "manifest.csv"), "--data", "digits:train:image", "--n", EXAMPLES, "--hessian", "--workers",
           "2", "--out", str(out / "series"))
    series(str(out / "checkpoints.csv"), "--data", "digits:train:image", "--n", EXAMPLES, "--order", "step",
           "--workers", "2", "--out", str(out / "trajectory"))
    print(f"done in {time.perf_counter() - start:.0f} s; report: {out / 'series' / 'report.html'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "digits-series"))
