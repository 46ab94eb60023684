"""Evaluation: metrics, the classical and learned enhancers compared side by side, the quality gate.

Modules are imported directly (`catalog_enhance.tasks.imaging.metrics`, ...); this package
file stays import-free so each evaluation part loads only what it needs.
"""
