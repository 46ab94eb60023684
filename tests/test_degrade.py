"""The degradation pipeline: bicubic by default, Real-ESRGAN's kernels, resize, noise and JPEG
stages and their statistics, the named configs, determinism by seed, config hash."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np
import pydantic
import pytest
import torch

from catalog_enhance.tasks.imaging.degrade import (
    KERNEL_FAMILIES,
    NAMED_DEGRADATIONS,
    BicubicStage,
    BlurStage,
    DegradationConfig,
    FinalStage,
    JpegStage,
    KernelProbabilities,
    NoiseStage,
    ResizeStage,
    SincStage,
    UnknownDegradation,
    add_noise,
    config_hash,
    degradation_name,
    degrade,
    draw_blur_kernel,
    lr_shape,
    named_degradation,
)
from catalog_enhance.tasks.imaging.kernels import (
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    sinc_kernel,
)
from catalog_enhance.tasks.imaging.resize import imresize


def _image(h=48, w=48, seed=0):
    return np.random.default_rng(seed).random((h, w, 3))


def _flat(value=0.5, h=96, w=96):
    return np.full((h, w, 3), value)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_default_is_bicubic_only_and_equals_imresize(scale):
    hr = _image()
    lr = degrade(hr, scale, DegradationConfig(), np.random.default_rng(0))
    assert lr.shape == (48 // scale, 48 // scale, 3)
    np.testing.assert_array_equal(lr, imresize(hr, 1 / scale))
    batch = torch.from_numpy(hr).permute(2, 0, 1)[None]
    lr_batch = degrade(batch, scale, DegradationConfig(), np.random.default_rng(0))
    torch.testing.assert_close(lr_batch, imresize(batch, 1 / scale))


def test_uint8_input_is_treated_as_0_255():
    hr = (_image() * 255).round().astype(np.uint8)
    lr = degrade(hr, 2, DegradationConfig(), np.random.default_rng(0))
    np.testing.assert_allclose(lr, imresize(hr.astype(np.float32) / 255, 0.5), atol=1e-6)


def test_gaussian_noise_has_the_configured_std():
    config = DegradationConfig(stages=[BicubicStage(), NoiseStage(sigma=(10.0, 10.0))])
    lr = degrade(_flat(h=256, w=256), 2, config, np.random.default_rng(0))
    noise = lr - 0.5
    assert abs(noise.std() * 255 - 10.0) < 0.3  # 3*128*128 samples: std error ~0.04
    assert abs(noise.mean()) < 0.002
    # Colour noise: channels independent.
    assert abs(np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]) < 0.05


def test_grey_noise_is_the_same_on_every_channel():
    config = DegradationConfig(stages=[BicubicStage(), NoiseStage(sigma=(5.0, 5.0), grey_probability=1.0)])
    lr = degrade(_flat(), 2, config, np.random.default_rng(0))
    assert lr.std() > 0.01
    np.testing.assert_array_equal(lr[..., 0], lr[..., 1])
    np.testing.assert_array_equal(lr[..., 0], lr[..., 2])


def test_poisson_noise_changes_pixels_and_stays_in_range():
    config = DegradationConfig(stages=[BicubicStage(), NoiseStage(gaussian_probability=0.0, poisson_scale=(1.0, 1.0))])
    hr = _image(96, 96)
    clean = imresize(hr, 0.5)
    lr = degrade(hr, 2, config, np.random.default_rng(0))
    assert lr.min() >= 0 and lr.max() <= 1
    assert 0.005 < np.abs(lr - np.clip(clean, 0, 1)).mean() < 0.2


def _smooth(h=96, w=96):
    y, x = np.mgrid[0:h, 0:w] / 16.0
    return np.stack([0.5 + 0.4 * np.sin(x), 0.5 + 0.4 * np.cos(y), 0.5 + 0.2 * np.sin(x + y)], axis=-1)


def test_jpeg_stage_output_is_a_decoded_jpeg():
    hr = _smooth()
    low = DegradationConfig(stages=[BicubicStage(), JpegStage(quality=(10, 10))])
    high = DegradationConfig(stages=[BicubicStage(), JpegStage(quality=(95, 95))])
    clean = np.clip(imresize(hr, 0.5), 0, 1)
    lr_low = degrade(hr, 2, low, np.random.default_rng(0))
    lr_high = degrade(hr, 2, high, np.random.default_rng(0))
    assert lr_low.shape == clean.shape and lr_low.dtype == clean.dtype
    # Decoded 8-bit pixels: every value is a multiple of 1/255.
    np.testing.assert_allclose(lr_low * 255, np.round(lr_low * 255), atol=1e-9)
    assert np.abs(lr_low - clean).mean() > 2 * np.abs(lr_high - clean).mean()


def test_blur_kernel_and_stage():
    kernel = gaussian_kernel(21, 2.0, 2.0, 0.0)
    assert abs(kernel.sum() - 1) < 1e-12
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-15)
    aniso = gaussian_kernel(21, 4.0, 0.5, 0.0)
    assert aniso[10, :].sum() > aniso[:, 10].sum()  # wide along x, narrow along y
    blur_first = DegradationConfig(stages=[BlurStage(sigma=(2.0, 2.0), kernel_sizes=(21, 21), sinc_probability=0.0), BicubicStage()])
    hr = _image(96, 96)
    blurred = degrade(hr, 2, blur_first, np.random.default_rng(0))
    assert blurred.std() < 0.5 * imresize(hr, 0.5).std()
    # A constant image stays constant (replicate padding), even with a kernel wider than the LR.
    small_blur = DegradationConfig(stages=[BicubicStage(), BlurStage(sigma=(3.0, 3.0), kernel_sizes=(41, 41), sinc_probability=0.5)])
    np.testing.assert_allclose(degrade(_flat(0.3, 24, 24), 3, small_blur, np.random.default_rng(0)), 0.3, atol=1e-12)


def _realistic():
    return DegradationConfig(
        stages=[
            BlurStage(probability=0.8),
            BicubicStage(),
            NoiseStage(gaussian_probability=0.0, probability=0.5),
            NoiseStage(grey_probability=0.4),
            JpegStage(),
        ]
    )


def test_same_seed_same_output_and_different_seed_differs():
    hr, config = _image(), _realistic()
    a = degrade(hr, 4, config, np.random.default_rng(123))
    b = degrade(hr, 4, config, np.random.default_rng(123))
    c = degrade(hr, 4, config, np.random.default_rng(124))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # A batch tensor with shared parameters gives the same as the single image.
    t = degrade(torch.from_numpy(hr).permute(2, 0, 1)[None], 4, config, np.random.default_rng(123))
    np.testing.assert_allclose(t[0].permute(1, 2, 0).numpy(), a, atol=1e-12)


def test_config_validation_and_parsing():
    with pytest.raises(pydantic.ValidationError, match="exactly one 'bicubic'"):
        DegradationConfig(stages=[NoiseStage()])
    with pytest.raises(pydantic.ValidationError, match="exactly one 'bicubic'"):
        DegradationConfig(stages=[BicubicStage(), BicubicStage()])
    with pytest.raises(pydantic.ValidationError):
        BlurStage(kernel_sizes=(7, 20))
    with pytest.raises(pydantic.ValidationError):
        JpegStage(quality=(90, 30))
    with pytest.raises(pydantic.ValidationError):
        DegradationConfig(stages=[{"kind": "sharpen"}, {"kind": "bicubic"}])
    with pytest.raises(pydantic.ValidationError, match="exactly one 'bicubic' or 'final'"):
        DegradationConfig(stages=[BicubicStage(), FinalStage()])
    with pytest.raises(pydantic.ValidationError, match="before the downscale"):
        DegradationConfig(stages=[FinalStage(), ResizeStage()])
    with pytest.raises(pydantic.ValidationError, match="factor"):
        ResizeStage(factor=(1.2, 1.5))
    with pytest.raises(pydantic.ValidationError, match="positive probability"):
        KernelProbabilities(iso=0, aniso=0, generalized_iso=0, generalized_aniso=0, plateau_iso=0, plateau_aniso=0)
    parsed = DegradationConfig.model_validate({"stages": [{"kind": "blur", "sigma": [1, 2]}, {"kind": "bicubic"}]})
    assert isinstance(parsed.stages[0], BlurStage) and parsed.stages[0].sigma == (1.0, 2.0)


def test_config_hash_is_stable_and_sensitive():
    config = _realistic()
    h = config_hash(config)
    assert len(h) == 12 and all(c in "0123456789abcdef" for c in h)
    assert config_hash(DegradationConfig.model_validate_json(config.model_dump_json())) == h
    assert config_hash(DegradationConfig()) != h
    changed = DegradationConfig(stages=[*config.stages[:-1], JpegStage(quality=(30, 90))])
    assert config_hash(changed) != h
    # Order of stages is part of the identity.
    swapped = DegradationConfig(stages=[BicubicStage(), BlurStage()])
    assert config_hash(swapped) != config_hash(DegradationConfig(stages=[BlurStage(), BicubicStage()]))


# -- Real-ESRGAN's kernels ------------------------------------------------------------------------


def _only(family: str, **fields) -> BlurStage:
    weights = {name: float(name == family) for name in KERNEL_FAMILIES}
    return BlurStage(kernels=KernelProbabilities(**weights), sinc_probability=0.0, **fields)


@pytest.mark.parametrize("family", KERNEL_FAMILIES)
def test_every_drawn_kernel_sums_to_one_and_has_its_symmetry(family):
    rng = np.random.default_rng(7)
    for _ in range(25):
        trace: list = []
        kernel = draw_blur_kernel(_only(family), rng, trace)
        (drawn,) = trace
        assert drawn["kernel"] == family and kernel.shape == (drawn["size"], drawn["size"])
        assert drawn["size"] % 2 == 1 and 7 <= drawn["size"] <= 21
        assert abs(kernel.sum() - 1) < 1e-6 and kernel.min() >= 0
        assert kernel.argmax() == kernel.size // 2  # peak at the centre
        # Every family is point-symmetric (x -> -x); the isotropic ones also under flips and transpose.
        np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-12)
        if not family.endswith("aniso"):
            np.testing.assert_allclose(kernel, kernel.T, atol=1e-12)
            np.testing.assert_allclose(kernel, kernel[::-1, :], atol=1e-12)
            assert drawn["sigma_x"] == drawn["sigma_y"] and drawn["theta"] == 0.0
        if family.startswith(("generalized", "plateau")):
            low, high = (0.5, 4.0) if family.startswith("generalized") else (1.0, 2.0)
            assert low <= drawn["beta"] <= high
        else:
            assert drawn["beta"] is None
        assert 0.2 <= min(drawn["sigma_x"], drawn["sigma_y"]) <= max(drawn["sigma_x"], drawn["sigma_y"]) <= 3.0


def test_anisotropic_kernels_are_not_isotropic():
    kernel = generalized_gaussian_kernel(21, 3.0, 0.6, math.pi / 6, 2.0)
    assert np.abs(kernel - kernel.T).max() > 1e-3
    plateau = plateau_kernel(21, 3.0, 0.6, 0.0, 1.5)
    assert plateau[10, :].sum() > 2 * plateau[:, 10].sum()  # wide along x


def test_generalized_gaussian_shape_follows_beta():
    gaussian = gaussian_kernel(21, 2.0, 2.0, 0.0)
    np.testing.assert_allclose(generalized_gaussian_kernel(21, 2.0, 2.0, 0.0, 1.0), gaussian, atol=1e-15)
    flat, peaky = (generalized_gaussian_kernel(21, 2.0, 2.0, 0.0, beta) for beta in (4.0, 0.5))
    ratio = lambda k: k[10, 11] / k[10, 10]  # noqa: E731 - one pixel off the centre, relative to it
    assert ratio(peaky) < ratio(gaussian) < ratio(flat) < 1
    # beta > 1: lighter tails than the Gaussian; beta < 1: heavier.
    assert flat[10, 18] / flat[10, 10] < gaussian[10, 18] / gaussian[10, 10] < peaky[10, 18] / peaky[10, 10]


def test_plateau_kernel_has_a_flat_top_and_heavy_tails():
    gaussian = gaussian_kernel(21, 2.0, 2.0, 0.0)
    plateau = plateau_kernel(21, 2.0, 2.0, 0.0, 2.0)
    assert abs(plateau.sum() - 1) < 1e-12
    # Within half a sigma the plateau is flatter than the Gaussian of the same sigma ...
    assert plateau[10, 11] / plateau[10, 10] > 0.93 > gaussian[10, 11] / gaussian[10, 10]
    # ... and 4 sigma out it keeps >10x the weight (polynomial against exponential decay).
    assert plateau[10, 18] / plateau[10, 10] > 10 * gaussian[10, 18] / gaussian[10, 10]


def test_sinc_kernel_is_a_circular_low_pass_with_its_cutoff():
    cutoff = math.pi / 2
    kernel = sinc_kernel(21, cutoff)
    assert abs(kernel.sum() - 1) < 1e-6 and kernel.min() < 0  # ringing lobes
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-15)
    np.testing.assert_allclose(kernel, kernel[::-1, :], atol=1e-15)
    n = 256
    response = np.abs(np.fft.fft2(kernel, s=(n, n)))
    w = np.fft.fftfreq(n) * 2 * np.pi
    radius = np.hypot(*np.meshgrid(w, w))
    passband, stopband = response[radius < 0.5 * cutoff], response[(radius > 1.5 * cutoff) & (radius < math.pi)]
    assert passband.min() > 0.85 and passband.max() < 1.1  # truncation ripple only
    assert stopband.max() < 0.1
    # A lower cutoff removes more: the response at 0.75 pi drops from ~1 to ~0.
    at = (radius > 0.7 * math.pi) & (radius < 0.8 * math.pi)
    assert np.abs(np.fft.fft2(sinc_kernel(21, 0.95 * math.pi), s=(n, n)))[at].min() > 0.8
    assert response[at].max() < 0.1


def test_kernel_families_are_drawn_with_their_probabilities():
    stage, rng = BlurStage(), np.random.default_rng(0)
    trace: list = []
    draws = 3000
    for _ in range(draws):
        draw_blur_kernel(stage, rng, trace)
    counts = Counter(entry["kernel"] for entry in trace)
    # Real-ESRGAN: sinc 0.1, the rest by kernel_prob [0.45, 0.25, 0.12, 0.03, 0.12, 0.03].
    expected = {"sinc": 0.1, **{name: 0.9 * getattr(stage.kernels, name) for name in KERNEL_FAMILIES}}
    for name, share in expected.items():
        sd = math.sqrt(share * (1 - share) / draws)
        assert abs(counts[name] / draws - share) < 4 * sd, (name, counts[name])
    sincs = [entry for entry in trace if entry["kernel"] == "sinc"]
    assert all((math.pi / 3 if e["size"] < 13 else math.pi / 5) <= e["cutoff"] <= math.pi for e in sincs)


# -- noise and JPEG statistics -------------------------------------------------------------------


def test_gaussian_noise_std_matches_the_drawn_sigma():
    stage = NoiseStage(sigma=(5.0, 25.0))
    sigmas = []
    for seed in range(6):
        trace: list = []
        noisy = add_noise(_flat(0.5, 128, 128), stage, np.random.default_rng(seed), trace)
        (drawn,) = trace
        assert drawn["model"] == "gaussian" and 5.0 <= drawn["sigma"] <= 25.0
        # 3*128*128 samples: relative std error ~0.4 %; 25/255 * 4 sd stays far from the clip at 0 and 1.
        assert abs((noisy - 0.5).std() * 255 - drawn["sigma"]) < 0.03 * drawn["sigma"]
        sigmas.append(drawn["sigma"])
    assert len(set(sigmas)) == len(sigmas)


def test_poisson_noise_variance_scales_with_intensity():
    # Bands of constant intensity, plus a ramp over all 256 levels (the levels set the photon count).
    levels = (0.05, 0.1, 0.2, 0.4)
    ramp = np.repeat((np.arange(256).reshape(2, 128) / 255)[..., None], 3, axis=-1)
    img = np.concatenate([np.full((64, 128, 3), v) for v in levels] + [ramp])
    stage = NoiseStage(gaussian_probability=0.0, poisson_scale=(1.0, 1.0))
    trace: list = []
    noisy = add_noise(img, stage, np.random.default_rng(0), trace)
    (drawn,) = trace
    assert drawn["model"] == "poisson" and drawn["photons_per_unit"] == 256
    variances = [(noisy[64 * i : 64 * (i + 1)] - v).var() for i, v in enumerate(levels)]
    for v, var in zip(levels, variances):
        assert abs(var / (v / 256) - 1) < 0.1, (v, var)  # Poisson: variance = mean / photons
    assert variances[3] / variances[0] == pytest.approx(8, rel=0.15)
    # Scale multiplies the noise: variance by its square.
    half = add_noise(img, NoiseStage(gaussian_probability=0.0, poisson_scale=(0.5, 0.5)), np.random.default_rng(0))
    assert (half[192:256] - 0.4).var() == pytest.approx(variances[3] / 4, rel=0.1)


def test_noise_model_and_grey_are_drawn_with_their_probabilities():
    stage = NoiseStage(gaussian_probability=0.5, grey_probability=0.4)
    rng, trace = np.random.default_rng(1), []
    for _ in range(400):
        add_noise(_flat(0.5, 8, 8), stage, rng, trace)
    gaussian = sum(e["model"] == "gaussian" for e in trace) / 400
    grey = sum(e["grey"] for e in trace) / 400
    assert abs(gaussian - 0.5) < 0.1 and abs(grey - 0.4) < 0.1


def test_jpeg_quality_drawn_stays_in_30_to_95():
    config = named_degradation("realistic")
    qualities = []
    for seed in range(60):
        trace: list = []
        degrade(_image(48, 48, seed), 2, config, np.random.default_rng(seed), trace)
        qualities += [entry["quality"] for entry in trace if entry["stage"] == "jpeg"]
    assert len(qualities) >= 100  # two JPEG stages a chain, both always applied
    assert min(qualities) >= 30 and max(qualities) <= 95
    assert min(qualities) < 40 and max(qualities) > 85  # the whole range is used


# -- resize, sizes, the chain ----------------------------------------------------------------------


def test_resize_stage_draws_direction_factor_and_method():
    stage = ResizeStage()
    trace: list = []
    rng = np.random.default_rng(3)
    for _ in range(300):
        config = DegradationConfig(stages=[stage, BicubicStage()])
        degrade(_image(40, 40), 2, config, rng, trace)
    resizes = [e for e in trace if e["stage"] == "resize"]
    directions = Counter(e["direction"] for e in resizes)
    assert abs(directions["down"] / 300 - 0.7) < 0.1 and abs(directions["up"] / 300 - 0.2) < 0.08
    assert set(e["method"] for e in resizes) == {"area", "bilinear", "bicubic"}
    for e in resizes:
        low, high = {"up": (1.0, 1.5), "down": (0.15, 1.0), "keep": (1.0, 1.0)}[e["direction"]]
        assert low <= e["factor"] <= high
        assert e["size"] == (max(1, round(40 * e["factor"])),) * 2


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", sorted(NAMED_DEGRADATIONS))
def test_named_configs_give_the_exact_lr_size_for_odd_hr_sizes(name, scale):
    config = named_degradation(name)
    for seed, (h, w) in enumerate([(37, 41), (33, 25), (49, 51)]):
        lr = degrade(_image(h, w, seed), scale, config, np.random.default_rng(seed))
        assert lr.shape == (*lr_shape(h, w, scale), 3) == imresize(_image(h, w), 1 / scale).shape


def test_realistic_is_seeded_reproducible_and_two_ordered():
    config, hr = named_degradation("realistic"), _image(64, 64)
    a = degrade(hr, 4, config, np.random.default_rng(123))
    b = degrade(hr, 4, config, np.random.default_rng(123))
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, degrade(hr, 4, config, np.random.default_rng(124)))
    # The batch tensor path draws the same parameters and gives the same pixels.
    t = degrade(torch.from_numpy(hr).permute(2, 0, 1)[None], 4, config, np.random.default_rng(123))
    np.testing.assert_allclose(t[0].permute(1, 2, 0).numpy(), a, atol=1e-9)
    # Both orders of the final step occur, and the second blur is skipped about 1 time in 5.
    firsts, second_blur = Counter(), Counter()
    for seed in range(200):
        trace: list = []
        degrade(_image(24, 24), 2, config, np.random.default_rng(seed), trace)
        stages = [e["stage"] for e in trace]
        assert stages.count("noise") == 2 and stages.count("final") == 1
        firsts[next(e["jpeg_first"] for e in trace if e["stage"] == "final")] += 1
        blurs = [e for e in trace if e["stage"] == "blur"]
        second_blur["applied" not in blurs[1]] += 1
    assert 70 < firsts[True] < 130
    assert abs(second_blur[True] / 200 - 0.8) < 0.1


def test_realistic_degrades_much_more_than_bicubic():
    y, x = np.mgrid[0:96, 0:96] / 6.0
    hr = np.stack([0.5 + 0.4 * np.sin(x), 0.5 + 0.4 * np.cos(y), 0.5 + 0.3 * np.sin(x + y)], axis=-1)
    clean = np.clip(imresize(hr, 0.5), 0, 1)
    errors = {
        name: np.mean([np.abs(degrade(hr, 2, named_degradation(name), np.random.default_rng(s)) - clean).mean()
                       for s in range(8)])
        for name in ("light", "realistic")
    }
    assert 0.002 < errors["light"] < errors["realistic"]


# -- names and hashes ------------------------------------------------------------------------------


def test_bicubic_is_todays_default_with_an_unchanged_hash():
    # The canonical JSON of main's default config (stages: bicubic alone): its hash names the
    # pairs already in lakes, so it must not move.
    main_default = '{"stages":[{"antialiasing":true,"kind":"bicubic"}]}'
    assert config_hash(named_degradation("bicubic")) == hashlib.sha256(main_default.encode()).hexdigest()[:12]
    assert named_degradation("bicubic") == DegradationConfig()
    assert degradation_name(DegradationConfig()) == "bicubic"


def test_named_configs_round_trip_and_unknown_names_are_listed():
    hashes = set()
    for name in NAMED_DEGRADATIONS:
        config = named_degradation(name)
        assert degradation_name(config) == name
        parsed = DegradationConfig.model_validate_json(config.model_dump_json())
        assert parsed == config and config_hash(parsed) == config_hash(config)
        hashes.add(config_hash(config))
    assert len(hashes) == len(NAMED_DEGRADATIONS)
    assert degradation_name(_realistic()) is None
    with pytest.raises(UnknownDegradation, match="unknown degradation 'realstic'; known: bicubic, light, realistic"):
        named_degradation("realstic")
    stages = named_degradation("realistic").stages
    assert [s.kind for s in stages] == ["blur", "resize", "noise", "jpeg", "blur", "resize", "noise", "final"]
    assert isinstance(stages[-1], FinalStage) and stages[-1].sinc == SincStage(probability=0.8)
