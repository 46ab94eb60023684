"""bench/RESULTS.md and its plots, from the figures `bench.run` collected."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

INGEST_GROWTH_LIMIT = 0.05  # "does not grow": the 10k-row peak within 5% of the 1k-row peak
WARM_LIMIT = 0.05
S3_TARGET = 5.0


def _f(value, pattern: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return pattern.format(value)


def _yes(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**yes**" if ok else "**no**")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


# -- targets ----------------------------------------------------------------------------------------


def targets(results: dict) -> list[list[str]]:
    rows = []
    quality = results.get("sr_quality")
    if quality:
        champion = quality["champion"]
        for name, (value, ok) in quality["targets"].items():
            unit = " min" if "training" in name else " dB"
            shown = _f(value, "{:.1f}" if "training" in name else "{:+.2f}") + unit
            rows.append([f"SR ({champion}, the cpu-preset champion): {name}", shown, _yes(ok)])
    else:
        rows.append(["SR quality targets", "not measured", "n/a"])
    tp = results.get("throughput")
    if tp:
        over = tp["flow_overhead"]
        rows.append(["enhancement flow overhead over the bare no_grad loop <= 10%",
                     f"{over:+.0%} (end to end); {tp['flow_chunk_overhead']:+.0%} (chunk stage)", _yes(over <= 0.10)])
        cl = tp["mp_per_s"].get("network: channels_last as the flow loads it, one image at a time")
        if cl:
            strict = cl / tp["mp_per_s"]["flow (end to end)"] - 1
            rows.append(["(context) the same, against a bare loop that also feeds the model channels_last, as the "
                         "flow does: what decoding, colour, PNG, lake writes and Prefect cost together",
                         f"{strict:+.0%}", "(context)"])
        fraction = tp["ceiling_fraction"]["best network setting"]
        rows.append(["SR model >= 50% of the measured 3x3 conv ceiling",
                     f"{fraction:.0%} of {tp['ceiling_best_gflops']:.0f} GFLOP/s", _yes(fraction >= 0.5)])
    else:
        rows.append(["throughput targets", "not measured", "n/a"])
    inc = results.get("incremental")
    if inc:
        rows.append(["nightly over an unchanged catalog <= 5% of the cold run",
                     f"{inc['warm_over_cold']:.1%} ({inc['warm_seconds']:.1f} s / {inc['cold_seconds']:.0f} s)",
                     _yes(inc["warm_over_cold"] <= WARM_LIMIT)])
    else:
        rows.append(["nightly incremental target", "not measured", "n/a"])
    ing = results.get("ingestion")
    if ing and len(ing) >= 2:
        small, large = ing[0], ing[-1]
        growth = large["peak_rss_mib"] / small["peak_rss_mib"] - 1
        rows.append([f"ingestion peak RSS does not grow with rows ({small['rows']:,} -> {large['rows']:,}; "
                     f"<= {INGEST_GROWTH_LIMIT:.0%} counted as flat)",
                     f"{small['peak_rss_mib']:.0f} -> {large['peak_rss_mib']:.0f} MiB ({growth:+.1%})",
                     _yes(growth <= INGEST_GROWTH_LIMIT)])
    else:
        rows.append(["ingestion memory target", "not measured", "n/a"])
    s3 = results.get("s3_io")
    if s3:
        for label, figures in s3["conditions"].items():
            speed = figures["speedup"]["round trip"]
            judged = label == "loopback"
            rows.append([f"S3 round trip, project's concurrent I/O >= 5x sequential boto3 ({label}"
                         + ("" if judged else ": not the issue's condition, shown for what concurrency is for") + ")",
                         f"{speed:.2f}x (put {figures['speedup']['put']:.2f}x, get {figures['speedup']['get']:.2f}x)",
                         _yes(speed >= S3_TARGET) if judged else "(context)"])
    else:
        rows.append(["S3 target", "not measured", "n/a"])
    return rows


# -- sections ---------------------------------------------------------------------------------------


def _sr_section(quality: dict, held_out) -> list[str]:
    from bench.sr_quality import PHOTO_SET, TEST_SET

    summary = quality["summary"]
    lines = ["## SR quality", ""]
    lines.append(
        "PSNR / SSIM on MATLAB BT.601 Y, `scale` pixels shaved, outputs quantised to 8 bits; bicubic is "
        "MATLAB's `imresize` (`tasks.resize`); LR inputs made by the training pairs' degradation (MATLAB "
        f"bicubic). Photos: {', '.join(quality['photos'])} (scikit-image), full size. Every model is "
        "trained on the `cpu` preset at its scale, on the benchmark's feed, which leaves out the catalog's "
        "lifestyle images drawn on these photos"
        + (f" ({held_out.dropped} of them: {held_out.dropped_by_photo}; the remaining lifestyle backgrounds "
           f"are {held_out.kept_lifestyle_backgrounds})" if held_out else "")
        + ", so no training crop showed them. The champion is picked on the test split at x2, never on the photos."
    )
    lines.append("")
    rows = []
    for set_name in (TEST_SET, PHOTO_SET):
        for _, r in summary[summary["set"] == set_name].iterrows():
            gain = "" if r["enhancer"] == "bicubic" else f"{r['psnr_gain']:+.2f} / {r['ssim_gain']:+.4f}"
            worse = "" if r["enhancer"] == "bicubic" else f"{r['share_worse']:.0%}"
            rows.append([set_name, f"x{r['scale']}", r["enhancer"], int(r["images"]), f"{r['psnr_y']:.2f}",
                         f"{r['ssim_y']:.4f}", gain, worse])
    lines += _table(["set", "scale", "enhancer", "images", "PSNR-Y dB", "SSIM-Y", "gain over bicubic (dB / SSIM)",
                     "images worse than bicubic"], rows)
    published = quality["published"]
    lines += ["Published SRCNN gains over bicubic (Dong et al., PSNR-Y; FIELD_NOTES.md), against ours:", ""]
    ours = {(r["set"], r["scale"], r["enhancer"]): r["psnr_gain"] for _, r in summary.iterrows()}
    rows = []
    for scale in (2, 3, 4):
        rows.append([f"x{scale}", f"{published['Set5'][scale]:+.2f}", f"{published['Set14'][scale]:+.2f}",
                     _f(ours.get((TEST_SET, scale, "srcnn")), "{:+.2f}"), _f(ours.get((PHOTO_SET, scale, "srcnn")), "{:+.2f}"),
                     _f(ours.get((TEST_SET, scale, "espcn")), "{:+.2f}"), _f(ours.get((PHOTO_SET, scale, "espcn")), "{:+.2f}")])
    lines += _table(["scale", "SRCNN Set5 (paper)", "SRCNN Set14 (paper)", "SRCNN test (ours)", "SRCNN photos (ours)",
                     "ESPCN test (ours)", "ESPCN photos (ours)"], rows)
    rows = []
    for scale, models in quality["models"].items():
        for name, m in models.items():
            rows.append([name, f"x{scale}", m["steps"], f"{m['seconds']:.0f}", f"{m['params']:,}",
                         f"{m['macs_per_output_pixel']:,.0f}", m["version"]])
    lines += ["Training (cpu preset; x2 trained by the cold nightly run, x3/x4 by the benchmark):", ""]
    lines += _table(["model", "scale", "steps", "train s", "parameters", "MACs / output px", "run"], rows)
    if summary.attrs.get("errors"):
        lines += ["Scoring errors: " + "; ".join(str(e) for e in summary.attrs["errors"]), ""]
    lines += ["![SR quality](sr_quality.png)", ""]
    return lines


def _throughput_section(tp: dict) -> list[str]:
    lines = ["## Enhancement throughput", ""]
    lines.append(
        f"{tp['model']}, {tp['macs_per_output_pixel']:,.0f} MACs per output pixel; {tp['images']} catalog images, "
        f"{tp['output_megapixels']:.1f} output MP a pass. Conv ceiling (3x3 64->64 on 4x128x128, fp32), GFLOP/s per "
        "measurement: " + "; ".join(f"NCHW {c['nchw']:.0f}, channels_last {c['channels_last']:.0f}"
                                    for c in tp["ceiling_gflops"]) + f" (best {tp['ceiling_best_gflops']:.0f})."
    )
    lines.append("")
    bare = tp["mp_per_s"]["network: no_grad, NCHW, one image at a time (the bare loop)"]
    flops = 2 * tp["macs_per_output_pixel"]
    rows = []
    for name, mps in tp["mp_per_s"].items():
        model_fraction = "" if name == "PIL bicubic" else f"{mps * 1e6 * flops / 1e9 / tp['ceiling_best_gflops']:.0%}"
        rows.append([name, f"{mps:.2f}", f"{mps / bare:.2f}", model_fraction])
    lines += _table(["path", "output MP/s", "x the bare loop", "model FLOPs as share of the ceiling"], rows)
    flow = tp["flow_run"]
    lines += [f"Flow: {flow['images']} images in {flow['seconds']:.1f} s end to end (chunk stage "
              f"{flow['chunk_seconds']:.1f} s); over the same images, before and after the flow, the bare loop took "
              + " / ".join(f"{x:.1f}" for x in tp["bare_passes"]) + " s, the channels_last loop "
              + " / ".join(f"{x:.1f}" for x in tp["channels_last_passes"]) + " s (the faster pass counts). Script "
              f"loop, batched and PIL rows: the first {tp['subset_images']} images.", ""]
    lines += ["![throughput](throughput.png)", ""]
    return lines


def _incremental_section(inc: dict) -> list[str]:
    lines = ["## Incremental nightly", ""]
    lines.append(
        f"`nightly-enhancement` on an empty scratch lake (cold: ingest {inc['images']} images, {inc['pairs']} pairs, "
        f"train {', '.join(t['name'] for t in inc['training'])} on the cpu preset, enhance {inc['enhanced']} images), "
        "then again over the unchanged feed (warm). The GANs are left out of the cold run: they would add ~10 min to "
        "it and nothing to the warm run, flattering the ratio."
    )
    lines.append("")
    rows = [["cold", f"{inc['cold_seconds']:.1f}", inc["cold_stages"]],
            ["warm", f"{inc['warm_seconds']:.1f}", inc["warm_stages"]]]
    lines += _table(["run", "seconds", "stage seconds"], rows)
    lines += ["Warm run verdicts: " + " / ".join(inc["warm_verdicts"]), ""]
    return lines


def _ingestion_section(ing: list[dict]) -> list[str]:
    lines = ["## Ingestion memory", ""]
    lines.append("The `ingest-catalog` flow in a fresh child process per feed (its own lake and Prefect home); "
                 "feeds of distinct SKUs cycling through the sample images. Peak = the child's own VmHWM. "
                 "`ru_maxrss` (child) and `wait4` (parent) are shown for comparison: Linux carries the forking "
                 "process's RSS (this benchmark, with torch and Prefect loaded) into them at exec.")
    lines.append("")
    rows = [[f"{r['rows']:,}", f"{r['seconds']:.1f}", f"{r['rows_per_second']:.0f}", f"{r['peak_rss_mib']:.0f}",
             f"{r['ru_maxrss_mib']:.0f}", f"{r['wait4_maxrss_mib']:.0f}", r["ingested"], r["images_written"]] for r in ing]
    lines += _table(["rows", "flow seconds", "rows/s", "peak RSS MiB (VmHWM)", "ru_maxrss MiB", "wait4 MiB",
                     "ingested", "images written"], rows)
    if len(ing) >= 2:
        slope = (ing[-1]["peak_rss_mib"] - ing[0]["peak_rss_mib"]) * 2**20 / (ing[-1]["rows"] - ing[0]["rows"])
        lines += [f"Peak grows by {slope / 1024:.1f} KiB per extra row between these two feeds.", ""]
    return lines


def _s3_section(s3: dict) -> list[str]:
    lines = ["## S3 path", ""]
    lines.append(
        f"{s3['objects']} sample images ({s3['megabytes']:.1f} MB) written and read back through moto's S3 server "
        f"on 127.0.0.1 (in a child process). Project: `Lake.write_bytes_if_absent` on {s3['io_concurrency']} threads "
        "(as ingestion: one conditional PUT an object) and `Lake.read_many` (one GET an object, issued together); "
        "reference: a sequential boto3 `put_object` / `get_object` loop; `lake_sequential`: the project's calls one at "
        "a time. Best of the rounds. Then the same through `bench.latency_proxy`, which adds "
        f"{s3['added_latency_ms']:g} ms to every request (a small S3 request's median latency is tens of ms): "
        "on loopback the moto server's own CPU, on the same 2 cores as the client, is what every request waits for, "
        "which concurrency cannot hide; network latency is what it hides."
    )
    lines.append("")
    rows = [[label, kind, f"{v['put']:.2f}", f"{v['get']:.2f}", f"{v['round trip']:.2f}",
             f"{v['round trip'] / figures['mb_per_s']['boto3']['round trip']:.2f}x"]
            for label, figures in s3["conditions"].items() for kind, v in figures["mb_per_s"].items()]
    lines += _table(["server", "client", "put MB/s", "get MB/s", "round trip MB/s", "x boto3"], rows)
    return lines


# -- plots ------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100)  # no pyplot: no global state
    FigureCanvasAgg(figure)
    return figure


def plot_sr_quality(quality: dict, path: Path) -> None:
    from bench.sr_quality import MODELS, PHOTO_SET, TEST_SET

    summary = quality["summary"]
    figure = _figure(10, 4)
    scales = [2, 3, 4]
    for index, set_name in enumerate((TEST_SET, PHOTO_SET)):
        ax = figure.add_subplot(1, 2, index + 1)
        width = 0.35
        for offset, name in enumerate(MODELS):
            gains = []
            for scale in scales:
                row = summary[(summary["set"] == set_name) & (summary["scale"] == scale) & (summary["enhancer"] == name)]
                gains.append(float(row["psnr_gain"].iloc[0]) if len(row) else float("nan"))
            ax.bar([s + (offset - 0.5) * width for s in scales], gains, width, label=f"{name} (ours, cpu preset)")
        for marker, table in (("o", "Set5"), ("s", "Set14")):
            ax.plot(scales, [quality["published"][table][s] for s in scales], marker, color="black",
                    label=f"SRCNN paper, {table}", linestyle=":" if table == "Set14" else "--")
        ax.set_xticks(scales, [f"x{s}" for s in scales])
        ax.set_ylabel("PSNR-Y gain over bicubic (dB)")
        ax.set_title(set_name)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png")


def plot_throughput(tp: dict, path: Path) -> None:
    names = list(tp["mp_per_s"])
    values = [tp["mp_per_s"][n] for n in names]
    ceiling_mps = tp["ceiling_best_gflops"] * 1e9 / (2 * tp["macs_per_output_pixel"]) / 1e6
    figure = _figure(10, 4.5)
    ax = figure.add_subplot()
    ax.barh(range(len(names)), values, color=["tab:blue" if "PIL" not in n else "tab:gray" for n in names])
    ax.axvline(ceiling_mps, color="red", linestyle="--", label=f"the model at the conv ceiling ({ceiling_mps:.1f} MP/s)")
    ax.axvline(ceiling_mps / 2, color="red", linestyle=":", label="50% of the ceiling")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()  # top to bottom in the order of the table
    ax.set_xscale("log")
    ax.set_xlabel("output megapixels per second (log scale)")
    ax.set_title(tp["model"])
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")


# -- the whole report -------------------------------------------------------------------------------


def write_report(results: dict, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Benchmarks", ""]
    lines.append(
        f"Written by `make bench` (`python -m bench.run`) in {results['total_seconds'] / 60:.1f} min. Every timing "
        "is a ratio against a reference measured in the same run (the machine is shared and noisy; best-of-N "
        "rounds where affordable). Benchmarks never assert on time. Changes made to reach the targets, with "
        "their predicted and measured effects: [NOTES.md](NOTES.md)."
    )
    lines.append("")
    lines += ["## Machine", ""]
    lines += _table(["", ""], [[k, v] for k, v in results["machine"].items()])
    lines += ["## Targets", ""]
    lines += _table(["target", "measured", "met"], targets(results))
    if results["errors"] or results["not_run"]:
        lines += ["## Not run or failed", ""]
        lines += [f"- {name}: {error}" for name, error in results["errors"].items()]
        lines += [f"- {name}: not selected (`--only`)" for name in results["not_run"]]
        lines.append("")
    if results.get("sr_quality"):
        lines += _sr_section(results["sr_quality"], results.get("held_out"))
        plot_sr_quality(results["sr_quality"], out_dir / "sr_quality.png")
    if results.get("throughput"):
        lines += _throughput_section(results["throughput"])
        plot_throughput(results["throughput"], out_dir / "throughput.png")
    if results.get("incremental"):
        lines += _incremental_section(results["incremental"])
    if results.get("ingestion"):
        lines += _ingestion_section(results["ingestion"])
    if results.get("s3_io"):
        lines += _s3_section(results["s3_io"])
    lines += ["## Benchmark stage seconds", ""]
    lines += _table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in results["seconds"].items()])
    path = out_dir / "RESULTS.md"
    from bench.sr_candidates import SECTION_END, SECTION_START

    old = path.read_text() if path.exists() else ""
    if SECTION_START in old and SECTION_END in old:  # written by `python -m bench.sr_candidates`: kept
        lines += ["", SECTION_START + old.split(SECTION_START, 1)[1].split(SECTION_END, 1)[0] + SECTION_END]
    path.write_text("\n".join(lines))
    return path
