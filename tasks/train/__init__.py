"""Training: typed configs, the trainers of each model kind, the resumable loop.

Modules are imported directly (`tasks.train.config.make_config`, `tasks.train.loop.train_model`,
`tasks.train.base.trainer_for`); which trainer trains a model is its kind's plugin's
(`tasks.kinds`), and presets live beside each model (`models/`).
"""
