"""The streamed route of the Jacobian probe: one pass of rows into a cache, the spectrum from block products.

For data sets whose ``n × n`` Gram (or ``r × r`` dual) does not fit the memory budget
(:mod:`funnelscope.probes.jacobian_routes`). With ``M = ΦΦᵀ`` (``Φ``: n × r feature rows):

1. **One pass of rows** over the data (``q`` backward passes per batch, as the exact routes) into a
   :class:`~funnelscope.probes.jacobian_cache.FeatureCache` (on the device, in host memory, or a temporary
   file), and on the way, exactly: the diagonal ``M_ii = ‖φ_i‖²`` (float64), hence the trace ``Σ M_ii``, and
   the class sums ``S_a = Σ_{i∈a} φ_i`` (``Σ_{i∈a, j∈b} M_ij = S_a·S_b``).
2. **Products** ``V ↦ ΦᵀΦV`` (the ``r × r`` operator, one pass over the cache) when ``n > r``, else
   ``V ↦ Φ(ΦᵀV)`` (``n × n``, two passes): the operator of size ``D = min(n, r)``, with the same non-zero
   eigenvalues as ``M``. Blocks of rows are multiplied in the cache's dtype (float32 for a float32 model:
   no conversion of the rows, which cost a third of the old route's time) and accumulated in float64.
3. **Top eigenvalues** by randomised block Krylov (Musco & Musco, NeurIPS 2015;
   :func:`~funnelscope.spectra.block_krylov.block_krylov_eigenpairs`):
   :data:`~funnelscope.probes.jacobian_routes.TOP_K` pairs from a block of
   :data:`~funnelscope.probes.jacobian_routes.BLOCK`, stopped when their residual-based error bounds
   ``min(r, r²/gap)`` meet ``10⁻⁴`` relative, or after :data:`~funnelscope.probes.jacobian_routes.KRYLOV_STEPS`
   block products. With the tail refinement (step 5) there is no separate run: its space gives the
   :data:`~funnelscope.probes.jacobian_routes.TOP_K_WITH_TAIL` top pairs (the outliers to deflate: the
   benchmark CNN's spectrum has one, λ₂/λ₁ = 0.009) once they meet the same bound.
4. **The bulk** by stochastic Lanczos quadrature (Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 38(4), 2017;
   :func:`~funnelscope.spectra.lanczos.stochastic_lanczos_quadrature`, the library's one implementation) on the
   operator *deflated* by the accepted top eigenvectors ``U`` (those whose error bound is at most
   :data:`ACCEPT_TOL` relative): ``P A P`` on ``range(U)⊥``, ``D − K`` dimensional, whose eigenvalues are
   exactly the ones not yet found.
5. **The power law's tail** (:func:`refine_tail`): the largest eigenvalues by block Krylov, as many as the
   fitted tail needs (growing in the same space when the tail reaches past them), stopped when α and the
   tail's Ritz values settle; they replace those ranks. It runs when the budget leaves room for its basis
   and the quadrature beside it (:func:`~funnelscope.probes.jacobian_routes.tail_bytes`), and then steps 3
   and 4 happen inside it: the quadrature runs once the space's top pairs have converged, and takes
   :data:`~funnelscope.probes.jacobian_routes.SLQ_PROBES_WITH_TAIL` probes of
   :data:`~funnelscope.probes.jacobian_routes.SLQ_STEPS_WITH_TAIL` steps: the traces' error is the probes'
   variance (on the exact n = 20 000 spectrum the effective rank's RMS error over 8 seeds was 2.75 % with
   16 probes, 1.10 % with 64 × 12, the same for 12 to 64 steps).

The eigenvalues reported (``eigenvalues``, descending, ``n`` of them) are the accepted top values and the
refined tail, then the quantiles of the deflated density at levels ``(i − ½)/(D − K)`` (the "typical"
eigenvalue of each rank), then ``n − D`` zeros. The power-law fit (α, xmin, D) and λ_max read that list,
exactly as the exact routes read theirs: with the refinement α reads Ritz values only (``streamed_tail_covered``
in ``summary()``: the fit's tail lies within the refined ranks). Quantities of the spectrum as a whole come from
quadrature traces, not from the list (Ubaru, Chen & Saad: ``tr f(A) ≈ D/n_v Σ τ² f(θ)``):

* ``‖M‖_F² = Σ_K λ² + tr((PAP)²)`` (the off-diagonal ratio);
* the effective rank ``exp(−Σ p log p)``, ``p = λ/tr M``: ``log tr M − (Σ_K λ log λ + tr f(PAP))/tr M``
  with ``f(x) = x log x``.

Error estimates (``summary()``): λ_max and the top values carry their Ritz error bounds; the effective rank
and the off-diagonal ratio a jackknife over the quadrature probes (leave one probe out, recompute,
``√((P − 1)/P · Σ (θ_j − θ̄)²)``); α the largest of its jackknife, ``|α − α_{s/2}|`` (α from the first half of
the same Lanczos steps) and the refinement's last change. Without the refinement α reads the quantiles, and
they are not good enough: the fit's ``xmin`` is ill-conditioned where the tail is the bulk's upper edge (the
benchmark CNN at n = 2 000: moving ``xmin`` by 9 eigenvalues moves the KS distance by 5·10⁻⁴ and α by 0.1), and
the quantiles' coarse resolution there moves ``xmin`` up (α 7.23 exact; from quantiles 8.44 with 64 steps, 7.66
with 128, 7.34–7.48 with 256; at the exact ``xmin`` 7.02, 7.16, 7.22–7.28); with it, 7.23 at n = 2 000 (an SLQ
simulation on the exact spectrum) and 7.37866 against 7.37869 at n = 5 000.
The trace, the diagonal and the class sums are exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from funnelscope.probes.jacobian_cache import FeatureCache
from funnelscope.probes.jacobian_gram import GramSolution, JacobianRows, check_finite, class_index
from funnelscope.probes.jacobian_routes import RoutePlan
from funnelscope.spectra.block_krylov import BlockKrylovEigen, block_krylov_eigenpairs
from funnelscope.spectra.lanczos import CONVERGED_TOL, SpectralDensity, stochastic_lanczos_quadrature
from funnelscope.spectra.powerlaw import fit_powerlaw

__all__ = ["ACCEPT_TOL", "TailRefinement", "bulk_eigenvalues", "refine_tail", "solve_streamed", "tail_steps"]

ACCEPT_TOL = 1e-3  # a top Ritz value is reported (and deflated) when its error bound is at most this, relative
TAIL_START_RANKS = 256  # tail refinement: Ritz values for this many ranks at first …
TAIL_MARGIN = 2.0  # … raised to twice the fit's tail …
TAIL_GROW = 1.5  # … whenever that tail is more than two thirds of the ranks …
TAIL_BLOCK_DIVISOR = 8  # … from a block of an eighth of them …
TAIL_ALPHA_TOL = 1e-3  # … until α changes by at most this in one block product …
TAIL_VALUE_TOL = 1e-5  # … and the tail's Ritz values by at most this, relative
Bar = Callable[[int, str], Any]


def solve_streamed(engine: JacobianRows, directions: torch.Tensor, width: int, plan: RoutePlan, *, seed: int,
                   bar: Bar, directory: str | None = None) -> GramSolution:
    """The streamed route (module docstring): rows cached in one pass, then block Krylov and quadrature.

    ``bar(total, label)`` opens a progress bar (:func:`funnelscope.progress.progress_bar`); ``directory`` is
    where a disk cache's temporary directory goes (default: the system's)."""
    n, q = engine.n, len(directions)
    r = q * width
    dtype = torch.float64 if engine.dtype == torch.float64 else torch.float32
    device = engine.device
    diagonal = torch.zeros(n, dtype=torch.float64, device=device)
    labels = None if engine.labels is None else class_index(engine.labels, device)
    sums = None if labels is None else torch.zeros(int(labels.max()) + 1, r, dtype=torch.float64, device=device)
    with FeatureCache(n, r, dtype, place=plan.cache, device=device, block_rows=plan.block_rows,
                      directory=directory) as cache:
        passes = -(-n // engine.batch_size) * q
        with bar(passes, "Jacobian rows (backward passes)") as advance:
            engine.on_rows = advance
            batch = None
            for start, j, rows in engine.batches(directions, record=True):
                if j == 0:
                    batch = torch.empty(rows.shape[0], r, dtype=dtype, device=device)
                batch[:, j * width : (j + 1) * width] = rows
                wide = rows.to(torch.float64)
                diagonal[start : start + rows.shape[0]] += (wide * wide).sum(1)
                if sums is not None:
                    sums[:, j * width : (j + 1) * width].index_add_(0, labels[start : start + rows.shape[0]], wide)
                if j + 1 == q:
                    cache.write(batch)
            del batch
        check_finite(diagonal)
        generator = torch.Generator().manual_seed(seed)
        dim = min(n, r)
        eps = float(torch.finfo(dtype).eps)
        relative_zero = max(max(n, r) * max(float(np.finfo(np.float64).eps), eps**2), eps * math.sqrt(dim))
        found: dict[str, Any] = {}

        def quadrature(top: BlockKrylovEigen) -> tuple[np.ndarray, np.ndarray, float]:
            """The quadrature deflated by the accepted ``top`` pairs; the list of values, the accepted top
            values and the zero tolerance (recorded in ``found``)."""
            accepted = np.append(top.errors <= ACCEPT_TOL * np.abs(top.values), False)
            keep = min(int(np.argmin(accepted)) if top.values.size else 0, dim - 1)
            density = stochastic_lanczos_quadrature(matmat, dim, steps=plan.slq_steps, probes=plan.slq_probes,
                                                    seed=int(torch.randint(0, 2**62, (1,), generator=generator)),
                                                    device=device, deflate=top.vectors[:, :keep])
            top_values = np.clip(top.values[:keep], 0.0, None)
            values = bulk_eigenvalues(top_values, density)
            tolerance = float(values[0]) * relative_zero
            found.update(top=top, keep=keep, density=density, top_values=top_values, values=values,
                         tolerance=tolerance, krylov_steps=top.steps)
            return values, top_values, tolerance

        tail = None
        if plan.tail_columns and dim > plan.top_k + 1:
            # the refinement's own space gives the outliers to deflate (no separate run)
            steps = tail_steps(dim, plan.tail_columns, plan.top_k, TAIL_START_RANKS)
            with bar(steps + plan.slq_steps, "Jacobian products (passes over the rows)") as advance:
                matmat = _operator(cache, advance)
                tail = refine_tail(matmat, dim, quadrature, deflate=plan.top_k, start=TAIL_START_RANKS,
                                   columns=plan.tail_columns, generator=generator, device=device)
                advance(max(0, steps - tail.steps))
            found["top"] = tail.top  # the deflated pairs, converged further in the grown space
        else:
            with bar(plan.krylov_steps + plan.slq_steps, "Jacobian products (passes over the rows)") as advance:
                matmat = _operator(cache, advance)
                top = block_krylov_eigenpairs(matmat, dim, top_k=plan.top_k, block=plan.block,
                                              max_steps=plan.krylov_steps, tol=CONVERGED_TOL, generator=generator,
                                              device=device)
                quadrature(top)
                advance(max(0, plan.krylov_steps - top.steps) + 1)
    top, keep, density, top_values = found["top"], found["keep"], found["density"], found["top_values"]
    values, tolerance = found["values"], found["tolerance"]
    first_alpha, first_tail = _tail_fit(values, tolerance)
    refined = None if tail is None else tail.values
    values = np.concatenate([_with_top(values, top_values, refined), np.zeros(n - dim)])
    trace = float(diagonal.sum())
    estimates = _estimates(top_values, density, trace, tolerance, refined)
    errors = _jackknife(top_values, density, trace, tolerance, estimates, refined)
    half = density.truncated(density.nodes.shape[1] // 2)
    alpha_half = _estimates(top_values, half, trace, tolerance, refined)["alpha"]
    alpha_changes = [errors["alpha"], abs(estimates["alpha"] - alpha_half)]
    if tail is not None:
        alpha_changes.append(tail.alpha_change)
    errors["alpha"] = float(np.nanmax(alpha_changes))
    errors["lambda_max"] = float(top.errors[0]) if top.errors.size else math.nan
    errors["top_relative"] = float(np.max(top.errors[:keep] / np.maximum(top_values, np.finfo(float).tiny))
                                   ) if keep else math.nan
    class_gram = None if sums is None else (sums @ sums.T).cpu().numpy()
    details = {"top_converged": int(np.count_nonzero(top.converged)), "top_accepted": keep,
               "krylov_steps": found["krylov_steps"],
               "products": top.products + plan.slq_steps * plan.slq_probes,  # the refinement's space's, if any
               "cache": plan.cache, "zero_tolerance": tolerance,
               "alpha_half_steps": alpha_half, "alpha_quadrature": first_alpha, "tail_quadrature": first_tail,
               **({} if tail is None else tail.details())}
    return GramSolution(values, diagonal.cpu().numpy(), estimates["frobenius_sq"], class_gram, density=density,
                        exact=False, effective_rank=estimates["effective_rank"], errors=errors, details=details)


@dataclass(frozen=True)
class TailRefinement:
    """The tail refinement's result: ``values`` (the ``wanted`` largest Ritz values, descending), the change
    of α over its last block product (its error estimate), and the run's size."""

    values: np.ndarray
    alpha: float
    alpha_change: float
    tail: int
    wanted: int
    capped: bool  # ``wanted`` is the most the budget's columns allow
    columns: int
    steps: int
    top: BlockKrylovEigen  # the space's top pairs at the end (the deflated ones, converged further)

    @property
    def covered(self) -> bool:
        """Whether the fitted tail lies within the refined values (then α reads no quadrature quantile)."""
        return 0 < self.tail < self.wanted

    def details(self) -> dict[str, Any]:
        return {"tail_refined": self.wanted, "tail_columns": self.columns, "tail_steps": self.steps,
                "tail_size": self.tail, "tail_covered": self.covered, "tail_alpha_change": self.alpha_change}


