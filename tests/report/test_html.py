"""The self-contained HTML report: every figure embedded and decodable, text escaped, no external link, bad
study directories refused with a message naming the file."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnelscope.errors import FunnelscopeInputError
from funnelscope.report.html import PNG_SIGNATURE, _table_html, collect_study, write_report
from tests.conftest import assert_user_error, run_cli

EVIL = "<script>alert('x')</script> & λ"


def _esd_figure(path: Path, dpi: int) -> None:
    from funnelscope.report.plots import plot_layer_esd, save_figure
    from funnelscope.spectra.marchenko_pastur import fit_marchenko_pastur
    from funnelscope.spectra.powerlaw import fit_powerlaw

    rng = np.random.default_rng(0)
    weights = rng.standard_t(df=3, size=(200, 100))
    eigenvalues = np.linalg.eigvalsh(weights.T @ weights)
    figure = plot_layer_esd(
        eigenvalues,
        fit=fit_powerlaw(eigenvalues),
        marchenko_pastur=fit_marchenko_pastur(eigenvalues, N=200, M=100),
        N=200,
        title="layer fc1",
    )
    save_figure(figure, path, dpi=dpi)


def _curve_figure(path: Path, dpi: int) -> None:
    from funnelscope.report.plots import new_figure, save_figure, styled

    @styled
    def draw():
        figure, (ax,) = new_figure(width=4.2, height=3.0)
        batch = np.array([16, 32, 64, 128, 256])
        ax.plot(batch, [0.97, 0.965, 0.95, 0.93, 0.90], marker="o", label="test accuracy")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("accuracy")
        ax.legend()
        return figure

    save_figure(draw(), path, dpi=dpi)


def _gram_figure(path: Path, dpi: int) -> None:
    from funnelscope.report.plots import new_figure, save_figure, styled

    @styled
    def draw():
        figure, (ax,) = new_figure(width=3.6, height=3.2)
        rng = np.random.default_rng(1)
        jacobians = rng.normal(size=(40, 12))
        image = ax.imshow(jacobians @ jacobians.T, cmap="viridis")
        figure.colorbar(image, ax=ax)
        ax.set_title("data Gram M = JJᵀ")
        return figure

    save_figure(draw(), path, dpi=dpi)


def make_fake_study(root: Path, *, long_rows: int = 55, dpi: int = 60) -> Path:
    """A small study directory following the studies' contract: 3 PNG figures and 1 SVG, 2 tables, 6 runs."""
    study = root / "fake-study"
    (study / "figures").mkdir(parents=True)
    (study / "tables").mkdir()
    _esd_figure(dpi=dpi, path=study / "figures" / "esd.png")
    _curve_figure(dpi=dpi, path=study / "figures" / "accuracy_vs_batch.png")
    _gram_figure(dpi=dpi, path=study / "figures" / "gram.png")
    _curve_figure(dpi=dpi, path=study / "figures" / "accuracy_vs_batch.svg")
    figures = [
        {
            "file": "figures/accuracy_vs_batch.png",
            "title": "Test accuracy against batch size",
            "caption": "Final test accuracy of each run; larger batches generalise worse.",
            "section": "Generalisation",
        },
        {
            "file": "figures/esd.png",
            "title": "ESD of fc1",
            "caption": "Eigenvalues of WᵀW on log-log axes with the fitted power-law tail (red) and, right, the "
            "Marchenko–Pastur bulk.",
            "section": "Spectra",
        },
        {"file": "figures/gram.png", "title": "Data Gram of the Jacobians", "caption": EVIL, "section": "Spectra"},
        {
            "file": "figures/accuracy_vs_batch.svg",
            "title": "The same curve as SVG",
            "caption": "Vector version of the accuracy curve.",
            "section": "Generalisation",
        },
    ]
    (study / "figures" / "manifest.json").write_text(json.dumps(figures))

    alphas = pd.DataFrame(
        {"layer": ["fc1", "fc2", "fc3"], "alpha": [2.512345, 3.1, 4.75], "lambda_max": [812.3, 1.2e7, 3e-5]}
    )
    alphas.to_csv(study / "tables" / "alphas.csv", index=False)
    long = pd.DataFrame({"step": np.arange(long_rows), "loss": np.linspace(2.3, 0.1, long_rows)})
    long.to_csv(study / "tables" / "trajectory.csv", index=False)
    tables = [
        {"file": "tables/alphas.csv", "title": "Power-law exponents", "caption": "α per layer.", "section": "Spectra"},
        {"file": "tables/trajectory.csv", "title": "Training loss", "caption": "Loss per step.", "section": "Training"},
    ]
    (study / "tables" / "manifest.json").write_text(json.dumps(tables))

    runs = pd.DataFrame(
        {
            "run_id": [f"bs{b}-s{s}" for b in (16, 64, 256) for s in (0, 1)],
            "batch_size": [16, 16, 64, 64, 256, 256],
            "seed": [0, 1] * 3,
            "train_accuracy": [1.0, 1.0, 0.999, 1.0, 0.995, 0.997],
            "test_accuracy": [0.97, 0.968, 0.95, 0.952, 0.90, 0.905],
            "alpha_mean": [2.8, 2.9, 3.4, 3.3, 4.1, 4.0],
        }
    )
    runs[[*runs.columns[1:], "run_id"]].to_parquet(study / "runs.parquet")  # the report puts run_id first
    meta = {
        "study": "batch-size",
        "title": "Large vs small batches <on digits>",
        "description": "Trains a small MLP with several batch sizes.\n\nSecond paragraph & more.",
        "settings": {"epochs": 20, "batch_sizes": [16, 64, 256], "lr": 0.05},
        "versions": {"funnelscope": "0.1.0", "torch": "2.13.0"},
        "started": "2025-01-01T10:00:00+00:00",
        "finished": "2025-01-01T10:05:00+00:00",
        "headline": [
            {"label": "test accuracy gap (16 vs 256)", "value": "6.5 pts"},
            {"label": "Spearman(α, test acc.)", "value": "−0.94"},
            {"label": "runs", "value": "6"},
        ],
    }
    (study / "study.json").write_text(json.dumps(meta))
    return study


