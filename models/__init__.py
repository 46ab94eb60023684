"""catalog_enhance.models: pure ``nn.Module`` architectures, one a file, registered by name.

Every module of this package registers its builders with `@register_model` when imported, and
this file imports them all on its own (`pkgutil`), so adding a model is one file and nothing else
(another package adds its own through the `catalog_enhance.models` entry point group):

    get_model("espcn", scale=2)   # build
    get_spec("espcn").presets     # its metadata: kind, class, presets, description
    list_models(kind="sr")

What each kind of model must expose: `protocols.py`.
"""

import importlib
import importlib.metadata
import pkgutil

from catalog_enhance.models.registry import ModelSpec, get_model, get_spec, list_models, register_model

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("registry", "protocols") and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

# Models of other packages: a module named by an entry point of this group registers its own
# builders when imported (`[project.entry-points."catalog_enhance.models"] my_sr = "my_pkg.my_sr"`).
for _entry_point in importlib.metadata.entry_points(group="catalog_enhance.models"):
    _entry_point.load()

__all__ = ["ModelSpec", "get_model", "get_spec", "list_models", "register_model"]
