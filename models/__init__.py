"""catalog_enhance.models: pure ``nn.Module`` architectures and their name registry.

Importing this package imports every architecture module, and each one registers itself, so
``build_model(name)`` knows every model. Adding a model: one file with its ``register(...)`` call,
plus one import line below.
"""

from . import catalog_classifier, cgan, cyclegan, dcgan, espcn, srcnn  # noqa: F401  (each registers itself on import)
from .registry import MODEL_KINDS, ModelSpec, build_model, get_spec, model_names, register

__all__ = ["MODEL_KINDS", "ModelSpec", "build_model", "get_spec", "model_names", "register"]