@pytest.fixture(scope="module")
def fake_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_study(tmp_path_factory.mktemp("report"))


class _Collector(HTMLParser):
    """Every tag with its attributes, and the text inside figcaptions, h1 and cards."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.captions: list[str] = []
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_caption = self._in_caption or tag == "figcaption"
        if tag == "figcaption":
            self.captions.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_caption:
            self.captions[-1] += data

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parse(path: Path) -> _Collector:
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    collector.close()
    return collector


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    match = re.fullmatch(r"data:([\w/+.-]+);base64,([A-Za-z0-9+/=]+)", uri)
    assert match, uri[:80]
    return match.group(1), base64.b64decode(match.group(2), validate=True)


def test_report_embeds_every_figure_decodably(fake_study: Path, tmp_path: Path) -> None:
    from PIL import Image

    path = write_report(fake_study, output=tmp_path / "report.html")
    assert path == tmp_path / "report.html"
    page = parse(path)
    images = page.all("img")
    manifest = json.loads((fake_study / "figures" / "manifest.json").read_text())
    assert len(images) == len(manifest) == 4
    kinds = []
    for attrs in images:
        mime, data = decode_data_uri(attrs["src"])
        kinds.append(mime)
        if mime == "image/png":
            assert data.startswith(PNG_SIGNATURE)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                assert image.size[0] > 50 and image.size[1] > 50
                assert (attrs["width"], attrs["height"]) == tuple(str(n) for n in image.size)
        else:
            assert mime == "image/svg+xml" and b"<svg" in data
        assert attrs["alt"]
    assert kinds.count("image/png") == 3
    # manifest order within sections, sections in order of first appearance
    headings = [text.strip() for text in page.text if text.strip() in {"Generalisation", "Spectra", "Training"}]
    assert headings[:3] == ["Generalisation", "Spectra", "Training"]


def test_report_has_no_external_reference_and_escapes_text(fake_study: Path, tmp_path: Path) -> None:
    path = write_report(fake_study, output=tmp_path / "report.html")
    raw = path.read_text(encoding="utf-8")
    assert "http://" not in raw and "https://" not in raw
    page = parse(path)
    for tag, attrs in page.tags:
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, name, value[:80])
    assert page.all("script") == [] and page.all("link") == [] and page.all("iframe") == []
    # the caption with markup is shown as text, not run
    assert "<script" not in raw
    assert "&lt;script&gt;" in raw
    assert EVIL in page.captions
    assert "Large vs small batches <on digits>" in "".join(page.text)


def test_report_content_headline_tables_runs_settings(fake_study: Path, tmp_path: Path) -> None:
    path = write_report(fake_study, output=tmp_path / "report.html", title="Custom title", max_rows=40)
    raw = path.read_text(encoding="utf-8")
    text = "".join(parse(path).text)
    assert "<title>Custom title</title>" in raw
    for needle in (
        "6.5 pts",
        "Spearman(α, test acc.)",
        "Second paragraph & more.",
        "α per layer.",
        "batch_sizes",
        "[16, 64, 256]",
        "torch",
        "2.13.0",
        "bs256-s1",
        "Generated ",
    ):
        assert needle in text, needle
    # floats formatted to 4 significant digits, scientific outside [1e-3, 1e6)
    assert "2.512" in text and "2.512345" not in text and "1.200e+07" in text and "3.000e-05" in text
    # the long table is cut with a note, and its full CSV is attached
    assert "showing the first 40 of 55 rows" in text
    downloads = [a for a in parse(path).all("a") if (a.get("href") or "").startswith("data:text/csv")]
    assert {a["download"] for a in downloads} == {"alphas.csv", "trajectory.csv", "runs.csv"}
    full = next(a for a in downloads if a["download"] == "trajectory.csv")
    frame = pd.read_csv(io.StringIO(decode_data_uri(full["href"])[1].decode()))
    assert len(frame) == 55
    assert len(parse(path).all("table")) == 3
    runs_section = raw[raw.index('<section id="runs">') :]
    assert re.search(r"<th[^>]*>([^<]*)</th>", runs_section).group(1) == "run_id"


def test_default_output_is_written_atomically_into_the_study(fake_study: Path) -> None:
    path = write_report(fake_study)
    assert path == fake_study / "report.html" and path.stat().st_size > 10_000
    assert not list(fake_study.glob(".report.html.*"))
    study = collect_study(fake_study)
    assert study.sections == ["Generalisation", "Spectra", "Training"]
    assert study.runs is not None and len(study.runs) == 6
    path.unlink()


def _copy(study: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(study, tmp_path / "copy"))


def test_not_a_study_and_malformed_json(tmp_path: Path, fake_study: Path) -> None:
    with pytest.raises(FunnelscopeInputError, match=r"not a study directory \(no study\.json\)"):
        write_report(tmp_path)
    with pytest.raises(FunnelscopeInputError, match="not a directory"):
        write_report(tmp_path / "missing")
    study = _copy(fake_study, tmp_path)
    (study / "figures" / "manifest.json").write_text("[{'file': ")
    with pytest.raises(FunnelscopeInputError, match=r"manifest\.json: malformed JSON"):
        write_report(study)
    (study / "figures" / "manifest.json").write_text('{"file": "figures/esd.png"}')
    with pytest.raises(FunnelscopeInputError, match="must be a list"):
        write_report(study)
    (study / "study.json").write_text("{")
    with pytest.raises(FunnelscopeInputError, match=r"study\.json: malformed JSON"):
        write_report(study)
    (study / "study.json").write_text('{"title": "no name"}')
    with pytest.raises(FunnelscopeInputError, match="'study'"):
        write_report(study)
    assert not (study / "report.html").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "figure 'figures/gram.png': cannot be decoded"),
        ("not-png", "figure 'figures/gram.png': not a PNG image"),
        ("outside", "lies outside the study directory"),
    ],
)
def test_broken_figure_names_the_file_and_writes_nothing(
    tmp_path: Path, fake_study: Path, damage: str, message: str
) -> None:
    study = _copy(fake_study, tmp_path)
    gram = study / "figures" / "gram.png"
    if damage == "truncated":
        gram.write_bytes(gram.read_bytes()[: len(gram.read_bytes()) // 2])
    elif damage == "not-png":
        gram.write_bytes(b"GIF89a not a png at all")
    else:
        manifest = json.loads((study / "figures" / "manifest.json").read_text())
        manifest[0]["file"] = "../../etc/passwd.png"
        (study / "figures" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FunnelscopeInputError, match=re.escape(message)):
        write_report(study)
    assert not (study / "report.html").exists()


def test_missing_figure_is_warned_and_shown_missing(tmp_path: Path, fake_study: Path) -> None:
    study = _copy(fake_study, tmp_path)
    (study / "figures" / "gram.png").unlink()
    with pytest.warns(UserWarning, match=re.escape("1 figure(s) listed in figures/manifest.json are missing: "
                                                   "figures/gram.png")):
        path = write_report(study)
    text = "".join(parse(path).text)
    assert "Incomplete report" in text and "missing: figures/gram.png is not in the study directory" in text
    assert len(parse(path).all("img")) == 3  # the other figures are still embedded


def test_cli_report_on_a_study_whose_figures_are_gone(tmp_path: Path, fake_study: Path) -> None:
    import shutil

    study = _copy(fake_study, tmp_path)
    shutil.rmtree(study / "figures")
    result = run_cli("report", str(study))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == f"warning: {study}: figures/ is missing: the report has no figures"
    page = parse(study / "report.html")
    assert page.all("img") == [] and "figures/ is missing: the report has no figures" in "".join(page.text)


def test_broken_svg_and_table(tmp_path: Path, fake_study: Path) -> None:
    study = _copy(fake_study, tmp_path)
    (study / "figures" / "accuracy_vs_batch.svg").write_text("<svg><g></svg>")
    with pytest.raises(FunnelscopeInputError, match=r"accuracy_vs_batch\.svg.*not a valid SVG"):
        write_report(study)
    (study / "figures" / "accuracy_vs_batch.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (study / "tables" / "alphas.csv").write_bytes(b"")
    with pytest.raises(FunnelscopeInputError, match=re.escape("table 'tables/alphas.csv': cannot be read as CSV")):
        write_report(study)


def test_unfinished_study_without_runs_or_figures(tmp_path: Path) -> None:
    (tmp_path / "study.json").write_text(json.dumps({"study": "tiny", "finished": None}))
    path = write_report(tmp_path)
    text = "".join(parse(path).text)
    assert "not finished" in text and "tiny" in text and parse(path).all("img") == []


def test_cli_report(fake_study: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.html"
    result = run_cli("report", str(fake_study), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "report written to" in result.stdout and output.stat().st_size > 10_000
    assert len(parse(output).all("img")) == 4
    assert_user_error(run_cli("report", str(tmp_path / "nowhere")), "nowhere", "not a directory")


def test_wide_runs_table_scrolls_and_settings_say_what_sentinels_mean(tmp_path: Path) -> None:
    meta = {"study": "labels", "settings": {"train_size": 0, "augment": "", "width": 64},
            "setting_notes": {"train_size": "all: the whole training split", "augment": "none"},
            "finished": "2025-01-01T10:05:00+00:00"}
    (tmp_path / "study.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    runs = pd.DataFrame({f"metric_{i}": rng.random(3) for i in range(53)})
    runs.insert(0, "run_id", ["a", "b", "c"])
    runs.to_parquet(tmp_path / "runs.parquet")
    with pytest.warns(UserWarning, match="figures/ is missing"):
        path = write_report(tmp_path)
    page = path.read_text()
    assert page.count('class="table-wrap wide-table"') == 1  # the runs table, and only it
    assert "scroll sideways for all 54 columns (the first stays in view)" in page
    assert re.search(r"\.wide-table \{ overflow-x: scroll;", page)
    assert "<dt>train_size</dt><dd>0 <span class=\"note\">(all: the whole training split)</span></dd>" in page
    assert "<dt>augment</dt><dd>&quot;&quot; <span class=\"note\">(none)</span></dd>" in page
    assert "<dt>width</dt><dd>64</dd>" in page
    narrow = _table_html(runs.iloc[:, :5], name="n.csv", max_rows=30)
    assert "wide-table" not in narrow and "scroll sideways" not in narrow
