"""The Jacobian probe's exact route against its floor and against torch.func / torch.autograd, one run.

Cases (seeded random weights; the inputs are random for the CNN and the 1000-class head, the digits for the MLP):

* ``cnn``: a small CNN on 3×32×32 inputs (conv 3→16→32, two max-pools, 2048→64→10), n = 1000 and 5000;
* ``digits``: an MLP 64→128→10 on scikit-learn's digits (n = 1797);
* ``head1000``: an MLP 64→128→1000 (k = 1000) on n = 1000 random inputs, exact route vs the sketch (m = 32).

Measurements, each in a fresh subprocess (so that the peak RSS is its own):

* ``floor``: what any exact method must do — one forward and k backward passes (``retain_graph``) per batch of
  128, nothing else kept;
* ``exact``: ``jacobian_spectrum(model, x)`` (rows, float64 Gram, eigen-solve, fits, metrics);
* ``linalg``: the Gram and eigen-solve alone on random rows of the exact route's shape, drawn before the
  timing (what ``exact`` costs beyond the floor by necessity: ``n²·r/2`` multiply-adds and an ``n × n``
  ``eigvalsh``);
* ``vmap_jacrev``: ``torch.func.vmap(torch.func.jacrev(f), chunk_size=128)`` over the examples, then
  ``M = 𝒥𝒥ᵀ`` and ``eigvalsh`` (the per-example Jacobians held in full: n·k·d floats);
  ``vmap_jacrev_unchunked``: the same without ``chunk_size`` (all examples in one batched call), as it is
  usually written;
* ``autograd_jacobian``: ``torch.autograd.functional.jacobian`` one example at a time (reference);
* ``sketch``: ``jacobian_spectrum(model, x, method="sketch", probes=32)``;
* ``paired``: ``floor`` and ``exact`` alternately in one process; its "× floor" is the median of the per-pair
  ratios (on a shared VM the speed drifts by ±30 % between processes, and a pair sees the same drift).

Times are the best and the median of the stated number of calls (``_machine.timings``; the ratios use the
best, the median shows the spread); the 1-minute load average before each measurement is recorded (on a
shared 2-core machine, MKL's two threads can stall behind other processes).
Peak memory is ``ru_maxrss`` of the subprocess minus its value after imports, model, data and a warm-up call
on 4 examples (the measurement's own increase; ``ru_maxrss`` is the process's high-water mark).

Usage: ``python benchmarks/jacobian.py [--quick]``; prints a markdown table and writes
``benchmarks/results/jacobian.json`` through ``_machine.write_results``.
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

BATCH = 128


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(case: str, n: int) -> tuple:
    """Model (eval mode, float32) and inputs of a case, seeded."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if case == "cnn":
        model = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10),
        )
        x = torch.randn(n, 3, 32, 32)
    elif case == "digits":
        from sklearn.datasets import load_digits

        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        x = torch.tensor(load_digits().data[:n] / 16.0, dtype=torch.float32)
    elif case == "head1000":
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 1000))
        x = torch.randn(n, 64)
    else:
        raise ValueError(case)
    return model.eval(), x


def floor(model, x) -> dict:
    import torch

    k = model(x[:1]).shape[1]
    for start in range(0, x.shape[0], BATCH):
        xb = x[start : start + BATCH].clone().requires_grad_(True)
        f = torch.softmax(model(xb), dim=1)
        for c in range(k):
            torch.autograd.grad(f[:, c].sum(), xb, retain_graph=c + 1 < k)
    return {}


def exact(model, x, **options) -> dict:
    from funnelscope.probes.jacobian import jacobian_spectrum

    summary = jacobian_spectrum(model, x, seed=0, batch_size=BATCH, **options).summary()  # the floor's batches
    return {key: summary[key] for key in ("method", "lambda_max", "trace", "alpha")}


def sketch(model, x) -> dict:
    return exact(model, x, method="sketch", probes=32)


_RANDOM_ROWS: dict = {}


