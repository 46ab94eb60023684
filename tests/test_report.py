"""The HTML evaluation report: self-contained, escaped, deterministic, and really rendered by a browser."""

from __future__ import annotations

import base64
import io
import re
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from catalog_enhance.data_contracts.layout import report_key
from catalog_enhance.tasks.report.html import (
    ImageGridSection,
    PlotSection,
    TableSection,
    TextSection,
    build_report,
    format_value,
    write_report,
)
from catalog_enhance.tasks.report.plots import plot_metric_history, plot_training_curves

from browser import BrowserNotFound, chromium_path, screenshot

WHEN = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
HOSTILE = '<script>alert("x")</script>" onerror="boom'
DATA_URI = re.compile(r'data:image/png;base64,([A-Za-z0-9+/=]+)')

RED, GREEN, BLUE, MAGENTA = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 0, 255)
TILE = 64


def tile(colour, size=TILE) -> np.ndarray:
    image = np.empty((size, size, 3), np.uint8)
    image[:] = colour
    return image


def decoded_images(html: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(p)))) for p in DATA_URI.findall(html)]


def magenta_plot() -> Figure:
    """A plot with a large block of one colour no other part of the page uses."""
    figure = Figure(figsize=(4, 3), dpi=100)
    ax = figure.add_subplot()
    ax.axvspan(0.2, 0.8, color="#ff00ff")
    ax.plot([0, 1], [0, 1], color="black")
    return figure


def curves_df() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"model": model, "version": f"{model}-2026110{v}000000-abcdef", "step": step, "loss": loss,
             "value": float(np.exp(-step / 40) * (1 + k) + 0.01 + 0.01 * rng.random())}
            for model in ("srcnn", "gan") for v in (1, 2) for k, loss in enumerate(("l1", "adv"))
            for step in range(120)]
    return pd.DataFrame(rows)


def evals_df() -> pd.DataFrame:
    rows = []
    for model, offset in (("srcnn", 0.0), ("espcn", 0.1)):
        for v in range(1, 4):
            for scope, shift in (("scale=2", 0.0), ("scale=2,category=shoes", -1.0)):
                rows.append({"record": "evaluation", "model_name": model, "version": f"{model}-v{v}",
                             "metric": "psnr_y_gain", "scope": scope, "value": 0.1 * v - 0.15 + offset + shift,
                             "higher_is_better": True, "baseline": "bicubic", "baseline_value": 0.0})
    rows.append({"record": "decision", "model_name": "srcnn", "version": "srcnn-v3", "metric": "psnr_y_gain",
                 "scope": "scale=2", "value": 0.15, "higher_is_better": True, "baseline": "bicubic",
                 "baseline_value": 0.0})
    return pd.DataFrame(rows)


def sample_sections(label: str = "shoes") -> list:
    hr = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return [
        TextSection(f"Champion **srcnn** beats `bicubic` at x2.\n\n- worst category: {label}", title="Summary"),
        TableSection("SR, test split", pd.DataFrame({
            "model": ["bicubic", "srcnn", "espcn"], "category": [label, label, label],
            "psnr_y": [30.1234, 30.55, 29.9], "psnr_y_gain": [0.0, 0.4266, -0.2234], "delta": [-1.5, 2.0, 3.0],
            "n_images": [120, 120, 120]})),
        ImageGridSection("Before / after x2", [[hr[::2, ::2], hr, hr, hr], [tile(RED), tile(GREEN), None, tile(BLUE)]],
                         row_labels=[label, "bags"], column_labels=["LR", "bicubic", "srcnn", "HR"]),
        PlotSection("Training curves", plot_training_curves(curves_df())),
        PlotSection("Metrics across versions", plot_metric_history(evals_df())),
    ]


# -- unit tests ---------------------------------------------------------------------------------


