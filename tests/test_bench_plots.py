"""bench/plots.py on small synthetic reports shaped like the benchmarks' own."""

import json

import numpy as np
import pytest
from PIL import Image

from bench import plots


def serve_report(clients: int, tiles_per_s: float, p99: float) -> dict:
    """The keys bench/serve_bench.py writes (those the plots read, and a few more)."""
    return {
        "model": "fixture tile=64 width=64 depth=3",
        "threads": 2,
        "clients": clients,
        "image": "112x112 -> png (4 tiles of 64)",
        "raw_tiles_per_s": {"1": 3.0, "2": 3.6, "4": 3.9, "8": 3.8},
        "best_batch": 4,
        "saturation": {
            "tiles_per_s": tiles_per_s,
            "images_per_s": tiles_per_s / 4,
            "latency_ms": {"p50": p99 / 2, "p95": p99 * 0.8, "p99": p99},
        },
        "served_over_raw": tiles_per_s / 3.9,
    }


def quality_rows(bicubic_psnr: float) -> list[dict]:
    return [
        {"model": "bicubic", "nfe": 0, "psnr_y": bicubic_psnr, "psnr_y_gain": 0.0,
         "psnr_y_gain_ci95": [0.0, 0.0], "ssim_y": 0.66, "lpips_alex": 0.52, "dists": 0.31, "images": 5},
        {"model": "student tiny-x4", "nfe": 1, "psnr_y": bicubic_psnr + 0.8, "psnr_y_gain": 0.8,
         "psnr_y_gain_ci95": [0.5, 1.2], "ssim_y": 0.69, "lpips_alex": 0.33, "dists": 0.21, "images": 5},
    ]  # fmt: skip


QUALITY = {
    "source": "data/holdout/photos",
    "modes": {"clean": quality_rows(28.0), "realesrgan": quality_rows(24.1)},
}
EXPORT = {
    "results": [
        {"backend": "tensorrt fp16", "batch": 1, "tiles_per_s": 310.0},
        {"backend": "tensorrt fp16", "batch": 8, "tiles_per_s": 1450.0},
    ]
}


def write(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_serving_plot_puts_each_report_at_its_client_count():
    fig = plots.serving_figure([serve_report(4, 3.5, 900.0), serve_report(1, 3.1, 300.0)])
    throughput, latency = fig.axes
    np.testing.assert_allclose(throughput.lines[0].get_xydata(), [[1, 3.1], [4, 3.5]])
    p99 = next(line for line in latency.lines if line.get_label() == "p99")
    np.testing.assert_allclose(p99.get_ydata(), [300.0, 900.0])


def test_backend_series_joins_raw_serving_runs_and_export_rows():
    series = plots.backend_series([serve_report(1, 3.1, 300.0)], EXPORT)
    assert series == {
        "onnxruntime CPU, 2 threads": {1: 3.0, 2: 3.6, 4: 3.9, 8: 3.8},
        "tensorrt fp16": {1: 310.0, 8: 1450.0},
    }


def test_quality_plot_has_a_row_per_mode_and_a_bar_per_model_for_every_metric():
    fig = plots.quality_figure(QUALITY)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [f"{m}: {t}" for m in ("clean", "realesrgan") for _, t in plots.QUALITY_METRICS]
    gain, lpips = fig.axes[0], fig.axes[1]
    assert [bar.get_width() for bar in gain.patches] == [0.0, 0.8]
    whiskers = gain.collections[0].get_segments()  # the student's interval, drawn around its bar
    assert [float(x) for x in whiskers[1][:, 0]] == [0.5, 1.2]
    assert [bar.get_width() for bar in lpips.patches] == [0.52, 0.33]


def test_main_writes_every_plot_it_has_data_for_and_skips_missing_files(tmp_path, capsys):
    serve = [write(tmp_path / f"serve_{c}.json", serve_report(c, 3.0 + c / 10, 100.0 * c)) for c in (1, 2, 4)]
    quality = write(tmp_path / "eval.json", QUALITY)
    out = tmp_path / "docs"
    code = plots.main(["--serve", *serve, "--export", str(tmp_path / "none.json"), "--quality", quality,
                       "--out", str(out)])  # fmt: skip
    assert code == 0
    assert "skipping export benchmark" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["backends.png", "quality.png", "serving.png"]
    for png in out.iterdir():
        pixels = np.asarray(Image.open(png).convert("L"))
        assert pixels.shape[1] >= 700 and pixels.std() > 10, png  # a drawn plot, not a blank canvas


def test_main_refuses_reports_it_cannot_place_and_says_when_nothing_is_there(tmp_path, capsys):
    report = serve_report(1, 3.0, 100.0)
    del report["clients"]
    with pytest.raises(SystemExit):
        plots.main(["--serve", write(tmp_path / "old.json", report)])
    assert "clients" in capsys.readouterr().err
    assert plots.main(["--quality", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 1
