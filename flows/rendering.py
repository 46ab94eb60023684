"""Rendering for people: markdown for Prefect artifacts, as plain functions of the tasks' result
objects (which stay data: `counts()`, `verdict()`). The flows' renderers all live here."""

from __future__ import annotations

from catalog_enhance.tasks.enhance import EnhanceSummary


def enhance_summary_markdown(summary: EnhanceSummary) -> str:
    """The enhance flow's summary artifact: the verdict, why this model, and every count."""
    lines = ["# Catalog enhancement", "", f"Lake `{summary.lake_uri}`; {summary.verdict()}", "",
             f"Model choice: {summary.champion_reason}", "", "| what | value |", "|---|---|"]
    lines += [f"| {key.strip()} | {value} |" for key, value in summary.counts().items()]
    return "\n".join(lines) + "\n"
