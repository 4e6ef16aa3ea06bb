#!/usr/bin/env python
"""Open a funnelscope HTML report in headless Chromium: save a full-page screenshot and check every image rendered.

Usage::

    python scripts/screenshot_report.py STUDY/report.html [--output shot.png] [--width 1280] [--browser PATH]

Two browser runs, both offline (the report is self-contained):

1. ``--dump-dom`` on a copy of the report with a small script injected at the end of ``<body>``: on the page's
   ``load`` event (which waits for every image) it writes, on ``<html>``, how many ``<img>`` there are and which
   of them the browser could not decode (``naturalWidth == 0``: what a reader sees as a broken-image icon). The
   dumped DOM is parsed here; any broken image fails the check. The report itself stays free of JavaScript: the
   script lives only in the temporary copy. (A PNG cut short after its header still renders, partly, so the
   browser cannot tell; :func:`funnelscope.report.html.write_report` decodes every figure fully and refuses
   such a file before any report is written.)
2. ``--screenshot`` of the unmodified report with a window tall enough for the whole page (its height is measured
   in step 1), written to ``--output`` (default: the report's path with ``.png``).

Exit status: 0 when every image rendered, 1 when some did not (they are listed), 2 for a usage problem (no
report, no browser found). The browser is ``--browser``, else the first of ``chromium``, ``chromium-browser``,
``google-chrome`` on ``PATH`` (on Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_CHECK = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = [];
  images.forEach(function (img, i) { if (!(img.complete && img.naturalWidth > 0)) { broken.push(i); } });
  var root = document.documentElement;
  root.setAttribute("data-images", String(images.length));
  root.setAttribute("data-broken", broken.join(","));
  root.setAttribute("data-height", String(Math.ceil(root.scrollHeight)));
  root.setAttribute("data-checked", "yes");
});
</script>
"""


class BrowserError(RuntimeError):
    """The browser is missing or did not produce what was asked."""


def find_browser(explicit: str | None = None) -> str | None:
    """The path of a Chromium-family browser: ``explicit`` if given and found, else the first of :data:`BROWSERS`."""
    if explicit:
        return shutil.which(explicit)
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(browser: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--force-device-scale-factor=1",
        *args,
    ]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BrowserError(f"{browser} did not finish within {timeout:.0f} s") from None


class _RootAttributes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.root: dict[str, str | None] | None = None
        self.alts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "html" and self.root is None:
            self.root = dict(attrs)
        elif tag == "img":
            self.alts.append(dict(attrs).get("alt") or "")


def check_images(report: Path, *, browser: str, width: int, timeout: float) -> tuple[int, list[str], int]:
    """Load the report with the check script injected; return (images, alt texts of broken images, page height)."""
    text = report.read_text(encoding="utf-8")
    marker = text.lower().rfind("</body>")
    checked = text[:marker] + _CHECK + text[marker:] if marker >= 0 else text + _CHECK
    with tempfile.TemporaryDirectory(prefix="funnelscope-shot-") as scratch:
        copy = Path(scratch) / "report.html"
        copy.write_text(checked, encoding="utf-8")
        result = _chromium(
            browser,
            f"--window-size={width},1000",
            "--virtual-time-budget=15000",
            f"--user-data-dir={Path(scratch) / 'profile'}",
            "--dump-dom",
            copy.as_uri(),
            timeout=timeout,
        )
    parser = _RootAttributes()
    parser.feed(result.stdout)
    root = parser.root or {}
    if root.get("data-checked") != "yes":
        raise BrowserError(
            f"{browser} did not run the image check (exit {result.returncode}): {result.stderr.strip()[-500:]}"
        )
    broken = [int(i) for i in (root.get("data-broken") or "").split(",") if i]
    return int(root.get("data-images") or 0), [parser.alts[i] for i in broken], int(root.get("data-height") or 0)


def screenshot(report: Path, output: Path, *, browser: str, width: int, height: int, timeout: float) -> None:
    """Save a screenshot of the report, ``width`` × ``height`` pixels."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="funnelscope-shot-") as scratch:
        result = _chromium(
            browser,
            f"--window-size={width},{height}",
            "--virtual-time-budget=15000",
            f"--user-data-dir={Path(scratch) / 'profile'}",
            f"--screenshot={output.resolve()}",
            report.resolve().as_uri(),
            timeout=timeout,
        )
    if not output.is_file() or output.stat().st_size == 0:
        raise BrowserError(f"{browser} wrote no screenshot (exit {result.returncode}): {result.stderr.strip()[-500:]}")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="the HTML report to open")
    parser.add_argument("--output", "-o", type=Path, help="screenshot PNG (default: the report's path, .png)")
    parser.add_argument("--width", type=int, default=1280, help="window width in pixels (default 1280)")
    parser.add_argument("--max-height", type=int, default=16000, help="cap on the screenshot's height in pixels")
    parser.add_argument("--browser", help="browser executable (default: chromium, chromium-browser, google-chrome)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for each browser run")
    args = parser.parse_args(argv)

    if not args.report.is_file():
        print(f"error: {args.report}: no such report", file=sys.stderr)
        return 2
    if args.width < 200 or args.max_height < 200:
        print("error: --width and --max-height must be at least 200 pixels", file=sys.stderr)
        return 2
    browser = find_browser(args.browser)
    if browser is None:
        wanted = args.browser or " / ".join(BROWSERS)
        print(f"error: no browser found ({wanted}); on Debian: apt-get install chromium", file=sys.stderr)
        return 2
    output = args.output or args.report.with_suffix(".png")
    try:
        images, broken, height = check_images(args.report, browser=browser, width=args.width, timeout=args.timeout)
        shot_height = max(600, min(height + 40, args.max_height))
        screenshot(args.report, output, browser=browser, width=args.width, height=shot_height, timeout=args.timeout)
    except BrowserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"screenshot: {output} ({args.width}x{shot_height}, page height {height})")
    print(f"images rendered: {images - len(broken)} of {images}")
    if broken:
        for alt in broken:
            print(f"broken image: {alt or '(no alt text)'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
