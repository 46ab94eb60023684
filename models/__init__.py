"""catalog_enhance.models."""
