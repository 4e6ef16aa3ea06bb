"""The one progress bar of the library: rich on a terminal, plain lines when stderr is a file or a pipe.

Every long computation (layers, Jacobian passes, Hessian–vector products, grid points, training runs) reports
through :func:`progress_bar`. On a terminal it is a transient rich bar; where stderr is not a terminal (a log
file, CI, a notebook's captured stream) rich draws nothing, so progress is printed as a plain line about
every tenth of the work instead, once the work has run for :data:`PLAIN_AFTER_SECONDS` (a quick call stays
quiet, a 20-minute call is never silent).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Advance", "note", "progress_bar"]

Advance = Callable[..., None]
PLAIN_STEPS = 10  # plain-text mode: a line about every 1/10 of the total …
PLAIN_AFTER_SECONDS = 5.0  # … once the work has run this long


@contextmanager
def progress_bar(enabled: bool, total: int, label: str, *, completed: int = 0,
                 transient: bool = True) -> Iterator[Advance]:
    """A progress bar on stderr when ``enabled`` (else a no-op); yields ``advance(steps=1, note="")``.

    Parameters
    ----------
    enabled : bool
    total : int
        Units of work (layers, passes, products, points, runs).
    label : str
        What is counted, shown before the bar.
    completed : int
        Units already done (a resumed study).
    transient : bool
        Remove the bar when done (terminal only).
    """
    if not enabled:
        yield lambda steps=1, note="": None
        return
    stream = sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        yield _plain(stream, total, label, completed)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[note]}"), console=Console(stderr=True), transient=transient)
    task = bar.add_task(label, total=total, completed=completed, note="")
    bar.start()
    try:
        yield lambda steps=1, note="": bar.update(task, advance=steps, note=note)
    finally:
        bar.stop()


def note(enabled: bool, text: str) -> None:
    """One line on stderr beside the progress (what was read, what was assumed) when ``enabled``."""
    if enabled:
        print(text, file=sys.stderr, flush=True)


def _plain(stream, total: int, label: str, completed: int) -> Advance:
    start = time.perf_counter()
    state = {"done": completed, "next": completed + max(1, total // PLAIN_STEPS)}

    def advance(steps: int = 1, note: str = "") -> None:
        state["done"] += steps
        elapsed = time.perf_counter() - start
        if elapsed >= PLAIN_AFTER_SECONDS and (state["done"] >= state["next"] or state["done"] >= total):
            state["next"] = state["done"] + max(1, total // PLAIN_STEPS)
            extra = f" {note}" if note else ""
            print(f"{label}: {state['done']}/{total} ({elapsed:.0f} s){extra}", file=stream, flush=True)

    return advance
