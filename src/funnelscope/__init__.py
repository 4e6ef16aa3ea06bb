"""funnelscope: spectra of trained neural networks.

Weight ESDs and their power-law tails, the data Jacobian Gram, Hessian spectra and loss landscapes; studies
that train small models and run these probes (``run_study(get_study("labels"), out)``); a series of pretrained
models ranked by their spectra (``analyze_series(models, data, out=…)``); and their HTML report.
Importing the package configures nothing (no logging, no warnings filters, no pyplot) and imports no matplotlib.
"""

from funnelscope.data import LabelledData, read_data
from funnelscope.errors import FunnelscopeInputError
from funnelscope.models.sources import open_weights
from funnelscope.probes.hessian import HessianDensity, HessianSpectrum, hessian_spectrum
from funnelscope.probes.jacobian import JacobianSpectrum, jacobian_spectrum
from funnelscope.probes.landscape import LandscapeLine, LandscapePlane, landscape_line, landscape_plane
from funnelscope.probes.linearity import LayerLinearity, layer_linearity
from funnelscope.probes.result import ProbeResult, compare, save_comparison
from funnelscope.probes.weights import (
    LayerSpectrum,
    WeightsAnalysis,
    WeightsSummary,
    analyze_weights,
    summarize_weights,
    weight_spectra,
)
from funnelscope.report.html import write_report
from funnelscope.spectra.eigen import gram_eigenvalues
from funnelscope.spectra.marchenko_pastur import MarchenkoPasturFit, fit_marchenko_pastur
from funnelscope.spectra.phases import classify_phase
from funnelscope.spectra.powerlaw import PowerLawFit, fit_powerlaw
from funnelscope.studies.catalog import STUDIES, get_study
from funnelscope.studies.pretrained_series import SeriesResult, analyze_series
from funnelscope.studies.study import StudyResult, run_study

__all__ = [
    "STUDIES",
    "FunnelscopeInputError",
    "HessianDensity",
    "HessianSpectrum",
    "JacobianSpectrum",
    "LabelledData",
    "LandscapeLine",
    "LandscapePlane",
    "LayerLinearity",
    "LayerSpectrum",
    "MarchenkoPasturFit",
    "PowerLawFit",
    "ProbeResult",
    "SeriesResult",
    "StudyResult",
    "WeightsAnalysis",
    "WeightsSummary",
    "analyze_series",
    "analyze_weights",
    "classify_phase",
    "compare",
    "fit_marchenko_pastur",
    "fit_powerlaw",
    "get_study",
    "gram_eigenvalues",
    "hessian_spectrum",
    "jacobian_spectrum",
    "landscape_line",
    "landscape_plane",
    "layer_linearity",
    "open_weights",
    "read_data",
    "run_study",
    "save_comparison",
    "summarize_weights",
    "weight_spectra",
    "write_report",
]

__version__ = "0.1.0"
