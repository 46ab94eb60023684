"""Running manifest writers (`manifest_writers.py`) as real, overlapping processes, and the feeds
they ingest."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from manifest_writers import png

HERE = Path(__file__).resolve().parent
WRITERS = HERE / "manifest_writers.py"
REPO = HERE.parent


def write_feed(folder: Path, rows: list[dict], *, image_seed: int = 0) -> str:
    """A CSV feed in `folder`; each row's `image` (an int, or None for a file that does not exist)
    becomes a tiny PNG of its own under `folder/img/`."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    out = []
    for row in rows:
        image = row.get("image")
        name = f"img/{folder.name}_{image if image is not None else 'missing'}.png"
        if image is not None:
            (folder / name).write_bytes(png(image_seed * 100_000 + image, size=8))
        out.append({"sku": row["sku"], "image_uri": name, "category": row.get("category", "toys"),
                    "style": row.get("style", "studio")})
    path = folder / "feed.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sku", "image_uri", "category", "style"])
        writer.writeheader()
        writer.writerows(out)
    return str(path)


@dataclass
class Writer:
    args: list[str]
    process: subprocess.Popen
    log: Path  # stdout and stderr
    kill_after: float | None = None  # seconds after the start signal; None: let it finish

    @property
    def killed(self) -> bool:
        return self.process.returncode == -signal.SIGKILL


def run_together(jobs: list[list[str]], tmp: Path, *, kill_after: list[float | None] | None = None,
                 slow_commit: float = 0.0, race_first_commit: bool = False, timeout: float = 120.0) -> list[Writer]:
    """Start every job as its own process, let them all go at once, kill -9 those with a
    `kill_after` delay when it passes, wait for the rest. Returns them, finished. `slow_commit`
    widens each commit's read-to-write window; `race_first_commit` makes every writer's first
    commit start from the same snapshot (see manifest_writers)."""
    go = tmp / f"go-{uuid.uuid4().hex}"
    barrier = tmp / f"barrier-{uuid.uuid4().hex}"
    barrier.mkdir()
    env = {**os.environ, "CE_TEST_GO": str(go), "CE_TEST_SLOW_COMMIT": str(slow_commit or ""),
           "CE_TEST_COMMIT_BARRIER": f"{barrier}:{len(jobs)}" if race_first_commit else "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    delays = kill_after or [None] * len(jobs)
    writers = []
    for job, delay in zip(jobs, delays):
        log = tmp / f"writer-{uuid.uuid4().hex}.log"
        with log.open("w") as handle:  # a file, not a pipe: a chatty writer never blocks on it
            process = subprocess.Popen([sys.executable, str(WRITERS), *job], env=env, cwd=tmp,
                                       stdout=handle, stderr=subprocess.STDOUT)
        writers.append(Writer(job, process, log, delay))
    time.sleep(0.2)  # the interpreters start while nobody may write yet
    go.touch()
    started = time.monotonic()
    pending = list(writers)
    while pending:
        for writer in list(pending):
            if writer.process.poll() is not None:
                pending.remove(writer)
            elif writer.kill_after is not None and time.monotonic() - started >= writer.kill_after:
                writer.process.kill()  # SIGKILL: no cleanup, no finally
                writer.process.wait()
                pending.remove(writer)
            elif time.monotonic() - started > timeout:
                for other in pending:
                    other.process.kill()
                raise TimeoutError(f"writers still running after {timeout} s: {[w.args for w in pending]}")
        time.sleep(0.01)
    return writers


def check_finished(writers: list[Writer]) -> None:
    for writer in writers:
        if not writer.killed and writer.process.returncode != 0:
            raise AssertionError(f"{writer.args} exited {writer.process.returncode}: {writer.log.read_text()[-3000:]}")