def refine_tail(matmat: Callable[[torch.Tensor], torch.Tensor], dim: int,
                bulk: Callable[[BlockKrylovEigen], tuple[np.ndarray, np.ndarray, float]], *, deflate: int,
                start: int, columns: int, generator: torch.Generator, device: torch.device) -> TailRefinement:
    """The power-law tail's eigenvalues by block Krylov, so that α reads Ritz values, not quantiles.

    α is hypersensitive to the tail's values: from ``α = 1 + t/Σ ln(λ_i/xmin)`` a relative error ``ε`` of the
    tail's eigenvalues against ``xmin`` moves α by about ``(α − 1)²·ε`` (0.04 for ``ε = 10⁻³`` at α = 7), and
    the KS distance that places ``xmin`` hardly varies along the bulk's edge; the quadrature's quantiles moved
    α by 0.3–0.5 on the benchmark CNN. So the ``K`` largest eigenvalues are computed by randomised block Krylov,
    ``K = start`` (:data:`TAIL_START_RANKS`) at first, from a block of ``⌈K/8⌉`` columns
    (:data:`TAIL_BLOCK_DIVISOR`: a narrow block and more powers converge clustered eigenvalues in fewer
    columns), in at most ``columns`` columns (the memory budget's; ``K`` at most a fifth of them, unless they
    span the operator).

    The same space gives the top ``deflate`` pairs first: once their error bounds meet ``10⁻⁴`` relative
    (``CONVERGED_TOL``), or when the first fit is due, ``bulk(pairs)`` is called once with them and returns
    ``(values, fixed, tolerance)``: the spectrum's list (descending; the caller's quadrature deflated by the
    accepted pairs), the accepted top values and the fit's zero tolerance (no separate block Krylov run for the
    outliers: with its narrow block it took 41 s of the route's 492 at n = 50 000). After every block product from
    then on ``values`` with its top ``K`` ranks replaced by the Ritz values is fitted again. When the fitted tail
    (the values ``≥ xmin``) is more than ``K/1.5`` (:data:`TAIL_GROW`), ``K`` becomes twice the tail
    (:data:`TAIL_MARGIN`) and the same space keeps growing: a fit whose ``xmin`` sits at the edge of the refined
    ranks reads the coarse values past it (on the exact n = 20 000 spectrum of the benchmark CNN, tail 314, a stop
    at ``K = 256`` with a tail of 252 put α 0.29 off). The run stops when α changes by at most
    :data:`TAIL_ALPHA_TOL` and the tail's Ritz values by at most :data:`TAIL_VALUE_TOL` (relative) in one product
    (Ritz values of nested spaces rise monotonically to the eigenvalues: the change bounds what a product still
    adds, the convergence being geometric) and the fitted tail lies within the ``K``. The quadrature's own tail does
    not size ``K``: with the 12 Lanczos steps the route gives it, its quantiles resolve no tail (there: 6 527 ranks
    against 314).
    """
    cap, wanted, block, max_steps = _tail_shape(dim, columns, deflate, start)
    fits: list[_TailFit] = []  # the last two fits at the current ``wanted``
    latest = np.zeros(0)
    spectrum: list[Any] = []  # ``(values, fixed, tolerance)`` from ``bulk``, once it has run

    def stop(ritz: np.ndarray, pairs: Callable[[int], BlockKrylovEigen]) -> bool:
        nonlocal wanted, latest
        latest = ritz
        due = ritz.size >= wanted + block
        if not spectrum:
            top = pairs(deflate)
            if not (due or top.converged.all()):
                return False
            spectrum[:] = bulk(top)
        if not due:
            return False
        values, fixed, tolerance = spectrum
        fit = _TailFit.of(values, fixed, ritz[:wanted], tolerance, ritz.size)
        if fit.size * TAIL_GROW > wanted and wanted < cap:
            # the fit's tail reaches past the refined ranks (the quadrature's estimate was short): more ranks
            # from the same, growing space, not a new run
            wanted = min(cap, math.ceil(TAIL_MARGIN * fit.size))
            fits.clear()
            return False
        fits[:] = [*fits[-1:], fit]
        if len(fits) < 2:
            return False
        previous, size = fits[0], max(1, fit.size)
        change = np.abs(fit.top[:size] / np.maximum(previous.top[:size], np.finfo(float).tiny) - 1)
        return (abs(fit.alpha - previous.alpha) <= TAIL_ALPHA_TOL and float(change.max()) <= TAIL_VALUE_TOL
                and 0 < fit.size < wanted)

    found = block_krylov_eigenpairs(matmat, dim, top_k=max(1, deflate), block=block, max_steps=max_steps,
                                    tol=CONVERGED_TOL, generator=generator, device=device, stop=stop)
    if not spectrum:  # the space was exhausted before the top pairs converged
        spectrum[:] = bulk(found)
    values, fixed, tolerance = spectrum
    wanted = min(wanted, latest.size)
    if not fits or fits[-1].space != latest.size or fits[-1].top.size != wanted:
        # the run ended on the budget's last product before a fit at this ``wanted``
        fits[:] = [*fits[-1:], _TailFit.of(values, fixed, latest[:wanted], tolerance, latest.size)]
    last = fits[-1]
    change = abs(last.alpha - fits[-2].alpha) if len(fits) >= 2 else math.nan
    return TailRefinement(values=last.top, alpha=last.alpha, alpha_change=float(change), tail=last.size,
                          wanted=wanted, capped=wanted >= cap, columns=found.products, steps=found.steps,
                          top=found)


