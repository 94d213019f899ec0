"""Plots of the benchmarks' JSON, as PNGs under docs/ for the README.

    .venv/bin/python bench/plots.py --serve docs/bench/serve_c1.json docs/bench/serve_c4.json \\
        --export docs/bench/export.json --quality models/default/eval.json --out docs

--serve    reports of bench/serve_bench.py, one per client count (each report's "clients"):
           serving.png, served throughput and p50/p95/p99 latency against concurrency; their raw
           backend figures (raw_tiles_per_s) also join backends.png.
--export   the report of bench/export_bench.py: {"results": [{"backend", "batch", "tiles_per_s"}, ...]}:
           backends.png, tiles per second against batch size, one line per backend.
--quality  the JSON of `rsd eval` (training/evaluate.py): quality.png, a row of bar charts per mode
           (PSNR-Y gain over bicubic with its 95% interval, LPIPS, DISTS, SSIM), a bar per model.
A file that is not there is skipped with a message; every plot that has data is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

# (key in the eval JSON, axis title); the arrow says which way is better.
QUALITY_METRICS = (
    ("psnr_y_gain", "PSNR-Y gain over bicubic (dB) ↑"),
    ("lpips_alex", "LPIPS (alex) ↓"),
    ("dists", "DISTS ↓"),
    ("ssim_y", "SSIM-Y ↑"),
)
PERCENTILES = ("p50", "p95", "p99")


def serving_figure(reports: list[dict]) -> Figure:
    """Saturation throughput (tiles/s; the raw backend's best for reference) and latency by client count."""
    reports = sorted(reports, key=lambda r: r["clients"])
    clients = [r["clients"] for r in reports]
    fig, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    throughput.plot(clients, [r["saturation"]["tiles_per_s"] for r in reports], "o-", label="served")
    raw = [max(r["raw_tiles_per_s"].values()) for r in reports]
    throughput.plot(clients, raw, "--", color="grey", label="backend alone (best batch)")
    throughput.set(xlabel="concurrent clients", ylabel="tiles / s", title="Throughput", ylim=(0, None))
    throughput.legend()
    for p in PERCENTILES:
        latency.plot(clients, [r["saturation"]["latency_ms"][p] for r in reports], "o-", label=p)
    latency.set(xlabel="concurrent clients", ylabel="latency (ms)", title="Latency", ylim=(0, None))
    latency.legend()
    for ax in (throughput, latency):
        ax.set_xticks(clients)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Serving: {reports[0]['model']}, {reports[0]['image']}, {reports[0]['threads']} threads")
    return fig


def backend_series(serve_reports: list[dict], export_report: dict | None) -> dict[str, dict[int, float]]:
    """backend label -> {batch size: tiles/s}, from serve_bench's raw runs and export_bench's rows."""
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for report in serve_reports:
        label = f"onnxruntime CPU, {report['threads']} threads"
        series[label].update({int(b): v for b, v in report["raw_tiles_per_s"].items()})
    for row in (export_report or {}).get("results", []):
        series[row["backend"]][int(row["batch"])] = row["tiles_per_s"]
    return dict(series)


def backends_figure(series: dict[str, dict[int, float]]) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    batches = sorted({b for points in series.values() for b in points})
    for label, points in sorted(series.items()):
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_yscale("log")  # CPU and GPU backends differ by orders of magnitude
    ax.set(xlabel="batch size (tiles)", ylabel="tiles / s", title="Model throughput by backend")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def quality_figure(record: dict) -> Figure:
    """A row per mode, a bar chart per metric, a bar per model with its value written on it; the PSNR gain
    bars carry their 95% bootstrap interval."""
    by_mode = record["modes"]
    first = next(iter(by_mode.values()))
    names = [f"{r['model']} ({r['nfe']} NFE)" if r["nfe"] else r["model"] for r in first]
    rows, columns = len(by_mode), len(QUALITY_METRICS)
    fig, grid = plt.subplots(
        rows, columns, figsize=(16, rows * (0.4 * len(first) + 1.6)), layout="constrained", squeeze=False
    )
    for (mode, results), axes in zip(by_mode.items(), grid, strict=True):
        for i, ((key, title), ax) in enumerate(zip(QUALITY_METRICS, axes, strict=True)):
            values = [r[key] for r in results]
            errors = None
            if key == "psnr_y_gain":
                errors = np.array([[v - r["psnr_y_gain_ci95"][0], r["psnr_y_gain_ci95"][1] - v]
                                   for v, r in zip(values, results, strict=True)]).T  # fmt: skip
            bars = ax.barh(
                range(len(values)), values, xerr=errors, color=[f"C{j}" for j in range(len(values))]
            )
            ax.bar_label(bars, [f"{v:.3g}" for v in values], padding=3, fontsize=8)
            ax.set_yticks(range(len(values)), names if i == 0 else [""] * len(values))
            ax.invert_yaxis()
            ax.set_title(f"{mode}: {title}", fontsize=10)
            ax.margins(x=0.25)
    fig.suptitle(f"Quality on {record.get('source', '?')} ({first[0].get('images', '?')} photos per mode)")
    return fig


def load(path: Path | None, what: str) -> dict | None:
    if path is None:
        return None
    if not path.is_file():
        print(f"skipping {what}: {path} not found")
        return None
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", type=Path, nargs="*", default=[], help="bench/serve_bench.py reports")
    parser.add_argument("--export", type=Path, help="bench/export_bench.py report")
    parser.add_argument("--quality", type=Path, help="`rsd eval` JSON")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs")
    args = parser.parse_args(argv)

    serve = []
    for path in args.serve:
        report = load(path, "serving report")
        if report is not None and "clients" not in report:
            parser.error(f"{path} does not say its number of clients ('clients')")
        serve += [report] if report is not None else []
    export = load(args.export, "export benchmark")
    quality = load(args.quality, "quality table")

    figures: dict[str, Figure] = {}
    if serve:
        figures["serving.png"] = serving_figure(serve)
    series = backend_series(serve, export)
    if series:
        figures["backends.png"] = backends_figure(series)
    if quality:
        figures["quality.png"] = quality_figure(quality)
    if not figures:
        print("nothing to plot: no input file found", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        fig.savefig(args.out / name, dpi=110)
        plt.close(fig)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
