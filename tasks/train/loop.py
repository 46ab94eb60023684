"""The training loop: one readable function, nanoGPT-style.

    config -> trainer.setup() -> resume from the run's latest checkpoint -> for each step:
    train_step, log, checkpoint -> final checkpoint + loss curve -> TrainResult

Resume is automatic: a run is named by its config hash, so re-running the same config (e.g. a
Prefect retry after a crash) continues from the last checkpoint. Every random choice of step k is
drawn from `step_generator(seed, k)`, so the resumed run reproduces the uninterrupted one exactly
on CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import torch

from catalog_enhance.data_contracts.layout import checkpoint_key, training_curve_key
from catalog_enhance.tasks.catalog.labels import CatalogDataError, NotTrainableHere
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.train.base import trainer_for
from catalog_enhance.tasks.lake.checkpoints import (
    CheckpointError,
    latest_checkpoint_key,
    load_checkpoint,
    save_checkpoint,
)
from catalog_enhance.tasks.train.config import TrainConfig
from catalog_enhance.tasks.runtime import Runtime, configure_backends, seed_everything, select_runtime

CHECKPOINT_FORMAT = 1


@dataclass
class LossCurve:
    """Every step's losses, as parallel (step, name, value) lists; kept in checkpoints."""

    steps: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, step: int, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            self.steps.append(step)
            self.names.append(name)
            self.values.append(float(value))

    def truncate(self, before_step: int) -> None:
        keep = [i for i, s in enumerate(self.steps) if s < before_step]
        self.steps = [self.steps[i] for i in keep]
        self.names = [self.names[i] for i in keep]
        self.values = [self.values[i] for i in keep]

    def mean_since(self, step: int) -> dict[str, float]:
        """Mean of each loss over steps >= `step` (the logging window)."""
        sums: dict[str, list[float]] = {}
        for s, name, value in zip(self.steps, self.names, self.values):
            if s >= step:
                sums.setdefault(name, []).append(value)
        return {name: sum(v) / len(v) for name, v in sums.items()}

    def rows(self) -> list[dict]:
        return [{"step": s, "loss": n, "value": v} for s, n, v in zip(self.steps, self.names, self.values)]

    def table(self) -> pa.Table:
        return pa.table(
            {
                "step": pa.array(self.steps, pa.int64()),
                "loss": pa.array(self.names, pa.string()),
                "value": pa.array(self.values, pa.float64()),
            }
        )

    def to_state(self) -> dict:
        # Tensors + a list of strings: loadable with weights_only=True.
        return {
            "steps": torch.tensor(self.steps, dtype=torch.int64),
            "names": list(self.names),
            "values": torch.tensor(self.values, dtype=torch.float64),
        }

    @classmethod
    def from_state(cls, state: dict) -> "LossCurve":
        return cls(state["steps"].tolist(), list(state["names"]), state["values"].tolist())


@dataclass
class LogEvent:
    """What `on_log` receives every `log_every` steps."""

    model: str
    step: int  # steps completed
    total_steps: int
    losses: dict[str, float]  # mean over the steps since the previous log
    seconds: float  # wall time of this invocation so far
    steps_per_second: float


@dataclass
class TrainResult:
    config: TrainConfig
    run: str
    completed: bool  # False when stop_after ended the run early (no final checkpoint)
    steps_done: int
    final_losses: dict[str, float]  # mean over the last log window
    checkpoint_key: str | None  # the final checkpoint (None if not completed)
    seconds: float  # training wall time, summed over resumed invocations
    setup_seconds: float  # this invocation's data loading and model building
    curve: LossCurve
    curve_key: str | None
    metrics: dict[str, float]  # trainer.final_metrics(), e.g. SR val PSNR vs bicubic
    metadata: dict  # trainer.metadata(): vocabularies etc.
    data_manifest_hash: str
    device: str
    resumed_from_step: int | None

    @property
    def model(self) -> str:
        return self.config.model


