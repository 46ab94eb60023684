"""LR/HR training pairs from catalog images: the pure core of the make-pairs flow.

For each current catalog image (latest version per SKU) and each scale, `crops_per_image` HR crops
(`hr_size` square, positions fixed by the image's sha256, `hr_size` and the seed, shared by all
scales; an image smaller than `hr_size` gives one mod-cropped full image instead) and their LR
inputs made by the degradation pipeline (`tasks.imaging.degrade`, MATLAB bicubic by default). RGBA images are composited
onto white first: SR trains on RGB. Pairs are
stored under `pair_key(config_hash, ...)` and described by the PAIRS manifest, which carries the
conditional labels and a train/val/test split drawn by hashing the product id, so every image of
one product (its studio and lifestyle shots, all its SKUs) lands in exactly one split.

Work already done for (image_sha256, config_hash, scale) is never redone, and the manifest is
only rewritten when something new was made, so a re-run with the same config writes nothing.
"""


from catalog_enhance.tasks.catalog.splits import DEFAULT_SPLIT_SALT, SplitFractions, assign_split
from catalog_enhance.tasks.catalog.pairs_config import SUPPORTED_SCALES, PairsConfig
from catalog_enhance.tasks.pairs.config import UnpairableImage
from catalog_enhance.tasks.pairs.image import crop_origins, decode_rgb, hr_shape, make_pairs_for_image, too_small
from catalog_enhance.tasks.pairs.run import (
    ChunkResult,
    PairJob,
    PairsPlan,
    PairsResult,
    PairsSummary,
    build_pairs,
    finish_pairs,
    make_pairs_for_jobs,
    plan_pairs,
    record_quarantine,
    summarize,
)

__all__ = [
    "DEFAULT_SPLIT_SALT", "SUPPORTED_SCALES", "ChunkResult", "PairJob", "PairsConfig", "PairsPlan", "PairsResult",
    "PairsSummary", "SplitFractions", "UnpairableImage", "assign_split", "build_pairs", "crop_origins",
    "decode_rgb", "finish_pairs", "hr_shape", "make_pairs_for_image", "make_pairs_for_jobs", "plan_pairs",
    "record_quarantine", "summarize", "too_small",
]
