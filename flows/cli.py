"""`catalog-enhance`: the command line over the same flows the deployments run.

Imports of flows and torch are deferred into each command so `--help` stays instant.

A user's mistake is one line naming the item and the reason, exit 2: `configuration error: ...`,
`lake error: ...`, `feed error: ...`, `input error: ...`, checked before any flow starts (so
before any Prefect server). Anything else is one line and exit 1. `--debug` shows the traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar, cast

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the CLI imports the pipeline lazily, so that `--help` and input errors are fast
    from catalog_enhance.tasks.enhance.params import EnhancementMode

# Idle OpenMP threads must not spin: on a shared 2-core machine spinning made training 5x slower.
# Set before torch is imported (the commands import it lazily).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Prefect's telemetry cannot reach its host on an offline machine and logs an ERROR each run.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(
    name="catalog-enhance",
    help="Turn an e-commerce catalog into better product images, orchestrated by Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()

LakeOption = Annotated[
    Optional[str],
    typer.Option("--lake", help="Lake URL (local folder or s3://bucket/prefix); default: $CE_LAKE_URL or ./lake"),
]

# The user's mistakes, by (module, class): looked up in `sys.modules` when an error is reported,
# so reporting imports nothing (an error of a module never imported cannot be raised).
USER_ERRORS = (
    ("catalog_enhance.tasks.lake.settings", "ConfigError", "configuration error"),
    ("catalog_enhance.tasks.lake.access", "LakeError", "lake error"),
    ("catalog_enhance.tasks.sources.feeds", "FeedError", "feed error"),
    ("catalog_enhance.tasks.enhance.folder", "InputError", "input error"),
    ("catalog_enhance.tasks.evaluate.sr_paired", "PairedFolderError", "input error"),
    ("catalog_enhance.tasks.enhance.choice", "NoChampion", "model error"),
    ("catalog_enhance.tasks.imaging.degradation_config", "UnknownDegradation", "configuration error"),
)
USER_ERROR_EXIT = 2
_debug = False


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error")] = False,
) -> None:
    global _debug
    _debug = debug


def _user_error_kind(exc: BaseException) -> str | None:
    for module, name, kind in USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return kind
    return None


_Command = TypeVar("_Command", bound=Callable[..., Any])


def _reported(command: _Command) -> _Command:
    """Errors as one line on stderr: a user's mistake exits 2, anything else 1; `--debug` re-raises."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            # typer's own exits and usage errors (typer's classes, or click's in older typer).
            if _debug or isinstance(exc, (typer.Exit, typer.Abort)) or \
                    type(exc).__module__.split(".")[0] in {"typer", "click"}:
                raise
            message = " ".join(str(exc).split())
            kind = _user_error_kind(exc)
            if kind is not None:
                typer.echo(f"{kind}: {message}", err=True)
                raise typer.Exit(USER_ERROR_EXIT) from None
            typer.echo(f"error: {type(exc).__name__}: {message} (run with --debug for the traceback)", err=True)
            raise typer.Exit(1) from None

    return run  # type: ignore[return-value]


def _command(*args, **kwargs) -> Callable[[_Command], _Command]:
    """`app.command`, with errors reported by `_reported`."""
    return lambda command: app.command(*args, **kwargs)(_reported(command))


