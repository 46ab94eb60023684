"""Plumbing below the stages: settings, the lake (storage), manifests, checkpoints, the model registry."""