def train_model(
    config: TrainConfig,
    lake: Lake,
    *,
    run: str | None = None,
    resume: bool = True,
    runtime: Runtime | None = None,
    on_log: Callable[[LogEvent], None] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train `config.model` to `config.steps`, resuming the run's latest checkpoint if any.

    `run` names the checkpoint folder (default: the config hash). `resume=False` starts over
    (overwriting that run's checkpoints). `stop_after=k` ends after step k WITHOUT a final
    checkpoint, as a kill would (for resume tests).
    """
    runtime = runtime or select_runtime()
    configure_backends(runtime)
    run = run or config.config_hash()

    # Build everything from the seed (weight init); a resume then overwrites the weights.
    setup_started = time.perf_counter()
    seed_everything(config.seed)
    trainer = trainer_for(config, lake, runtime)
    try:
        trainer.setup()  # reads the data first: what this catalog cannot give fails here, typed
    except NotTrainableHere:
        raise
    except CatalogDataError as error:  # no rows for its filters, unknown label, too few images...
        raise NotTrainableHere(config.model, str(error)) from None
    setup_seconds = time.perf_counter() - setup_started

    start_step, curve, seconds_before, resumed_from = 0, LossCurve(), 0.0, None
    if not resume:  # start over: an old final/step checkpoint must not be resumed after a crash
        for key in lake.list(checkpoint_key(config.model, run).rsplit("/", 1)[0]):
            lake.delete(key)
    latest = latest_checkpoint_key(lake, config.model, run) if resume else None
    if latest is not None:
        state = load_checkpoint(lake, latest)
        saved = TrainConfig(**state["config"])
        if saved.config_hash() != config.config_hash():
            raise CheckpointError(
                f"run {run!r} of {config.model} was trained with a different config "
                f"({saved.config_hash()} != {config.config_hash()}); use another run name or resume=False"
            )
        trainer.load_state_dict(state["trainer"])
        start_step = resumed_from = int(state["step"])
        curve = LossCurve.from_state(state["curve"])
        curve.truncate(start_step)
        seconds_before = float(state["train_seconds"])

    def checkpoint_state(step: int, seconds: float) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": config.model,
            "run": run,
            "step": step,
            "config": config.model_dump(mode="json"),
            "trainer": trainer.state_dict(),
            "metadata": trainer.metadata(),
            "curve": curve.to_state(),
            "train_seconds": seconds,
            "data_manifest_hash": trainer.data_fingerprint(),
            "device": runtime.device.type,
        }

    t0 = time.perf_counter()
    step, window_start, completed = start_step, start_step, True
    while step < config.steps:
        if stop_after is not None and step >= stop_after:
            completed = False  # a simulated kill: no final checkpoint
            break
        curve.add(step, trainer.train_step(step))
        step += 1
        if on_log is not None and (step % config.log_every == 0 or step == config.steps):
            elapsed = time.perf_counter() - t0
            on_log(
                LogEvent(
                    model=config.model,
                    step=step,
                    total_steps=config.steps,
                    losses=curve.mean_since(window_start),
                    seconds=elapsed,
                    steps_per_second=(step - start_step) / max(elapsed, 1e-9),
                )
            )
            window_start = step
        if step % config.checkpoint_every == 0 and step < config.steps:
            save_checkpoint(lake, checkpoint_key(config.model, run, step),
                            checkpoint_state(step, seconds_before + time.perf_counter() - t0))

    # Time spent training (a run finished earlier keeps its recorded time exactly).
    seconds = seconds_before + (time.perf_counter() - t0 if step > start_step else 0.0)
    final_key = curve_key = None
    metrics: dict[str, float] = {}
    if completed:
        final_key = checkpoint_key(config.model, run)
        if latest != final_key:  # not already finished by an earlier invocation
            save_checkpoint(lake, final_key, checkpoint_state(step, seconds))
        curve_key = training_curve_key(config.model, run)
        lake.write_table(curve_key, curve.table())
        metrics = trainer.final_metrics()
    last_window = max(0, step - config.log_every)
    return TrainResult(
        config=config,
        run=run,
        completed=completed,
        steps_done=step,
        final_losses=curve.mean_since(last_window),
        checkpoint_key=final_key,
        seconds=seconds,
        setup_seconds=setup_seconds,
        curve=curve,
        curve_key=curve_key,
        metrics=metrics,
        metadata=trainer.metadata(),
        data_manifest_hash=trainer.data_fingerprint(),
        device=runtime.describe(),
        resumed_from_step=resumed_from,
    )
