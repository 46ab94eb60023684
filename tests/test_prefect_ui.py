"""The monitoring view a person gets: bench/prefect_ui_screenshot.py opens the local Prefect UI in
headless Chromium on a finished nightly run and saves a screenshot of that run's page."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_server import prefect_server

from catalog_enhance.flows.nightly import nightly
from catalog_enhance.demo_data.sample_catalog import build_sample_catalog

pytestmark = [pytest.mark.deployment, pytest.mark.browser]

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "prefect_ui_screenshot.py"


def load_script():
    spec = importlib.util.spec_from_file_location("prefect_ui_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_screenshot_shows_the_finished_nightly_run(tmp_path):
    feed = build_sample_catalog(tmp_path / "shop", tmp_path / "cache", source="skimage", max_objects=2,
                                canvas=192).feed_path
    with prefect_server(tmp_path / "prefect") as server:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            # The nightly trains the models without a version: one, tiny, so it takes seconds.
            state = nightly(feed=str(feed), lake_url=str(tmp_path / "lake"), models=["srcnn"], preset="tiny",
                            return_state=True)
            assert state.is_completed(), state.message
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(state.state_details.flow_run_id)

        # As a user runs it: no run id given, so it finds the newest completed nightly run itself.
        capture = load_script().main(["--ui", server.url, "--out", str(tmp_path / "ui.png"),
                                      "--width", "1280", "--height", "800"])

    assert capture.flow_run_id == str(run.id) and capture.flow_run_name == run.name
    assert capture.path.endswith(f"/runs/flow-run/{run.id}")
    # The run's page, not the dashboard: the run's name, its flow and its final state are on it.
    assert run.name in capture.text and "nightly-enhancement" in capture.text and "Completed" in capture.text

    image = Image.open(capture.png_path)
    assert image.size == (1280, 800)
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 20, "the screenshot is (nearly) blank"
    assert len(np.unique(pixels)) > 64
