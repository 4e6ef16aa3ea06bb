"""The feature cache of the streamed Jacobian route: the rows ``Φ`` (n × r) written once, read in row blocks.

Three places, chosen by the caller's memory budget:

* ``device``: one tensor on the compute device (an accelerator's memory, or the CPU's);
* ``host``: one CPU tensor while the compute device is an accelerator (each block copied over when read);
* ``disk``: a raw file of the rows' dtype (float32 for a float32 model) in a :class:`tempfile.TemporaryDirectory`,
  removed when the cache is closed — on success, on error and on ``KeyboardInterrupt`` alike (use it as a
  context manager).

The disk cache is written with explicit file calls (``write`` of each batch's bytes) by one background thread,
one batch in flight, so that the rows' backward passes go on while the operating system writes back (a 5.5 GB
file exceeds the kernel's dirty-page limits, and the writes then run at the disk's speed: 17–45 s of the
n = 50 000 benchmark's row pass when they blocked it); it is read one block at a
time through a private memory map of that block's window, which the block's tensor uses in place: the
operating system's page cache serves repeated passes from memory when the machine has it to spare (it is
reclaimable and not part of the process's resident set), and no copy of the block is made (``readinto`` a
buffer cost 0.73 s of memory copies per pass over the 5.5 GB cache of the n = 50 000 benchmark, a fifth of the
products' time). The file is never mapped whole: the touched pages of a map count towards the resident set
(RSS), so a map of an 11 GB file read end to end shows up as 11 GB of RSS. Each window's pages are released
(``madvise(MADV_DONTNEED)``) before the next one is mapped, so one block is resident at a time.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self._written = 0
        if place == "disk":
            self._tmp = tempfile.TemporaryDirectory(prefix="funnelscope-jacobian-", dir=directory)
            self.path: Path | None = Path(self._tmp.name) / "rows.bin"
            self._file = open(self.path, "w+b")
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="funnelscope-cache")
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
            assert self._file is not None and self._writer is not None
            host = rows.detach().to("cpu", self.dtype).contiguous()
            if host.data_ptr() == rows.data_ptr():
                host = host.clone()  # the caller may reuse its tensor while the write is in flight
            self._wait()
            self._pending = self._writer.submit(self._file.write, memoryview(host.numpy()).cast("B"))
        self._written = stop

    def _wait(self) -> None:
        """Wait for the write in flight; its error (a full disk) is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(start, Φ[start : start + b])`` over all rows, on the compute device.

        A disk block is a tensor over a memory map of its window of the file, valid until the next block is
        read (its pages are then released; the map itself when the tensor is freed)."""
        if self._tensor is not None:
            for start in range(0, self.n, self.block_rows):
                block = self._tensor[start : start + self.block_rows]
                yield start, block.to(self.device, non_blocking=True) if self.place == "host" else block
            return
        assert self._file is not None
        self._wait()
        self._file.flush()
        fileno, row_bytes = self._file.fileno(), self.r * self.itemsize
        size = os.fstat(fileno).st_size
        if size != self.n * row_bytes:
            raise OSError(f"the Jacobian cache {self.path} holds {size} bytes, not {self.n * row_bytes}")
        for start in range(0, self.n, self.block_rows):
            rows = min(self.block_rows, self.n - start)
            offset = start * row_bytes
            lead = offset % mmap.ALLOCATIONGRANULARITY  # a map's offset is a multiple of the granularity
            # ACCESS_COPY (a private, writable map: nothing is written back) so that the tensor is writable
            window = mmap.mmap(fileno, lead + rows * row_bytes, access=mmap.ACCESS_COPY, offset=offset - lead)
            block = torch.frombuffer(window, dtype=self.dtype, count=rows * self.r, offset=lead).view(rows, self.r)
            try:
                yield start, block.to(self.device) if self.device.type != "cpu" else block
            finally:
                if hasattr(window, "madvise"):
                    window.madvise(mmap.MADV_DONTNEED)
                del block, window

    def close(self) -> None:
        """Free the rows; a disk cache's file and directory are removed, then the error of a last write that
        failed unseen is raised."""
        self._close(raise_write_error=True)

    def _close(self, *, raise_write_error: bool) -> None:
        self._tensor = None
        pending, self._pending = self._pending, None
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        error = None if pending is None else pending.exception()
        if error is not None and raise_write_error:
            raise error

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._close(raise_write_error=kind is None)  # a write's error does not replace the one on its way out

