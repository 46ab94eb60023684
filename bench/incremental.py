"""Incremental cost: a nightly run over an unchanged catalog against the cold run, and ingestion
of large feeds whose peak memory must not grow with the row count.

Nightly: the cold run starts from an empty lake (ingest, pairs, training, enhancement); the warm
run repeats it over the same feed and should find nothing to do. Both run the real
`nightly-enhancement` flow, after one throw-away flow has started Prefect's ephemeral server,
so neither pays the server's start-up. The cold run trains the SR models only (`NIGHTLY_MODELS`):
the three GANs would add about ten minutes to the cold run and nothing to the warm one, which
would only make the ratio look better.

Ingestion memory: each feed size is ingested by the `ingest-catalog` flow in a fresh child
process (its own lake and Prefect home), because peak RSS only ever grows within a process.
The peak is the child's own `VmHWM` (/proc/self/status: the high-water mark of the address
space it exec'd into). Not `ru_maxrss`: Linux carries the RSS of the process that forked the
child over into the child's `ru_maxrss` at exec, so from this benchmark (torch and Prefect
loaded, ~500 MB) every child "peaked" at >= 500 MB whatever it did; both `RUSAGE_SELF` in the
child and `RUSAGE_CHILDREN`/`wait4` in the parent include it (measured in bench/NOTES.md).
`ru_maxrss` is still reported, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

NIGHTLY_MODELS = ("srcnn", "espcn")
INGEST_ROWS = (1_000, 10_000)


def warm_up_prefect() -> float:
    """Run one empty flow, so Prefect's ephemeral server is up before anything is timed."""
    from prefect import flow

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    started = time.perf_counter()
    warm_up()
    return time.perf_counter() - started


def nightly_cold_and_warm(feed: Path, lake_url: str, models: tuple[str, ...] = NIGHTLY_MODELS) -> dict:
    """Time the nightly flow on an empty lake, then again on the unchanged feed."""
    from catalog_enhance.flows.nightly import nightly

    runs = {}
    for name in ("cold", "warm"):
        started = time.perf_counter()
        summary = nightly(feed=str(feed), lake_url=lake_url, models=list(models), preset="cpu")
        runs[name] = (time.perf_counter() - started, summary)
    (cold_s, cold), (warm_s, warm) = runs["cold"], runs["warm"]
    return {
        "cold_seconds": cold_s,
        "warm_seconds": warm_s,
        "warm_over_cold": warm_s / cold_s,
        "cold_stages": {k: round(v, 1) for k, v in cold.seconds.items()},
        "warm_stages": {k: round(v, 2) for k, v in warm.seconds.items()},
        "warm_verdicts": warm.verdicts(),
        "images": cold.ingest.ingested_new,
        "pairs": cold.pairs.pairs_written,
        "enhanced": cold.enhancement.enhanced if cold.enhancement else 0,
        "training": [{"name": r["name"], "version": r["version"], "seconds": r["train_seconds"],
                      "metrics": json.loads(r["metrics"])} for r in cold.training],
    }


def _maxrss_mib(kib: int) -> float:
    return kib / 1024  # Linux reports ru_maxrss in KiB


def peak_rss_mib() -> float:
    """This process's own peak resident memory since it exec'd (VmHWM), MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return _maxrss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def ingest_in_child(feed: Path, lake: Path, prefect_home: Path, env: dict[str, str]) -> dict:
    """Ingest `feed` into a new lake in a child process; its wall time and peak memory."""
    report_path = lake.with_suffix(".json")
    command = [sys.executable, "-m", "bench.incremental", "ingest", "--feed", str(feed), "--lake", str(lake),
               "--report", str(report_path)]
    child_env = {**os.environ, **env, "PREFECT_HOME": str(prefect_home)}
    log_path = lake.with_suffix(".log")
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=Path(__file__).resolve().parents[1])
        # wait4, not wait: the rusage of this child alone (and of the children it waited for).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"ingestion child failed ({process.returncode}): "
                           f"{log_path.read_text()[-2000:].strip()}")
    report = json.loads(report_path.read_text())
    report["wall_seconds"] = time.perf_counter() - started
    report["wait4_maxrss_mib"] = _maxrss_mib(usage.ru_maxrss)  # includes this process's RSS at the fork
    return report


def ingestion_memory(sample_feed: Path, scratch: Path, env: dict[str, str], rows: tuple[int, ...] = INGEST_ROWS) -> list[dict]:
    from bench.catalog import generated_feed

    results = []
    for n in rows:
        feed = generated_feed(sample_feed, scratch / f"feed-{n}.csv", n)
        report = ingest_in_child(feed, scratch / f"lake-ingest-{n}", scratch / f"prefect-ingest-{n}", env)
        results.append({"rows": n, **report})
    return results


def _child_ingest(feed: str, lake: str, report: str) -> None:
    """Child process: run the ingestion flow once and write its figures as JSON to `report`."""
    from catalog_enhance.flows.ingest import ingest_catalog

    started = time.perf_counter()
    summary = ingest_catalog(feed=feed, lake_url=lake)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(report).write_text(json.dumps({
        "seconds": seconds,
        "ingested": summary.ingested_new,
        "quarantined": summary.quarantined,
        "images_written": summary.objects_written,
        "rows_per_second": summary.rows / seconds if seconds > 0 else 0.0,
        "peak_rss_mib": peak_rss_mib(),
        "ru_maxrss_mib": _maxrss_mib(usage.ru_maxrss),
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.incremental")
    sub = parser.add_subparsers(dest="command", required=True)
    ingest = sub.add_parser("ingest", help="(child process) ingest one feed, write its figures as JSON")
    ingest.add_argument("--feed", required=True)
    ingest.add_argument("--lake", required=True)
    ingest.add_argument("--report", required=True)
    args = parser.parse_args(argv)
    if args.command == "ingest":
        _child_ingest(args.feed, args.lake, args.report)


if __name__ == "__main__":
    main()
