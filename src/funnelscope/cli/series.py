"""The ``series`` command: pretrained models ranked by their spectra (:func:`funnelscope.analyze_series`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from funnelscope.cli.common import (
    BATCH_SIZE,
    DEVICE,
    SEED,
    FactoryArgs,
    Limit,
    TrustPickle,
    WeightsFile,
    api_option,
    command,
)
from funnelscope.probes.jacobian import METHODS, OUTPUTS
from funnelscope.studies.pretrained_series import ORDERS, analyze_series

MODELS_PRINTED = 8  # more models than this: the per-model table is too wide for a terminal


@command
def series(
    models: Annotated[list[str], typer.Argument(
        metavar="MODEL... | MANIFEST.csv",
        help="Models (TorchScript files, module:factory with --weights, pickles with --trust-pickle), or one "
             "manifest CSV with columns name, model and optionally weights, factory_args, accuracy (the reported "
             "accuracy as a fraction in [0, 1]), step.")],
    data: Annotated[str, typer.Option("--data", help="digits, digits:image, digits:train, or a .npz/.pt with x "
                                                     "(and y: then accuracy and loss are measured).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The series directory (an existing one is resumed).")],
    hessian: bool = api_option(analyze_series, "hessian", "Also the loss Hessian's λ₁ and trace (needs labels)."),
    order: str = api_option(analyze_series, "order", f"{', '.join(ORDERS)}: with step, checkpoints ordered by "
                            "their step (manifest column, else the number in the file name)."),
    output: str = api_option(analyze_series, "output", f"Differentiate {', '.join(OUTPUTS)}."),
    method: str = api_option(analyze_series, "method", f"Jacobian rows: {', '.join(METHODS)}."),
    probes: int | None = api_option(analyze_series, "probes", "Output probes for --method sketch."),
    workers: int = api_option(analyze_series, "workers", "Models measured at once in a local process pool."),
    ray: str | None = api_option(analyze_series, "ray", "Run on Ray: an address, or 'local' to start one.",
                                 "--ray"),
    report: bool = api_option(analyze_series, "report", "Write the figures and report.html."),
    weights_file: WeightsFile = None,
    factory_args: FactoryArgs = None,
    n: Limit = None,
    batch_size: int = BATCH_SIZE,
    seed: int = SEED,
    device: str | None = DEVICE,
    trust_pickle: TrustPickle = False,
) -> None:
    """Measure each pretrained model once (weight ESDs, data Jacobian, optionally Hessian, accuracy) and rank
    the models: Kendall's τ and Spearman's ρ of every metric with the measured and the reported accuracy.

    Writes OUT/series.parquet (a row per model, as each finishes), OUT/correlations.parquet, OUT/figures/ and
    OUT/report.html."""
    from funnelscope.options import parse_assignments
    from funnelscope.report.terminal import console, print_comparison

    source = models[0] if len(models) == 1 and models[0].endswith(".csv") else models
    result = analyze_series(source, data, out=out, hessian=hessian, order=order, output=output, method=method,
                            probes=probes, n=n, weights=weights_file, trust_pickle=trust_pickle,
                            factory_args=parse_assignments(factory_args or [], option="--factory-arg"),
                            workers=workers, ray=ray, batch_size=batch_size, device=device, seed=seed,
                            report=report, progress=True)
    table = result.to_frame().set_index("name").drop(columns=["model"])
    if len(table) <= MODELS_PRINTED:
        print_comparison(table, title=f"{len(table)} models")
    else:
        console.print(f"{len(table)} models: the table is {out}/series.parquet", highlight=False)
    correlations = result.correlations
    if len(correlations):
        rows = correlations.assign(row=correlations["metric"] + " ~ " + correlations["target"]).set_index("row")
        print_comparison(rows[["n", "kendall_tau", "kendall_p", "spearman_rho", "spearman_p"]].T,
                         title="rank correlations with accuracy")
    else:
        console.print("no rank correlations: give at least three models with an accuracy (labelled data or a "
                      "manifest's accuracy column)", highlight=False)
    console.print(f"wrote {out}/ (series.parquet, correlations.parquet"
                  f"{', figures, report.html' if result.report else ''})", highlight=False)
