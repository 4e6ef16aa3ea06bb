"""Errors that mean "the user gave us something we cannot use".

The command line turns a :class:`FunnelscopeInputError` into a one-line message and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["FunnelscopeInputError"]


class FunnelscopeInputError(ValueError):
    """Bad input: a missing or corrupted file, an unusable model, non-finite weights, a bad option value."""
