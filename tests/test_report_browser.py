"""The evaluation report the flow writes renders in a real browser, images included.

Headless Chromium (`tests/browser.py`) screenshots the report as written to the lake, and the same
page with every embedded image removed; the real page must show far more colours, and differ from
the stripped one over a large area: images that failed to decode would leave both pages alike.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from browser import screenshot
from evaluation_lake import TEST_CLASSIFIER, copy_lake
from PIL import Image

DATA_URI = re.compile(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"')


def distinct_colours(pixels: np.ndarray) -> int:
    return len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))


def test_flow_report_renders_its_images_in_chromium(tmp_path, prefect_harness):
    from catalog_enhance.flows.evaluate import evaluate_models

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lake = copy_lake(tmp_path / "lake")
        summary = evaluate_models(lake_url=str(tmp_path / "lake"), classifier=TEST_CLASSIFIER)
    finally:
        torch.set_num_threads(threads)
    html = lake.read_bytes(summary.report_key).decode()
    images = DATA_URI.findall(html)
    assert len(images) > 50  # SR grid, GAN and CGAN samples, CycleGAN rows, plots

    page, stripped = tmp_path / "report.html", tmp_path / "stripped.html"
    page.write_text(html, encoding="utf-8")
    stripped.write_text(DATA_URI.sub('src=""', html), encoding="utf-8")
    size = {"width": 1280, "height": 4200, "timeout": 90}
    shot = np.asarray(Image.open(screenshot(page, tmp_path / "page.png", **size)).convert("RGB"))
    bare = np.asarray(Image.open(screenshot(stripped, tmp_path / "bare.png", **size)).convert("RGB"))

    assert shot.shape == bare.shape == (4200, 1280, 3)
    # Not a blank page: the page's own background and text are there...
    background = tuple(int(v) for v in shot[-1, -1])
    assert (shot != np.array(background)).any(axis=2).mean() > 0.2
    # ...and the images add many colours that text and tables alone do not have.
    assert distinct_colours(shot) > 3 * distinct_colours(bare) and distinct_colours(shot) > 2000
    changed = (np.abs(shot.astype(int) - bare.astype(int)).max(axis=2) > 24).mean()
    assert changed > 0.02, f"only {changed:.1%} of the page changed when its images were removed"
