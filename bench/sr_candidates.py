"""SR candidates for the fidelity champion: PSNR-Y gain over bicubic on the photos versus training time.

    python -m bench.sr_candidates                          # every candidate, x2 and x4, 15 min each
    python -m bench.sr_candidates --minutes 4 --candidates edsr,rlfn --scales 2
    python -m bench.sr_candidates --report-only            # redraw the table and plot from the JSON

Each (candidate, scale) trains from scratch on the benchmark's held-out feed (`bench.catalog`,
the data `bench.sr_quality` uses: no training crop shows an evaluation photo) for a wall-time
budget, and is scored on the photos (`sr_quality.photo_pairs`, same protocol and helpers) every
`--eval-every` minutes of TRAINING time: evaluation is excluded from the clock. The cosine
schedule is fitted to the budget: the step count is estimated from the measured seconds a step
and re-estimated at every checkpoint, so the decay ends when the budget does. At the end the test
split is scored too: the champion is picked on it, never on the photos.

Every run is appended to `bench/sr_candidates.json` (same candidate, scale and budget: replaced);
the table goes to a section of `bench/RESULTS.md` (kept by `bench.report`) and the curves to
`bench/sr_candidates.png`. The load average is recorded beside every run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_JSON = BENCH_DIR / "sr_candidates.json"
SECTION_START, SECTION_END = "<!-- sr_candidates: start -->", "<!-- sr_candidates: end -->"
TARGET_GAIN_DB = {2: 2.8, 4: 1.8}  # issue 12, item 5: on the photos, <= 15 min on 2 cores
TEST_IMAGES = 40  # test-split images scored at the end (the champion is chosen on these)


@dataclass(frozen=True)
class Candidate:
    model: str
    overrides: dict = field(default_factory=dict)  # make_config overrides of the cpu preset
    note: str = ""


CANDIDATES = {
    "espcn": Candidate("espcn", {}, "today's champion: cpu preset (depth 3, mid 64, MSE, 24 px patches)"),
    "espcn-l1": Candidate("espcn", {"data.loss": "l1", "data.lr_patch": 32},
                          "the same network with L1 and 32 px patches"),
    "edsr": Candidate("edsr", {}, "EDSR-baseline blocks at width 32, 8 blocks, L1, 32 px patches"),
    "rlfn": Candidate("rlfn", {}, "RLFN blocks with ESA, width 32, 4 blocks, L1, 32 px patches"),
}


def log(message: str) -> None:
    print(f"[sr_candidates {time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare_lake(scratch: Path) -> str:
    """A lake holding the held-out feed's images and bicubic pairs (x2-x4), made once per scratch."""
    from bench import catalog
    from catalog_enhance.tasks.lake import manifests
    from catalog_enhance.tasks.lake.storage import Lake

    lake_url = str(scratch / "lake")
    lake = Lake.from_url(lake_url)
    if manifests.exists(lake, "pairs"):
        return lake_url
    from catalog_enhance.flows.ingest import ingest_catalog
    from catalog_enhance.flows.pairs import make_pairs

    sample_feed = catalog.sample_catalog(REPO / "sample_catalog", REPO / ".cache")
    os.environ.update(catalog.local_roots_env(sample_feed))
    held_out = catalog.held_out_feed(sample_feed, scratch / "feed-held-out.csv")
    log(f"feed: {held_out.rows} rows ({held_out.dropped} lifestyle images on the evaluation photos left out)")
    ingest_catalog(feed=str(held_out.path), lake_url=lake_url)
    make_pairs(lake_url=lake_url)
    return lake_url


def photo_gain(lake, module, scale: int, channels: int, pairs: list) -> float:
    """Mean PSNR-Y gain over bicubic of `module` on materialised (hr, lr, meta) pairs."""
    from bench.sr_quality import summarize
    from catalog_enhance.tasks.evaluate.sr_eval import evaluate_sr
    from catalog_enhance.tasks.inference.enhancers import bicubic, model_enhancer

    frame = evaluate_sr(pairs, {"bicubic": bicubic, "model": model_enhancer(module, scale, channels)}, scale)
    frame["set"] = "eval"
    summary = summarize(frame)
    module.train()
    return float(summary[summary["enhancer"] == "model"]["psnr_gain"].iloc[0])


