"""Dataset plumbing shared by the trainers, and the super-resolution pair dataset.

Resumable batches: step k's batch is a pure function of (seed, k). `StepBatchSampler` walks
epochs of a seeded permutation (so every item is seen once per epoch) and gives each sample its
own seed for random crops and flips; `StepLoader` wraps a `torch.utils.data.DataLoader` over it and
hands out the batch of any step, so a resumed run sees exactly the batches the uninterrupted run
saw.

Images come from the lake through `imaging.lake_images.LakeImages` (cached in memory as uint8
when the dataset is small enough, otherwise read per sample).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sized
from typing import cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from catalog_enhance.tasks.catalog.labels import CatalogDataError
from catalog_enhance.tasks.imaging.lake_images import LakeImages
from catalog_enhance.tasks.imaging.resize import imresize, rgb_to_y
from catalog_enhance.tasks.runtime import Runtime, step_generator

log = logging.getLogger(__name__)

# Streams of step_generator: per-epoch permutations live apart from per-step sample seeds.
_PERMUTATION_STREAM = 1_000_000
_SAMPLE_SEED_LIMIT = 2**62
# -- resumable batches ---------------------------------------------------------------------------


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for each step in [start_step, end_step), a list of (item index, sample seed).

    Sample positions step*B .. step*B+B-1 run through epochs of a permutation seeded by
    (seed, epoch), so batch composition depends only on (seed, step); each sample's seed (for
    its crop and flips) is drawn from `step_generator(seed, step, stream)`.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int, end_step: int, stream: int = 0):
        if num_items < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.end_step = end_step
        self.stream = stream
        self._permutations: dict[int, list[int]] = {}

    def _permutation(self, epoch: int) -> list[int]:
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.pop(min(self._permutations))
            g = step_generator(self.seed, epoch, _PERMUTATION_STREAM + self.stream)
            self._permutations[epoch] = torch.randperm(self.num_items, generator=g).tolist()
        return self._permutations[epoch]

    def batch(self, step: int) -> list[tuple[int, int]]:
        g = step_generator(self.seed, step, self.stream)
        seeds = torch.randint(0, _SAMPLE_SEED_LIMIT, (self.batch_size,), generator=g).tolist()
        out = []
        for j in range(self.batch_size):
            epoch, offset = divmod(step * self.batch_size + j, self.num_items)
            out.append((self._permutation(epoch)[offset], seeds[j]))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.end_step):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)


class StepLoader:
    """`batch(step)` -> the DataLoader batch of that step; sequential calls stream, a jump restarts."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        total_steps: int,
        runtime: Runtime,
        num_workers: int | None = None,
        stream: int = 0,
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.total_steps = total_steps
        self.runtime = runtime
        on_cuda = runtime.device.type == "cuda"
        # CPU: the 2 cores are busy with the model, workers would only compete with it.
        self.num_workers = (2 if on_cuda else 0) if num_workers is None else num_workers
        self.pin_memory = on_cuda
        self._iterator: Iterator | None = None
        self._next_step: int | None = None

    def batch(self, step: int):
        if self._iterator is None or step != self._next_step:
            # A map-style dataset with a length (torch's `Dataset` type does not declare `__len__`).
            sampler = StepBatchSampler(len(cast(Sized, self.dataset)), self.batch_size, self.seed, step,
                                       self.total_steps)
            loader = DataLoader(
                self.dataset,
                batch_sampler=sampler,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
            )
            self._iterator = iter(loader)
        self._next_step = step + 1
        return next(self._iterator)


