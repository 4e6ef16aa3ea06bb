"""Power-law fit: funnelscope vs WeightWatcher 0.7.7 (``WWFit``) vs the ``powerlaw`` package, side by side.

Inputs (seeded): eigenvalues of W^T W / N for W with Student-t(3), Pareto (tail index 1.5) and Gaussian entries
(aspect ratio N/M = 2; to keep eigendecomposition cheap, a spectrum of n values is the union of the spectra of
n/512 independent 1024x512 blocks, i.e. the ESD of a block-diagonal matrix), plus Pareto samples (alpha = 2.5).
Gaussian (Marchenko-Pastur) spectra are where the xmin pruning has the least to work with.

funnelscope: best of 3 runs; WWFit: best of 3 (n <= 4096) or 2 (n = 16384). ``powerlaw.Fit(data, xmax=None)``:
one run, only at n <= 4096 (it takes seconds there). Its alpha is shown for comparison, not parity: powerlaw 2.0
tries unique values only and accepts only exponents inside its default range (alpha <= 3), so where
WeightWatcher's alpha is above 3 it settles on another xmin; below 3 the two agree.

Run: ``.venv/bin/python benchmarks/powerlaw_fit.py`` (about a minute). Writes benchmarks/results/powerlaw_fit.json.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_description, timeit, write_results
from funnelscope import fit_powerlaw
from funnelscope.spectra.synthetic import iid_esd

SIZES = (1024, 4096, 16384)
POWERLAW_MAX_N = 4096
BLOCK = 512


def block_spectra(kind: str, n_blocks: int, seed: int) -> list[np.ndarray]:
    """ESDs of W^T W / N for independent blocks W (2*BLOCK x BLOCK) with i.i.d. entries of ``kind``."""
    rng = np.random.default_rng(seed)
    return [iid_esd(2 * BLOCK, BLOCK, entries=kind, seed=rng) for _ in range(n_blocks)]


def all_inputs() -> dict[int, dict[str, np.ndarray]]:
    """Inputs per size; the spectrum of size n is the union of the first n / BLOCK blocks."""
    blocks = {
        "ESD student-t(3)": block_spectra("student_t", max(SIZES) // BLOCK, 1),
        "ESD pareto(1.5) entries": block_spectra("pareto", max(SIZES) // BLOCK, 2),
        "ESD gaussian (MP)": block_spectra("gaussian", max(SIZES) // BLOCK, 3),
    }
    out = {}
    for n in SIZES:
        out[n] = {name: np.sort(np.concatenate(b[: n // BLOCK])) for name, b in blocks.items()}
        out[n]["pareto samples a=2.5"] = np.random.default_rng(n).pareto(1.5, n) + 1.0
    return out


def quiet_import():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import powerlaw
        from weightwatcher.WW_powerlaw import WWFit
    return WWFit, powerlaw


def main() -> None:
    WWFit, powerlaw = quiet_import()
    rows = []
    t_start = time.perf_counter()
    for n, cases in all_inputs().items():
        for name, evals in cases.items():
            nz = evals[evals > 1e-5]  # weightwatcher.fit_powerlaw drops these before WWFit
            last: dict = {}
            t_ours = timeit(lambda evals=evals, last=last: last.update(ours=fit_powerlaw(evals)), repeat=3)
            t_ww = timeit(lambda nz=nz, last=last: last.update(ww=WWFit(nz)), repeat=3 if n <= 4096 else 2)
            ours, ww = last["ours"], last["ww"]
            identical = bool(ours.alpha == ww.alpha and ours.xmin == ww.xmin and ours.D == ww.D)
            row = {
                "input": name,
                "n": int(nz.size),
                "funnelscope_s": t_ours,
                "weightwatcher_s": t_ww,
                "speedup_vs_ww": t_ww / t_ours,
                "identical_to_ww": identical,
                "alpha": ours.alpha,
                "ww_alpha": float(ww.alpha),
                "xmin": ours.xmin,
                "D": ours.D,
                "n_tail": ours.n_tail,
                "powerlaw_s": None,
                "powerlaw_alpha": None,
            }
            if n <= POWERLAW_MAX_N:
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    pl = powerlaw.Fit(nz, xmax=None, verbose=False)
                    row["powerlaw_alpha"] = float(pl.alpha)
                row["powerlaw_s"] = time.perf_counter() - start
            rows.append(row)
            print(f"  {name:26s} n={n:6d} done", file=sys.stderr)
    total = time.perf_counter() - t_start

    header = (
        "| input | n | funnelscope (s) | WWFit (s) | speed-up | alpha/xmin/D identical to WW | alpha | n_tail "
        "| powerlaw pkg (s) | powerlaw alpha |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        pl_s = f"{r['powerlaw_s']:.2f}" if r["powerlaw_s"] is not None else "not run (n > 4096)"
        pl_a = f"{r['powerlaw_alpha']:.4f}" if r["powerlaw_alpha"] is not None else "-"
        print(
            f"| {r['input']} | {r['n']} | {r['funnelscope_s']:.4f} | {r['weightwatcher_s']:.3f} "
            f"| {r['speedup_vs_ww']:.0f}x | {'yes' if r['identical_to_ww'] else 'NO'} | {r['alpha']:.4f} "
            f"| {r['n_tail']} | {pl_s} | {pl_a} |"
        )
    machine = machine_description()
    print(f"\n{machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}; total {total:.0f} s")
    path = write_results(
        "powerlaw_fit",
        rows,
        {
            "notes": "best of 3 for funnelscope, of 3 (n <= 4096) or 2 for WWFit; powerlaw.Fit once, n <= 4096 only; "
            "ESDs of block-diagonal W (1024x512 blocks)",
            "total_seconds": total,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
