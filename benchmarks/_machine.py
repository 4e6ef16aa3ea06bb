"""Shared helpers for the benchmark scripts: describe the machine, time a call, write results as JSON.

``write_results(name, rows)`` writes ``benchmarks/results/{name}.json`` with the machine description, a UTC
timestamp and the rows, so that numbers quoted anywhere can be traced to the machine that produced them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_DIR", "machine_description", "timeit", "timings", "write_results"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_ram_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _blas_info() -> dict[str, Any]:
    """BLAS/LAPACK names as numpy and torch report them (cheap: no benchmark, no subprocess)."""
    info: dict[str, Any] = {}
    try:
        import numpy as np

        config = np.show_config(mode="dicts")
        deps = config.get("Build Dependencies", {})
        info["numpy_blas"] = deps.get("blas", {}).get("name")
        info["numpy_lapack"] = deps.get("lapack", {}).get("name")
    except Exception:  # older numpy without mode="dicts"
        pass
    try:
        import torch

        info["torch_mkl"] = bool(torch.backends.mkl.is_available())
        info["torch_threads"] = torch.get_num_threads()
    except Exception:
        pass
    return info


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:
        return None
    return getattr(mod, "__version__", None)


def machine_description() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python and library versions, BLAS details when cheaply known."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": _total_ram_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "torch": _version("torch"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        **_blas_info(),
    }


def timeit(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best wall-clock time in seconds of ``repeat`` calls of ``fn()`` (best-of damps noise from other load)."""
    return min(timings(fn, repeat))


def timings(fn: Callable[[], Any], repeat: int = 3) -> list[float]:
    """Wall-clock seconds of each of ``repeat`` calls of ``fn()``, in call order (for the best and the median)."""
    seconds = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def write_results(name: str, rows: list[dict], extra: dict | None = None) -> Path:
    """Write ``{"machine", "timestamp", "rows", **extra}`` to ``benchmarks/results/{name}.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        "machine": machine_description(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
        **(extra or {}),
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path
