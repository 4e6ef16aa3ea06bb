"""The Jacobian probe's routes under a memory budget: each one's predicted peak and cost, and the choice.

Notation: ``n`` examples, ``q`` output directions (``k``, ``k − 1`` for probabilities, or ``m`` probes), ``w``
columns per direction (``d``, or ``p`` with a projection), ``r = q·w`` feature columns, ``s`` bytes per element
of the rows (4 for a float32 model), ``b`` the batch, ``L`` label classes, ``A`` the activations one batch's
forward keeps for its backward passes (measured on the first batch with ``saved_tensors_hooks``).

=========  ============================================================  =========================================
route      predicted peak (bytes)                                        cost (multiply-adds; eigen-solve)
=========  ============================================================  =========================================
primal     ``8n²`` (``M``, float64) + ``g·n·w·8`` (rows of ``g``           ``n²·r/2`` (``dsyrk``) + ``⁴⁄₃·n³`` ×
           directions per pass, as many as fit, at least one) + ``A``     :data:`EIGEN_SLOWDOWN`; ``⌈q/g⌉`` forward
           (+ ``8n²`` with ``keep_gram``, + ``8n²`` on an accelerator:     passes over the data
           its ``eigvalsh`` copies; the CPU's ``syevd`` overwrites ``M``)
dual       ``8r²`` (``16r²`` on an accelerator) + ``8b·r`` (a batch) +  ``n·r²`` + ``⁴⁄₃·r³`` × EIGEN_SLOWDOWN
           ``8L·r`` + ``A``
streamed   ``n·r·s`` when the cache is in memory (else a file) +          ``4·n·r·B`` per block product (``B``
           the block buffer + the Krylov basis ``16·D·B·t`` (``D =        columns), ``t`` + quadrature steps
           min(n, r)``) or the quadrature basis ``8·P·s·D``, or the       products (+ the tail refinement's
           tail refinement's :func:`tail_bytes` (as many columns         columns), no eigen-solve of size ``D``
           ``W ≤`` :data:`TAIL_MAX_COLUMNS` as fit)
=========  ============================================================  =========================================

The streamed route's settings: with the tail refinement (when the budget leaves room for its basis and the
quadrature beside it) the refinement's space gives the :data:`TOP_K_WITH_TAIL` pairs to deflate and the
quadrature takes :data:`SLQ_PROBES_WITH_TAIL` × :data:`SLQ_STEPS_WITH_TAIL`; without it a block Krylov run wants
:data:`TOP_K` from :data:`BLOCK` and the quadrature takes :data:`SLQ_PROBES` × :data:`SLQ_STEPS`, fewer steps
where the budget is tight.

``solver="auto"`` takes the exact route (primal or dual) of least predicted cost among those that fit the
budget, and the streamed route only when neither fits (an exact answer is worth its price when it can be had).
A budget that no route fits is a :class:`~funnelscope.errors.FunnelscopeInputError` that names the smallest
budget that would do, and the projection that would fit this one.
"""

from __future__ import annotations

from dataclasses import dataclass

from funnelscope.errors import FunnelscopeInputError
from funnelscope.memory import format_bytes

__all__ = ["EIGEN_SLOWDOWN", "RoutePlan", "Shape", "choose_route", "plan_routes", "tail_bytes"]

EIGEN_SLOWDOWN = 6.0  # a dense eigen-solve runs at about 1/6 of the GEMM rate (syevd's tridiagonalisation is BLAS-2)
BLOCK_BYTES = 64 << 20  # rows read per block product of the streamed route
TOP_K = 32  # streamed: eigenpairs wanted from block Krylov …
BLOCK = 48  # … from a start block this wide …
KRYLOV_STEPS = 24  # … in at most this many block products
SLQ_PROBES = 16  # streamed: quadrature probes …
SLQ_STEPS = 128  # … and Lanczos steps per probe (one block product of P columns per step)
TAIL_MAX_COLUMNS = 4096  # streamed tail refinement: the most block Krylov columns (memory permitting); when it runs
TOP_K_WITH_TAIL = 8  # … its space gives this many top pairs to deflate (no separate block Krylov run) …
SLQ_PROBES_WITH_TAIL = 64  # … and the quadrature takes more probes …
SLQ_STEPS_WITH_TAIL = 12  # … of fewer steps (it only sizes the tail and gives the smooth traces)