def random_rows(model, x):
    """Random float32 rows of the exact route's shape for probabilities, n × (k − 1)·d, drawn once per shape."""
    import torch

    n, k, d = x.shape[0], model(x[:1]).shape[1], x[0].numel()
    if (n, k, d) not in _RANDOM_ROWS:
        _RANDOM_ROWS[(n, k, d)] = torch.randn(n, (k - 1) * d)
    return _RANDOM_ROWS[(n, k, d)]


def linalg(model, x) -> dict:
    """The exact route's float64 Gram (lower triangle, as it computes it) and eigen-solve on random rows of its
    shape (n × (k − 1)·d for probabilities); the rows are drawn once, outside the timing of later calls."""
    import torch

    from funnelscope.spectra.eigen import add_lower_gram, symmetric_eigenvalues

    rows = random_rows(model, x)
    gram = torch.zeros(rows.shape[0], rows.shape[0], dtype=torch.float64)
    add_lower_gram(gram, rows)
    symmetric_eigenvalues(gram.tril() + gram.tril(-1).mT)
    return {}


def vmap_jacrev(model, x, chunk_size: int | None = BATCH) -> dict:
    import torch

    def f(xi):
        return torch.softmax(model(xi[None]), dim=1)[0]

    jacobians = torch.func.vmap(torch.func.jacrev(f), chunk_size=chunk_size)(x).reshape(x.shape[0], -1).double()
    torch.linalg.eigvalsh(jacobians @ jacobians.T)
    return {}


def vmap_jacrev_unchunked(model, x) -> dict:
    """``vmap(jacrev(f))`` as usually written: all examples at once (no ``chunk_size``)."""
    return vmap_jacrev(model, x, chunk_size=None)


def autograd_jacobian(model, x) -> dict:
    import torch

    rows = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda z: torch.softmax(model(z[None]), dim=1)[0], xi)
        rows.append(jac.reshape(-1))
    jacobians = torch.stack(rows).double()
    torch.linalg.eigvalsh(jacobians @ jacobians.T)
    return {}


MEASURES = {fn.__name__: fn for fn in (floor, exact, sketch, linalg, vmap_jacrev, vmap_jacrev_unchunked,
                                       autograd_jacobian)}


def worker(case: str, measure: str, n: int, repeat: int) -> None:
    import os

    import numpy as np

    import funnelscope.probes.jacobian  # noqa: F401  (imports are not part of the measurement)
    from _machine import timings

    model, x = build(case, n)
    if measure == "paired":
        paired(model, x, repeat)
        return
    MEASURES[measure](model, x[:4])  # warm-up: first-call costs (kernels, lazy imports) are not measured
    baseline = peak_rss_mib()
    if measure == "linalg":
        random_rows(model, x)  # drawn before the timing (their memory still counts)
    load = os.getloadavg()[0]
    extra: dict = {}
    seconds = timings(lambda: extra.update(MEASURES[measure](model, x)), repeat=repeat)
    print(json.dumps({"seconds": min(seconds), "median_seconds": float(np.median(seconds)), "all_seconds": seconds,
                      "repeat": repeat, "peak_mib": peak_rss_mib() - baseline, "load_before": load, **extra}))


def paired(model, x, repeat: int) -> None:
    """``floor`` and ``exact`` alternately in one process, ``repeat`` pairs: the ratio of each pair, so that
    the machine's drifts (other load, clock, memory reclaim) hit both sides of a ratio alike."""
    import numpy as np

    floor(model, x[:4])  # warm-up, as in worker()
    exact(model, x[:4])
    ratios, floors, exacts = [], [], []
    for _ in range(repeat):
        start = time.perf_counter()
        floor(model, x)
        floors.append(time.perf_counter() - start)
        start = time.perf_counter()
        exact(model, x)
        exacts.append(time.perf_counter() - start)
        ratios.append(exacts[-1] / floors[-1])
    print(json.dumps({"seconds": min(exacts), "median_seconds": float(np.median(exacts)),
                      "floor_median_seconds": float(np.median(floors)), "ratio_median": float(np.median(ratios)),
                      "ratio_quartiles": [float(q) for q in np.quantile(ratios, [0.25, 0.75])],
                      "ratios": ratios, "repeat": repeat, "peak_mib": float("nan")}))


