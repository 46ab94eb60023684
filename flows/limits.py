"""Time limits and retry rules of every flow and task, in one table.

With the nightly's ENQUEUE concurrency limit, one hung night would block every later one: so
every stage has a `timeout_seconds`, generous for the `cpu` preset on a small machine (the night
itself ends within a day, before the next one is due). `CE_TIMEOUTS` (JSON, `Settings.timeouts`)
overrides any entry, e.g. `{"train-model": 3600}`; a deployment run reads it from the worker's
environment when the flow's module is imported, and a parent flow applies it to the stages it
calls (`with_options(timeout_seconds=timeout(name, settings))`).

Retries: stages are incremental (finished work is found in the lake and not redone), so a retry
is cheap, but only worth it for what can succeed the second time. `retryable` says which: not a
refused or unreadable checkpoint (a malicious pickle stays malicious), not a catalog that cannot
train or evaluate a model, not an invalid configuration, not a stage that already ran out of
time. Tasks use it as their `retry_condition_fn`. Flows cannot (Prefect 3 retries a flow on any
failure, with no condition), so no flow has Prefect `retries`: the nightly calls a failed stage
again itself when `retryable` says so (`NIGHTLY_STAGE_RETRIES`), and the tasks retry themselves.
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic
from prefect.flow_engine import FlowRunTimeoutError
from prefect.task_engine import TaskRunTimeoutError

from catalog_enhance.tasks.catalog.labels import CatalogDataError
from catalog_enhance.tasks.lake.checkpoints import CheckpointError
from catalog_enhance.tasks.lake.settings import ConfigError as SettingsError, Settings
from catalog_enhance.tasks.train.config import ConfigError as TrainConfigError

log = logging.getLogger(__name__)

MINUTE, HOUR = 60.0, 3600.0

# Seconds; flows are named as in Prefect (the UI), tasks too.
TIMEOUTS: dict[str, float] = {
    "nightly-enhancement": 20 * HOUR,  # ends before the next night is due (02:00 UTC daily)
    "ingest-catalog": 4 * HOUR,
    "ingest-batch": 1 * HOUR,  # one batch of feed rows (fetch, decode, normalise)
    "make-pairs": 4 * HOUR,
    "make-pairs-chunk": 1 * HOUR,
    "train-models": 12 * HOUR,
    "train-model": 6 * HOUR,  # one model on the cpu preset takes minutes; gpu-preset runs resume
    "evaluate-models": 4 * HOUR,
    "evaluate-kind": 2 * HOUR,
    "write-evaluation-report": 30 * MINUTE,
    "enhance-catalog": 8 * HOUR,
    "enhance-chunk": 1 * HOUR,  # one chunk of images (256 by default)
    "lake-housekeeping": 1 * HOUR,
}

# The nightly calls each stage again (a new subflow run) when it failed on a `retryable` error.
NIGHTLY_STAGE_RETRIES = 1
TASK_RETRIES: dict[str, int] = {"train-model": 1, "evaluate-kind": 1, "write-evaluation-report": 2}
RETRY_DELAY_SECONDS = 10


def _environment_settings() -> Settings | None:
    """The settings at import time (decorators): None when they do not validate; the flow then
    reports the configuration error itself when it starts."""
    try:
        return Settings()
    except (pydantic.ValidationError, ValueError):
        return None


def timeout(name: str, settings: Settings | None = None) -> float:
    """The time limit of flow or task `name`, in seconds (`CE_TIMEOUTS` over `TIMEOUTS`)."""
    if name not in TIMEOUTS:
        raise KeyError(f"no time limit for {name!r}; known: {', '.join(sorted(TIMEOUTS))}")
    settings = settings if settings is not None else _environment_settings()
    overrides = settings.timeouts if settings is not None else {}
    unknown = sorted(set(overrides) - set(TIMEOUTS))
    if unknown:
        raise SettingsError(f"CE_TIMEOUTS names unknown stage(s) {', '.join(unknown)}; known: {', '.join(sorted(TIMEOUTS))}")
    value = float(overrides.get(name, TIMEOUTS[name]))
    if value <= 0:
        raise SettingsError(f"CE_TIMEOUTS[{name!r}] = {value}: a time limit must be positive")
    return value


def decorator_timeout(name: str) -> float:
    """`timeout(name)` for a decorator (import time): the default when the settings are invalid."""
    try:
        return timeout(name)
    except (KeyError, SettingsError):
        return TIMEOUTS[name]


class _KnownThreadTimeoutCaveat(logging.Filter):
    """Drop Prefect's warning, logged for EVERY task run with a timeout on a worker thread, that
    the timeout cannot interrupt a blocking call. Known and accepted here: the tasks run Python
    loops (training steps, images, rows), where the interruption lands at the next step, and the
    stage flows' own timeouts back them; one warning per chunk would bury the real log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout of %s seconds configured for this task, but the task is running")


logging.getLogger("prefect.task_runs").addFilter(_KnownThreadTimeoutCaveat())


NOT_RETRYABLE: tuple[type[BaseException], ...] = (
    CheckpointError,  # refused (not plain data), corrupt or missing: the same bytes fail again
    CatalogDataError,  # NotTrainableHere, NotEvaluableHere, no rows for a filter...
    TrainConfigError, SettingsError, pydantic.ValidationError,
    TaskRunTimeoutError, FlowRunTimeoutError,  # it hung once: a retry would hold the night as long again
)


def retryable(error: BaseException) -> bool:
    """Worth another attempt: anything but a deterministic refusal (see the module docstring)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:  # a refusal wrapped in another error too
        if isinstance(current, NOT_RETRYABLE):
            return False
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return True


def describe_failure(error: BaseException) -> str:
    """One line for a stage's failure; a time limit says which setting sets it."""
    if isinstance(error, TaskRunTimeoutError | FlowRunTimeoutError):
        return f"time limit exceeded ({error} CE_TIMEOUTS sets the limits)"
    return f"{type(error).__name__}: {error}"


def retry_unless_refused(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn` of tasks: retry a failed run only when its error is `retryable`."""
    try:
        state.result()
    except BaseException as error:  # noqa: BLE001 - the failure being judged
        if not retryable(error):
            log.info("not retrying %s: %s: %s", getattr(task_run, "name", "task"), type(error).__name__, error)
        return retryable(error)
    return False
