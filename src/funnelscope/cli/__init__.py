"""The ``funnelscope`` command line: a thin view over the public API.

Each command parses its arguments, calls the API, prints the result's ``summary()`` and ``save()``-s it. Options
shared with the API take their defaults from the API's signatures (:func:`api_option`), so the help states
the defaults the library uses. A user mistake (a missing or corrupted file, an unusable model, a bad option)
prints one line naming the file and the problem and exits with code 2, without a traceback; ``--out`` is
checked before any computation and written only once everything succeeded.
"""

from funnelscope.cli import probes, series, studies  # noqa: F401  (registers the commands)
from funnelscope.cli.common import app

main = app  # the ``funnelscope`` console script

__all__ = ["app", "main"]
