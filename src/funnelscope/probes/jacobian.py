"""The Jacobian probe: the spectrum of the data Gram of output Jacobians, ``M = 𝒥𝒥ᵀ``.

Definitions: ``docs/quantities.md#jacobian-gram``.

For a classifier with outputs ``f(x) ∈ ℝᵏ`` (softmax probabilities by default) and ``n`` examples,

.. math::

    J(x_i) = \\frac{\\partial f}{\\partial x}(x_i) \\in \\mathbb R^{k \\times d}, \\qquad
    M_{ij} = \\sum_{c=1}^{k} \\nabla_x f_c(x_i) \\cdot \\nabla_x f_c(x_j)
           = \\operatorname{vec} J(x_i) \\cdot \\operatorname{vec} J(x_j).

``M`` is the kernel that says how a step in input space moves the outputs on the data together: its
eigen-spectrum (ESD) tells whether the landscape around the data is *funneled* — a few strongly correlated
directions, a heavy power-law tail — or flat and random-like; its diagonal ``M_ii = ‖J(x_i)‖_F²`` is the
input sensitivity of each example, which Novak et al. ("Sensitivity and generalization in neural networks:
an empirical study", ICLR 2018) found to track generalisation. The probe reports the ESD with its power-law
fit (Clauset, Shalizi & Newman 2009), the diagonal's distribution and fit, ranks, the off-diagonal mass and,
with labels, per-class structure and the link of ``M_ii`` to confidence and correctness.

Routes (``summary()["method"]`` says which ran: ``<rows>[+jl(p=…)]/<solver>``), chosen under a memory budget
``max_memory`` (default: half the available memory of the device) by their predicted peaks
(:mod:`funnelscope.probes.jacobian_routes`):

* rows ``exact``: ``∇_x f_c(x_i)`` by the sum trick — in eval mode examples do not interact, so the
  gradient of ``Σ_i f_c(x_i)`` with respect to the batch holds every example's row — one forward and ``k``
  backward passes per batch (``k − 1`` for probabilities), no per-example loop.
* rows ``sketch``: ``m`` Rademacher output probes instead of the ``k`` classes (unbiased, ``m`` backward
  passes; :mod:`funnelscope.probes.jacobian_sketch`), only when ``m`` is below the exact route's count of
  directions; optionally with a CountSketch (sparse Johnson–Lindenstrauss projection) of the input side.
* solvers: ``primal`` (``M``, n × n) or ``dual`` (``ΦᵀΦ``, r × r), exact float64 eigen-solves, whichever is
  predicted cheaper among those that fit; ``streamed`` (:mod:`funnelscope.probes.jacobian_streamed`) when
  neither fits: the rows cached once (memory or a temporary file), top eigenvalues by randomised block
  Krylov, the bulk by stochastic Lanczos quadrature, the trace exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from funnelscope.data import read_data
from funnelscope.errors import FunnelscopeInputError
from funnelscope.memory import default_budget, parse_memory
from funnelscope.models.evaluation import evaluating
from funnelscope.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SEED,
    check_bool,
    check_choice,
    check_int,
    make_generator,
    resolve_device,
)
from funnelscope.probes import jacobian_sketch
from funnelscope.probes.jacobian_gram import GramSolution, JacobianRows, solve_dual, solve_primal
from funnelscope.probes.jacobian_routes import RoutePlan, Shape, choose_route, plan_routes
from funnelscope.probes.jacobian_streamed import solve_streamed
from funnelscope.probes.result import ProbeResult
from funnelscope.progress import progress_bar
from funnelscope.spectra.lanczos import SpectralDensity
from funnelscope.spectra.metrics import esd_metrics
from funnelscope.spectra.powerlaw import PowerLawFit, fit_powerlaw

__all__ = ["SUMMARY_KEYS", "JacobianSpectrum", "jacobian_spectrum"]

OUTPUTS = ("probs", "logits", "log_probs")
METHODS = ("exact", "sketch", "auto")
SOLVERS = ("auto", "dense", "primal", "dual", "streamed")
WRT = ("inputs", "params")
SUMMARY_KEYS = ("n", "k", "d", "method", "lambda_max", "trace", "alpha", "xmin", "D", "stable_rank",
                "effective_rank", "matrix_rank", "offdiag_ratio", "diagonal_alpha", "accuracy",
                "spearman_confidence", "spearman_p_value", "mean_diagonal_correct", "mean_diagonal_incorrect",
                "auroc_incorrect", "max_memory", "predicted_peak_bytes", "approximate", "lambda_max_error",
                "alpha_error", "effective_rank_error", "offdiag_ratio_error")

DEFAULT_PROBES = 32
AUTO_SKETCH_ABOVE_K = 64  # method="auto": output probes when k > 64
AUTO_PROJECT_ABOVE_D = 16384  # method="sketch"/"auto": CountSketch the input side when d > 16384 …
AUTO_PROJECT_DIM = 1024  # … to 1024 coordinates
APPROXIMATE = "lambda_max,eigenvalues,alpha,xmin,D,stable_rank,effective_rank,offdiag_ratio"  # streamed


@dataclass(frozen=True, eq=False)
class JacobianSpectrum(ProbeResult):
    """The Jacobian Gram's spectrum and per-example quantities, all computed when the probe ran.

    ``save()`` writes ``examples`` (:meth:`to_frame`), ``eigenvalues``, ``per_class`` (with labels),
    ``summary.json`` and, on request, the figure ``jacobian`` (ESD, diagonal, Gram cosine).

    Attributes
    ----------
    eigenvalues : ndarray of shape (n,)
        Eigenvalues of ``M``, descending (see ``method`` for how they were computed).
    diagonal : ndarray of shape (n,)
        ``M_ii = ‖J(x_i)‖_F²``, in input order.
    fit, diagonal_fit : PowerLawFit or None
        Power-law fits of the eigenvalues above ``zero_tolerance`` and of the positive diagonal entries;
        None when fewer than two distinct values are left.
    n, k, d : int
        Examples, outputs, and the dimension differentiated against (input size, or parameter count).
    method : str
        The route that ran, ``<rows>[+jl(p=…)]/<solver>``: rows ``exact`` or ``sketch(m=…)``, solver
        ``primal``, ``dual`` or ``lanczos``.
    output, wrt : str
        The options the probe ran with.
    zero_tolerance : float
        Eigenvalues at or below it are numerical zeros (see :func:`jacobian_spectrum`).
    frobenius_sq : float
        ``‖M‖_F² = Σ λ²``.
    predicted, confidence : ndarray of shape (n,)
        ``argmax`` and ``max`` of ``softmax(model(x_i))``.
    labels, loss : ndarray of shape (n,) or None
        Class labels and the per-example cross-entropy ``−log softmax(model(x_i))_{y_i}``.
    classes : ndarray or None
        The label values present, sorted; ``class_gram[a, b] = Σ_{i∈a, j∈b} M_ij``.
    gram : ndarray of shape (n, n) or None
        ``M`` itself, when ``keep_gram``.
    density : SpectralDensity or None
        The quadrature density, for the ``lanczos`` solver.
    metrics : dict
        The scalar summary (see :meth:`summary`).
    """

    eigenvalues: np.ndarray = field(repr=False)
    diagonal: np.ndarray = field(repr=False)
    fit: PowerLawFit | None
    diagonal_fit: PowerLawFit | None
    n: int
    k: int
    d: int
    method: str
    output: str
    wrt: str
    zero_tolerance: float
    frobenius_sq: float
    predicted: np.ndarray = field(repr=False)
    confidence: np.ndarray = field(repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    loss: np.ndarray | None = field(default=None, repr=False)
    classes: np.ndarray | None = field(default=None, repr=False)
    class_gram: np.ndarray | None = field(default=None, repr=False)
    gram: np.ndarray | None = field(default=None, repr=False)
    density: SpectralDensity | None = field(default=None, repr=False)
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)

    probe = "jacobian"

    def summary(self) -> dict[str, Any]:
        """Keys ``SUMMARY_KEYS``: ``n, k, d, method, lambda_max, trace, alpha, xmin, D, stable_rank,
        effective_rank, matrix_rank, offdiag_ratio, diagonal_alpha`` and those of
        :meth:`confidence_relation`.

        ``trace = Σ M_ii``; ``stable_rank = trace/λ_max``; ``effective_rank = exp(−Σ p log p)``, ``p = λ/Σλ``;
        ``matrix_rank = #{λ > zero_tolerance}`` (NaN for the streamed solver); ``offdiag_ratio =
        ‖M − diag M‖_F / ‖M‖_F`` (0: no correlation between examples; near 1: the correlations dominate);
        ``diagonal_alpha``: the power-law exponent of the diagonal ``M_ii`` (NaN when it cannot be fitted).

        The route: ``max_memory`` (the budget, bytes), ``predicted_peak_bytes`` (the chosen route's prediction),
        ``approximate`` (the quantities that are estimates: empty for the exact routes; for the streamed route
        everything of the spectrum, while the trace, the diagonal, the class sums and the confidence relation
        are exact on every route) and error estimates ``lambda_max_error`` (the Ritz error bound, absolute),
        ``alpha_error``, ``effective_rank_error``, ``offdiag_ratio_error`` (jackknife over the quadrature
        probes), all 0 for the exact routes.
        """
        summary = dict(self.metrics)
        summary["diagonal_alpha"] = self.diagonal_fit.alpha if self.diagonal_fit is not None else np.nan
        summary.update(self.confidence_relation())
        return {key: summary[key] for key in SUMMARY_KEYS}

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = {"examples": self.to_frame(), "eigenvalues": pd.DataFrame({"eigenvalue": self.eigenvalues})}
        if self.labels is not None:
            tables["per_class"] = self.per_class()
        return tables

    def figures(self, title: str | None = None) -> dict[str, Any]:
        from funnelscope.report.jacobian_plots import plot_jacobian

        return {"jacobian": plot_jacobian(self, title=title or "")}

    def comparison_figure(self, results: Any) -> Any:
        from funnelscope.report.jacobian_plots import plot_jacobian_comparison

        return plot_jacobian_comparison(dict(results))

    def to_frame(self) -> pd.DataFrame:
        """One row per example, in input order: ``index, diagonal, label, predicted, confidence, correct,
        loss`` (``label``, ``correct`` and ``loss`` missing without labels)."""
        labels = pd.array(self.labels if self.labels is not None else [pd.NA] * self.n, dtype="Int64")
        correct = pd.array(self.predicted == self.labels if self.labels is not None else [pd.NA] * self.n,
                           dtype="boolean")
        return pd.DataFrame({
            "index": np.arange(self.n),
            "diagonal": self.diagonal,
            "label": labels,
            "predicted": self.predicted,
            "confidence": self.confidence,
            "correct": correct,
            "loss": self.loss if self.loss is not None else np.full(self.n, np.nan),
        })

    def per_class(self) -> pd.DataFrame:
        """One row per label class: ``class, count, mean_diagonal, mean_within, mean_between, accuracy,
        mean_confidence``.

        ``mean_within`` is the mean of ``M_ij`` over pairs ``i ≠ j`` of the class, ``mean_between`` over
        ``i`` in the class and ``j`` outside it; both from ``class_gram`` (``Σ_{i∈a,j∈b} M_ij =
        S_a·S_b`` with ``S_a = Σ_{i∈a} vec J(x_i)``), so they need no ``n × n`` matrix.
        """
        if self.labels is None or self.classes is None or self.class_gram is None:
            raise FunnelscopeInputError("per_class() needs labels: pass data as (x, y) to jacobian_spectrum")
        rows = []
        for a, cls in enumerate(self.classes):
            members = self.labels == cls
            count = int(members.sum())
            diagonal_sum = float(self.diagonal[members].sum())
            within = (self.class_gram[a, a] - diagonal_sum) / (count * (count - 1)) if count > 1 else np.nan
            outside = self.n - count
            between = (self.class_gram[a].sum() - self.class_gram[a, a]) / (count * outside) if outside else np.nan
            rows.append({
                "class": int(cls),
                "count": count,
                "mean_diagonal": diagonal_sum / count,
                "mean_within": float(within),
                "mean_between": float(between),
                "accuracy": float(np.mean(self.predicted[members] == cls)),
                "mean_confidence": float(self.confidence[members].mean()),
            })
        return pd.DataFrame(rows)

    def confidence_relation(self) -> dict[str, float]:
        """How ``M_ii`` goes with confidence and correctness.

        Keys: ``spearman_confidence`` and ``spearman_p_value`` (Spearman's ρ of ``M_ii`` with ``max softmax``);
        with labels ``accuracy``, ``mean_diagonal_correct``, ``mean_diagonal_incorrect`` and
        ``auroc_incorrect``, the area under the ROC curve of ``M_ii`` as a score for "misclassified"
        (0.5: no information; NaN without labels or when one group is empty).
        """
        from scipy.stats import mannwhitneyu, spearmanr

        varied = self.n > 2 and np.ptp(self.diagonal) > 0 and np.ptp(self.confidence) > 0
        rho, p_value = spearmanr(self.diagonal, self.confidence) if varied else (np.nan, np.nan)
        result = {"spearman_confidence": float(rho), "spearman_p_value": float(p_value), "accuracy": np.nan,
                  "mean_diagonal_correct": np.nan, "mean_diagonal_incorrect": np.nan, "auroc_incorrect": np.nan}
        if self.labels is None:
            return result
        correct = self.predicted == self.labels
        result["accuracy"] = float(correct.mean())
        if correct.any():
            result["mean_diagonal_correct"] = float(self.diagonal[correct].mean())
        if (~correct).any():
            result["mean_diagonal_incorrect"] = float(self.diagonal[~correct].mean())
        if correct.any() and (~correct).any():
            u = mannwhitneyu(self.diagonal[~correct], self.diagonal[correct]).statistic
            result["auroc_incorrect"] = float(u / (correct.sum() * (~correct).sum()))
        return result


def jacobian_spectrum(
    model: nn.Module,
    data: Any,
    *,
    output: str = "probs",
    method: str = "exact",
    probes: int | None = None,
    project: int | None = None,
    solver: str = "auto",
    max_memory: int | str = "auto",
    wrt: str = "inputs",
    keep_gram: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    seed: int | None = DEFAULT_SEED,
    progress: bool = False,
) -> JacobianSpectrum:
    """The ESD of the data Gram ``M_ij = vec J(x_i) · vec J(x_j)`` of a model's output Jacobians.

    Parameters
    ----------
    model : nn.Module
        Returns logits of shape (batch, k) (or an object with a ``.logits`` tensor). It runs in eval mode
        (BatchNorm on running statistics, no dropout) and its previous mode is restored afterwards, also on
        error; no parameter's ``.grad`` is touched. It must not mix examples in eval mode (the sum trick).
    data : Tensor, ndarray, (x, y), LabelledData, Dataset or DataLoader
        ``n`` examples (:func:`funnelscope.data.read_data`), read once in order and kept on the CPU. Targets
        ``y``, when given, are class labels (integers in ``[0, k)``): they enable ``correct``/``loss``,
        :meth:`~JacobianSpectrum.per_class` and the correctness part of
        :meth:`~JacobianSpectrum.confidence_relation`. Pass the inputs alone to leave them out.
    output : {"probs", "logits", "log_probs"}
        ``f = softmax(logits)``, the logits, or ``log_softmax(logits)``.
    method : {"exact", "sketch", "auto"}
        Rows from the ``k`` classes (exact), or from ``probes`` Rademacher output probes (unbiased sketch);
        ``auto``: exact when ``k ≤ 64``, else the sketch. Probes are never used when they are not fewer than
        the exact directions (``k``, ``k − 1`` for probabilities): exact rows are then cheaper and exact
        (``method="sketch"`` is an error there).
    probes : int, optional
        Output probes ``m`` of the sketch (default 32); only with ``method="sketch"`` or ``"auto"``.
    seed : int or None, default 0
        Seed of the probes, the projection and the Lanczos start vectors (None: fresh randomness).
    batch_size : int, default 256
        Examples per forward pass; the result does not depend on it.
    device : torch device, optional
        Where to compute (default: where the model's parameters are; the model is moved there and back).
    keep_gram : bool
        Keep ``M`` (n × n float64) in the result; forces the primal dense solver.
    wrt : {"inputs", "params"}
        Differentiate with respect to the inputs, or to the trainable parameters: then ``M`` is the empirical
        neural tangent kernel Gram ``Σ_c ∇_θ f_c(x_i)·∇_θ f_c(x_j)`` (per-example gradients by
        ``torch.func.vmap``; integer inputs such as token ids are allowed).
    project : int, optional
        CountSketch the ``d`` side of every row to ``project`` coordinates (unbiased: ``E[M̂] = M``). Default:
        none for ``method="exact"``; for ``sketch``/``auto``, 1024 coordinates when ``d > 16384``.
    solver : {"auto", "dense", "primal", "dual", "streamed"}
        ``primal``/``dual``: exact float64 eigen-solve of ``M`` (n × n) or ``ΦᵀΦ`` (r × r); ``dense``: the one
        of them predicted cheaper; ``streamed``: rows cached once, top eigenvalues by block Krylov, the bulk by
        quadrature (:mod:`funnelscope.probes.jacobian_streamed`). ``auto``: the exact route of least
        predicted cost that fits ``max_memory``, else the streamed one.
    max_memory : int or str, default "auto"
        The memory budget of the route on the compute device: bytes, or a size such as ``"4GiB"`` or
        ``"500MB"``. ``"auto"``: half of the device's available memory (:func:`funnelscope.memory.default_budget`:
        ``MemAvailable`` of ``/proc/meminfo``, or CUDA's free memory). Every route predicts its peak before it
        starts; a route that does not fit is not taken, and a budget that none fits is an error naming the
        smallest that would.
    progress : bool
        Progress bars on stderr: the backward passes, then (streamed route) the passes over the cached rows.

    Returns
    -------
    JacobianSpectrum

    Raises
    ------
    FunnelscopeInputError
        Unknown or out-of-range options, an empty data set, non-finite inputs, inputs the model rejects,
        an output that is not a floating (n, k) tensor, one output with ``probs``/``log_probs``, labels that
        are not class indices.

    Notes
    -----
    Rows ``g_{iu} = J(x_i)ᵀu`` for the directions ``u`` give ``M = Σ_u G_u G_uᵀ`` whenever
    ``Σ_u u uᵀ`` is the identity on the span of ``J``'s columns: the ``k`` unit vectors; for
    ``output="probs"`` an orthonormal basis of the ``k − 1`` dimensional ``𝟙⊥`` (softmax outputs sum to 1,
    so ``𝟙ᵀJ = 0``: one backward pass and ``d`` columns fewer, the same ``M``); or, in expectation, ``m``
    Rademacher probes ``v/√m``. With ``q`` directions and ``r = q·d'`` feature columns (``d' = project`` or ``d``):

    * primal: each pass over the data keeps the rows of as many directions as the budget allows, and
      ``M += G Gᵀ`` is accumulated in float64 on and below the diagonal (row blocks: ``dsyrk`` and matrix
      products), mirrored in place and solved in place. Peak: ``8n²`` bytes (``16n²`` with ``keep_gram``) +
      the rows of a pass + one batch's activations. On the CPU the row buffer is float64 (rows are converted
      as they are copied in, and the products read the buffer in place); on an accelerator it has the model's
      dtype.
    * dual: one pass; ``ΦᵀΦ`` accumulated batch by batch: ``8r²`` bytes, plus ``8·L·r`` for the class sums of
      ``L`` label classes and ``8·b·r`` for a batch; ``M_ii`` are the rows' squared norms.
    * streamed: one pass storing ``Φ`` (``n·r·s`` bytes: on the device, in host memory, else in a temporary
      file read back in blocks), then block Krylov and quadrature products
      (:mod:`funnelscope.probes.jacobian_streamed`, which documents how α and the ranks are obtained).
      ``matrix_rank`` is NaN there.

    The route and the row count ``q`` (``k`` or ``m``) set the cost: ``q`` backward passes over the data,
    ``n²·r/2`` (primal) or ``n·r²`` (dual) float64 multiply-adds and an eigen-solve of size ``n`` or ``r``,
    or ``4·n·r`` multiply-adds per streamed product column.

    The eigen-solve is float64. Eigenvalues at or below ``zero_tolerance = λ_max·N·max(ε₆₄, ε²)``, with
    ``N = max(n, r)`` and ``ε`` the machine epsilon of the rows' dtype, are numerical zeros: rounding the
    rows (``‖E‖_F ≤ ε‖𝒥‖_F ≤ ε√N·σ_max``) can lift a zero eigenvalue ``σ²`` to ``‖E‖₂² ≤ N·ε²·λ_max``, and
    the float64 eigen-solve resolves ``λ`` to about ``N·ε₆₄·λ_max``. (A float32 MLP on the digits data:
    eigenvalues agree with the float64 model's to ``1e-13·λ_max``, the structural zeros sit at
    ``~1e-14·λ_max``.) They are left out of ``matrix_rank`` and of the power-law fit (its ``min_value``):
    WeightWatcher's absolute ``1e-5`` would drop much of a softmax Jacobian's spectrum, whose eigenvalues are
    small numbers. The diagonal's fit keeps every positive ``M_ii`` (each is a sum of squares, accurate to
    its dtype).

    Examples
    --------
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    >>> spectrum = jacobian_spectrum(model, torch.randn(40, 5))  # inputs alone: no labels
    >>> summary = spectrum.summary()  # r = (k − 1)·d = 10 columns < n = 40: dual
    >>> summary["method"], spectrum.eigenvalues.shape, summary["matrix_rank"]  # softmax: rank (k − 1)·d
    ('exact/dual', (40,), 10)

    References
    ----------
    .. [1] R. Novak, Y. Bahri, D. A. Abolafia, J. Pennington, J. Sohl-Dickstein, "Sensitivity and
       generalization in neural networks: an empirical study", ICLR 2018 (input-Jacobian norms).
    .. [2] A. J. Ballard, R. Das, S. Martiniani, D. Mehta, L. Sagun, J. D. Stevenson, D. J. Wales, "Energy
       landscapes for machine learning", Phys. Chem. Chem. Phys. 19, 12585, 2017 (funneled landscapes).
    .. [3] M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
       smoothing splines", Comm. Statist. Simul. Comput. 18(3), 1989 (the output probes).
    .. [4] S. Ubaru, J. Chen, Y. Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature",
       SIAM J. Matrix Anal. Appl. 38(4), 2017 (the streamed route's bulk).
    .. [5] C. Musco, C. Musco, "Randomized block Krylov methods for stronger and faster approximate singular
       value decomposition", NeurIPS 2015 (the streamed route's top eigenvalues).
    """
    check_choice("output", output, OUTPUTS)
    check_choice("method", method, METHODS)
    check_choice("solver", solver, SOLVERS)
    check_choice("wrt", wrt, WRT)
    probes = check_int("probes", probes, optional=True)
    batch_size = check_int("batch_size", batch_size)
    project = check_int("project", project, optional=True)
    check_bool("progress", progress)
    budget = None if max_memory == "auto" else parse_memory(max_memory)
    if probes is not None and method == "exact":
        raise FunnelscopeInputError(f"probes={probes} applies to method='sketch' or 'auto', not 'exact'")
    if check_bool("keep_gram", keep_gram) and solver in ("dual", "streamed"):
        raise FunnelscopeInputError(f"keep_gram=True needs the primal solver, not solver={solver!r}")
    if not isinstance(model, nn.Module):
        raise FunnelscopeInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    generator = make_generator(seed)
    batches = read_data(data, batch_size=batch_size)
    x, targets = batches.inputs(), batches.targets()
    target = resolve_device(device, model)
    budget = default_budget(target) if budget is None else budget

    with evaluating(model, target):
        engine = JacobianRows(model, x, output=output, wrt=wrt, batch_size=batch_size, device=target)
        n, k, d = engine.n, engine.k, engine.dim
        engine.labels = _check_labels(targets, n, k) if targets is not None else None
        engine.keep_gram = keep_gram
        exact_count = k - 1 if output == "probs" else k
        m = probes or DEFAULT_PROBES
        if method == "sketch" and m >= exact_count:
            raise FunnelscopeInputError(f"probes={m} output probes are not fewer than the {exact_count} exact "
                                        "directions: use method='exact' (cheaper, and exact)")
        sketched = method == "sketch" or (method == "auto" and k > AUTO_SKETCH_ABOVE_K and m < exact_count)
        if sketched:
            directions, route = jacobian_sketch.output_probes(k, m, generator), f"sketch(m={m})"
        elif output == "probs":  # Σ_c f_c = 1, so 𝟙ᵀJ(x) = 0: k − 1 directions spanning 𝟙⊥ give the same M
            directions, route = _sum_zero_basis(k), "exact"
        else:
            directions, route = torch.eye(k, dtype=torch.float64), "exact"
        if project is None and sketched and d > AUTO_PROJECT_ABOVE_D:
            project = AUTO_PROJECT_DIM
        if project is not None:
            if project >= d:
                raise FunnelscopeInputError(f"project={project} must be smaller than d={d}")
            engine.sketch = jacobian_sketch.CountSketch(d, project, generator)
            route += f"+jl(p={project})"
        width = project or d
        r = len(directions) * width
        shape = Shape(n=n, q=len(directions), w=width, itemsize=torch.empty(0, dtype=engine.dtype).element_size(),
                      activations=engine.activation_bytes(), batch=engine.batch_size,
                      classes=0 if engine.labels is None else int(np.unique(engine.labels).size),
                      keep_gram=keep_gram, accelerator=target.type != "cpu")
        host = budget if target.type == "cpu" else default_budget("cpu")
        plan = choose_route(plan_routes(shape, budget, host_budget=host), solver, budget, shape=shape)
        directions = directions.to(target, engine.dtype)
        start_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        solved = _solve(engine, directions, width, plan, seed=start_seed, progress=progress)
    label = plan.solver if plan.exact else f"streamed({plan.cache})"
    return _result(engine, solved, method=f"{route}/{label}", output=output, wrt=wrt, r=r, keep_gram=keep_gram,
                   plan=plan, budget=budget)


def _solve(engine: JacobianRows, directions: torch.Tensor, width: int, plan: RoutePlan, *, seed: int,
           progress: bool) -> GramSolution:
    """Run the planned route, with its progress bars."""

    def bar(total: int, label: str) -> Any:
        return progress_bar(progress, total, label)

    if plan.solver == "streamed":
        return solve_streamed(engine, directions, width, plan, seed=seed, bar=bar)
    run = solve_primal if plan.solver == "primal" else solve_dual
    passes = -(-engine.n // engine.batch_size) * len(directions)
    with bar(passes, "Jacobian rows (backward passes)") as advance:
        engine.on_rows = advance
        return run(engine, directions, width, plan)


def _sum_zero_basis(k: int) -> torch.Tensor:
    """An orthonormal basis of ``𝟙⊥ ⊂ ℝᵏ`` as (k − 1) rows (Helmert): ``h_a = (1, …, 1, −a, 0, …)/√(a(a+1))``.

    For softmax outputs every column of ``J(x)`` is orthogonal to ``𝟙``, so with ``Π = HᵀH`` the projector
    on ``𝟙⊥``: ``M_ij = tr(J(x_i)ᵀ J(x_j)) = tr(J(x_i)ᵀ Π J(x_j)) = Σ_a (J(x_i)ᵀh_a)·(J(x_j)ᵀh_a)``.
    """
    basis = torch.zeros(k - 1, k, dtype=torch.float64)
    for a in range(1, k):
        basis[a - 1, :a] = 1.0
        basis[a - 1, a] = -float(a)
        basis[a - 1] /= math.sqrt(a * (a + 1))
    return basis


# --------------------------------------------------------------------------------------------------------
# Result


def _result(engine: JacobianRows, solved: GramSolution, *, method: str, output: str, wrt: str, r: int,
            keep_gram: bool, plan: RoutePlan, budget: int) -> JacobianSpectrum:
    values, diagonal = solved.eigenvalues, solved.diagonal
    lambda_max = float(values[0]) if values.size else 0.0
    N = max(engine.n, r)
    eps = float(torch.finfo(engine.dtype).eps)
    tolerance = lambda_max * N * max(float(np.finfo(np.float64).eps), eps**2)
    details = solved.details or {}
    tolerance = float(details.get("zero_tolerance", tolerance))
    fit = _fit(values, tolerance)
    diagonal_fit = _fit(diagonal, 0.0)
    trace = float(diagonal.sum())
    diagonal_sq = float(np.sum(diagonal**2))
    frobenius_sq = max(solved.frobenius_sq, diagonal_sq)
    positive = values[values > tolerance]
    effective_rank = esd_metrics(positive, N=N)["effective_rank"] if positive.size else np.nan
    offdiag = math.sqrt((frobenius_sq - diagonal_sq) / frobenius_sq) if frobenius_sq > 0 else np.nan
    errors = solved.errors or {}
    frobenius_error = errors.get("frobenius_sq", 0.0)
    # offdiag = √(1 − Σd²/F): d offdiag / dF = Σd² / (2 F² offdiag)
    offdiag_error = diagonal_sq * frobenius_error / (2 * frobenius_sq**2 * offdiag) if offdiag > 0 else np.nan
    metrics = {
        "n": engine.n,
        "k": engine.k,
        "d": engine.dim,
        "method": method,
        "lambda_max": lambda_max,
        "trace": trace,
        "alpha": fit.alpha if fit else np.nan,
        "xmin": fit.xmin if fit else np.nan,
        "D": fit.D if fit else np.nan,
        "stable_rank": trace / lambda_max if lambda_max > 0 else np.nan,
        "effective_rank": solved.effective_rank if solved.effective_rank is not None else effective_rank,
        "matrix_rank": int(positive.size) if solved.exact else np.nan,
        "offdiag_ratio": offdiag,
        "max_memory": int(budget),
        "predicted_peak_bytes": int(plan.peak_bytes),
        "approximate": _approximate(method, solved.exact),
        "lambda_max_error": errors.get("lambda_max", 0.0),
        "alpha_error": errors.get("alpha", 0.0),
        "effective_rank_error": errors.get("effective_rank", 0.0),
        "offdiag_ratio_error": offdiag_error if errors else 0.0,
        **{f"streamed_{key}": value for key, value in details.items() if key != "zero_tolerance"},
    }
    labels = engine.labels
    arrays = [values, diagonal, engine.predicted, engine.confidence]
    gram = solved.gram.cpu().numpy() if keep_gram and solved.gram is not None else None
    for array in (*arrays, labels, gram, solved.class_gram):
        if array is not None:
            array.setflags(write=False)
    return JacobianSpectrum(
        eigenvalues=values,
        diagonal=diagonal,
        fit=fit,
        diagonal_fit=diagonal_fit,
        n=engine.n,
        k=engine.k,
        d=engine.dim,
        method=method,
        output=output,
        wrt=wrt,
        zero_tolerance=tolerance,
        frobenius_sq=frobenius_sq,
        predicted=engine.predicted,
        confidence=engine.confidence,
        labels=labels,
        loss=engine.loss if labels is not None else None,
        classes=np.unique(labels) if labels is not None else None,
        class_gram=solved.class_gram,
        gram=gram,
        density=solved.density,
        metrics=metrics,
    )


def _approximate(method: str, exact: bool) -> str:
    """The summary's ``approximate``: what is an estimate (empty: nothing)."""
    rows = "" if method.startswith("exact/") else "M (sketched rows: every quantity)"
    return ", ".join(part for part in (rows, "" if exact else APPROXIMATE) if part)


def _fit(values: np.ndarray, min_value: float) -> PowerLawFit | None:
    kept = values[values > min_value]
    if kept.size < 2 or kept.min() == kept.max():
        return None
    return fit_powerlaw(kept, min_value=min_value)


# --------------------------------------------------------------------------------------------------------
# Inputs and options


def _check_labels(labels: Any, n: int, k: int) -> np.ndarray:
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise FunnelscopeInputError(f"labels (y) must be {n} class indices (one per example), got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise FunnelscopeInputError(f"labels (y) must be integer class indices, got dtype {arr.dtype} (pass the "
                                    "inputs alone to leave labels out)")
    if arr.size and (arr.min() < 0 or arr.max() >= k):
        raise FunnelscopeInputError(f"labels must be in [0, {k}) for a model with {k} outputs, "
                                    f"got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)




