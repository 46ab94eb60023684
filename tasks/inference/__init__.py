"""Running trained models: tiled super-resolution, full-resolution translation, loading versions, enhancers."""
