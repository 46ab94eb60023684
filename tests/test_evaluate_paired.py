"""`evaluate-sr --hr DIR --lr DIR`: the user's own low-quality captures scored against their good
versions (issue 12, item 6): pairing by sub-folder and stem (with an LR template), the scale from
the sizes, every unusable file reported while the rest is scored, the same scores as the synthetic
mode when the LR folder holds its degradations, one-line CLI errors, and a named SR model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from catalog_enhance.flows import cli
from catalog_enhance.tasks.evaluate.sr_eval import evaluate_sr_folder, folder_pairs
from catalog_enhance.tasks.evaluate.sr_paired import (
    PairedFolderError,
    evaluate_sr_paired,
    infer_scale,
    match_files,
    pair_folders,
)
from catalog_enhance.tasks.imaging.degrade import DegradationConfig
from catalog_enhance.tasks.imaging.metrics import psnr_y, quantize, ssim_y
from catalog_enhance.tasks.imaging.resize import imresize
from catalog_enhance.tasks.inference.enhancers import bicubic, classical_enhancers

CLEAN_ENV = {name: None for name in ("CE_LOCAL_ROOTS", "CE_MAX_IMAGE_PIXELS", "CE_LAKE_URL", "CE_CREATE_BUCKET")}


def _photo(seed: int, height: int, width: int | None = None) -> np.ndarray:
    """A smooth coloured pattern with a little noise, float RGB on the 8-bit grid."""
    width = width or height
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = 0.5 + 0.3 * np.sin(xx / (2.5 + seed))[..., None] * np.cos(yy / 3.5)[..., None] * np.array([1, 0.5, -0.7])
    return quantize(np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)).astype(np.float64) / 255.0


def _save(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(quantize(img)).save(path)
    return path


def _pair(root: Path, name: str, hr: np.ndarray, scale: int, lr_name: str | None = None) -> np.ndarray:
    """HR under root/hr/name, its MATLAB-bicubic LR under root/lr/(lr_name or name); returns the LR."""
    _save(root / "hr" / name, hr)
    h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
    lr = quantize(imresize(hr[:h, :w], 1 / scale)).astype(np.float64) / 255.0 if scale > 1 else hr
    _save(root / "lr" / (lr_name or name), lr)
    return lr


def test_files_pair_by_sub_folder_and_stem_with_a_template_and_every_leftover_is_named(tmp_path):
    _pair(tmp_path, "shoes/a.png", _photo(0, 32), 2, "shoes/ax2.bmp")  # the extension may differ
    _pair(tmp_path, "b.png", _photo(1, 32), 2, "bx2.png")
    _pair(tmp_path, "bags/b.png", _photo(2, 32), 2, "bags/bx2.png")  # same stem, another category
    _save(tmp_path / "hr" / "lonely.png", _photo(3, 32))
    _save(tmp_path / "lr" / "shoes" / "stray.png", _photo(4, 16))
    _save(tmp_path / "lr" / "bx2.tif", _photo(1, 16))  # a second candidate for b.png: ambiguous
    pairs, problems = match_files(tmp_path / "hr", tmp_path / "lr", "{}x2")
    assert [(p.name, p.lr_name, p.category) for p in pairs] == [
        ("bags/b.png", "bags/bx2.png", "bags"), ("shoes/a.png", "shoes/ax2.bmp", "shoes")]
    errors = {p["file"] or p["lr_file"]: p["error"] for p in problems}
    assert errors["b.png"] == "b.png: ambiguous LR partner (bx2.png, bx2.tif)"
    assert errors["lonely.png"] == "lonely.png: no LR partner (lonelyx2.* under --lr)"
    assert errors["shoes/stray.png"] == "shoes/stray.png: no HR partner under --hr (LR template '{}x2')"
    assert len(errors) == 3

    # Without the template nothing pairs: a whole-input error naming what is wrong.
    with pytest.raises(PairedFolderError, match="no HR file in --hr .* has an LR partner .*no LR partner"):
        pair_folders(tmp_path / "hr", tmp_path / "lr")
    with pytest.raises(PairedFolderError, match="must contain {} exactly once"):
        match_files(tmp_path / "hr", tmp_path / "lr", "x2")
    with pytest.raises(NotADirectoryError, match="--lr .*nope: not a folder"):
        match_files(tmp_path / "hr", tmp_path / "nope")


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_the_scale_is_inferred_from_the_sizes_and_an_odd_hr_is_cropped(tmp_path, scale):
    _pair(tmp_path, "a.png", _photo(0, 48), scale)
    _pair(tmp_path, "cat/b.png", _photo(1, 48 + scale - 1, 48), scale)  # HR scale - 1 rows too tall at x2, x4
    evaluation = evaluate_sr_paired(tmp_path / "hr", tmp_path / "lr", {"bicubic": bicubic})
    assert evaluation.folders.scale == scale and evaluation.folders.inferred
    assert evaluation.folders.cropped == ([] if scale == 1 else ["cat/b.png"])
    scored = evaluation.per_image.set_index("file")
    assert set(scored.index) == {"a.png", "cat/b.png"} and (scored["mode"] == "paired").all()
    assert (scored["scale"] == scale).all() and (scored["error"] == "").all()
    # Scored against the HR cropped to scale x LR, border = scale.
    hr, lr = _photo(1, 48 + scale - 1, 48)[:48], np.asarray(Image.open(tmp_path / "lr" / "cat" / "b.png")) / 255.0
    assert scored.loc["cat/b.png", "psnr_y"] == pytest.approx(psnr_y(bicubic(lr, scale), hr, scale))
    if scale == 1:  # same size: "bicubic" is the capture itself, so a perfect score
        assert scored.loc["a.png", "psnr_y"] >= 99 and scored.loc["a.png", "ssim_y"] == pytest.approx(1.0)
    summary = evaluation.summary
    assert (summary["mode"] == "paired").all() and set(summary["scope"]) == {"overall", "category=cat"}


def test_pairs_at_another_scale_are_named_while_the_rest_is_scored(tmp_path):
    _pair(tmp_path, "a.png", _photo(0, 32), 2)
    _pair(tmp_path, "b.png", _photo(1, 32), 2)
    _pair(tmp_path, "c.png", _photo(2, 64), 4)
    _save(tmp_path / "hr" / "d.png", _photo(3, 32))
    _save(tmp_path / "lr" / "d.png", _photo(3, 20))  # 32 / 20: not an integer scale
    evaluation = evaluate_sr_paired(tmp_path / "hr", tmp_path / "lr", {"bicubic": bicubic})
    per_image = evaluation.per_image
    assert evaluation.folders.scale == 2
    assert sorted(per_image[per_image["enhancer"] == "bicubic"]["file"]) == ["a.png", "b.png"]
    errors = per_image[per_image["enhancer"] == ""].set_index("file")["error"]
    assert errors["c.png"] == "c.png: HR 64x64 is not 2 x LR 16x16 of c.png (x4); the other pairs are x2"
    assert errors["d.png"] == "d.png: HR 32x32 is not 2 x LR 20x20 of d.png; the other pairs are x2"
    assert evaluation.summary.iloc[0]["n_images"] == 2

    # A given --scale is checked, not inferred.
    given = pair_folders(tmp_path / "hr", tmp_path / "lr", scale=4)
    assert [p.name for p in given.pairs] == ["c.png"] and not given.inferred
    assert "a.png: HR 32x32 is not 4 x LR 16x16 of a.png (x2); --scale is x4" in [p["error"] for p in given.problems]

    # As many pairs at x2 as at x4: no majority, the user must say.
    _pair(tmp_path, "e.png", _photo(4, 64), 4)
    with pytest.raises(PairedFolderError, match=r"disagree on the scale \(x2: a.png, b.png; x4: c.png, e.png\); pass --scale"):
        pair_folders(tmp_path / "hr", tmp_path / "lr")


def test_infer_scale_rules():
    assert infer_scale((64, 48), (32, 24)) == 2 and infer_scale((65, 49), (32, 24)) == 2
    assert infer_scale((66, 48), (32, 24)) is None  # two rows too many at x2: not a crop
    assert infer_scale((64, 48), (16, 24)) is None  # x4 tall, x2 wide
    assert infer_scale((30, 30), (30, 30)) == 1 and infer_scale((30, 30), (31, 30)) is None


def test_corrupt_files_and_decompression_bombs_are_reported_with_their_reason(tmp_path):
    _pair(tmp_path, "good.png", _photo(0, 32), 2)
    _pair(tmp_path, "big.png", _photo(1, 64), 2)
    _pair(tmp_path, "broken.png", _photo(2, 32), 2)
    (tmp_path / "lr" / "broken.png").write_bytes((tmp_path / "lr" / "broken.png").read_bytes()[:70])
    _pair(tmp_path, "tiny.png", _photo(3, 8), 2)
    folders = pair_folders(tmp_path / "hr", tmp_path / "lr", max_pixels=32 * 32, max_bytes=10**6)
    assert [p.name for p in folders.pairs] == ["good.png"]
    errors = {p["file"]: p["error"] for p in folders.problems}
    assert errors["big.png"].startswith("decompression_bomb: big.png: 64x64 = 4096 pixels exceeds the limit of 1024")
    assert errors["broken.png"].startswith(("truncated: broken.png", "corrupt: broken.png"))
    assert errors["tiny.png"] == "tiny.png: 8x8 is too small to score at x2"
    with pytest.raises(PairedFolderError, match="no pair in --hr/--lr can be scored at x2: .*big.png"):
        pair_folders(tmp_path / "hr", tmp_path / "lr", max_pixels=16 * 16, max_bytes=10**6)


def test_lr_holding_the_synthetic_degradations_scores_exactly_like_the_synthetic_mode(tmp_path):
    """The cross-check: both modes share the decoder, the crop and the scoring, so they must agree
    to the last digit; a shifted crop, a border or a colour conversion of one mode would not."""
    for i, (name, size) in enumerate([("a.png", 34), ("shoes/b.png", 33), ("shoes/c.png", 40)]):
        _save(tmp_path / "hr" / name, _photo(i, size, size + 3))
    config = DegradationConfig()
    for _, lr, meta in folder_pairs(tmp_path / "hr", 2, config, seed=7):
        _save(tmp_path / "lr" / meta["file"], lr)
    synthetic, synthetic_summary = evaluate_sr_folder(tmp_path / "hr", 2, config, seed=7)
    paired = evaluate_sr_paired(tmp_path / "hr", tmp_path / "lr")
    assert paired.folders.cropped == ["a.png", "shoes/b.png", "shoes/c.png"]  # odd widths (and b's height)
    key = ["file", "enhancer"]
    left = synthetic.set_index(key)[["psnr_y", "ssim_y"]].sort_index()
    right = paired.per_image.set_index(key)[["psnr_y", "ssim_y"]].sort_index()
    assert len(left) == 3 * len(classical_enhancers()) and left.notna().all().all()
    pd.testing.assert_frame_equal(left, right)
    columns = ["scope", "enhancer", "psnr_y", "ssim_y", "psnr_gain"]
    pd.testing.assert_frame_equal(synthetic_summary[columns], paired.summary[columns])
    assert set(synthetic["mode"]) == {"synthetic"} and set(paired.per_image["mode"]) == {"paired"}


def run(args: list[str]):
    result = CliRunner().invoke(cli.app, args, env=CLEAN_ENV)
    return result.exit_code, result.output.splitlines()


def test_cli_mistakes_are_one_line_and_exit_2(tmp_path):
    _pair(tmp_path, "a.png", _photo(0, 32), 2)
    hr, lr, lake = str(tmp_path / "hr"), str(tmp_path / "lr"), ["--lake", str(tmp_path / "lake")]
    cases = [
        (["--images", hr, "--hr", hr, "--lr", lr], "input error: --images (photos degraded here) and --hr/--lr "
                                                   "(your own pairs) are exclusive; pass one"),
        (["--hr", hr], "input error: --lr is missing: --hr and --lr go together"),
        ([], "input error: pass --images DIR (photos degraded here) or --hr DIR --lr DIR (your own pairs)"),
        (["--images", hr, "--lr-template", "{}x2"], "input error: --lr-template goes with --hr/--lr"),
        (["--hr", hr, "--lr", str(tmp_path / "nope")], f"input error: --lr {tmp_path / 'nope'}: not a folder"),
        (["--hr", hr, "--lr", lr, "--lr-template", "{}x2"],
         f"input error: no HR file in --hr {hr} has an LR partner in --lr {lr} (LR template '{{}}x2'): "
         "a.png: no LR partner (ax2.* under --lr), a.png: no HR partner under --hr (LR template '{}x2')"),
        (["--hr", hr, "--lr", lr, "--scale", "3"],
         "input error: no pair in --hr/--lr can be scored at x3: a.png: HR 32x32 is not 3 x LR 16x16 of a.png (x2); --scale is x3"),
    ]
    for args, message in cases:
        code, lines = run(["evaluate-sr", *args, *lake])
        assert code == 2 and lines == [message], (args, lines)


def test_cli_scores_paired_folders_and_says_the_lr_is_the_users(tmp_path):
    _pair(tmp_path, "a.png", _photo(0, 32), 2)
    _pair(tmp_path, "b.png", _photo(1, 33), 2)
    _save(tmp_path / "lr" / "orphan.png", _photo(2, 16))
    out = tmp_path / "scores.csv"
    # A fresh process, through the real entry point: a run that gets as far as Prefect's logging
    # binds its console handler to the stream it is given, which CliRunner closes afterwards.
    command = [sys.executable, "-c", "from catalog_enhance.flows.cli import main; main()",
               "evaluate-sr", "--hr", str(tmp_path / "hr"), "--lr", str(tmp_path / "lr"),
               "--out", str(out), "--lake", str(tmp_path / "lake")]
    env = {**{k: v for k, v in os.environ.items() if k not in CLEAN_ENV}, "PYTHONPATH": os.pathsep.join(sys.path),
           "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    code, lines = done.returncode, (done.stdout + done.stderr).splitlines()
    text = " ".join(" ".join(lines).split())  # the console wraps long lines
    assert code == 0, text
    assert "no SR model trained for x2" in text and "classical baselines only" in text
    assert f"paired: the LR images are your captures from --lr {tmp_path / 'lr'}, not a degradation made here; " \
           "x2 inferred from the sizes; 2 pair(s), 1 file(s) skipped" in text
    assert "1 HR image(s) cropped bottom/right to 2 x LR: b.png" in text and "your LR captures" in text
    per_image = pd.read_csv(out, keep_default_na=False)
    assert set(per_image["mode"]) == {"paired"} and set(per_image["lr_file"]) == {"a.png", "b.png", "orphan.png"}
    orphan = per_image[per_image["lr_file"] == "orphan.png"].iloc[0]
    assert orphan["enhancer"] == "" and "no HR partner" in orphan["error"]
    assert set(pd.read_csv(out.with_suffix(".summary.csv"))["mode"]) == {"paired"}


def test_a_named_sr_model_is_scored_on_the_pairs_through_its_inference_path(tmp_path):
    from evaluation_lake import train_and_register
    from sr_lake import build_sr_lake

    from catalog_enhance.flows.evaluate import evaluate_sr_command
    from catalog_enhance.tasks.evaluate.sr_test import sr_enhancer
    from catalog_enhance.tasks.inference.trained import load_trained
    from catalog_enhance.tasks.lake.storage import Lake

    lake = Lake.from_url(str(tmp_path / "lake"))
    build_sr_lake(lake, train=4, val=1, size=32)
    row = train_and_register(lake, "srcnn", steps=10)
    lrs = {name: _pair(tmp_path, name, _photo(i, 40), 2) for i, name in enumerate(["a.png", "shoes/b.png"])}
    result = evaluate_sr_command(model="srcnn", lake_url=str(tmp_path / "lake"), out=tmp_path / "s.csv",
                                 hr=tmp_path / "hr", lr=tmp_path / "lr")
    label = f"srcnn {row['version']}"
    assert result.model == label and result.mode == "paired" and result.scale == 2
    scored = result.per_image[result.per_image["enhancer"] == label].set_index("file")
    assert set(scored.index) == {"a.png", "shoes/b.png"}
    enhance = sr_enhancer(load_trained(lake, row))
    sr = enhance(lrs["shoes/b.png"], 2)
    hr = _photo(1, 40)
    assert scored.loc["shoes/b.png", "psnr_y"] == pytest.approx(psnr_y(sr, hr, 2))
    assert scored.loc["shoes/b.png", "ssim_y"] == pytest.approx(ssim_y(sr, hr, 2))

    # Same-size pairs are x1: the x2 model does not apply, said so, not "pass --scale".
    for name in ("a.png", "shoes/b.png"):
        _save(tmp_path / "lr1" / name, _photo(5, 40))
    with pytest.raises(ValueError, match=r"trained for x2, not x1; the pairs in --hr/--lr are x1; pass another model"):
        evaluate_sr_command(model="srcnn", lake_url=str(tmp_path / "lake"), out=tmp_path / "s1.csv",
                            hr=tmp_path / "hr", lr=tmp_path / "lr1")
    x1 = evaluate_sr_command(lake_url=str(tmp_path / "lake"), out=tmp_path / "s1.csv", hr=tmp_path / "hr",
                             lr=tmp_path / "lr1")
    assert x1.model is None and x1.scale == 1
    assert "no SR model trained for x1" in x1.note and "identity and classical restorations only" in x1.note
    assert "'bicubic' is the LR image itself (identity)" in x1.note
