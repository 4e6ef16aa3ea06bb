"""The probe commands: weights, jacobian, hessian, landscape and linearity, one per probe of the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from funnelscope.cli.common import (
    BATCH_SIZE,
    DEVICE,
    SEED,
    FactoryArgs,
    Format,
    Limit,
    ModelsAndData,
    Out,
    Plots,
    TrustPickle,
    WeightsFile,
    api_option,
    check_out,
    command,
    read_inputs,
    report_results,
)
from funnelscope.errors import FunnelscopeInputError
from funnelscope.probes.hessian import hessian_spectrum
from funnelscope.probes.jacobian import METHODS, OUTPUTS, jacobian_spectrum
from funnelscope.probes.landscape import BN_MODES, landscape_line, landscape_plane
from funnelscope.probes.linearity import layer_linearity
from funnelscope.probes.weight_tail import FITS
from funnelscope.probes.weights import analyze_weights
from funnelscope.spectra.fingers import FIX_FINGERS
from funnelscope.spectra.trace import TRACE_METHODS


@command
def weights(
    path: Annotated[Path, typer.Argument(help="A .safetensors file, a directory (sharded, Hugging Face, a LoRA "
                                              "adapter) or a torch file.")],
    out: Out = None,
    table_format: Format = "parquet",
    plots: Plots = False,
    layers: Annotated[list[str] | None, typer.Option("--layers", "-l", help="Layer name or shell pattern; repeatable.",
                                                     show_default="all layers")] = None,
    randomize: bool = api_option(analyze_weights, "randomize", "Also analyse element-shuffled matrices "
                                 "(rand_distance, correlation traps)."),
    pool: bool = api_option(analyze_weights, "pool", "Pool convolution slices into one ESD per layer."),
    min_evals: int = api_option(analyze_weights, "min_evals", "Skip layers with fewer eigenvalues."),
    max_evals: int | None = api_option(analyze_weights, "max_evals", "Skip layers with more eigenvalues."),
    eig_method: str = api_option(analyze_weights, "eig_method", "gram (float64 Gram) or svd (tiny singular values)."),
    fit: str = api_option(analyze_weights, "fit", f"Tail law: {', '.join(FITS)} (truncated: alpha and Lambda)."),
    fix_fingers: str | None = api_option(analyze_weights, "fix_fingers", f"Repair fingers: {', '.join(FIX_FINGERS)}."),
    xmin_max: float | None = api_option(analyze_weights, "xmin_max", "xmin_peak: the largest xmin."),
    max_fingers: int | None = api_option(analyze_weights, "max_fingers", "clip_xmax: most eigenvalues clipped."),
    finger_thresh: float | None = api_option(analyze_weights, "finger_thresh", "clip_xmax: the α drop of a finger."),
    tpl_optimizer: str = api_option(analyze_weights, "tpl_optimizer", "TPL/E_TPL: exact (the likelihood's maximum) "
                                    "or nelder-mead (WeightWatcher's numbers)."),
    detx: bool = api_option(analyze_weights, "detX", "Add detX_num, detX_val (SETOL's det X = 1 condition).",
                            "--detX"),
    base_model: Annotated[Path | None, typer.Option(help="Analyse ΔW = W − W_base against this base (with --peft: "
                                                         "the adapted model).", show_default="none")] = None,
    peft: Annotated[bool, typer.Option("--peft", help="PATH is a LoRA adapter: B·A per adapted layer (with "
                                                      "--base-model also W + s·B·A).")] = False,
    describe: Annotated[bool, typer.Option("--describe", help="Only list the layers (shapes, N, M, Q, num_evals), "
                                                              "no eigen-solve.")] = False,
    distances: Annotated[bool, typer.Option("--distances", help="Per-layer ‖ΔW‖_F, ‖ΔW‖₂ and Δα against "
                                                                "--base-model (a 'distances' table).")] = False,
    device: str | None = DEVICE,
    trust_pickle: TrustPickle = False,
    strict: Annotated[bool, typer.Option(help="Exit with code 2 if any layer failed.")] = False,
) -> None:
    """Analyse the ESD of every layer matrix: power-law α, norms, ranks, Marchenko–Pastur bulk, phase.

    WeightWatcher's options under its names: --fit TPL, --fix-fingers, --detX, --base-model, --peft."""
    from funnelscope.output import staged_directory, write_table
    from funnelscope.probes.weights import WeightsAnalysis, summarize_weights, weight_spectra
    from funnelscope.report.terminal import console, print_frame, print_weights_table

    check_out(out, plots)
    if distances and base_model is None:
        raise FunnelscopeInputError("--distances needs --base-model")
    if describe or distances:
        if plots:
            raise FunnelscopeInputError("--plots draws ESDs: it does not go with --describe or --distances")
        from funnelscope.probes.describe import describe_weights
        from funnelscope.probes.distances import distances as layer_distances

        name = "layers" if describe else "distances"
        table = (describe_weights(path, layers=layers, pool=pool, trust_pickle=trust_pickle) if describe else
                 layer_distances(path, base_model, layers=layers, device=device, trust_pickle=trust_pickle))
        print_frame(table, title=f"{name} of {path}" + ("" if describe else f" against {base_model}"))
        if out is not None:
            with staged_directory(out) as staging:
                write_table(table, staging / name, table_format)
            console.print(f"wrote {out}/{name}.{table_format}", highlight=False)
        return
    spectra = weight_spectra(path, layers=layers, min_evals=min_evals, max_evals=max_evals, pool=pool,
                             randomize=randomize, eig_method=eig_method, fit=fit, fix_fingers=fix_fingers,
                             xmin_max=xmin_max, max_fingers=max_fingers, finger_thresh=finger_thresh, detX=detx,
                             tpl_optimizer=tpl_optimizer, base_model=base_model,
                             peft=("with_base" if base_model is not None else True) if peft else False,
                             device=device, trust_pickle=trust_pickle, progress=True)
    result = WeightsAnalysis.from_spectra(spectra, source=str(path), strict=strict, keep_spectra=plots)
    print_weights_table(result.details, summarize_weights(result.details), title=f"weights of {path}")
    if out is not None:
        result.save(out, format=table_format, figures=plots, title=path.name)
        console.print(f"wrote {out}/ (table, summary{', figures' if plots else ''})", highlight=False)