def dihedral(t: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/rotations of a (C, H, W) tensor (k in 0..7)."""
    if k >= 4:
        t = t.flip(-1)
    return torch.rot90(t, k % 4, dims=(-2, -1))


# -- super-resolution pairs ----------------------------------------------------------------------


def to_channels(rgb: np.ndarray | torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 HxWx3 (or float CxHxW RGB in [0, 1]) -> float32 (C, H, W): RGB, or MATLAB BT.601 Y."""
    if isinstance(rgb, np.ndarray):
        rgb = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
    if channels == 3:
        return rgb
    if channels == 1:
        return rgb_to_y(rgb)
    raise ValueError(f"channels must be 1 (Y) or 3 (RGB), got {channels}")


# MATLAB's bicubic reads 2 LR pixels either side; 3 is a safe margin for upscaling a window.
_BICUBIC_MARGIN = 3


def upscale_window(lr_rgb: np.ndarray, channels: int, scale: int, top: int, left: int, size: int) -> torch.Tensor:
    """MATLAB-bicubic x`scale` (in `channels` space) of the LR window [top, top+size) x
    [left, left+size), equal to the same crop of the whole upscaled image: the window is upscaled
    with a margin of context (or up to the image edge, where MATLAB's symmetric padding applies
    alike) and the margin cut away, so only the window is ever converted and resized."""
    h, w = lr_rgb.shape[:2]
    t0, l0 = max(0, top - _BICUBIC_MARGIN), max(0, left - _BICUBIC_MARGIN)
    t1, l1 = min(h, top + size + _BICUBIC_MARGIN), min(w, left + size + _BICUBIC_MARGIN)
    up = imresize(to_channels(lr_rgb[t0:t1, l0:l1], channels), scale)
    y, x = (top - t0) * scale, (left - l0) * scale
    return up[..., y : y + size * scale, x : x + size * scale]


class SRPairDataset(Dataset):
    """Random aligned (input, target) patches from SR pairs; item = (pair index, sample seed).

    target: the HR patch (lr_patch*scale square). input: the LR patch (`upscale_input=False`,
    ESPCN) or the MATLAB-bicubic upscale of the LR to the HR patch's size (SRCNN). Both in
    `channels` space (1 = Y, 3 = RGB), float32 in [0, 1], with one shared random flip/rotation.
    """

    def __init__(
        self,
        rows: list[dict],
        images: LakeImages,
        *,
        scale: int,
        lr_patch: int,
        channels: int = 1,
        upscale_input: bool = False,
        augment: bool = True,
    ):
        self.scale = scale
        self.lr_patch = lr_patch
        self.channels = channels
        self.upscale_input = upscale_input
        self.augment = augment
        self.images = images
        self.skipped: list[tuple[str, str]] = []
        self.rows = []
        for row in rows:
            reason = self._unusable(row)
            if reason:
                self.skipped.append((row["pair_id"], reason))
            else:
                self.rows.append(row)
        for pair_id, reason in self.skipped:
            log.warning("SR pairs: skipping pair %s: %s", pair_id, reason)
        if not self.rows:
            raise CatalogDataError(f"no usable SR pairs (x{scale}, lr_patch {lr_patch}); {len(self.skipped)} skipped")

    def _unusable(self, row: dict) -> str | None:
        for role in ("hr_key", "lr_key"):
            if row[role] not in self.images:
                reason = dict(self.images.skipped).get(row[role], "not loaded")
                return f"{role} {row[role]!r}: {reason}"
        if (row["lr_width"] * self.scale, row["lr_height"] * self.scale) != (row["hr_width"], row["hr_height"]):
            return f"LR {row['lr_width']}x{row['lr_height']} x{self.scale} != HR {row['hr_width']}x{row['hr_height']}"
        if min(row["lr_width"], row["lr_height"]) < self.lr_patch:
            return f"LR {row['lr_width']}x{row['lr_height']} smaller than the {self.lr_patch}px patch"
        return None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, sample_seed = item
        row = self.rows[index]
        hr_rgb, lr_rgb = self.images[row["hr_key"]], self.images[row["lr_key"]]
        if lr_rgb.shape[:2] != (row["lr_height"], row["lr_width"]) or hr_rgb.shape[:2] != (row["hr_height"], row["hr_width"]):
            raise ValueError(f"pair {row['pair_id']}: image sizes differ from the manifest")
        g = torch.Generator().manual_seed(sample_seed)
        p, s = self.lr_patch, self.scale
        top = int(torch.randint(0, row["lr_height"] - p + 1, (1,), generator=g))
        left = int(torch.randint(0, row["lr_width"] - p + 1, (1,), generator=g))
        flip = int(torch.randint(0, 8, (1,), generator=g)) if self.augment else 0
        target = to_channels(hr_rgb[top * s : (top + p) * s, left * s : (left + p) * s], self.channels)
        if self.upscale_input:
            source = upscale_window(lr_rgb, self.channels, s, top, left, p)
        else:
            source = to_channels(lr_rgb[top : top + p, left : left + p], self.channels)
        return dihedral(source, flip).contiguous(), dihedral(target, flip).contiguous()
