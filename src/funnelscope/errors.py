"""Errors that mean "the user gave us something we cannot use", and the one line a message is shown as.

The command line turns a :class:`FunnelscopeInputError` into a one-line message and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["FunnelscopeInputError", "first_line"]


class FunnelscopeInputError(ValueError):
    """Bad input: a missing or corrupted file, an unusable model, non-finite weights, a bad option value."""


def first_line(error: BaseException) -> str:
    """One line of an exception's message, without a trailing period.

    The last ``…Error: …`` line of a multi-line message (a TorchScript traceback ends with the real error),
    else its first line, else the exception's type name.

    >>> first_line(ValueError("bad value.\\nmore detail"))
    'bad value'
    >>> first_line(RuntimeError("Traceback of TorchScript\\n  File x\\nRuntimeError: shapes differ"))
    'RuntimeError: shapes differ'
    >>> first_line(KeyError())
    'KeyError'
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    errors = [line for line in lines[1:] if line.split(":", 1)[0].endswith(("Error", "Exception"))]
    return (errors[-1] if errors else lines[0]).rstrip(".")
