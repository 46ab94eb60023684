"""`catalog-enhance`: the command line over the same flows the deployments run.

Imports of flows and torch are deferred into each command so `--help` stays instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

# Idle OpenMP threads must not spin: on a shared 2-core machine spinning made training 5x slower.
# Set before torch is imported (the commands import it lazily).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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


def _settings(lake: str | None):
    """Validate configuration up front: one clear line and exit 2, never a deep traceback."""
    from catalog_enhance.tasks.lake.settings import ConfigError, load_settings

    try:
        return load_settings(**({"lake_url": lake} if lake else {}))
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _print_counts(title: str, counts: dict) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in counts.items():
        table.add_row(str(key), str(value))
    console.print(table)


@app.command("sample-catalog")
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


@app.command()
def ingest(
    feed: Annotated[str, typer.Option(help="Catalog feed: CSV, Parquet or JSON Lines (local path or URL)")],
    lake: LakeOption = None,
) -> None:
    """Ingest a catalog feed into the lake (incremental; bad rows are quarantined)."""
    settings = _settings(lake)
    from catalog_enhance.flows.ingest import ingest_catalog

    summary = ingest_catalog(feed=feed, lake_url=settings.lake_url)
    _print_counts("ingestion", summary.counts())


@app.command()
def pairs(lake: LakeOption = None) -> None:
    """Make LR/HR training pairs (x2, x3, x4) for every current catalog image that has none."""
    settings = _settings(lake)
    from catalog_enhance.flows.pairs import make_pairs

    summary = make_pairs(lake_url=settings.lake_url)
    _print_counts("pairs", summary.counts())


@app.command()
def train(
    models: Annotated[Optional[list[str]], typer.Argument(help="Models to train; default: every model with presets")] = None,
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
    from catalog_enhance.tasks.kinds import trainable_models
    from catalog_enhance.tasks.train.config import ConfigError, parse_overrides, validate_training

    try:  # every config checked before Prefect starts or anything trains
        overrides = parse_overrides(set_ or [])
        validate_training(models or trainable_models(), preset, steps, overrides)
    except ConfigError as exc:
        console.print(f"[red]train:[/red] {exc}")
        raise typer.Exit(2) from None
    from catalog_enhance.flows.train import train_models

    rows = train_models(
        models=models or None, preset=preset, steps=steps, lake_url=settings.lake_url,
        overrides=overrides, device=device,
    )
    _print_training(rows)


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


@app.command()
def evaluate(
    models: Annotated[Optional[list[str]], typer.Argument(help="Models or versions; default: every new version")] = None,
    lake: LakeOption = None,
) -> None:
    """Evaluate every new model version on the held-out test split, gate it, write the HTML report."""
    settings = _settings(lake)
    from catalog_enhance.flows.evaluate import evaluate_models

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

    sr = summary.champions.get(kind_for_role("upscale").name)
    if sr is not None:
        console.print(f"SR champion {sr.model_name} {sr.version}: PSNR-Y gain over bicubic at x2 (test split) "
                      f"[bold]{sr.value:+.3f} dB[/bold]")
    if summary.nothing_new:
        console.print("evaluation: nothing new to evaluate")
    console.print(f"report: [bold]{summary.report_uri or 'none yet'}[/bold]")


@app.command("evaluate-sr")
def evaluate_sr(
    images: Annotated[Path, typer.Option(help="Folder of high-resolution photos (recursive; sub-folders = categories)")],
    scale: Annotated[int, typer.Option(help="2, 3 or 4")] = 2,
    model: Annotated[
        Optional[str], typer.Option(help="SR model name (newest version) or exact version; default: the champion")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Per-image CSV (summary beside it, .summary.csv)")] = None,
    lake: LakeOption = None,
) -> None:
    """Score bicubic, the classical enhancers and an SR model on your own photos, degraded like the training pairs."""
    settings = _settings(lake)
    from catalog_enhance.flows.evaluate import evaluate_sr_command
    from catalog_enhance.flows.rendering import sr_summary_table

    try:
        result = evaluate_sr_command(images, scale, model=model, lake_url=settings.lake_url, out=out)
    except (ValueError, KeyError, NotADirectoryError) as exc:
        console.print(f"[red]evaluate-sr:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(result.note)
    console.print(sr_summary_table(result.summary))
    console.print(f"per-image scores: {result.csv_path}\nsummary: {result.summary_csv_path}")


@app.command()
def enhance(
    input: Annotated[
        Optional[str],
        typer.Option("--input", help="Ad hoc: a folder of images or a feed (CSV, Parquet, JSONL); default: the lake's catalog"),
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", help="Ad hoc: folder for <name>.png and enhance_summary.csv (with --input)")
    ] = None,
    feed: Annotated[Optional[str], typer.Option(help="Catalog run: ingest this feed first")] = None,
    scale: Annotated[int, typer.Option(help="Upscaling factor (the model's own)")] = 2,
    target_long_side: Annotated[Optional[int], typer.Option(help="Exact output long side instead of a scale, e.g. 2048")] = None,
    style_transform: Annotated[bool, typer.Option(help="Then the CycleGAN studio transform (lifestyle images)")] = False,
    model: Annotated[Optional[str], typer.Option(help="SR model name or version; default: the champion")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda | cuda:N | mps; default: automatic")] = None,
    lake: LakeOption = None,
) -> None:
    """Enhance the catalog with the champion SR model (only images without an output yet), or, with
    --input/--output, a folder or feed of images, through the same per-image code."""
    settings = _settings(lake)
    if input is None:
        if output is not None:
            console.print("[red]--output goes with --input[/red] (catalog runs write to the lake)")
            raise typer.Exit(2)
        from catalog_enhance.flows.enhance import enhance as enhance_flow
        from catalog_enhance.flows.runners import task_runner_for

        # The ignore: Prefect's stubs make TaskRunner invariant in its future type, so no concrete
        # runner matches `with_options`' TaskRunner[PrefectFuture[Any]]; any runner is valid at runtime.
        summary = enhance_flow.with_options(task_runner=task_runner_for(settings, max_workers=2))(  # type: ignore[arg-type]
            feed=feed, lake_url=settings.lake_url, scale=scale, target_long_side=target_long_side,
            style_transform=style_transform, model=model, device=device,
        )
        _print_counts("enhancement", summary.counts())
        console.print(summary.verdict())
        return
    if output is None or feed is not None:
        console.print("[red]--input needs --output[/red] (and takes no --feed: pass the feed as --input)")
        raise typer.Exit(2)
    from catalog_enhance.tasks.enhance import EnhanceParams, enhance_folder, load_for_params
    from catalog_enhance.tasks.lake.storage import Lake
    from catalog_enhance.tasks.runtime import select_runtime

    params = EnhanceParams(scale=scale, target_long_side=target_long_side, style_transform=style_transform)
    runtime = select_runtime(device)
    choice, models = load_for_params(Lake.from_settings(settings), params, model=model, runtime=runtime)
    console.print(f"model {choice.sr.ref.version} ({choice.sr.source})")
    result = enhance_folder(input, output, models, params, runtime=runtime, settings=settings)
    _print_counts("ad-hoc enhancement", result.counts())
    for item in result.items:
        if item["status"] == "failed":
            console.print(f"[yellow]failed[/yellow] {item['input']}: {item['reason']}: {item['detail']}")
    if result.failed:
        raise typer.Exit(1)


@app.command()
def nightly(
    feed: Annotated[str, typer.Option(help="Catalog feed to ingest")],
    retrain: Annotated[bool, typer.Option(help="Retrain every model even if a version exists")] = False,
    preset: Annotated[str, typer.Option(help="Training preset for models that get trained")] = "cpu",
    lake: LakeOption = None,
) -> None:
    """Run the nightly pipeline: incremental ingestion, pairs for new items, training where needed."""
    settings = _settings(lake)
    from catalog_enhance.tasks.kinds import trainable_models
    from catalog_enhance.tasks.train.config import ConfigError, validate_training

    try:
        validate_training(trainable_models(), preset)
    except ConfigError as exc:
        console.print(f"[red]nightly:[/red] {exc}")
        raise typer.Exit(2) from None
    from catalog_enhance.flows.nightly import nightly as nightly_flow

    summary = nightly_flow(feed=feed, lake_url=settings.lake_url, retrain=retrain, preset=preset)
    for title, counts in summary.sections():
        _print_counts(title, counts)
    if summary.training:
        _print_training(summary.training)
    _print_champions(summary.evaluation)
    for line in summary.verdicts():
        console.print(line)
    console.print(f"lake: [bold]{summary.lake_uri}[/bold]")
    console.print(f"  enhanced images: {summary.lake_uri}/enhanced/  (lineage: manifests/enhancements.parquet)")
    console.print(f"  manifests:       {summary.lake_uri}/manifests/")


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
