"""Large-batch vs small-batch solutions of the same CNN on digits: sharpness and the line between them.

Keskar et al. ("On large-batch training for deep learning: generalization gap and sharp minima", ICLR 2017)
found large-batch SGD converging to sharper minima (a larger top Hessian eigenvalue) than small-batch SGD.
This script trains ``small_cnn`` on the digits training split twice — batch size 512 and 16, with the same
seed, learning rate (0.1), momentum (0.9) and constant schedule, each for as many epochs as it needs to fit the
training set (600 epochs = 1800 steps for the large batch, 40 epochs = 3400 steps for the small one; with
equal epochs the large-batch run stops at 20 % training accuracy) — then

* computes the top eigenvalues, trace and spectral density of each solution's training-loss Hessian and of
  its Gauss–Newton part (:func:`funnelscope.hessian_spectrum`);
* evaluates the interpolation line ``(1 − t)θ_LB + tθ_SB`` on train and test
  (:func:`funnelscope.landscape_line`) and a 21 × 21 filter-normalised plane around each solution
  (:func:`funnelscope.landscape_plane`, the same seed, hence the same directions up to filter scale);

and the layer linearity of both on the test split (:func:`funnelscope.layer_linearity`); writes the figures,
the two models (TorchScript, for the command line) and ``results.json`` into OUT::

    python examples/lb_sb_digits.py docs/lb_sb
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from funnelscope import hessian_spectrum, landscape_line, landscape_plane, layer_linearity
from funnelscope.datasets import load_digits
from funnelscope.report.curvature_plots import (
    plot_hessian,
    plot_hessian_comparison,
    plot_landscape_line,
    plot_landscape_plane,
    plot_linearity,
)
from funnelscope.report.plots import save_figure
from funnelscope.studies.models import small_cnn
from funnelscope.studies.training import train_classifier

BATCH_SIZES = {"large_batch": 512, "small_batch": 16}
EPOCHS = {"large_batch": 600, "small_batch": 40}
LR, SEED = 0.1, 0


def main(out: Path, *, workers: int = 2) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    train, test = load_digits(split="train", image=True), load_digits(split="test", image=True)
    models, results = {}, {}
    for name, batch_size in BATCH_SIZES.items():
        torch.manual_seed(SEED)
        model = small_cnn(width=16)
        start = time.perf_counter()
        history = train_classifier(model, train, test, epochs=EPOCHS[name], batch_size=batch_size, lr=LR, seed=SEED)
        final = history.final()
        models[name] = model
        torch.jit.script(model.eval()).save(str(out / f"{name}.pt"))
        spectrum = hessian_spectrum(model, train, top_k=10, density=True, probes=8, lanczos_steps=64, seed=SEED)
        save_figure(plot_hessian(spectrum, title=f"{name.replace('_', ' ')} (batch {batch_size}): Hessian of the "
                                 f"training loss"), out / f"{name}_hessian.png")
        results[name] = {"batch_size": batch_size, "epochs": EPOCHS[name],
                         "train_seconds": time.perf_counter() - start, **final,
                         "hessian": {k: v for k, v in spectrum.summary().items() if k != "method"},
                         "top_eigenvalues": spectrum.top_eigenvalues.tolist(),
                         "gauss_newton_top_eigenvalues": spectrum.gauss_newton_top_eigenvalues.tolist()}
        results[name]["spectrum"] = spectrum
        print(f"{name}: train acc {final['train_accuracy']:.4f} (loss {final['train_loss']:.3g}), test acc "
              f"{final['test_accuracy']:.4f}; λ_max = {spectrum.top_eigenvalues[0]:.4g}, "
              f"G λ_max = {spectrum.gauss_newton_top_eigenvalues[0]:.4g}, trace = {spectrum.trace:.4g} "
              f"± {spectrum.trace_stderr:.2g}, outliers = {spectrum.outliers}")
    spectra = {name.replace("_", " "): results[name].pop("spectrum") for name in BATCH_SIZES}
    save_figure(plot_hessian_comparison(spectra, title="large batch (512) vs small batch (16): Hessian spectra"),
                out / "hessian_comparison.png")

    line = landscape_line(models["large_batch"], {"train": train, "test": test}, other=models["small_batch"],
                          points=41, workers=workers)
    save_figure(plot_landscape_line(line, labels=("LB", "SB"),
                                    title="interpolation from the large-batch (t=0) to the small-batch (t=1) "
                                    "solution"), out / "interpolation.png")
    results["interpolation"] = {"barrier": line.barrier, "seconds_per_point": line.seconds_per_point}
    print(f"interpolation: barrier heights {line.barrier}")

    for name in BATCH_SIZES:
        plane = landscape_plane(models[name], {"train": train}, points=21, seed=SEED, workers=workers)
        save_figure(plot_landscape_plane(plane, title=f"{name.replace('_', ' ')}: training loss on a "
                                         "filter-normalised plane"), out / f"{name}_plane.png")
        results[name]["plane"] = plane.summary()
        print(f"{name} plane: {plane.seconds_per_point * 1e3:.1f} ms per point, loss range "
              f"[{plane.summary()['train_loss_min']:.3g}, {plane.summary()['train_loss_max']:.3g}]")
    for name in BATCH_SIZES:
        linearity = layer_linearity(models[name], test.x).to_frame()
        save_figure(plot_linearity(linearity, title=f"{name.replace('_', ' ')}: layer linearity on the test split"),
                    out / f"{name}_linearity.png")
        results[name]["linearity"] = linearity.to_dict("records")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    return results


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "lb-sb-digits"))