class _NoTraceback(logging.Filter):
    """The console shows a log record's message, never its traceback (the Prefect UI and API
    logs keep it): one line a failed attempt instead of a 60-line traceback each."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def _quiet_console() -> None:
    """Call after importing a flow (that configures Prefect's logging): unless `--debug`, the
    console handlers drop tracebacks, so an S3 outage is a line a retry, not hundreds."""
    if _debug:
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not any(isinstance(f, _NoTraceback) for f in handler.filters):
            handler.addFilter(_NoTraceback())


def _settings(lake: str | None):
    """Validate configuration up front (a `ConfigError` is one line and exit 2)."""
    from catalog_enhance.tasks.lake.settings import load_settings

    return load_settings(**({"lake_url": lake} if lake else {}))


def _check_lake(settings) -> None:
    """Reach the lake before any flow starts: a missing bucket, refused credentials or an endpoint
    that is down is one `LakeError` line in about a second (tasks/lake/access.py)."""
    from catalog_enhance.tasks.lake.storage import Lake

    Lake.from_settings(settings)


def _check_catalog(settings) -> None:
    """A stage that reads the catalog, on a lake where nothing was ingested: one line, exit 2."""
    from catalog_enhance.tasks.lake import manifests
    from catalog_enhance.tasks.lake.storage import Lake

    lake = Lake.from_settings(settings)
    if not manifests.exists(lake, "catalog"):
        typer.echo(f"input error: {lake.root_uri} has no catalog yet: run catalog-enhance ingest --feed FEED first",
                   err=True)
        raise typer.Exit(USER_ERROR_EXIT)


ModeOption = Annotated[str, typer.Option(
    help="fidelity (enlarge clean images: the SR champion) | restore (also undo JPEG, noise, blur: "
         "the restoration champion)")]


def _check_mode(mode: str) -> "EnhancementMode":
    from catalog_enhance.tasks.enhance.params import ENHANCEMENT_MODES

    if mode not in ENHANCEMENT_MODES:
        typer.echo(f"input error: unknown --mode {mode!r}; modes: {', '.join(ENHANCEMENT_MODES)}", err=True)
        raise typer.Exit(USER_ERROR_EXIT)
    return cast("EnhancementMode", mode)


def _check_feed(feed: str, settings) -> None:
    """Check the feed before any flow starts (a CSV's header, a Parquet schema), so one that cannot
    be used (missing, empty, not UTF-8, a required column missing) is one `FeedError` line."""
    from catalog_enhance.tasks.sources.feeds import check_feed

    check_feed(feed, settings)


def _print_counts(title: str, counts: dict) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in counts.items():
        table.add_row(str(key), str(value))
    console.print(table)


@_command("sample-catalog")
def sample_catalog(
    out: Annotated[Path, typer.Option(help="Folder for feed.csv and images/")] = Path("sample_catalog"),
    cache: Annotated[Path, typer.Option(help="Download cache for the Debian packages")] = Path(".cache"),
    seed: Annotated[int, typer.Option(help="Seed: same seed, byte-identical catalog")] = 0,
    max_objects: Annotated[int, typer.Option(help="Objects to draw (each gives a studio and a lifestyle image)")] = 300,
    source: Annotated[str, typer.Option(help="auto | tuxpaint | skimage | fashion-mnist")] = "auto",
) -> None:
    """Build the reproducible sample catalog (Tux Paint product cutouts on studio and lifestyle backgrounds)."""
    from catalog_enhance.demo_data.sample_catalog import build_sample_catalog

    result = build_sample_catalog(out, cache, seed=seed, max_objects=max_objects, source=source)
    if result.fallback_reason:
        console.print(f"[yellow]fell back to scikit-image photos:[/yellow] {result.fallback_reason}")
    _print_counts(
        f"sample catalog ({result.source})",
        {"objects": result.n_objects, "images": result.n_images, "feed": str(result.feed_path)},
    )


@_command()
def ingest(
    feed: Annotated[str, typer.Option(help="Catalog feed: CSV, Parquet or JSON Lines (local path or URL)")],
    lake: LakeOption = None,
) -> None:
    """Ingest a catalog feed into the lake (incremental; bad rows are quarantined)."""
    settings = _settings(lake)
    _check_feed(feed, settings)
    _check_lake(settings)
    from catalog_enhance.flows.ingest import ingest_catalog
    _quiet_console()

    summary = ingest_catalog(feed=feed, lake_url=settings.lake_url)
    _print_counts("ingestion", summary.counts())


@_command()
def pairs(
    degradation: Annotated[
        str, typer.Option(help="How LR inputs are made: bicubic | light | realistic (Real-ESRGAN's second order)")
    ] = "bicubic",
    scale: Annotated[Optional[list[int]], typer.Option(
        help="Scales to pair (repeat: --scale 1 --scale 2); 1 = same-size pairs for restoration. Default: 2, 3, 4")] = None,
    lake: LakeOption = None,
) -> None:
    """Make LR/HR training pairs (x2, x3, x4) for every current catalog image that has none."""
    from catalog_enhance.tasks.catalog.pairs_config import SUPPORTED_SCALES, PairsConfig
    from catalog_enhance.tasks.imaging.degradation_config import named_degradation

    named_degradation(degradation)  # an unknown name is one line and exit 2, before the lake or a flow
    if scale and (len(set(scale)) != len(scale) or any(s not in SUPPORTED_SCALES for s in scale)):
        typer.echo(f"input error: --scale {scale}: distinct values among {SUPPORTED_SCALES}", err=True)
        raise typer.Exit(USER_ERROR_EXIT)
    settings = _settings(lake)
    _check_lake(settings)
    _check_catalog(settings)
    from catalog_enhance.flows.pairs import make_pairs
    _quiet_console()

    summary = make_pairs(lake_url=settings.lake_url, degradation=degradation,
                         config=PairsConfig(scales=tuple(scale)) if scale else None)
    _print_counts(f"pairs (degradation {degradation})", summary.counts())


@_command()
def train(
    models: Annotated[Optional[list[str]], typer.Argument(help="Models to train; default: every model with presets but the opt-in ones")] = None,
    preset: Annotated[str, typer.Option(help="tiny | cpu | gpu")] = "cpu",
    steps: Annotated[Optional[int], typer.Option(help="Override the preset's step count")] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="key=value overrides, e.g. lr=1e-3, data.scale=3")
    ] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda | cuda:N | mps; default: automatic")] = None,
    lake: LakeOption = None,
) -> None:
    """Train models (an interrupted run resumes automatically) and register a version of each."""
    settings = _settings(lake)
    _check_lake(settings)
    from catalog_enhance.tasks.kinds import default_models
    from catalog_enhance.tasks.train.config import ConfigError, parse_overrides, validate_training

    try:  # every config checked before Prefect starts or anything trains
        overrides = parse_overrides(set_ or [])
        validate_training(models or default_models(), preset, steps, overrides)
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    from catalog_enhance.flows.train import train_models
    _quiet_console()

    result = train_models(
        models=models or None, preset=preset, steps=steps, lake_url=settings.lake_url,
        overrides=overrides, device=device,
    )
    _print_training(result.trained)


def _print_training(rows: list[dict]) -> None:
    import json

    table = Table(title="trained model versions")
    for column in ("model", "version", "seconds", "final losses", "validation"):
        table.add_column(column, overflow="fold")
    for row in rows:
        losses = json.loads(row["final_losses"]) if isinstance(row["final_losses"], str) else row["final_losses"]
        losses_text = ", ".join(f"{name} {value:.4g}" for name, value in losses.items())
        metric = "" if row["val_metric"] is None else f"{row['val_metric_name']} {row['val_metric']:+.3f}"
        table.add_row(row["name"], row["version"], f"{row['train_seconds']:.1f}", losses_text, metric)
    console.print(table)


@_command()
def evaluate(
    models: Annotated[Optional[list[str]], typer.Argument(help="Models or versions; default: every new version")] = None,
    lake: LakeOption = None,
) -> None:
    """Evaluate every new model version on the held-out test split, gate it, write the HTML report."""
    settings = _settings(lake)
    _check_lake(settings)
    from catalog_enhance.flows.evaluate import evaluate_models
    _quiet_console()

    try:
        summary = evaluate_models(lake_url=settings.lake_url, models=models or None)
    except RuntimeError as exc:  # some version failed; the others were evaluated and the report written
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    _print_champions(summary)


def _print_champions(summary) -> None:
    table = Table(title="gate decisions and champions (reasons: in the report and the evaluations manifest)")
    for column in ("version", "primary metric", "value", "baseline", "champion"):
        table.add_column(column, overflow="fold")
    for row in summary.champion_rows():
        value = "-" if row["value"] is None or row["value"] != row["value"] else f"{row['value']:.4g}"
        base = "" if row["baseline_value"] is None else f" {row['baseline_value']:.4g}"
        table.add_row(row["version"], row["primary_metric"], value, f"{row['baseline']}{base}",
                      "[green]yes[/green]" if row["promoted"] else "no")
    console.print(table)
    from catalog_enhance.tasks.kinds import kind_for_role

    from catalog_enhance.tasks.enhance.params import ENHANCEMENT_MODES

    for mode, role in ENHANCEMENT_MODES.items():
        champion = summary.champions.get(kind_for_role(role).name)
        if champion is not None:
            console.print(f"{mode} champion ({champion.model_kind}) {champion.model_name} {champion.version}: PSNR-Y gain over bicubic "
                          f"at x2 (test split) [bold]{champion.value:+.3f} dB[/bold]")
    if summary.nothing_new:
        console.print("evaluation: nothing new to evaluate")
    console.print(f"report: [bold]{summary.report_uri or 'none yet'}[/bold]")


@_command("evaluate-sr")
def evaluate_sr(
    images: Annotated[
        Optional[Path], typer.Option(help="Folder of high-resolution photos, degraded here like the training pairs "
                                          "(recursive; sub-folders = categories)")
    ] = None,
    hr: Annotated[
        Optional[Path], typer.Option("--hr", help="Instead of --images: folder of your good (high-resolution) images")
    ] = None,
    lr: Annotated[
        Optional[Path], typer.Option("--lr", help="With --hr: folder of your low-quality captures of the same images "
                                                  "(same sub-folders and stems)")
    ] = None,
    lr_template: Annotated[
        Optional[str], typer.Option("--lr-template", help="LR stem from the HR stem, e.g. '{}x2' (0001.png -> 0001x2.png); "
                                                          "default '{}'")
    ] = None,
    scale: Annotated[
        Optional[int], typer.Option(help="--images: 2, 3 or 4 (default 2); --hr/--lr: inferred from the sizes, "
                                         "checked if given (1 = same-size restoration)")
    ] = None,
    model: Annotated[
        Optional[str], typer.Option(help="Model name (newest version) or exact version; default: the mode's champion")
    ] = None,
    degradation: Annotated[
        Optional[str], typer.Option(help="--images: degrade them by bicubic | light | realistic "
                                         "(default: like the training pairs)")
    ] = None,
    mode: ModeOption = "fidelity",
    out: Annotated[Optional[Path], typer.Option(help="Per-image CSV (summary beside it, .summary.csv)")] = None,
    lake: LakeOption = None,
) -> None:
    """Score bicubic, the classical enhancers and a model on your own photos: degraded here (--images,
    like the training pairs or by --degradation), or your own low-quality captures against their good
    versions (--hr/--lr)."""
    checked_mode = _check_mode(mode)
    settings = _settings(lake)
    _check_lake(settings)
    from catalog_enhance.flows.evaluate import evaluate_sr_command
    from catalog_enhance.flows.rendering import sr_summary_table

    try:
        result = evaluate_sr_command(images, scale, model=model, lake_url=settings.lake_url, out=out,
                                     hr=hr, lr=lr, lr_template=lr_template, degradation=degradation,
                                     mode=checked_mode)
    except (ValueError, KeyError, NotADirectoryError) as exc:
        typer.echo(f"input error: {' '.join(str(exc).split())}", err=True)
        raise typer.Exit(USER_ERROR_EXIT) from None
    console.print(result.note)
    source = "your LR captures" if result.mode == "paired" else "LR degraded here"
    console.print(sr_summary_table(result.summary, title=f"Super-resolution, {source} (Y channel, border = scale)"))
    console.print(f"per-image scores: {result.csv_path}\nsummary: {result.summary_csv_path}")


@_command()
def enhance(
    input: Annotated[
        Optional[str],
        typer.Option("--input", help="Ad hoc: a folder of images, one image or a feed (CSV, Parquet, JSONL); "
                                     "default: the lake's catalog"),
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", help="Ad hoc: folder for <file name>.png (feeds: <sku>.png) and "
                                                      "enhance_summary.csv (with --input)")
    ] = None,
    feed: Annotated[Optional[str], typer.Option(help="Catalog run: ingest this feed first")] = None,
    scale: Annotated[int, typer.Option(help="Upscaling factor (the model's own)")] = 2,
    target_long_side: Annotated[Optional[int], typer.Option(help="Exact output long side instead of a scale, e.g. 2048")] = None,
    style_transform: Annotated[bool, typer.Option(help="Then the CycleGAN studio transform (lifestyle images)")] = False,
    model: Annotated[Optional[str], typer.Option(help="SR model name or version; default: the mode's champion")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda | cuda:N | mps; default: automatic")] = None,
    mode: ModeOption = "fidelity",
    lake: LakeOption = None,
) -> None:
    """Enhance the catalog with the mode's champion (only images without an output yet), or, with
    --input/--output, a folder or feed of images, through the same per-image code."""
    checked_mode = _check_mode(mode)
    settings = _settings(lake)
    if input is None:
        if output is not None:
            typer.echo("input error: --output goes with --input (catalog runs write to the lake)", err=True)
            raise typer.Exit(USER_ERROR_EXIT)
        if feed is not None:
            _check_feed(feed, settings)
        _check_lake(settings)
        from catalog_enhance.flows.enhance import enhance as enhance_flow
        from catalog_enhance.flows.runners import task_runner_for
        _quiet_console()

        # The ignore: Prefect's stubs make TaskRunner invariant in its future type, so no concrete
        # runner matches `with_options`' TaskRunner[PrefectFuture[Any]]; any runner is valid at runtime.
        summary = enhance_flow.with_options(task_runner=task_runner_for(settings, max_workers=2))(  # type: ignore[arg-type]
            feed=feed, lake_url=settings.lake_url, scale=scale, target_long_side=target_long_side,
            style_transform=style_transform, model=model, device=device, mode=checked_mode,
        )
        _print_counts("enhancement", summary.counts())
        console.print(summary.verdict())
        return
    if output is None or feed is not None:
        typer.echo("input error: --input needs --output (and takes no --feed: pass the feed as --input)", err=True)
        raise typer.Exit(USER_ERROR_EXIT)
    from catalog_enhance.tasks.enhance import EnhanceParams, enhance_folder, load_for_params, open_inputs
    from catalog_enhance.tasks.lake.storage import Lake
    from catalog_enhance.tasks.runtime import select_runtime

    params = EnhanceParams(mode=checked_mode, scale=scale, target_long_side=target_long_side, style_transform=style_transform)
    inputs = open_inputs(input, output, settings)  # every path checked before a model loads
    lake_handle = Lake.from_settings(settings)
    runtime = select_runtime(device)
    choice, models = load_for_params(lake_handle, params, model=model, runtime=runtime)
    console.print(f"model {choice.sr.ref.version} ({choice.sr.source})")
    result = enhance_folder(input, output, models, params, runtime=runtime, settings=settings, inputs=inputs)
    _print_counts("ad-hoc enhancement", result.counts())
    for item in result.items:
        if item["status"] == "failed":
            console.print(f"[yellow]failed[/yellow] {item['input']}: {item['reason']}: {item['detail']}")
    if result.failed:
        raise typer.Exit(1)


@_command()
def nightly(
    feed: Annotated[str, typer.Option(help="Catalog feed to ingest")],
    retrain: Annotated[bool, typer.Option(help="Retrain every model even if a version exists")] = False,
    preset: Annotated[str, typer.Option(help="Training preset for models that get trained")] = "cpu",
    mode: ModeOption = "fidelity",
    lake: LakeOption = None,
) -> None:
    """Run the nightly pipeline: incremental ingestion, pairs for new items, training where needed,
    evaluation and the gate, enhancement in `--mode` with its champion."""
    checked_mode = _check_mode(mode)
    settings = _settings(lake)
    _check_feed(feed, settings)
    _check_lake(settings)
    from catalog_enhance.tasks.kinds import default_models
    from catalog_enhance.tasks.train.config import ConfigError, validate_training

    try:
        validate_training(default_models(), preset)
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    from catalog_enhance.flows.nightly import NightFailed, nightly as nightly_flow
    _quiet_console()

    try:
        summary = nightly_flow(feed=feed, lake_url=settings.lake_url, retrain=retrain, preset=preset,
                               enhance_mode=checked_mode)
    except NightFailed as exc:  # the stages' own logs said why; the summary artifact has the rest
        typer.echo(f"nightly: {exc}", err=True)
        raise typer.Exit(1) from None
    for title, counts in summary.sections():
        _print_counts(title, counts)
    if summary.training:
        _print_training(summary.training)
    if summary.evaluation is not None:
        _print_champions(summary.evaluation)
    for line in summary.verdicts():
        console.print(line)
    console.print(f"lake: [bold]{summary.lake_uri}[/bold]")
    console.print(f"  enhanced images: {summary.lake_uri}/enhanced/  (lineage: manifests/enhancements.parquet)")
    console.print(f"  manifests:       {summary.lake_uri}/manifests/")


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
