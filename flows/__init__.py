"""catalog_enhance.flows."""
