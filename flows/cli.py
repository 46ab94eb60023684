"""`catalog-enhance`: the command line over the same flows the deployments run.

Imports of flows and torch are deferred into each command so `--help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

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
    from catalog_enhance.tasks.settings import ConfigError, load_settings

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
    from catalog_enhance.tasks.sample_catalog import build_sample_catalog

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
def nightly(
    feed: Annotated[str, typer.Option(help="Catalog feed to ingest")],
    lake: LakeOption = None,
) -> None:
    """Run the nightly pipeline: incremental ingestion, then pairs for new items."""
    settings = _settings(lake)
    from catalog_enhance.flows.nightly import nightly as nightly_flow

    summary = nightly_flow(feed=feed, lake_url=settings.lake_url)
    for title, counts in summary.sections():
        _print_counts(title, counts)
    console.print(f"lake: [bold]{summary.lake_uri}[/bold]")


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
