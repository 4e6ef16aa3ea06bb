"""The Jacobian probe at data-set scale (issue 10): routes under a memory budget against the exact route and the
floor, one run, each measurement in a fresh subprocess.

Model: a CNN (Conv 3→32, ReLU, max-pool, Conv 32→64, ReLU, max-pool, Linear 4096→128, ReLU, Linear 128→10), seeded
random weights, eval mode, float32; inputs: seeded standard-normal 3×32×32 images (d = 3072, k = 10, so the exact
rows are r = 9·3072 = 27 648 per example). Per size ``n`` (``--sizes``):

* ``floor``: one forward and k − 1 backward passes per batch of the probe's batch size (the least any exact route
  does: probabilities need k − 1 directions), nothing kept;
* n ≤ 10 000: ``exact`` (``solver="dense"``, no budget) and ``auto`` (the default budget, half the available memory);
* the comparison sizes (``--compare-sizes``, default 20 000): ``exact`` (``solver="primal"``) and ``auto`` under
  ``--budget`` (default 2GiB, so the streamed route), with the streamed route's errors against the exact one:
  top-20 eigenvalues (largest relative error), λ_max, trace (relative), effective rank (relative), α (absolute);
* larger sizes: ``auto`` under ``--large-budget`` (default 4GiB), its time against the floor.

Peak memory: the subprocess's own high-water mark (``ru_maxrss``, the whole process: interpreter, data, model,
route), and its increase over the value after imports, data and a warm-up call on 8 examples.

Usage::

    python benchmarks/jacobian_scale.py                       # n = 10k, 20k, 50k, 100k (hours on 2 cores)
    python benchmarks/jacobian_scale.py --sizes 2000 5000 --compare-sizes 2000 --budget 1GiB --force-streamed \
        --out jacobian_scale_small   # a smoke run: at n = 2000 auto would be exact

prints a markdown table and writes ``benchmarks/results/jacobian_scale.json`` (machine description, rows).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH = 256  # the probe's default batch size
TOP = 20


def build(n: int) -> tuple:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10),
    ).eval()
    return model, torch.randn(n, 3, 32, 32)


def floor(model, x, **_: object) -> dict:
    import torch

    k = model(x[:1]).shape[1]
    for start in range(0, x.shape[0], BATCH):
        xb = x[start : start + BATCH].clone().requires_grad_(True)
        f = torch.softmax(model(xb), dim=1)
        for c in range(k - 1):
            torch.autograd.grad(f[:, c].sum(), xb, retain_graph=c + 2 < k)
    return {}


def probe(model, x, **options: object) -> dict:
    from funnelscope.probes.jacobian import jacobian_spectrum

    spectrum = jacobian_spectrum(model, x, seed=0, batch_size=BATCH, **options)
    summary = spectrum.summary()
    keys = ("method", "lambda_max", "trace", "alpha", "xmin", "effective_rank", "stable_rank", "offdiag_ratio",
            "max_memory", "predicted_peak_bytes", "lambda_max_error", "alpha_error", "effective_rank_error")
    # the streamed route's details (columns, tail) are in the metrics, not in summary()'s stable keys
    streamed = {key: value for key, value in spectrum.metrics.items() if key.startswith("streamed_")}
    return {**{key: summary[key] for key in keys}, **streamed, "top": [float(v) for v in spectrum.eigenvalues[:TOP]]}


def worker(measure: str, n: int, options: dict) -> None:
    import os

    import funnelscope.probes.jacobian  # noqa: F401  (imports are not part of the measurement)

    model, x = build(n)
    run = floor if measure == "floor" else probe
    run(model, x[:8], **({} if measure == "floor" else {"solver": "dense"}))  # warm-up
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    load = os.getloadavg()[0]
    start = time.perf_counter()
    extra = run(model, x, **options)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "increase_bytes": peak - baseline,
                      "load_before": load, **extra}))


def measure(name: str, measure_kind: str, n: int, options: dict) -> dict:
    command = [sys.executable, __file__, "--worker", measure_kind, str(n), json.dumps(options)]
    done = subprocess.run(command, capture_output=True, text=True)
    row = {"case": name, "n": n, "options": options}
    if done.returncode != 0:
        return {**row, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return {**row, **json.loads(done.stdout.strip().splitlines()[-1])}


def plan(sizes: list[int], compare: list[int], budget: str, large_budget: str,
         force_streamed: bool = False) -> list[tuple[str, str, int, dict]]:
    streamed = {"solver": "streamed"} if force_streamed else {}
    cases = []
    for n in sizes:
        cases.append(("floor", "floor", n, {}))
        if n in compare:
            cases += [("exact", "probe", n, {"solver": "primal"}),
                      (f"{'streamed' if force_streamed else 'auto'}, max_memory={budget}", "probe", n,
                       {"max_memory": budget, **streamed})]
        elif n <= 10_000:
            cases += [("exact", "probe", n, {"solver": "dense"}), ("auto", "probe", n, {})]
        else:
            cases.append((f"auto, max_memory={large_budget}", "probe", n, {"max_memory": large_budget}))
    return cases


def errors(row: dict, exact: dict) -> str:
    import numpy as np

    top = np.array(row["top"]) / np.array(exact["top"]) - 1
    return (f"top-{TOP} {np.abs(top).max():.2%}, λ_max {abs(row['lambda_max'] / exact['lambda_max'] - 1):.2%}, "
            f"trace {abs(row['trace'] / exact['trace'] - 1):.1e}, eff. rank "
            f"{abs(row['effective_rank'] / exact['effective_rank'] - 1):.2%}, "
            f"α {abs(row['alpha'] - exact['alpha']):.3f}")


def table(rows: list[dict]) -> str:
    floors = {r["n"]: r["seconds"] for r in rows if r["case"] == "floor" and "seconds" in r}
    exacts = {r["n"]: r for r in rows if r["case"] == "exact" and "seconds" in r}
    lines = ["| n | case | route | seconds | × floor | × exact | peak RSS MiB | increase MiB | predicted MiB | "
             "α | notes |", "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['n']} | {r['case']} | – | – | – | – | – | – | – | – | failed: {r['error']} |")
            continue
        exact = exacts.get(r["n"])
        over_floor = r["seconds"] / floors[r["n"]] if r["n"] in floors else float("nan")
        over_exact = r["seconds"] / exact["seconds"] if exact else float("nan")
        predicted = r.get("predicted_peak_bytes", float("nan")) / 2**20
        notes = errors(r, exact) if exact and r is not exact and "top" in r and r["case"] != "floor" else ""
        if r.get("alpha_error"):
            notes += f" (stated: α ± {r['alpha_error']:.3f}, eff. rank ± {r['effective_rank_error']:.1f})"
        cells = [f"{r['seconds']:.1f}", _cell(over_floor), _cell(over_exact), f"{r['peak_bytes'] / 2**20:.0f}",
                 f"{r['increase_bytes'] / 2**20:.0f}", _cell(predicted, ".0f"), _cell(r.get("alpha", float("nan")))]
        lines.append(f"| {r['n']} | {r['case']} | {r.get('method', '')} | {' | '.join(cells)} | {notes} |")
    return "\n".join(lines)


def _cell(value: float, spec: str = ".2f") -> str:
    return "–" if value != value else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, metavar=("MEASURE", "N", "OPTIONS"))
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 20_000, 50_000, 100_000])
    parser.add_argument("--compare-sizes", nargs="*", type=int, default=[20_000],
                        help="sizes at which the exact primal route runs beside auto under --budget")
    parser.add_argument("--budget", default="2GiB", help="max_memory of auto at the comparison sizes")
    parser.add_argument("--large-budget", default="4GiB", help="max_memory of auto above 10 000 examples")
    parser.add_argument("--force-streamed", action="store_true",
                        help="solver='streamed' at the comparison sizes (small smoke runs, where auto is exact)")
    parser.add_argument("--out", default="jacobian_scale", help="name of the JSON file in benchmarks/results/")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), json.loads(args.worker[2]))
        return
    from _machine import machine_description, write_results

    print(json.dumps(machine_description()))
    rows: list[dict] = []
    cases = plan(args.sizes, args.compare_sizes, args.budget, args.large_budget, args.force_streamed)
    for done, (name, kind, n, options) in enumerate(cases, start=1):
        rows.append(measure(name, kind, n, options))
        print(f"  n={n} {name}: {rows[-1].get('seconds', rows[-1].get('error'))}", file=sys.stderr, flush=True)
        # written after every row: an interrupted run (hours) keeps what it measured, marked incomplete
        path = write_results(args.out, rows, extra={"argv": sys.argv[1:], "table": table(rows),
                                                    "complete": done == len(cases)})
    print(table(rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