def run(case: str, measure: str, n: int, repeat: int) -> dict:
    command = [sys.executable, __file__, "--worker", case, measure, str(n), str(repeat)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"case": case, "measure": measure, "n": n, "error": done.stderr.strip().splitlines()[-1]}
    return {"case": case, "measure": measure, "n": n, **json.loads(done.stdout.strip().splitlines()[-1])}


# (case, n, {measure: repeats}); vmap(jacrev) is left out at n = 5000: it holds all n·k·d = 154M Jacobian
# entries (unchunked it needs about 3 GB per 1000 examples), and its cost per example is the one measured at
# n = 1000.
PLAN = [
    ("digits", 1797, {"floor": 3, "exact": 3, "paired": 9, "vmap_jacrev": 3, "vmap_jacrev_unchunked": 3,
                      "autograd_jacobian": 1}),
    ("cnn", 1000, {"floor": 5, "exact": 5, "paired": 9, "linalg": 3, "vmap_jacrev": 2, "vmap_jacrev_unchunked": 2,
                   "autograd_jacobian": 1}),
    ("cnn", 5000, {"floor": 1, "exact": 1, "linalg": 1}),
    ("head1000", 1000, {"floor": 1, "exact": 1, "sketch": 3}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("CASE", "MEASURE", "N", "REPEAT"))
    parser.add_argument("--quick", action="store_true", help="n ≤ 200 everywhere, one repeat (a smoke test)")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]), int(args.worker[3]))
        return
    from _machine import machine_description, write_results

    print(machine_description())
    rows = []
    for case, n, measures in PLAN:
        n = min(n, 200) if args.quick else n
        for measure, repeat in measures.items():
            row = run(case, measure, n, 1 if args.quick else repeat)
            rows.append(row)
            print(f"  {case} n={n} {measure}: {row.get('seconds', row.get('error'))}", file=sys.stderr)
    print(table(rows))
    if not args.quick:
        write_results("jacobian", rows)


def table(rows: list[dict]) -> str:
    """Markdown: one line per measurement, with its time relative to the floor of the same case and n."""
    floors = {(r["case"], r["n"]): r["seconds"] for r in rows if r["measure"] == "floor" and "seconds" in r}
    exacts = {(r["case"], r["n"]): r for r in rows if r["measure"] == "exact" and "seconds" in r}
    lines = ["| case | n | measure | seconds (best) | median | × floor | × exact | peak MiB | notes |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        key = (r["case"], r["n"])
        if "error" in r:
            lines.append(f"| {r['case']} | {r['n']} | {r['measure']} | – | – | – | – | – | failed: {r['error']} |")
            continue
        over_floor = r["seconds"] / floors[key] if key in floors else float("nan")
        over_exact = r["seconds"] / exacts[key]["seconds"] if key in exacts else float("nan")
        notes = r.get("method", "")
        if r["measure"] == "paired":
            over_floor, over_exact = r["ratio_median"], float("nan")
            low, high = r["ratio_quartiles"]
            notes = f"exact ÷ floor per pair: median {over_floor:.2f}, quartiles {low:.2f}–{high:.2f}"
        if r["measure"] == "sketch" and key in exacts:
            errors = [f"{name} {abs(r[name] / exacts[key][name] - 1):.1%}" for name in ("lambda_max", "trace", "alpha")]
            notes += " rel. error: " + ", ".join(errors)
        cells = [_cell(r["seconds"], ".2f"), _cell(r["median_seconds"], ".2f"), _cell(over_floor, ".2f"),
                 _cell(over_exact, ".2f"), _cell(r["peak_mib"], ".0f")]
        lines.append(f"| {r['case']} | {r['n']} | {r['measure']} | {' | '.join(cells)} | {notes} |")
    return "\n".join(lines)


def _cell(value: float, spec: str) -> str:
    """A table number, or "–" where there is none (NaN)."""
    return "–" if value != value else format(value, spec)


if __name__ == "__main__":
    main()
