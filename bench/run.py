"""Run every benchmark on a scratch lake and write bench/RESULTS.md and bench/*.png.

    python -m bench.run                       # everything (make bench): under 30 min on 2 cores
    python -m bench.run --only s3_io,ingestion --keep

Order: the sample catalog (built if `sample_catalog/` is missing) -> the held-out feed -> the cold
and the warm nightly on a fresh scratch lake (which also trains the x2 models) -> SR quality (x3
and x4 models trained here) -> throughput of the x2 champion -> ingestion memory -> S3. A
benchmark that fails is reported in RESULTS.md with its error, the others still run, and the
command exits non-zero. Benchmarks never assert on time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
STAGES = ("incremental", "sr_quality", "throughput", "ingestion", "s3_io")

_started = time.perf_counter()


def log(message: str) -> None:
    print(f"[bench {time.perf_counter() - _started:7.1f} s] {message}", flush=True)


def _environment(scratch: Path) -> None:
    """Before torch or Prefect is imported: idle OpenMP threads sleep (spinning threads made
    2-core training several times slower under load), and Prefect keeps its database and logs
    in the scratch folder, quietly, with time to start its ephemeral server."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["PREFECT_HOME"] = str(scratch / "prefect")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(STAGES),
                        help=f"comma-separated stages to run (default all: {','.join(STAGES)})")
    parser.add_argument("--scratch", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder afterwards")
    parser.add_argument("--sample-catalog", type=Path, default=REPO / "sample_catalog")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache")
    parser.add_argument("--out", type=Path, default=BENCH_DIR)
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="catalog-enhance-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    _environment(scratch)
    try:
        results = run(stages, scratch, args.sample_catalog, args.cache)
        from bench.report import write_report

        write_report(results, args.out)
        log(f"wrote {args.out / 'RESULTS.md'}")
        return 1 if results["errors"] else 0
    finally:
        if args.keep:
            log(f"scratch kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def run(stages: list[str], scratch: Path, sample_dir: Path, cache_dir: Path) -> dict:
    import torch

    from bench import catalog, machine

    results: dict = {"stages": stages, "errors": {}, "not_run": [s for s in STAGES if s not in stages],
                     "machine": machine.describe(), "seconds": {}}
    log(f"machine: {results['machine']['CPU']}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load {results['machine']['load average at start (1/5/15 min)']}")

    def stage(name: str, fn, *args, **kwargs):
        started = time.perf_counter()
        log(f"{name}: start")
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported, the other benchmarks still run
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
            log(f"{name}: FAILED: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            value = None
        results["seconds"][name] = time.perf_counter() - started
        log(f"{name}: done in {results['seconds'][name]:.0f} s")
        return value

    sample_feed = catalog.sample_catalog(sample_dir, cache_dir)
    env = catalog.local_roots_env(sample_feed)
    os.environ.update(env)  # the flows in this process read feeds that point into the sample catalog
    needs_lake = any(s in stages for s in ("incremental", "sr_quality", "throughput"))
    lake = None
    if needs_lake:
        from catalog_enhance.tasks.lake.storage import Lake

        from bench import incremental

        held_out = catalog.held_out_feed(sample_feed, scratch / "feed-held-out.csv")
        results["held_out"] = held_out
        log(f"feed: {held_out.rows} rows ({held_out.dropped} lifestyle images on the evaluation photos left out)")
        results["prefect_start_seconds"] = incremental.warm_up_prefect()
        lake_url = str(scratch / "lake")
        results["incremental"] = stage("incremental", incremental.nightly_cold_and_warm, held_out.path, lake_url)
        lake = Lake.from_url(lake_url) if results["incremental"] else None

    if "sr_quality" in stages or "throughput" in stages:
        from bench import sr_quality

        x2 = {r["name"]: r["version"] for r in (results.get("incremental") or {}).get("training", [])}
        if lake is not None and x2:
            results["sr_quality"] = stage("sr_quality", sr_quality.run, lake, x2, catalog.EVAL_PHOTOS, log=log)
        else:
            results["errors"]["sr_quality"] = "not run: the cold nightly run failed"

    if "throughput" in stages:
        from bench import throughput

        quality = results.get("sr_quality")
        if lake is not None and quality:
            results["throughput"] = stage("throughput", throughput.run, lake, quality["champion_x2"], log=log)
        else:
            results["errors"]["throughput"] = "not run: no champion (SR quality failed)"

    if "ingestion" in stages:
        from bench import incremental

        results["ingestion"] = stage("ingestion", incremental.ingestion_memory, sample_feed, scratch, env)

    if "s3_io" in stages:
        from bench import s3_io

        results["s3_io"] = stage("s3_io", s3_io.run, sample_feed.parent / "images", log=log)

    results["machine"]["load average at end (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in machine.load_average())
    results["total_seconds"] = time.perf_counter() - _started
    return results


if __name__ == "__main__":
    sys.exit(main())
