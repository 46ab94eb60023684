"""CycleGAN trainer (Zhu et al. 2017): unpaired translation between two catalog domains.

Domains come from label filters, by default X = ``style=lifestyle`` and Y = ``style=studio``
(lifestyle shots into clean studio shots). G_XY: X->Y and G_YX: Y->X are ResNet generators, D_X
and D_Y 70x70 PatchGANs, trained as in the paper:

- LSGAN adversarial loss (MSE of the PatchGAN logit map against 1 / 0), more stable than BCE;
- cycle consistency ``lambda_cycle`` (10) x L1(G_YX(G_XY(x)), x) + L1(G_XY(G_YX(y)), y);
- identity ``lambda_identity x lambda_cycle`` (0.5 x 10) x L1(G_XY(y), y) + L1(G_YX(x), x), which
  keeps colours from drifting when nothing needs to change;
- discriminators see a history buffer of 50 earlier generated images (half of the time an old
  one), and their loss is halved, to slow them relative to the generators;
- Adam(2e-4, (0.5, 0.999)); LR constant for the first ``decay_start`` (half) of the steps, then
  linearly down to zero (LambdaLR, stepped every training step, saved in the checkpoint).

X and Y batches are drawn independently (unpaired) and trained on random ``crop_size`` crops
(plus horizontal flips) of the ``image_size`` images. The generators are fully convolutional
with instance norm, so inference (``translate``) runs on FULL-resolution images of any size, not
on crops (CycleGAN repo issues #562/#1115); training on crops only limits the context each output
pixel learned from. The product pairing (same ``product_id`` in X and Y) is kept in
``domains.pairs`` for evaluation only; training never uses it.

Resume is exact: batches, crops and flips come from ``step_generator(seed, step, stream)``, and
the checkpoint holds both history buffers (images and RNG state) and both LR schedulers.
"""

from __future__ import annotations

import itertools
from typing import ClassVar, cast

import pyarrow as pa
import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from catalog_enhance.models import get_model
from catalog_enhance.models.cyclegan import ImageHistoryBuffer
from catalog_enhance.tasks.train.base import Trainer
from catalog_enhance.tasks.lake.manifests import table_fingerprint
from catalog_enhance.tasks.catalog.images import load_paired_domains, to_unit_range
from catalog_enhance.tasks.catalog.rows import CatalogDataOptions, catalog_training_rows, require_images
from catalog_enhance.tasks.train.data import StepLoader
from catalog_enhance.tasks.train.gan import evaluating
from catalog_enhance.tasks.runtime import Runtime, autocast, seed_everything, step_generator, to_device

# step_generator streams: X and Y batches (and their crops/flips) are drawn independently.
STREAM_X, STREAM_Y, STREAM_POOL_X, STREAM_POOL_Y = 0, 1, 2, 3
DIRECTIONS = ("x_to_y", "y_to_x")


class CycleGANOptions(CatalogDataOptions):
    """``TrainConfig.data`` of the cyclegan trainer (``filters``, if any, apply to both domains)."""

    label_configured: ClassVar[tuple[str, ...]] = ("domains",)  # CE_DOMAINS

    domain_x: str | list[str] = "style=lifestyle"
    domain_y: str | list[str] = "style=studio"
    crop_size: int | None = None  # random training crops of this side; None: the whole image
    flip: bool = True  # random horizontal flips
    lambda_cycle: float = pydantic.Field(10.0, ge=0.0)
    lambda_identity: float = pydantic.Field(0.5, ge=0.0)  # times lambda_cycle
    pool_size: int = pydantic.Field(50, ge=0)
    decay_start: float = pydantic.Field(0.5, ge=0.0, le=1.0)  # fraction of steps at full LR
    betas: tuple[float, float] = (0.5, 0.999)


def linear_decay(total_steps: int, decay_start: float):
    """LR factor: 1 for the first ``decay_start`` of the steps, then linearly to 0 at the end.

    A plain function (not a callable object), so LambdaLR's state_dict holds only numbers."""
    constant = int(total_steps * decay_start)
    decaying = max(total_steps - constant, 1)

    def factor(step: int) -> float:
        return 1.0 - max(0, step - constant) / decaying

    return factor


