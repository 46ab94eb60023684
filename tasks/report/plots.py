"""The report's plots (matplotlib's object API and Agg: no pyplot, no global state, thread-safe).

One loss-curve plotter serves the HTML report and the training flow's per-version PNG, and one
metric-history plotter draws every kind's figures across versions (the headline scopes only:
`data_contracts.evaluations.is_headline_scope`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from catalog_enhance.data_contracts.evaluations import is_headline_scope


def _log_scale_fits(values: Sequence[float]) -> bool:
    """Log-y when every value is positive and they span more than a factor of 20."""
    return bool(values) and min(values) > 0 and max(values) > 20 * min(values)


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    head = cumulative[1:window] / np.arange(1, window)
    return np.concatenate([head, (cumulative[window:] - cumulative[:-window]) / window])


def _subplots(count: int, columns: int = 2, size: tuple[float, float] = (5.5, 3.4)) -> tuple[Figure, list]:
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    figure = Figure(figsize=(size[0] * columns, size[1] * rows), dpi=100)  # no pyplot: no global state
    FigureCanvasAgg(figure)
    axes = [figure.add_subplot(rows, columns, i + 1) for i in range(max(count, 1))]
    return figure, axes


def plot_training_curves(curves_df, *, all_versions: bool = False) -> Figure:
    """Loss against step, one panel per model, one line per loss (the `training_curves` manifest:
    columns model, version, step, loss, value). Only each model's newest version unless
    `all_versions`. A faint raw line under a moving average; log-y where the losses span decades."""
    df = curves_df.copy()
    if not all_versions and len(df):
        newest = df.groupby("model")["version"].transform("max")
        df = df[df["version"] == newest]
    models = sorted(df["model"].unique()) if len(df) else []
    figure, axes = _subplots(len(models))
    if not models:
        axes[0].text(0.5, 0.5, "no training curves", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    for ax, model in zip(axes, models):
        part = df[df["model"] == model]
        versions = sorted(part["version"].unique())
        for version in versions:
            for loss in sorted(part["loss"].unique()):
                line = part[(part["version"] == version) & (part["loss"] == loss)].sort_values("step")
                if line.empty:
                    continue
                steps = line["step"].to_numpy(dtype=float)
                values = line["value"].to_numpy(dtype=float)
                label = loss if len(versions) == 1 else f"{loss} ({version})"
                smooth = _moving_average(values, max(1, len(values) // 50))
                (drawn,) = ax.plot(steps, smooth, label=label, linewidth=1.4)
                ax.plot(steps, values, color=drawn.get_color(), alpha=0.2, linewidth=0.6)
        if _log_scale_fits(part["value"].astype(float).tolist()):
            ax.set_yscale("log")
        ax.set_title(model if len(versions) != 1 else f"{model} \u00b7 {versions[0]}", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_metric_history(evals_df, *, metrics: Sequence[str] | None = None,
                        scopes: Sequence[str] | None = None) -> Figure:
    """Each metric across versions (oldest first) per model, one panel per metric, the baseline's
    value on the same data as a dashed line of the model's colour (the `evaluations` manifest).

    By default every metric at the headline scopes ("overall", "scale=N"; not per category)."""
    df = evals_df
    if "record" in df.columns:
        df = df[df["record"] == "evaluation"]
    df = df[df["scope"].isin(list(scopes))] if scopes is not None else df[df["scope"].map(is_headline_scope).astype(bool)]
    if metrics is not None:
        df = df[df["metric"].isin(list(metrics))]
    order = ["evaluated_at"] if "evaluated_at" in df.columns else []
    df = df.sort_values(order + ["version"], kind="stable") if len(df) else df
    names = sorted(df["metric"].unique()) if len(df) else []
    figure, axes = _subplots(len(names))
    if not names:
        axes[0].text(0.5, 0.5, "no evaluations", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    for ax, metric in zip(axes, names):
        part = df[df["metric"] == metric]
        higher = bool(part["higher_is_better"].iloc[0]) if "higher_is_better" in part.columns else None
        baselines_drawn: set = set()
        for (model, scope), series in part.groupby(["model_name", "scope"], sort=True):
            # A re-evaluation of a version replaces the earlier one; version names sort by creation time.
            series = series.drop_duplicates("version", keep="last")
            versions = sorted(series["version"].unique())
            series = series.set_index("version").loc[versions]
            x = np.arange(1, len(versions) + 1)
            label = model if scope == "overall" else f"{model} ({scope})"
            (drawn,) = ax.plot(x, series["value"].to_numpy(dtype=float), marker="o", label=label)
            if "baseline_value" in series.columns and series["baseline_value"].notna().any():
                baseline_values = series["baseline_value"].to_numpy(dtype=float)
                drawn_key = (scope, tuple(baseline_values.round(9)))
                if drawn_key in baselines_drawn:  # models sharing one baseline: one dashed line
                    continue
                baselines_drawn.add(drawn_key)
                baseline = series["baseline"].iloc[-1] if "baseline" in series.columns else "baseline"
                where = "" if scope == "overall" else f", {scope}"
                ax.plot(x, baseline_values, linestyle="--", color=drawn.get_color(), alpha=0.8,
                        label=f"{baseline} (baseline{where})")
        direction = "" if higher is None else (" (higher is better)" if higher else " (lower is better)")
        ax.set_title(metric + direction, fontsize=10)
        ax.set_xlabel("version (oldest \u2192 newest)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """A matplotlib Figure as PNG bytes through Agg (no pyplot, no display needed)."""
    if not isinstance(figure.canvas, FigureCanvasAgg):
        FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # No "Software" text chunk: the bytes depend on the pixels only.
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()
