"""catalog_enhance.tasks."""
