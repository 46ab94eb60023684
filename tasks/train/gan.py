"""GAN and conditional-GAN trainers: the DCGAN recipe on catalog images.

Objective (Goodfellow et al. 2014) with the non-saturating generator loss: the discriminator
minimises BCE(D(x), 1) + BCE(D(G(z)), 0); the generator minimises BCE(D(G(z)), 1) (i.e. maximises
log D(G(z)), which has strong gradients early on, when D rejects every sample, where the
saturating log(1 - D(G(z))) has none). BCEWithLogits on raw logits is numerically stable and safe
under bf16 autocast. Adam(lr 2e-4, betas (0.5, 0.999)) as in DCGAN; optional one-sided label
smoothing (real target 1 - s, Salimans et al. 2016) keeps D from growing over-confident.

The conditional GAN conditions both networks on manifest labels (``data.conditions``, default
["category"], optionally "style" or any ``label_<name>``); the vocabulary is built from the
training rows and stored in the checkpoint and its metadata. The generator's labels are drawn
from the training rows (a second, independent batch), so classes appear as often as in the data.

Each step's batch, noise and generator labels come from ``step_generator(seed, step, stream)``,
so a resumed run repeats exactly what the uninterrupted one would have done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar, cast

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from catalog_enhance.models import get_model
from catalog_enhance.tasks.train.base import Trainer
from catalog_enhance.tasks.catalog.images import load_catalog_images, to_unit_range
from catalog_enhance.tasks.catalog.labels import LabelVocabulary
from catalog_enhance.tasks.catalog.rows import CatalogDataOptions, catalog_training_rows, require_images
from catalog_enhance.tasks.train.data import StepBatchSampler, StepLoader
from catalog_enhance.tasks.runtime import autocast, seed_everything, step_generator, to_device

# step_generator streams: one independent random source per use within a step.
STREAM_BATCH, STREAM_NOISE, STREAM_FAKE_LABELS = 0, 1, 2


class GANOptions(CatalogDataOptions):
    """``TrainConfig.data`` of the gan trainer."""

    label_configured: ClassVar[tuple[str, ...]] = ("filters",)  # CE_GAN_FILTERS, else domain Y

    label_smoothing: float = pydantic.Field(0.0, ge=0.0, lt=0.5)  # real target = 1 - label_smoothing
    betas: tuple[float, float] = (0.5, 0.999)
    sample_count: int = pydantic.Field(64, gt=0)  # size of the fixed evaluation noise batch
    sample_seed: int = 1234


class CGANOptions(GANOptions):
    conditions: list[str] = ["category"]


def fixed_noise(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """The evaluation noise batch: the same z for every checkpoint, so grids are comparable."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BatchNorm running statistics: a sample does not depend on its batch), restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class GANTrainer(Trainer):
    options_class: ClassVar[type[GANOptions]] = GANOptions
    options: GANOptions

    # -- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.config
        rows = catalog_training_rows(
            self.lake, split=self.options.split, filters=self.options.filters, **self.options.split_options()
        )
        self.data = load_catalog_images(self.lake, rows, self.options.image_size, self.options.fit)
        require_images(len(self.data), f"{cfg.model} (split={self.options.split!r}, filters={self.options.filters!r})")
        self.data_manifest_hash = self.data.fingerprint()
        self.loader = StepLoader(
            self.data, batch_size=cfg.batch_size, seed=cfg.seed, total_steps=cfg.steps, runtime=self.runtime,
            stream=STREAM_BATCH,
        )
        self.setup_conditions()
        self.model_kwargs = self.effective_model_kwargs()
        seed_everything(cfg.seed)  # weight initialisation
        self.model = to_device(get_model(cfg.model, **self.model_kwargs), self.runtime)
        self.z_dim = self.model.z_dim
        betas = cast("tuple[float, float]", tuple(self.options.betas))  # validated as a pair
        self.opt_g = torch.optim.Adam(self.model.generator.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.model.discriminator.parameters(), lr=cfg.lr, betas=betas)
        self.sample_noise = fixed_noise(self.options.sample_count, self.z_dim, self.options.sample_seed)

    def setup_conditions(self) -> None:
        self.vocabulary: LabelVocabulary | None = None
        self.labels: torch.Tensor | None = None  # LongTensor [N, n_conditions], aligned with self.data

    def effective_model_kwargs(self) -> dict:
        """The config's model_kwargs plus what the data decides (image size; vocabulary sizes)."""
        kwargs = dict(self.config.model_kwargs)
        size = kwargs.setdefault("image_size", self.options.image_size)
        if size != self.options.image_size:
            raise ValueError(
                f"{self.config.model}: model_kwargs.image_size={size} but data.image_size={self.options.image_size}; "
                "set data.image_size only"
            )
        return kwargs

    # -- one step ----------------------------------------------------------------------------
    def conditions(self, real_indices: torch.Tensor, step: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(labels of the real batch, labels to generate with); None, None when unconditional."""
        return None, None

    def generate(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.model.generator(z) if y is None else self.model.generator(z, y)

    def discriminate(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.model.discriminator(x) if y is None else self.model.discriminator(x, y)

    def train_step(self, step: int) -> dict[str, float]:
        cfg, rt = self.config, self.runtime
        real, indices = self.loader.batch(step)
        real = to_device(real, rt)
        batch = real.shape[0]
        z = to_device(torch.randn(batch, self.z_dim, generator=step_generator(cfg.seed, step, STREAM_NOISE)), rt)
        y_real, y_fake = (None if y is None else to_device(y, rt) for y in self.conditions(indices, step))
        real_target = 1.0 - self.options.label_smoothing
        self.model.train()

        # Discriminator: real -> (smoothed) 1, generated -> 0.
        with autocast(rt):
            fake = self.generate(z, y_fake)
            logits_real = self.discriminate(real, y_real)
            logits_fake = self.discriminate(fake.detach(), y_fake)
            loss_d_real = F.binary_cross_entropy_with_logits(logits_real, torch.full_like(logits_real, real_target))
            loss_d_fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
            loss_d = loss_d_real + loss_d_fake
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        # Generator, non-saturating: make D call the same samples real. D is frozen meanwhile so
        # no gradient is computed (and then thrown away) for its weights.
        self.model.discriminator.requires_grad_(False)
        with autocast(rt):
            logits_gen = self.discriminate(fake, y_fake)
            loss_g = F.binary_cross_entropy_with_logits(logits_gen, torch.ones_like(logits_gen))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.model.discriminator.requires_grad_(True)

        return {
            "loss_d": loss_d.detach().item(),
            "loss_g": loss_g.detach().item(),
            "d_real": torch.sigmoid(logits_real.detach().float()).mean().item(),  # D's mean belief "real"
            "d_fake": torch.sigmoid(logits_fake.detach().float()).mean().item(),
        }

    # -- sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int | None = None, y=None, seed: int | None = None) -> torch.Tensor:
        """``n`` generated images, float [n, 3, S, S] in [0, 1] on the CPU. Without ``seed`` they
        come from the fixed evaluation noise (the same z at every checkpoint, ``n`` at most
        ``data.sample_count``); with one, from fresh noise seeded by it."""
        n = len(self.sample_noise) if n is None else n
        if seed is None:
            if n > len(self.sample_noise):
                raise ValueError(f"n={n} exceeds the fixed noise batch ({len(self.sample_noise)}): pass a seed")
            z = self.sample_noise[:n]
        else:
            z = fixed_noise(n, self.z_dim, seed)
        y = self.sample_labels(n, y)
        with evaluating(self.model), autocast(self.runtime):
            images = self.generate(to_device(z, self.runtime), None if y is None else to_device(y, self.runtime))
        return to_unit_range(images.float().cpu())

    def sample_labels(self, n: int, y) -> torch.Tensor | None:
        if y is not None:
            raise ValueError(f"{self.config.model} is unconditional: sample() takes no labels")
        return None

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sample_noise": self.sample_noise.clone(),
            "model_kwargs": self.metadata()["model_kwargs"],
        }

    def load_state_dict(self, state: dict) -> None:
        saved = state["model_kwargs"]
        if saved != self.metadata()["model_kwargs"]:
            raise ValueError(
                f"{self.config.model}: checkpoint was trained with model_kwargs {saved}, this run builds "
                f"{self.metadata()['model_kwargs']} (did the catalog's labels change? start a new run)"
            )
        self.model.load_state_dict(state["model"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sample_noise = state["sample_noise"].clone()

    def metadata(self) -> dict:
        kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_kwargs.items()}
        return {"model_kwargs": kwargs, "image_size": self.options.image_size, "train_images": len(self.data)}


class CGANTrainer(GANTrainer):
    options_class = CGANOptions
    options: CGANOptions
    # Never None here: setup_conditions sets both before anything reads them.
    vocabulary: LabelVocabulary
    labels: torch.Tensor

    def setup_conditions(self) -> None:
        self.vocabulary = LabelVocabulary.from_table(self.data.rows, self.options.conditions)
        self.labels = self.vocabulary.encode(self.data.rows)
        # Observed label combinations (sorted): the default rows of a sample grid.
        self.label_combinations = torch.unique(self.labels, dim=0)
        # The generator's labels: an independent draw of training rows each step.
        self.fake_label_rows = StepBatchSampler(
            len(self.data), self.config.batch_size, self.config.seed, 0, self.config.steps, stream=STREAM_FAKE_LABELS
        )

    def effective_model_kwargs(self) -> dict:
        kwargs = super().effective_model_kwargs()
        kwargs["num_classes"] = self.vocabulary.sizes  # the model is sized by the vocabulary
        return kwargs

    def conditions(self, real_indices: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        fake_indices = [index for index, _ in self.fake_label_rows.batch(step)]
        return self.labels[real_indices], self.labels[fake_indices]

    def sample_labels(self, n: int, y) -> torch.Tensor:
        """Labels for ``sample``: None cycles through the observed label combinations; a dict
        ({"category": "hats"}) is used for all n; a list of dicts or a LongTensor [n, K] per image."""
        if y is None:
            combos = self.label_combinations
            return combos[torch.arange(n) % len(combos)]
        if isinstance(y, Mapping):
            y = [y] * n
        if isinstance(y, Sequence) and not isinstance(y, str):
            rows = [self._full_row(dict(r)) for r in y]
            y = self.vocabulary.encode(rows)
        y = torch.as_tensor(y, dtype=torch.long)
        if y.shape != (n, len(self.vocabulary.columns)):
            raise ValueError(f"labels must have shape ({n}, {len(self.vocabulary.columns)}), got {tuple(y.shape)}")
        return y

    def _full_row(self, row: dict) -> dict:
        """Accept short column names ("colour" for "label_colour"); unknown columns are an error."""
        out = {}
        for key, value in row.items():
            column = key if key in self.vocabulary.columns else f"label_{key}"
            if column not in self.vocabulary.columns:
                raise ValueError(f"{key!r} is not a condition of this model ({', '.join(self.vocabulary.columns)})")
            out[column] = value
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "vocabulary": self.vocabulary.to_state()}

    def load_state_dict(self, state: dict) -> None:
        saved = LabelVocabulary.from_state(state["vocabulary"])
        if saved != self.vocabulary:
            raise ValueError(
                f"{self.config.model}: the catalog's labels changed since the checkpoint "
                f"(saved {saved.to_state()}, now {self.vocabulary.to_state()}); start a new run"
            )
        super().load_state_dict(state)

    def metadata(self) -> dict:
        return {**super().metadata(), "vocabulary": self.vocabulary.to_state()}
