"""Every probe on CUDA and on the CPU on the same small float64 inputs, their numbers compared.

Run on a machine with a GPU (see DEVELOPERS.md: a device machine is lent to some tasks only)::

    python scripts/gpu_check.py            # prints a table, exits 1 if any number differs by more than 1e-8
    python scripts/gpu_check.py --json gpu_check.json

Without CUDA it says so and exits 0 (nothing to compare). Every probe runs on float64 models and data, so
the CPU and CUDA routes (LAPACK vs cuSOLVER, MKL/OpenBLAS vs cuBLAS) must agree to rounding: 1e-8 relative
on every scalar of ``summary()`` and on the eigenvalues, with an absolute floor of 1e-8 × the quantity's scale
for values that are zero up to rounding.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch
from torch import nn

import funnelscope as fs

TOLERANCE = 1e-8


def models_and_data() -> tuple[nn.Module, nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),  # noqa: E731
                                 nn.Linear(32, 5)).double()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 5, (300,), generator=generator)
    return make(), make(), (x, y)


# summary keys that describe the machine or the run, not the result: wall time, the memory budget and peaks
MACHINE_DEPENDENT = ("seconds", "max_memory", "peak_bytes")


def run_probes(device: str) -> dict[str, dict[str, object]]:
    model, other, data = models_and_data()
    options = {"device": device, "seed": 0}
    results = {
        "jacobian/exact": fs.jacobian_spectrum(model, data, **options),
        "jacobian/primal": fs.jacobian_spectrum(model, data, keep_gram=True, **options),
        "jacobian/params": fs.jacobian_spectrum(model, (data[0][:60], data[1][:60]), wrt="params", **options),
        "hessian": fs.hessian_spectrum(model, data, top_k=4, bottom_k=1, lanczos_steps=40, **options),
        "landscape_line": fs.landscape_line(model, data, other=other, points=5, workers=1, **options),
        "landscape_plane": fs.landscape_plane(model, data, points=3, workers=1, **options),
        "linearity": fs.layer_linearity(model, data, device=device),
    }
    out = {name: {k: v for k, v in result.summary().items()
                  if isinstance(v, int | float) and not any(part in k for part in MACHINE_DEPENDENT)}
           for name, result in results.items()}
    out["jacobian/exact"]["eigenvalues"] = results["jacobian/exact"].eigenvalues.tolist()
    out["hessian"]["top_eigenvalues"] = results["hessian"].top_eigenvalues.tolist()
    weights = fs.analyze_weights(model, device=device)
    out["weights"] = {"alpha": weights["alpha"].tolist(), "lambda_max": weights["lambda_max"].tolist()}
    return out


def compare(cpu: dict, cuda: dict) -> list[dict[str, object]]:
    rows = []
    for probe, values in cpu.items():
        for key, expected in values.items():
            a, b = np.atleast_1d(np.asarray(expected, float)), np.atleast_1d(np.asarray(cuda[probe][key], float))
            finite = np.isfinite(a) & np.isfinite(b)
            same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
            scale = float(np.abs(a[finite]).max()) if finite.any() else 1.0
            error = np.abs(a[finite] - b[finite]) / np.maximum(np.abs(a[finite]), TOLERANCE * max(scale, 1e-300))
            worst = float(error.max()) if error.size else 0.0
            rows.append({"probe": probe, "quantity": key, "worst_relative_error": worst,
                         "ok": same_nan and worst <= TOLERANCE})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="Also write the comparison as JSON here.")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device on this machine: nothing to compare")
        return 0
    start = time.perf_counter()
    cpu, cuda = run_probes("cpu"), run_probes("cuda")
    rows = compare(cpu, cuda)
    print(f"{'probe':18} {'quantity':28} {'worst rel. error':>16}  ok")
    for row in rows:
        print(f"{row['probe']:18} {row['quantity']:28} {row['worst_relative_error']:16.2e}  {row['ok']}")
    failed = [row for row in rows if not row["ok"]]
    device = torch.cuda.get_device_name(0)
    print(f"{len(rows) - len(failed)}/{len(rows)} within {TOLERANCE:g} on {device} "
          f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"device": device, "torch": torch.__version__, "tolerance": TOLERANCE, "rows": rows}, stream,
                      indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