@torch.no_grad()
def translate_images(generator: nn.Module, images: torch.Tensor, runtime: Runtime, batch_size: int = 8) -> torch.Tensor:
    """Translate float [N, 3, H, W] images in [0, 1] at their full resolution; returns the same
    shape in [0, 1] on the CPU. Stateless per call (safe from several threads with one model in
    eval mode); only ``batch_size`` images are on the device at a time."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    out = []
    with evaluating(generator):
        for chunk in images.split(batch_size):
            with autocast(runtime):
                translated = generator(to_device(chunk.float() * 2.0 - 1.0, runtime))
            out.append(to_unit_range(translated.float().cpu()))
    return torch.cat(out)


class CycleGANTrainer(Trainer):
    options_class = CycleGANOptions
    options: CycleGANOptions

    def setup(self) -> None:
        cfg, rt = self.config, self.runtime
        o = self.options
        if o.crop_size is not None and o.crop_size > o.image_size:
            raise ValueError(f"{cfg.model}: data.crop_size {o.crop_size} > data.image_size {o.image_size}")
        rows = catalog_training_rows(self.lake, split=o.split, filters=o.filters, **o.split_options())
        self.domains = load_paired_domains(self.lake, rows, o.domain_x, o.domain_y, o.image_size, o.fit)
        for name, images, spec in (("X", self.domains.x, o.domain_x), ("Y", self.domains.y, o.domain_y)):
            require_images(len(images), f"{cfg.model} domain {name} ({spec!r})")
        self.loaders = {}
        for name, images, stream in (("x", self.domains.x, STREAM_X), ("y", self.domains.y, STREAM_Y)):
            images.crop_size, images.flip = o.crop_size, o.flip  # random training crops (and mirrors)
            self.loaders[name] = StepLoader(
                images, batch_size=cfg.batch_size, seed=cfg.seed, total_steps=cfg.steps, runtime=rt, stream=stream
            )
        self.data_manifest_hash = table_fingerprint(pa.concat_tables([self.domains.x.rows, self.domains.y.rows]))
        self.model_kwargs = dict(cfg.model_kwargs)
        seed_everything(cfg.seed)
        self.model = to_device(get_model(cfg.model, **self.model_kwargs), rt)
        m = self.model
        betas = cast("tuple[float, float]", tuple(o.betas))  # validated as a pair
        self.opt_g = torch.optim.Adam(itertools.chain(m.G_XY.parameters(), m.G_YX.parameters()), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(itertools.chain(m.D_X.parameters(), m.D_Y.parameters()), lr=cfg.lr, betas=betas)
        decay = linear_decay(cfg.steps, o.decay_start)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, decay)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, decay)
        self.pool_x = ImageHistoryBuffer(o.pool_size, generator=step_generator(cfg.seed, 0, STREAM_POOL_X))
        self.pool_y = ImageHistoryBuffer(o.pool_size, generator=step_generator(cfg.seed, 0, STREAM_POOL_Y))

    # -- one step ----------------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, float]:
        o, rt, m = self.options, self.runtime, self.model
        # Unpaired: X and Y are shuffled (and cropped) independently.
        x = to_device(self.loaders["x"].batch(step)[0], rt)
        y = to_device(self.loaders["y"].batch(step)[0], rt)
        m.train()

        # Generators: fool both discriminators, reconstruct both cycles, leave the target domain alone.
        m.D_X.requires_grad_(False)
        m.D_Y.requires_grad_(False)
        with autocast(rt):
            fake_y = m.G_XY(x)
            fake_x = m.G_YX(y)
            loss_gan = lsgan(m.D_Y(fake_y), True) + lsgan(m.D_X(fake_x), True)
            loss_cycle = F.l1_loss(m.G_YX(fake_y), x) + F.l1_loss(m.G_XY(fake_x), y)
            loss_g = loss_gan + o.lambda_cycle * loss_cycle
            if o.lambda_identity > 0:
                loss_identity = F.l1_loss(m.G_XY(y), y) + F.l1_loss(m.G_YX(x), x)
                loss_g = loss_g + o.lambda_identity * o.lambda_cycle * loss_identity
            else:
                loss_identity = torch.zeros(())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        m.D_X.requires_grad_(True)
        m.D_Y.requires_grad_(True)

        # Discriminators: real -> 1, generated (from the history buffer) -> 0, halved.
        with autocast(rt):
            loss_d_y = 0.5 * (lsgan(m.D_Y(y), True) + lsgan(m.D_Y(self.pool_y.query(fake_y)), False))
            loss_d_x = 0.5 * (lsgan(m.D_X(x), True) + lsgan(m.D_X(self.pool_x.query(fake_x)), False))
        self.opt_d.zero_grad(set_to_none=True)
        (loss_d_x + loss_d_y).backward()
        self.opt_d.step()

        self.sched_g.step()
        self.sched_d.step()
        return {
            "loss_g": loss_g.detach().item(),
            "loss_g_gan": loss_gan.detach().item(),
            "loss_cycle": loss_cycle.detach().item(),
            "loss_identity": loss_identity.detach().item(),
            "loss_d_x": loss_d_x.detach().item(),
            "loss_d_y": loss_d_y.detach().item(),
        }

    # -- inference helpers -------------------------------------------------------------------
    def translate(self, images: torch.Tensor, direction: str = "x_to_y") -> torch.Tensor:
        """Full-resolution translation of [N, 3, H, W] images in [0, 1] (X->Y by default)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        generator = self.model.G_XY if direction == "x_to_y" else self.model.G_YX
        return translate_images(generator, images, self.runtime, batch_size=self.config.batch_size)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "pool_x": self.pool_x.state_dict(),
            "pool_y": self.pool_y.state_dict(),
            "model_kwargs": dict(self.model_kwargs),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["model_kwargs"] != self.model_kwargs:
            raise ValueError(f"{self.config.model}: checkpoint model_kwargs {state['model_kwargs']} != {self.model_kwargs}")
        self.model.load_state_dict(state["model"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        for pool, key in ((self.pool_x, "pool_x"), (self.pool_y, "pool_y")):
            pool.load_state_dict(state[key])
            pool.images = [to_device(image, self.runtime) for image in pool.images]

    def metadata(self) -> dict:
        d = self.domains
        return {
            "model_kwargs": dict(self.model_kwargs),
            "domain_x": d.x_filter,
            "domain_y": d.y_filter,
            "image_size": self.options.image_size,
            "crop_size": self.options.crop_size or self.options.image_size,
            "train_images_x": len(d.x),
            "train_images_y": len(d.y),
            "paired_products": len(d.pairs),
        }


def lsgan(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss of a PatchGAN logit map against all-ones (real) or all-zeros."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.mse_loss(logits, target)
