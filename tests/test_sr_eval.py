"""Side-by-side SR evaluation: per-image table, summaries with gains and losses, any photo folder."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from rich.console import Console

from catalog_enhance.tasks.imaging.degrade import BicubicStage, DegradationConfig, NoiseStage
from catalog_enhance.tasks.inference.enhancers import bicubic
from catalog_enhance.flows.rendering import sr_summary_table
from catalog_enhance.tasks.evaluate.sr_eval import (
    evaluate_sr,
    evaluate_sr_folder,
    summarize,
    write_sr_report_csv,
)
from catalog_enhance.tasks.imaging.metrics import psnr_y, quantize
from catalog_enhance.tasks.imaging.resize import imresize



def _hr(seed: int, size: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = 0.5 + 0.25 * np.sin(xx / (2.0 + seed))[..., None] * np.cos(yy / 3.0)[..., None] * np.array([1, 0.4, -0.6])
    return quantize(np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)).astype(np.float64) / 255.0


def _pairs(scale: int = 2):
    for i, category in enumerate(["shoes", "shoes", "bags"]):
        hr = _hr(i)
        yield hr, imresize(hr, 1 / scale), {"sku": f"sku-{i}", "category": category, "style": "studio"}


def _oracle_on_image(target_sku: str):
    """An enhancer that is perfect on one image and gives bicubic minus a constant elsewhere."""
    truth = {meta["sku"]: hr for hr, _, meta in _pairs()}
    lrs = {meta["sku"]: lr for _, lr, meta in _pairs()}

    def enhance(lr, scale):
        sku = next(k for k, v in lrs.items() if v.shape == lr.shape and np.array_equal(v, lr))
        return truth[sku] if sku == target_sku else np.clip(bicubic(lr, scale) - 3 / 255, 0, 1)

    return enhance


def _broken(lr, scale):
    raise RuntimeError("out of memory")


def test_evaluate_sr_scores_every_enhancer_on_every_image_and_survives_a_failure():
    enhancers = {"bicubic": bicubic, "oracle": _oracle_on_image("sku-1"), "broken": _broken}
    df = evaluate_sr(_pairs(), enhancers, scale=2)
    assert len(df) == 9 and list(df["enhancer"][:3]) == ["bicubic", "oracle", "broken"]
    assert {"image", "sku", "category", "style", "scale", "psnr_y", "ssim_y", "error"} <= set(df.columns)
    hr0, lr0, _ = next(_pairs())
    first = df[(df["sku"] == "sku-0") & (df["enhancer"] == "bicubic")].iloc[0]
    assert first["psnr_y"] == pytest.approx(psnr_y(bicubic(lr0, 2), hr0, 2))
    broken = df[df["enhancer"] == "broken"]
    assert broken["psnr_y"].isna().all() and broken["error"].str.contains("out of memory").all()
    assert (df[df["enhancer"] != "broken"]["error"] == "").all()


def test_summary_reports_gains_and_where_an_enhancer_loses_to_bicubic():
    enhancers = {"bicubic": bicubic, "oracle": _oracle_on_image("sku-1"), "broken": _broken}
    df = evaluate_sr(_pairs(), enhancers, scale=2)
    s = summarize(df).set_index(["scope", "enhancer"])
    per_image = df.pivot(index="sku", columns="enhancer", values="psnr_y")
    gains = per_image["oracle"] - per_image["bicubic"]
    overall = s.loc[("overall", "oracle")]
    assert overall["psnr_gain"] == pytest.approx(gains.mean())
    assert overall["share_worse"] == pytest.approx(2 / 3)  # worse on sku-0 and sku-2
    assert s.loc[("overall", "bicubic"), "psnr_gain"] == 0 and s.loc[("overall", "bicubic"), "share_worse"] == 0
    bags = s.loc[("category=bags", "oracle")]
    assert bags["n_images"] == 1 and bags["psnr_gain"] < 0 and bags["share_worse"] == 1.0
    assert s.loc[("category=shoes", "oracle"), "psnr_gain"] == pytest.approx(gains[["sku-0", "sku-1"]].mean())
    assert ("style=studio", "oracle") in s.index
    b = s.loc[("overall", "broken")]
    assert b["n_images"] == 0 and b["n_errors"] == 3 and np.isnan(b["psnr_gain"])

    console = Console(record=True, width=200)
    console.print(sr_summary_table(summarize(df)))
    text = console.export_text()
    assert "oracle" in text and "category=bags" in text and "67%" in text and "3 failed" in text


def test_hr_lr_size_mismatch_is_reported_per_image():
    hr, lr, meta = next(_pairs())
    df = evaluate_sr([(hr, lr[:-1], meta)], {"bicubic": bicubic}, scale=2)
    assert df["psnr_y"].isna().all() and "is not 2 x LR" in df["error"].iloc[0]


def _png(img: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(quantize(img)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_evaluate_sr_folder_degrades_like_the_pairs_and_skips_unreadable_files(tmp_path):
    (tmp_path / "shoes").mkdir()
    (tmp_path / "shoes" / "a.png").write_bytes(_png(_hr(0, 25)))  # 25 px: mod-cropped to 24
    (tmp_path / "b.png").write_bytes(_png(_hr(1, 24)))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(_png(_hr(2))[:60])
    (tmp_path / "tiny.png").write_bytes(_png(_hr(3, 8)))

    per_image, summary = evaluate_sr_folder(tmp_path, 2, enhancers={"bicubic": bicubic})
    scored = per_image[per_image["enhancer"] == "bicubic"]
    assert sorted(scored["file"]) == ["b.png", "shoes/a.png"]
    assert scored.set_index("file").loc["shoes/a.png", "category"] == "shoes"
    # The default degradation is MATLAB bicubic, quantised to 8 bits like a stored LR pair.
    hr = _hr(0, 25)[:24, :24]
    expected = psnr_y(bicubic(quantize(imresize(hr, 0.5)) / 255.0, 2), hr, 2)
    assert scored.set_index("file").loc["shoes/a.png", "psnr_y"] == pytest.approx(expected)
    skipped = per_image[per_image["enhancer"] == ""].set_index("file")["error"]
    assert set(skipped.index) == {"notes.txt", "broken.png", "tiny.png"}
    assert "not_an_image" in skipped["notes.txt"] and "too small" in skipped["tiny.png"]
    overall = summary[summary["scope"] == "overall"].iloc[0]
    assert overall["n_images"] == 2 and set(summary["scope"]) == {"overall", "category=shoes"}

    noisy = DegradationConfig(stages=(BicubicStage(), NoiseStage(sigma=(20.0, 20.0))))
    again, _ = evaluate_sr_folder(tmp_path, 2, noisy, {"bicubic": bicubic})
    repeat, _ = evaluate_sr_folder(tmp_path, 2, noisy, {"bicubic": bicubic})
    noisy_scores = again[again["enhancer"] == "bicubic"]["psnr_y"].to_numpy()
    assert (noisy_scores < scored["psnr_y"].to_numpy() - 1).all()  # the configured pipeline is applied
    np.testing.assert_array_equal(noisy_scores, repeat[repeat["enhancer"] == "bicubic"]["psnr_y"])  # seeded

    csv = write_sr_report_csv(per_image, tmp_path / "out" / "sr.csv")
    back = pd.read_csv(csv, keep_default_na=False)
    assert len(back) == len(per_image) and "psnr_y" in back.columns


def test_a_folder_that_does_not_exist_is_a_clear_error(tmp_path):
    with pytest.raises(NotADirectoryError, match="not a folder"):
        evaluate_sr_folder(tmp_path / "nope", 2)