@dataclass(frozen=True)
class Shape:
    """What the routes' costs depend on (see the module docstring)."""

    n: int
    q: int
    w: int
    itemsize: int
    activations: int
    batch: int
    classes: int
    keep_gram: bool
    accelerator: bool

    @property
    def r(self) -> int:
        return self.q * self.w


@dataclass(frozen=True)
class RoutePlan:
    """One route's plan: ``solver`` (primal, dual, streamed), ``peak_bytes`` (predicted, on the compute
    device), ``cost`` (predicted multiply-adds, comparable across routes), and the route's settings."""

    solver: str
    peak_bytes: int
    cost: float
    fits: bool
    directions_per_pass: int = 1
    cache: str = ""
    block_rows: int = 0
    top_k: int = TOP_K
    block: int = BLOCK
    krylov_steps: int = KRYLOV_STEPS
    slq_probes: int = SLQ_PROBES
    slq_steps: int = SLQ_STEPS
    tail_columns: int = 0

    @property
    def exact(self) -> bool:
        return self.solver != "streamed"


def _primal(shape: Shape, budget: int) -> RoutePlan:
    n, q, w = shape.n, shape.q, shape.w
    row_item = 8 if not shape.accelerator else shape.itemsize  # float64 rows on the CPU, read in place
    # an accelerator's eigvalsh works on a copy (another 8n²); the CPU's syevd overwrites M
    copies = 1 + shape.keep_gram + shape.accelerator
    fixed = 8 * n * n * copies + shape.activations + 8 * n * shape.classes + _overhead(n)
    per_direction = n * w * row_item
    group = max(1, min(q, (budget - fixed) // max(1, per_direction)))
    peak = fixed + group * per_direction
    cost = n * n * shape.r / 2 + 4 / 3 * n**3 * EIGEN_SLOWDOWN
    return RoutePlan("primal", int(peak), cost, peak <= budget, directions_per_pass=int(group))


def _dual(shape: Shape, budget: int) -> RoutePlan:
    r = shape.r
    peak = (8 * r * r * (1 + shape.accelerator) + 8 * (shape.batch + shape.classes) * r + shape.activations
            + 8 * shape.n + _overhead(shape.n))
    cost = shape.n * r * r + 4 / 3 * r**3 * EIGEN_SLOWDOWN
    return RoutePlan("dual", int(peak), cost, peak <= budget and not shape.keep_gram)


def _streamed(shape: Shape, budget: int, host_budget: int) -> RoutePlan:
    n, r, s = shape.n, shape.r, shape.itemsize
    dim = min(n, r)
    cache_bytes = n * r * s
    block_rows = max(1, min(n, min(BLOCK_BYTES, budget // 8) // max(1, r * s)))
    rows_pass = shape.activations + shape.batch * r * (s + 8) + 8 * shape.classes * r

    def work(top_k: int, block: int, krylov_steps: int, slq_probes: int, slq_steps: int) -> int:
        vectors = dim * block * (8 + s) + block_rows * block * (s + 8) + r * block * (8 + s)
        krylov = 16 * dim * block * krylov_steps + 24 * (block * krylov_steps) ** 2 + vectors
        return max(rows_pass, krylov, quadrature_bytes(slq_probes, slq_steps)) + kept(top_k)

    def quadrature_bytes(slq_probes: int, slq_steps: int) -> int:
        return 8 * slq_probes * slq_steps * dim + 4 * dim * slq_probes * 8

    def kept(top_k: int) -> int:
        # per-example vectors, the small arrays and the top eigenvectors (deflated, kept to the end)
        return 8 * n * 4 + _overhead(n) + dim * top_k * 8

    def plan(place: str, resident: int, limit: int) -> RoutePlan:
        # the quadrature runs inside the tail refinement (deflated by the top pairs of its space): as many
        # columns as the rest allows
        base = kept(TOP_K_WITH_TAIL) + quadrature_bytes(SLQ_PROBES_WITH_TAIL, SLQ_STEPS_WITH_TAIL)
        columns = min(dim, TAIL_MAX_COLUMNS)
        while columns > 0 and resident + base + tail_bytes(dim, columns) > limit:
            columns -= max(1, columns // 8)
        with_tail = (TOP_K_WITH_TAIL, 0, 0, SLQ_PROBES_WITH_TAIL, SLQ_STEPS_WITH_TAIL)  # no first Krylov run
        if columns and resident + work(*with_tail) <= limit:
            # α then reads the refinement's Ritz values: the quadrature only gives the bulk and the smooth traces
            # (effective rank, ‖M‖_F), whose error is the probes' variance: more probes, fewer steps
            settings = with_tail
            peak = max(resident + work(*settings), resident + base + tail_bytes(dim, columns))
        else:
            columns = 0
            # fewer Krylov/quadrature steps where the budget is tight (at least a quarter of the defaults)
            krylov_steps, slq_steps = KRYLOV_STEPS, SLQ_STEPS
            while (resident + work(TOP_K, BLOCK, krylov_steps, SLQ_PROBES, slq_steps) > limit
                   and krylov_steps > KRYLOV_STEPS // 4):
                krylov_steps, slq_steps = krylov_steps - 1, max(SLQ_STEPS // 4, slq_steps - 6)
            settings = (TOP_K, BLOCK, krylov_steps, SLQ_PROBES, slq_steps)
            peak = resident + work(*settings)
        top_k, block, krylov_steps, slq_probes, slq_steps = settings
        passes = (krylov_steps + slq_steps) * (2 if n <= r else 1)
        cost = 2 * n * r * (block * krylov_steps + slq_probes * slq_steps) * (2 if n <= r else 1) + passes * n * r
        return RoutePlan("streamed", int(peak), cost, peak <= limit, cache=place, block_rows=block_rows,
                         top_k=top_k, block=block, krylov_steps=krylov_steps, slq_probes=slq_probes,
                         slq_steps=slq_steps, tail_columns=columns)

    in_memory = plan("device", cache_bytes, budget)
    if in_memory.fits:
        return in_memory
    if shape.accelerator and cache_bytes + block_rows * r * s <= host_budget:
        return plan("host", block_rows * r * s, budget)
    return plan("disk", block_rows * r * s + shape.batch * r * s, budget)  # + the batch being written


def tail_bytes(dim: int, columns: int) -> int:
    """The streamed tail refinement's peak with ``W`` columns: block Krylov's basis and image (``16·D·W``),
    ``T = QᵀAQ`` with its eigen-solve (``32·W²``), the Ritz vectors and their images at the end (``4·D·W``: the
    wanted pairs are at most a quarter of the columns) and a block product's output (``2·D·W``)."""
    return 16 * dim * columns + 32 * columns * columns + 4 * dim * columns + 2 * dim * columns


def _overhead(n: int) -> int:
    """Small arrays: per-example vectors, the metrics and the fit (4 MiB + 64 bytes per example)."""
    return (4 << 20) + 64 * n


def plan_routes(shape: Shape, budget: int, *, host_budget: int) -> dict[str, RoutePlan]:
    """Every route's plan under ``budget`` bytes on the compute device (``host_budget``: the CPU memory a
    device's cache may use instead)."""
    return {"primal": _primal(shape, budget), "dual": _dual(shape, budget),
            "streamed": _streamed(shape, budget, host_budget)}


def choose_route(plans: dict[str, RoutePlan], solver: str, budget: int, *, shape: Shape) -> RoutePlan:
    """The plan that runs: ``solver`` itself (``primal``, ``dual``, ``streamed``), the cheaper exact one
    (``dense``), or the cheapest exact one that fits, else the streamed one (``auto``).

    Raises
    ------
    FunnelscopeInputError
        When the chosen (or every) route's predicted peak exceeds ``budget``: the message names the smallest
        budget that fits.
    """
    if shape.keep_gram:
        candidates = [plans["primal"]]
    elif solver in plans:
        candidates = [plans[solver]]
    elif solver == "dense":
        candidates = [plans["primal"]] if shape.keep_gram or shape.r >= shape.n else [plans["dual"], plans["primal"]]
    else:
        exact = [p for p in (plans["primal"], plans["dual"]) if p.fits]
        candidates = exact or [plans["streamed"]]
    fitting = [p for p in candidates if p.fits]
    if fitting:
        return min(fitting, key=lambda p: p.cost)
    smallest = min(candidates, key=lambda p: p.peak_bytes)
    hint = ""
    if smallest.solver == "streamed" and shape.r > 64:
        hint = " or project=p to shrink the rows"
    raise FunnelscopeInputError(
        f"max_memory={format_bytes(budget)} is too small for n={shape.n} examples × r={shape.r} feature columns: "
        f"the {smallest.solver} route needs about {format_bytes(smallest.peak_bytes)} (pass max_memory="
        f"'{-(-smallest.peak_bytes // (1 << 20))}MiB'{hint}, or use fewer examples)"
    )
