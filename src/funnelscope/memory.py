"""Memory budgets: sizes such as ``"4GiB"`` or ``"500MB"``, and the memory a device has available.

A probe that can trade memory for time (the Jacobian probe's routes) takes ``max_memory=``: bytes as an
integer or a string ``<number><unit>`` with the units ``B``, ``kB``/``KB``, ``MB``, ``GB``, ``TB`` (powers of 1000)
and ``KiB``, ``MiB``, ``GiB``, ``TiB`` (powers of 1024), case-insensitive about the ``b``. Its default is half of
:func:`available_memory` of the device it computes on:

* CUDA: the free memory that ``torch.cuda.mem_get_info`` reports for the device;
* the CPU on Linux: ``MemAvailable`` of ``/proc/meminfo`` (the kernel's estimate of what can be allocated
  without swapping, page cache that can be reclaimed included);
* elsewhere (macOS, Windows, other accelerators): the physical memory ``os.sysconf`` reports, else
  :data:`FALLBACK_AVAILABLE` (8 GiB), a guess stated in the error messages that use it.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from funnelscope.errors import FunnelscopeInputError

__all__ = ["FALLBACK_AVAILABLE", "available_memory", "default_budget", "format_bytes", "parse_memory"]

FALLBACK_AVAILABLE = 8 << 30
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_memory(value: Any, name: str = "max_memory") -> int:
    """Bytes from an int or a string with a unit.

    >>> parse_memory("4GiB"), parse_memory("500MB"), parse_memory(1024), parse_memory("1.5 kib")
    (4294967296, 500000000, 1024, 1536)
    """
    if isinstance(value, bool):
        raise FunnelscopeInputError(f"{name}={value!r} must be a number of bytes or a size such as '4GiB'")
    if isinstance(value, int) and value > 0:
        return int(value)
    match = _SIZE.match(value) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS or float(match.group(1)) * _UNITS[unit] < 1:
        raise FunnelscopeInputError(f"{name}={value!r} must be a positive number of bytes or a size such as "
                                    "'4GiB' or '500MB'")
    return int(float(match.group(1)) * _UNITS[unit])


def available_memory(device: torch.device | str | None = None) -> int:
    """Bytes that can be allocated on ``device`` now (see the module docstring for where the number comes
    from)."""
    target = torch.device(device) if device is not None else torch.device("cpu")
    if target.type == "cuda":
        free, _ = torch.cuda.mem_get_info(target)
        return int(free)
    if target.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return FALLBACK_AVAILABLE


def default_budget(device: torch.device | str | None = None) -> int:
    """Half of :func:`available_memory` of ``device``: the default ``max_memory``."""
    return available_memory(device) // 2


def format_bytes(count: float) -> str:
    """Binary units, three significant digits.

    >>> format_bytes(3 << 30), format_bytes(1536), format_bytes(12)
    ('3.00 GiB', '1.50 KiB', '12 B')
    """
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(count) >= size:
            return f"{count / size:.3g} {unit}" if count / size >= 100 else f"{count / size:.2f} {unit}"
    return f"{int(count)} B"