@command
def jacobian(
    models_and_data: ModelsAndData,
    weights_file: WeightsFile = None,
    factory_args: FactoryArgs = None,
    output: str = api_option(jacobian_spectrum, "output", f"Differentiate {', '.join(OUTPUTS)}."),
    method: str = api_option(jacobian_spectrum, "method", f"Rows: {', '.join(METHODS)}."),
    probes: int | None = api_option(jacobian_spectrum, "probes", "Output probes for --method sketch."),
    max_memory: str = api_option(jacobian_spectrum, "max_memory", "Memory budget of the route, e.g. 4GiB or 500MB "
                                 "(auto: half the device's available memory); the route that fits is chosen."),
    n: Limit = None,
    batch_size: int = BATCH_SIZE,
    seed: int = SEED,
    device: str | None = DEVICE,
    out: Out = None,
    table_format: Format = "parquet",
    plots: Plots = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """The ESD of the data Jacobian Gram M = 𝒥𝒥ᵀ of each model over DATA.

    Power-law α, λ_max, ranks, the diagonal and its link to confidence; several models side by side."""
    models, data = read_inputs(models_and_data, weights=weights_file, factory_args=factory_args, n=n,
                               trust_pickle=trust_pickle, out=out, plots=plots)
    from funnelscope.memory import format_bytes, parse_memory

    budget = max_memory if max_memory == "auto" else parse_memory(max_memory, "--max-memory")
    options = {"output": output, "method": method, "probes": probes, "batch_size": batch_size, "seed": seed,
               "device": device, "keep_gram": plots and len(data) <= 4096, "max_memory": budget, "progress": True}
    results = {label: jacobian_spectrum(model, data, **options) for label, model in models.items()}
    first = next(iter(results.values())).summary()
    route = (f"route {first['method']}, predicted peak {format_bytes(first['predicted_peak_bytes'])} of "
             f"max memory {format_bytes(first['max_memory'])}")
    report_results(results, title=f"Jacobian spectra on {data.name} (output: {output}; {route})", out=out,
                   table_format=table_format, plots=plots)


@command
def hessian(
    models_and_data: ModelsAndData,
    weights_file: WeightsFile = None,
    factory_args: FactoryArgs = None,
    top_k: int = api_option(hessian_spectrum, "top_k", "Largest eigenvalues to compute."),
    bottom_k: int = api_option(hessian_spectrum, "bottom_k", "Smallest eigenvalues to compute."),
    density: bool = api_option(hessian_spectrum, "density", "Estimate the spectral density."),
    gauss_newton: bool = api_option(hessian_spectrum, "gauss_newton", "Also the Gauss–Newton part's top k."),
    probes: int = api_option(hessian_spectrum, "probes", "Rademacher probes for the density."),
    lanczos_steps: int = api_option(hessian_spectrum, "lanczos_steps", "Most Lanczos steps (products) per run."),
    tol: float = api_option(hessian_spectrum, "tol", "Relative accuracy at which Lanczos stops."),
    trace_method: str = api_option(hessian_spectrum, "trace_method", f"Trace: {', '.join(TRACE_METHODS)}."),
    trace_products: int = api_option(hessian_spectrum, "trace_products", "Products for the trace."),
    n: Limit = None,
    batch_size: int = BATCH_SIZE,
    seed: int = SEED,
    device: str | None = DEVICE,
    out: Out = None,
    table_format: Format = "parquet",
    plots: Plots = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """Top eigenvalues, trace and spectral density of the loss Hessian of each model over DATA.

    Cross-entropy in eval mode; several models side by side."""
    models, data = read_inputs(models_and_data, weights=weights_file, factory_args=factory_args, n=n,
                               trust_pickle=trust_pickle, out=out, plots=plots)
    options = {"top_k": top_k, "bottom_k": bottom_k, "density": density, "gauss_newton": gauss_newton, "tol": tol,
               "probes": probes, "lanczos_steps": lanczos_steps, "trace_method": trace_method, "seed": seed,
               "trace_products": trace_products, "batch_size": batch_size, "device": device, "progress": True}
    results = {label: hessian_spectrum(model, data, **options) for label, model in models.items()}
    report_results(results, title=f"Hessian spectra on {data.name}", out=out, table_format=table_format, plots=plots)


@command
def landscape(
    models_and_data: Annotated[list[str], typer.Argument(
        metavar="MODEL [MODEL_B [MODEL_C]] DATA",
        help="One model: a random line from it (or --plane); two: the interpolation line between them; three: "
             "the plane through them. Models and DATA as for 'funnelscope hessian'.")],
    weights_file: WeightsFile = None,
    factory_args: FactoryArgs = None,
    plane: Annotated[bool, typer.Option("--plane", help="One model: a plane of two random directions.")] = False,
    points: Annotated[int | None, typer.Option(help="Grid points (per axis for a plane).", show_default=(
        f"{landscape_line.__kwdefaults__['points']} along a line, "
        f"{landscape_plane.__kwdefaults__['points']} on a plane"))] = None,
    t_range: tuple[float, float] = api_option(landscape_line, "t", "Range of t along a line.", "--t"),
    span: float = api_option(landscape_plane, "span", "Size of a plane, in units of its directions."),
    bn: str = api_option(landscape_line, "bn", f"BatchNorm running statistics: {', '.join(BN_MODES)} (on DATA)."),
    extra_data: Annotated[list[str] | None, typer.Option("--also",
                                                         help="Another data set to evaluate on; repeatable.")] = None,
    workers: int | None = api_option(landscape_line, "workers", "Processes for the grid."),
    n: Limit = None,
    seed: int = SEED,
    device: str | None = DEVICE,
    out: Out = None,
    table_format: Format = "parquet",
    plots: Plots = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """Loss and accuracy along a line or on a plane in weight space.

    Filter-normalised directions (Li et al. 2018), or the line between two models with its barrier height."""
    from funnelscope.datasets import load_data

    models, data = read_inputs(models_and_data, weights=weights_file, factory_args=factory_args, n=n,
                               trust_pickle=trust_pickle, out=out, plots=plots)
    if len(models) > 3 or (plane and len(models) != 1):
        raise FunnelscopeInputError(f"give one, two or three models (--plane: one), got {len(models)}")
    datasets = {models_and_data[-1]: data, **{spec: load_data(spec, limit=n) for spec in extra_data or []}}
    labels, modules = list(models), list(models.values())
    common = {"bn": bn, "seed": seed, "workers": workers, "device": device, "progress": True}
    if len(modules) == 3 or plane:
        directions = (modules[1], modules[2]) if len(modules) == 3 else "filter"
        result = landscape_plane(modules[0], datasets, directions=directions, span=span,
                                 **({"points": points} if points is not None else {}), **common)
    else:
        result = landscape_line(modules[0], datasets, other=modules[1] if len(modules) == 2 else None, t=t_range,
                                **({"points": points} if points is not None else {}), **common)
    report_results({"+".join(labels): result}, title=f"landscape of {', '.join(labels)}", out=out,
                   table_format=table_format, plots=plots)


@command
def linearity(
    models_and_data: ModelsAndData,
    weights_file: WeightsFile = None,
    factory_args: FactoryArgs = None,
    n: Limit = None,
    batch_size: int = BATCH_SIZE,
    max_features: int = api_option(layer_linearity, "max_features", "Largest block input for which R² is fitted."),
    device: str | None = DEVICE,
    out: Out = None,
    table_format: Format = "parquet",
    plots: Plots = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """How linearly each piecewise-linear activation of each model acts on DATA.

    Fractions of always-active and always-inactive units, and the R² of the best affine map across the block."""
    models, data = read_inputs(models_and_data, weights=weights_file, factory_args=factory_args, n=n,
                               trust_pickle=trust_pickle, out=out, plots=plots)
    results = {label: layer_linearity(model, data, batch_size=batch_size, max_features=max_features,
                                      device=device, progress=True) for label, model in models.items()}
    report_results(results, title=f"layer linearity on {data.name}", out=out, table_format=table_format, plots=plots)
