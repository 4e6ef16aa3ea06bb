"""The Hessian probe against hessian-eigenthings 1.0.0a5, curvlinops (PyPI ``curvlinops-for-pytorch``) and
PyHessian 0.1: top-10 eigenvalues and the trace on the digits MLP 64-32-10 and the digits CNN; one run.

Cases (float32 models, Hessian of the mean cross-entropy in eval mode, all examples in one batch for every
tool so that batch-mean averaging is the example-weighted mean):

* ``mlp``: ``mlp(width=32, depth=1)`` (64-32-10, p = 2410) trained 30 epochs on the digits training split,
  Hessian over all 1797 digits;
* ``cnn``: ``small_cnn(width=16)`` (p = 5130) trained 10 epochs, Hessian over the 1347 training digits.

Reference: the top 10 from funnelscope's Lanczos with ``tol=1e-12`` (at most 400 steps, residual bounds in the
JSON) and the exact trace ``Σ_i e_iᵀ H e_i`` (p products in vmapped blocks).

Measurements (seconds: best of ``REPEAT`` calls; products counted where a tool's operator can be counted):

* top 10: ``hessian_spectrum(model, data, top_k=10, trace=False)`` (its defaults: ``tol=1e-4``);
  ``hessian_eigenthings.lanczos(op, k=10)`` (its defaults); curvlinops' ``HessianLinearOperator`` with
  ``scipy.sparse.linalg.eigsh(k=10, which="LA")`` at its default ``tol=0`` and at ``tol=1e-4``; PyHessian's
  ``hessian.eigenvalues(top_n=10)`` (its defaults: deflated power iteration, ``tol=1e-3``);
* trace: funnelscope's ``trace_estimate`` (XTrace) at the smallest budget of ``BUDGETS`` whose standard
  error is ≤ 1 % of the estimate, and Hutch++ at the same budget; curvlinops' ``xtrace``/``hutchpp_trace`` at
  that budget (no standard error: the error against the exact trace is shown); PyHessian's ``trace()``
  (Hutchinson until the relative change is below 1e-3, at most 100 products).

Usage: ``python benchmarks/hessian.py [mlp] [cnn]``; prints a markdown table and writes
``benchmarks/results/hessian.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch

TOP_K = 10
REPEAT = 2
BUDGETS = (16, 24, 32, 48, 64, 96, 128)


def build(case: str) -> tuple:
    from funnelscope.datasets import load_digits
    from funnelscope.studies.models import mlp, small_cnn
    from funnelscope.studies.training import train_classifier

    torch.manual_seed(0)
    if case == "mlp":
        model = mlp(width=32, depth=1)
        train_classifier(model, load_digits(split="train"), epochs=30, batch_size=32, lr=0.05, seed=0)
        return model.eval(), load_digits(split="all")
    train = load_digits(split="train", image=True)
    model = small_cnn(width=16)
    train_classifier(model, train, epochs=10, batch_size=32, lr=0.05, seed=0)
    return model.eval(), train


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(not installed)"


CURVLINOPS = _version("curvlinops-for-pytorch")


class Counted:
    """A matmat that counts columns."""

    def __init__(self, matmat):
        self.matmat, self.products = matmat, 0

    def __call__(self, v):
        self.products += v.shape[1]
        return self.matmat(v)


def worst_relative(values, reference) -> float:
    values = np.sort(np.asarray(values, dtype=np.float64))[::-1][:TOP_K]
    if values.size < TOP_K:
        return float("nan")
    return float(np.max(np.abs(values - reference) / np.abs(reference)))


def timed(fn, repeat: int = REPEAT):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run_case(case: str) -> list[dict]:
    from funnelscope import hessian_spectrum
    from funnelscope.data import read_data
    from funnelscope.options import make_generator
    from funnelscope.probes.curvature import CurvatureProducts
    from funnelscope.probes.loss import resolve_loss
    from funnelscope.spectra.lanczos import extreme_eigenvalues
    from funnelscope.spectra.trace import exact_trace, trace_estimate

    model, data = build(case)
    batches = read_data(data, batch_size=len(data))
    ops = CurvatureProducts(model, batches, resolve_loss(None))
    dim = ops.dim
    reference = extreme_eigenvalues(ops.hessian_matmat, dim, top_k=TOP_K, steps=400, tol=1e-12,
                                    generator=make_generator(1))
    top = reference.top
    exact = exact_trace(ops.hessian_matmat, dim).value
    print(f"{case}: p = {dim}, n = {len(data)}, top {TOP_K} = {np.round(top, 5)} (reference: {reference.steps} "
          f"steps, worst bound {reference.top_errors.max():.1e}); exact trace {exact:.6g}", file=sys.stderr)
    rows: list[dict] = []
    base = {"case": case, "p": dim, "n": len(data)}

    def add(measure: str, method: str, **values) -> None:
        rows.append({**base, "measure": measure, "method": method, **values})

    # the same single batch of tensors as the anchors get (a DataLoader adds its per-example fetching to every tool)
    seconds, result = timed(lambda: hessian_spectrum(model, (data.x, data.y), batch_size=len(data), top_k=TOP_K,
                                                     trace=False))
    add("top 10", "funnelscope hessian_spectrum (tol 1e-4)", products=result.products, seconds=seconds,
        error=worst_relative(result.top_eigenvalues, top), converged=int(result.top_converged.sum()))
    print(rows[-1], file=sys.stderr, flush=True)
    rows.extend({**base, **row} for row in anchor_top(model, data, top))
    print(rows[-4:], file=sys.stderr, flush=True)

    trace_rows, budget = [], None
    for products in BUDGETS:
        estimate = trace_estimate(ops.hessian_matmat, dim, products=products, method="xtrace",
                                  generator=make_generator(0))
        if estimate.stderr <= 0.01 * abs(estimate.value):
            budget = products
            break
    budget = budget or BUDGETS[-1]
    for method in ("xtrace", "hutch++", "hutchinson"):
        seconds, estimate = timed(lambda method=method: trace_estimate(
            ops.hessian_matmat, dim, products=budget, method=method, generator=make_generator(0)), repeat=1)
        trace_rows.append({"measure": "trace", "method": f"funnelscope {method}", "products": estimate.products,
                           "seconds": seconds, "value": estimate.value,
                           "stderr_percent": 100 * estimate.stderr / abs(estimate.value),
                           "error_percent": 100 * abs(estimate.value - exact) / abs(exact)})
    rows.extend({**base, **row} for row in trace_rows)
    rows.extend({**base, **row} for row in anchor_trace(model, data, exact, budget))
    return rows


def anchor_top(model, data, top) -> list[dict]:
    rows = []
    loss = torch.nn.CrossEntropyLoss()
    try:
        import hessian_eigenthings as he

        op = he.HessianOperator(model, [(data.x, data.y)], he.supervised_loss(torch.nn.functional.cross_entropy))
        counted = {"n": 0}
        matvec = op.matvec

        def counting(v, counted=counted, matvec=matvec):
            counted["n"] += 1
            return matvec(v)

        op.matvec = counting
        seconds, result = timed(lambda: he.lanczos(op, k=TOP_K, seed=0))
        rows.append({"measure": "top 10", "method": f"hessian-eigenthings {he.__version__} lanczos (defaults)",
                     "products": counted["n"] // REPEAT, "seconds": seconds,
                     "error": worst_relative(result.eigenvalues, top)})
    except Exception as error:  # report, do not hide
        rows.append({"measure": "top 10", "method": "hessian-eigenthings", "note": f"{type(error).__name__}: {error}"})
    try:
        import curvlinops
        from scipy.sparse.linalg import eigsh

        params = [p for p in model.parameters() if p.requires_grad]
        hessian = curvlinops.HessianLinearOperator(model, loss, params, [(data.x, data.y)],
                                                   check_deterministic=False)
        scipy_op = hessian.to_scipy()
        for tol in (0.0, 1e-4):
            counter = {"n": 0}

            def matvec(v, counter=counter):
                counter["n"] += 1 if v.ndim == 1 else v.shape[1]
                return scipy_op @ v

            from scipy.sparse.linalg import LinearOperator

            counted = LinearOperator(scipy_op.shape, matvec=matvec, dtype=scipy_op.dtype)
            seconds, (values, _) = timed(lambda counted=counted, tol=tol: eigsh(
                counted, k=TOP_K, which="LA", tol=tol, v0=np.ones(scipy_op.shape[0], dtype=scipy_op.dtype)))
            rows.append({"measure": "top 10",
                         "method": f"curvlinops {CURVLINOPS} HessianLinearOperator + eigsh (tol {tol:g})",
                         "products": counter["n"] // REPEAT, "seconds": seconds, "error": worst_relative(values, top)})
    except Exception as error:
        rows.append({"measure": "top 10", "method": "curvlinops", "note": f"{type(error).__name__}: {error}"})
    try:
        from pyhessian import hessian as pyhessian

        engine = pyhessian(model, loss, data=(data.x, data.y), cuda=False)
        print("PyHessian eigenvalues…", file=sys.stderr, flush=True)
        seconds, (values, _) = timed(lambda: engine.eigenvalues(top_n=TOP_K), repeat=1)
        rows.append({"measure": "top 10", "method": "PyHessian 0.1 eigenvalues (defaults)", "seconds": seconds,
                     "error": worst_relative(values, top)})
    except Exception as error:
        rows.append({"measure": "top 10", "method": "PyHessian 0.1", "note": f"{type(error).__name__}: {error}"})
    return rows


def anchor_trace(model, data, exact: float, budget: int) -> list[dict]:
    rows = []
    loss = torch.nn.CrossEntropyLoss()
    try:
        import curvlinops
        from curvlinops.trace.epperly2024xtrace import xtrace
        from curvlinops.trace.meyer2020hutch import hutchpp_trace

        params = [p for p in model.parameters() if p.requires_grad]
        hessian = curvlinops.HessianLinearOperator(model, loss, params, [(data.x, data.y)],
                                                   check_deterministic=False)
        for name, estimator, products in (("xtrace", xtrace, budget - budget % 2),
                                          ("hutchpp_trace", hutchpp_trace, budget - budget % 3)):
            torch.manual_seed(0)
            seconds, value = timed(lambda estimator=estimator, products=products: float(estimator(hessian, products)),
                                   repeat=1)
            rows.append({"measure": "trace", "method": f"curvlinops {CURVLINOPS} {name}",
                         "products": products, "seconds": seconds, "value": value,
                         "error_percent": 100 * abs(value - exact) / abs(exact)})
    except Exception as error:
        rows.append({"measure": "trace", "method": "curvlinops", "note": f"{type(error).__name__}: {error}"})
    try:
        from pyhessian import hessian as pyhessian

        engine = pyhessian(model, loss, data=(data.x, data.y), cuda=False)
        torch.manual_seed(0)
        seconds, samples = timed(lambda: engine.trace(), repeat=1)
        value = float(np.mean(samples))
        rows.append({"measure": "trace", "method": "PyHessian 0.1 trace (Hutchinson, tol 1e-3)",
                     "products": len(samples), "seconds": seconds, "value": value,
                     "stderr_percent": 100 * float(np.std(samples, ddof=1) / np.sqrt(len(samples))) / abs(value),
                     "error_percent": 100 * abs(value - exact) / abs(exact)})
    except Exception as error:
        rows.append({"measure": "trace", "method": "PyHessian 0.1", "note": f"{type(error).__name__}: {error}"})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| case | measure | method | products | seconds | worst rel. error / value | s.e. | error vs exact |",
             "|---|---|---|---:|---:|---|---:|---:|"]
    for row in rows:
        value = (f"{row['error']:.1e}" if "error" in row else f"{row['value']:.4g}" if "value" in row
                 else row.get("note", ""))
        se = f"{row['stderr_percent']:.2f} %" if "stderr_percent" in row else ""
        err = f"{row['error_percent']:.2f} %" if "error_percent" in row else ""
        seconds = f"{row['seconds']:.2f}" if "seconds" in row else ""
        lines.append(f"| {row['case']} (p = {row['p']}) | {row['measure']} | {row['method']} | "
                     f"{row.get('products', '')} | {seconds} | {value} | {se} | {err} |")
    return "\n".join(lines)


def main() -> None:
    from _machine import machine_description, write_results

    print(machine_description(), file=sys.stderr)
    cases = sys.argv[1:] or ["mlp", "cnn"]
    rows = []
    for case in cases:
        rows.extend(run_case(case))
        print(table(rows), flush=True)  # the table so far, case by case
    print(table(rows))
    print(write_results("hessian", rows), file=sys.stderr)


if __name__ == "__main__":
    main()
