"""The feature cache of the streamed Jacobian route: the rows ``Φ`` (n × r) written once, read in row blocks.

Three places, chosen by the caller's memory budget:

* ``device``: one tensor on the compute device (an accelerator's memory, or the CPU's);
* ``host``: one CPU tensor while the compute device is an accelerator (each block copied over when read);
* ``disk``: a raw file of the rows' dtype (float32 for a float32 model) in a :class:`tempfile.TemporaryDirectory`,
  removed when the cache is closed — on success, on error and on ``KeyboardInterrupt`` alike (use it as a
  context manager).

The disk cache is written and read with explicit file calls (``write`` of each batch's bytes, ``readinto`` a
preallocated block buffer), never through a memory map: the pages of a ``numpy.memmap`` that have been touched
count towards the process's resident set (RSS), so a map of an 11 GB file read end to end shows up as 11 GB of
RSS, while ``readinto`` keeps only the block buffer resident. The operating system's page cache still serves
repeated passes from memory when the machine has it to spare (it is reclaimable and not part of the RSS).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import torch

__all__ = ["CACHE_PLACES", "FeatureCache"]

CACHE_PLACES = ("device", "host", "disk")


class FeatureCache:
    """Rows ``Φ`` (n × r, ``dtype``) written in order, then read as blocks of ``block_rows`` rows.

    Parameters
    ----------
    n, r : int
        Shape.
    dtype : torch.dtype
        Of the stored rows: float32 or float64 (numpy's file calls have no bfloat16).
    place : {"device", "host", "disk"}
    device : torch.device
        The compute device: blocks are returned there.
    block_rows : int
        Rows per block read (the disk buffer holds ``block_rows × r`` elements).
    directory : str, optional
        Parent of the temporary directory of a disk cache (default: the system's).
    """

    def __init__(self, n: int, r: int, dtype: torch.dtype, *, place: str, device: torch.device, block_rows: int,
                 directory: str | None = None) -> None:
        self.n, self.r, self.dtype, self.place, self.device = n, r, dtype, place, device
        self.block_rows = max(1, min(block_rows, n))
        self._tensor: torch.Tensor | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._file = None
        self._written = 0
        if place == "disk":
            self._tmp = tempfile.TemporaryDirectory(prefix="funnelscope-jacobian-", dir=directory)
            self.path: Path | None = Path(self._tmp.name) / "rows.bin"
            self._file = open(self.path, "w+b")
            self._buffer = torch.empty(self.block_rows, r, dtype=dtype)
        else:
            self.path = None
            where = device if place == "device" else torch.device("cpu")
            self._tensor = torch.empty(n, r, dtype=dtype, device=where)

    @property
    def itemsize(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()

    def write(self, rows: torch.Tensor) -> None:
        """Append the next rows (b × r), in order."""
        stop = self._written + rows.shape[0]
        if self._tensor is not None:
            self._tensor[self._written : stop] = rows
        else:
            assert self._file is not None
            self._file.write(memoryview(rows.detach().to("cpu", self.dtype).contiguous().numpy()).cast("B"))
        self._written = stop

    def blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(start, Φ[start : start + b])`` over all rows, on the compute device.

        A disk block is read into the one preallocated buffer (valid until the next block is read)."""
        if self._tensor is not None:
            for start in range(0, self.n, self.block_rows):
                block = self._tensor[start : start + self.block_rows]
                yield start, block.to(self.device, non_blocking=True) if self.place == "host" else block
            return
        assert self._file is not None
        self._file.flush()
        self._file.seek(0)
        array = self._buffer.numpy()
        for start in range(0, self.n, self.block_rows):
            rows = min(self.block_rows, self.n - start)
            view = memoryview(array[:rows].reshape(-1)).cast("B")
            got = self._file.readinto(view)
            if got != rows * self.r * self.itemsize:
                raise OSError(f"the Jacobian cache {self.path} is short: {got} bytes read")
            block = self._buffer[:rows]
            yield start, block.to(self.device) if self.device.type != "cpu" else block

    def close(self) -> None:
        """Free the rows; a disk cache's file and directory are removed."""
        self._tensor = None
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