def train_for(lake_url: str, name: str, scale: int, minutes: float, eval_every: float, clock: str = "wall") -> dict:
    """Train candidate `name` at `scale` for `minutes` on `clock`; its curve and final scores.

    clock "wall": wall time. "cpu": this process's CPU seconds / 2, i.e. minutes of 2 dedicated
    cores, for a machine that other work shares (both are recorded either way)."""
    from bench import catalog
    from bench.sr_quality import photo_pairs, test_split_pairs
    from catalog_enhance.tasks.lake.storage import Lake
    from catalog_enhance.tasks.runtime import configure_backends, seed_everything, select_runtime
    from catalog_enhance.tasks.train.base import trainer_for
    from catalog_enhance.tasks.train.config import make_config

    lake = Lake.from_url(lake_url)
    candidate = CANDIDATES[name]
    # A step count far beyond the budget: the loader streams to it; the schedule's own is set below.
    config = make_config(candidate.model, "cpu", **{"data.scale": scale, "steps": 10**7, **candidate.overrides})
    runtime = select_runtime("cpu")
    configure_backends(runtime)
    seed_everything(config.seed)
    trainer = trainer_for(config, lake, runtime)
    trainer.setup()
    channels = int(trainer.options.channels)  # type: ignore[attr-defined]
    photos = list(photo_pairs(lake, scale, catalog.EVAL_PHOTOS))
    budget = minutes * 60.0
    load_start = os.getloadavg()
    curve: list[dict] = [{"minutes": 0.0, "step": 0, "photo_gain": 0.0}]  # zero-initialised tail: bicubic
    train_seconds, wall_seconds, cpu_seconds, step, next_eval = 0.0, 0.0, 0.0, 0, eval_every * 60.0
    recent: list[float] = []
    trainer.config.steps = 10**7
    while train_seconds < budget:
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.train_step(step)
        wall, cpu = time.perf_counter() - started, (time.process_time() - cpu_started) / 2
        spent = wall if clock == "wall" else cpu
        cpu_seconds += cpu
        train_seconds += spent
        wall_seconds += wall
        step += 1
        recent = (recent + [spent])[-50:]
        if step == 20 or train_seconds >= next_eval:  # fit the cosine to the remaining budget
            per_step = sorted(recent)[len(recent) // 2]
            trainer.config.steps = step + max(1, int((budget - train_seconds) / per_step))
        if train_seconds >= next_eval or train_seconds >= budget:
            gain = photo_gain(lake, trainer.model, scale, channels, photos)
            curve.append({"minutes": train_seconds / 60, "step": step, "photo_gain": gain})
            log(f"{name} x{scale}: {train_seconds / 60:5.2f} min ({clock}), step {step}/{trainer.config.steps}, "
                f"photos +{gain:.2f} dB, load {os.getloadavg()[0]:.2f}")
            next_eval += eval_every * 60.0
            progress = BENCH_DIR / "out" / f"sr_candidates.{name}.x{scale}.{clock}.partial.json"
            progress.parent.mkdir(exist_ok=True)
            progress.write_text(json.dumps({"steps": step, "curve": curve}))  # survives an interrupted run
    test = list(test_split_pairs(lake, scale))[:TEST_IMAGES]
    model = trainer.model
    return {
        "candidate": name, "model": candidate.model, "note": candidate.note, "scale": scale, "budget_minutes": minutes,
        "config": config.model_dump(mode="json") | {"steps": step}, "steps": step,
        "clock": clock, "train_minutes": train_seconds / 60, "wall_minutes": wall_seconds / 60,
        "cpu_minutes": cpu_seconds / 60, "params": sum(p.numel() for p in model.parameters()),
        "macs_per_output_pixel": float(model.macs_per_output_pixel()),  # type: ignore[operator]
        "curve": curve, "photo_gain": curve[-1]["photo_gain"],
        "test_gain": photo_gain(lake, model, scale, channels, test),
        "load_start": [round(x, 2) for x in load_start], "load_end": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def record(run: dict, path: Path = RESULTS_JSON) -> list[dict]:
    runs = json.loads(path.read_text()) if path.exists() else []
    def key(r: dict) -> tuple:
        return r["candidate"], r["scale"], r["budget_minutes"], r.get("clock", "wall")

    runs = [r for r in runs if key(r) != key(run)] + [run]
    path.write_text(json.dumps(runs, indent=1) + "\n")
    return runs


def section(runs: list[dict]) -> list[str]:
    """The RESULTS.md section: targets, then every run's curve."""
    from bench.report import _table

    lines = [SECTION_START, "## SR candidates (issue 12, item 5)", "",
             "Each candidate trained from scratch on the benchmark's held-out feed for a time budget (2 cores, "
             "`python -m bench.sr_candidates`), scored on the photos (PSNR-Y gain over MATLAB bicubic, the SR quality "
             "protocol) at checkpoints of training time; evaluation time excluded. Test split: the first "
             f"{TEST_IMAGES} test images, scored at the end (the champion is picked on it). Load average (1 min) at "
             "start and end beside each run: the machine is shared. Clock `wall` is wall time; clock `cpu` is the "
             "training process's CPU seconds / 2 (minutes of 2 dedicated cores), used when other work shared the "
             "machine.", ""]
    full = [r for r in runs if r["budget_minutes"] >= 15]
    for scale, target in TARGET_GAIN_DB.items():
        at_scale = [r for r in full if r["scale"] == scale]
        if at_scale:
            best = max(at_scale, key=lambda r: r["test_gain"])
            met = best["photo_gain"] >= target and best["train_minutes"] <= 15.05
            lines.append(f"- x{scale} target >= +{target} dB on the photos in <= 15 min: champion (by test split) "
                         f"{best['candidate']}, +{best['photo_gain']:.2f} dB after {best['train_minutes']:.1f} min: "
                         f"**{'met' if met else 'not met'}**")
    lines.append("")
    rows = [[r["candidate"], f"x{r['scale']}", f"{r['budget_minutes']:g} {r.get('clock', 'wall')}",
             f"{r.get('wall_minutes', r['train_minutes']):.1f} / "
             + f"{r.get('cpu_minutes', r['train_minutes'] if r.get('clock') == 'cpu' else float('nan')):.1f}", r["steps"],
             f"{r['params']:,}", f"{r['macs_per_output_pixel']:,.0f}",
             f"+{r['photo_gain']:.2f}", f"+{r['test_gain']:.2f}",
             " ".join(f"{p['minutes']:.1f}:+{p['photo_gain']:.2f}" for p in r["curve"][1:]),
             f"{r['load_start'][0]:.1f} / {r['load_end'][0]:.1f}"]
            for r in sorted(runs, key=lambda r: (r["budget_minutes"], r["scale"], r["candidate"]))]
    lines += _table(["candidate", "scale", "budget (min, clock)", "trained min (wall / CPU s / 2 / 60)", "steps", "params", "MACs / out px",
                     "photos dB", "test dB", "photo curve (min:dB)", "load start / end"], rows)
    ran = {r["candidate"] for r in runs}
    lines += ["Candidates: " + "; ".join(f"`{n}`: {c.note}" + ("" if n in ran else " (no completed run)")
                                         for n, c in CANDIDATES.items()) + ".", "",
              "![SR candidates](sr_candidates.png)", "", SECTION_END]
    return lines


def write_section(runs: list[dict], results_md: Path = BENCH_DIR / "RESULTS.md") -> None:
    """Replace (or append) the section in RESULTS.md."""
    text = results_md.read_text() if results_md.exists() else ""
    block = "\n".join(section(runs))
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        text = head + block + rest.split(SECTION_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    results_md.write_text(text)


def plot(runs: list[dict], path: Path = BENCH_DIR / "sr_candidates.png") -> None:
    from bench.report import _figure

    figure = _figure(11, 4.2)
    for index, (scale, target) in enumerate(TARGET_GAIN_DB.items()):
        ax = figure.add_subplot(1, 2, index + 1)
        for run in sorted((r for r in runs if r["scale"] == scale), key=lambda r: (r["candidate"], r["budget_minutes"])):
            xs = [p["minutes"] for p in run["curve"]]
            ys = [p["photo_gain"] for p in run["curve"]]
            colour = f"C{list(CANDIDATES).index(run['candidate'])}"  # one colour a candidate in both panels
            ax.plot(xs, ys, marker="o", markersize=3, linestyle="-" if run["budget_minutes"] >= 15 else ":", color=colour,
                    label=f"{run['candidate']} ({run['budget_minutes']:g} min, {run.get('clock', 'wall')})")
        ax.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target +{target} dB")
        ax.set_xlabel("training minutes on 2 cores (evaluation excluded)")
        ax.set_ylabel("PSNR-Y gain over bicubic on the photos (dB)")
        ax.set_title(f"x{scale}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sr_candidates", description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help=f"comma-separated, of {', '.join(CANDIDATES)}")
    parser.add_argument("--scales", default="2,4")
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall time per candidate and scale")
    parser.add_argument("--eval-every", type=float, default=None, help="minutes of training between evaluations "
                        "(default: a sixth of the budget, at least 1)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="budget in wall time, or in this process's CPU time / 2 (2 dedicated cores) on a shared machine")
    parser.add_argument("--scratch", type=Path, default=BENCH_DIR / "out" / "sr_candidates",
                        help="folder of the lake (reused between invocations)")
    parser.add_argument("--json", type=Path, default=RESULTS_JSON,
                        help="results file to add runs to (runs in parallel each need their own; --merge joins them)")
    parser.add_argument("--merge", type=Path, nargs="*", default=[], help="results files to merge into --json first")
    parser.add_argument("--report-only", action="store_true", help="only redraw the section and plot from the JSON")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidate(s) {unknown}; known: {', '.join(CANDIDATES)}")
    runs = json.loads(args.json.read_text()) if args.json.exists() else []
    for other in args.merge:
        for run in json.loads(other.read_text()):
            runs = record(run, args.json)
    if not args.report_only:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see bench/run.py
        args.scratch.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(args.scratch / "prefect")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        lake_url = prepare_lake(args.scratch)
        eval_every = args.eval_every or max(1.0, args.minutes / 6)
        for scale in [int(s) for s in args.scales.split(",")]:
            for name in names:
                log(f"{name} x{scale}: training for {args.minutes:g} min (load {os.getloadavg()[0]:.2f})")
                run = train_for(lake_url, name, scale, args.minutes, eval_every, args.clock)
                runs = record(run, args.json)
                log(f"{name} x{scale}: photos +{run['photo_gain']:.2f} dB, test +{run['test_gain']:.2f} dB "
                    f"after {run['train_minutes']:.1f} min ({run['steps']} steps)")
                write_section(runs)
                plot(runs)
    write_section(runs)
    plot(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
