"""catalog_enhance.data_contracts."""
