"""scripts/screenshot_report.py in a real headless Chromium: every figure of a report renders, a broken one is
caught, and a full-page screenshot is saved. Skipped where no Chromium-family browser is installed."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest

from funnelscope.report.html import write_report
from tests.conftest import load_script
from tests.report.test_html import make_fake_study

screenshot_report = load_script("screenshot_report")
BROWSER = screenshot_report.find_browser()
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no chromium / google-chrome on PATH")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    study = make_fake_study(tmp_path_factory.mktemp("shot"), long_rows=5)
    return write_report(study)


@needs_browser
def test_screenshot_renders_every_figure(report: Path, tmp_path: Path) -> None:
    from PIL import Image

    output = tmp_path / "shot.png"
    result = subprocess.run(
        [sys.executable, screenshot_report.__file__, str(report), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "images rendered: 4 of 4" in result.stdout
    with Image.open(output) as image:
        width, height = image.size
        assert width == 1280 and height > 1000  # the whole page, not one window
        # not a blank page: the figures and text put many distinct colours on it
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


@needs_browser
def test_broken_image_is_caught(report: Path, tmp_path: Path) -> None:
    text = report.read_text(encoding="utf-8")
    # a well-formed data URI whose bytes are no image: valid HTML, but the browser shows a broken-image icon
    src = re.search(r'src="data:image/png;base64,([^"]+)"', text).group(1)
    broken = tmp_path / "broken.html"
    garbage = base64.b64encode(b"\x89PNG\r\n\x1a\n but no image follows").decode()
    broken.write_text(text.replace(src, garbage, 1), encoding="utf-8")
    images, failed, height = screenshot_report.check_images(broken, browser=BROWSER, width=1000, timeout=120)
    assert images == 4 and failed == ["Test accuracy against batch size"] and height > 1000


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert screenshot_report.main([str(tmp_path / "missing.html")]) == 2
    assert "no such report" in capsys.readouterr().err
    page = tmp_path / "page.html"
    page.write_text("<html><body></body></html>")
    assert screenshot_report.main([str(page), "--browser", "no-such-browser-xyz"]) == 2
    assert "no browser found (no-such-browser-xyz)" in capsys.readouterr().err
