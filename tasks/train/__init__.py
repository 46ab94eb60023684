"""Training: typed configs, trainers per model kind, the resumable loop, checkpoints in the lake.

Importing the package imports every trainer module so their `@register_trainer` classes and
`register_presets(...)` calls take effect. A trainer module that does not exist yet is skipped
(they are written separately); one that exists but fails to import raises.
"""

from __future__ import annotations

import importlib
import importlib.util

from catalog_enhance.tasks.train.base import TRAINERS, Trainer, register_trainer, trainer_for
from catalog_enhance.tasks.train.config import PRESETS, TrainConfig, make_config, register_presets
from catalog_enhance.tasks.runtime import Runtime, select_runtime

TRAINER_MODULES = ("sr", "gan", "cyclegan")

for _name in TRAINER_MODULES:
    _module = f"{__name__}.{_name}"
    if importlib.util.find_spec(_module) is not None:
        importlib.import_module(_module)

__all__ = [
    "PRESETS",
    "TRAINERS",
    "Runtime",
    "TrainConfig",
    "Trainer",
    "make_config",
    "register_presets",
    "register_trainer",
    "select_runtime",
    "trainer_for",
]
