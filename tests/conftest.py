"""Shared fixtures: small models and weight files built on the fly (nothing is downloaded)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for tiny problems (OpenMP hand-offs dominate them on a busy machine); restored after.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture
def mlp() -> nn.Module:
    return small_mlp()


@pytest.fixture
def safetensors_file(tmp_path: Path, mlp: nn.Module) -> Path:
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, str(path))
    return path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m funnelscope.cli ARGS`` in a fresh process, as a user would."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "funnelscope.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """A user mistake as the CLI must report it: exit code 2, no traceback, one ``error: …`` line on stderr
    that contains every needle."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    message = result.stderr.strip()
    assert message.startswith("error:"), message
    assert len(message.splitlines()) == 1, message
    for needle in needles:
        assert needle in message, (needle, message)


def assert_png(path: Path, *, min_width: int = 300, min_height: int = 200) -> None:
    """``path`` is a PNG image of at least the given size (read from its header), not an empty file."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert width >= min_width and height >= min_height, (path, width, height)


def gaussian_classification(n: int, d: int, *, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` standard-normal inputs of ``d`` features and uniform labels in ``[0, classes)``, seeded."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=generator), torch.randint(0, classes, (n,), generator=generator)


def relu_classifier(d: int, width: int, *, classes: int = 3, seed: int = 0) -> nn.Module:
    """``Linear(d, width) → ReLU → Linear(width, classes)``, initialised from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, classes))


def load_script(name: str) -> object:
    """``scripts/<name>.py`` imported as a module (the scripts are not part of the package)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_image_folder(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> None:
    """``root/<class>/<i>.png``: image ``i`` of a class is one flat colour (class index, i, 2i) × 10, of the
    given (height, width)."""
    from PIL import Image

    for label, (name, shapes) in enumerate(sorted(sizes.items())):
        (root / name).mkdir(parents=True)
        for i, (height, width) in enumerate(shapes):
            colour = (label * 10, i * 10, i * 20)
            Image.new("RGB", (width, height), colour).save(root / name / f"{i}.png")
