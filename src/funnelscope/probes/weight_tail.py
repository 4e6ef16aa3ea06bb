"""The tail options of the weights probe: which power-law fit each layer gets, and the columns it adds.

``analyze_weights(fit=…, fix_fingers=…, detX=…)`` under WeightWatcher 0.7.7's names:

===============================  =====================================================================================
option                           per layer
===============================  =====================================================================================
``fit="PL"`` (default)           the power-law tail of :func:`~funnelscope.spectra.powerlaw.fit_powerlaw`
``fix_fingers="xmin_peak"``      :math:`x_{\\min}` capped near the ESD's peak (``xmin_max``), see
                                 :mod:`funnelscope.spectra.fingers`
``fix_fingers="clip_xmax"``      the largest eigenvalues clipped while that lowers α by more than ``finger_thresh``
                                 (up to ``max_fingers``); columns ``num_fingers``, ``raw_alpha``
``fit="TPL"``                    ``alpha`` and ``Lambda`` of the truncated power law
                                 :math:`p(\\lambda) \\propto \\lambda^{-\\alpha} e^{-\\Lambda\\lambda}`
                                 (:mod:`funnelscope.spectra.truncated_powerlaw`), its ``xmin`` chosen by its own KS
                                 distance and ``D``, ``sigma`` its own; ``pl_alpha`` (the power law on the same
                                 tail), ``tpl_R``, ``tpl_p`` (the nested likelihood-ratio test against it)
``fit="E_TPL"``                  the truncated power law with its ``xmin`` in the ``xmin_peak`` range
                                 (WeightWatcher's "extended" TPL)
``tpl_optimizer="nelder-mead"``  the TPL fits by powerlaw's Nelder–Mead (WeightWatcher's numbers, often stopped
                                 near α = 1 below the likelihood's maximum) instead of the exact maximum
``detX=True``                    ``detX_num``, ``detX_val``, ``ERG_gap`` (:mod:`funnelscope.spectra.detx`)
===============================  =====================================================================================

``alpha_weighted``, ``log_alpha_norm`` and ``warning`` follow the reported ``alpha``, as in WeightWatcher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from funnelscope.errors import FunnelscopeInputError
from funnelscope.spectra.detx import detx_constraint
from funnelscope.spectra.fingers import FIX_FINGERS, fit_clipped_powerlaw, fit_xmin_peak, xmin_peak_bounds
from funnelscope.spectra.metrics import training_warning
from funnelscope.spectra.powerlaw import PowerLawFit, fit_powerlaw
from funnelscope.spectra.truncated_powerlaw import fit_truncated_powerlaw

__all__ = ["FITS", "TPL_OPTIMIZERS", "TailOptions", "fit_tail", "tail_options"]

FITS = ("PL", "TPL", "E_TPL")
TPL_OPTIMIZERS = ("exact", "nelder-mead")
DEFAULT_MAX_FINGERS = 10
DEFAULT_FINGER_THRESH = 1.0


@dataclass(frozen=True)
class TailOptions:
    """Validated tail options (build them with :func:`tail_options`)."""

    fit: str = "PL"
    fix_fingers: str | None = None
    xmin_max: float | None = None
    max_fingers: int = DEFAULT_MAX_FINGERS
    finger_thresh: float = DEFAULT_FINGER_THRESH
    detX: bool = False
    xmin: float | None = None
    xmax: float | None = None
    tpl_optimizer: str = "exact"


def tail_options(
    *,
    fit: str = "PL",
    fix_fingers: str | None = None,
    xmin_max: float | None = None,
    max_fingers: int | None = None,
    finger_thresh: float | None = None,
    detX: bool = False,
    xmin: float | None = None,
    xmax: float | None = None,
    tpl_optimizer: str = "exact",
) -> TailOptions:
    """Check the tail options of ``analyze_weights`` and combine them (``E_TPL`` implies ``xmin_peak``).

    Raises
    ------
    FunnelscopeInputError
        An unknown ``fit`` or ``fix_fingers``; a finger option without its ``fix_fingers`` mode (it would be
        ignored); ``fix_fingers`` with a fixed ``xmin``/``xmax``; ``fit="E_TPL"`` with ``clip_xmax`` (as in
        WeightWatcher) and ``fit="TPL"`` with ``clip_xmax`` (WeightWatcher clips the fingers by a power-law
        refit and reads the TPL off the clipped data: not supported here); a value out of range.
    """
    if fit not in FITS:
        raise FunnelscopeInputError(f"fit={fit!r} must be one of {', '.join(map(repr, FITS))}")
    if tpl_optimizer not in TPL_OPTIMIZERS:
        raise FunnelscopeInputError(f"tpl_optimizer={tpl_optimizer!r} must be one of "
                                    f"{', '.join(map(repr, TPL_OPTIMIZERS))}")
    if tpl_optimizer != "exact" and fit == "PL":
        raise FunnelscopeInputError(f"tpl_optimizer={tpl_optimizer!r} fits the truncated power law: it needs "
                                    "fit='TPL' or fit='E_TPL'")
    if fix_fingers is not None and fix_fingers not in FIX_FINGERS:
        raise FunnelscopeInputError(f"fix_fingers={fix_fingers!r} must be None, 'xmin_peak' or 'clip_xmax'")
    if fit == "E_TPL":
        if fix_fingers == "clip_xmax":
            raise FunnelscopeInputError("fit='E_TPL' is the TPL with fix_fingers='xmin_peak': not with 'clip_xmax'")
        fix_fingers = "xmin_peak"
    if fit == "TPL" and fix_fingers == "clip_xmax":
        raise FunnelscopeInputError("fix_fingers='clip_xmax' refits the power law; for the truncated power law use "
                                    "fix_fingers='xmin_peak' (or fit='E_TPL')")
    if not isinstance(detX, (bool, np.bool_)):
        raise FunnelscopeInputError(f"detX={detX!r} must be a bool")
    if fit != "PL" and (xmin is not None or xmax is not None):
        raise FunnelscopeInputError(f"fit={fit!r} chooses xmin itself: leave xmin={xmin!r}, xmax={xmax!r} unset")
    if fix_fingers is not None and (xmin is not None or xmax is not None):
        raise FunnelscopeInputError(
            f"fix_fingers={fix_fingers!r} chooses xmin and xmax itself: leave xmin={xmin!r}, xmax={xmax!r} unset"
        )
    if xmin_max is not None:
        if fix_fingers != "xmin_peak":
            raise FunnelscopeInputError(f"xmin_max={xmin_max!r} needs fix_fingers='xmin_peak' (or fit='E_TPL')")
        if isinstance(xmin_max, bool) or not isinstance(xmin_max, (int, float)) or not 0 < xmin_max < math.inf:
            raise FunnelscopeInputError(f"xmin_max={xmin_max!r} must be a finite number > 0")
    for name, value in (("max_fingers", max_fingers), ("finger_thresh", finger_thresh)):
        if value is not None and fix_fingers != "clip_xmax":
            raise FunnelscopeInputError(f"{name}={value!r} needs fix_fingers='clip_xmax'")
    if max_fingers is not None and (isinstance(max_fingers, bool) or not isinstance(max_fingers, (int, np.integer))
                                    or max_fingers < 1):
        raise FunnelscopeInputError(f"max_fingers={max_fingers!r} must be an integer >= 1")
    if finger_thresh is not None and (isinstance(finger_thresh, bool) or not isinstance(finger_thresh, (int, float))
                                      or not 0 <= finger_thresh < math.inf):
        raise FunnelscopeInputError(f"finger_thresh={finger_thresh!r} must be a finite number >= 0")
    return TailOptions(
        fit=fit,
        fix_fingers=fix_fingers,
        xmin_max=None if xmin_max is None else float(xmin_max),
        max_fingers=DEFAULT_MAX_FINGERS if max_fingers is None else int(max_fingers),
        finger_thresh=DEFAULT_FINGER_THRESH if finger_thresh is None else float(finger_thresh),
        detX=bool(detX),
        xmin=xmin,
        xmax=xmax,
        tpl_optimizer=tpl_optimizer,
    )


def fit_tail(eigenvalues: np.ndarray, options: TailOptions) -> tuple[PowerLawFit, dict[str, object]]:
    """The power-law fit that defines a layer's tail under ``options``, and the columns the options add.

    Returns
    -------
    fit : PowerLawFit
        The power law whose ``xmin`` defines the tail (``num_pl_spikes``, ``D``, ``sigma`` come from it).
    columns : dict
        ``num_fingers``, ``raw_alpha`` (``clip_xmax``); ``alpha``, ``Lambda``, ``pl_alpha``, ``tpl_R``, ``tpl_p``
        and the α-derived ``alpha_weighted``, ``log_alpha_norm``, ``warning`` (TPL fits); the ``detX`` columns.

    Raises
    ------
    FunnelscopeInputError
        The fit is impossible (too few values); the layer is then reported as failed.
    """
    columns: dict[str, object] = {}
    if options.fit != "PL":
        fit, columns = _truncated_fit(eigenvalues, options)
    elif options.fix_fingers == "clip_xmax":
        clipped = fit_clipped_powerlaw(eigenvalues, max_fingers=options.max_fingers,
                                       finger_thresh=options.finger_thresh)
        fit = clipped.fit
        columns.update(num_fingers=clipped.num_fingers, raw_alpha=clipped.raw_fit.alpha)
    elif options.fix_fingers == "xmin_peak":
        fit = fit_xmin_peak(eigenvalues, xmin_max=options.xmin_max)
    else:
        fit = fit_powerlaw(eigenvalues, xmin=options.xmin, xmax=options.xmax)
    if options.detX:
        detx = detx_constraint(eigenvalues)
        num_pl_spikes = int(np.count_nonzero(np.asarray(eigenvalues) >= fit.xmin))
        columns.update(detX_num=detx.num, detX_val=detx.value, ERG_gap=detx.num - num_pl_spikes)
    return fit, columns


def _truncated_fit(eigenvalues: np.ndarray, options: TailOptions) -> tuple[PowerLawFit, dict[str, object]]:
    """The truncated power law (``fit="TPL"``/``"E_TPL"``) and the power law on its tail.

    The TPL's ``xmin`` is chosen by its own KS distance, over every eigenvalue (``TPL``) or over the
    ``xmin_peak`` range (``E_TPL``), as WeightWatcher does through ``powerlaw``; ``alpha`` is bounded below by 1
    (``powerlaw``'s range). The power law on the same tail gives ``pl_alpha`` and the nested likelihood-ratio
    test (:meth:`~funnelscope.spectra.powerlaw.PowerLawFit.compare`, CSN's test, whose truncated power law is not
    bounded): ``tpl_R`` (< 0 favours the truncated law) and ``tpl_p``.
    """
    window = xmin_peak_bounds(eigenvalues, xmin_max=options.xmin_max) if options.fix_fingers == "xmin_peak" else None
    tpl = fit_truncated_powerlaw(eigenvalues, xmin=window, optimizer=options.tpl_optimizer)
    fit = fit_powerlaw(eigenvalues, xmin=(tpl.xmin, tpl.xmin))
    test = fit.compare("truncated_power_law")
    columns = alpha_columns(eigenvalues, tpl.alpha)
    columns.update(Lambda=tpl.Lambda, D=tpl.D, sigma=tpl.sigma, pl_alpha=fit.alpha, tpl_R=test.R,
                   tpl_p=test.p_value)
    return fit, columns


def alpha_columns(eigenvalues: np.ndarray, alpha: float) -> dict[str, object]:
    """``alpha`` and what WeightWatcher derives from it: ``alpha_weighted = α log₁₀ λ_max``,
    ``log_alpha_norm = log₁₀ Σ λ^α``, ``warning``."""
    values = np.asarray(eigenvalues, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        return {
            "alpha": float(alpha),
            "alpha_weighted": float(alpha * np.log10(values.max())),
            "log_alpha_norm": float(np.log10(np.sum(values**alpha))),
            "warning": training_warning(alpha),
        }