def tail_steps(dim: int, columns: int, deflate: int, start: int) -> int:
    """The most block products :func:`refine_tail` takes with these settings (a progress bar's total)."""
    return _tail_shape(dim, columns, deflate, start)[3]


def _tail_shape(dim: int, columns: int, deflate: int, start: int) -> tuple[int, int, int, int]:
    """:func:`refine_tail`'s most ranks, ranks wanted at first, block and most block products."""
    # a space of the whole operator gives every eigenvalue exactly; else at most a fifth of the columns are wanted
    cap = dim - 1 if columns >= dim else max(1, columns // 5)
    wanted = min(cap, max(deflate + 1, start))
    block = max(1, math.ceil(wanted / TAIL_BLOCK_DIVISOR))
    return cap, wanted, block, max(1, columns // block)


@dataclass(frozen=True)
class _TailFit:
    """One fit of :func:`refine_tail`: the ``top`` Ritz values it used (from a space of ``space`` columns),
    α and the tail's size."""

    top: np.ndarray
    alpha: float
    size: int
    space: int

    @classmethod
    def of(cls, values: np.ndarray, fixed: np.ndarray, ritz: np.ndarray, tolerance: float,
           space: int) -> _TailFit:
        top = np.clip(ritz, 0.0, None)
        alpha, size = _tail_fit(_with_top(values, fixed, top), tolerance)
        return cls(top=top, alpha=alpha, size=size, space=space)


def _operator(cache: FeatureCache, advance: Callable[..., None]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``V ↦ ΦᵀΦV`` (n > r) or ``V ↦ Φ(ΦᵀV)`` over the cache's row blocks, in the cache's dtype, accumulated
    in float64."""
    n, r, dtype = cache.n, cache.r, cache.dtype

    def matmat(v: torch.Tensor) -> torch.Tensor:
        narrow = v.to(dtype)
        if n > r:
            out = torch.zeros(r, v.shape[1], dtype=torch.float64, device=v.device)
            for _, block in cache.blocks():
                out += (block.T @ (block @ narrow)).to(torch.float64)
        else:
            middle = torch.zeros(r, v.shape[1], dtype=torch.float64, device=v.device)
            for start, block in cache.blocks():
                middle += (block.T @ narrow[start : start + block.shape[0]]).to(torch.float64)
            middle_narrow = middle.to(dtype)
            out = torch.empty(n, v.shape[1], dtype=torch.float64, device=v.device)
            for start, block in cache.blocks():
                out[start : start + block.shape[0]] = block @ middle_narrow
        advance()
        return out

    return matmat


def bulk_eigenvalues(top: np.ndarray, density: SpectralDensity) -> np.ndarray:
    """``top`` (the deflated eigenvalues) and the ``density.dim`` quantiles of the deflated density at levels
    ``(i − ½)/dim``, all descending and clipped at zero.

    >>> density = SpectralDensity(nodes=np.array([[1.0, 3.0]]), weights=np.array([[0.5, 0.5]]),
    ...                           residuals=np.zeros((1, 2)), dim=4)
    >>> bulk_eigenvalues(np.array([10.0]), density).tolist()
    [10.0, 3.0, 2.5, 1.5, 1.0]
    """
    levels = (np.arange(density.dim) + 0.5) / density.dim
    bulk = np.clip(density.quantiles(levels), 0.0, None)
    return np.sort(np.concatenate([top, bulk]))[::-1]


def _x_log_x(x: np.ndarray) -> np.ndarray:
    positive = np.clip(x, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(positive > 0, positive * np.log(positive), 0.0)


def _with_top(values: np.ndarray, fixed: np.ndarray, refined: np.ndarray | None) -> np.ndarray:
    """``values`` (descending) with its leading ranks replaced by ``refined`` and ``fixed`` (the accepted top
    pairs), sorted again. Where both give a rank the larger is taken: the ``i``-th Ritz value of any subspace is
    at most the ``i``-th eigenvalue (Cauchy interlacing), so the larger is the closer."""
    out = values.copy()
    if refined is not None:
        out[: refined.size] = refined
    out[: fixed.size] = fixed if refined is None else np.maximum(fixed, out[: fixed.size])
    return np.sort(out)[::-1]


def _tail_fit(values: np.ndarray, tolerance: float) -> tuple[float, int]:
    """α of the power-law fit of the (descending) ``values`` above ``tolerance`` and its tail's size (the
    number of values ``≥ xmin``)."""
    kept = values[values > tolerance]
    if kept.size < 2 or np.ptp(kept) <= 0:
        return math.nan, 0
    fit = fit_powerlaw(kept, min_value=tolerance)
    return fit.alpha, int(np.count_nonzero(kept >= fit.xmin))


def _estimates(top: np.ndarray, density: SpectralDensity, trace: float, tolerance: float,
               refined: np.ndarray | None = None) -> dict[str, float]:
    """``‖M‖_F²``, the effective rank and the power-law α from the top values and a (deflated) density; α's
    list has its leading ranks from the tail refinement, when there is one."""
    frobenius_sq = float(np.sum(top**2) + density.trace(lambda x: np.clip(x, 0.0, None) ** 2))
    entropy_sum = float(np.sum(_x_log_x(top)) + density.trace(_x_log_x))
    effective_rank = math.exp(math.log(trace) - entropy_sum / trace) if trace > 0 else math.nan
    alpha, _ = _tail_fit(_with_top(bulk_eigenvalues(top, density), top, refined), tolerance)
    return {"frobenius_sq": frobenius_sq, "effective_rank": effective_rank, "alpha": alpha}


def _jackknife(top: np.ndarray, density: SpectralDensity, trace: float, tolerance: float,
               full: dict[str, float], refined: np.ndarray | None = None) -> dict[str, float]:
    """Jackknife standard errors over the quadrature probes of the estimates of :func:`_estimates`."""
    probes = density.nodes.shape[0]
    if probes < 2:
        return {key: math.nan for key in full}
    replicas = []
    for left_out in range(probes):
        keep = np.arange(probes) != left_out
        partial = SpectralDensity(nodes=density.nodes[keep], weights=density.weights[keep],
                                  residuals=density.residuals[keep], dim=density.dim)
        replicas.append(_estimates(top, partial, trace, tolerance, refined))
    errors = {}
    for key in full:
        samples = np.array([replica[key] for replica in replicas])
        errors[key] = float(math.sqrt((probes - 1) / probes * np.sum((samples - samples.mean()) ** 2)))
    return errors
