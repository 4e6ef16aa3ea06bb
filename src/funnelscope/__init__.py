"""funnelscope: spectra of trained neural networks.

Weight ESDs and their power-law tails, the data Jacobian Gram, Hessian spectra and loss landscapes.
Importing the package configures nothing (no logging, no warnings filters, no pyplot).
"""

from funnelscope.errors import FunnelscopeInputError
from funnelscope.spectra.powerlaw import PowerLawFit, fit_powerlaw

__all__ = [
    "FunnelscopeInputError",
    "PowerLawFit",
    "fit_powerlaw",
]

__version__ = "0.1.0"
