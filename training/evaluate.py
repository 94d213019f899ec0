"""`rsd eval`: score models on the same (HR, LR) pairs.

Rows: bicubic, the teacher with its T steps, the teacher's own one-step x0 prediction, an RSD student
(one step) and an exported ONNX graph (through the service's tiler, so it is what users get). Metrics
per row: PSNR-Y, SSIM-Y, LPIPS-alex, DISTS, NFE and wall time per image.
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


def pairs_for(source: Path, mode: str, seed: int, crop_size: int, work: Path):
    """A fixed validation set folder as is, or one made now from a folder of HR photos."""
    if (source / MANIFEST).is_file():
        return load_val_set(source)
    make_val_set(source, work, mode=mode, seed=seed, crop_size=crop_size)
    return load_val_set(work)


def torch_rows(model_dir: Path, label: str, device: torch.device, seed: int) -> list[Row]:
    from training.checkpoint import load_model_dir
    from training.pipeline import SRPipeline

    bundle = load_model_dir(model_dir, device)
    pipe = SRPipeline(bundle.unet, bundle.autoencoder, bundle.schedule).eval()

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
    from service.backends.onnxruntime import OnnxRuntimeBackend
    from service.tiling import upscale_tiled

    backend = OnnxRuntimeBackend(path, threads=threads)
    tile = backend.info.tile_size

    def upscale(lr: torch.Tensor, index: int) -> torch.Tensor:
        rgb = lr.permute(1, 2, 0).numpy().astype(np.float32)
        sr = upscale_tiled(rgb, backend.run, tile=tile, overlap=tile // 8, seed=seed + index, max_batch=8)
        return torch.from_numpy(np.ascontiguousarray(sr)).permute(2, 0, 1).clamp(0, 1)

    return Row(f"onnx {path.name}", 1, upscale)


@torch.no_grad()
def evaluate(rows: list[Row], pairs, device: torch.device) -> list[dict]:
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


def run_eval(
    source: Path,
    *,
    mode: str = "realesrgan",
    seed: int = 0,
    crop_size: int = 256,
    teacher: Path | None = None,
    students: list[Path] = (),
    onnx: list[Path] = (),
    max_images: int | None = None,
    threads: int = 2,
    json_out: Path | None = None,
) -> list[dict]:
    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as work:
        pairs = pairs_for(Path(source), mode, seed, crop_size, Path(work))[:max_images]
    rows = [Row("bicubic", 0, lambda lr, index: bicubic_up(lr))]
    if teacher is not None:
        rows += torch_rows(teacher, "teacher", device, seed)
    for path in students:
        rows += torch_rows(path, f"student {path.parent.name}/{path.name}", device, seed)
    rows += [onnx_row(path, seed, threads) for path in onnx]
    results = evaluate(rows, pairs, device)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "source": str(source),
            "mode": mode,
            "seed": seed,
            "device": str(device),
            "threads": threads,
            "results": results,
        }
        json_out.write_text(json.dumps(record, indent=2) + "\n")
    return results
