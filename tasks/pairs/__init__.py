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
only appended to when something new was made, so a re-run with the same config writes nothing.
"""
