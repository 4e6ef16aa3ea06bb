"""Per-ESD metrics (``docs/quantities.md#per-esd-metrics``), under WeightWatcher's column names where they exist.

For eigenvalues ``λ_1 ≤ … ≤ λ_M`` of a layer (``λ = σ²``, pooled over slices for convolutions):

==================  ==================================================================================
column              definition
==================  ==================================================================================
norm                ``Σ λ = ‖W‖_F²``;  ``log_norm = log₁₀ Σ λ``
spectral_norm       ``λ_max = ‖W‖₂²``;  ``log_spectral_norm = log₁₀ λ_max``
stable_rank         ``Σ λ / λ_max``
matrix_rank         ``#{σ > σ_max · N · ε}`` (numpy's rule on σ, ε of float64) when the eigenvalues come from an
                    SVD; from a float64 Gram, whose rounding noise is ~1e-16·λ_max, ``#{λ > λ_max · M · ε}``
                    (numpy's rule on the Gram). ``rank_loss = num_evals − matrix_rank``
weak_rank_loss      ``#{λ < 1e-6}``
entropy             WeightWatcher's spectral entropy ``−Σ p log p / log(rank)``, ``p = λ/Σλ + 1e-10``
effective_rank      ``exp(−Σ p log p)`` with ``p = λ/Σλ`` (Roy & Vetterli, EUSIPCO 2007)
alpha …             from the power-law fit: alpha, xmin, xmax, D, sigma, ``num_pl_spikes = #{λ ≥ xmin}``
alpha_weighted      ``α̂ = α · log₁₀ λ_max`` (Martin, Peng & Mahoney, Nature Comm. 12, 4122, 2021)
log_alpha_norm      ``log₁₀ Σ λ^α``
warning             ``over-trained`` if α < 2, ``under-trained`` if α > 6, else empty
==================  ==================================================================================
"""

from __future__ import annotations

import numpy as np

from funnelscope.spectra.powerlaw import PowerLawFit

__all__ = ["ALPHA_OVER_TRAINED", "ALPHA_UNDER_TRAINED", "esd_metrics", "training_warning"]

ALPHA_OVER_TRAINED = 2.0
ALPHA_UNDER_TRAINED = 6.0
_WEAK_RANK_TOLERANCE = 1e-6
_ENTROPY_EPSILON = 1e-10  # WeightWatcher's EPSILON, kept so that `entropy` matches it


def esd_metrics(
    eigenvalues: np.ndarray, *, N: int, M: int | None = None, fit: PowerLawFit | None = None, from_gram: bool = True
) -> dict[str, float]:
    """Norms, ranks, entropies and (given a fit) the power-law metrics of one ESD.

    Parameters
    ----------
    eigenvalues : array of shape (num_evals,)
        ``λ = σ²`` of the layer, non-negative.
    N, M : int
        The larger and smaller dimensions of the layer's matrices (they set the rank tolerance); ``M``
        defaults to the number of eigenvalues.
    fit : PowerLawFit, optional
        The tail fit; without it the fit columns are left out.
    from_gram : bool, default True
        The eigenvalues come from a float64 Gram (the default route), not an SVD: see ``matrix_rank``.

    Returns
    -------
    dict
        Column name → value, see the module docstring.
    """
    evals = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    total = float(evals.sum())
    lambda_max = float(evals[-1])
    singular_values = np.sqrt(evals)
    eps = np.finfo(np.float64).eps
    if from_gram:
        rank = int(np.count_nonzero(evals > lambda_max * (M or len(evals)) * eps))
    else:
        rank = int(np.count_nonzero(singular_values > singular_values[-1] * N * eps))
    metrics: dict[str, float] = {
        "num_evals": len(evals),
        "lambda_max": lambda_max,
        "lambda_min": float(evals[0]),
        "sv_max": float(singular_values[-1]),
        "sv_min": float(singular_values[0]),
        "norm": total,
        "log_norm": _log10(total),
        "spectral_norm": lambda_max,
        "log_spectral_norm": _log10(lambda_max),
        "stable_rank": total / lambda_max if lambda_max > 0 else np.nan,
        "matrix_rank": rank,
        "rank_loss": len(evals) - rank,
        "weak_rank_loss": int(np.count_nonzero(evals < _WEAK_RANK_TOLERANCE)),
        "entropy": _weightwatcher_entropy(evals, total, rank),
        "effective_rank": _effective_rank(evals, total),
    }
    if fit is not None:
        metrics.update(
            alpha=fit.alpha,
            xmin=fit.xmin,
            xmax=fit.xmax,
            D=fit.D,
            sigma=fit.sigma,
            num_pl_spikes=int(np.count_nonzero(evals >= fit.xmin)),
            alpha_weighted=fit.alpha * _log10(lambda_max),
            log_alpha_norm=_log10(float(np.sum(evals**fit.alpha))),
            warning=training_warning(fit.alpha),
        )
    return metrics


def training_warning(alpha: float) -> str:
    """WeightWatcher's flag: ``over-trained`` below α = 2, ``under-trained`` above α = 6."""
    if alpha < ALPHA_OVER_TRAINED:
        return "over-trained"
    if alpha > ALPHA_UNDER_TRAINED:
        return "under-trained"
    return ""


def _log10(value: float) -> float:
    return float(np.log10(value)) if value > 0 else -np.inf


def _weightwatcher_entropy(evals: np.ndarray, total: float, rank: int) -> float:
    if total <= 0 or rank <= 1:
        return np.nan
    p = evals / total + _ENTROPY_EPSILON
    return float(-np.sum(p * np.log(p)) / np.log(rank + _ENTROPY_EPSILON))


def _effective_rank(evals: np.ndarray, total: float) -> float:
    if total <= 0:
        return 0.0
    p = evals[evals > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))