def test_report_is_self_contained():
    html = build_report(sample_sections(), "Evaluation", WHEN).decode("utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "http://" not in html and "https://" not in html
    # Every src/href is a data URI or an in-page anchor; no scripts, stylesheets or CSS urls.
    references = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', html)
    assert references and all(r.startswith(("data:image/png;base64,", "#")) for r in references), references
    assert "<script" not in html.lower() and "<link" not in html.lower() and "url(" not in html
    assert len(decoded_images(html)) == 7 + 2  # 7 grid cells + 2 plots, each a valid PNG


def test_grid_embeds_the_exact_pixels_and_one_img_per_image():
    hr = np.random.default_rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    grey = np.full((12, 16), 77, np.uint8)
    section = ImageGridSection("grid", [[grey, hr], [hr, None]], row_labels=["a", "b"], column_labels=["LR", "HR"])
    html = build_report([section], "t", WHEN).decode()
    assert html.count("<img") == 3
    images = decoded_images(html)
    np.testing.assert_array_equal(images[1], hr)
    np.testing.assert_array_equal(images[0], np.repeat(grey[:, :, None], 3, axis=2))
    # The small (LR) image is shown at the grid's cell width, nearest-neighbour upscaled.
    first = re.search(r"<img[^>]*>", html).group(0)
    assert 'class="px"' in first and 'width="32"' in first and 'height="24"' in first


def test_grid_rejects_mismatched_labels_and_bad_images():
    with pytest.raises(ValueError, match="column labels"):
        ImageGridSection("g", [[tile(RED), tile(RED)]], column_labels=["only one"])
    with pytest.raises(ValueError, match="different lengths"):
        ImageGridSection("g", [[tile(RED)], [tile(RED), tile(RED)]])
    with pytest.raises(ValueError, match="uint8"):
        build_report([ImageGridSection("g", [[tile(RED).astype(np.float32)]])], "t", WHEN)


def test_untrusted_labels_are_escaped_everywhere():
    sections = sample_sections(label=HOSTILE)
    sections.append(TableSection(HOSTILE, [{HOSTILE: HOSTILE}], note=HOSTILE))
    html = build_report(sections, HOSTILE, WHEN).decode()
    assert "<script" not in html.lower()
    assert 'onerror="' not in html  # the quote cannot close an attribute
    assert html.count("&lt;script&gt;") >= 8  # title x2, text, table cells, header, grid caption, alt...


def test_negative_gains_are_highlighted_and_only_those():
    html = build_report(sample_sections(), "t", WHEN).decode()
    assert re.search(r'<td class="num neg">-0\.2234</td>', html)
    assert re.search(r'<td class="num pos">\+0\.4266</td>', html)
    assert re.search(r"<td class=\"num\">0</td>", html)  # zero gain: neither
    assert re.search(r'<td class="num">-1\.5</td>', html)  # "delta" is not a gain column
    assert html.count('class="num neg"') == 1
    explicit = TableSection("t", [{"delta": -1.0, "psnr_y_gain": -2.0}], gain_columns=["delta"])
    html = build_report([explicit], "t", WHEN).decode()
    assert html.count('class="num neg"') == 1 and '<td class="num neg">-1</td>' in html


def test_format_value():
    assert format_value(float("nan")) == "\u2014" and format_value(None) == "\u2014" and format_value(pd.NA) == "\u2014"
    assert format_value(1234567.89) == "1,234,568"
    assert format_value(31.23456) == "31.23"
    assert format_value(np.float32(0.000123456)) == "0.0001235"
    assert format_value(np.int64(12000)) == "12,000"
    assert format_value(True) == "yes"
    assert format_value("shoes") == "shoes"


def test_same_inputs_give_the_same_bytes():
    first = build_report(sample_sections(), "Evaluation", WHEN)
    second = build_report(sample_sections(), "Evaluation", WHEN)  # new Figure objects, same data
    assert first == second
    later = build_report(sample_sections(), "Evaluation", datetime(2026, 11, 2, tzinfo=timezone.utc))
    assert later == first.replace(b"2026-11-01T12:00:00", b"2026-11-02T00:00:00")  # only the stamp moves


def test_text_section_is_markdownish():
    html = build_report([TextSection("## Result\nsee **this** and `that`\n\n- one\n- two <b>")], "t", WHEN).decode()
    assert "<h3>Result</h3>" in html and "<strong>this</strong>" in html and "<code>that</code>" in html
    assert "<li>one</li><li>two &lt;b&gt;</li>" in html


def test_plots():
    curves = plot_training_curves(curves_df())
    assert [ax.get_title() for ax in curves.axes] == ["gan \u00b7 gan-20261102000000-abcdef",
                                                      "srcnn \u00b7 srcnn-20261102000000-abcdef"]
    assert all(ax.get_yscale() == "log" for ax in curves.axes)  # the losses span > 20x
    assert len(plot_training_curves(curves_df(), all_versions=True).axes[0].get_legend().get_texts()) == 4

    history = plot_metric_history(evals_df())
    (ax,) = history.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # Per-category scopes and decision rows are left out; the shared baseline is drawn once, dashed.
    assert labels == ["espcn (scale=2)", "bicubic (baseline, scale=2)", "srcnn (scale=2)"]
    espcn, baseline, srcnn = ax.get_lines()
    assert baseline.get_linestyle() == "--" and espcn.get_linestyle() == "-"
    np.testing.assert_allclose(srcnn.get_ydata(), [-0.05, 0.05, 0.15])
    empty = plot_metric_history(evals_df().iloc[0:0])
    assert empty.axes[0].texts[0].get_text() == "no evaluations"


def test_write_report_to_the_lake(lake):
    html = build_report(sample_sections(), "Evaluation", WHEN)
    key = write_report(lake, "demo-run", html)
    assert key == report_key("demo-run", "report.html")
    assert lake.read_bytes(key) == html


def test_missing_browser_names_the_package(monkeypatch):
    monkeypatch.delenv("CE_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BrowserNotFound, match="apt-get install -y chromium"):
        chromium_path()


# -- the browser test ---------------------------------------------------------------------------


def colour_counts(png_path, colours, tolerance: int = 12) -> dict[tuple, int]:
    """How many screenshot pixels are each colour (every channel within `tolerance`)."""
    pixels = np.asarray(Image.open(png_path).convert("RGB")).reshape(-1, 3).astype(np.int16)
    return {c: int((np.abs(pixels - np.array(c)).max(axis=1) <= tolerance).sum()) for c in colours}


def colour_problems(counts: dict[tuple, int], expected: dict[tuple, tuple[int, int]]) -> list[str]:
    """The colours whose pixel count is outside its expected (low, high) range."""
    return [f"{colour}: {counts[colour]} pixels, expected {low}..{high}"
            for colour, (low, high) in expected.items() if not low <= counts[colour] <= high]


def browser_sections() -> list:
    return [
        TextSection("Three solid tiles and a plot: the browser must paint them all.", title="Summary"),
        TableSection("Gains", [{"model": "srcnn", "psnr_y_gain": 0.41}, {"model": "espcn", "psnr_y_gain": -0.2}]),
        ImageGridSection("Tiles", [[tile(RED), tile(GREEN), tile(BLUE)]], row_labels=["row"],
                         column_labels=["red", "green", "blue"]),
        PlotSection("Plot", magenta_plot()),
    ]


def break_images(html: bytes) -> bytes:
    """The same page with every image's data cut short: a PNG header and nothing to paint."""
    def truncate(match: re.Match) -> bytes:
        return b"data:image/png;base64," + base64.b64encode(base64.b64decode(match.group(1))[:60])

    broken = re.sub(rb"data:image/png;base64,([A-Za-z0-9+/=]+)", truncate, html)
    assert broken != html
    return broken


@pytest.mark.parametrize("broken", [False, True], ids=["renders", "broken-images-fail-the-check"])
def test_report_renders_its_images_in_headless_chromium(tmp_path, broken):
    html = build_report(browser_sections(), "Browser check", WHEN)
    page = tmp_path / "report.html"
    page.write_bytes(break_images(html) if broken else html)
    png = screenshot(page, tmp_path / "shot.png", width=1000, height=1100, timeout=60)

    # A solid 64 px tile is 64x64 pixels of its colour at 1:1 (device scale 1); the plot's magenta
    # band is 60% of the axes of a 4x3 in figure at 100 dpi (~40,000 px). Nothing else on the page
    # uses these colours.
    tile_range = (int(0.9 * TILE * TILE), int(1.1 * TILE * TILE))
    expected = {RED: tile_range, GREEN: tile_range, BLUE: tile_range, MAGENTA: (20_000, 80_000)}
    problems = colour_problems(colour_counts(png, expected), expected)
    if broken:
        assert len(problems) == len(expected), problems  # not one of the images is painted
    else:
        assert problems == []
