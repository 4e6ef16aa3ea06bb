"""Staged output directories as a killed process leaves them: SIGKILL runs no clean-up, so the next run into
the same ``--out`` removes the staging folder of the dead process (and only of dead processes)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

#: A process that opens a staged directory for ``--out``, writes part of its output, says so, and waits to be killed.
WRITER = """
import sys, time
from pathlib import Path
from funnelscope.output import staged_directory
with staged_directory(Path(sys.argv[1])) as staging:
    (staging / "weights.parquet").write_bytes(b"half a table")
    print(staging, flush=True)
    time.sleep(600)
"""


def start_writer(out: Path) -> tuple[subprocess.Popen, Path]:
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    staging = Path(process.stdout.readline().strip())
    assert staging.is_dir() and staging.parent == out.parent and staging.name.startswith(".out.funnelscope-staging-")
    return process, staging


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_weights_out_removes_the_staging_folder_of_a_killed_run(tmp_path: Path, safetensors_file: Path) -> None:
    out = tmp_path / "out"
    killed, stale = start_writer(out)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert stale.is_dir() and not out.exists()  # what SIGKILL leaves: the staging folder, no --out
    running, live = start_writer(out)  # another run, still writing into the same --out
    try:
        result = run_cli("weights", str(safetensors_file), "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert not stale.exists(), "the killed run's staging folder was left"
        assert live.is_dir(), "a live run's staging folder was removed"
        assert (out / "weights.parquet").read_bytes()[:4] == b"PAR1"  # the new table, not the killed run's
        assert sorted(p.name for p in tmp_path.glob(".out*")) == [live.name]
    finally:
        running.kill()
        running.wait(timeout=60)
