"""Where a flow's fanned-out tasks run: local threads by default, a Dask cluster when configured.

`CE_DASK_ADDRESS=tcp://scheduler:8786` (`Settings.dask_address`) sends the tasks to an existing
Dask cluster through prefect-dask's `DaskTaskRunner`; the flow itself still runs where it was
started (a worker, or your shell) and reports to the same Prefect API. A decorator's runner is
fixed at import time, before settings are read, so flows choose theirs when they are called:

    ingest_catalog.with_options(task_runner=task_runner_for(settings))(feed=..., lake_url=...)

Dask workers need this project installed (tasks are pickled by reference to their modules), the
same lake (a local lake only if they share its filesystem; S3 otherwise) and the feed's images.
The Prefect API URL travels with every task (Prefect serialises its settings context), so
they report their task runs to the flow's server without configuration.
"""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from catalog_enhance.tasks.lake.settings import Settings


def task_runner_for(settings: Settings, max_workers: int | None = None) -> TaskRunner:
    """`DaskTaskRunner` on `settings.dask_address` when set, else `ThreadPoolTaskRunner(max_workers)`."""
    if settings.dask_address:
        from prefect_dask import DaskTaskRunner  # imported only when used: it pulls in distributed

        return DaskTaskRunner(address=settings.dask_address)
    return ThreadPoolTaskRunner(max_workers=max_workers)
