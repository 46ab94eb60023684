"""Architecture tests: shapes, conditioning, padding behaviour, cost figures and the registry."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from catalog_enhance.models import get_model, get_spec, list_models, register_model
from catalog_enhance.models.cgan import CGAN, ConditionalGenerator, ProjectionDiscriminator
from catalog_enhance.models.cyclegan import CycleGAN, ImageHistoryBuffer, PatchDiscriminator, ResnetGenerator
from catalog_enhance.models.dcgan import DCGAN, DCGANDiscriminator, DCGANGenerator
from catalog_enhance.models.espcn import ESPCN
from catalog_enhance.models.srcnn import SRCNN


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_macs_counted(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Multiply-accumulates torch's own FLOP counter sees (it counts a conv MAC as 2 FLOPs)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = model(x)
    return counter.get_total_flops() // 2, out


# ---------------------------------------------------------------- super-resolution


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("variant", ["915", "955"])
@pytest.mark.parametrize("channels", [1, 3])
def test_srcnn_keeps_the_upscaled_size(scale, variant, channels):
    model = get_model("srcnn", channels=channels, variant=variant)
    upscaled = torch.rand(2, channels, 7 * scale, 5 * scale)
    assert model(upscaled).shape == upscaled.shape
    assert model.upsamples_inside is False


def test_srcnn_955_parameter_count_is_the_papers():
    model = SRCNN(channels=1, variant="955")
    assert n_params(model) == (9 * 9 * 1 * 64 + 64) + (5 * 5 * 64 * 32 + 32) + (5 * 5 * 32 * 1 + 1)
    assert n_params(SRCNN(channels=1, variant="915")) == (9 * 9 * 64 + 64) + (64 * 32 + 32) + (5 * 5 * 32 + 1)


def test_srcnn_residual_adds_the_input():
    direct = SRCNN(residual=False)
    residual = SRCNN(residual=True)
    residual.load_state_dict(direct.state_dict())
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(residual(x), x + direct(x))


def test_srcnn_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        SRCNN(variant="999")


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_espcn_upscales_by_its_scale(scale, channels):
    model = get_model("espcn", scale=scale, channels=channels, features=16, mid=8)
    lr = torch.rand(2, channels, 9, 6)
    assert model(lr).shape == (2, channels, 9 * scale, 6 * scale)
    assert model.upsamples_inside is True
    assert model.scale == scale


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_espcn_starts_as_exact_bicubic(scale):
    lr = torch.rand(2, 1, 8, 11)
    bicubic = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)
    with torch.no_grad():
        assert torch.equal(ESPCN(scale)(lr), bicubic)
        # A small random last layer is close to, but not exactly, bicubic.
        out = ESPCN(scale, zero_init_last=False)(lr)
    assert not torch.equal(out, bicubic)
    assert (out - bicubic).abs().max() < 0.05


def test_espcn_learns_a_correction_over_bicubic():
    torch.manual_seed(0)
    hr = torch.rand(4, 1, 16, 16)
    lr = F.avg_pool2d(hr, 2)
    model = ESPCN(2, features=16, mid=8)
    bicubic_loss = F.mse_loss(model(lr), hr).item()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(30):
        loss = F.mse_loss(model(lr), hr)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert F.mse_loss(model(lr), hr).item() < 0.9 * bicubic_loss


@pytest.mark.parametrize("variant", ["915", "955"])
def test_srcnn_macs_per_pixel_match_torch_flop_counter(variant):
    model = SRCNN(variant=variant)
    macs, out = conv_macs_counted(model, torch.rand(1, 1, 10, 12))
    assert macs == model.macs_per_output_pixel() * out[0, 0].numel()
    assert SRCNN(variant="955").macs_per_output_pixel() == 9 * 9 * 64 + 5 * 5 * 64 * 32 + 5 * 5 * 32


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_espcn_macs_per_pixel_match_torch_flop_counter(scale):
    model = ESPCN(scale)
    macs, out = conv_macs_counted(model, torch.rand(1, 1, 10, 12))
    assert macs == pytest.approx(model.macs_per_output_pixel() * out[0, 0].numel())
    # The point of the fast model: an order of magnitude cheaper per output pixel than SRCNN 9-5-5.
    assert model.macs_per_output_pixel() * 10 < SRCNN().macs_per_output_pixel()


# ---------------------------------------------------------------- GAN / CGAN


@pytest.mark.parametrize("image_size", [32, 64, 128])
def test_dcgan_shapes(image_size):
    gan = get_model("gan", z_dim=16, channels=3, image_size=image_size, base=8)
    assert isinstance(gan, DCGAN) and gan.z_dim == 16 and gan.image_size == image_size
    fake = gan.generator(torch.randn(3, 16))
    assert fake.shape == (3, 3, image_size, image_size)
    assert fake.min() >= -1 and fake.max() <= 1
    assert gan.generator(torch.randn(3, 16, 1, 1)).shape == fake.shape
    logits = gan.discriminator(fake)
    assert logits.shape == (3,)
    # Logits, not probabilities: the trainer applies BCEWithLogits.
    assert not isinstance(list(gan.discriminator.modules())[-1], torch.nn.Sigmoid)


def test_dcgan_uses_dcgan_init():
    generator = DCGANGenerator(z_dim=64, image_size=32, base=32)
    weight = generator.net[0].weight
    assert abs(weight.std().item() - 0.02) < 0.002
    assert DCGANDiscriminator(image_size=32, base=8).features[0].weight.std().item() == pytest.approx(0.02, rel=0.2)


@pytest.mark.parametrize("bad_size", [48, 4, 100])
def test_dcgan_rejects_sizes_that_are_not_powers_of_two(bad_size):
    with pytest.raises(ValueError, match="power of two"):
        DCGANGenerator(image_size=bad_size)


def tiny_cgan(num_classes=(5, 3)) -> CGAN:
    model = get_model("cgan", num_classes=num_classes, z_dim=16, channels=3, image_size=32, base=8, embed_dim=4)
    return model.eval()  # BatchNorm on running stats: each sample's output depends on that sample only


def test_cgan_shapes():
    cgan = tiny_cgan()
    assert cgan.num_classes == (5, 3) and cgan.z_dim == 16 and cgan.image_size == 32
    y = torch.tensor([[0, 1], [4, 2]])
    fake = cgan.generator(torch.randn(2, 16), y)
    assert fake.shape == (2, 3, 32, 32)
    assert cgan.discriminator(fake, y).shape == (2,)


@pytest.mark.parametrize("condition", [0, 1])
def test_cgan_generator_and_discriminator_respond_to_each_condition(condition):
    cgan = tiny_cgan()
    z = torch.randn(2, 16)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = torch.tensor([[0, 0], [1, 1]])
    y_changed = y.clone()
    y_changed[:, condition] += 1
    with torch.no_grad():
        g_same, g_changed = cgan.generator(z, y), cgan.generator(z, y_changed)
        d_same, d_changed = cgan.discriminator(x, y), cgan.discriminator(x, y_changed)
        assert torch.equal(g_same, cgan.generator(z, y))  # deterministic, so the change is the label's
    assert (g_same - g_changed).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    assert (d_same - d_changed).abs().min() > 1e-6


def test_projection_discriminator_is_psi_plus_inner_products():
    disc = ProjectionDiscriminator((5, 3), channels=3, image_size=32, base=8).eval()
    x = torch.rand(3, 3, 32, 32)
    y = torch.tensor([[0, 2], [3, 1], [4, 0]])
    with torch.no_grad():
        h = disc.phi(x)
        expected = disc.psi(h).squeeze(1)
        expected = expected + (disc.embeddings[0](y[:, 0]) * h).sum(1) + (disc.embeddings[1](y[:, 1]) * h).sum(1)
        assert torch.allclose(disc(x, y), expected, atol=1e-5)


def test_cgan_validates_labels():
    generator = ConditionalGenerator((5, 3), z_dim=8, image_size=16, base=4).eval()
    z = torch.randn(2, 8)
    with pytest.raises(ValueError, match="shape"):
        generator(z, torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match=r"condition 1: labels \[3\]"):
        generator(z, torch.tensor([[0, 3], [1, 0]]))
    single = ConditionalGenerator((5,), z_dim=8, image_size=16, base=4).eval()
    assert torch.equal(single(z, torch.tensor([1, 2])), single(z, torch.tensor([[1], [2]])))


# ---------------------------------------------------------------- CycleGAN


def test_cyclegan_container_and_shapes():
    model = get_model("cyclegan", channels=3, ngf=4, ndf=4, n_blocks=1)
    assert isinstance(model, CycleGAN)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    y_fake = model.G_XY(x)
    assert y_fake.shape == x.shape and y_fake.abs().max() <= 1
    assert model.G_YX(y_fake).shape == x.shape
    assert model.D_X(x).shape == model.D_Y(y_fake).shape == (1, 1, 2, 2)


@pytest.mark.parametrize("size", [(37, 53), (64, 48), (5, 3), (1, 9)])
def test_resnet_generator_returns_any_input_size(size):
    generator = ResnetGenerator(3, 3, ngf=4, n_blocks=2)
    x = torch.rand(1, 3, *size)
    assert generator(x).shape == x.shape


def test_resnet_generator_crop_matches_padded_run():
    generator = ResnetGenerator(3, 3, ngf=4, n_blocks=1)
    x = torch.rand(1, 3, 37, 53)
    padded = F.pad(x, (0, 3, 0, 3), mode="reflect")  # 40 x 56: no internal padding needed
    with torch.no_grad():
        assert torch.allclose(generator(x), generator(padded)[..., :37, :53], atol=1e-6)


def test_resnet_generator_matches_the_papers_size():
    # Zhu et al.'s 9-block generator at ngf=64 has 11,378,179 parameters (authors' code reports 11.378 M).
    assert n_params(ResnetGenerator()) == 11_378_179


def test_patchgan_is_30x30_with_a_70px_receptive_field():
    disc = PatchDiscriminator(3, ndf=4, n_layers=3, norm="none")
    assert disc.receptive_field() == 70
    x = torch.rand(1, 3, 256, 256, requires_grad=True)
    logits = disc(x)
    assert logits.shape == (1, 1, 30, 30)
    # The input pixels one central logit depends on form a 70 x 70 square.
    logits[0, 0, 15, 15].backward()
    rows, cols = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 == 70
    assert cols.max() - cols.min() + 1 == 70
    assert PatchDiscriminator(3, ndf=4, n_layers=3).receptive_field() == 70


def test_history_buffer_fills_then_mixes_old_and_new():
    buffer = ImageHistoryBuffer(pool_size=4, seed=0)
    first = torch.rand(4, 3, 8, 8)
    assert torch.equal(buffer.query(first), first)  # filling: returned as is
    assert len(buffer) == 4
    newer = torch.rand(64, 3, 8, 8)
    out = buffer.query(newer)
    assert out.shape == newer.shape
    is_new = torch.tensor([torch.equal(o, n) for o, n in zip(out, newer)])
    assert 0 < is_new.sum() < len(newer)  # about half are swapped for stored images
    pool = torch.cat([first, newer])
    assert all(any(torch.equal(o, p) for p in pool) for o in out)


def test_history_buffer_returns_detached_images_and_pool_zero_passes_through():
    fake = torch.rand(2, 3, 4, 4, requires_grad=True) * 2
    assert not ImageHistoryBuffer(pool_size=2).query(fake).requires_grad
    assert torch.equal(ImageHistoryBuffer(pool_size=0).query(fake), fake.detach())


def test_history_buffer_is_deterministic_and_resumable():
    batches = [torch.rand(3, 1, 4, 4) for _ in range(8)]

    def run(buffer, items):
        return [buffer.query(b) for b in items]

    a, b = ImageHistoryBuffer(5, seed=7), ImageHistoryBuffer(5, seed=7)
    out_a, out_b = run(a, batches), run(b, batches)
    assert all(torch.equal(p, q) for p, q in zip(out_a, out_b))
    other = run(ImageHistoryBuffer(5, seed=8), batches)
    assert not all(torch.equal(p, q) for p, q in zip(out_a, other))

    # Stop after 4 batches, save through weights_only torch.load, resume: same outputs as uninterrupted.
    interrupted = ImageHistoryBuffer(5, seed=7)
    run(interrupted, batches[:4])
    saved = io.BytesIO()
    torch.save(interrupted.state_dict(), saved)
    saved.seek(0)
    resumed = ImageHistoryBuffer(5, seed=123)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    assert all(torch.equal(p, q) for p, q in zip(run(resumed, batches[4:]), out_a[4:]))


# ---------------------------------------------------------------- registry


def test_registry_lists_every_architecture_by_kind():
    assert list_models() == ["catalog_classifier", "cgan", "cyclegan", "edsr", "espcn", "espcn_restore", "gan",
                             "rlfn", "srcnn"]
    assert list_models("sr") == ["edsr", "espcn", "rlfn", "srcnn"]
    assert list_models("restore") == ["espcn_restore"]
    assert list_models(kind="cyclegan") == ["cyclegan"]
    assert list_models(kind="classifier") == ["catalog_classifier"]
    assert {get_spec(name).kind for name in list_models()} == {"sr", "restore", "gan", "cgan", "cyclegan", "classifier"}


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(KeyError) as info:
        get_model("esrgan")
    message = str(info.value)
    assert "esrgan" in message
    assert all(name in message for name in list_models())


class NoScale(torch.nn.Module):
    """An SR network that does not say whether it upsamples by itself, nor by what scale."""

    channels: int = 1


def build_no_scale() -> NoScale:
    return NoScale()


def test_duplicate_or_protocol_breaking_registration_raises():
    spec = get_spec("srcnn")
    with pytest.raises(ValueError, match="already registered"):
        register_model("srcnn", kind="sr", description="again")(spec.build)

    with pytest.raises(ValueError, match="class NoScale.* without upsamples_inside, scale"):
        register_model("not-a-model", kind="sr", description="x")(build_no_scale)
    with pytest.raises(ValueError, match="keyword arguments only"):
        register_model("positional", kind="sr", description="x")(lambda scale: NoScale())
    assert "not-a-model" not in list_models() and "positional" not in list_models()


def test_unknown_builder_arguments_name_the_valid_ones():
    with pytest.raises(TypeError, match="takes no argument.* scael; its arguments: channels, variant"):
        get_model("srcnn", scael=3)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_with_defaults(name):
    model = get_model(name)
    assert isinstance(model, torch.nn.Module)
    assert n_params(model) > 0


def test_builders_take_keyword_arguments_only():
    with pytest.raises(TypeError):
        get_spec("espcn").build(3)
    assert get_model("espcn", scale=3).scale == 3
