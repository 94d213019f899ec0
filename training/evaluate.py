"""`rsd eval`: score models on the same (HR, LR) pairs, for one or several kinds of input.

Rows: bicubic, the teacher with its T steps, the teacher's own one-step x0 prediction, an RSD student
(one step) and an exported ONNX graph (through the service's tiler, so it is what users get). Metrics
per row: PSNR-Y, SSIM-Y, LPIPS-alex, DISTS, NFE and wall time per image; per mode (clean, mild,
realesrgan: `training.data.degradations`) each row's mean PSNR-Y gain over bicubic with a 95% bootstrap
interval over the photos, since a mean over a few dozen photos moves by tenths of a dB with the sample.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.data.valset import MANIFEST, load_val_set, make_val_set
from training.metrics import DISTS, LPIPS, psnr_y, ssim_y
from training.validation import bicubic_up

Upscaler = Callable[[torch.Tensor, int], torch.Tensor]  # (lr (3,h,w) in [0,1], image index) -> sr (3,4h,4w)


@dataclass
class Row:
    name: str
    nfe: int
    upscale: Upscaler


def fixed_mode(source: Path) -> str | None:
    """The LR mode of a fixed validation set folder (its manifest's), None for a folder of photos."""
    manifest = source / MANIFEST
    return json.loads(manifest.read_text())["mode"] if manifest.is_file() else None


def pairs_for(source: Path, mode: str, seed: int, crop_size: int, work: Path):
    """A fixed validation set folder as is (its manifest's mode must be `mode`), or one made now from a
    folder of HR photos: the same photos and seed give the same pairs."""
    fixed = fixed_mode(source)
    if fixed is not None:
        if fixed != mode:
            raise ValueError(
                f"{source} is a fixed {fixed!r} validation set; pass a folder of photos for {mode!r}"
            )
        return load_val_set(source)
    make_val_set(source, work, mode=mode, seed=seed, crop_size=crop_size)
    return load_val_set(work)


def bootstrap_interval(
    values, draws: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (photos resampled with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(draws, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def torch_rows(model_dir: Path, label: str, device: torch.device, seed: int) -> list[Row]:
    from training.checkpoint import load_model_dir
    from training.pipeline import SRPipeline

    bundle = load_model_dir(model_dir, device)
    pipe = SRPipeline(bundle.unet, bundle.autoencoder, bundle.schedule, bundle.corrector).eval()

    def runner(steps: str) -> Upscaler:
        def upscale(lr: torch.Tensor, index: int) -> torch.Tensor:
            generator = torch.Generator(device).manual_seed(seed * 100_003 + index)
            return pipe.upscale(lr[None].to(device), generator, steps=steps)[0].cpu()

        return upscale

    if pipe.noise_channels:
        return [Row(label, 1, runner("one"))]
    steps = bundle.schedule.num_timesteps
    return [
        Row(f"{label} ({steps} steps)", steps, runner("full")),
        Row(f"{label} (one step)", 1, runner("one")),
    ]


def onnx_row(path: Path, seed: int, threads: int) -> Row:
    from service.backends import load_backend
    from service.settings import Settings
    from service.tiling import upscale_tiled

    settings = Settings(model_path=path, threads=threads)
    backend = load_backend(settings)  # one graph or a set (.json)
    info = backend.info

    def upscale(lr: torch.Tensor, index: int) -> torch.Tensor:
        rgb = lr.permute(1, 2, 0).numpy().astype(np.float32)
        sr = upscale_tiled(rgb, backend.run, sizes=info.tile_sizes, overlap=settings.tile_overlap,
                           seed=seed + index, batch_limits=info.batch_limits(8))  # fmt: skip
        return torch.from_numpy(np.ascontiguousarray(sr)).permute(2, 0, 1).clamp(0, 1)

    return Row(f"onnx {path.name}", 1, upscale)


@torch.no_grad()
def evaluate(rows: list[Row], pairs, device: torch.device) -> list[dict]:
    """Every row on every pair; the first row is the baseline the gains and LPIPS ratios refer to."""
    lpips, dists = LPIPS("alex").to(device), DISTS().to(device)
    results = []
    for row in rows:
        scores, seconds = [], []
        for index, pair in enumerate(pairs):
            start = time.perf_counter()
            sr = row.upscale(pair.lr, index).clamp(0, 1)
            seconds.append(time.perf_counter() - start)
            a, b = sr[None].to(device), pair.hr[None].to(device)
            scores.append(
                {
                    "name": pair.name,
                    "psnr_y": psnr_y(sr, pair.hr),
                    "ssim_y": ssim_y(sr, pair.hr),
                    "lpips_alex": float(lpips(a * 2 - 1, b * 2 - 1)),
                    "dists": float(dists(a, b)),
                }
            )
        summary = {k: float(np.mean([s[k] for s in scores])) for k in scores[0] if k != "name"}
        results.append(
            {
                "model": row.name,
                "nfe": row.nfe,
                **summary,
                "seconds_per_image": float(np.mean(seconds)),
                "images": len(pairs),
                "per_image": scores,
            }
        )
    base = results[0]
    for r in results:
        gains = [s["psnr_y"] - b["psnr_y"] for s, b in zip(r["per_image"], base["per_image"], strict=True)]
        for score, gain in zip(r["per_image"], gains, strict=True):
            score["psnr_y_gain"] = gain
        r["psnr_y_gain"] = float(np.mean(gains))
        r["psnr_y_gain_ci95"] = list(bootstrap_interval(gains))
        r["lpips_ratio"] = r["lpips_alex"] / base["lpips_alex"]
    return results


def format_table(results: list[dict]) -> str:
    header = f"{'model':<34} {'NFE':>4} {'PSNR-Y':>7} {'SSIM-Y':>7} {'LPIPS':>7} {'DISTS':>7} {'s/img':>7}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r['model']:<34} {r['nfe']:>4} {r['psnr_y']:>7.2f} {r['ssim_y']:>7.4f} {r['lpips_alex']:>7.4f} "
            f"{r['dists']:>7.4f} {r['seconds_per_image']:>7.3f}"
        )
    return "\n".join(lines)


def format_per_image(results: list[dict]) -> str:
    """PSNR-Y of every photo and model, and each model's gain over the first row (bicubic): a mean over a
    few photos can hide a large loss on some of them behind a large gain on one."""
    header = f"{'photo':<36}" + "".join(f" {r['model'][:26]:>26}" for r in results)
    lines = [header, "-" * len(header)]
    for i, base in enumerate(results[0]["per_image"]):  # every row scored the same pairs, in order
        cells = [f"{base['psnr_y']:.2f}"]
        for r in results[1:]:
            score = r["per_image"][i]["psnr_y"]
            cells.append(f"{score:.2f} ({score - base['psnr_y']:+.2f})")
        lines.append(f"{base['name'][:36]:<36}" + "".join(f" {c:>26}" for c in cells))
    return "\n".join(lines)


def format_modes(by_mode: dict[str, list[dict]]) -> str:
    """One row per model, a column group per mode: PSNR-Y, its gain over bicubic with the 95% interval,
    and LPIPS-alex with its ratio to bicubic's."""
    modes = list(by_mode)
    first = by_mode[modes[0]]
    cell = 38
    header = f"{'model':<34} {'NFE':>4}" + "".join(f" | {m:^{cell}}" for m in modes)
    sub = f"{'':<34} {'':>4}" + "".join(
        f" | {'PSNR-Y  gain [95% CI]':<24} {'LPIPS (x bic)':>13}" for _ in modes
    )
    lines = [header, sub, "-" * len(header)]
    for i, row in enumerate(first):
        cells = []
        for m in modes:
            r = by_mode[m][i]
            lo, hi = r["psnr_y_gain_ci95"]
            psnr = f"{r['psnr_y']:.2f} {r['psnr_y_gain']:+.2f} [{lo:+.2f},{hi:+.2f}]"
            cells.append(f" | {psnr:<24} {r['lpips_alex']:.4f} ({r['lpips_ratio']:.2f})")
        lines.append(f"{row['model'][:34]:<34} {row['nfe']:>4}" + "".join(cells))
    return "\n".join(lines)


def run_eval(
    source: Path,
    *,
    modes: list[str] | None = None,
    seed: int = 0,
    crop_size: int = 256,
    teacher: Path | None = None,
    students: list[Path] = (),
    onnx: list[Path] = (),
    max_images: int | None = None,
    threads: int = 2,
    json_out: Path | None = None,
) -> dict[str, list[dict]]:
    """Results per mode (in the order given; default: a fixed set's own mode, else realesrgan). Each mode's
    pairs come from `pairs_for`; the models are loaded once and scored on every mode."""
    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    source = Path(source)
    modes = list(modes or [fixed_mode(source) or "realesrgan"])
    with tempfile.TemporaryDirectory() as work:
        pairs = {m: pairs_for(source, m, seed, crop_size, Path(work) / m)[:max_images] for m in modes}
    rows = [Row("bicubic", 0, lambda lr, index: bicubic_up(lr))]
    if teacher is not None:
        rows += torch_rows(teacher, "teacher", device, seed)
    for path in students:
        rows += torch_rows(path, f"student {path.parent.name}/{path.name}", device, seed)
    rows += [onnx_row(path, seed, threads) for path in onnx]
    by_mode = {m: evaluate(rows, pairs[m], device) for m in modes}
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "source": str(source),
            "seed": seed,
            "crop_size": crop_size,
            "device": str(device),
            "threads": threads,
            "modes": by_mode,
        }
        json_out.write_text(json.dumps(record, indent=2) + "\n")
    return by_mode
